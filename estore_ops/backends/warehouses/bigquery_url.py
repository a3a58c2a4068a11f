"""`bigquery://PROJECT/DATASET?location=LOCATION[&api_endpoint=URL][&keyfile=PATH]`, parsed and checked.

No Google import here: the configuration validates warehouse URLs with it at start-up (exit 2
with the fix) without loading the client libraries.

Why `location` is required: every BigQuery job runs in the dataset's location, and `jobs.get` /
`jobs.cancel` of a job outside the US multi-region answer 404 unless the location is given. The
location could be read from the dataset at start-up, but that is one more request per tick, it
needs read access to dataset metadata before anything else works, and the dbt profile needs it too:
an explicit, checked value is simpler and fails early with a clear message.

Naming rules (refused here rather than by a 400 from the API later):
- project IDs: 6 to 30 lower-case letters, digits or hyphens, starting with a letter, not ending
  with a hyphen (https://cloud.google.com/resource-manager/docs/creating-managing-projects);
  legacy domain-scoped projects are written `example.com:my-project`.
- dataset IDs: letters, digits and underscores only, at most 1,024 characters
  (https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets#DatasetReference,
  https://cloud.google.com/bigquery/docs/datasets#dataset-naming).
- locations: a multi-region (US, EU) or a region such as europe-west1
  (https://cloud.google.com/bigquery/docs/locations).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

from estore_ops.errors import ConfigError

PROJECT_RE = re.compile(r"(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
DATASET_RE = re.compile(r"[A-Za-z0-9_]{1,1024}")
LOCATION_RE = re.compile(r"(?i:us|eu)|[a-z]+-[a-z]+[0-9]+")
PARAMETERS = ("location", "api_endpoint", "keyfile")
EXAMPLE = "bigquery://PROJECT/DATASET?location=US"


@dataclass(frozen=True)
class BigQueryUrl:
    project: str
    dataset: str
    location: str
    api_endpoint: str | None = None
    keyfile: str | None = None


def parse_bigquery_url(url: str, where: str = "") -> BigQueryUrl:
    """Parse and check a bigquery:// URL; `where` names the setting for messages."""
    where = where or f"warehouse = {url!r}"
    parsed = urlparse(url)
    dataset = parsed.path.strip("/")
    if parsed.scheme != "bigquery" or not parsed.netloc or not dataset or "/" in dataset:
        raise ConfigError(f"{where} is malformed: write {EXAMPLE}.")
    query = parse_qs(parsed.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(PARAMETERS))
    if unknown:
        raise ConfigError(f"{where} has unknown parameters {unknown}; allowed: {', '.join(PARAMETERS)}.")
    values = {k: v[-1] for k, v in query.items()}
    project = parsed.netloc
    if not PROJECT_RE.fullmatch(project):
        raise ConfigError(
            f"{where}: {project!r} is not a Google Cloud project ID (6-30 lower-case letters, digits or hyphens, "
            "starting with a letter and not ending with a hyphen). Use the project ID, not its name or number."
        )
    if not DATASET_RE.fullmatch(dataset):
        raise ConfigError(
            f"{where}: {dataset!r} is not a BigQuery dataset ID: use only letters, digits and underscores "
            "(at most 1,024), e.g. raw or estore_raw."
        )
    location = values.get("location", "")
    if not location:
        raise ConfigError(
            f"{where} has no location: add ?location=... with the dataset's location (e.g. {EXAMPLE}; "
            f"`bq show --format=prettyjson {project}:{dataset}` shows it). BigQuery needs it to find this run's jobs."
        )
    if not LOCATION_RE.fullmatch(location):
        raise ConfigError(f"{where}: location={location!r} is not a BigQuery location such as US, EU or europe-west1.")
    return BigQueryUrl(project, dataset, location, values.get("api_endpoint") or None, values.get("keyfile") or None)
