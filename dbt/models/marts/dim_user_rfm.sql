{#-
  RFM scores for buyers (purchase_count > 0), each 1..5, as estore-analytics scores them:
  - recency: quintile of days since the last purchase, the most recent quintile scores 5;
  - frequency: percent_rank of purchase_count, in buckets [0, .2) -> 1, [.2, .4) -> 2, ...,
    [.8, 1] -> 5; equal counts share a rank;
  - monetary: quintile of total revenue, the highest scores 5 (a buyer without a priced
    purchase has NULL revenue and sorts lowest, as on BigQuery).
  Quintile ties are broken by user_id so results never depend on the engine or the run.
  Segment: the first matching rule in the CASE below (the original's rules, in its order).
  Extra columns (days_since_last_purchase, last_purchase_date, purchase_count, total_revenue)
  are what the RFM snapshot and its BI view read.
-#}
with buyers as (

    select user_id, days_since_last_purchase, last_purchase_date, purchase_count, total_revenue
    from {{ ref('dim_users') }}
    where purchase_count > 0

),

scored as (

    select
        buyers.*,
        ntile(5) over (order by days_since_last_purchase desc, user_id asc) as recency_score,
        percent_rank() over (order by purchase_count asc) as frequency_percent_rank,
        ntile(5) over (order by total_revenue asc nulls first, user_id asc) as monetary_score
    from buyers

),

bucketed as (

    select
        scored.*,
        case
            when frequency_percent_rank < 0.2 then 1
            when frequency_percent_rank < 0.4 then 2
            when frequency_percent_rank < 0.6 then 3
            when frequency_percent_rank < 0.8 then 4
            else 5
        end as frequency_bucket
    from scored

)

select
    user_id,
    {{ estore_ops.int64('recency_score') }} as recency_score,
    {{ estore_ops.int64('frequency_bucket') }} as frequency_score,
    {{ estore_ops.int64('monetary_score') }} as monetary_score,
    {{ estore_ops.int64('recency_score + frequency_bucket + monetary_score') }} as rfm_score,
    case
        when recency_score >= 4 and frequency_bucket >= 4 and monetary_score >= 4 then 'Champions'
        when recency_score <= 2 and frequency_bucket >= 4 and monetary_score >= 4 then 'At Risk'
        when recency_score >= 4 and frequency_bucket >= 3 then 'Loyal Customers'
        when recency_score >= 3 and frequency_bucket >= 3 then 'Potential Loyalists'
        when recency_score >= 4 and frequency_bucket < 3 then 'Recent Customers'
        when recency_score = 3 and frequency_bucket < 3 then 'Promising'
        when recency_score <= 2 and frequency_bucket >= 3 then 'About To Sleep'
        when recency_score <= 2 and frequency_bucket <= 2 and monetary_score <= 2 then 'Lost'
        else 'Needs Attention'
    end as rfm_segment,
    days_since_last_purchase,
    last_purchase_date,
    purchase_count,
    total_revenue
from bucketed
