{#-
  One row per category id seen in fct_events (estore-analytics' grain): its category_code (the
  most frequent non-null code of the id's events; ties go to the alphabetically first) split into
  up to four levels, plus the events and products of the category.
-#}
with codes as (

    select category_id, category_code, sum(event_count) as event_count
    from {{ ref('int_product_facts') }}
    where category_id is not null
    group by category_id, category_code

),

ranked as (

    select
        category_id,
        category_code,
        row_number() over (
            partition by category_id
            order by case when category_code is null then 1 else 0 end, event_count desc, category_code asc
        ) as code_rank
    from codes

),

totals as (

    select
        category_id,
        {{ estore_ops.int64('sum(event_count)') }} as event_count,
        count(distinct product_id) as product_count
    from {{ ref('int_product_facts') }}
    where category_id is not null
    group by category_id

)

select
    t.category_id as raw_category_id,
    r.category_code,
    {{ estore_ops.path_level('r.category_code', 1) }} as category_lvl_1,
    {{ estore_ops.path_level('r.category_code', 2) }} as category_lvl_2,
    {{ estore_ops.path_level('r.category_code', 3) }} as category_lvl_3,
    {{ estore_ops.path_level('r.category_code', 4) }} as category_lvl_4,
    t.event_count,
    t.product_count
from totals as t
inner join ranked as r on r.category_id = t.category_id and r.code_rank = 1
