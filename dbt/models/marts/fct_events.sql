{#-
  One row per cleaned event, with flags, revenue and a deterministic event_id.

  Incremental: whole days are replaced. A run recomputes every event_date that
    (a) has raw rows loaded after the newest _loaded_at already in this table (new days,
        late files for existing days, reloaded files, late duplicates),
    (b) holds rows of this table that came from a file that has just been (re)loaded, so rows
        a reloaded file no longer contains disappear, or
    (c) holds rows of a product that has since become a brand-conflict product.
  DuckDB: delete+insert on event_date. BigQuery: insert_overwrite of the event_date partitions.
  Either way a re-run or a late file never duplicates an event.
  Both replace only days that still have events, so two post-hooks remove what is left over
  in days that became empty: rows from an older version of a file that has been reloaded since
  (every row of a file load shares one _loaded_at), and rows of brand-conflict products.
  Not handled incrementally (run --full-refresh): a reload that resolves a product's brand
  conflict brings that product's events back only for the days the reload touches.
-#}
{%- set cleanup_hooks = [
    "delete from {{ this }} as stale where exists (select 1 from (select _source_file, max(_loaded_at) as loaded_at"
        ~ " from {{ source('raw', 'events') }} group by _source_file) as f"
        ~ " where f._source_file = stale._source_file and f.loaded_at > stale._loaded_at)",
    "delete from {{ this }} where product_id in ({{ estore_ops.brand_conflict_products() }})",
] -%}
-- depends_on: {{ source('raw', 'events') }}
{% if target.type == 'bigquery' -%}
{#- insert_overwrite replaces the affected partitions. BigQuery emulators cannot run its
    partition script, so estore_ops.analytics.transform sets var fct_events_bigquery_strategy = 'merge'
    when the target has an api_endpoint (an emulator): merge on event_id; with the post-hooks
    both strategies give the same table. -#}
{%- set bq_strategy = var('fct_events_bigquery_strategy', 'insert_overwrite') -%}
{{ config(
    materialized='incremental',
    incremental_strategy=bq_strategy,
    unique_key=('event_id' if bq_strategy == 'merge' else none),
    partition_by={'field': 'event_date', 'data_type': 'date', 'granularity': 'day'},
    cluster_by=['user_id'],
    on_schema_change='fail',
    post_hook=cleanup_hooks
) }}
{%- else -%}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='event_date',
    on_schema_change='fail',
    post_hook=cleanup_hooks
) }}
{%- endif %}

with events as (

    select * from {{ ref('stg_events') }}

{% if is_incremental() %}

),

watermark as (

    select max(_loaded_at) as loaded_at from {{ this }}

),

new_raw as (

    select event_time, _source_file
    from {{ source('raw', 'events') }}
    where (select loaded_at from watermark) is null
       or _loaded_at > (select loaded_at from watermark)

),

affected_days as (

    select distinct {{ estore_ops.utc_date('event_time') }} as event_date
    from new_raw
    where event_time is not null

    union distinct

    select distinct event_date
    from {{ this }}
    where _source_file in (select _source_file from new_raw)

    union distinct

    select distinct event_date
    from {{ this }}
    where product_id in ({{ estore_ops.brand_conflict_products() }})

{% endif %}

)

select
    {{ estore_ops.surrogate_key([
        estore_ops.epoch_micros('event_time'), 'event_type', 'product_id', 'user_id', 'user_session'
    ]) }} as event_id,
    event_time,
    event_date,
    event_type,
    product_id,
    category_id,
    category_code,
    brand,
    price,
    user_id,
    user_session,
    event_type = 'purchase' as is_purchase,
    event_type = 'cart' as is_cart_add,
    event_type = 'view' as is_view,
    case when event_type = 'purchase' then price end as revenue,
    1 as quantity,
    _source_file,
    _loaded_at
from events
{% if is_incremental() %}
where event_date in (select event_date from affected_days)
{% endif %}
