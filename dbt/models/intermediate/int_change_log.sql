{#-
  The change log: what changed in raw.events (kind 'raw', one row per changed UTC day) and, written
  by hooks of other models, brand-conflict changes (kind 'conflict') and each incremental model's
  done mark (kind 'done'). See macros/change_log.sql. Append-only; never rebuilt by
  --full-refresh, so models that a --select left out still find what they have not taken in.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy=('merge' if target.type == 'bigquery' else 'append'),
    full_refresh=false,
    on_schema_change='fail'
) }}

with changed as (

    {{ estore_ops.raw_changed_days() }}

)

select
    {% if is_incremental() -%}
    {{ estore_ops.int64("(select coalesce(max(batch), 0) + 1 from " ~ this ~ ")") }}
    {%- else -%}
    {{ estore_ops.int64(1) }}
    {%- endif %} as batch,
    cast('raw' as {{ dbt.type_string() }}) as kind,
    event_date,
    cast(null as {{ dbt.type_string() }}) as model_name,
    {{ dbt.current_timestamp() }} as logged_at
from changed
