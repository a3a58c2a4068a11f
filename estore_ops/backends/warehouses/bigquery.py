"""BigQuery as the warehouse: `bigquery://PROJECT/DATASET?location=EU` (see bigquery_url.py).

The raw table is `PROJECT.DATASET.events` (schema from estore_ops.schema, partitioned by DAY on
event_time, clustered by _source_file). Beside it, `_estore_loaded_files` records, for every file
version ever committed, the days (partitions) its rows went to: it is how a reload finds the
partitions to delete from without reading `events`.

How a loading tick works (the event data never passes through the VM: BigQuery reads gs:// itself)
-------------------------------------------------------------------------------------------------
1. Stage: one LOAD job per file version, from its gs:// URI into its own staging table (typed
   with the schema, in the file's column order, `max_bad_records=0` so a bad row fails that file
   only). Staging tables expire after a day and are dropped once the tick commits.
2. Check: each staged object is stat'ed again; a file whose generation moved while BigQuery read
   it is left out (its new version loads on the next tick). ONE read-only query over the staging
   tables counts rows, refuses prices and times out of their domain and lists the days each file's rows fall on.
3. Commit, per group of files: ONE query over `_estore_loaded_files` finds the days that earlier
   versions of these names were committed to; the new versions' days are recorded there (before
   the data, so the record never misses rows); then ONE statement changes `events`:
   - none of the names was committed before (the common case): `INSERT ... SELECT` from the
     staging tables, which bills the staged bytes only;
   - some were: a `MERGE ... ON FALSE` whose delete clause carries constant `event_time` ranges of
     exactly those days (BigQuery prunes the target to those partitions) and `_source_file IN`.
   A tick never bills for the whole table. Every query job carries `maximum_bytes_billed`.
4. Verify: the statement's DML statistics must show exactly the staged rows inserted; a commit
   found done by an earlier run is verified by counting its rows in those partitions only.

Exactly once per file version
-----------------------------
Job ids are deterministic: `estore_load_<hash(table, file, generation)>[_a<attempt>]` and
`estore_commit_<hash(table, file versions, their load jobs)>`; `attempt` comes from the state
(`job_attempt`). A retried request (the answer was lost) finds its job: an insert answering 409
leads to that job, looked up with the job's location, retrying the 404 BigQuery may answer first
(googleapis/python-bigquery#2134). A job that really failed is reported with `job_failed`, the
caller records it, and the next run uses attempt + 1, a fresh id: BigQuery keeps failed job ids
for six months, so reusing one would block the file forever. A job found already done at lookup
that cannot be used (it failed in a run that died before recording it, or its staging table is
gone) is stepped over (`_w1`, `_w2`, ...), not counted.

Every API request goes through the one retry policy (estore_ops.backends.retry), classified by HTTP status
and by the error's `reason` (a 403 rateLimitExceeded is retried; a 403 accessDenied names the
roles to grant; quotaExceeded waits for the next run). Job-level errors are classified by reason
too: backendError, internalError, rate and quota limits, a cancelled or timed-out job, a staging
table that expired are transient (deferred, counted only every few times); anything else fails the
file.

A local landing folder with a BigQuery warehouse (a mixed configuration) cannot give BigQuery a
URI: the file is then streamed from disk with `load_table_from_file` (the bytes do pass through
this machine in that case).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import bigquery

from estore_ops.backends import retry

from estore_ops import schema
from estore_ops.errors import BackendError, ConfigError, TransientBackendError
from estore_ops.backends.google_auth import ADC_HINT, credentials
from estore_ops.logs import get_logger
from estore_ops.backends.stores.base import ObjectStore
from estore_ops.backends.stores.gcs import GCSStore
from estore_ops.backends.warehouses.base import FileOutcome, LoadItem, Warehouse
from estore_ops.backends.warehouses.bigquery_url import parse_bigquery_url

T = TypeVar("T")

MAX_FILES_PER_COMMIT = 500  # BigQuery allows 1000 tables referenced by one query
STAGING_EXPIRATION = dt.timedelta(days=1)
JOB_ID_WALK = 25  # done, unusable jobs stepped over before giving up on a file's id sequence
REQUEST_TIMEOUT = 60.0  # seconds per API request (the retry policy bounds the whole call)
POLL_MIN, POLL_MAX = 0.2, 5.0  # seconds between jobs.get while waiting for a job
MANIFEST_TABLE = "_estore_loaded_files"
RUN_LABEL = "estore_run_id"
DEFAULT_MAX_BYTES_BILLED = 100 * 10**9
DEFAULT_JOB_TIMEOUT = 1800.0
# Job-level error reasons that another job for the same file may not hit again
# (https://cloud.google.com/bigquery/docs/error-messages: "If the job completes but includes an
# error object that contains backendError, the job failed. You can safely retry the job").
TRANSIENT_JOB_REASONS = frozenset({
    "backendError", "internalError", "rateLimitExceeded", "quotaExceeded",
    "jobBackendError", "jobInternalError", "jobRateLimitExceeded", "timeout", "stopped",
})
EXTERNAL_URIS_PER_TABLE = 10_000  # BigQuery's limit of source URIs per external table
ROLES_HINT = "roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project"

_TYPES = {c.name: c.bigquery_type for c in schema.ALL_COLUMNS}
_DESCRIPTIONS = {c.name: c.description for c in schema.ALL_COLUMNS}
_LINEAGE = {c.name for c in schema.LINEAGE_COLUMNS}
log = get_logger("bigquery")


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def sql_string(value: str) -> str:
    """A GoogleSQL string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def job_label(value: str) -> str:
    """A legal BigQuery label value: lower-case letters, digits, '_' and '-', at most 63 characters."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_-") else "_" for ch in value.lower())[:63]


def days_predicate(column: str, days: Iterable[dt.date | None]) -> str:
    """Constant conditions on the partitioning column covering exactly these days (None: the
    NULL partition), consecutive days merged into one range: BigQuery prunes on them."""
    dates = sorted({d for d in days if d is not None})
    parts = []
    start = end = None
    for day in [*dates, None]:
        if day is not None and end is not None and day == end + dt.timedelta(days=1):
            end = day
            continue
        if start is not None and end is not None:
            parts.append(
                f"({column} >= TIMESTAMP '{start.isoformat()} 00:00:00+00' AND "
                f"{column} < TIMESTAMP '{(end + dt.timedelta(days=1)).isoformat()} 00:00:00+00')"
            )
        start = end = day
    if any(d is None for d in days):
        parts.append(f"{column} IS NULL")
    return "(" + " OR ".join(parts) + ")" if parts else "FALSE"


def _field(name: str) -> bigquery.SchemaField:
    return bigquery.SchemaField(name, _TYPES[name], mode="NULLABLE", description=_DESCRIPTIONS[name])


class _AccessError(BackendError):
    """Access denied, missing credentials or a missing dataset: a fault of the setup, never of a
    file, so the run stops (exit 4) instead of counting it against the files."""


@dataclass
class _Profile:
    rows: int = 0
    negative: int = 0
    first_negative: Any = None
    non_finite: int = 0  # NaN or infinite prices
    no_event_time: int = 0  # empty event_time (an all-empty row too)
    days: set[dt.date | None] = field(default_factory=set)

    def domain_error(self, name: str) -> str:
        """Why the file's values are refused ('' when they are all in their domain)."""
        again = ("so the whole file was refused. Fix the value (or remove the line) and upload the file again; "
                 "the new version loads on the next run.")
        if self.non_finite:
            return (f"{name}, column price: {self.non_finite} row(s) with a price that is not a finite number (NaN or "
                    f"infinite). It would poison every revenue figure, {again}")
        if self.negative:
            return (f"{name}, column price: {self.negative} row(s) with a negative price (the first at event_time "
                    f"{self.first_negative}). Prices are 0 or more in these events, and a negative one would corrupt "
                    f"revenue, {again}")
        if self.no_event_time:
            return (f"{name}, column event_time: {self.no_event_time} row(s) with no event_time (an empty value, or an "
                    f"empty row). Every event needs its time, {again}")
        return ""


