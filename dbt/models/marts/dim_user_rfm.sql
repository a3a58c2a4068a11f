{#-
  RFM scores for purchasers (purchase_count > 0), each 1..5:
  - recency: quintile of days since last purchase, the most recent quintile scores 5;
  - frequency: percent_rank of purchase_count in buckets of 0.2, right-inclusive
    ([0, 0.2] -> 1, (0.2, 0.4] -> 2, ..., (0.8, 1] -> 5); ties share a rank;
  - monetary: quintile of total revenue, the highest scores 5.
  Quintile ties are broken by user_id so results are reproducible.
  Segment: the first matching rule in the CASE below.
-#}
with purchasers as (

    select user_id, days_since_last_purchase, last_purchase_date, purchase_count, total_revenue
    from {{ ref('dim_users') }}
    where purchase_count > 0

),

scored as (

    select
        purchasers.*,
        ntile(5) over (order by days_since_last_purchase desc, user_id asc) as recency_score,
        percent_rank() over (order by purchase_count asc) as frequency_percent_rank,
        ntile(5) over (order by total_revenue asc, user_id asc) as monetary_score
    from purchasers

),

bucketed as (

    select
        user_id,
        days_since_last_purchase,
        last_purchase_date,
        purchase_count,
        total_revenue,
        recency_score,
        case
            when frequency_percent_rank <= 0.2 then 1
            when frequency_percent_rank <= 0.4 then 2
            when frequency_percent_rank <= 0.6 then 3
            when frequency_percent_rank <= 0.8 then 4
            else 5
        end as frequency_score,
        monetary_score
    from scored

)

select
    user_id,
    days_since_last_purchase,
    last_purchase_date,
    purchase_count,
    total_revenue,
    recency_score,
    frequency_score,
    monetary_score,
    recency_score + frequency_score + monetary_score as rfm_score,
    case
        when recency_score >= 4 and frequency_score >= 4 and monetary_score >= 4 then 'Champions'
        when recency_score <= 2 and frequency_score >= 4 and monetary_score >= 4 then 'At Risk'
        when recency_score >= 4 and frequency_score >= 3 then 'Loyal Customers'
        when recency_score >= 3 and frequency_score >= 3 then 'Potential Loyalists'
        when recency_score >= 4 and frequency_score < 3 then 'Recent Customers'
        when recency_score = 3 and frequency_score < 3 then 'Promising'
        when recency_score <= 2 and frequency_score >= 3 then 'About To Sleep'
        when recency_score <= 2 and frequency_score <= 2 and monetary_score <= 2 then 'Lost'
        else 'Needs Attention'
    end as rfm_segment
from bucketed
