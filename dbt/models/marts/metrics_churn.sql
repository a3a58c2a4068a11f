{#-
  Cohort churn, as estore-analytics computes it. Eligible buyers: first purchase at least
  var('cohort_observation_window_days') days before the latest first-purchase date. An eligible
  buyer counts as churned when they bought once, or when their last purchase is within that many
  days of the first.
  Rows: metric_level 'cohort_overall' / time_period 'all_eligible_cohorts' (always present), and
  metric_level 'by_cohort_month' with time_period the cohort's first day ('YYYY-MM-01').
  cohort_start / cohort_end: earliest / latest first purchase in the row's cohort.
-#}
{%- set window_days = var('cohort_observation_window_days', 90) | int -%}

with buyers as (

    select user_id, purchase_count, first_purchase_date, last_purchase_date
    from {{ ref('dim_users') }}
    where purchase_count > 0

),

horizon as (

    select max(first_purchase_date) as dataset_end from buyers

),

eligible as (

    select
        b.first_purchase_date,
        {{ estore_ops.month_start('b.first_purchase_date') }} as cohort_month,
        case
            when b.purchase_count = 1 then 1
            when {{ estore_ops.days_between('b.first_purchase_date', 'b.last_purchase_date') }} > {{ window_days }} then 0
            else 1
        end as is_churned_cohort
    from buyers as b
    cross join horizon as h
    where {{ estore_ops.days_between('b.first_purchase_date', 'h.dataset_end') }} >= {{ window_days }}

),

overall as (

    select
        'cohort_overall' as metric_level,
        'all_eligible_cohorts' as time_period,
        count(*) as total_customers,
        coalesce({{ estore_ops.int64('sum(is_churned_cohort)') }}, 0) as churned_customers,
        min(first_purchase_date) as cohort_start,
        max(first_purchase_date) as cohort_end
    from eligible

),

monthly as (

    select
        'by_cohort_month' as metric_level,
        cast(cohort_month as {{ dbt.type_string() }}) as time_period,
        count(*) as total_customers,
        {{ estore_ops.int64('sum(is_churned_cohort)') }} as churned_customers,
        min(first_purchase_date) as cohort_start,
        max(first_purchase_date) as cohort_end
    from eligible
    group by cohort_month

),

combined as (

    select * from overall
    union all
    select * from monthly

)

select
    metric_level,
    time_period,
    total_customers,
    churned_customers,
    case
        when total_customers > 0
            then round(cast(churned_customers as {{ estore_ops.float64_type() }}) / total_customers, 4)
    end as churn_rate,
    cohort_start,
    cohort_end
from combined
