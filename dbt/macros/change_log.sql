{#-
  The change log (model int_change_log) and what reads and writes it.

  Incremental models here replace whole days (or, for fct_sessions on DuckDB, whole
  user_sessions). Which days a run must replace is not guessed from timestamps: it is read from
  an append-only log in the staging schema with two kinds of rows.

  - Change entries: (batch, kind, event_date). kind 'raw' = raw.events changed on that day (a new
    file, a late file, a reloaded or emptied file; written by int_change_log itself); kind
    'conflict' = a product on that day started or stopped being a brand conflict (written by a
    post-hook of int_events__deduplicated). Every write takes the next batch number (max + 1).
  - Done marks: (batch, 'done', model_name) = that model holds every change up to `batch`.

  A consuming model M with upstream U replaces the days of the entries with
  done(M) < batch <= done(U) (U = none: every entry), then marks done(M) = that upper bound, in a
  post-hook (inside the model's transaction on DuckDB). So a run that fails half-way, a model
  left out by --select, or a run that found nothing all leave M's mark where it was, and the next
  run replaces whatever M has not taken in yet: nothing is missed and replacing a day twice is
  harmless. Batch numbers never come from a clock.

  A model declares what it consumes in its meta config:
    meta={'pending_kinds': ['raw', 'conflict'], 'pending_after': 'int_events__deduplicated'}
-#}

{% macro change_log() -%}
    {{ return(api.Relation.create(database=target.database, schema=estore_ops.intermediate_schema(),
                                  identifier='int_change_log')) }}
{%- endmacro %}

{#- The schema (dataset) of the staging and intermediate models. -#}
{% macro intermediate_schema() -%}staging{%- endmacro %}

{#- A relation in the intermediate schema by name; `none` when it does not exist (yet). -#}
{% macro existing_intermediate(identifier) -%}
    {{ return(adapter.get_relation(database=target.database, schema=estore_ops.intermediate_schema(),
                                   identifier=identifier)) }}
{%- endmacro %}

{#- int_events__deduplicated as stored; on a warehouse whose last transform ran before that model was
    renamed, the table it replaces (int_events_deduped, issue 14), so the first run after the rename
    still finds the days of the file versions gone since (the new table is built in full, the
    marts replace only the days that changed). `none` before the first run. -#}
{% macro stored_deduplicated() -%}
    {%- set current = estore_ops.existing_intermediate('int_events__deduplicated') -%}
    {{ return(current if current is not none else estore_ops.existing_intermediate('int_events_deduped')) }}
{%- endmacro %}

{#- SQL: the next batch number of the log, as a one-row subquery with column `batch`. -#}
{% macro next_batch_row() -%}
    (select coalesce(max(batch), 0) + 1 as batch from {{ estore_ops.change_log() }})
{%- endmacro %}

{#- SQL: the done mark of a model (0 when it has none). -#}
{% macro done_mark(model_name) -%}
    (select coalesce(max(batch), 0) from {{ estore_ops.change_log() }}
     where kind = 'done' and model_name = '{{ model_name }}')
{%- endmacro %}

{#- SQL: the highest batch a model may take in: its upstream's done mark, or the newest entry. -#}
{% macro pending_upper(after) -%}
    {%- if after -%}
        {{ estore_ops.done_mark(after) }}
    {%- else -%}
        (select coalesce(max(batch), 0) from {{ estore_ops.change_log() }} where kind != 'done')
    {%- endif -%}
{%- endmacro %}

{#-
  The days (ISO strings, sorted) the current model must replace in this run, from its meta
  config. Runs a query, so only call it at execution time (guarded by `execute`).
-#}
{% macro pending_days() -%}
    {%- set kinds = config.meta_get('pending_kinds') -%}
    {%- set after = config.meta_get('pending_after') -%}
    {%- if not kinds -%}
        {{ exceptions.raise_compiler_error(model.name ~ ": pending_days() needs meta.pending_kinds") }}
    {%- endif -%}
    {%- set sql -%}
        select distinct cast(event_date as {{ dbt.type_string() }}) as day
        from {{ estore_ops.change_log() }}
        where kind in ('{{ kinds | join("', '") }}')
          and batch > {{ estore_ops.done_mark(model.name) }}
          and batch <= {{ estore_ops.pending_upper(after) }}
        order by 1
    {%- endset -%}
    {%- set result = run_query(sql) -%}
    {{ return(result.columns[0].values() | list) }}
{%- endmacro %}

{#- Post-hook: mark the current model done up to its upper bound. -#}
{% macro mark_done() -%}
    insert into {{ estore_ops.change_log() }} (batch, kind, event_date, model_name, logged_at)
    select {{ estore_ops.pending_upper(config.meta_get('pending_after')) }}, 'done', cast(null as date),
           '{{ model.name }}', {{ dbt.current_timestamp() }}
{%- endmacro %}

{#- SQL list of DATE literals for the days, or a never-matching NULL for none. -#}
{% macro date_list(days) -%}
    {%- if days | length == 0 -%}cast(null as date){%- else -%}
    {%- for d in days %}{{ estore_ops.date_literal(d) }}{{ ", " if not loop.last }}{% endfor -%}
    {%- endif -%}
{%- endmacro %}

{#- The days grouped into runs of consecutive days: [(first, last), ...] as ISO strings. -#}
{% macro day_ranges(days) -%}
    {%- set ns = namespace(ranges=[], first=none, last=none) -%}
    {%- for d in days | sort -%}
        {%- set day = modules.datetime.date.fromisoformat(d) -%}
        {%- if ns.last is not none and (day - ns.last).days == 1 -%}
            {%- set ns.last = day -%}
        {%- else -%}
            {%- if ns.first is not none -%}{%- do ns.ranges.append((ns.first.isoformat(), ns.last.isoformat())) -%}{%- endif -%}
            {%- set ns.first = day -%}
            {%- set ns.last = day -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if ns.first is not none -%}{%- do ns.ranges.append((ns.first.isoformat(), ns.last.isoformat())) -%}{%- endif -%}
    {{ return(ns.ranges) }}
{%- endmacro %}

{#-
  SQL predicate: a raw event_time falls on one of the (UTC) days, written as constant ranges so
  BigQuery prunes the partitions of raw.events (and DuckDB skips row groups by their min/max).
-#}
{% macro event_time_on_days(column, days) -%}
    {%- set ranges = estore_ops.day_ranges(days) -%}
    {%- if ranges | length == 0 -%}false{%- else -%}
    ({%- for first, last in ranges %}
        ({{ column }} >= {{ estore_ops.utc_timestamp_literal(first ~ ' 00:00:00') }}
         and {{ column }} < {{ estore_ops.utc_timestamp_literal((modules.datetime.date.fromisoformat(last) + modules.datetime.timedelta(days=1)).isoformat() ~ ' 00:00:00') }})
        {{- " or" if not loop.last }}
    {%- endfor %})
    {%- endif -%}
{%- endmacro %}

{#- SQL predicate: the date span [start_date, end_date] touches one of the days. -#}
{% macro span_touches_days(start_date, end_date, days) -%}
    {%- set ranges = estore_ops.day_ranges(days) -%}
    {%- if ranges | length == 0 -%}false{%- else -%}
    ({%- for first, last in ranges %}
        ({{ start_date }} <= {{ estore_ops.date_literal(last) }} and {{ end_date }} >= {{ estore_ops.date_literal(first) }})
        {{- " or" if not loop.last }}
    {%- endfor %})
    {%- endif -%}
{%- endmacro %}
