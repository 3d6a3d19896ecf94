"""Both monitors (the Rust binary and the Python module) driven directly through the protocol
of docs/monitor.md, on real containers: the same inputs must give the same results."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from monitorlib import Mon, joined, read_all, rust_available  # noqa: E402

if os.geteuid() != 0:
    pytest.skip("containers need root", allow_module_level=True)

KINDS = [
    pytest.param("rust", marks=pytest.mark.skipif(
        not rust_available(), reason="no python/sampan/libexec/sampan-monitor "
                                     "(scripts/build-monitor builds it)")),
    "python",
]


@pytest.fixture
def base():
    p = Path(tempfile.mkdtemp(prefix="sampan-mon-", dir="/tmp"))
    p.chmod(0o755)
    yield p
    # Containers a failed test left running.
    root = p / "runtime"
    if root.exists():
        from sampan import _runtime
        for d in root.iterdir():
            try:
                _runtime.Container.load(d.name, str(root)).delete(True)
            except Exception:  # noqa: BLE001
                pass
    shutil.rmtree(p, ignore_errors=True)


def py_line(log: str, stream: str, t: str) -> bytes:
    """An entry exactly as Python's json module writes it (monitor.py's reference)."""
    return (json.dumps({"log": log, "stream": stream, "time": t}, separators=(",", ":"))
            + "\n").encode()


@pytest.mark.parametrize("kind", KINDS)
def test_output_log_and_exit(kind, base):
    m = Mon(kind, base, ["sh", "-c", "echo hello; echo oops >&2; printf 'no newline'; exit 3"])
    assert m.created.get("created") is True and m.created["pid"] > 0
    a = m.attach()
    st = m.start()
    assert st["pid"] == m.created["pid"] and st["monitor"] == m.monitor
    assert st["started"].endswith("Z")
    pk = read_all(a)
    assert joined(pk, 1) == b"hello\nno newline"
    assert joined(pk, 2) == b"oops\n"
    ex = m.wait_exit()
    assert ex["ExitCode"] == 3 and ex["Error"] == "" and ex["OOMKilled"] is False
    assert set(ex) == {"ExitCode", "FinishedAt", "OOMKilled", "Error"}
    entries = m.log_entries()
    got = {(e["stream"], e["log"]) for e in entries}
    assert got == {("stdout", "hello\n"), ("stderr", "oops\n"), ("stdout", "no newline")}
    raw = m.log_bytes().splitlines(keepends=True)
    for e, line in zip(entries, raw):
        assert py_line(e["log"], e["stream"], e["time"]) == line
        assert len(e["time"]) == len("2024-01-01T00:00:00.000000000Z")
    # The runtime's state is gone: the monitor deleted the container.
    assert not (m.root / m.id).exists()


@pytest.mark.parametrize("kind", KINDS)
def test_log_bytes_like_python_json(kind, base):
    # Non-ASCII, an astral character, invalid UTF-8, control characters and quotes.
    script = r"""printf 'caf\303\251 \360\237\230\200 \377\376 \001\033 "q" \\ \t end\n'"""
    m = Mon(kind, base, ["sh", "-c", script])
    m.start()
    m.wait_exit()
    line = m.log_bytes()
    e = json.loads(line)
    want = b"caf\xc3\xa9 \xf0\x9f\x98\x80 \xff\xfe \x01\x1b \"q\" \\ \t end\n".decode(
        "utf-8", "replace")
    assert e["log"] == want
    assert line == py_line(want, "stdout", e["time"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("newline", [False, True])
def test_long_lines_split_at_16k(kind, base, newline):
    # With the newline: one write of the whole line, so the monitor reads it all at once.
    m = Mon(kind, base, ["sh", "-c", "x=$(head -c 40000 /dev/zero | tr '\\0' a); echo "
                         + ('"$x"' if newline else '-n "$x"')])
    m.start()
    m.wait_exit()
    entries = m.log_entries()
    assert "".join(e["log"] for e in entries) == "a" * 40000 + ("\n" if newline else "")
    assert all(len(e["log"]) <= 16 * 1024 for e in entries)


@pytest.mark.parametrize("kind", KINDS)
def test_start_failure_codes(kind, base):
    m = Mon(kind, base, ["/no/such/binary"])
    if "error" not in m.created:
        st = m.start()
        assert "error" in st
    ex = m.wait_exit()
    assert ex["ExitCode"] == 127, ex
    assert ex["Error"]


@pytest.mark.parametrize("kind", KINDS)
def test_daemon_gone_before_start(kind, base):
    m = Mon(kind, base, ["sleep", "100"])
    assert m.created.get("created")
    pid = m.created["pid"]
    m.ctl.close()
    ex = m.wait_exit()
    assert ex["Error"], ex
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().split()[2] in "ZX"
    assert not (m.root / m.id).exists()


@pytest.mark.parametrize("kind", KINDS)
def test_stdin_once(kind, base):
    m = Mon(kind, base, ["sh", "-c", "cat; echo done"], stdin=True, stdin_once=True)
    a = m.attach()
    m.start()
    a.send(b"\x00line one\n")
    a.send(b"\x00line two\n")
    a.send(b"\x01")
    out = joined(read_all(a), 1)
    assert out == b"line one\nline two\ndone\n"
    assert m.wait_exit()["ExitCode"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_stdin_once_disconnect_closes(kind, base):
    m = Mon(kind, base, ["sh", "-c", "cat >/dev/null; echo eof"], stdin=True, stdin_once=True)
    watcher = m.attach()
    writer = m.attach()
    m.start()
    writer.send(b"\x00some input\n")
    writer.close()  # disconnects after writing: stdin closes for good
    assert joined(read_all(watcher), 1) == b"eof\n"
    assert m.wait_exit()["ExitCode"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_tty_resize_and_one_stream(kind, base):
    m = Mon(kind, base, ["sh", "-c", "stty size; tty; echo to-stderr >&2"], tty=True)
    a = m.attach()
    a.send(b"\x0233 101")
    m.start()
    pk = read_all(a)
    assert {s for s, _ in pk} == {1}
    out = joined(pk).replace(b"\r\n", b"\n")
    assert b"33 101\n" in out and b"/dev/pts/" in out and b"to-stderr" in out
    assert m.wait_exit()["ExitCode"] == 0
    assert all(e["stream"] == "stdout" for e in m.log_entries())


@pytest.mark.parametrize("kind", KINDS)
def test_tty_stdin(kind, base):
    m = Mon(kind, base, ["sh", "-c", "read x; echo got:$x"], tty=True, stdin=True,
            stdin_once=True)
    a = m.attach()
    m.start()
    a.send(b"\x00hello\n")
    out = joined(read_all(a))
    assert b"got:hello" in out
    assert m.wait_exit()["ExitCode"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_slow_client_dropped_container_never_waits(kind, base):
    # 8 MiB of output: a client that never reads is dropped past its 1 MiB buffer, a reading
    # client gets all of it, the log has all of it. Paced, so that the reading client keeps
    # up even on a loaded machine (one that falls 1 MiB behind is dropped too, by design).
    n = 8 * 1024 * 1024
    m = Mon(kind, base, ["sh", "-c", "i=0; while [ $i -lt 128 ]; do head -c 65536 /dev/zero "
                                     "| tr '\\0' x; usleep 20000; i=$((i+1)); done; echo"])
    lazy = m.attach()
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader = m.attach()
    m.start()
    got = joined(read_all(reader), 1)
    assert len(got) == n + 1
    ex = m.wait_exit(60)
    assert ex["ExitCode"] == 0
    total = sum(len(e["log"]) for e in m.log_entries())
    assert total == n + 1
    lazy_got = joined(read_all(lazy))
    assert len(lazy_got) < n  # dropped, not fed everything


@pytest.mark.parametrize("kind", KINDS)
def test_any_number_of_clients_see_output_from_connect(kind, base):
    m = Mon(kind, base, ["sh", "-c", "echo first; read x; echo second"], stdin=True)
    a = m.attach()
    m.start()
    assert a.recv(65536) == b"\x01first\n"
    late = m.attach()
    time.sleep(0.2)  # let the monitor accept it before the next output
    a.send(b"\x00go\n")
    out_late = joined(read_all(late))
    assert out_late == b"second\n"
    assert joined(read_all(a)) == b"second\n"
    m.wait_exit()


@pytest.mark.parametrize("kind", KINDS)
def test_rotation(kind, base):
    log = {"driver": "json-file", "max_size": 4000, "max_file": 3}
    m = Mon(kind, base, ["sh", "-c", "i=0; while [ $i -lt 400 ]; do echo line-$i; "
                                     "i=$((i+1)); done"], log=log)
    m.start()
    assert m.wait_exit()["ExitCode"] == 0
    name = f"{m.id}-json.log"
    files = sorted(p.name for p in m.dir.glob(name + "*"))
    assert files == [name, name + ".1", name + ".2"], files
    lines = []
    for f in (name + ".2", name + ".1", name):  # oldest first
        data = (m.dir / f).read_bytes()
        assert len(data) <= 4000
        lines += [json.loads(ln)["log"] for ln in data.splitlines()]
    # The newest lines, contiguous, ending with the last one; older ones rotated away.
    assert lines[-1] == "line-399\n"
    first = int(lines[0].strip().split("-")[1])
    assert first > 0
    assert lines == [f"line-{i}\n" for i in range(first, 400)]


@pytest.mark.parametrize("kind", KINDS)
def test_log_path_outside_the_container_dir(kind, base):
    """monitor.json's log path (the daemon's --log-root): the log and its rotations go there,
    nothing into CDIR."""
    logdir = base / "logroot" / "c1"
    logdir.mkdir(parents=True)
    path = logdir / "c1-json.log"
    log = {"driver": "json-file", "max_size": 2000, "max_file": 3, "path": str(path)}
    m = Mon(kind, base, ["sh", "-c", "i=0; while [ $i -lt 200 ]; do echo line-$i; "
                                     "i=$((i+1)); done"], log=log)
    m.start()
    assert m.wait_exit()["ExitCode"] == 0
    assert not list(m.dir.glob("*json.log*"))
    files = sorted(p.name for p in logdir.iterdir())
    assert files == ["c1-json.log", "c1-json.log.1", "c1-json.log.2"], files
    lines = []
    for f in ("c1-json.log.2", "c1-json.log.1", "c1-json.log"):
        data = (logdir / f).read_bytes()
        assert len(data) <= 2000
        lines += [json.loads(ln)["log"] for ln in data.splitlines()]
    first = int(lines[0].strip().split("-")[1])
    assert first > 0 and lines == [f"line-{i}\n" for i in range(first, 200)]


@pytest.mark.parametrize("kind", KINDS)
def test_log_path_missing_dir_is_reported(kind, base):
    """A log directory that is gone (a wiped tmpfs the daemon did not remake): both monitors
    answer the same error, record it, and make no container."""
    path = base / "gone" / "c-json.log"
    m = Mon(kind, base, ["true"], log={"driver": "json-file", "max_size": 0, "max_file": 1,
                                       "path": str(path)})
    assert m.created == {"error": "open log: No such file or directory (os error 2)"}
    ex = m.wait_exit()
    assert ex["Error"] == m.created["error"]
    assert not (m.root / m.id).exists()


@pytest.mark.parametrize("kind", KINDS)
def test_log_driver_none(kind, base):
    m = Mon(kind, base, ["echo", "nothing kept"], log={"driver": "none"})
    a = m.attach()
    m.start()
    assert joined(read_all(a)) == b"nothing kept\n"
    m.wait_exit()
    assert not (m.dir / f"{m.id}-json.log").exists() or \
        (m.dir / f"{m.id}-json.log").stat().st_size == 0


@pytest.mark.parametrize("kind", KINDS)
def test_oom_killed(kind, base):
    limit = 16 * 1024 * 1024
    m = Mon(kind, base, ["sh", "-c", "tail /dev/zero"],
            linux={"resources": {"memory": {"limit": limit, "swap": limit}}})
    m.start()
    ex = m.wait_exit(60)
    assert ex["OOMKilled"] is True, ex
    assert ex["ExitCode"] == 137


@pytest.mark.parametrize("kind", KINDS)
def test_exec_mode(kind, base):
    m = Mon(kind, base, ["sleep", "60"])
    m.start()
    try:
        for tty in (False, True):
            eid = f"e{int(tty)}" + "0" * 10
            proc = {"args": ["sh", "-c", "echo in-exec; echo err >&2; exit 5"], "cwd": "/",
                    "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 0, "gid": 0},
                    "terminal": tty}
            (m.dir / f"exec-{eid}.json").write_text(json.dumps(
                {"process": proc, "tty": tty, "stdin": False}))
            ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            from monitorlib import PKG_PATH, monitor_cmd
            env = dict(os.environ, PYTHONPATH=PKG_PATH)
            p = subprocess.Popen(monitor_cmd(kind) + ["exec", str(m.dir), m.id, str(m.root),
                                                      eid, str(theirs.fileno())],
                                 pass_fds=[theirs.fileno()], start_new_session=True, env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            theirs.close()
            p.wait()
            ctl.settimeout(30)
            ready = json.loads(ctl.recv(65536))
            assert ready.get("ready") is True and ready["monitor"] > 0
            c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            c.settimeout(30)
            c.connect(str(m.dir / f"exec-{eid}.sock"))
            ctl.send(b'{"start": true}')
            st = json.loads(ctl.recv(65536))
            assert st.get("pid", 0) > 0, st
            pk = read_all(c)
            if tty:
                assert b"in-exec" in joined(pk, 1) and b"err" in joined(pk, 1)
            else:
                assert joined(pk, 1) == b"in-exec\n" and joined(pk, 2) == b"err\n"
            exit_path = m.dir / f"exec-{eid}.exit.json"
            for _ in range(500):
                if exit_path.exists():
                    break
                time.sleep(0.01)
            ex = json.loads(exit_path.read_text())
            assert ex["ExitCode"] == 5 and not ex["Error"]
        # The container itself is still running.
        assert not (m.dir / "exit.json").exists()
    finally:
        from sampan import _runtime
        _runtime.Container.load(m.id, str(m.root)).kill(9)
    assert m.wait_exit()["ExitCode"] == 137


def start_exec(m: Mon, kind: str, eid: str, proc: dict, tty: bool, stdin: bool):
    """An exec monitor up to "ready"; returns (control socket, connected client)."""
    from monitorlib import PKG_PATH, monitor_cmd

    (m.dir / f"exec-{eid}.json").write_text(json.dumps(
        {"process": proc, "tty": tty, "stdin": stdin}))
    ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = dict(os.environ, PYTHONPATH=PKG_PATH)
    p = subprocess.Popen(monitor_cmd(kind) + ["exec", str(m.dir), m.id, str(m.root), eid,
                                              str(theirs.fileno())],
                         pass_fds=[theirs.fileno()], start_new_session=True, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    theirs.close()
    p.wait()
    ctl.settimeout(30)
    assert json.loads(ctl.recv(65536)).get("ready") is True
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c.settimeout(30)
    c.connect(str(m.dir / f"exec-{eid}.sock"))
    return ctl, c


@pytest.mark.parametrize("kind", KINDS)
def test_exec_stdin_sent_before_start(kind, base):
    """docker exec -i: the client's input may arrive before the process runs; none is lost,
    and its end is the process's EOF."""
    m = Mon(kind, base, ["sleep", "60"])
    m.start()
    try:
        proc = {"args": ["sh", "-c", "cat; echo end"], "cwd": "/", "env": ["PATH=/bin"],
                "user": {"uid": 0, "gid": 0}}
        ctl, c = start_exec(m, kind, "s" + "0" * 11, proc, False, True)
        c.send(b"\x00early input\n")
        c.send(b"\x01")
        time.sleep(0.2)  # the monitor has read both before it is told to start
        ctl.send(b'{"start": true}')
        assert json.loads(ctl.recv(65536)).get("pid", 0) > 0
        assert joined(read_all(c), 1) == b"early input\nend\n"
    finally:
        from sampan import _runtime
        _runtime.Container.load(m.id, str(m.root)).kill(9)
    m.wait_exit()


