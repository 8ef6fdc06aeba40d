"""A real HTTP server on 127.0.0.1 for `vipstream fetch` tests: serves real media and misbehaves on
purpose (status codes for the first N requests, redirects, stalls, slow drips, no length,
a gate that holds a response until the test opens it).

It also answers as an HTTP proxy (requests whose path is an absolute URL), recording the
`Proxy-Authorization` and `Cookie` headers it sees, so a test can prove that a proxy and cookies
given to `vipstream fetch` were really used, while checking they were never logged.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Route:
    kind: str = "file"  # file | status | redirect | stall | drip | nolength | gate
    body: bytes = b""
    content_type: str = "video/mp4"
    status: int = 200  # kind "status": sent for the first `first_n` requests (None: always), then the file
    first_n: int | None = None
    location: str = ""  # kind "redirect"
    chunk: int = 2048  # kind "drip": bytes per tick
    interval_s: float = 0.25
    headers: tuple[tuple[str, str], ...] = ()
    gate: threading.Event | None = None  # kind "gate": the file, once this event is set


class FetchTestServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.counts: Counter = Counter()
        self.first_request_at: dict[str, float] = {}  # path -> time.time() of its first GET
        self.cookies: dict[str, list[str]] = defaultdict(list)
        self.proxy_auth: list[str] = []
        self.proxied: Counter = Counter()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._handle(self)

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # clients that give up: expected
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fetch-test-server", daemon=True)

    def start(self) -> "FetchTestServer":
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, **route) -> str:
        self.routes[path] = Route(**route)
        return self.url(path)

    # -- serving --------------------------------------------------------------------------

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        raw = handler.path
        if raw.startswith("http://"):  # a proxy request: the absolute URL of the origin
            with self._lock:
                self.proxy_auth.append(handler.headers.get("Proxy-Authorization") or "")
            raw = urlsplit(raw).path or "/"
            with self._lock:
                self.proxied[raw] += 1
        path = raw.split("?", 1)[0]
        with self._lock:
            self.counts[path] += 1
            count = self.counts[path]
            self.first_request_at.setdefault(path, time.time())
            if handler.headers.get("Cookie"):
                self.cookies[path].append(handler.headers["Cookie"])
        route = self.routes.get(path)
        if route is None:
            return self._send(handler, 404, b"not found", "text/plain")
        if route.kind == "status" and (route.first_n is None or count <= route.first_n):
            return self._send(handler, route.status, f"status {route.status}".encode(), "text/plain", route.headers)
        if route.kind == "redirect":
            return self._send(handler, 302, b"", "text/plain", (("Location", route.location),))
        if route.kind == "gate":
            route.gate.wait(120)
            return self._send(handler, 200, route.body, route.content_type, route.headers)
        if route.kind in ("stall", "drip"):
            return self._trickle(handler, route)
        if route.kind == "nolength":
            handler.send_response(200)
            handler.send_header("Content-Type", route.content_type)
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.close_connection = True
            self._write(handler, route.body)
            return
        return self._send(handler, 200, route.body, route.content_type, route.headers)

    @staticmethod
    def _write(handler, data: bytes) -> bool:
        try:
            handler.wfile.write(data)
            handler.wfile.flush()
            return True
        except OSError:  # the client gave up
            return False

    def _send(self, handler, code: int, body: bytes, content_type: str, headers=()) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            handler.send_header(name, value)
        handler.end_headers()
        self._write(handler, body)

    def _trickle(self, handler, route: Route) -> None:
        """stall: half the body, then nothing until the server stops; drip: `chunk` bytes every
        `interval_s` (never long enough silent for a socket timeout)."""
        handler.send_response(200)
        handler.send_header("Content-Type", route.content_type)
        handler.send_header("Content-Length", str(len(route.body)))
        handler.end_headers()
        handler.close_connection = True
        if route.kind == "stall":
            if self._write(handler, route.body[: len(route.body) // 2]):
                self.stop.wait(120)
            return
        for start in range(0, len(route.body), route.chunk):
            if self.stop.is_set() or not self._write(handler, route.body[start:start + route.chunk]):
                return
            self.stop.wait(route.interval_s)
