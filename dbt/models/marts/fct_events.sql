{#-
  One row per cleaned event (int_events__brand_resolved) with the columns of estore-analytics' fct_events:
  0/1 integer flags (BI sums them), quantity 1, revenue = price of a purchase (NULL for other
  events and for a purchase without a price) and a deterministic event_id (md5 of the dedup key),
  plus the lineage columns.

  Incremental: replaces the days the change log lists (raw changes int_events__deduplicated has taken
  in, and days of products whose brand-conflict status changed). DuckDB: delete + insert of those
  days in one transaction; BigQuery: insert_overwrite of those event_date partitions (one MERGE
  with a constant partition filter).
-#}
{%- set days = estore_ops.pending_days() if execute and is_incremental() else [] -%}
{{ estore_ops.replace_days_config(['raw', 'conflict'], 'int_events__deduplicated', ['user_id'],
    post_hook=["{{ estore_ops.mark_done() }}"]) }}
-- depends_on: {{ ref('int_change_log') }}

with events as (

    select * from {{ ref('int_events__brand_resolved') }}
    {% if is_incremental() %}
    where event_date in ({{ estore_ops.date_list(days) }})
    {% endif %}

)

select
    {{ estore_ops.surrogate_key([
        estore_ops.epoch_micros('event_time'), 'event_type', 'product_id', 'user_id', 'user_session'
    ]) }} as event_id,
    event_time,
    event_date,
    event_type,
    user_id,
    user_session,
    product_id,
    brand,
    category_code,
    category_id,
    price,
    1 as quantity,
    case when event_type = 'purchase' then 1 else 0 end as is_purchase,
    case when event_type = 'cart' then 1 else 0 end as is_cart_add,
    case when event_type = 'view' then 1 else 0 end as is_view,
    case when event_type = 'purchase' then price end as revenue,
    _source_file,
    _loaded_at
from events
