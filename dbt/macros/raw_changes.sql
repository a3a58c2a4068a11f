{#-
  Which days of raw.events changed since int_events__deduplicated last took them in (the 'raw' entries
  of the change log). A file load deletes the rows of a file name and inserts the new version,
  so a change is: a new file version (new, late or reloaded file), or a version that is gone
  (reloaded with other rows, or emptied, e.g. a header-only rewrite).

  DuckDB: compared per file version, (_source_file, _loaded_at), with the versions
  int_events__deduplicated has seen (int_raw_file_versions, written by its post-hook). Reading the
  version list scans three columns of raw.events, which DuckDB does in a fraction of a second.
  BigQuery: from partition metadata only (INFORMATION_SCHEMA.PARTITIONS, no table scan): the
  partitions of raw.events modified after int_events__deduplicated last wrote, plus days that
  int_events__deduplicated still holds but raw.events no longer has. BigQuery updates a partition's
  last_modified_time "when data is inserted, loaded, streamed, or modified within the partition"
  (INFORMATION_SCHEMA.PARTITIONS reference). BigQuery emulators do not track it (bqemulator keeps
  one time per table and no DML moves it), so against an emulator estore_ops.analytics.transform sets
  var raw_changes_from = 'file_versions' and the DuckDB comparison is used.
-#}
{% macro raw_changed_days() -%}
    {{ return(adapter.dispatch('raw_changed_days', 'estore_ops')()) }}
{%- endmacro %}

{% macro default__raw_changed_days() -%}
    {%- set seen = estore_ops.existing_intermediate('int_raw_file_versions') -%}
    {%- set deduped = estore_ops.stored_deduplicated() -%}
    with raw_versions as (

        select _source_file, _loaded_at
        from {{ source('raw', 'events') }}
        group by _source_file, _loaded_at

    ),

    {% if seen is not none %}
    seen_versions as (

        select _source_file, _loaded_at from {{ seen }}

    ),

    new_versions as (

        select r._source_file, r._loaded_at
        from raw_versions as r
        left join seen_versions as s
            on s._source_file = r._source_file and s._loaded_at = r._loaded_at
        where s._source_file is null

    ),

    gone_versions as (

        select s._source_file, s._loaded_at
        from seen_versions as s
        left join raw_versions as r
            on r._source_file = s._source_file and r._loaded_at = s._loaded_at
        where r._source_file is null

    ),
    {% else %}
    new_versions as (

        select _source_file, _loaded_at from raw_versions

    ),
    {% endif %}

    changed as (

        select distinct {{ estore_ops.utc_date('e.event_time') }} as event_date
        from {{ source('raw', 'events') }} as e
        inner join new_versions as n
            on n._source_file = e._source_file and n._loaded_at = e._loaded_at
        where e.event_time is not null

        {% if seen is not none and deduped is not none %}
        union distinct

        select distinct d.event_date
        from {{ deduped }} as d
        inner join gone_versions as g
            on g._source_file = d._source_file and g._loaded_at = d._loaded_at
        {% endif %}

    )

    select event_date from changed
{%- endmacro %}

{% macro bigquery__raw_changed_days() -%}
    {%- if var('raw_changes_from', 'partitions') == 'file_versions' -%}
        {{ return(estore_ops.default__raw_changed_days()) }}
    {%- endif -%}
    {%- set raw = source('raw', 'events') -%}
    {%- set deduped_schema = estore_ops.intermediate_schema() -%}
    {%- set stored = estore_ops.stored_deduplicated() -%}
    with raw_partitions as (

        select partition_id, last_modified_time, total_rows
        from `{{ raw.database }}`.`{{ raw.schema }}`.INFORMATION_SCHEMA.PARTITIONS
        where table_name = '{{ raw.identifier }}'
          and regexp_contains(partition_id, r'^[0-9]{8}$')

    ),

    deduped_partitions as (

        select partition_id, last_modified_time, total_rows
        from `{{ target.database }}`.`{{ deduped_schema }}`.INFORMATION_SCHEMA.PARTITIONS
        where table_name = '{{ stored.identifier if stored is not none else "int_events__deduplicated" }}'
          and regexp_contains(partition_id, r'^[0-9]{8}$')

    ),

    changed as (

        -- written (loaded, reloaded, emptied) since int_events__deduplicated last wrote
        select partition_id
        from raw_partitions
        where last_modified_time > (
            select coalesce(max(last_modified_time), timestamp '1970-01-01 00:00:00+00')
            from deduped_partitions
        )

        union distinct

        -- held by int_events__deduplicated, gone from raw.events
        select partition_id
        from deduped_partitions
        where total_rows > 0
          and partition_id not in (select partition_id from raw_partitions where total_rows > 0)

    )

    select distinct parse_date('%Y%m%d', partition_id) as event_date from changed
{%- endmacro %}

{#-
  Post-hooks of int_events__deduplicated, after it replaced its days:
  1. conflict entries: the days of every product whose brand-conflict status changed (it now has
     more than one distinct non-null brand, or no longer has) are logged as kind 'conflict', so
     fct_events and what follows replace them too (products appear and disappear everywhere),
     together with int_events__deduplicated's done mark (it holds every change up to that batch);
  2. int_brand_conflicts (read by int_events__brand_resolved) becomes the new set;
  3. DuckDB: int_raw_file_versions records the raw file versions now taken in.
-#}
{#- The post-hooks as Jinja strings: hooks render when they run, where `this` is final. -#}
{% macro brand_conflict_hooks() -%}
    {{ return(["{{ estore_ops.brand_conflict_hook(1) }}", "{{ estore_ops.brand_conflict_hook(2) }}",
               "{{ estore_ops.brand_conflict_hook(3) }}", "{{ estore_ops.brand_conflict_hook(4) }}",
               "{{ estore_ops.brand_conflict_hook(5) }}"]) }}
{%- endmacro %}

{#- SQL: the products of `events` seen with more than one non-null brand (estore-analytics' rule). -#}
{% macro brand_conflict_products_of(events) -%}
    select product_id from {{ events }}
    where brand is not null
    group by product_id
    having count(distinct brand) > 1
{%- endmacro %}

{% macro brand_conflict_hook(step) -%}
    {%- set schema = estore_ops.intermediate_schema() -%}
    {%- set conflicts = api.Relation.create(database=target.database, schema=schema, identifier='int_brand_conflicts') -%}
    {%- set next = api.Relation.create(database=target.database, schema=schema, identifier='int_brand_conflicts__next') -%}
    {%- if step == 1 -%}
        create table if not exists {{ conflicts }} (product_id {{ dbt.type_string() }})
    {%- elif step == 2 -%}
        create or replace table {{ next }} as
        {{ estore_ops.brand_conflict_products_of(this) }}
    {%- elif step == 3 -%}
        {#- One statement (one table modification on BigQuery): the conflict entries and
            int_events__deduplicated's done mark, both at the next batch number. -#}
        insert into {{ estore_ops.change_log() }} (batch, kind, event_date, model_name, logged_at)
        select nb.batch, 'conflict', changed_days.event_date, cast(null as {{ dbt.type_string() }}), {{ dbt.current_timestamp() }}
        from (
            select distinct d.event_date
            from {{ this }} as d
            where d.product_id in (
                select n.product_id from {{ next }} as n
                where not exists (select 1 from {{ conflicts }} as c where c.product_id = n.product_id)
                union all
                select c.product_id from {{ conflicts }} as c
                where not exists (select 1 from {{ next }} as n where n.product_id = c.product_id)
            )
        ) as changed_days
        cross join {{ estore_ops.next_batch_row() }} as nb
        union all
        select nb.batch, 'done', cast(null as date), '{{ model.name }}', {{ dbt.current_timestamp() }}
        from {{ estore_ops.next_batch_row() }} as nb
    {%- elif step == 4 -%}
        create or replace table {{ conflicts }} as select product_id from {{ next }}
    {%- else -%}
        drop table if exists {{ next }}
    {%- endif -%}
{%- endmacro %}

{% macro raw_file_versions_hook() -%}
    {{ return(adapter.dispatch('raw_file_versions_hook', 'estore_ops')()) }}
{%- endmacro %}

{% macro default__raw_file_versions_hook() -%}
    create or replace table {{ api.Relation.create(database=target.database, schema=estore_ops.intermediate_schema(),
                                                   identifier='int_raw_file_versions') }} as
    select _source_file, _loaded_at, count(*) as row_count
    from {{ source('raw', 'events') }}
    group by _source_file, _loaded_at
{%- endmacro %}

{#- BigQuery detects changes from partition metadata; nothing to record (but on an emulator). -#}
{% macro bigquery__raw_file_versions_hook() -%}
    {%- if var('raw_changes_from', 'partitions') == 'file_versions' -%}
        {{ estore_ops.default__raw_file_versions_hook() }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
