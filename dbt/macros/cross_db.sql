{#-
  Adapter-dispatched helpers for the places where DuckDB and BigQuery differ.
  Every macro has default__, duckdb__ and bigquery__ implementations.
  Timestamps are TIMESTAMPTZ on DuckDB, whose casts follow the session time zone; these
  helpers always work in UTC so results do not depend on the machine's zone.
-#}

{# The UTC calendar date of a timestamp. #}
{% macro utc_date(ts) -%}
    {{ return(adapter.dispatch('utc_date', 'estore_ops')(ts)) }}
{%- endmacro %}
{% macro default__utc_date(ts) -%}cast({{ ts }} as date){%- endmacro %}
{% macro duckdb__utc_date(ts) -%}cast(timezone('UTC', {{ ts }}) as date){%- endmacro %}
{% macro bigquery__utc_date(ts) -%}date({{ ts }}, 'UTC'){%- endmacro %}

{# Microseconds since the Unix epoch (an integer): stable text for keys, exact differences. #}
{% macro epoch_micros(ts) -%}
    {{ return(adapter.dispatch('epoch_micros', 'estore_ops')(ts)) }}
{%- endmacro %}
{% macro default__epoch_micros(ts) -%}cast(extract(epoch from {{ ts }}) * 1000000 as bigint){%- endmacro %}
{% macro duckdb__epoch_micros(ts) -%}epoch_us({{ ts }}){%- endmacro %}
{% macro bigquery__epoch_micros(ts) -%}unix_micros({{ ts }}){%- endmacro %}

{# Whole seconds from `start_ts` to `end_ts` (truncated; timestamps here are whole seconds). #}
{% macro seconds_between(start_ts, end_ts) -%}
    {{ return(adapter.dispatch('seconds_between', 'estore_ops')(start_ts, end_ts)) }}
{%- endmacro %}
{% macro default__seconds_between(start_ts, end_ts) -%}
    cast(floor(({{ estore_ops.epoch_micros(end_ts) }} - {{ estore_ops.epoch_micros(start_ts) }}) / 1000000.0) as {{ dbt.type_bigint() }})
{%- endmacro %}
{% macro duckdb__seconds_between(start_ts, end_ts) -%}
    ((epoch_us({{ end_ts }}) - epoch_us({{ start_ts }})) // 1000000)
{%- endmacro %}
{% macro bigquery__seconds_between(start_ts, end_ts) -%}
    timestamp_diff({{ end_ts }}, {{ start_ts }}, second)
{%- endmacro %}

{# Whole days from date `start_date` to date `end_date`. #}
{% macro days_between(start_date, end_date) -%}
    {{ return(adapter.dispatch('days_between', 'estore_ops')(start_date, end_date)) }}
{%- endmacro %}
{% macro default__days_between(start_date, end_date) -%}
    ({{ end_date }} - {{ start_date }})
{%- endmacro %}
{% macro duckdb__days_between(start_date, end_date) -%}
    date_diff('day', {{ start_date }}, {{ end_date }})
{%- endmacro %}
{% macro bigquery__days_between(start_date, end_date) -%}
    date_diff({{ end_date }}, {{ start_date }}, day)
{%- endmacro %}

{# First day of the month of a date, as a DATE (dbt.date_trunc returns a timestamp on both). #}
{% macro month_start(d) -%}
    {{ return(adapter.dispatch('month_start', 'estore_ops')(d)) }}
{%- endmacro %}
{% macro default__month_start(d) -%}cast(date_trunc('month', {{ d }}) as date){%- endmacro %}
{% macro duckdb__month_start(d) -%}cast(date_trunc('month', {{ d }}) as date){%- endmacro %}
{% macro bigquery__month_start(d) -%}date_trunc({{ d }}, month){%- endmacro %}

{# 'YYYY-MM' label of a date. #}
{% macro month_label(d) -%}
    {{ return(adapter.dispatch('month_label', 'estore_ops')(d)) }}
{%- endmacro %}
{% macro default__month_label(d) -%}to_char({{ d }}, 'YYYY-MM'){%- endmacro %}
{% macro duckdb__month_label(d) -%}strftime({{ d }}, '%Y-%m'){%- endmacro %}
{% macro bigquery__month_label(d) -%}format_date('%Y-%m', {{ d }}){%- endmacro %}

{# Part `n` (1-based) of a dotted path, NULL when missing or empty (split_part gives '' on some adapters). #}
{% macro path_level(text, n) -%}
    nullif(trim({{ dbt.split_part(text, "'.'", n) }}), '')
{%- endmacro %}

{# A deterministic surrogate key: md5 hex of the parts joined with '|', NULL parts spelled out. #}
{% macro surrogate_key(parts) -%}
    {%- set casted = [] -%}
    {%- for p in parts -%}
        {%- do casted.append("coalesce(cast(" ~ p ~ " as " ~ dbt.type_string() ~ "), '<null>')") -%}
        {%- if not loop.last %}{% do casted.append("'|'") %}{% endif -%}
    {%- endfor -%}
    {{ dbt.hash(dbt.concat(casted)) }}
{%- endmacro %}

{#
  Products that appear in the raw data with more than one non-null brand (compared
  lower-cased): data errors, dropped from staging. Shared by stg_events and the
  incremental logic of fct_events and dim_users.
#}
{% macro brand_conflict_products() -%}
    select cast(product_id as {{ dbt.type_string() }}) as product_id
    from {{ source('raw', 'events') }}
    where product_id is not null
      and nullif(trim(brand), '') is not null
    group by product_id
    having count(distinct lower(trim(brand))) > 1
{%- endmacro %}
