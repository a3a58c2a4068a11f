{#-
  The deduplicated events (int_events__deduplicated) without the products seen with more than one
  non-null brand (data errors, as in estore-analytics): the events every mart reads. The conflict
  set is the one int_events__deduplicated's post-hooks record (staging.int_brand_conflicts) in the
  same run and transaction as the events, so it always matches the events stored there (dbt/README.md
  says why it is not a model of its own). A view.

  Where that table does not exist yet when this view compiles (the first run, whose hooks create it
  after dbt's relation cache was read, or `estore-ops upgrade` comparing columns on a warehouse of an
  earlier version), the view computes the same set from int_events__deduplicated itself.
-#}
{{ config(materialized='view') }}
{%- set recorded = estore_ops.existing_intermediate('int_brand_conflicts') if execute else none %}

-- Every column as int_events__deduplicated has it: this view only filters rows.
select *
from {{ ref('int_events__deduplicated') }}
where product_id not in (
    {% if recorded is not none -%}
    select product_id from {{ recorded }}
    {%- else -%}
    {{ estore_ops.brand_conflict_products_of(ref('int_events__deduplicated')) }}
    {%- endif %}
)
