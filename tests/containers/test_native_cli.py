"""The native `sampan` (rust/cli) against the Python CLI (`python -m sampan.cli`), on the same
real daemon: the fast paths (ps, run without a terminal) must print the same bytes, send the
same create requests and exit with the same codes; everything else must reach Python with the
same arguments (SAMPAN_CLI_TRACE=1 makes the native client say which path it took)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest
from daemonlib import REPO, _pythonpath

TRACE_NATIVE = "sampan-cli: native"
TRACE_PYTHON = "sampan-cli: python"


def _is_native(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"\x7fELF" and os.access(p, os.X_OK)
    except OSError:
        return False


def native_binary() -> tuple[Path, bool]:
    """The native client and whether it is the installed one: the `sampan` pip put in this
    interpreter's scripts directory (CI: `pip install ./[test]`), else a developer's
    `cargo build --release -p sampan-cli`."""
    installed = Path(sysconfig.get_path("scripts")) / "sampan"
    if _is_native(installed):
        return installed, True
    built = REPO / "target" / "release" / "sampan"
    if _is_native(built):
        return built, False
    pytest.fail(f"no native sampan: {installed} is not one (pip install ./ builds it) and there "
                f"is no {built} (cargo build --release -p sampan-cli)")


@pytest.fixture(scope="module")
def native():
    return native_binary()


@pytest.fixture
def work(tmp_path):
    # not the repository: `python -m` would find python/sampan through the current directory
    return tmp_path


def _env(sd, host: str | None, extra: dict | None) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = _pythonpath()
    e.pop("SAMPAN_CLI_TRACE", None)
    e.pop("SAMPAN_PYTHON", None)
    e["SAMPAN_HOST"] = host or sd.host
    e.update(extra or {})
    return e


def run_native(native, sd, *args, host=None, env=None, cwd=None, input=None, timeout=60):
    binary, installed = native
    e = _env(sd, host, env)
    if not installed:
        # no sampand beside target/release/sampan to read the interpreter from
        e.setdefault("SAMPAN_PYTHON", sys.executable)
    return subprocess.run([str(binary), *args], env=e, cwd=cwd, input=input,
                          capture_output=True, timeout=timeout, check=False)


def run_python(sd, *args, host=None, env=None, cwd=None, input=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "sampan.cli", *args], env=_env(sd, host, env),
                          cwd=cwd, input=input, capture_output=True, timeout=timeout,
                          check=False)


def outcome(r: subprocess.CompletedProcess) -> tuple[int, bytes, bytes]:
    return r.returncode, r.stdout, r.stderr


def same_output(native, sd, work, *args, tries=6, **kw):
    """Both CLIs' (code, stdout, stderr) for `args`, equal. ps prints "N seconds ago": a pair
    of calls that straddles a second may differ there, so a few tries are allowed; output that
    differs for another reason differs every time."""
    for _ in range(tries):
        a = outcome(run_native(native, sd, *args, cwd=work, **kw))
        b = outcome(run_python(sd, *args, cwd=work, **kw))
        if a == b:
            return a
    assert a == b, args
    return a


def traced(native, sd, work, *args, **kw) -> str:
    r = run_native(native, sd, *args, cwd=work, env={"SAMPAN_CLI_TRACE": "1"}, **kw)
    return r.stderr.decode()


# --------------------------------------------------------------------------- ps


@pytest.fixture(scope="module")
def some_containers(sd, native):
    """Containers in different states, made with the Python CLI."""
    py = [sys.executable, "-m", "sampan.cli"]
    e = _env(sd, None, None)

    def cli(*a):
        r = subprocess.run([*py, *a], env=e, capture_output=True, text=True, check=False,
                           cwd="/", timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    ids = [cli("run", "-d", "--name", "nc-up", "-l", "k=v", "busybox", "sleep", "300"),
           cli("create", "--name", "nc-created", "--expose", "90", "busybox", "echo",
               "a command longer than twenty characters, with \"quotes\" and é"),
           cli("run", "-d", "--name", "nc-exit3", "busybox", "sh", "-c", "exit 3")]
    cli("run", "--name", "nc-exit0", "busybox", "true")
    cli("wait", "nc-exit3")
    yield ids
    for n in ("nc-up", "nc-created", "nc-exit3", "nc-exit0"):
        sd.request("DELETE", f"/containers/{n}?force=1")


QUIET = [["ps", "-aq"], ["ps", "-a", "-q", "--no-trunc"], ["ps", "--latest", "-q"],
         ["ps", "--quiet"], ["ps", "--last=2", "-q"]]
TABLES = [["ps"], ["ps", "-a"], ["ps", "--all", "--no-trunc"], ["ps", "-l"], ["ps", "-n", "2"],
          ["ps", "-n2", "-a"], ["ps", "--last=3"], ["ps", "-n", "0"], ["ps", "-al", "-n", "5"]]


@pytest.mark.parametrize("args", QUIET)
def test_ps_quiet_same_as_python(native, sd, work, some_containers, args):
    code, out, _err = same_output(native, sd, work, *args)
    assert code == 0 and len(out.split()) >= 1
    assert TRACE_NATIVE + " ps" in traced(native, sd, work, *args)


def _frozen(rows: list[dict]) -> list[dict]:
    """The daemon's list with times that print the same for a while (the CLIs print "N
    seconds ago" from their own clocks) and the corners of the table added."""
    now = int(time.time())
    out = []
    for i, r in enumerate(rows):
        r = dict(r, Created=now - 3 * 86400 - i * 7200)
        r["Status"] = r["Status"].replace("seconds", "days").replace("second", "days")
        out.append(r)
    out.append({"Id": "sha256:" + "ab" * 32, "Names": ["/x", "//y"], "Image": None,
                "Command": "", "Created": 0, "Status": "", "Labels": {},
                "Ports": [{"PrivatePort": 53, "Type": "udp"},
                          {"PrivatePort": 80, "PublicPort": 8080, "IP": "127.0.0.1",
                           "Type": "tcp"},
                          {"PrivatePort": 53, "PublicPort": 5353, "Type": "tcp"}]})
    out.append({"Id": "c" * 64, "Names": [], "Image": "ünïcode/image:tag",
                "Command": "x" * 19 + "é" + "\t\"", "Created": now - 400 * 86400,
                "Status": "Up 13 months"})
    out.append({"Id": "d" * 64, "Image": "i", "Command": "\u00e9" * 21,
                "Created": now - 90, "Status": "Up About a minute", "Ports": []})
    return out


