"""`estore-ops verify` names every kind of disagreement between the warehouse, the state and the
landing files, on DuckDB and on the BigQuery emulator (landing and state in fake GCS), and the fix
it suggests does fix it."""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from estore_ops import schema
from estore_ops.backends.stores.base import ObjectStore
from estore_ops.backends.stores.local import LocalFolderStore
from tests.gcp_emulators import bq_dataset, bq_emulator, fake_gcs, gcs_bucket  # noqa: F401 - fixtures
from tests.helpers import HEADER, Workspace, event_lines
from tests.slack_server import FakeSlack, slack  # noqa: F401 - fixture

COLUMNS = ", ".join(c.name for c in schema.ALL_COLUMNS)


@dataclasses.dataclass
class Site:
    """One configuration under test: where the files land, and SQL on the raw table."""

    kind: str
    landing: ObjectStore
    state: ObjectStore
    table: str
    sql: Callable[[str], Any]  # runs DML/queries on the raw table, outside estore-ops

    def put(self, name: str, lines: list[str]) -> None:
        data = ("\n".join([HEADER, *lines]) + "\n").encode()
        self.landing.write(name, gzip.compress(data, mtime=0) if name.endswith(".gz") else data)

    def generation(self, name: str) -> int:
        return self.landing.stat(name).generation


