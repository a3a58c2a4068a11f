{#- Per user: first and last event and the number of events in fct_events. A view. -#}
{{ config(materialized='view') }}

select
    user_id,
    min(event_time) as first_event_time,
    min(event_date) as first_event_date,
    max(event_time) as last_event_time,
    max(event_date) as last_event_date,
    count(*) as event_count
from {{ ref('fct_events') }}
group by user_id