@pytest.mark.parametrize("args", TABLES)
def test_ps_table_same_as_python(native, sd, work, tmp_path, some_containers, args):
    """Both CLIs given the same (frozen) answer of the daemon print the same bytes and send
    the same request."""
    rows = _frozen(sd.json("GET", "/containers/json?all=1")[1])
    canned = _Canned(tmp_path / "canned.sock", 200, json.dumps(rows).encode())
    a, b = canned.both(native, sd, args, work)
    assert a.stderr.decode() == TRACE_NATIVE + " ps\n"
    assert (a.returncode, a.stdout) == (b.returncode, b.stdout) and b.stderr == b""
    assert a.stdout.startswith(b"CONTAINER ID   ") and b"3 days ago" in a.stdout
    assert len(canned.seen) == 2 and canned.seen[0] == canned.seen[1]


@pytest.mark.parametrize("form", [["-H", "{h}"], ["--host={h}"], ["-H{h}"], ["--host", "{p}"]])
def test_host_flag_wins_over_the_environment(native, sd, work, tmp_path, form):
    canned = _Canned(tmp_path / "canned.sock", 200, b"[]")
    flags = [f.format(h=f"unix://{canned.path}", p=canned.path) for f in form]
    try:
        a = run_native(native, sd, *flags, "ps", "-q", cwd=work, env={"SAMPAN_CLI_TRACE": "1"})
        b = run_python(sd, *flags, "ps", "-q", cwd=work)
    finally:
        canned.close()
    assert a.stderr == TRACE_NATIVE.encode() + b" ps\n"
    assert (a.returncode, a.stdout) == (b.returncode, b.stdout) == (0, b"")
    assert len(canned.seen) == 2 and canned.seen[0] == canned.seen[1]


def test_ps_shows_the_states(native, sd, work, some_containers):
    out = run_native(native, sd, "ps", "-a", "--no-trunc", cwd=work).stdout.decode()
    for cid in some_containers:
        assert cid in out
    assert "Exited (3)" in out and "Up " in out and "Created" in out
    assert '"echo a command longer than twenty characters, with \\"quotes\\" and é"' in out
    short = run_native(native, sd, "ps", "-a", cwd=work).stdout.decode()
    assert '"echo a command long…"' in short


