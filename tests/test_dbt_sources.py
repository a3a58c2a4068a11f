"""dbt's source declaration (dbt/models/staging/_sources.yml) is generated from estore_ops/schema.py,
the one definition of raw.events: the columns in table order, their descriptions and both engines'
types. This test fails when the two differ; regenerate with `python -m tests.test_dbt_sources`."""

from __future__ import annotations

import sys

import yaml

from estore_ops.analytics.transform import default_project_dir
from estore_ops.schema import ALL_COLUMNS, RAW_TABLE

SOURCES = default_project_dir() / "models" / "staging" / "_sources.yml"

HEADER = """\
# GENERATED from estore_ops/schema.py by `python -m tests.test_dbt_sources`: do not edit by hand
# (tests/test_dbt_sources.py fails when this file and schema.py differ).
version: 2

sources:
  - name: raw
    # DuckDB: schema `raw` of the warehouse file; BigQuery: the dataset from the warehouse setting.
    schema: "{{ var('raw_schema', 'raw') }}"
    description: Raw REES46-style events as loaded by `estore-ops load`.
    tables:
"""


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'  # a YAML double-quoted scalar


def render_sources() -> str:
    lines = [f"      - name: {RAW_TABLE}", "        columns:"]
    for column in ALL_COLUMNS:
        lines += [
            f"          - name: {column.name}",
            f"            description: {_quoted(column.description)}",
            f"            meta: {{duckdb_type: {column.duckdb_type}, bigquery_type: {column.bigquery_type}}}",
        ]
    return HEADER + "\n".join(lines) + "\n"


def test_sources_yml_is_generated_from_schema_py():
    assert SOURCES.read_text() == render_sources(), "regenerate it: python -m tests.test_dbt_sources"
    table, = yaml.safe_load(SOURCES.read_text())["sources"][0]["tables"]
    assert [(c["name"], c["description"], c["meta"]["duckdb_type"], c["meta"]["bigquery_type"]) for c in table["columns"]] \
        == [(c.name, c.description, c.duckdb_type, c.bigquery_type) for c in ALL_COLUMNS]


if __name__ == "__main__":
    SOURCES.write_text(render_sources())
    sys.stdout.write(f"wrote {SOURCES}\n")
