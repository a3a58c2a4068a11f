{#-
  Cohort churn. Eligible customers: first purchase at least var('cohort_observation_window_days')
  days before the last first-purchase date in the data. An eligible customer is churned when
  they bought once or their last purchase is within that many days of the first.
  Rows: cohort 'overall' (always present) and one row per first-purchase month ('YYYY-MM').
  cohort_start / cohort_end: the earliest / latest first purchase in the cohort.
-#}
{%- set window_days = var('cohort_observation_window_days', 90) | int -%}

with purchasers as (

    select user_id, purchase_count, first_purchase_date, last_purchase_date
    from {{ ref('dim_users') }}
    where purchase_count > 0

),

horizon as (

    select max(first_purchase_date) as last_first_purchase_date from purchasers

),

eligible as (

    select
        p.user_id,
        p.first_purchase_date,
        {{ estore_ops.month_label('p.first_purchase_date') }} as cohort_month,
        case
            when p.purchase_count = 1
              or {{ estore_ops.days_between('p.first_purchase_date', 'p.last_purchase_date') }} <= {{ window_days }}
                then 1
            else 0
        end as is_churned
    from purchasers as p
    cross join horizon as h
    where {{ estore_ops.days_between('p.first_purchase_date', 'h.last_first_purchase_date') }} >= {{ window_days }}

),

overall as (

    select
        'overall' as cohort,
        'overall' as cohort_type,
        min(first_purchase_date) as cohort_start,
        max(first_purchase_date) as cohort_end,
        count(*) as total_customers,
        coalesce(sum(is_churned), 0) as churned_customers
    from eligible

),

monthly as (

    select
        cohort_month as cohort,
        'month' as cohort_type,
        min(first_purchase_date) as cohort_start,
        max(first_purchase_date) as cohort_end,
        count(*) as total_customers,
        sum(is_churned) as churned_customers
    from eligible
    group by cohort_month

),

combined as (

    select * from overall
    union all
    select * from monthly

)

select
    cohort,
    cohort_type,
    cohort_start,
    cohort_end,
    total_customers,
    churned_customers,
    case when total_customers > 0 then round(churned_customers / total_customers, 4) end as churn_rate
from combined
