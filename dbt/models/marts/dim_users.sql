{#-
  One row per user. Absolute metrics (counts, revenue, first/last dates) are merged
  incrementally; the columns relative to the latest event date in the data
  (days_since_*, activity_status, is_churned) are recomputed for every user on every run,
  because a new day moves them for users who did nothing. So an incremental run gives the
  same table as a full refresh on the same data.

  Incremental run:
    touched users = users whose events changed (their event count or newest _loaded_at in
    fct_events differs from this table: new, replaced or removed events), plus users with events
    in any user_session that got events loaded after this table's watermark (a shared session
    id can change owner). Their metrics are recomputed from fct_events/fct_sessions; every
    other user's absolute metrics are carried from this table. A post-hook removes users that
    no longer have any event.
  Merge on user_id (BigQuery: MERGE; DuckDB: MERGE INTO through dbt-duckdb).
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key='user_id',
    on_schema_change='fail',
    post_hook="delete from {{ this }} where user_id not in (select user_id from {{ ref('fct_events') }})"
) }}

{%- set churn_days = var('churn_days', 60) | int -%}
{%- set at_risk_days = var('at_risk_days', 45) | int -%}
{%- set declining_days = var('declining_days', 30) | int -%}
{%- set outlier_ratio = var('session_outlier_ratio', 200) -%}

with

{% if is_incremental() %}
watermark as (

    select max(_max_loaded_at) as loaded_at from {{ this }}

),

-- users whose events changed: new, replaced (a reloaded file gives its rows a newer
-- _loaded_at) or removed (event count differs)
current_events as (

    select user_id, count(*) as event_count, max(_loaded_at) as max_loaded_at
    from {{ ref('fct_events') }}
    group by user_id

),

changed as (

    select c.user_id
    from current_events as c
    left join {{ this }} as t on t.user_id = c.user_id
    where t.user_id is null
       or t.event_count != c.event_count
       or t._max_loaded_at != c.max_loaded_at

),

-- a session id shared by several users: new events can move a session to another owner
new_sessions as (

    select distinct user_session
    from {{ ref('fct_events') }}
    where _loaded_at > (select loaded_at from watermark)
       or (select loaded_at from watermark) is null

),

touched as (

    select user_id from changed

    union distinct

    select distinct user_id
    from {{ ref('fct_events') }}
    where user_session in (select user_session from new_sessions)

),
{% endif %}

event_metrics as (

    select
        user_id,
        min(event_time) as first_event_time,
        max(event_time) as last_event_time,
        min(event_date) as first_event_date,
        max(event_date) as last_event_date,
        count(*) as event_count,
        coalesce(sum(revenue), 0) as total_revenue,
        sum(case when is_purchase then 1 else 0 end) as purchase_count,
        min(case when is_purchase then event_date end) as first_purchase_date,
        max(case when is_purchase then event_date end) as last_purchase_date,
        max(_loaded_at) as _max_loaded_at
    from {{ ref('fct_events') }}
    {% if is_incremental() %}
    where user_id in (select user_id from touched)
    {% endif %}
    group by user_id

),

session_metrics as (

    select user_id, count(*) as session_count
    from {{ ref('fct_sessions') }}
    {% if is_incremental() %}
    where user_id in (select user_id from touched)
    {% endif %}
    group by user_id

),

recomputed as (

    select
        e.user_id,
        e.first_event_time,
        e.last_event_time,
        e.first_event_date,
        e.last_event_date,
        coalesce(s.session_count, 0) as session_count,
        e.event_count,
        cast(round(e.total_revenue, 2) as {{ dbt.type_float() }}) as total_revenue,
        e.purchase_count,
        e.first_purchase_date,
        e.last_purchase_date,
        e._max_loaded_at
    from event_metrics as e
    left join session_metrics as s on s.user_id = e.user_id

),

base as (

    select * from recomputed

{% if is_incremental() %}
    union all

    select
        user_id,
        first_event_time,
        last_event_time,
        first_event_date,
        last_event_date,
        session_count,
        event_count,
        total_revenue,
        purchase_count,
        first_purchase_date,
        last_purchase_date,
        _max_loaded_at
    from {{ this }}
    where user_id not in (select user_id from touched)
{% endif %}

),

latest as (

    select max(event_date) as latest_event_date from {{ ref('fct_events') }}

),

measured as (

    select
        base.*,
        case when purchase_count > 0
            then cast(round(total_revenue / purchase_count, 2) as {{ dbt.type_float() }})
        end as avg_order_value,
        case
            when purchase_count > 0
                then greatest({{ estore_ops.days_between('first_purchase_date', 'last_purchase_date') }}, 1)
            else 0
        end as customer_lifespan_days,
        {{ estore_ops.days_between('last_event_date', 'latest.latest_event_date') }} as days_since_last_activity,
        case when purchase_count > 0
            then {{ estore_ops.days_between('last_purchase_date', 'latest.latest_event_date') }}
        end as days_since_last_purchase
    from base
    cross join latest

)

select
    user_id,
    first_event_time,
    last_event_time,
    first_event_date,
    last_event_date,
    session_count,
    event_count,
    total_revenue,
    purchase_count,
    first_purchase_date,
    last_purchase_date,
    avg_order_value,
    customer_lifespan_days,
    days_since_last_activity,
    days_since_last_purchase,
    total_revenue as customer_ltv,
    case
        when purchase_count = 0 then 'prospect'
        when days_since_last_purchase > {{ churn_days }} and days_since_last_activity > {{ churn_days }} then 'churned'
        when days_since_last_purchase > {{ at_risk_days }} and days_since_last_activity > {{ at_risk_days }} then 'at_risk'
        when days_since_last_purchase > {{ declining_days }} and days_since_last_activity > {{ declining_days }} then 'declining'
        else 'active'
    end as activity_status,
    (purchase_count > 0
        and days_since_last_purchase > {{ churn_days }}
        and days_since_last_activity > {{ churn_days }}) as is_churned,
    purchase_count > 0 as has_purchase_history,
    case
        when session_count = 0 then 'missing_sessions'
        when event_count > {{ outlier_ratio }} * session_count then 'anomalous_session_ratio'
        else 'ok'
    end as data_quality_flag,
    _max_loaded_at
from measured
