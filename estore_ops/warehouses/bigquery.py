"""BigQuery as the warehouse: `bigquery://PROJECT/DATASET?location=US&keyfile=/path&api_endpoint=URL`.

The raw table is `PROJECT.DATASET.events` (schema from estore_ops.schema, partitioned by DAY on
event_time, clustered by _source_file so the per-file DELETE of a reload reads little).

How a loading tick works (the event data never passes through the VM: BigQuery reads gs:// itself)
-------------------------------------------------------------------------------------------------
1. Stage: one LOAD job per new file version, from its gs:// URI into its own staging table
   `DATASET._estore_stage_<hash(table, file, generation)>` (typed with the schema, in the file's
   column order, `skip_leading_rows=1`, `max_bad_records=0` so a bad row fails that file only and
   no row is ever silently dropped). Staging tables expire after a day. Load jobs into staging
   tables do not count against the raw table's modification quota.
2. Check: each staged object is stat'ed again; a file whose generation moved while BigQuery read
   it is left out of the commit and reported retryable (its new version loads on the next tick).
3. Commit: ONE query job, a single MERGE on the raw table (atomic): rows of the tick's
   `_source_file`s are deleted and the staged rows inserted with the lineage columns
   (`_source_file`, `_source_generation`, `_loaded_at`). It is the only job that modifies the
   raw table per tick, whatever the number of files (up to MAX_FILES_PER_COMMIT = 500 per MERGE).
   Before it, ONE read-only query over the staging tables refuses files with a negative price
   (the same rule as the embedded warehouse).
4. Verify: ONE read-only query counts the raw rows of each committed (file, generation) and
   compares them with the staged row counts; a difference fails the file (never silently).

So a tick with N new files uses N load jobs + 1 price check + 1 MERGE (DML) + 1 verification
query = N + 3 jobs, exactly 1 of which modifies `events`. A tick with nothing pending uses none.

Exactly once per file version
-----------------------------
Job ids are deterministic: `estore_load_<hash(table, file, generation)>` and
`estore_commit_<hash(table, sorted (file, generation) of the batch)>`. Before starting a job we
look it up (jobs.get), and a 409 on insert also leads to the existing job: a retried request, or a
run repeated after a crash between the commit and the state update, finds the job that already
ran and waits for it instead of running it again. If that earlier job cannot be reused (it hit a
transient error, or its staging table has expired, or the verification finds its rows gone), the
next id in a bounded sequence (`..._r1`, `..._r2`) is used. In any case the MERGE *replaces* the
rows of a file, so no path duplicates rows.

A local landing folder with a BigQuery warehouse (a mixed configuration) cannot give BigQuery a
URI: the file is then streamed from disk with `load_table_from_file` (the bytes do pass through
this machine in that case).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import tenacity
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import bigquery

from estore_ops import schema
from estore_ops.errors import BackendError, ConfigError, TransientBackendError
from estore_ops.stores.base import ObjectStore
from estore_ops.stores.gcs import ADC_HINT, GCSStore, is_transient
from estore_ops.warehouses.base import FileOutcome, LoadItem, Warehouse

T = TypeVar("T")

MAX_FILES_PER_COMMIT = 500  # BigQuery allows 1000 tables referenced by one query
STAGING_EXPIRATION = dt.timedelta(days=1)
JOB_ATTEMPTS = 3  # ids tried per job: base, _r1, _r2
LOAD_TIMEOUT = 3600.0
QUERY_TIMEOUT = 3600.0
# Job-level error reasons that another run of the same job might not hit again.
TRANSIENT_JOB_REASONS = {"backendError", "internalError", "rateLimitExceeded", "quotaExceeded", "jobRateLimitExceeded", "timeout"}
EXTERNAL_URIS_PER_TABLE = 10_000  # BigQuery's limit of source URIs per external table
ROLES_HINT = "roles/bigquery.dataEditor on the dataset and roles/bigquery.jobUser on the project"

_TYPES = {c.name: c.bigquery_type for c in schema.ALL_COLUMNS}
_DESCRIPTIONS = {c.name: c.description for c in schema.ALL_COLUMNS}


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def sql_string(value: str) -> str:
    """A GoogleSQL string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def _field(name: str) -> bigquery.SchemaField:
    return bigquery.SchemaField(name, _TYPES[name], mode="NULLABLE", description=_DESCRIPTIONS[name])


