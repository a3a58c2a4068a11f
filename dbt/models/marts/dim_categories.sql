{#- One row per category_code seen in the events, split into up to four levels. -#}
with codes as (

    select
        category_code,
        count(*) as event_count,
        count(distinct product_id) as product_count
    from {{ ref('fct_events') }}
    where category_code is not null
    group by category_code

)

select
    category_code,
    {{ estore_ops.path_level('category_code', 1) }} as category_level_1,
    {{ estore_ops.path_level('category_code', 2) }} as category_level_2,
    {{ estore_ops.path_level('category_code', 3) }} as category_level_3,
    {{ estore_ops.path_level('category_code', 4) }} as category_level_4,
    event_count,
    product_count
from codes