@dataclass
class _Staged:
    item: LoadItem
    table_id: str = ""
    job: Any = None
    started: float = field(default_factory=time.monotonic)
    outcome: FileOutcome | None = None  # set when the file failed
    profile: _Profile = field(default_factory=_Profile)

    @property
    def final(self) -> bool:
        """Done with this attempt's staging table (committed, or failed for good)."""
        o = self.outcome
        return o is None or o.ok or o.job_failed or not o.retryable


class BigQueryWarehouse(Warehouse):
    def __init__(
        self,
        project: str,
        dataset: str,
        location: str,
        api_endpoint: str | None = None,
        keyfile: str | None = None,
        work_dir: Path | None = None,
        client: bigquery.Client | None = None,
        url: str | None = None,
        max_bytes_billed: int = DEFAULT_MAX_BYTES_BILLED,
        job_timeout: float = DEFAULT_JOB_TIMEOUT,
        run_id: str = "",
    ) -> None:
        if not project or not dataset:
            raise ConfigError("A BigQuery warehouse needs a project and a dataset: bigquery://PROJECT/DATASET?location=EU.")
        if not location:
            raise ConfigError(f"bigquery://{project}/{dataset} needs ?location=... (the dataset's location, e.g. EU).")
        self.project, self.dataset = project, dataset
        self.raw_schema = dataset
        self.location, self.api_endpoint, self.keyfile = location, api_endpoint, keyfile or None
        self.work_dir = work_dir
        self.url = url or f"bigquery://{project}/{dataset}?location={location}"
        self._client = client
        self.table_id = f"{project}.{dataset}.{schema.RAW_TABLE}"
        self.manifest_id = f"{project}.{dataset}.{MANIFEST_TABLE}"
        self.max_bytes_billed = int(max_bytes_billed) if max_bytes_billed else None
        self.job_timeout = float(job_timeout or DEFAULT_JOB_TIMEOUT)
        self.run_id = run_id
        self._tables_ready = False

    @classmethod
    def from_url(cls, url: str, work_dir: Path | None = None, client: bigquery.Client | None = None, **options: Any) -> BigQueryWarehouse:
        parsed = parse_bigquery_url(url)
        keyfile = options.get("keyfile") or parsed.keyfile
        if options.get("keyfile") and parsed.keyfile and options["keyfile"] != parsed.keyfile:
            raise ConfigError(f"warehouse = {url}: keyfile= in the URL differs from the keyfile setting; keep one.")
        extra = {k: options[k] for k in ("max_bytes_billed", "job_timeout", "run_id") if options.get(k) is not None}
        return cls(
            parsed.project, parsed.dataset, parsed.location, api_endpoint=parsed.api_endpoint, keyfile=keyfile,
            work_dir=work_dir, client=client, url=url, **extra,
        )

    # -- client ------------------------------------------------------------------------------
    @property
    def client(self) -> bigquery.Client:
        if self._client is None:
            if self.api_endpoint:
                from google.auth.credentials import AnonymousCredentials

                self._client = bigquery.Client(
                    project=self.project, location=self.location, credentials=AnonymousCredentials(),
                    client_options={"api_endpoint": self.api_endpoint},
                )
            else:
                creds, _ = credentials(self.keyfile, self.url)
                self._client = bigquery.Client(project=self.project, location=self.location, credentials=creds)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- retry and translation -----------------------------------------------------------------
    def _call(
        self, what: str, fn: Callable[[], T], passthrough: tuple[type[Exception], ...] = (),
        classify: Callable[[BaseException], str] = retry.classify,
    ) -> T:
        try:
            return retry.POLICY.call(fn, what=f"BigQuery: {what}", classify=classify)
        except TransientBackendError:
            raise
        except passthrough:
            raise
        except Exception as exc:  # noqa: BLE001 - translated
            raise self._translate(exc, what) from None

    def _translate(self, exc: Exception, what: str) -> Exception:
        if isinstance(exc, (BackendError, ConfigError)):
            return exc
        ds = f"{self.project}.{self.dataset}"
        if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)):
            return _AccessError(
                f"BigQuery denied access while trying to {what} (dataset {ds}): {retry.first_line(exc)}. "
                f"The account estore-ops runs as needs {ROLES_HINT}; grant them (terraform does)."
            )
        if isinstance(exc, gexc.NotFound) and "not found: dataset" in str(exc).lower():
            return _AccessError(
                f"The BigQuery dataset {ds} does not exist (in location {self.location}). Create it with `terraform apply` "
                f"in terraform/ (or `bq mk --location={self.location} --dataset {self.project}:{self.dataset}`), or fix the warehouse setting."
            )
        if isinstance(exc, (auth_exc.DefaultCredentialsError, auth_exc.RefreshError)):
            return _AccessError(f"Google credentials for {self.url} are missing or invalid: {retry.first_line(exc)}. {ADC_HINT}")
        if isinstance(exc, gexc.GoogleAPICallError):
            return BackendError(f"BigQuery refused to {what}: {retry.first_line(exc)}")
        return exc

    # -- job settings ----------------------------------------------------------------------------
    def labels(self, step: str) -> dict[str, str]:
        labels = {"estore_step": job_label(step)}
        if self.run_id:
            labels[RUN_LABEL] = job_label(self.run_id)
        return labels

    def _query_config(self, step: str, **kwargs: Any) -> bigquery.QueryJobConfig:
        return bigquery.QueryJobConfig(
            maximum_bytes_billed=self.max_bytes_billed, labels=self.labels(step), use_legacy_sql=False, **kwargs
        )

    # -- tables --------------------------------------------------------------------------------
    def check_dataset(self) -> None:
        """Raise BackendError (with the fix) when the dataset is missing or not accessible."""
        try:
            self._call(
                "read the dataset",
                lambda: self.client.get_dataset(f"{self.project}.{self.dataset}", retry=None, timeout=REQUEST_TIMEOUT),
                passthrough=(gexc.NotFound,),
            )
        except gexc.NotFound:
            raise self._translate(gexc.NotFound(f"Not found: Dataset {self.project}:{self.dataset}"), "read the dataset") from None

    def ensure_raw_table(self) -> None:
        """The raw table and the record of committed days; the dataset is terraform's, never created here."""
        if self._tables_ready:
            return
        self.check_dataset()
        table = bigquery.Table(self.table_id, schema=[_field(c.name) for c in schema.ALL_COLUMNS])
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="event_time")
        table.clustering_fields = ["_source_file"]
        table.description = "Raw e-commerce events loaded by estore-ops; one _source_file per landing object."
        self._call("create the raw table", lambda: self.client.create_table(table, exists_ok=True, retry=None, timeout=REQUEST_TIMEOUT))
        if self._table_exists(self.manifest_id) is None:
            # Atomic (the table appears with its rows), and built from what `events` holds, so rows
            # loaded before this table existed are covered too. Reads three narrow columns of
            # `events` once; on a new table, nothing.
            self.query(
                f"CREATE TABLE IF NOT EXISTS `{self.manifest_id}` "
                "OPTIONS (description = 'estore-ops: the days (partitions of events) each committed file version holds rows on') AS "
                f"SELECT _source_file, _source_generation, DATE(event_time) AS day, COUNT(*) AS row_count, "
                f"CURRENT_TIMESTAMP() AS recorded_at FROM `{self.table_id}` GROUP BY _source_file, _source_generation, day",
                step="manifest",
            )
        self._tables_ready = True

    def _table_exists(self, table_id: str) -> bigquery.Table | None:
        try:
            return self._call(
                "read a table", lambda: self.client.get_table(table_id, retry=None, timeout=REQUEST_TIMEOUT),
                passthrough=(gexc.NotFound,),
            )
        except gexc.NotFound as exc:
            if "not found: dataset" in str(exc).lower():
                raise self._translate(exc, "read a table") from None
            return None

    def rows_by_file(self) -> dict[str, int]:
        if self._table_exists(self.table_id) is None:
            return {}
        rows = self.query(f"SELECT _source_file, COUNT(*) AS n FROM `{self.table_id}` GROUP BY _source_file")
        return {name: int(n) for name, n in rows}

    def _run_query(self, sql: str, step: str, what: str, **config: Any) -> Any:
        """Run one query job (maximum_bytes_billed and this run's labels on it) to completion; its rows."""
        job_id = f"estore_q_{uuid.uuid4().hex}"  # one id for every retry of this request
        job = self._insert(job_id, lambda jid: self.client.query(
            sql, job_config=self._query_config(step, **config), job_id=jid, project=self.project, location=self.location,
            retry=None, job_retry=None, timeout=REQUEST_TIMEOUT,
        ))
        self._wait(job)
        if job.error_result:
            raise self._job_error(job, what)
        return self._call("read query results", lambda: list(job.result(retry=None, job_retry=None, timeout=REQUEST_TIMEOUT)))

    def query(self, sql: str, step: str = "query") -> list[tuple[Any, ...]]:
        """Run one query job and return its rows as tuples."""
        return [tuple(r.values()) for r in self._run_query(sql, step, "run a query")]

    def query_records(self, sql: str) -> list[dict[str, Any]]:
        return [dict(r.items()) for r in self._run_query(sql, "query", "run a query")]

    # -- verify (self-contained: the count jobs of `estore-ops verify`) --------------------------
    def count_by_version_sql(self, since: dt.datetime | None = None, until: dt.datetime | None = None) -> str:
        """One grouped query; a range on event_time (the partitioning column) prunes partitions."""
        clauses = []
        if since is not None:
            clauses.append(f"event_time >= TIMESTAMP('{_utc_text(since)}')")
        if until is not None:
            clauses.append(f"event_time < TIMESTAMP('{_utc_text(until)}')")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return (f"SELECT _source_file, _source_generation, COUNT(*) AS n FROM `{self.table_id}`{where} "
                "GROUP BY _source_file, _source_generation")

    def count_by_version(self, since: dt.datetime | None = None, until: dt.datetime | None = None) -> dict[tuple[str, int], int]:
        if self._table_exists(self.table_id) is None:
            return {}
        rows = self.query(self.count_by_version_sql(since, until))
        return {(name, int(generation)): int(n) for name, generation, n in rows}

    def source_count_tables(self, infos: list[Any], store: GCSStore) -> tuple[dict[str, bigquery.ExternalConfig], str]:
        """A query over temporary external tables on the files' gs:// URIs (one per compression,
        at most EXTERNAL_URIS_PER_TABLE URIs each): BigQuery reads the objects, no byte passes
        through this machine, and nothing is written to a dataset. Columns are read as text with
        the loader's CSV options, so this counts records; `_FILE_NAME` names each row's object."""
        definitions: dict[str, bigquery.ExternalConfig] = {}
        selects = []
        for gz in (False, True):
            uris = [store.uri(i.name) for i in infos if i.is_gzip == gz]
            for start in range(0, len(uris), EXTERNAL_URIS_PER_TABLE):
                name = f"estore_verify_{len(definitions)}"
                cfg = bigquery.ExternalConfig(bigquery.ExternalSourceFormat.CSV)
                cfg.source_uris = uris[start:start + EXTERNAL_URIS_PER_TABLE]
                cfg.schema = [bigquery.SchemaField(c, "STRING") for c in schema.SOURCE_COLUMN_NAMES]
                cfg.compression = "GZIP" if gz else "NONE"
                cfg.max_bad_records = 0
                cfg.options.skip_leading_rows = 1
                cfg.options.allow_jagged_rows = False
                cfg.options.allow_quoted_newlines = False
                cfg.options.encoding = "UTF-8"
                definitions[name] = cfg
                selects.append(f"SELECT _FILE_NAME AS uri, COUNT(*) AS n FROM {name} GROUP BY uri")
        return definitions, "\nUNION ALL\n".join(selects)

    def count_source_rows(self, infos: Any, store: ObjectStore) -> dict[str, int | str]:
        infos = list(infos)
        if not infos:
            return {}
        if not isinstance(store, GCSStore):
            # Mixed configuration (local landing folder): BigQuery cannot read it; DuckDB can.
            import duckdb

            from estore_ops.backends.warehouses.duckdb import count_csv_rows

            with duckdb.connect() as con:
                return count_csv_rows(con, infos, store, self.work_dir)
        definitions, sql = self.source_count_tables(infos, store)
        try:
            rows = self._run_query(sql, "verify", "count the rows of the landing files",
                                   table_definitions=definitions, use_query_cache=False)
        except BackendError as exc:
            return {i.name: f"{i.name}: BigQuery could not count its rows: {exc}" for i in infos}
        by_uri = {uri: int(n) for uri, n in (tuple(r.values()) for r in rows)}
        return {i.name: by_uri.get(store.uri(i.name), 0) for i in infos}

    def dry_run(self, sql: str) -> int:
        """Validate a query without running it; returns the bytes it would process."""
        cfg = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
        job = self._call("dry-run a query", lambda: self.client.query(
            sql, job_config=cfg, location=self.location, job_retry=None, retry=None, timeout=REQUEST_TIMEOUT))
        return int(job.total_bytes_processed or 0)

    def dbt_target(self, settings: Any) -> dict[str, Any]:
        """The dbt-bigquery profile: same project, dataset, location and credentials, and the same
        cost and time bounds as the loader's own jobs (dbt-bigquery waits up to a day for a job
        and bills without a cap unless told otherwise)."""
        target: dict[str, Any] = {
            "type": "bigquery",
            "project": self.project,
            "dataset": self.dataset,
            "location": self.location,
            "threads": 4,
            "priority": "interactive",
            "job_retries": 1,
            "job_creation_timeout_seconds": int(REQUEST_TIMEOUT),
            "job_execution_timeout_seconds": int(self.job_timeout),
            "job_retry_deadline_seconds": int(self.job_timeout) + 600,
        }
        if self.max_bytes_billed:
            target["maximum_bytes_billed"] = self.max_bytes_billed
        if self.api_endpoint:
            # The emulator takes any bearer token.
            target.update({"method": "oauth-secrets", "token": "emulator-dummy-token", "api_endpoint": self.api_endpoint})
        elif self.keyfile:
            target.update({"method": "service-account", "keyfile": self.keyfile})
        else:
            target["method"] = "oauth"  # Application Default Credentials
        return target

    # -- jobs ------------------------------------------------------------------------------------
    def _get_job(self, job_id: str) -> Any | None:
        try:
            return self._call(
                "look up a job",
                lambda: self.client.get_job(job_id, project=self.project, location=self.location, retry=None, timeout=REQUEST_TIMEOUT),
                passthrough=(gexc.NotFound,),
            )
        except gexc.NotFound:
            return None

    def _insert(self, job_id: str, start: Callable[[str], Any]) -> Any:
        """Start the job with this id; if it already exists (409: our earlier request went through
        and its answer was lost, or a retried insert), use that job."""
        try:
            return self._call(f"start job {job_id}", lambda: start(job_id), passthrough=(gexc.Conflict,))
        except gexc.Conflict:
            # The first jobs.get after a 409 can still answer 404: retry those too
            # (google.cloud.bigquery.retry._should_retry_get_job_conflict does the same).
            def not_found_is_transient(exc: BaseException) -> str:
                return retry.RETRY if isinstance(exc, gexc.NotFound) else retry.classify(exc)

            return self._call(
                f"find job {job_id} after a 409",
                lambda: self.client.get_job(job_id, project=self.project, location=self.location, retry=None, timeout=REQUEST_TIMEOUT),
                classify=not_found_is_transient,
            )

    def _find_or_start(self, base_id: str, start: Callable[[str], Any], usable: Callable[[Any], bool]) -> tuple[Any, bool]:
        """(job, reused): the job with this id if it is running or done and usable, else a new one.

        A done job that cannot be used is stepped over (`_w1`, ...): a job id never runs twice.
        `reused` is True for a done job found before starting anything (an earlier run's).
        """
        for step in range(JOB_ID_WALK):
            job_id = base_id if step == 0 else f"{base_id}_w{step}"
            job = self._get_job(job_id)
            if job is None:
                return self._insert(job_id, start), False
            if job.state != "DONE":
                return job, False  # still running (an earlier run's): wait for it
            if usable(job):
                return job, True
        raise BackendError(
            f"BigQuery: {JOB_ID_WALK} earlier jobs {base_id}_w* are done and unusable; run "
            "`estore-ops cursor reset --file NAME` for the file(s) concerned to start their jobs afresh."
        )

    def _wait(self, job: Any, timeout: float | None = None) -> None:
        """Wait for a job to be DONE by polling jobs.get (each poll under the retry policy). A job
        still running at the timeout is a transient error: the next run re-attaches to it."""
        timeout = self.job_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = POLL_MIN
        while job.state != "DONE":
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransientBackendError(
                    f"BigQuery job {job.job_id} is still running after {timeout:.0f}s (job_timeout_seconds); "
                    "the next run re-attaches to it.", exhausted=True,
                )
            time.sleep(min(delay, left))
            delay = min(delay * 1.6, POLL_MAX)
            self._call(f"check job {job.job_id}", lambda: job.reload(retry=None, timeout=REQUEST_TIMEOUT))

    @staticmethod
    def _job_reason(job: Any) -> str:
        return str((job.error_result or {}).get("reason") or "")

    def _job_failed_transiently(self, job: Any) -> bool:
        reason = self._job_reason(job)
        if reason in TRANSIENT_JOB_REASONS:
            return True
        # A staging table that expired or was dropped between two steps: stage it again.
        return reason == "notFound" and "_estore_stage_" in str((job.error_result or {}).get("message", ""))

    def _job_message(self, job: Any) -> str:
        messages: list[str] = []
        for err in [job.error_result, *(job.errors or [])]:
            msg = " ".join(str((err or {}).get("message", "")).split())
            if msg and msg not in messages:
                messages.append(msg)
        return " | ".join(messages)[:800] or "no detail"

    def _job_error(self, job: Any, what: str) -> BackendError:
        reason, message = self._job_reason(job), self._job_message(job)
        if self._job_failed_transiently(job):
            return TransientBackendError(f"BigQuery job {job.job_id} ({what}) failed with {reason}: {message}", exhausted=True)
        if reason == "bytesBilledLimitExceeded":
            return BackendError(
                f"BigQuery job {job.job_id} ({what}) would bill more than max_bytes_billed = {self.max_bytes_billed:,} bytes: "
                f"{message}. Raise the max_bytes_billed setting (ESTORE_MAX_BYTES_BILLED) if that cost is expected."
            )
        if reason == "accessDenied":
            return _AccessError(f"BigQuery job {job.job_id} ({what}) was denied: {message}. The account needs {ROLES_HINT}.")
        return BackendError(f"BigQuery job {job.job_id} ({what}) failed ({reason or 'error'}): {message}")

    def cancel_jobs(self, run_id: str, since: dt.datetime) -> list[str]:
        """Cancel the running and pending jobs of this project labelled with `run_id` (the
        loader's own jobs and dbt's, which carry the label through the query comment). Used when a
        run is stopped (systemd's timeout sends SIGTERM): BigQuery jobs otherwise go on running,
        and billing, after the process is gone."""
        label = job_label(run_id)
        cancelled = []
        for state in ("running", "pending"):
            jobs = self._call(f"list {state} jobs", lambda state=state: list(self.client.list_jobs(
                project=self.project, state_filter=state, min_creation_time=since, all_users=False,
                retry=None, timeout=REQUEST_TIMEOUT,
            )))
            for job in jobs:
                if (job.labels or {}).get(RUN_LABEL) != label:
                    continue
                self._call(f"cancel job {job.job_id}", lambda job=job: self.client.cancel_job(
                    job.job_id, project=self.project, location=job.location or self.location, retry=None, timeout=REQUEST_TIMEOUT,
                ))
                cancelled.append(job.job_id)
        return cancelled

    # -- loading ---------------------------------------------------------------------------------
    def load(
        self, items: Iterable[LoadItem], store: ObjectStore, on_begin: Callable[[list[LoadItem]], None] | None = None
    ) -> Iterator[FileOutcome]:
        items = list(items)
        if not items:
            return
        self.ensure_raw_table()
        for start in range(0, len(items), MAX_FILES_PER_COMMIT):
            batch = items[start:start + MAX_FILES_PER_COMMIT]
            if on_begin:
                on_begin(batch)
            yield from self._load_batch(batch, store)

    def _load_batch(self, items: list[LoadItem], store: ObjectStore) -> Iterator[FileOutcome]:
        committed = self._already_committed(items)
        if committed is not None:
            yield from committed
            return
        staged = [self._stage(item, store) for item in items]  # all jobs started before any wait
        try:
            ready: list[_Staged] = []
            for s in staged:
                if s.outcome is None:
                    self._finish_stage(s)
                if s.outcome is not None:
                    yield s.outcome
                    continue
                # The object must still be the version BigQuery read.
                info = s.item.info
                try:
                    now_generation = store.stat(info.name).generation
                except BackendError as exc:
                    yield self._fail(s, f"{info.name}: could not check it after loading: {exc}", retryable=True)
                    continue
                if now_generation != info.generation:
                    yield self._fail(
                        s,
                        f"{info.name} changed while it was loading (generation {info.generation} -> {now_generation}); "
                        "nothing was kept, the new version loads on the next run.",
                        retryable=True,
                    )
                    continue
                ready.append(s)
            if ready:
                try:
                    self._profile(ready)
                except _AccessError:
                    raise
                except BackendError as exc:
                    for s in ready:
                        yield self._fail(s, f"{s.item.info.name}: the check of its staged rows failed: {exc}",
                                         retryable=isinstance(exc, TransientBackendError))
                    ready = []
            for s in ready:
                refused = s.profile.domain_error(s.item.info.name)
                if refused:
                    yield self._fail(s, refused, job_failed=True)
            ready = [s for s in ready if not s.profile.domain_error(s.item.info.name)]
            for group in self._commit_groups(ready):
                yield from self._commit(group)
        finally:
            self._drop_staging([s for s in staged if s.table_id and s.final])

    def _fail(self, s: _Staged, error: str, retryable: bool = False, job_failed: bool = False) -> FileOutcome:
        info = s.item.info
        s.outcome = FileOutcome(
            info.name, info.generation, info.size, ok=False, error=error, retryable=retryable,
            seconds=time.monotonic() - s.started, job_attempt=s.item.job_attempt, job_failed=job_failed,
        )
        return s.outcome

    def _load_base_id(self, item: LoadItem) -> str:
        key = _digest(self.table_id, item.info.name, item.info.generation)
        return f"estore_load_{key}" + (f"_a{item.job_attempt}" if item.job_attempt else "")

    @staticmethod
    def _commit_key(table_id: str, versions: Iterable[tuple[str, int, str]]) -> str:
        return _digest(table_id, *sorted(f"{name}\t{generation}\t{load_job}" for name, generation, load_job in versions))

    def _already_committed(self, items: list[LoadItem]) -> list[FileOutcome] | None:
        """The same batch rerun after a run that committed it died before recording it: its
        load jobs and its commit job are found done, and the rows are there. Then nothing runs
        again (a few jobs.get and one count over those files' partitions)."""
        started = time.monotonic()
        loads = []
        for item in items:
            job = self._get_job(self._load_base_id(item))
            if job is None or job.state != "DONE" or job.error_result:
                return None
            loads.append(job)
        key = self._commit_key(self.table_id, ((i.info.name, i.info.generation, j.job_id) for i, j in zip(items, loads)))
        commit = self._get_job(f"estore_commit_{key}")
        if commit is None or commit.state != "DONE" or commit.error_result:
            return None
        names = [i.info.name for i in items]
        days = set().union(*self._prior_days(names).values())
        counts = self._count_rows(names, days)
        outcomes = []
        for item, job in zip(items, loads):
            rows = int(job.output_rows or 0)
            if counts.get(item.info.name, {}) != ({item.info.generation: rows} if rows else {}):
                return None
            outcomes.append(FileOutcome(
                item.info.name, item.info.generation, item.info.size, ok=True, rows=rows,
                seconds=time.monotonic() - started, batch_files=len(items), job_attempt=item.job_attempt,
            ))
        log.info("batch of %d file(s) was committed by job %s of an earlier run: reused", len(items), commit.job_id)
        return outcomes

    def _staging_table(self, job_id: str) -> str:
        return f"{self.project}.{self.dataset}._estore_stage_{job_id.removeprefix('estore_load_')}"

    def _stage(self, item: LoadItem, store: ObjectStore) -> _Staged:
        info = item.info
        s = _Staged(item)
        unknown = [c for c in item.header if c not in _TYPES or c in _LINEAGE]
        if unknown:
            self._fail(s, f"{info.name}: unexpected columns {unknown} in the header.")
            return s
        uri = store.uri(info.name)
        from_gcs = uri.startswith("gs://")
        if from_gcs and "*" in info.name:
            self._fail(s, f"{info.name}: BigQuery reads '*' in a gs:// URI as a wildcard, so this name could load other "
                          "files too. Rename the file without '*'.")
            return s
        stage_schema = [_field(c) for c in item.header]  # file order: BigQuery maps CSV columns by position
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.CSV,
            schema=stage_schema,
            skip_leading_rows=1,
            max_bad_records=0,
            allow_jagged_rows=False,
            allow_quoted_newlines=False,
            encoding="UTF-8",
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
            labels=self.labels("load"),
        )

        def start(job_id: str) -> Any:
            table = bigquery.Table(self._staging_table(job_id), schema=stage_schema)
            table.expires = dt.datetime.now(dt.timezone.utc) + STAGING_EXPIRATION
            table.description = f"estore-ops staging for {info.name} generation {info.generation}"
            self.client.create_table(table, exists_ok=True, retry=None, timeout=REQUEST_TIMEOUT)
            if from_gcs:
                return self.client.load_table_from_uri(
                    uri, table.reference, job_id=job_id, job_config=config, project=self.project, location=self.location,
                    retry=None, timeout=REQUEST_TIMEOUT,
                )
            # Mixed configuration (local landing folder): BigQuery cannot read the file, so it is
            # streamed from disk in one upload (gzip stays gzip; BigQuery decompresses it).
            with store.open(info.name) as fh:
                return self.client.load_table_from_file(
                    fh, table.reference, job_id=job_id, job_config=config, project=self.project, location=self.location,
                    rewind=False, timeout=REQUEST_TIMEOUT,
                )

        def usable(job: Any) -> bool:
            if job.error_result or job.destination is None:
                return False
            table = self._table_exists(f"{job.destination.project}.{job.destination.dataset_id}.{job.destination.table_id}")
            return table is not None and (job.output_rows is None or int(table.num_rows or 0) == int(job.output_rows))

        try:
            s.job, _ = self._find_or_start(self._load_base_id(item), start, usable)
        except _AccessError:
            raise
        except BackendError as exc:
            self._fail(s, f"{info.name}: could not start its load: {exc}", retryable=isinstance(exc, TransientBackendError))
            return s
        dest = s.job.destination
        s.table_id = f"{dest.project}.{dest.dataset_id}.{dest.table_id}" if dest is not None else self._staging_table(s.job.job_id)
        return s

    def _finish_stage(self, s: _Staged) -> None:
        info = s.item.info
        try:
            self._wait(s.job)
        except _AccessError:
            raise
        except BackendError as exc:
            self._fail(s, f"{info.name}: its load job {s.job.job_id} did not report: {exc}", retryable=isinstance(exc, TransientBackendError))
            return
        if s.job.error_result:
            transient = self._job_failed_transiently(s.job)
            if transient:
                error = f"{info.name}: BigQuery failed its load job {s.job.job_id} with {self._job_reason(s.job)} (transient): {self._job_message(s.job)}"
            else:
                error = (
                    f"{info.name} (generation {info.generation}) was rejected by BigQuery (job {s.job.job_id}): {self._job_message(s.job)}. "
                    "No row of it was loaded. Fix the file (or remove the bad lines) and upload it again; "
                    "the new version loads on the next run."
                )
            self._fail(s, error, retryable=transient, job_failed=True)

    def _profile(self, staged: list[_Staged]) -> None:
        """ONE read-only query over the staging tables: rows, values out of their domain and the
        days (UTC) each file's rows fall on. Bills the staged bytes of two columns.

        BigQuery's CSV parser accepts `NaN`, `inf` and `Infinity` for FLOAT64 and reads an empty
        field as NULL (the default null marker, https://cloud.google.com/bigquery/docs/reference/rest/v2/Job#JobConfigurationLoad
        `nullMarker`), so a non-finite price, an empty event_time or an all-empty row reach the
        staging table; they are counted here and the file is refused, as on the embedded warehouse
        (estore_ops.backends.warehouses.domain). A fractional id never gets this far: an INT64 column refuses it
        in the load job itself."""
        selects = []
        for s in staged:
            has_price = "price" in s.item.header
            negative = "CASE WHEN price < 0 THEN 1 ELSE 0 END" if has_price else "0"
            first = "CASE WHEN price < 0 THEN event_time END" if has_price else "NULL"
            infinite = "CASE WHEN IS_NAN(price) OR IS_INF(price) THEN 1 ELSE 0 END" if has_price else "0"
            selects.append(
                f"SELECT {sql_string(s.table_id)} AS t, DATE(event_time) AS day, COUNT(*) AS n, SUM({negative}) AS neg, "
                f"MIN({first}) AS first_neg, SUM({infinite}) AS inf, COUNTIF(event_time IS NULL) AS no_time "
                f"FROM `{s.table_id}` GROUP BY day"
            )
        by_table = {s.table_id: s for s in staged}
        for table_id, day, n, neg, first_neg, inf, no_time in self.query(" UNION ALL ".join(selects), step="check"):
            p = by_table[table_id].profile
            p.rows += int(n)
            p.negative += int(neg or 0)
            p.non_finite += int(inf or 0)
            p.no_event_time += int(no_time or 0)
            if first_neg is not None and (p.first_negative is None or first_neg < p.first_negative):
                p.first_negative = first_neg
            p.days.add(day)

    def _commit_groups(self, ready: list[_Staged]) -> list[list[_Staged]]:
        """Files per commit, so that the staged bytes one statement reads stay within half of
        maximum_bytes_billed (the other half for the partitions a reload touches)."""
        budget = (self.max_bytes_billed or 0) // 2
        groups: list[list[_Staged]] = []
        size = 0
        for s in ready:
            nbytes = int(getattr(s.job, "output_bytes", 0) or 0)
            if not groups or (budget and size + nbytes > budget and groups[-1]):
                groups.append([])
                size = 0
            groups[-1].append(s)
            size += nbytes
        return groups

    def _prior_days(self, names: list[str]) -> dict[str, set[dt.date | None]]:
        """Days on which earlier committed versions of these names hold rows (from the manifest)."""
        rows = self.query(
            f"SELECT DISTINCT _source_file, day FROM `{self.manifest_id}` WHERE _source_file IN ({', '.join(map(sql_string, names))})",
            step="lookup",
        )
        out: dict[str, set[dt.date | None]] = {}
        for name, day in rows:
            out.setdefault(name, set()).add(day)
        return out

    def _select_staged(self, batch: list[_Staged], loaded_at: bool) -> str:
        cols = ", ".join(schema.SOURCE_COLUMN_NAMES)
        stamp = ", CURRENT_TIMESTAMP() AS _loaded_at" if loaded_at else ""
        return "\n  UNION ALL\n  ".join(
            f"SELECT {cols}, {sql_string(s.item.info.name)} AS _source_file, "
            f"{int(s.item.info.generation)} AS _source_generation{stamp} FROM `{s.table_id}`"
            for s in batch
        )

    def commit_sql(self, batch: list[_Staged], prior: dict[str, set[dt.date | None]]) -> str:
        """INSERT when no name of the batch was committed before; else a MERGE whose delete is
        limited to the partitions holding those names' rows (constant predicates: pruned)."""
        cols = ", ".join(schema.SOURCE_COLUMN_NAMES)
        lineage = "_source_file, _source_generation, _loaded_at"
        if not prior:
            return f"INSERT INTO `{self.table_id}` ({cols}, {lineage})\n  {self._select_staged(batch, loaded_at=True)}"
        names = ", ".join(sql_string(n) for n in sorted(prior))
        days = set().union(*prior.values())
        return (
            f"MERGE `{self.table_id}` AS T\n"
            f"USING (\n  {self._select_staged(batch, loaded_at=False)}\n) AS S\n"
            "ON FALSE\n"
            f"WHEN NOT MATCHED BY SOURCE AND T._source_file IN ({names}) AND {days_predicate('T.event_time', days)} THEN DELETE\n"
            f"WHEN NOT MATCHED THEN INSERT ({cols}, {lineage})\n"
            f"  VALUES ({cols}, _source_file, _source_generation, CURRENT_TIMESTAMP())"
        )

    def _manifest_sql(self, batch: list[_Staged]) -> str:
        return (
            f"INSERT INTO `{self.manifest_id}` (_source_file, _source_generation, day, row_count, recorded_at)\n  "
            + "\n  UNION ALL\n  ".join(
                f"SELECT {sql_string(s.item.info.name)}, {int(s.item.info.generation)}, DATE(event_time) AS day, COUNT(*), "
                f"CURRENT_TIMESTAMP() FROM `{s.table_id}` GROUP BY day"
                for s in batch
            )
        )

    def _count_rows(self, names: list[str], days: set[dt.date | None]) -> dict[str, dict[int, int]]:
        """Rows per (file, generation) of these names, counted in these days' partitions only."""
        rows = self.query(
            f"SELECT _source_file, _source_generation, COUNT(*) FROM `{self.table_id}` "
            f"WHERE _source_file IN ({', '.join(map(sql_string, names))}) AND {days_predicate('event_time', days)} "
            "GROUP BY _source_file, _source_generation",
            step="verify",
        )
        out: dict[str, dict[int, int]] = {}
        for name, generation, count in rows:
            out.setdefault(name, {})[int(generation)] = int(count)
        return out

    def _run_statement(self, job_id: str, sql: str, step: str, usable: Callable[[Any], bool]) -> tuple[Any, bool]:
        job, reused = self._find_or_start(
            job_id,
            lambda jid: self.client.query(
                sql, job_config=self._query_config(step), job_id=jid, project=self.project, location=self.location,
                retry=None, job_retry=None, timeout=REQUEST_TIMEOUT,
            ),
            usable,
        )
        if not reused:
            self._wait(job)
        return job, reused

    def _commit(self, batch: list[_Staged]) -> Iterator[FileOutcome]:
        expected = {s.item.info.name: (s.item.info.generation, s.profile.rows) for s in batch}
        key = self._commit_key(self.table_id, ((s.item.info.name, s.item.info.generation, s.job.job_id) for s in batch))
        mismatch: dict[str, str] = {}
        error: str | None = None
        retryable = job_failed = False
        try:
            prior = self._prior_days(sorted(expected))
            days = set().union(*prior.values(), *(s.profile.days for s in batch))

            def verified(job: Any) -> bool:
                if job.error_result:
                    return False
                counts = self._count_rows(sorted(expected), days)
                mismatch.clear()
                for name, (generation, rows) in expected.items():
                    got = counts.get(name, {})
                    if got != ({generation: rows} if rows else {}):
                        mismatch[name] = f"expected {rows} rows of generation {generation}, found {got or 'none'}"
                return not mismatch

            # Write-ahead: the days the new versions will hold rows on, recorded before the data.
            manifest, _ = self._run_statement(f"estore_files_{key}", self._manifest_sql(batch), "manifest", lambda j: not j.error_result)
            if manifest.error_result:
                raise self._job_error(manifest, "record the files' partitions")
            job, reused = self._run_statement(f"estore_commit_{key}", self.commit_sql(batch, prior), "commit", verified)
            if job.error_result:
                retryable, job_failed = self._job_failed_transiently(job), True
                error = f"the commit (job {job.job_id}) into {self.table_id} failed with {self._job_reason(job) or 'an error'}: {self._job_message(job)}"
            elif not reused:
                inserted = getattr(getattr(job, "dml_stats", None), "inserted_row_count", None)
                total = sum(rows for _, rows in expected.values())
                if inserted is None:
                    verified(job)  # no DML statistics: count the rows in the touched partitions
                elif int(inserted) != total:
                    mismatch.update({n: f"the commit inserted {inserted} rows, the staged files hold {total}" for n in expected})
                if mismatch:
                    retryable = job_failed = True
        except _AccessError:
            raise
        except BackendError as exc:
            error, retryable = f"the commit into {self.table_id} failed: {exc}", isinstance(exc, TransientBackendError)

        for s in batch:
            info = s.item.info
            if error or info.name in mismatch:
                why = error or ""
                if info.name in mismatch:
                    why = f"{why}; " if why else ""
                    why += f"row count check: {mismatch[info.name]}"
                yield self._fail(s, f"{info.name} (generation {info.generation}) was not committed: {why}",
                                 retryable=retryable, job_failed=job_failed)
                continue
            s.outcome = FileOutcome(
                info.name, info.generation, info.size, ok=True, rows=expected[info.name][1],
                seconds=time.monotonic() - s.started, batch_files=len(batch), job_attempt=s.item.job_attempt,
            )
            yield s.outcome

    def _drop_staging(self, staged: list[_Staged]) -> None:
        """Drop the staging tables this tick is done with (their expiry is the safety net)."""
        for s in staged:
            try:
                self._call("drop a staging table", lambda s=s: self.client.delete_table(
                    s.table_id, not_found_ok=True, retry=None, timeout=REQUEST_TIMEOUT))
            except BackendError as exc:
                log.warning("could not drop the staging table %s (it expires in a day): %s", s.table_id, exc)

def _utc_text(moment: dt.datetime) -> str:
    """A timestamp literal's text in UTC (a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]
