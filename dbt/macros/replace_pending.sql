{#-
  How an incremental run replaces what the change log says is pending (see change_log.sql).

  The model's SELECT (rendered just before it runs) already reads only the pending days or
  sessions; these macros make the write replace exactly those, including days or sessions that
  now have no rows at all (they must be emptied, which a plain delete+insert keyed on the new
  rows would miss). meta.replace says what is replaced: 'days' (event_date) or 'sessions'
  (user_session, fct_sessions on DuckDB).
-#}

{#- SQL predicate on the target: the rows this run replaces. -#}
{% macro replace_predicate(days) -%}
    {%- set mode = config.meta_get('replace', 'days') -%}
    {%- if days | length == 0 -%}
        false
    {%- elif mode == 'days' -%}
        event_date in ({{ estore_ops.date_list(days) }})
    {%- elif mode == 'sessions' -%}
        user_session in ({{ estore_ops.changed_sessions(days) }})
    {%- else -%}
        {{ exceptions.raise_compiler_error(model.name ~ ": unknown meta.replace " ~ mode) }}
    {%- endif -%}
{%- endmacro %}

{#-
  DuckDB: a custom incremental strategy (incremental_strategy='replace_pending'). In one
  transaction with the model's hooks: delete what is pending, insert the new rows.
-#}
{% macro get_incremental_replace_pending_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ target }} where {{ estore_ops.replace_predicate(estore_ops.pending_days()) }};
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ source }}
{%- endmacro %}

{#-
  BigQuery: dbt-bigquery's insert_overwrite in its *static* form (one MERGE that deletes and
  inserts the listed partitions atomically) with the partitions taken from the change log at run
  time. Static partitions are constants, so BigQuery prunes the target to exactly those days, and
  the MERGE runs without scripting. dbt-bigquery reads `partitions` from the model config, which is
  fixed at parse time; this macro (same name, root project wins) computes them for models with
  meta.pending_kinds and hands everything else to dbt-bigquery unchanged. With nothing pending
  there is nothing to write.
-#}
{% macro bq_generate_incremental_insert_overwrite_build_sql(
    tmp_relation, target_relation, sql, unique_key, partition_by, partitions, dest_columns, tmp_relation_exists, copy_partitions
) %}
    {% if partition_by is none %}
        {% do exceptions.raise_compiler_error("The 'insert_overwrite' strategy requires the `partition_by` config.") %}
    {% endif %}
    {% if config.meta_get('pending_kinds') %}
        {% set days = estore_ops.pending_days() %}
        {% if days | length == 0 %}
            {{ return("select 'nothing pending' as insert_overwrite") }}
        {% endif %}
        {% set partitions = [] %}
        {% for d in days %}{% do partitions.append(estore_ops.date_literal(d)) %}{% endfor %}
    {% endif %}
    {{ return(bq_insert_overwrite_sql(
        tmp_relation, target_relation, sql, unique_key, partition_by, partitions, dest_columns, tmp_relation_exists, copy_partitions
    )) }}
{% endmacro %}

{#-
  SQL: the user_sessions fct_sessions must recompute for the pending days: every user_session
  with an event on one of those days now, and every one whose stored parts spanned one of them
  (its events there may be gone). A user_session split at a timeout keeps all parts together.
-#}
{% macro changed_sessions(days) -%}
    select user_session from {{ ref('fct_events') }}
    where event_date in ({{ estore_ops.date_list(days) }})
    union distinct
    select user_session from {{ this }}
    where {{ estore_ops.span_touches_days('session_start_date', estore_ops.utc_date('session_end_time'), days) }}
{%- endmacro %}

{#-
  The config of a model that replaces the days the change log lists as pending for it
  (`kinds` of entries, up to the done mark of `after`): DuckDB replace_pending, BigQuery
  insert_overwrite of event_date partitions clustered by `cluster_by`. `post_hook` must write the
  model's done mark (estore_ops.mark_done(), or int_events__deduplicated's conflict hook).
-#}
{% macro replace_days_config(kinds, after, cluster_by, post_hook=[]) -%}
    {%- set bigquery = target.type == 'bigquery' -%}
    {{ config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if bigquery else 'replace_pending'),
        partition_by=({'field': 'event_date', 'data_type': 'date', 'granularity': 'day'} if bigquery else none),
        cluster_by=(cluster_by if bigquery else none),
        on_schema_change='fail',
        meta={'pending_kinds': kinds, 'pending_after': after, 'replace': 'days'},
        post_hook=post_hook
    ) }}
{%- endmacro %}
