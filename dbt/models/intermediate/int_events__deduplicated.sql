{#-
  Every usable event of raw.events, once (stg_events, renamed and cast, is read here):
  - rows without event_time, product_id, user_id or user_session are dropped;
  - exact duplicates on (event_time, event_type, product_id, user_id, user_session) keep the most
    recently loaded row (then the greatest file name, generation and values, so the choice never
    depends on the engine).
  Brand-conflict products are kept here; int_events__brand_resolved leaves them out.

  Incremental: the dedup key holds event_time, so duplicates share a UTC day and each day can be
  rebuilt on its own. A run rebuilds the days the change log lists as changed in raw.events,
  reading stg_events through constant event_time ranges (pushed down to raw.events: BigQuery
  prunes its partitions). Post-hooks then log brand-conflict changes, record the conflict set and
  the raw file versions taken in (macros/raw_changes.sql).
-#}
{%- set days = estore_ops.pending_days() if execute and is_incremental() else [] -%}
{#- Its done mark is written by the conflict hooks, in the same statement as the conflict entries. -#}
{{ estore_ops.replace_days_config(['raw'], none, ['product_id'],
    post_hook=estore_ops.brand_conflict_hooks() + ["{{ estore_ops.raw_file_versions_hook() }}"]) }}
-- depends_on: {{ ref('int_change_log') }}

with events as (

    select * from {{ ref('stg_events') }}
    {% if is_incremental() %}
    where {{ estore_ops.event_time_on_days('event_time', days) }}
    {% endif %}

),

ranked as (

    select
        events.*,
        row_number() over (
            partition by event_time, event_type, product_id, user_id, user_session
            order by _loaded_at desc, _source_file desc, _source_generation desc,
                     price desc nulls last, brand desc nulls last, category_code desc nulls last,
                     category_id desc nulls last
        ) as duplicate_rank
    from events
    where event_time is not null
      and product_id is not null
      and user_id is not null
      and user_session is not null

)

select
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
    _source_file,
    _loaded_at
from ranked
where duplicate_rank = 1
