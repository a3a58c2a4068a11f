{#-
  Cleaned, deduplicated events (int_events_deduped) without the products seen with more than one
  non-null brand (data errors, as in estore-analytics). The conflict set is the one recorded by
  int_events_deduped's post-hook, so it always matches the events stored there.
-#}
select
    event_time,
    event_type,
    product_id,
    category_id,
    category_code,
    brand,
    price,
    user_id,
    user_session,
    event_date,
    _source_file,
    _loaded_at
from {{ ref('int_events_deduped') }}
where product_id not in (
    select product_id
    from {{ api.Relation.create(database=target.database, schema=estore_ops.intermediate_schema(), identifier='int_brand_conflicts') }}
)
