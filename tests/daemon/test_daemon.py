"""sampand itself: HTTP, API versions, errors, sockets, exclusivity, shutdown, config, TLS."""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest

# --------------------------------------------------------------------------- basics


def test_ping_get_and_head(shared_daemon):
    st, h, body = shared_daemon.request("GET", "/_ping")
    assert (st, body) == (200, b"OK")
    assert h["API-Version"] == "1.45"
    assert h["Docker-Experimental"] == "false"
    assert h["Ostype"] == "linux"
    assert h["Builder-Version"]
    assert h["Content-Type"].startswith("text/plain")
    st, h, body = shared_daemon.request("HEAD", "/_ping")
    assert (st, body) == (200, b"")
    assert h["API-Version"] == "1.45" and h["Content-Length"] == "2"


def test_version_shape(shared_daemon):
    st, v = shared_daemon.json("GET", "/version")
    assert st == 200
    assert v["ApiVersion"] == "1.45" and v["MinAPIVersion"] == "1.24"
    assert v["Os"] == "linux" and v["Arch"] and v["KernelVersion"] == os.uname().release
    eng = v["Components"][0]
    assert eng["Name"] == "Engine" and eng["Details"]["ApiVersion"] == "1.45"


def test_info_shape(shared_daemon):
    st, info = shared_daemon.json("GET", "/info")
    assert st == 200
    for key in ("ID", "Containers", "Images", "Driver", "DriverStatus", "CgroupVersion",
                "KernelVersion", "OperatingSystem", "NCPU", "MemTotal", "DockerRootDir",
                "RegistryConfig", "ServerVersion", "Swarm", "SecurityOptions", "Name"):
        assert key in info, key
    assert info["Driver"] == "vfs"
    assert ["Reason", "fake graph for tests"] in info["DriverStatus"]
    assert info["Images"] == 3
    assert info["CgroupVersion"] in ("1", "2")
    assert info["DockerRootDir"] == str(shared_daemon.data)
    assert info["NCPU"] == os.cpu_count()


@pytest.mark.parametrize("prefix,status", [
    ("", 200), ("/v1.24", 200), ("/v1.41", 200), ("/v1.45", 200),
    ("/v1.23", 400), ("/v1.12", 400), ("/v1.46", 400), ("/v2.0", 400), ("/vx", 404),
])
def test_version_prefixes(shared_daemon, prefix, status):
    st, body = shared_daemon.json("GET", f"{prefix}/version")
    assert st == status, body
    if prefix == "/v1.23":
        assert body["message"] == ("client version 1.23 is too old. Minimum supported API "
                                   "version is 1.24, please upgrade your client to a newer "
                                   "version")
    if prefix == "/v1.46":
        assert body["message"] == ("client version 1.46 is too new. Maximum supported API "
                                   "version is 1.45")


def test_unknown_routes_404(shared_daemon):
    for method, path in [("GET", "/nope"), ("GET", "/v1.45/containers/x/nothing"),
                         ("DELETE", "/version"), ("POST", "/_ping")]:
        st, h, body = shared_daemon.request(method, path)
        assert st == 404, (method, path)
        assert json.loads(body) == {"message": "page not found"}
        assert h["Content-Type"] == "application/json"


