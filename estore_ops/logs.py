"""Logging, configured once: readable text on a terminal, one JSON object per line otherwise.

Every record carries the run id; every message passes through the secret redactor.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from estore_ops.redact import redact

LOGGER_NAME = "estore_ops"
_run_id = "-"


def set_run_id(run_id: str) -> None:
    global _run_id
    _run_id = run_id


class _RunIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _run_id
        return True


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "run_id": getattr(record, "run_id", _run_id),
            "msg": redact(record.getMessage()),
        }
        for key, value in getattr(record, "fields", {}).items():
            payload[key] = value
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return redact(json.dumps(payload, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower():7} {record.getMessage()}"
        fields = getattr(record, "fields", {})
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        from estore_ops.output import printable  # file names in messages must not drive the terminal

        return printable(redact(text))


def configure_logging(log_format: str = "auto", verbose: bool = False) -> None:
    root = logging.getLogger(LOGGER_NAME)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter() if use_json else TextFormatter())
    handler.addFilter(_RunIdFilter())
    root.addHandler(handler)
    # On a terminal the command's own tables tell the story: info logs only with --verbose.
    root.setLevel(logging.DEBUG if verbose else logging.INFO if use_json else logging.WARNING)
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")
