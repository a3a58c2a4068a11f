{#-
  One row per product: its most frequent brand, category_id and category_code (ties go to the
  alphabetically first value; NULLs only when the product never has one), joined to the
  category levels.
-#}
with events as (

    select product_id, brand, category_id, category_code, is_view, is_cart_add, is_purchase, price
    from {{ ref('fct_events') }}

),

{% for col in ['brand', 'category_id', 'category_code'] %}
{{ col }}_ranked as (

    select
        product_id,
        {{ col }},
        row_number() over (partition by product_id order by count(*) desc, {{ col }} asc) as rn
    from events
    where {{ col }} is not null
    group by product_id, {{ col }}

),
{% endfor %}

products as (

    select
        product_id,
        count(*) as event_count,
        sum(case when is_view then 1 else 0 end) as view_count,
        sum(case when is_cart_add then 1 else 0 end) as cart_count,
        sum(case when is_purchase then 1 else 0 end) as purchase_count,
        min(price) as min_price,
        max(price) as max_price
    from events
    group by product_id

)

select
    p.product_id,
    b.brand,
    ci.category_id,
    cc.category_code,
    c.category_level_1,
    c.category_level_2,
    c.category_level_3,
    c.category_level_4,
    p.event_count,
    p.view_count,
    p.cart_count,
    p.purchase_count,
    p.min_price,
    p.max_price
from products as p
left join brand_ranked as b on b.product_id = p.product_id and b.rn = 1
left join category_id_ranked as ci on ci.product_id = p.product_id and ci.rn = 1
left join category_code_ranked as cc on cc.product_id = p.product_id and cc.rn = 1
left join {{ ref('dim_categories') }} as c on c.category_code = cc.category_code