def test_keepalive_many_requests_one_connection(shared_daemon):
    c = shared_daemon.conn()
    try:
        for path in ("/_ping", "/version", "/v1.44/info", "/nope", "/_ping"):
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            assert r.status in (200, 404)
        c.request("POST", "/auth", body=b'{"username":"alice","password":"secret"}',
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["Status"] == "Login Succeeded"
    finally:
        c.close()


def test_pipelined_requests(shared_daemon):
    req = b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"
    out = shared_daemon.raw(req * 3 + b"GET /version HTTP/1.1\r\nHost: x\r\n"
                            b"Connection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 4
    assert out.endswith(b"\n") and b'"ApiVersion":"1.45"' in out


def test_chunked_request_body(shared_daemon):
    body = b'{"username":"alice","password":"secret"}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    out = shared_daemon.raw(b"POST /v1.45/auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            b"Content-Type: application/json\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert out.startswith(b"HTTP/1.1 200")
    assert b"Login Succeeded" in out


def test_expect_100_continue(shared_daemon):
    body = b'{"username":"alice","password":"secret"}'
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(shared_daemon.sock))
    s.sendall(b"POST /auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
              % len(body))
    first = s.recv(100)
    assert first.startswith(b"HTTP/1.1 100")
    s.sendall(body)
    rest = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    s.close()
    assert b"200 OK" in first + rest and b"Login Succeeded" in rest


def test_http10_client(shared_daemon):
    out = shared_daemon.raw(b"GET /_ping HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"OK")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("payload", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nno-colon-header\r\n\r\n",
    b"GET /_ping HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n",
    b"\x00\x01\x02\xff" * 100,
    b"POST /auth HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_malformed_http_gets_400_and_daemon_keeps_serving(shared_daemon, payload):
    out = shared_daemon.raw(payload)
    assert out == b"" or out.startswith(b"HTTP/1.1 4"), out[:200]
    assert shared_daemon.request("GET", "/_ping")[0] == 200


@pytest.mark.parametrize("method,path,body,headers,status", [
    ("POST", "/auth", b"{not json", {"Content-Type": "application/json"}, 400),
    ("POST", "/auth", b"[1,2]", {"Content-Type": "application/json"}, 400),
    ("POST", "/auth", b'{"username": 5}', {"Content-Type": "application/json"}, 400),
    ("POST", "/auth", b'{"username":"a"}', {"Content-Type": "text/plain"}, 400),
    ("POST", "/auth", b'{"username":"bob","password":"x"}', {}, 401),
    ("GET", "/images/json?filters=%7Bnope", None, {}, 400),
    ("GET", "/images/json?filters=%5B%5D", None, {}, 400),
    ("GET", '/images/json?filters={"bogus":["x"]}', None, {}, 400),
    ("GET", '/images/json?filters={"dangling":["maybe"]}', None, {}, 400),
    ("POST", "/images/create", None, {}, 400),
    ("POST", "/images/create?fromImage=busybox&tag=1", None, {"X-Registry-Auth": "%%%"}, 400),
    ("POST", "/images/create?fromSrc=-", None, {}, 501),
    ("POST", "/images/busybox/tag", None, {}, 400),
    ("POST", "/images/busybox/tag?repo=UPPER", None, {}, 400),
    ("POST", "/images/busybox/tag?repo=x@sha256:" + "a" * 64, None, {}, 400),
    ("GET", "/images/nosuch/json", None, {}, 404),
    ("DELETE", "/images/nosuch", None, {}, 404),
    ("GET", "/images/get", None, {}, 400),
])
def test_bad_requests_are_4xx_with_message(shared_daemon, method, path, body, headers, status):
    st, _h, data = shared_daemon.request(method, path, body, headers)
    assert st == status, data
    msg = json.loads(data)["message"]
    assert isinstance(msg, str) and msg
    assert shared_daemon.request("GET", "/_ping")[0] == 200


def test_unread_large_body_closes_the_connection(shared_daemon):
    c = shared_daemon.conn()
    try:
        big = b"x" * (3 * 1024 * 1024)
        c.request("POST", "/_ping", body=big)
        r = c.getresponse()
        assert r.status == 404
        r.read()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon may close before the whole body was sent
    finally:
        c.close()
    assert shared_daemon.request("GET", "/_ping")[0] == 200


# --------------------------------------------------------------------------- hijack / upgrade


def _hijack(d, upgrade: bool) -> tuple[bytes, bytes]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(d.sock))
    hdr = b"Connection: Upgrade\r\nUpgrade: tcp\r\n" if upgrade else b""
    s.sendall(b"POST /v1.45/_test/echo HTTP/1.1\r\nHost: x\r\n" + hdr +
              b"Content-Length: 0\r\n\r\nearly")
    buf = b""
    while b"hello\n" not in buf:
        buf += s.recv(4096)
    head, _, rest = buf.partition(b"\r\n\r\n")
    s.sendall(b"more")
    s.shutdown(socket.SHUT_WR)
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        rest += chunk
    s.close()
    return head, rest


def test_http_upgrade_101(daemon):
    head, rest = _hijack(daemon, upgrade=True)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"Upgrade: tcp" in head and b"application/vnd.docker.raw-stream" in head
    assert rest == b"hello\nEARLYMORE" or rest == b"hello\nEARLY" + b"MORE"


def test_hijack_without_upgrade(daemon):
    head, rest = _hijack(daemon, upgrade=False)
    assert head.startswith(b"HTTP/1.1 200")
    assert rest.replace(b"\r\n", b"") == b"hello\nEARLYMORE"
    assert daemon.request("GET", "/_ping")[0] == 200


# --------------------------------------------------------------------------- sockets, locks


def test_socket_mode_owner_and_pidfile(daemon):
    st = os.stat(daemon.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    try:
        gid = grp.getgrnam("sampan").gr_gid
    except KeyError:
        gid = 0
    assert st.st_gid == gid
    pidfile = daemon.exec / "sampand.pid"
    assert int(pidfile.read_text()) == daemon.pid


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")
def test_socket_group_option_and_other_users_refused(new_daemon):
    group = next(g for g in ("daemon", "users", "bin", "sys") if _group_exists(g))
    d = new_daemon().start("-G", group)
    assert os.stat(d.sock).st_gid == grp.getgrnam(group).gr_gid
    code = ("import socket,sys; s=socket.socket(socket.AF_UNIX)\n"
            "try: s.connect(sys.argv[1]); print('connected')\n"
            "except PermissionError: print('denied')")

    def connect_as(*groups: str) -> str:
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                              f"--groups={','.join(groups)}" if groups else "--clear-groups",
                              _world_python(), "-c", code, str(d.sock)], check=False,
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or out.stderr

    # a user in the socket's group can; one in neither root nor that group cannot
    assert connect_as(str(grp.getgrnam(group).gr_gid)) == "connected"
    assert connect_as() == "denied"
    r = d.run("-G", "no-such-group-xyz", "-H", f"unix://{d.root}/other.sock",
              "--pidfile", str(d.root / "other.pid"))
    assert r.returncode != 0


def _world_python() -> str:
    """An interpreter other users can run (pyenv's lives under root's private home)."""
    for p in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(p, os.X_OK) and (os.stat(p).st_mode & 0o001):
            return p
    pytest.skip("no python3 that other users may run")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def test_second_daemon_on_same_data_root_refused(daemon):
    r = daemon.run("-H", f"unix://{daemon.root}/second.sock", "--pidfile",
                   str(daemon.root / "second.pid"))
    assert r.returncode != 0
    assert "another sampand is already running" in r.stderr
    assert str(daemon.data) in r.stderr
    assert not (daemon.root / "second.sock").exists()
    assert daemon.request("GET", "/_ping")[0] == 200


def test_second_daemon_on_same_socket_refused(daemon, new_daemon):
    other = new_daemon()
    r = other.run("-H", daemon.host)
    assert r.returncode != 0
    assert "another daemon is listening" in r.stderr
    assert daemon.request("GET", "/_ping")[0] == 200


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown(new_daemon, sig):
    d = new_daemon().start()
    pidfile = d.exec / "sampand.pid"
    assert d.sock.exists() and pidfile.exists()
    assert d.stop(sig) == 0
    assert not d.sock.exists()
    assert not pidfile.exists()
    assert "shutting down" in d.log()
    # and it starts again on the same data root
    d.start()
    assert d.request("GET", "/_ping")[0] == 200


def test_shutdown_during_a_pull_and_with_idle_clients(new_daemon):
    d = new_daemon().start()
    idle = d.conn()
    idle.request("GET", "/_ping")
    idle.getresponse().read()  # a kept-alive idle connection
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(d.sock))
    s.sendall(b"POST /images/create?fromImage=slow/x&tag=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 10
    assert not d.sock.exists()
    s.close()
    idle.close()


def test_stale_socket_and_pidfile_are_replaced(new_daemon):
    d = new_daemon()
    d.exec.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d.sock))
    s.close()  # a socket file nobody listens on
    (d.exec / "sampand.pid").write_text("999999\n")
    d.start()
    assert d.request("GET", "/_ping")[0] == 200


