{#-
  One row per user, with estore-analytics' columns and definitions:
  - total_revenue = customer_ltv: sum of purchase revenue, exact to the cent; NULL when the user
    has no priced purchase (as the original: BI averages of it skip non-buyers);
  - avg_order_value: average revenue of the priced purchases (a purchase without a price is
    skipped), rounded half away from zero to the cent;
  - purchase_count counts every purchase, priced or not;
  - customer_lifespan_days: days from first to last purchase, at least 1; NULL for non-buyers;
  - days_since_*: relative to the latest event date in the data (NULL purchase days for non-buyers);
  - activity_status: prospect without purchases; churned when both days since the last purchase
    and since the last activity exceed var('churn_days'); at_risk / declining when days since the
    last purchase exceed var('at_risk_days') / var('declining_days'); else active.
    is_churned is the churned rule as 0/1;
  - session_count: sessions (fct_sessions) the user owns; data_quality_flag NULL when clean,
    'missing_sessions' or 'anomalous_session_ratio' (events per session above
    var('session_outlier_ratio')).
  The per-user inputs are intermediate views: int_users__activity (events), int_users__purchases
  (purchases) and int_users__sessions (sessions owned); this model measures days against the
  latest event date and applies the status rules.
  Rebuilt each run from fct_events and fct_sessions: every day-count moves when a new day arrives.
-#}
{%- set churn_days = var('churn_days', 60) | int -%}
{%- set at_risk_days = var('at_risk_days', 45) | int -%}
{%- set declining_days = var('declining_days', 30) | int -%}
{%- set outlier_ratio = var('session_outlier_ratio', 200) -%}

with latest as (

    select max(last_event_date) as latest_event_date from {{ ref('int_users__activity') }}

),

measured as (

    select
        activity.*,
        purchases.revenue_sum,
        purchases.avg_order_value,
        coalesce(purchases.purchase_count, 0) as purchase_count,
        purchases.first_purchase_date,
        purchases.last_purchase_date,
        coalesce(sessions.session_count, 0) as session_count,
        {{ estore_ops.days_between('activity.last_event_date', 'latest.latest_event_date') }} as days_since_last_activity,
        {{ estore_ops.days_between('purchases.last_purchase_date', 'latest.latest_event_date') }} as days_since_last_purchase
    from {{ ref('int_users__activity') }} as activity
    cross join latest
    left join {{ ref('int_users__purchases') }} as purchases on purchases.user_id = activity.user_id
    left join {{ ref('int_users__sessions') }} as sessions on sessions.user_id = activity.user_id

)

select
    user_id,
    first_event_time,
    first_event_date,
    last_event_time,
    last_event_date,
    session_count,
    event_count,
    {{ estore_ops.money('revenue_sum') }} as total_revenue,
    purchase_count,
    first_purchase_date,
    last_purchase_date,
    avg_order_value,
    case
        when purchase_count > 0
            then greatest({{ estore_ops.days_between('first_purchase_date', 'last_purchase_date') }}, 1)
    end as customer_lifespan_days,
    days_since_last_activity,
    days_since_last_purchase,
    {{ estore_ops.money('revenue_sum') }} as customer_ltv,
    case
        when purchase_count = 0 then 'prospect'
        when days_since_last_purchase > {{ churn_days }} and days_since_last_activity > {{ churn_days }} then 'churned'
        when days_since_last_purchase > {{ at_risk_days }} then 'at_risk'
        when days_since_last_purchase > {{ declining_days }} then 'declining'
        else 'active'
    end as activity_status,
    case
        when purchase_count > 0
             and days_since_last_purchase > {{ churn_days }}
             and days_since_last_activity > {{ churn_days }} then 1
        else 0
    end as is_churned,
    purchase_count > 0 as has_purchase_history,
    case
        when session_count = 0 then 'missing_sessions'
        when event_count > {{ outlier_ratio }} * session_count then 'anomalous_session_ratio'
    end as data_quality_flag
from measured