def test_ps_no_daemon(native, sd, work, tmp_path):
    host = f"unix://{tmp_path}/nothing.sock"
    code, _out, err = same_output(native, sd, work, "ps", host=host)
    assert code == 125 and b"Cannot connect to the Sampan daemon at " + host.encode() in err


@pytest.mark.parametrize("args", [["ps", "--format", "{{.Names}}"], ["ps", "-s"],
                                  ["ps", "-f", "status=exited", "-a"], ["ps", "--help"],
                                  ["--version"], ["images"]])
def test_other_forms_go_to_python(native, sd, work, some_containers, args):
    same_output(native, sd, work, *args)
    assert TRACE_PYTHON in traced(native, sd, work, *args)


# --------------------------------------------------------------------------- run


def test_run_rm_echo(native, sd, work):
    args = ["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; echo é"]
    code, out, err = same_output(native, sd, work, *args)
    assert (code, out, err) == (0, "out\né\n".encode(), b"err\n")
    assert TRACE_NATIVE + " run" in traced(native, sd, work, *args)


@pytest.mark.parametrize("args,code", [
    (["busybox", "true"], 0),
    (["busybox", "sh", "-c", "exit 3"], 3),
    (["busybox", "no-such-command"], 127),
    (["busybox", "/etc/passwd"], 126),
    (["busybox", "/etc"], 126),
    (["-d", "busybox", "no-such-command"], 127),
])
def test_run_exit_codes(native, sd, work, args, code):
    before = {c["Id"] for c in sd.json("GET", "/containers/json?all=1")[1]}
    got = same_output(native, sd, work, "run", "--rm", *args)
    assert got[0] == code, got
    after = {c["Id"] for c in sd.json("GET", "/containers/json?all=1")[1]}
    assert after <= before  # --rm removed them


def test_run_name_conflict_is_125(native, sd, work):
    r = run_python(sd, "run", "--name", "nc-taken", "busybox", "true", cwd=work)
    assert r.returncode == 0, r.stderr
    try:
        code, _out, err = same_output(native, sd, work, "run", "--name", "nc-taken", "busybox",
                                      "true")
        assert code == 125 and b"Conflict" in err
    finally:
        sd.request("DELETE", "/containers/nc-taken?force=1")


def test_run_detached_prints_the_id(native, sd, work):
    r = run_native(native, sd, "run", "-d", "--name", "nc-detached", "busybox", "sleep", "30",
                   cwd=work)
    try:
        assert r.returncode == 0 and r.stderr == b""
        cid = r.stdout.decode()
        assert cid.endswith("\n") and len(cid) == 65
        info = sd.json("GET", "/containers/nc-detached/json")[1]
        assert info["Id"] == cid.strip() and info["State"]["Running"]
    finally:
        sd.request("DELETE", "/containers/nc-detached?force=1")


FLAGS = ["-e", "A=1", "--env=B", "-eC=3", "-w", "/tmp", "-u", "1:1", "-h", "box",
         "-l", "a=1", "--label", "b", "-l", "a=3", "--network", "none", "--entrypoint", "sh"]


def test_run_flags_make_the_same_container(native, sd, work):
    """Config and HostConfig of containers made by each CLI with the same flags."""
    cmd = ["busybox", "-c", "echo $A $B $C $(pwd) $(id -u):$(id -g) $(hostname)"]
    try:
        a = run_native(native, sd, "run", "--name", "nc-flags-n", *FLAGS, *cmd, cwd=work)
        b = run_python(sd, "run", "--name", "nc-flags-p", *FLAGS, *cmd, cwd=work)
        assert outcome(a) == outcome(b)
        assert a.stdout == b"1 3 /tmp 1:1 box\n"  # -e B: not in the environment here
        na = sd.json("GET", "/containers/nc-flags-n/json")[1]
        pa = sd.json("GET", "/containers/nc-flags-p/json")[1]
        assert json.dumps(na["Config"]) == json.dumps(pa["Config"])
        assert na["HostConfig"] == pa["HostConfig"]
        assert list(na["Config"]["Labels"].items()) == [("a", "3"), ("b", "")]
        assert na["HostConfig"]["NetworkMode"] == "none"
    finally:
        for n in ("nc-flags-n", "nc-flags-p"):
            sd.request("DELETE", f"/containers/{n}?force=1")


