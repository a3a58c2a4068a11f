{#-
  Cleaned, deduplicated events (int_events_deduped) without the products seen with more than one
  non-null brand (data errors, as in estore-analytics). The conflict set is the one recorded by
  int_events_deduped's post-hook, so it always matches the events stored there. Where that table
  does not exist yet (compiling against a warehouse of an earlier version, as `estore-ops upgrade`
  does to compare columns), the same set is computed from int_events_deduped.
-#}
{%- set recorded = estore_ops.existing_intermediate('int_brand_conflicts') if execute else none -%}
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
    {% if recorded is not none -%}
    select product_id from {{ recorded }}
    {%- else -%}
    {{ estore_ops.brand_conflict_products_of(ref('int_events_deduped')) }}
    {%- endif %}
)
