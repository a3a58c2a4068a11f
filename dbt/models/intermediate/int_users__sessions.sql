{#- Per session owner: the number of sessions (fct_sessions) the user owns. A view. -#}
{{ config(materialized='view') }}

select user_id, count(*) as session_count
from {{ ref('fct_sessions') }}
group by user_id