@pytest.fixture(params=["duckdb", pytest.param("bigquery", marks=pytest.mark.gcp)])
def site(request: pytest.FixtureRequest, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    if request.param == "duckdb":
        import duckdb

        def sql(text: str) -> Any:
            con = duckdb.connect(str(ws.db))  # closed at once: the CLI opens the file next
            try:
                return con.execute(text).fetchall()
            finally:
                con.close()

        yield Site("duckdb", LocalFolderStore(ws.landing), LocalFolderStore(ws.state), f"{schema.RAW_SCHEMA}.{schema.RAW_TABLE}", sql)
        return
    from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse

    gcs, bq = request.getfixturevalue("fake_gcs"), request.getfixturevalue("bq_emulator")
    bucket, dataset = request.getfixturevalue("gcs_bucket"), request.getfixturevalue("bq_dataset")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
    monkeypatch.setenv("ESTORE_LANDING", f"gs://{bucket}/landing")
    monkeypatch.setenv("ESTORE_STATE", f"gs://{bucket}/state")
    monkeypatch.setenv("ESTORE_WAREHOUSE", bq.url(dataset))
    warehouse = BigQueryWarehouse.from_url(bq.url(dataset), client=bq.client())
    yield Site("bigquery", gcs.store(f"gs://{bucket}/landing"), gcs.store(f"gs://{bucket}/state"), f"`{warehouse.table_id}`", warehouse.query)
    warehouse.close()


def _verify(ws: Workspace, *args: str) -> tuple[int, dict[str, Any]]:
    result = ws.cli("verify", "--json", *args)
    data = json.loads(result.stdout)
    return result.exit_code, data


def _by_name(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in data["files"]:
        out.setdefault(f["name"], []).append(f)
    return out


def _tamper(site: Site) -> None:
    """Everything that can go wrong after a good load, one file each."""
    t = site.table
    # missing rows: 4 rows of a.csv deleted (product_id = 1000 + line index)
    site.sql(f"DELETE FROM {t} WHERE _source_file = 'a.csv' AND product_id IN (1000, 1001, 1002, 1003)")
    # extra rows: 3 rows of b.csv.gz inserted again (duplicates)
    site.sql(f"INSERT INTO {t} ({COLUMNS}) SELECT {COLUMNS} FROM {t} "
             "WHERE _source_file = 'b.csv.gz' AND product_id IN (1100, 1101, 1102)")
    # orphan rows of an unknown file, and of an older generation of e.csv
    unknown = COLUMNS.replace("_source_file, _source_generation", "'mystery.csv' AS _source_file, 42 AS _source_generation")
    site.sql(f"INSERT INTO {t} ({COLUMNS}) SELECT {unknown} FROM {t} WHERE _source_file = 'e.csv' AND product_id IN (1400, 1401)")
    older = COLUMNS.replace("_source_generation", "_source_generation - 1 AS _source_generation")
    site.sql(f"INSERT INTO {t} ({COLUMNS}) SELECT {older} FROM {t} WHERE _source_file = 'e.csv' AND product_id = 1402")
    # a landing file rewritten (a new version, pending) and one deleted
    site.put("c.csv", event_lines(5, start=9000))
    site.landing.delete("d.csv")


def test_verify_names_each_problem_and_its_fix_works(ws: Workspace, site: Site) -> None:
    site.put("a.csv", event_lines(20))
    site.put("b.csv.gz", event_lines(10, start=100))
    site.put("c.csv", event_lines(8, start=200))
    site.put("d.csv", event_lines(6, start=300))
    site.put("e.csv", event_lines(12, start=400))
    site.put("f.csv", [])  # header only: loaded with 0 rows, and that is ok
    assert ws.cli("load").exit_code == 0

    code, clean = _verify(ws, "--all")
    assert code == 0 and clean["ok"] is True, clean
    assert {f["name"]: (f["verdict"], f["warehouse_rows"], f["state_rows"]) for f in clean["files"]} == {
        "a.csv": ("ok", 20, 20), "b.csv.gz": ("ok", 10, 10), "c.csv": ("ok", 8, 8),
        "d.csv": ("ok", 6, 6), "e.csv": ("ok", 12, 12), "f.csv": ("ok", 0, 0),
    }
    e_generation = site.generation("e.csv")

    _tamper(site)
    code, data = _verify(ws)
    assert code == 1 and data["ok"] is False
    files = _by_name(data)
    (a,), (b,), (c,), (d,) = files["a.csv"], files["b.csv.gz"], files["c.csv"], files["d.csv"]
    assert (a["verdict"], a["problem"], a["warehouse_rows"], a["state_rows"]) == ("missing_rows", True, 16, 20)
    assert "4 row(s) missing" in a["detail"] and a["fix"] == "estore-ops load --file a.csv --force"
    assert (b["verdict"], b["problem"], b["warehouse_rows"], b["state_rows"]) == ("extra_rows", True, 13, 10)
    assert "3 extra row(s)" in b["detail"] and b["fix"] == "estore-ops load --file b.csv.gz --force"
    assert (c["verdict"], c["problem"], c["file"], c["warehouse_rows"]) == ("pending", False, "changed", 8)
    assert c["current_generation"] == site.generation("c.csv") != c["generation"]
    assert (d["verdict"], d["problem"], d["file"], d["warehouse_rows"]) == ("file_gone", False, "gone", 6)
    (mystery,) = files["mystery.csv"]
    assert (mystery["verdict"], mystery["problem"], mystery["generation"], mystery["warehouse_rows"]) == ("orphan_rows", True, 42, 2)
    assert "the state does not know" in mystery["detail"]
    assert "DELETE FROM" in mystery["fix"] and "'mystery.csv'" in mystery["fix"] and "_source_generation = 42" in mystery["fix"]
    e_loaded, e_orphan = sorted(files["e.csv"], key=lambda f: f["verdict"])  # "ok" < "orphan_rows"
    assert (e_loaded["verdict"], e_loaded["warehouse_rows"]) == ("ok", 12)
    assert (e_orphan["verdict"], e_orphan["generation"], e_orphan["warehouse_rows"]) == ("orphan_rows", e_generation - 1, 1)
    assert "older than the loaded generation" in e_orphan["detail"]
    assert e_orphan["fix"].startswith("estore-ops load --file e.csv --force")
    assert files["f.csv"][0]["verdict"] == "ok"  # --json lists every file
    assert data["counts"] == {"ok": 2, "missing_rows": 1, "extra_rows": 1, "orphan_rows": 2, "file_gone": 1,
                              "pending": 1, "unchecked": 0}

    # A gone file fails only when the user says their lifecycle never removes files.
    code, strict = _verify(ws, "--fail-on-gone")
    assert code == 1 and _by_name(strict)["d.csv"][0]["problem"] is True

    # The suggested fixes fix what they are for.
    assert ws.cli("load", "--file", "a.csv", "--force").exit_code == 0
    assert ws.cli("load", "--file", "b.csv.gz", "--force").exit_code == 0
    assert ws.cli("load", "--file", "e.csv", "--force").exit_code == 0
    site.sql(mystery["fix"].split("remove these rows with ", 1)[1])
    assert ws.cli("load").exit_code == 0  # the pending new version of c.csv
    code, fixed = _verify(ws, "--all")
    assert code == 0, fixed
    verdicts = {f["name"]: f["verdict"] for f in fixed["files"]}
    assert verdicts == {"a.csv": "ok", "b.csv.gz": "ok", "c.csv": "ok", "d.csv": "file_gone", "e.csv": "ok", "f.csv": "ok"}
    assert _by_name(fixed)["c.csv"][0]["warehouse_rows"] == 5


class ExternalTableQueries:
    """bqemulator has no external tables (tables.insert and query `tableDefinitions` answer 404), so
    on the BigQuery site the client library's `Client.query` is intercepted for the queries that
    carry `tableDefinitions`: the job configuration is recorded as the client would send it
    (`QueryJobConfig.to_api_repr()`, the REST `configuration` of jobs.insert), and the answer is
    computed the way BigQuery would, from the gs:// objects the definitions name. Every other query
    still goes to the emulator.
    Reference: https://cloud.google.com/bigquery/docs/external-data-cloud-storage#temporary-tables
    (ExternalDataConfiguration, `_FILE_NAME` pseudo-column)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, landing: ObjectStore) -> None:
        from google.cloud import bigquery

        self.landing, self.sent = landing, []
        real = bigquery.Client.query

        def query(client: Any, sql: str, job_config: Any = None, **kwargs: Any) -> Any:
            if job_config is None or not job_config.table_definitions:
                return real(client, sql, job_config=job_config, **kwargs)
            self.sent.append((sql, job_config.to_api_repr()))
            return self._answer(job_config.to_api_repr()["query"]["tableDefinitions"])

        monkeypatch.setattr(bigquery.Client, "query", query)

    def _answer(self, definitions: dict[str, Any]) -> Any:
        rows = []
        for definition in definitions.values():
            for uri in definition["sourceUris"]:
                data = self.landing.open(uri.split("/landing/", 1)[1]).read()
                if definition.get("compression") == "GZIP":
                    data = gzip.decompress(data)
                skip = int(definition["csvOptions"]["skipLeadingRows"])
                rows.append({"uri": uri, "n": len(data.decode().splitlines()) - skip})

        class Row(dict):
            def values(self):  # noqa: D102 - what google.cloud.bigquery.Row offers
                return list(super().values())

        class Job:  # a finished job, as jobs.get would describe it
            job_id, state, error_result = "estore_q_external", "DONE", None

            def result(self, **_: Any) -> list[Row]:
                return [Row(r) for r in rows]

        return Job()


def test_deep_recounts_the_files(ws: Workspace, site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    external = ExternalTableQueries(monkeypatch, site.landing) if site.kind == "bigquery" else None
    site.put("a.csv", event_lines(9))
    site.put("b.csv.gz", event_lines(4, start=50))
    assert ws.cli("load").exit_code == 0
    # The state's recorded count of a.csv is made wrong: only a recount of the file can tell who is right.
    raw, generation = site.state.read("cursor.json")
    doc = json.loads(raw)
    doc["files"]["a.csv"]["rows"] = 7
    site.state.write("cursor.json", json.dumps(doc).encode(), if_generation_match=generation)

    code, shallow = _verify(ws)
    assert code == 1 and _by_name(shallow)["a.csv"][0]["verdict"] == "extra_rows"
    code, deep = _verify(ws, "--deep", "--all")
    assert code == 0, json.dumps(deep["files"])
    a, b = _by_name(deep)["a.csv"][0], _by_name(deep)["b.csv.gz"][0]
    assert (a["verdict"], a["file_rows"], a["warehouse_rows"], a["state_rows"]) == ("ok", 9, 9, 7)
    assert "the state recorded 7 rows at load time, the file holds 9" in a["detail"]
    assert (b["verdict"], b["file_rows"]) == ("ok", 4)
    if external is not None:
        # One query job over temporary external tables: one per compression, the objects' gs:// URIs,
        # every column as text with the loader's CSV options, counted by _FILE_NAME.
        ((sql, config),) = external.sent
        definitions = config["query"]["tableDefinitions"]
        a_uri, b_uri = site.landing.uri("a.csv"), site.landing.uri("b.csv.gz")
        assert {name: (d["sourceUris"], d["compression"]) for name, d in definitions.items()} == {
            "estore_verify_0": ([a_uri], "NONE"), "estore_verify_1": ([b_uri], "GZIP"),
        }
        for d in definitions.values():
            assert d["sourceFormat"] == "CSV" and d["maxBadRecords"] == 0
            assert d["csvOptions"] == {"skipLeadingRows": "1", "allowJaggedRows": False, "allowQuotedNewlines": False,
                                       "encoding": "UTF-8"}
            assert [(f["name"], f["type"]) for f in d["schema"]["fields"]] == [(c, "STRING") for c in schema.SOURCE_COLUMN_NAMES]
        assert sql.count("_FILE_NAME") == 2 and "UNION ALL" in sql
        assert config["query"]["useQueryCache"] is False
        assert "destinationTable" not in config["query"]  # nothing is written to a dataset


def test_date_range_counts_only_events_in_it(ws: Workspace, site: Site) -> None:
    site.put("oct01.csv", event_lines(6, day=1))
    site.put("oct02.csv", event_lines(5, start=100, day=2))
    assert ws.cli("load").exit_code == 0
    site.sql(f"INSERT INTO {site.table} ({COLUMNS}) SELECT {COLUMNS} FROM {site.table} WHERE _source_file = 'oct02.csv' AND product_id = 1100")

    code, data = _verify(ws, "--since", "2019-10-02", "--until", "2019-10-03", "--all")
    assert code == 1
    files = _by_name(data)
    assert (files["oct02.csv"][0]["verdict"], files["oct02.csv"][0]["warehouse_rows"]) == ("extra_rows", 6)
    # oct01.csv has no event in the range: it cannot be judged from in-range rows, and is not called missing.
    assert files["oct01.csv"][0]["verdict"] == "unchecked" and files["oct01.csv"][0]["problem"] is False
    code, data = _verify(ws, "--since", "2019-10-01", "--until", "2019-10-02", "--all")
    assert code == 0 and _by_name(data)["oct01.csv"][0]["verdict"] == "ok"


def test_text_output_and_exit_code(ws: Workspace) -> None:
    ws.add("a.csv", event_lines(3))
    assert ws.cli("load").exit_code == 0
    ok = ws.cli("verify")
    assert ok.exit_code == 0 and "verify: everything agrees; 1 file version(s) checked (1 ok)" in ok.output
    (ws.landing / "a.csv").unlink()
    ws.add("b.csv", event_lines(2))
    import duckdb

    con = duckdb.connect(str(ws.db))
    con.execute("DELETE FROM raw.events WHERE product_id = 1000")
    con.close()
    bad = ws.cli("verify")
    assert bad.exit_code == 1
    # Under systemd (no terminal): one key=value line per file, then the summary and the error line.
    assert 'file=a.csv' in bad.output and "verdict=MISSING_ROWS warehouse_rows=2 state_rows=3" in bad.output
    assert "error: verify: 1 problem(s): a.csv (missing_rows)" in bad.output
    # the file is gone too: its fix says how to remove the rows, since it cannot be reloaded
    assert "DELETE FROM raw.events WHERE _source_file = 'a.csv'" in bad.output
    assert "b.csv" not in bad.output.split("verify:")[0]  # a new file is the loader's business, not a mismatch


def test_mismatch_alerts_once_and_is_in_the_run_history(ws: Workspace, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
    ws.add("a.csv", event_lines(3))
    assert ws.cli("load").exit_code == 0
    import duckdb

    con = duckdb.connect(str(ws.db))
    con.execute("INSERT INTO raw.events SELECT * FROM raw.events")
    con.close()
    first = ws.cli("verify")
    second = ws.cli("verify")
    assert first.exit_code == second.exit_code == 1
    alerts = [m for m in slack.messages if "verify failed" in m]
    assert len(alerts) == 1, slack.messages  # the same mismatch is not re-sent within the dedup window
    assert "a.csv" in alerts[0] and "extra_rows" in alerts[0] and "load --file a.csv --force" in alerts[0]
    runs = json.loads(ws.cli("runs", "--job", "verify", "--json").stdout)
    assert [r["status"] for r in runs] == ["failed", "failed"]
    assert ws.cli("load", "--file", "a.csv", "--force").exit_code == 0
    assert ws.cli("verify").exit_code == 0
    assert any("verify recovered" in m for m in slack.messages)


def test_an_unreachable_warehouse_is_a_backend_error_not_a_verdict(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws.add("a.csv", event_lines(3))
    assert ws.cli("load").exit_code == 0
    monkeypatch.setenv("ESTORE_WAREHOUSE", f"chaos+duckdb:///{ws.db}?fail=1&ops=rows&seed=1")
    result = ws.cli("verify")
    assert result.exit_code == 4, result.output
    assert "count rows by file version" in result.output and "verdict=" not in result.output


def test_weekly_timer_runs_verify_and_its_schedule_is_configurable(tmp_path) -> None:
    from estore_ops.deploy.systemd import DeployError, render_units

    common = dict(exe=tmp_path / "estore-ops", env_file=tmp_path / "env", state_dir=tmp_path / "s", work_dir=tmp_path / "w",
                  credential_file=None)
    (tmp_path / "estore-ops").write_text("")
    units = render_units(**common)
    service, timer = units["estore-ops-verify.service"], units["estore-ops-verify.timer"]
    assert f"ExecStart={tmp_path / 'estore-ops'} verify\n" in service
    assert "OnFailure=estore-ops-alert@%n.service" in service  # a killed or timed-out run still alerts
    assert "OnCalendar=Mon *-*-* 03:00:00\n" in timer and "Persistent=true" in timer
    custom = render_units(**common, verify_calendar="Sun *-*-* 05:30:00")["estore-ops-verify.timer"]
    assert "OnCalendar=Sun *-*-* 05:30:00\n" in custom
    with pytest.raises(DeployError, match="not an OnCalendar= expression"):
        render_units(**common, verify_calendar="Mon\nExecStartPre=/bin/sh -c evil")


def test_systemd_install_dry_run_lists_the_verify_timer(ws: Workspace) -> None:
    result = ws.cli("systemd", "install", "--dry-run", "--json", "--verify-calendar", "*-*-01 04:00:00")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "estore-ops-verify.timer" in data["timers"]
    timer = next(text for path, text in data["files"].items() if path.endswith("estore-ops-verify.timer"))
    assert "OnCalendar=*-*-01 04:00:00" in timer
    assert any("enable --now" in c and "estore-ops-verify.timer" in c for c in data["commands"])


def test_bigquery_grouped_count_filters_the_partitioning_column_with_constants() -> None:
    """BigQuery prunes partitions only for a filter on the partitioning column (raw.events: event_time,
    DAY) compared with constant expressions; see
    https://cloud.google.com/bigquery/docs/querying-partitioned-tables#use_a_constant_filter_expression
    Without a range the query reads only the two lineage columns."""
    from datetime import datetime, timezone

    pytest.importorskip("google.cloud.bigquery", reason="the [gcp] extra is not installed")
    from estore_ops.backends.warehouses.bigquery import BigQueryWarehouse

    wh = BigQueryWarehouse("p", "raw", location="EU")
    sql = wh.count_by_version_sql(datetime(2019, 10, 1, tzinfo=timezone.utc), datetime(2019, 11, 1, 2, 0))
    assert sql == ("SELECT _source_file, _source_generation, COUNT(*) AS n FROM `p.raw.events` "
                   "WHERE event_time >= TIMESTAMP('2019-10-01 00:00:00.000000+00') "
                   "AND event_time < TIMESTAMP('2019-11-01 02:00:00.000000+00') GROUP BY _source_file, _source_generation")
    assert "WHERE" not in wh.count_by_version_sql()
