{#-
  raw.events, one row per raw row, renamed and cast only (the staging layer): ids become strings,
  event_type, brand and category_code are trimmed and lower-cased (empty -> NULL), user_session
  is trimmed (empty -> NULL), price becomes money (rounded to the cent, exact), event_date is the
  UTC date of event_time. No row is dropped, deduplicated or resolved here:
  int_events__deduplicated drops unusable rows and duplicates, int_events__brand_resolved leaves
  out brand-conflict products.

  A view: the incremental int_events__deduplicated selects from it through constant ranges of
  event_time, which both engines push down to raw.events (BigQuery prunes its partitions).
-#}
select
    event_time,
    {{ estore_ops.utc_date('event_time') }} as event_date,
    lower(trim(event_type)) as event_type,
    cast(product_id as {{ dbt.type_string() }}) as product_id,
    cast(category_id as {{ dbt.type_string() }}) as category_id,
    lower(nullif(trim(category_code), '')) as category_code,
    lower(nullif(trim(brand), '')) as brand,
    {{ estore_ops.money_from_float('price') }} as price,
    cast(user_id as {{ dbt.type_string() }}) as user_id,
    nullif(trim(user_session), '') as user_session,
    _source_file,
    _source_generation,
    _loaded_at
from {{ source('raw', 'events') }}
