{#-
  Every cleaned event of raw.events, once: the store stg_events reads.
  - rows without event_time, product_id, user_id or user_session are dropped;
  - ids become strings; event_type, brand and category_code are trimmed and lower-cased (empty ->
    NULL); price becomes money (cents, exact);
  - exact duplicates on (event_time, event_type, product_id, user_id, user_session) keep the most
    recently loaded row (then the greatest file name, generation and values, so the choice never
    depends on the engine);
  - event_date is the UTC date of event_time.
  Brand-conflict products are kept here; stg_events leaves them out.

  Incremental: the dedup key holds event_time, so duplicates share a UTC day and each day can be
  rebuilt on its own. A run rebuilds the days the change log lists as changed in raw.events,
  reading raw.events through constant day ranges (BigQuery prunes its partitions). Post-hooks then
  log brand-conflict changes and record the raw file versions taken in (macros/raw_changes.sql).
-#}
{%- set days = estore_ops.pending_days() if execute and is_incremental() else [] -%}
{#- Its done mark is written by the conflict hooks, in the same statement as the conflict entries. -#}
{{ estore_ops.replace_days_config(['raw'], none, ['product_id'],
    post_hook=estore_ops.brand_conflict_hooks() + ["{{ estore_ops.raw_file_versions_hook() }}"]) }}
-- depends_on: {{ ref('int_change_log') }}

with source as (

    select * from {{ source('raw', 'events') }}
    {% if is_incremental() %}
    where {{ estore_ops.event_time_on_days('event_time', days) }}
    {% endif %}

),

cleaned as (

    select
        event_time,
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
    from source
    where event_time is not null
      and product_id is not null
      and user_id is not null
      and nullif(trim(user_session), '') is not null

),

ranked as (

    select
        cleaned.*,
        row_number() over (
            partition by event_time, event_type, product_id, user_id, user_session
            order by _loaded_at desc, _source_file desc, _source_generation desc,
                     price desc nulls last, brand desc nulls last, category_code desc nulls last,
                     category_id desc nulls last
        ) as duplicate_rank
    from cleaned

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
