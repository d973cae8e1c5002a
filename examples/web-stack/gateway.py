"""The web stack's gateway: a small reverse proxy in front of the backend
(standard library only), run by `supervisor up`
(examples/web-stack/stack.yaml).

- `GET /health`: its own health with the backend's (the backend's body and
  status code, under `backend`).
- anything else: forwarded to the backend as it is (method, path, body,
  `Content-Type`), with the backend's answer sent back; 502 when the
  backend cannot be reached.

Listens on `AGENT_PORT`; finds the backend in `BACKEND_ENDPOINT` (both set
by the supervisor from the manifest). An unmodified program: it does not use
the SDK, and is supervised through its HTTP readiness probe alone.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

backend = urlparse(os.environ["BACKEND_ENDPOINT"])
BACKEND = f"http://{backend.hostname}:{backend.port}"
TIMEOUT = 5.0


def forward(method: str, path: str, body: bytes | None, content_type: str | None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(BACKEND + path, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return answer.status, answer.headers.get("Content-Type", "application/json"), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", "application/json"), error.read()
    except (urllib.error.URLError, OSError) as error:
        body = json.dumps({"error": f"backend unreachable: {error}"}).encode()
        return 502, "application/json", body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        self._reply(*forward(self.command, self.path, body, self.headers.get("Content-Type")))

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path != "/health":
            return self._proxy()
        status, _, body = forward("GET", "/health", None, None)
        try:
            backend_health = json.loads(body)
        except ValueError:
            backend_health = {"error": body.decode(errors="replace")}
        answer = {"status": "ok" if status == 200 else "degraded", "backend": backend_health}
        self._reply(200 if status == 200 else 503, "application/json", json.dumps(answer).encode())

    do_POST = _proxy  # noqa: N815
    do_PUT = _proxy  # noqa: N815
    do_DELETE = _proxy  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # quiet: the supervisor keeps logs
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("AGENT_PORT", "58080"))), Handler)
    server.daemon_threads = True
    # SIGTERM from the supervisor: stop serving and exit 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