class _Canned:
    """A unix socket that records each request (request line and body) and gives one answer
    to all: what a CLI sends, and what it prints for a given answer."""

    def __init__(self, path: Path, status: int, body: bytes):
        self.path = path
        self.status = status
        self.body = body
        self.seen: list[tuple[bytes, bytes]] = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(8)
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                head, _, body = buf.partition(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        n = int(v)
                while len(body) < n:
                    body += conn.recv(65536)
                self.seen.append((head.split(b"\r\n")[0], body))
                conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (self.status, len(self.body), self.body))

    def close(self) -> None:
        self.srv.close()

    def both(self, native, sd, args, cwd):
        """The native CLI (traced) then the Python one, each given `args` against this
        socket; closed afterwards."""
        host = f"unix://{self.path}"
        try:
            a = run_native(native, sd, *args, host=host, cwd=cwd, env={"SAMPAN_CLI_TRACE": "1"})
            b = run_python(sd, *args, host=host, cwd=cwd)
        finally:
            self.close()
        return a, b


@pytest.mark.parametrize("args", [
    ["busybox"],
    ["--rm", "busybox", "echo", "x"],
    ["-d", "--rm", "--name", "a b/é", "busybox", "sleep", "1"],
    FLAGS + ["busybox", "-c", "true"],
    ["--entrypoint", "", "--net=host", "--workdir=/", "--user", "0", "--hostname=h",
     "busybox", "echo", "\t\"\\\x01é😀"],
    ["-l", "z=1", "-l", "y", "-l", "z", "--", "busybox", "--rm", "-e"],
])
def test_create_request_is_byte_identical(native, sd, work, tmp_path, args):
    rec = _Canned(tmp_path / "rec.sock", 500, b'{"message": "recorded"}')
    host = f"unix://{rec.path}"
    try:
        a = run_native(native, sd, "run", *args, host=host, cwd=work)
        b = run_python(sd, "run", *args, host=host, cwd=work)
    finally:
        rec.close()
    assert outcome(a) == outcome(b) == (125, b"", b"Error response from daemon: recorded\n")
    assert len(rec.seen) == 2
    assert rec.seen[0] == rec.seen[1]
    assert rec.seen[0][0].startswith(b"POST /v1.45/containers/create")


