"""Google credentials shared by the Cloud Storage store, the BigQuery warehouse and the dbt profile.

One setting, `keyfile`: empty means Application Default Credentials (the VM's service account,
`gcloud auth application-default login`, or GOOGLE_APPLICATION_CREDENTIALS); a path means that
service-account key file, for every Google backend and for dbt alike.
"""

from __future__ import annotations

from typing import Any

from estore_ops.errors import BackendError

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
ADC_HINT = (
    "Run `gcloud auth application-default login` (a workstation), attach a service account (a VM), "
    "or set the keyfile setting (ESTORE_KEYFILE) to a service-account key file."
)


def credentials(keyfile: str | None, what: str) -> tuple[Any, str | None]:
    """(credentials, project of the key file or None). Raises BackendError with the fix."""
    from google.auth import exceptions as auth_exc

    if keyfile:
        from google.oauth2 import service_account

        try:
            creds = service_account.Credentials.from_service_account_file(keyfile, scopes=list(SCOPES))
        except FileNotFoundError:
            raise BackendError(f"The key file {keyfile} (keyfile setting) does not exist; fix the path or unset it to use Application Default Credentials.") from None
        except (ValueError, KeyError, OSError) as exc:
            raise BackendError(f"The key file {keyfile} (keyfile setting) is not a service-account key: {type(exc).__name__}. {ADC_HINT}") from None
        return creds, getattr(creds, "project_id", None)
    import google.auth

    try:
        creds, project = google.auth.default(scopes=list(SCOPES))
    except auth_exc.DefaultCredentialsError as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise BackendError(f"No Google credentials to reach {what}: {first}. {ADC_HINT}") from None
    return creds, project