@pytest.mark.parametrize("kind", KINDS)
def test_run_input_before_start_and_resize_order(kind, base):
    """Input sent while the monitor waits for the start reaches the process; a resize sent on
    a connection of its own is applied before stdin another client sends afterwards."""
    m = Mon(kind, base, ["sh", "-c", "read a; stty size; read b; stty size; echo $a-$b"],
            tty=True, stdin=True)
    a = m.attach()
    a.send(b"\x00one\n")
    time.sleep(0.2)
    m.start()
    out = b""
    while b"\n" not in out.replace(b"one\r\n", b"") or b" " not in out:
        out += a.recv(65536)[1:]
    r = m.attach()
    r.send(b"\x0211 22")
    r.close()
    a.send(b"\x00two\n")
    out += joined(read_all(a))
    text = out.replace(b"\r\n", b"\n")
    assert b"11 22\none-two" in text, text
    m.wait_exit()


@pytest.mark.parametrize("kind", KINDS)
def test_output_held_by_survivors_of_the_init(kind, base):
    """Without a pid namespace of its own, a background process outlives the init and keeps
    its stdout open: the monitor still finishes (what is left of the container is killed, as
    runc does at delete) and records the init's status."""
    namespaces = [{"type": t} for t in ("network", "ipc", "uts", "mount")]
    m = Mon(kind, base, ["sh", "-c", "sleep 300 & echo bye; exit 4"],
            linux={"namespaces": namespaces})
    a = m.attach()
    m.start()
    ex = m.wait_exit(15)
    assert ex["ExitCode"] == 4
    assert joined(read_all(a), 1) == b"bye\n"
    assert [e["log"] for e in m.log_entries()] == ["bye\n"]
