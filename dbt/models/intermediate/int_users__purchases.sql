{#-
  Per buyer (a user with at least one purchase event): the purchase inputs of dim_users and the
  RFM scores. revenue_sum is exact and NULL when no purchase has a price; avg_order_value averages
  the priced purchases, rounded half away from zero to the cent; purchase_count counts every
  purchase, priced or not. A view.
-#}
{{ config(materialized='view') }}

select
    user_id,
    sum(revenue) as revenue_sum,
    {{ estore_ops.money_avg('revenue') }} as avg_order_value,
    count(*) as purchase_count,
    min(event_date) as first_purchase_date,
    max(event_date) as last_purchase_date
from {{ ref('fct_events') }}
where is_purchase = 1
group by user_id