# --------------------------------------------------------------------------- configuration


def test_config_file_values_are_used(new_daemon):
    d = new_daemon()
    sock = d.root / "from-file.sock"
    d.config.write_text(json.dumps({
        "hosts": [f"unix://{sock}"], "insecure-registries": ["myreg:5000"],
        "registry-mirrors": ["https://mirror.example"], "log-level": "debug",
        "labels": ["a=b"], "storage-driver": "vfs", "max-concurrent-downloads": 3,
    }))
    d.sock = sock
    d.start()
    _st, info = d.json("GET", "/info")
    assert info["RegistryConfig"]["IndexConfigs"]["myreg:5000"]["Secure"] is False
    assert info["RegistryConfig"]["Mirrors"] == ["https://mirror.example"]
    assert info["Labels"] == ["a=b"]
    assert "level=debug" in d.log()


@pytest.mark.parametrize("file,flags,message", [
    ({"hosts": ["unix:///tmp/x.sock"]}, ["-H", "unix:///tmp/y.sock"],
     ("the following directives are specified both as a flag and in the configuration file: "
     "hosts: (from flag: [unix:///tmp/y.sock], from file: [unix:///tmp/x.sock])")),
    ({"log-level": "warn"}, ["--log-level", "debug"], ("log-level: (from flag: debug, from "
                                                      "file: warn)")),
    ({"bogus-key": 1}, [], ("the following directives don't match any configuration option: "
                           "bogus-key")),
    ({"hosts": "unix:///tmp/x.sock"}, [], "hosts must be a list of strings"),
    ({"debug": "yes"}, [], "debug must be true or false"),
    ({"hosts": ["fd://"]}, [], "socket activation (fd://) is not supported"),
    ({"registry-mirrors": ["mirror.example"]}, [], "must start with http:// or https://"),
    ("{not json", [], "unable to configure the daemon with file"),
    ({"tlsverify": True, "hosts": ["tcp://127.0.0.1:1"]}, [], "need --tlscert and --tlskey"),
])
def test_config_file_errors(new_daemon, file, flags, message):
    d = new_daemon()
    d.config.write_text(file if isinstance(file, str) else json.dumps(file))
    r = d.run(*flags)
    assert r.returncode == 1
    assert message in r.stderr
    assert not d.sock.exists()


