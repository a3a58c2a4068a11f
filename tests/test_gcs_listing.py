"""How the Cloud Storage store lists a landing prefix: pages of 1,000 with only the fields it uses.

A real HTTP server on 127.0.0.1 plays the JSON API's objects.list
(https://cloud.google.com/storage/docs/json_api/v1/objects/list) and records each request, so the
test sees exactly what estore-ops asks for: `maxResults`, `pageToken` and the partial-response
`fields` selector (https://cloud.google.com/storage/docs/json_api#partial-response).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

pytest.importorskip("google.cloud.storage", reason="the gcp extra is not installed")

OBJECTS = 2_500


@pytest.fixture
def listing_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []
    names = [f"landing/f-{i:05d}.csv" for i in range(OBJECTS)]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            requests.append({"path": url.path, **query})
            size = int(query.get("maxResults", 1000))
            start = int(query.get("pageToken", 0))
            page = names[start:start + size]
            body: dict[str, Any] = {"kind": "storage#objects", "items": [
                {"name": n, "size": "10", "generation": str(1_700_000_000_000_000 + i), "updated": "2026-11-30T00:00:00.000Z",
                 "timeCreated": "2026-11-30T00:00:00.000Z", "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg=="}
                for i, n in enumerate(page, start)]}
            if start + size < len(names):
                body["nextPageToken"] = str(start + size)
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()


def test_listing_asks_for_pages_of_1000_with_only_the_needed_fields(listing_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from estore_ops.backends.stores.gcs import GCSStore

    endpoint, requests = listing_server
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    store = GCSStore.from_url("gs://bucket/landing")
    infos = list(store.list_csv())
    assert len(infos) == OBJECTS and infos[0].name == "f-00000.csv" and infos[-1].generation == 1_700_000_000_000_000 + OBJECTS - 1
    assert store.list_requests == len(requests) == 3  # ceil(2,500 / 1,000)
    for request in requests:
        assert request["path"] == "/storage/v1/b/bucket/o"
        assert request["maxResults"] == "1000" and request["prefix"] == "landing/"
        fields = request["fields"]
        assert fields.startswith("items(") and "nextPageToken" in fields
        # Only what ObjectInfo holds: no ACLs, owners, metadata or media links.
        listed = set(fields[len("items("):fields.index(")")].split(","))
        assert listed == {"name", "size", "updated", "timeCreated", "generation", "md5Hash", "crc32c"}
    assert [r.get("pageToken") for r in requests] == [None, "1000", "2000"]
