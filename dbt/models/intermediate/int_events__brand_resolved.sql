{#-
  The deduplicated events (int_events__deduplicated) without the products seen with more than one
  non-null brand (data errors, as in estore-analytics): the events every mart reads. The conflict
  set is the one int_events__deduplicated's post-hooks record (staging.int_brand_conflicts) in the
  same run and transaction as the events, so it always matches the events stored there (see
  macros/raw_changes.sql for why it is not a model of its own). A view.
-#}
{{ config(materialized='view') }}

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
from {{ ref('int_events__deduplicated') }}
where product_id not in (
    select product_id
    from {{ api.Relation.create(database=target.database, schema=estore_ops.intermediate_schema(), identifier='int_brand_conflicts') }}
)