def test_missing_explicit_config_file(new_daemon):
    d = new_daemon()
    d.config.unlink()
    r = d.run()
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_validate_and_version_flags(new_daemon):
    d = new_daemon()
    r = d.run("--validate")
    assert r.returncode == 0 and "configuration OK" in r.stdout
    r = d.run("--version")
    assert r.returncode == 0 and "sampand" in r.stdout


# --------------------------------------------------------------------------- tcp and TLS


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a client
    certificate from another CA."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "evil"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", f"/CN={ca} test CA", "-keyout", f"{ca}-key.pem", "-out",
                 f"{ca}.pem", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                  "extendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("rogue", "evil", "client.ext")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
                 f"{ca}-key.pem", "-CAcreateserial", "-days", "2", "-extfile", ext,
                 "-out", f"{name}.pem", cwd=d)
    return d


def _tls_get(port: int, pki: Path, cert: str | None) -> bytes:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}-key.pem"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return out
            out += chunk


def test_tls_client_certificates(new_daemon, pki):
    port = _free_port()
    d = new_daemon()
    d.start("-H", f"tcp://127.0.0.1:{port}", "-H", d.host, "--tlsverify",
            "--tlscacert", str(pki / "ca.pem"), "--tlscert", str(pki / "server.pem"),
            "--tlskey", str(pki / "server-key.pem"))
    assert _tls_get(port, pki, "client").startswith(b"HTTP/1.1 200 OK")
    for cert in (None, "rogue"):
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            out = _tls_get(port, pki, cert)
            if not out:
                raise ssl.SSLError("closed")
    # plain HTTP on the TLS port gets nothing useful
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" not in s.recv(4096)
    # the sampan CLI and the docker CLI with the client certificate
    r = d.sampan("-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert",
                 str(pki / "ca.pem"), "--tlscert", str(pki / "client.pem"), "--tlskey",
                 str(pki / "client-key.pem"), "version", "--format", "{{.Server.ApiVersion}}")
    assert r.returncode == 0 and r.stdout.strip() == "1.45", r.stderr
    r = d.sampan("-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert",
                 str(pki / "ca.pem"), "version")
    assert r.returncode != 0
    if shutil.which("docker") is None:
        return
    certs = d.root / "docker-certs"
    certs.mkdir()
    for src, dst in (("ca", "ca"), ("client", "cert"), ("client-key", "key")):
        (certs / f"{dst}.pem").write_bytes((pki / f"{src}.pem").read_bytes())
    r = d.docker("version", "--format", "{{.Server.APIVersion}}",
                 env={"DOCKER_HOST": f"tcp://127.0.0.1:{port}", "DOCKER_TLS_VERIFY": "1",
                      "DOCKER_CERT_PATH": str(certs)})
    assert r.returncode == 0 and r.stdout.strip() == "1.45", r.stderr
    assert d.proc.poll() is None