def test_signals_are_proxied(native, sd, work):
    script = ('trap "echo got TERM; exit 7" TERM; trap "echo got INT; exit 8" INT; echo ready; '
              'sleep 100 & wait; wait')
    binary, installed = native
    for sig, code, word in ((signal.SIGTERM, 7, b"got TERM"), (signal.SIGINT, 8, b"got INT")):
        for argv in ([str(binary)], [sys.executable, "-m", "sampan.cli"]):
            e = _env(sd, None, None)
            if not installed:
                e["SAMPAN_PYTHON"] = sys.executable
            p = subprocess.Popen([*argv, "run", "--rm", "busybox", "sh", "-c", script], env=e,
                                 cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                assert p.stdout.readline() == b"ready\n"
                p.send_signal(sig)
                out, err = p.communicate(timeout=30)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            assert (p.returncode, out, err) == (code, word + b"\n", b""), argv


# --------------------------------------------------------------------------- start stop kill rm


@pytest.mark.parametrize("args", [
    ["start", "a", "b"], ["stop", "a", "-t", "3", "--signal=HUP"], ["stop", "--time=0", "a"],
    ["kill", "a"], ["kill", "-s", "USR1", "a", "b"], ["rm", "-fv", "a"], ["rm", "a", "--volumes"],
    ["rm", "--", "-a", "x?y"],
])
def test_lifecycle_requests_are_identical(native, sd, work, tmp_path, args):
    rec = _Canned(tmp_path / "rec.sock", 204, b"")
    a, b = rec.both(native, sd, args, work)
    assert a.stderr == b"sampan-cli: native each\n"
    assert (a.returncode, a.stdout, b.stderr) == (b.returncode, b.stdout, b"")
    assert a.returncode == 0
    n = len(rec.seen) // 2
    assert n and rec.seen[:n] == rec.seen[n:]


def test_lifecycle_same_as_python(native, sd, work):
    """The same verbs on twin containers (and a missing one): same output with the names
    swapped, same exit codes, same resulting states."""
    for n in ("lc-n", "lc-p"):
        r = run_python(sd, "run", "-d", "--name", n, "busybox", "sh", "-c",
                       "trap 'exit 5' USR1; sleep 100 & wait", cwd=work)
        assert r.returncode == 0, r.stderr
    ids = [sd.json("GET", f"/containers/{n}/json")[1]["Id"].encode() for n in ("lc-n", "lc-p")]

    def swapped(out: bytes) -> bytes:
        return out.replace(b"lc-n", b"lc-p").replace(ids[0], ids[1]).replace(ids[0][:12],
                                                                              ids[1][:12])
    try:
        for verb, then in ((["kill", "-s", "USR1"], "exited"), (["start"], "running"),
                           (["stop", "-t", "0"], "exited"), (["kill"], "exited"),
                           (["rm", "-f"], None), (["rm"], None)):
            a = run_native(native, sd, *verb, "lc-n", "nc-missing", cwd=work)
            b = run_python(sd, *verb, "lc-p", "nc-missing", cwd=work)
            assert a.returncode == b.returncode == 1, verb
            assert swapped(a.stderr) == b.stderr, verb
            assert b"No such container: nc-missing" in a.stderr
            assert swapped(a.stdout) == b.stdout, verb
            if then:
                # the exits the verbs cause are recorded asynchronously
                deadline = time.monotonic() + 15
                while True:
                    sa, sb = (sd.json("GET", f"/containers/{n}/json")[1]["State"]
                              for n in ("lc-n", "lc-p"))
                    if sa["Status"] == sb["Status"] == then or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                assert sa["Status"] == then, (verb, sa)
                assert (sa["Status"], sa["ExitCode"]) == (sb["Status"], sb["ExitCode"]), verb
        assert sd.json("GET", "/containers/lc-n/json")[0] == 404
    finally:
        for n in ("lc-n", "lc-p"):
            sd.request("DELETE", f"/containers/{n}?force=1")


@pytest.mark.parametrize("args", [["start", "-a", "x"], ["stop", "-t", "x", "y"], ["kill"],
                                  ["rm", "a b"], ["rm", "é"]])
def test_lifecycle_other_forms_go_to_python(native, sd, work, args):
    if " " in args[-1] or not args[-1].isascii():
        # http.client refuses such a path: a traceback, whose frames name the launcher
        a, b = (run_native(native, sd, *args, cwd=work), run_python(sd, *args, cwd=work))
        assert (a.returncode, a.stdout) == (b.returncode, b.stdout) == (1, b"")
        assert a.stderr.splitlines()[-1] == b.stderr.splitlines()[-1]
    else:
        same_output(native, sd, work, *args)
    assert TRACE_PYTHON in traced(native, sd, work, *args)


# --------------------------------------------------------------------------- fallback


def test_interactive_run_goes_to_python(native, sd, work):
    args = ["run", "--rm", "-i", "busybox", "cat"]
    code, out, _err = same_output(native, sd, work, *args, input=b"through stdin\n")
    assert (code, out) == (0, b"through stdin\n")
    assert TRACE_PYTHON in traced(native, sd, work, *args, input=b"")


def test_missing_image_goes_to_python(native, sd, work):
    args = ["run", "--rm", "no-such-image-here", "true"]
    code, _out, err = same_output(native, sd, work, *args)
    assert code == 125 and b"No such image" in err
    t = traced(native, sd, work, *args)
    assert TRACE_NATIVE + " run" in t and TRACE_PYTHON + " (no such image)" in t


def test_tcp_host_goes_to_python(native, sd, work):
    args = ["-H", "tcp://127.0.0.1:1", "ps"]
    code, _out, _err = same_output(native, sd, work, *args)
    assert code == 125
    assert TRACE_PYTHON in traced(native, sd, work, *args)


def test_installed_client_finds_its_python(native, sd, work):
    """Without SAMPAN_PYTHON the installed client runs the interpreter of the sampand beside
    it (a developer's target/release build has none: python3 from PATH)."""
    binary, installed = native
    if not installed:
        pytest.skip("the native client is not installed (pip install ./)")
    r = run_native(native, sd, "version", "--format", "{{.Client.Version}}", cwd=work,
                   env={"SAMPAN_CLI_TRACE": "1"})
    assert r.returncode == 0 and TRACE_PYTHON.encode() in r.stderr
    assert r.stdout == run_python(sd, "version", "--format", "{{.Client.Version}}",
                                  cwd=work).stdout

