{#-
  One row per product in fct_events. Brand and category come from the product's most frequent
  (brand, category_id) pair, as in estore-analytics (ties: a non-null brand first, then the
  alphabetically first brand and category id); category_code and its levels are the category's
  (dim_categories). Added: category_id, event counts and the price range.
-#}
with pairs as (

    select product_id, brand, category_id, sum(event_count) as pair_events
    from {{ ref('int_product_facts') }}
    group by product_id, brand, category_id

),

top_pair as (

    select
        product_id,
        brand,
        category_id,
        row_number() over (
            partition by product_id
            order by pair_events desc, case when brand is null then 1 else 0 end, brand asc,
                     case when category_id is null then 1 else 0 end, category_id asc
        ) as pair_rank
    from pairs

),

totals as (

    select
        product_id,
        {{ estore_ops.int64('sum(event_count)') }} as event_count,
        {{ estore_ops.int64('sum(view_count)') }} as view_count,
        {{ estore_ops.int64('sum(cart_count)') }} as cart_count,
        {{ estore_ops.int64('sum(purchase_count)') }} as purchase_count,
        min(min_price) as min_price,
        max(max_price) as max_price
    from {{ ref('int_product_facts') }}
    group by product_id

)

select
    t.product_id,
    p.brand,
    c.category_code,
    c.category_lvl_1,
    c.category_lvl_2,
    c.category_lvl_3,
    c.category_lvl_4,
    p.category_id,
    t.event_count,
    t.view_count,
    t.cart_count,
    t.purchase_count,
    t.min_price,
    t.max_price
from totals as t
inner join top_pair as p on p.product_id = t.product_id and p.pair_rank = 1
left join {{ ref('dim_categories') }} as c on c.raw_category_id = p.category_id
