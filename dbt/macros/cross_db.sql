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

{#-
  Money: an exact decimal with cents, DECIMAL(18,2) on DuckDB and NUMERIC on BigQuery, so sums
  are exact to the cent (a 32-bit or 64-bit float is not).
-#}
{% macro money_type() -%}
    {{ return(adapter.dispatch('money_type', 'estore_ops')()) }}
{%- endmacro %}
{% macro default__money_type() -%}decimal(18,2){%- endmacro %}
{% macro bigquery__money_type() -%}numeric{%- endmacro %}

{% macro money(expr) -%}cast({{ expr }} as {{ estore_ops.money_type() }}){%- endmacro %}

{#-
  A raw FLOAT price as money: the float is first taken to 9 decimals (what BigQuery's cast to
  NUMERIC does), then rounded half away from zero to the cent. A price written with two decimals
  (every REES46 price) comes out exactly as written; both engines round any other the same way.
-#}
{% macro money_from_float(expr) -%}
    {{ return(adapter.dispatch('money_from_float', 'estore_ops')(expr)) }}
{%- endmacro %}
{% macro default__money_from_float(expr) -%}
    cast(round(cast({{ expr }} as decimal(38,9)), 2) as decimal(18,2))
{%- endmacro %}
{% macro bigquery__money_from_float(expr) -%}
    round(cast({{ expr }} as numeric), 2)
{%- endmacro %}

{#-
  The average of a money column rounded half away from zero to the cent, exact on both engines:
  NULL values are skipped and no rows give NULL. DuckDB divides decimals in floating point, so
  there it is computed in whole cents.
-#}
{% macro money_avg(expr) -%}
    {{ return(adapter.dispatch('money_avg', 'estore_ops')(expr)) }}
{%- endmacro %}
{% macro default__money_avg(expr) -%}
    cast(
        sign(sum({{ expr }}))
        * ((2 * abs(cast(sum({{ expr }}) * 100 as hugeint)) + count({{ expr }})) // (2 * nullif(count({{ expr }}), 0)))
        * cast(0.01 as decimal(3,2))
    as decimal(18,2))
{%- endmacro %}
{% macro bigquery__money_avg(expr) -%}
    round(safe_divide(sum({{ expr }}), count({{ expr }})), 2)
{%- endmacro %}

{#- The engine's 64-bit float (dbt.type_float() is a 32-bit FLOAT on DuckDB). -#}
{% macro float64_type() -%}
    {{ return(adapter.dispatch('float64_type', 'estore_ops')()) }}
{%- endmacro %}
{% macro default__float64_type() -%}double{%- endmacro %}
{% macro bigquery__float64_type() -%}float64{%- endmacro %}

{#- A whole number as the engine's 64-bit integer (DuckDB sums integers into HUGEINT). -#}
{% macro int64(expr) -%}cast({{ expr }} as {{ dbt.type_bigint() }}){%- endmacro %}

{#- An ISO date string as a DATE literal, e.g. date '2019-10-01' (the same on both engines). -#}
{% macro date_literal(day) -%}date '{{ day }}'{%- endmacro %}

{#- A UTC instant as a literal of the engine's raw event_time type (TIMESTAMPTZ / TIMESTAMP). -#}
{% macro utc_timestamp_literal(text) -%}
    {{ return(adapter.dispatch('utc_timestamp_literal', 'estore_ops')(text)) }}
{%- endmacro %}
{% macro default__utc_timestamp_literal(text) -%}timestamp '{{ text }}+00:00'{%- endmacro %}
{% macro duckdb__utc_timestamp_literal(text) -%}timestamptz '{{ text }}+00:00'{%- endmacro %}
