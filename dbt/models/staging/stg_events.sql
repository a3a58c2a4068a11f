{#-
  Cleaned events, one row per distinct (event_time, event_type, product_id, user_id, user_session):
  - rows without product_id, user_session, user_id or event_time are dropped;
  - exact duplicates on that key keep the most recently loaded row;
  - ids become strings; brand and category_code are trimmed and lower-cased (empty -> NULL);
  - products seen with more than one non-null brand are dropped as data errors;
  - event_date is the UTC date of event_time.
-#}
with source as (

    select * from {{ source('raw', 'events') }}

),

typed as (

    select
        event_time,
        lower(trim(event_type)) as event_type,
        cast(product_id as {{ dbt.type_string() }}) as product_id,
        cast(category_id as {{ dbt.type_string() }}) as category_id,
        lower(nullif(trim(category_code), '')) as category_code,
        lower(nullif(trim(brand), '')) as brand,
        price,
        cast(user_id as {{ dbt.type_string() }}) as user_id,
        nullif(trim(user_session), '') as user_session,
        _source_file,
        _source_generation,
        _loaded_at
    from source
    where product_id is not null
      and user_id is not null
      and event_time is not null
      and nullif(trim(user_session), '') is not null

),

ranked as (

    select
        typed.*,
        row_number() over (
            partition by event_time, event_type, product_id, user_id, user_session
            order by _loaded_at desc, _source_file desc, _source_generation desc,
                     price desc, brand desc, category_code desc, category_id desc
        ) as duplicate_rank
    from typed

),

brand_conflicts as (

    {{ estore_ops.brand_conflict_products() }}

)

select
    event_time,
    {{ estore_ops.utc_date('event_time') }} as event_date,
    event_type,
    product_id,
    category_id,
    category_code,
    brand,
    price,
    user_id,
    user_session,
    _source_file,
    _loaded_at
from ranked
where duplicate_rank = 1
  and product_id not in (select product_id from brand_conflicts)
