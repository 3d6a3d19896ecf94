"""Helpers for the daemon/client/CLI tests: `Daemon` runs sampand for real as a subprocess on
a temporary data root, exec root and socket, and talks to it (raw HTTP, the sampan CLI, the
docker CLI)."""

from __future__ import annotations

import atexit
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PYDIR = REPO / "python"
FAKE = "fake_images:make"


def _pythonpath(*extra: Path) -> str:
    import sampan

    parts = [str(Path(sampan.__file__).resolve().parents[1]), *map(str, extra)]
    old = os.environ.get("PYTHONPATH")
    if old:
        parts.append(old)
    return os.pathsep.join(parts)


def sampan_argv() -> list[str]:
    code = "import sys; from sampan.cli import main; sys.argv[0] = 'sampan'; main()"
    return [sys.executable, "-c", code]


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30):
        super().__init__("localhost", timeout=timeout)
        self.path_ = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path_)
        self.sock = s


_running: set[subprocess.Popen] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Daemons a dying test run did not stop (start_new_session keeps them from our signals)."""
    for p in list(_running):
        if p.poll() is None:
            p.kill()


class Daemon:
    def __init__(self, root: Path, fake: bool = True):
        self.root = root
        self.data = root / "data"
        self.exec = root / "exec"
        self.sock = self.exec / "sampan.sock"
        self.host = f"unix://{self.sock}"
        self.config = root / "daemon.json"
        if not self.config.exists():
            self.config.write_text("{}\n")
        self.fake = fake
        self.proc: subprocess.Popen | None = None
        self.logfile = root / "sampand.log"

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = _pythonpath(HERE)
        env.pop("SAMPAN_DAEMON_IMAGE_SERVICE", None)
        if self.fake:
            env["SAMPAN_DAEMON_IMAGE_SERVICE"] = FAKE
        return env

    def argv(self, *extra: str, hosts: bool = True) -> list[str]:
        args = [sys.executable, "-m", "sampan.daemon.main", "--data-root", str(self.data),
                "--exec-root", str(self.exec), "--config-file", str(self.config)]
        return args + list(extra)

    def run(self, *extra: str, timeout: float = 20) -> subprocess.CompletedProcess:
        """Run sampand in the foreground (for start-up failures)."""
        return subprocess.run(self.argv(*extra), check=False, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def start(self, *extra: str, wait_for: str | None = None) -> Daemon:
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(self.argv(*extra), env=self.env(), stdout=log,
                                         stderr=log, start_new_session=True)
        _running.add(self.proc)
        self.wait_ready(wait_for)
        return self

    def wait_ready(self, host: str | None = None, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"sampand exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if host is None:
                    st, _, _ = self.request("GET", "/_ping", timeout=2)
                    if st == 200:
                        return
                else:
                    return _wait_tcp(host, deadline)
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"sampand did not come up:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        _running.discard(self.proc)
        self.proc = None
        return rc

    # ---------------------------------------------------------------- talking to it

    def conn(self, timeout: float = 30) -> UnixHTTP:
        return UnixHTTP(str(self.sock), timeout)

    def request(self, method: str, path: str, body=None, headers=None, timeout: float = 30):
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, r.headers, data
        finally:
            c.close()

    def json(self, method: str, path: str, body=None, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        st, _h, data = self.request(method, path, body, headers)
        return st, (json.loads(data) if data.strip() else None)

    def raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Send raw bytes, return everything until the daemon closes (or the timeout)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(self.sock))
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon stopped reading: what did it answer?
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (socket.timeout, ConnectionResetError):
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    def sampan(self, *args: str, input: str | bytes | None = None, env: dict | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
        e = dict(os.environ)
        e["PYTHONPATH"] = _pythonpath()
        e["SAMPAN_HOST"] = self.host
        e.update(env or {})
        text = not isinstance(input, bytes)
        return subprocess.run(sampan_argv() + list(args), check=False, env=e, input=input,
                              capture_output=True, text=text, timeout=timeout)

    def docker(self, *args: str, env: dict | None = None, input: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
        e = dict(os.environ)
        e["DOCKER_HOST"] = self.host
        e["DOCKER_CONFIG"] = str(self.root / "docker-config")
        e.pop("DOCKER_TLS_VERIFY", None)
        e.update(env or {})
        return subprocess.run(["docker", *args], check=False, env=e, capture_output=True, text=True,
                              input=input, timeout=timeout)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return -1

    def threads(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return -1


def _wait_tcp(host: str, deadline: float) -> None:
    h, _, p = host.rpartition(":")
    while time.monotonic() < deadline:
        try:
            socket.create_connection((h, int(p)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}")


def mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def run_detached(d: Daemon, *args: str) -> str:
    """`sampan run -d ARGS` on `d`, which must succeed; the container's id."""
    r = d.sampan("run", "-d", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def inspect_container(d: Daemon, ref: str) -> dict:
    """GET /containers/REF/json on `d`, which must succeed."""
    st, doc = d.json("GET", f"/containers/{ref}/json")
    assert st == 200, doc
    return doc


def start_daemon(root: Path, archive: bytes) -> Daemon:
    """A real sampand (real graph) on `root` with the docker archive `archive` loaded.

    Lives here, not in a conftest, because test modules of different folders import it
    while pytest's `conftest` module name points at whichever folder's conftest came last."""
    d = Daemon(mkdir(root), fake=False)
    d.start()
    st, _h, body = d.request("POST", "/images/load?quiet=1", archive,
                             {"Content-Type": "application/x-tar"})
    assert st == 200 and b"Loaded image" in body, body
    return d