@dataclass
class _Staged:
    item: LoadItem
    table_id: str
    job: Any = None
    started: float = field(default_factory=time.monotonic)
    outcome: FileOutcome | None = None  # set when the file failed


class BigQueryWarehouse(Warehouse):
    # Retry bounds for API calls (class attributes so tests and drills can shorten them).
    retry_attempts = 6
    retry_max_seconds = 120.0
    retry_initial_wait = 0.5
    retry_max_wait = 20.0

    def __init__(
        self,
        project: str,
        dataset: str,
        location: str | None = None,
        api_endpoint: str | None = None,
        keyfile: str | None = None,
        work_dir: Path | None = None,
        client: bigquery.Client | None = None,
        url: str | None = None,
    ) -> None:
        if not project or not dataset:
            raise ConfigError("A BigQuery warehouse needs a project and a dataset: bigquery://PROJECT/DATASET.")
        self.project, self.dataset = project, dataset
        self.raw_schema = dataset
        self.location, self.api_endpoint, self.keyfile = location, api_endpoint, keyfile
        self.work_dir = work_dir
        self.url = url or f"bigquery://{project}/{dataset}"
        self._client = client
        self.table_id = f"{project}.{dataset}.{schema.RAW_TABLE}"

    @classmethod
    def from_url(cls, url: str, work_dir: Path | None = None, client: bigquery.Client | None = None, **options: Any) -> BigQueryWarehouse:
        parsed = urlparse(url)
        dataset = parsed.path.strip("/")
        if parsed.scheme != "bigquery" or not parsed.netloc or not dataset or "/" in dataset:
            raise ConfigError(f"warehouse = {url} is malformed: write bigquery://PROJECT/DATASET?location=US.")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return cls(
            parsed.netloc,
            dataset,
            location=query.get("location"),
            api_endpoint=query.get("api_endpoint"),
            keyfile=query.get("keyfile"),
            work_dir=work_dir,
            client=client,
            url=url,
        )

    # -- client ------------------------------------------------------------------------------
    @property
    def client(self) -> bigquery.Client:
        if self._client is None:
            try:
                if self.api_endpoint:
                    from google.auth.credentials import AnonymousCredentials

                    self._client = bigquery.Client(
                        project=self.project,
                        location=self.location,
                        credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": self.api_endpoint},
                    )
                elif self.keyfile:
                    from google.oauth2 import service_account

                    creds = service_account.Credentials.from_service_account_file(
                        self.keyfile, scopes=["https://www.googleapis.com/auth/cloud-platform"]
                    )
                    self._client = bigquery.Client(project=self.project, location=self.location, credentials=creds)
                else:
                    self._client = bigquery.Client(project=self.project, location=self.location)
            except (auth_exc.DefaultCredentialsError, FileNotFoundError, ValueError) as exc:
                raise BackendError(f"No usable Google credentials for {self.url}: {_first_line(exc)}. {ADC_HINT}") from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- retry and translation -----------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T], passthrough: tuple[type[Exception], ...] = ()) -> T:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            stop=tenacity.stop_after_attempt(self.retry_attempts) | tenacity.stop_after_delay(self.retry_max_seconds),
            wait=tenacity.wait_random_exponential(multiplier=self.retry_initial_wait, max=self.retry_max_wait),
            reraise=True,
        )
        try:
            return retrying(fn)
        except passthrough:
            raise
        except Exception as exc:  # noqa: BLE001 - translated
            raise self._translate(exc, what) from None

    def _translate(self, exc: Exception, what: str) -> Exception:
        if isinstance(exc, (BackendError, ConfigError)):
            return exc
        ds = f"{self.project}.{self.dataset}"
        if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)) and not is_transient(exc):
            return BackendError(
                f"BigQuery denied access while trying to {what} (dataset {ds}): {_first_line(exc)}. "
                f"The account estore-ops runs as needs {ROLES_HINT}; grant them (terraform does)."
            )
        if isinstance(exc, gexc.NotFound) and "not found: dataset" in str(exc).lower():
            return BackendError(
                f"The BigQuery dataset {ds} does not exist. Create it with `terraform apply` in terraform/ "
                f"(or `bq mk --dataset {self.project}:{self.dataset}`), or fix the warehouse setting."
            )
        if isinstance(exc, (auth_exc.DefaultCredentialsError, auth_exc.RefreshError)):
            return BackendError(f"Google credentials for {self.url} are missing or invalid: {_first_line(exc)}. {ADC_HINT}")
        if is_transient(exc):
            return TransientBackendError(
                f"BigQuery did not answer ({what}) after {self.retry_attempts} attempts: {_first_line(exc)}. "
                "The next run tries again."
            )
        if isinstance(exc, gexc.GoogleAPICallError):
            return BackendError(f"BigQuery refused to {what}: {_first_line(exc)}")
        return exc

    # -- tables --------------------------------------------------------------------------------
    def check_dataset(self) -> None:
        """Raise BackendError (with the fix) when the dataset is missing or not accessible."""
        try:
            self._call(
                "read the dataset",
                lambda: self.client.get_dataset(f"{self.project}.{self.dataset}", retry=None),
                passthrough=(gexc.NotFound,),
            )
        except gexc.NotFound:
            raise self._translate(gexc.NotFound(f"Not found: Dataset {self.project}:{self.dataset}"), "read the dataset") from None

    def ensure_raw_table(self) -> None:
        self.check_dataset()  # the dataset is terraform's: never created here
        table = bigquery.Table(self.table_id, schema=[_field(c.name) for c in schema.ALL_COLUMNS])
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="event_time")
        table.clustering_fields = ["_source_file"]
        table.description = "Raw e-commerce events loaded by estore-ops; one _source_file per landing object."
        self._call("create the raw table", lambda: self.client.create_table(table, exists_ok=True, retry=None))

    def _table_exists(self, table_id: str) -> bigquery.Table | None:
        try:
            return self._call("read a table", lambda: self.client.get_table(table_id, retry=None), passthrough=(gexc.NotFound,))
        except gexc.NotFound as exc:
            if "not found: dataset" in str(exc).lower():
                raise self._translate(exc, "read a table") from None
            return None

    def rows_by_file(self) -> dict[str, int]:
        if self._table_exists(self.table_id) is None:
            return {}
        rows = self.query(f"SELECT _source_file, COUNT(*) AS n FROM `{self.table_id}` GROUP BY _source_file")
        return {name: int(n) for name, n in rows}

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        job = self._call("start a query", lambda: self.client.query(sql, job_retry=None, retry=None))
        rows = self._call("run a query", lambda: job.result(timeout=QUERY_TIMEOUT, retry=None, job_retry=None))
        return [tuple(r.values()) for r in rows]

    def query_records(self, sql: str) -> list[dict[str, Any]]:
        job = self._call("start a query", lambda: self.client.query(sql, job_retry=None, retry=None))
        rows = self._call("run a query", lambda: job.result(timeout=QUERY_TIMEOUT, retry=None, job_retry=None))
        return [dict(r.items()) for r in rows]

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

    def source_count_job_config(self, infos: list[Any], store: GCSStore) -> tuple[bigquery.QueryJobConfig, str]:
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
        config = bigquery.QueryJobConfig(table_definitions=definitions, use_query_cache=False)
        return config, "\nUNION ALL\n".join(selects)

    def count_source_rows(self, infos: Any, store: ObjectStore) -> dict[str, int | str]:
        infos = list(infos)
        if not infos:
            return {}
        if not isinstance(store, GCSStore):
            # Mixed configuration (local landing folder): BigQuery cannot read it; DuckDB can.
            import duckdb

            from estore_ops.warehouses.duckdb import count_csv_rows

            with duckdb.connect() as con:
                return count_csv_rows(con, infos, store, self.work_dir)
        config, sql = self.source_count_job_config(infos, store)
        job = self._call("start a row count over the landing files",
                         lambda: self.client.query(sql, job_config=config, project=self.project, job_retry=None, retry=None))
        try:
            rows = self._call("count the rows of the landing files",
                              lambda: job.result(timeout=QUERY_TIMEOUT, retry=None, job_retry=None))
        except BackendError as exc:
            return {i.name: f"{i.name}: BigQuery could not count its rows: {exc}" for i in infos}
        by_uri = {uri: int(n) for uri, n in (tuple(r.values()) for r in rows)}
        return {i.name: by_uri.get(store.uri(i.name), 0) for i in infos}

    def dry_run(self, sql: str) -> int:
        """Validate a query without running it; returns the bytes it would process."""
        cfg = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
        job = self._call("dry-run a query", lambda: self.client.query(sql, job_config=cfg, job_retry=None, retry=None))
        return int(job.total_bytes_processed or 0)

    def dbt_target(self, settings: Any) -> dict[str, Any]:
        target: dict[str, Any] = {
            "type": "bigquery",
            "project": self.project,
            "dataset": self.dataset,
            "threads": 4,
            "job_retries": 1,
            "priority": "interactive",
        }
        if self.location:
            target["location"] = self.location
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
                lambda: self.client.get_job(job_id, project=self.project, location=self.location, retry=None),
                passthrough=(gexc.NotFound,),
            )
        except gexc.NotFound:
            return None

    def _find_or_start(self, job_id: str, start: Callable[[str], Any], reusable: Callable[[Any], bool]) -> Any:
        """The job with this deterministic id if it exists and can be reused, else a new one.

        Tries `job_id`, then `job_id_r1`, ... A 409 on insert means a concurrent or retried
        request created it first: that job is used.
        """
        last = None
        for attempt in range(JOB_ATTEMPTS):
            jid = job_id if attempt == 0 else f"{job_id}_r{attempt}"
            job = self._get_job(jid)
            if job is None:
                try:
                    return self._call("start a job", lambda jid=jid: start(jid), passthrough=(gexc.Conflict,))
                except gexc.Conflict as exc:
                    job = self._get_job(jid)  # a retried or concurrent request created it: use it
                    if job is None:
                        raise self._translate(exc, "start a job") from None
            if reusable(job):
                return job
            last = job
        return last  # every id used and none reusable: report the last one's outcome

    def _wait(self, job: Any, timeout: float) -> None:
        """Wait for a job; a job's own failure is left on job.error_result, API failures raise."""
        extra = {"job_retry": None} if isinstance(job, bigquery.QueryJob) else {}

        def once() -> None:
            try:
                job.result(timeout=timeout, retry=None, **extra)
            except gexc.GoogleAPICallError:
                if job.error_result is not None:
                    return  # the job ran and failed: not retried here
                raise

        self._call("wait for a job", once)

    @staticmethod
    def _job_failed_transiently(job: Any) -> bool:
        err = job.error_result
        return bool(err) and err.get("reason") in TRANSIENT_JOB_REASONS

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
        staged = [self._stage(item, store) for item in items]  # all jobs started before any wait
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
        negative = self._negative_prices(ready)
        for s in ready:
            if s.table_id in negative:
                count, first_time = negative[s.table_id]
                yield self._fail(
                    s,
                    f"{s.item.info.name}, column price: {count} row(s) with a negative price (the first at event_time "
                    f"{first_time}). Prices are 0 or more in these events, and a negative one would corrupt revenue, "
                    "so the whole file was refused. Fix the value (or remove the line) and upload the file again; "
                    "the new version loads on the next run.",
                )
        ready = [s for s in ready if s.table_id not in negative]
        if ready:
            yield from self._commit(ready)

    def _negative_prices(self, staged: list[_Staged]) -> dict[str, tuple[int, Any]]:
        """The same rule as the embedded warehouse, in ONE read-only query over the tick's staging tables."""
        checked = [s for s in staged if "price" in s.item.header]
        if not checked:
            return {}
        sql = " UNION ALL ".join(
            f"SELECT '{s.table_id}' AS t, count(*) AS n, min(event_time) AS first_time FROM `{s.table_id}` WHERE price < 0"
            for s in checked
        )
        return {t: (int(n), first) for t, n, first in self.query(sql) if n}

    def _fail(self, s: _Staged, error: str, retryable: bool = False) -> FileOutcome:
        info = s.item.info
        s.outcome = FileOutcome(
            info.name, info.generation, info.size, ok=False, error=error, retryable=retryable,
            seconds=time.monotonic() - s.started,
        )
        return s.outcome

    def _stage(self, item: LoadItem, store: ObjectStore) -> _Staged:
        info = item.info
        key = _digest(self.table_id, info.name, info.generation)
        s = _Staged(item, f"{self.project}.{self.dataset}._estore_stage_{key}")
        unknown = [c for c in item.header if c not in _TYPES or c in {lc.name for lc in schema.LINEAGE_COLUMNS}]
        if unknown:
            self._fail(s, f"{info.name}: unexpected columns {unknown} in the header.")
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
        )

        def start(job_id: str) -> Any:
            table = bigquery.Table(s.table_id, schema=stage_schema)
            table.expires = dt.datetime.now(dt.timezone.utc) + STAGING_EXPIRATION
            table.description = f"estore-ops staging for {info.name} generation {info.generation}"
            self.client.create_table(table, exists_ok=True, retry=None)
            if isinstance(store, GCSStore):
                return self.client.load_table_from_uri(
                    store.uri(info.name), s.table_id, job_id=job_id, job_config=config, project=self.project, retry=None
                )
            # Mixed configuration (local landing folder): BigQuery cannot read the file, so it is
            # streamed from disk in one upload (gzip stays gzip; BigQuery decompresses it).
            with store.open(info.name) as fh:
                return self.client.load_table_from_file(
                    fh, s.table_id, job_id=job_id, job_config=config, project=self.project, rewind=False
                )

        def reusable(job: Any) -> bool:
            if job.state != "DONE":
                return True  # still running: wait for it
            if job.error_result:
                return not self._job_failed_transiently(job)  # bad data fails the same way again
            table = self._table_exists(s.table_id)
            return table is not None and (job.output_rows is None or int(table.num_rows or 0) == int(job.output_rows))

        try:
            s.job = self._find_or_start(f"estore_load_{key}", start, reusable)
        except BackendError as exc:
            self._fail(s, f"{info.name}: could not start its load: {exc}", retryable=isinstance(exc, TransientBackendError))
        return s

    def _finish_stage(self, s: _Staged) -> None:
        info = s.item.info
        try:
            self._wait(s.job, LOAD_TIMEOUT)
        except BackendError as exc:
            self._fail(s, f"{info.name}: its load job {s.job.job_id} failed to report: {exc}", retryable=True)
            return
        if s.job.error_result:
            self._fail(s, self._describe_load_error(s), retryable=self._job_failed_transiently(s.job))

    def _describe_load_error(self, s: _Staged) -> str:
        info, job = s.item.info, s.job
        messages = []
        for err in [job.error_result, *(job.errors or [])]:
            msg = (err or {}).get("message", "")
            # Keep the lines that say where and what; drop reader diagnostics.
            lines = [ln.strip() for ln in msg.splitlines() if ln.strip()][:4]
            text = " ".join(lines)
            if text and text not in messages:
                messages.append(text)
        detail = " | ".join(messages)[:800] or "no detail"
        return (
            f"{info.name} (generation {info.generation}) was rejected by BigQuery (job {job.job_id}): {detail}. "
            "No row of it was loaded. Fix the file (or remove the bad lines) and upload it again; "
            "the new version loads on the next run."
        )

    def _merge_sql(self, batch: list[_Staged]) -> str:
        cols = ", ".join(schema.SOURCE_COLUMN_NAMES)
        selects = [
            f"SELECT {cols}, {sql_string(s.item.info.name)} AS _source_file, "
            f"{int(s.item.info.generation)} AS _source_generation FROM `{s.table_id}`"
            for s in batch
        ]
        names = ", ".join(sql_string(s.item.info.name) for s in batch)
        lineage = "_source_file, _source_generation, _loaded_at"
        return (
            f"MERGE `{self.table_id}` AS T\n"
            f"USING (\n  " + "\n  UNION ALL\n  ".join(selects) + "\n) AS S\n"
            "ON FALSE\n"
            f"WHEN NOT MATCHED BY SOURCE AND T._source_file IN ({names}) THEN DELETE\n"
            f"WHEN NOT MATCHED THEN INSERT ({cols}, {lineage})\n"
            f"  VALUES ({cols}, _source_file, _source_generation, CURRENT_TIMESTAMP())"
        )

    def _committed_counts(self, batch: list[_Staged]) -> dict[str, dict[int, int]]:
        names = ", ".join(sql_string(s.item.info.name) for s in batch)
        rows = self.query(
            f"SELECT _source_file, _source_generation, COUNT(*) FROM `{self.table_id}` "
            f"WHERE _source_file IN ({names}) GROUP BY _source_file, _source_generation"
        )
        out: dict[str, dict[int, int]] = {}
        for name, generation, count in rows:
            out.setdefault(name, {})[int(generation)] = int(count)
        return out

    def _commit(self, batch: list[_Staged]) -> Iterator[FileOutcome]:
        key = _digest(self.table_id, *sorted(f"{s.item.info.name}\t{s.item.info.generation}" for s in batch))
        sql = self._merge_sql(batch)
        expected = {s.item.info.name: (s.item.info.generation, int(s.job.output_rows or 0)) for s in batch}
        mismatch: dict[str, str] = {}
        error: str | None = None
        retryable = False
        checked: dict[str, bool] = {}

        def verified(job: Any) -> bool:
            """Reusable = still running, or done and its rows are all there."""
            if job.state != "DONE":
                return True
            if job.error_result:
                return not self._job_failed_transiently(job)
            if job.job_id not in checked:
                counts = self._committed_counts(batch)
                mismatch.clear()
                for name, (generation, rows) in expected.items():
                    got = counts.get(name, {})
                    if got != ({generation: rows} if rows else {}):
                        mismatch[name] = f"expected {rows} rows of generation {generation}, found {got or 'none'}"
                checked[job.job_id] = not mismatch
            return checked[job.job_id]

        try:
            job = self._find_or_start(
                f"estore_commit_{key}",
                lambda jid: self.client.query(sql, job_id=jid, project=self.project, job_retry=None, retry=None),
                verified,
            )
            self._wait(job, QUERY_TIMEOUT)
            if job.error_result:
                retryable = self._job_failed_transiently(job)
                msg = " ".join((job.error_result.get("message") or "").split())[:500]
                error = f"the commit (MERGE job {job.job_id}) into {self.table_id} failed: {msg}"
            elif not verified(job):
                error = f"after the commit (job {job.job_id}) the raw table does not hold the loaded rows"
        except BackendError as exc:
            error, retryable = f"the commit into {self.table_id} failed: {exc}", isinstance(exc, TransientBackendError)

        for s in batch:
            info = s.item.info
            if error or info.name in mismatch:
                why = error or ""
                if info.name in mismatch:
                    why = f"{why}; " if why else ""
                    why += f"row count check: {mismatch[info.name]}"
                yield self._fail(s, f"{info.name} (generation {info.generation}) was not committed: {why}", retryable=retryable or bool(mismatch))
                continue
            yield FileOutcome(
                info.name, info.generation, info.size, ok=True, rows=expected[info.name][1],
                seconds=time.monotonic() - s.started,
            )


def _utc_text(moment: dt.datetime) -> str:
    """A timestamp literal's text in UTC (a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]