def test_tls_attach_and_exec(new_daemon, pki, busybox_archive):
    """The hijacked streams (attach with stdin, exec) through TLS, with the sampan CLI and
    the docker CLI: the upgrade must hand the TLS socket over, not the raw one."""
    port = _free_port()
    d = new_daemon(fake=False)
    d.start("-H", f"tcp://127.0.0.1:{port}", "-H", d.host, "--tlsverify",
            "--tlscacert", str(pki / "ca.pem"), "--tlscert", str(pki / "server.pem"),
            "--tlskey", str(pki / "server-key.pem"))
    st, _h, body = d.request("POST", "/images/load?quiet=1", busybox_archive,
                             {"Content-Type": "application/x-tar"})
    assert st == 200, body
    tls = ["-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(pki / "ca.pem"),
           "--tlscert", str(pki / "client.pem"), "--tlskey", str(pki / "client-key.pem")]
    r = d.sampan(*tls, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n"), r
    r = d.sampan(*tls, "run", "-d", "--name", "tlsbox", "busybox", "sleep", "300")
    assert r.returncode == 0, r
    r = d.sampan(*tls, "exec", "tlsbox", "sh", "-c", "echo exec-$((6*7))")
    assert (r.returncode, r.stdout) == (0, "exec-42\n"), r
    if shutil.which("docker") is not None:
        certs = d.root / "docker-certs"
        certs.mkdir()
        for src, dst in (("ca", "ca"), ("client", "cert"), ("client-key", "key")):
            (certs / f"{dst}.pem").write_bytes((pki / f"{src}.pem").read_bytes())
        env = {"DOCKER_HOST": f"tcp://127.0.0.1:{port}", "DOCKER_TLS_VERIFY": "1",
               "DOCKER_CERT_PATH": str(certs)}
        r = d.docker("run", "-i", "--rm", "busybox", "cat", input="docker tls\n", env=env)
        assert (r.returncode, r.stdout) == (0, "docker tls\n"), r
        r = d.docker("exec", "tlsbox", "echo", "docker-exec", env=env)
        assert (r.returncode, r.stdout) == (0, "docker-exec\n"), r
        r = d.docker("exec", "-i", "tlsbox", "wc", "-c", input="123456", env=env)
        assert (r.returncode, r.stdout.strip()) == (0, "6"), r
    r = d.sampan(*tls, "run", "-i", "--rm", "busybox", "tr", "a-z", "A-Z", input="via tls\n")
    assert (r.returncode, r.stdout) == (0, "VIA TLS\n"), r
    r = d.sampan(*tls, "exec", "-i", "tlsbox", "wc", "-c", input="12345")
    assert (r.returncode, r.stdout.strip()) == (0, "5"), r
    assert d.sampan(*tls, "rm", "-f", "tlsbox").returncode == 0
    assert d.proc.poll() is None


def test_plain_tcp_and_unix_together(new_daemon):
    port = _free_port()
    d = new_daemon()
    d.start("-H", f"tcp://127.0.0.1:{port}", "-H", d.host)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /v1.45/_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
    _st, info = d.json("GET", "/info")
    assert any("without encryption" in w for w in info["Warnings"])
    r = d.sampan("-H", f"tcp://127.0.0.1:{port}", "version", "-f", "{{.Server.Os}}")
    assert r.returncode == 0 and r.stdout.strip() == "linux"


# --------------------------------------------------------------------------- memory


def test_idle_rss_and_threads(new_daemon, record_property):
    d = new_daemon(fake=False).start()  # the real image store when it is there
    time.sleep(0.3)
    start = d.rss_kib()
    for _ in range(20):
        d.request("GET", "/info")
        d.request("GET", "/images/json")
    time.sleep(0.5)
    after = d.rss_kib()
    record_property("sampand_idle_rss_kib", after)
    print(f"\nsampand idle RSS: {start} KiB at start, {after} KiB after 40 requests; "
          f"threads {d.threads()}")
    assert d.threads() == 1, "threads left running at idle"
    assert after < 40 * 1024


def test_idle_daemon_does_not_map_libcrypto(new_daemon):
    """OpenSSL's libcrypto (through hashlib, secrets, ssl) is ~2–3.5 MiB of resident memory;
    an idle daemon must not have loaded it: ids come from os.urandom, the graph and the registry
    client load it when a request needs them."""
    d = new_daemon(fake=False).start()
    time.sleep(0.3)
    d.request("GET", "/_ping")
    d.request("GET", "/containers/json?all=1")
    maps = Path(f"/proc/{d.pid}/maps").read_text()
    assert "libcrypto" not in maps and "_hashlib" not in maps
