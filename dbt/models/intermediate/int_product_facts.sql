{#- Events and price range per (product_id, brand, category_id, category_code) in fct_events. -#}
select
    product_id,
    brand,
    category_id,
    category_code,
    count(*) as event_count,
    {{ estore_ops.int64('sum(is_view)') }} as view_count,
    {{ estore_ops.int64('sum(is_cart_add)') }} as cart_count,
    {{ estore_ops.int64('sum(is_purchase)') }} as purchase_count,
    min(price) as min_price,
    max(price) as max_price
from {{ ref('fct_events') }}
group by product_id, brand, category_id, category_code
