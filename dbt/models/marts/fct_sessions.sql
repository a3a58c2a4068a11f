{#-
  One row per session. A user_session is split wherever two consecutive events are more than
  var('session_timeout_seconds') apart (a gap of exactly the timeout stays together). The first
  part keeps the user_session id; later parts are named <user_session>_timeout_<n> (n = 1, 2, ...).
  The session's user is the user of its first event.
-#}
{%- set timeout = var('session_timeout_seconds', 3600) | int -%}

with events as (

    select
        event_id, event_time, event_date, event_type, product_id, user_id, user_session,
        is_purchase, is_cart_add, is_view, revenue
    from {{ ref('fct_events') }}

),

gaps as (

    select
        events.*,
        case
            when lag(event_time) over (partition by user_session order by event_time, event_id) is null then 0
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
        end as session_id
    from parts

),

owned as (

    select
        named.*,
        first_value(user_id) over (
            partition by session_id order by event_time, event_id
            rows between unbounded preceding and unbounded following
        ) as session_user_id
    from named

),

sessions as (

    select
        session_id,
        min(user_session) as user_session,
        min(part_number) as session_part,
        min(session_user_id) as user_id,
        min(event_time) as session_start,
        max(event_time) as session_end,
        count(*) as event_count,
        count(distinct product_id) as distinct_products,
        sum(case when is_cart_add then 1 else 0 end) as cart_additions,
        sum(case when is_purchase then 1 else 0 end) as purchases,
        sum(case when is_view then 1 else 0 end) as views,
        coalesce(sum(revenue), 0) as revenue
    from owned
    group by session_id

)

select
    session_id,
    user_session,
    session_part,
    user_id,
    session_start,
    session_end,
    {{ estore_ops.utc_date('session_start') }} as session_date,
    event_count,
    distinct_products,
    cart_additions,
    purchases,
    views,
    revenue,
    {{ estore_ops.seconds_between('session_start', 'session_end') }} as session_length_seconds,
    views > 0 as reached_view,
    cart_additions > 0 as reached_cart,
    purchases > 0 as reached_purchase,
    case
        when purchases > 0 then 'purchase'
        when cart_additions > 0 then 'cart'
        when views > 0 then 'view'
        else 'no_activity'
    end as funnel_stage
from sessions
