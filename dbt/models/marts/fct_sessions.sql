{#-
  One row per session: a user_session split wherever two consecutive events are more than
  var('session_timeout_seconds') apart (a gap of exactly the timeout stays together). The first
  part keeps the user_session id; later parts are <user_session>_timeout_<n> (n = 1, 2, ...).
  The session's user is the user of its first event. Counts and 0/1 reached_* flags as in
  estore-analytics; total_revenue is NULL for a session without a priced purchase.

  DuckDB: incremental. A run recomputes every user_session the pending days touch (now or in
  the parts stored before) from all of its events, and replaces all of its parts.
  BigQuery: rebuilt as a table each run, partitioned by session_start_date, as in
  estore-analytics (dbt-bigquery has no strategy that deletes parts that no longer exist).
-#}
{%- set bigquery = target.type == 'bigquery' -%}
{%- set timeout = var('session_timeout_seconds', 3600) | int -%}
{%- set days = estore_ops.pending_days() if execute and is_incremental() else [] -%}
{% if bigquery %}
{{ config(
    materialized='table',
    partition_by={'field': 'session_start_date', 'data_type': 'date', 'granularity': 'day'},
    cluster_by=['user_id', 'session_start_date']
) }}
{% else %}
{{ config(
    materialized='incremental',
    incremental_strategy='replace_pending',
    on_schema_change='fail',
    meta={'pending_kinds': ['raw', 'conflict'], 'pending_after': 'fct_events', 'replace': 'sessions'},
    post_hook=["{{ estore_ops.mark_done() }}"]
) }}
{% endif %}
-- depends_on: {{ ref('int_change_log') }}

with events as (

    select event_id, event_time, product_id, user_id, user_session, is_purchase, is_cart_add, is_view, revenue
    from {{ ref('fct_events') }}
    {% if is_incremental() %}
    where user_session in ({{ estore_ops.changed_sessions(days) }})
    {% endif %}

),

gaps as (

    select
        events.*,
        case
            when {{ estore_ops.seconds_between(
                    'lag(event_time) over (partition by user_session order by event_time, event_id)',
                    'event_time') }} > {{ timeout }} then 1
            else 0
        end as starts_new_part
    from events

),

parts as (

    select
        gaps.*,
        sum(starts_new_part) over (
            partition by user_session order by event_time, event_id
            rows between unbounded preceding and current row
        ) as part_number
    from gaps

),

named as (

    select
        parts.*,
        case
            when part_number = 0 then user_session
            else {{ dbt.concat(['user_session', "'_timeout_'", 'cast(part_number as ' ~ dbt.type_string() ~ ')']) }}
        end as session_id,
        first_value(user_id) over (
            partition by user_session, part_number order by event_time, event_id
            rows between unbounded preceding and unbounded following
        ) as session_user_id
    from parts

),

sessions as (

    select
        session_id,
        min(user_session) as user_session,
        min(part_number) as session_part,
        min(session_user_id) as user_id,
        min(event_time) as session_start_time,
        max(event_time) as session_end_time,
        count(*) as event_count,
        count(distinct product_id) as unique_product_count,
        {{ estore_ops.int64('sum(is_cart_add)') }} as cart_additions,
        {{ estore_ops.int64('sum(is_purchase)') }} as purchase_count,
        {{ estore_ops.int64('sum(is_view)') }} as view_count,
        {{ estore_ops.money('sum(revenue)') }} as total_revenue
    from named
    group by session_id

)

select
    session_id,
    user_id,
    session_start_time,
    session_end_time,
    {{ estore_ops.utc_date('session_start_time') }} as session_start_date,
    event_count,
    unique_product_count,
    cart_additions,
    purchase_count,
    view_count,
    total_revenue,
    {{ estore_ops.seconds_between('session_start_time', 'session_end_time') }} as session_length,
    case when view_count > 0 then 1 else 0 end as reached_view,
    case when cart_additions > 0 then 1 else 0 end as reached_cart,
    case when purchase_count > 0 then 1 else 0 end as reached_purchase,
    case
        when purchase_count > 0 then 'purchase'
        when cart_additions > 0 then 'cart'
        when view_count > 0 then 'view'
        else 'no_activity'
    end as funnel_stage,
    user_session,
    {{ estore_ops.int64('session_part') }} as session_part
from sessions
