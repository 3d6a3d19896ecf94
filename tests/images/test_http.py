"""sampan.registry.http, the registry's HTTP client over http.client: connection reuse, a pooled
connection the server closed meanwhile, redirects without leaking Authorization, streamed
bodies, errors — against small servers on loopback."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sampan.registry import http


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Handler.log.append((self.path, self.client_address[1], self.headers.get("Authorization")))
        if self.path.startswith("/redirect"):
            target = self.path.split("to=", 1)[1]
            self.send_response(307)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"x" * 100_000 if self.path == "/big" else b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/close":
            self.send_header("Connection", "keep-alive")
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/close":
            self.close_connection = True     # says keep-alive, closes anyway (an idle timeout)

    def do_PUT(self):  # noqa: N802
        n = int(self.headers["Content-Length"])
        data = self.rfile.read(n)
        Handler.log.append((self.path, len(data), self.headers.get("Transfer-Encoding")))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def servers():
    made = []
    for _ in range(2):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        made.append(srv)
    Handler.log.clear()
    yield [f"http://127.0.0.1:{s.server_port}" for s in made]
    for s in made:
        s.shutdown()
        s.server_close()


def test_keep_alive_reuses_one_connection(servers):
    s = http.Session()
    try:
        for _ in range(3):
            r = s.request("GET", servers[0] + "/a")
            assert r.status_code == 200 and r.json() == {"ok": True}
        r = s.request("GET", servers[0] + "/big", stream=True)
        assert sum(len(c) for c in r.raw.stream(8192)) == 100_000
        r.close()
        ports = {port for _, port, _ in Handler.log}
        assert len(ports) == 1
    finally:
        s.close()


def test_a_connection_the_server_closed_is_retried_once(servers):
    s = http.Session()
    try:
        assert s.request("GET", servers[0] + "/close").status_code == 200
        # the pooled connection is dead now; the next request must still get through
        assert s.request("GET", servers[0] + "/a").json() == {"ok": True}
        assert len({port for _, port, _ in Handler.log}) == 2
    finally:
        s.close()


def test_redirect_to_another_host_drops_authorization(servers):
    s = http.Session()
    try:
        r = s.get(f"{servers[0]}/redirect?to={servers[1]}/a",
                  headers={"Authorization": "Bearer secret"})
        assert r.status_code == 200 and r.json() == {"ok": True}
        assert Handler.log[0][2] == "Bearer secret"
        assert Handler.log[1][0] == "/a" and Handler.log[1][2] is None
        # without allow_redirects the 307 itself is the answer
        r = s.request("GET", f"{servers[0]}/redirect?to={servers[1]}/a")
        assert r.status_code == 307 and r.headers["location"].endswith("/a")
        r.close()
    finally:
        s.close()


def test_file_body_is_streamed_with_its_length(servers):
    class Body:
        def __init__(self, data):
            self.f = io.BytesIO(data)
            self.n = len(data)

        def __len__(self):
            return self.n

        def read(self, n=-1):
            return self.f.read(n)

    s = http.Session()
    try:
        r = s.request("PUT", servers[0] + "/up", data=Body(b"y" * 300_000))
        assert r.status_code == 201
        assert Handler.log[-1] == ("/up", 300_000, None)     # Content-Length, not chunked
    finally:
        s.close()


def test_errors():
    s = http.Session()
    try:
        with pytest.raises(http.ConnectionError, match="refused"):
            s.request("GET", "http://127.0.0.1:1/")
        with pytest.raises(http.RequestException):
            s.request("GET", "ftp://127.0.0.1/")
    finally:
        s.close()
