"""The HTTP endpoint of ``guardstream stream``: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

``/metrics`` is prometheus_client's own WSGI app (text or OpenMetrics by ``Accept``, gzip), over the
driver's registry. ``/healthz`` answers 200 while the process serves HTTP at all (a liveness probe: a wedged
driver stops answering). ``/readyz`` is 200 when ``readiness()`` says so and 503 otherwise, both with a JSON
body listing the reasons, so ``curl`` shows an operator what the stream is waiting for.

A thread per request (``ThreadingMixIn``) so a slow scrape never delays a probe; request lines are not
logged (a probe every few seconds would flood the live view).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from pydantic import BaseModel, Field


class Readiness(BaseModel):
    """The answer of ``/readyz``."""

    ready: bool
    reasons: list[str] = Field(default_factory=list, description="What is not ready yet (empty: ready).")


class Health(BaseModel):
    """The answer of ``/healthz``: the process answers HTTP."""

    alive: bool = True


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: probes and scrapes every few seconds are not news."""


def _json(start_response: Callable[..., Any], status: str, body: BaseModel) -> Iterable[bytes]:
    data = body.model_dump_json().encode("utf-8")
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


class MetricsServer:
    """Serves the three paths on ``host:port`` from a daemon thread; ``close`` stops it."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, readiness: Callable[[], Readiness]
    ) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._readiness = readiness
        try:
            self._httpd = make_server(
                host, port, self._app, server_class=_ThreadingServer, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                "(set GUARDSTREAM_METRICS_PORT to a free port, or 0 for no endpoint)"
            ) from exc
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str = "/metrics") -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}{path}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _json(start_response, "200 OK", Health())
        if path == "/readyz":
            state = self._readiness()
            return _json(start_response, "200 OK" if state.ready else "503 Service Unavailable", state)
        data = json.dumps({"error": f"no such path {path!r}; try /metrics, /healthz or /readyz"}).encode()
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [data]
