"""Faults and load. sampand is killed with SIGKILL at random moments of create, start, run,
stop, restart and rm (seeded: SAMPAN_FAULT_SEED replays a failure), then restarted: the store must
be consistent — every listed container inspects, starts and removes; no directory without a
record; a container is running exactly when its monitor lives — and after removing everything no
mount, cgroup, monitor or runtime state is left. Then 50 concurrent runs through the API and a
few through the sampan CLI, all with the right output and exit code, and nothing left."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import pytest
from daemonlib import start_daemon
from interactive import MONITORS
from leaks import assert_clean, monitors_for, mounts_under
from sampan.containers import monitorbin

SEED = int(os.environ.get("SAMPAN_FAULT_SEED", "20261127"))
ITERATIONS = int(os.environ.get("SAMPAN_FAULT_ITERATIONS", "30"))


def body(cmd: str, volume: bool = False) -> dict:
    b = {"Image": "busybox", "Cmd": ["sh", "-c", cmd], "HostConfig": {"NetworkMode": "none"}}
    if volume:  # an anonymous volume: made at create, removed by rm -v
        b["Volumes"] = {"/data": {}}
    return b


def ids_of(d) -> set[str]:
    return {c["Id"] for c in d.json("GET", "/containers/json?all=1")[1]}


def request_quietly(d, method, path, data=None):
    """A request the daemon may die in the middle of: its answer, or the error."""
    try:
        if data is not None:
            return d.json(method, path, data)
        return d.request(method, path)[:1]
    except (OSError, ValueError) as e:  # connection reset, a half answer
        return ("died", str(e))


def check_consistent(d, seen: set[str]) -> None:
    """After a restart: the store and the host agree."""
    # a removal the crash interrupted is finished by the restarted daemon
    deadline = time.monotonic() + 30
    while True:
        st, lst = d.json("GET", "/containers/json?all=1")
        assert st == 200
        if not any(c["State"] == "removing" for c in lst) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    listed = {c["Id"] for c in lst}
    seen |= listed
    # no directory without a record (a create cut short is cleaned up at start)
    dirs = set(os.listdir(d.data / "containers"))
    assert dirs == listed, (dirs - listed, listed - dirs)
    mons = {}
    for pid in monitors_for(d.data / "containers"):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        for cid in listed:
            if any(cid.encode() in a for a in cmd):
                mons.setdefault(cid, []).append(pid)
    used = set()
    for cid in listed:
        st, ins = d.json("GET", f"/containers/{cid}/json")
        assert st == 200, ins
        used |= {m["Name"] for m in ins["Mounts"] if m.get("Type") == "volume"}
        state = ins["State"]
        assert state["Status"] in ("created", "running", "exited"), state
        if state["Running"]:
            assert os.path.exists(f"/proc/{state['Pid']}"), state
            assert len(mons.get(cid, [])) == 1, (cid, mons.get(cid))
        else:
            # a start cut short never leaves a process behind a record that says stopped
            assert not mons.get(cid), (cid, state, mons.get(cid))
            assert state["Pid"] == 0
    # every container here is removed with -v: an anonymous volume nobody uses is a leak of
    # a create or rm the crash cut short
    vols = {v["Name"] for v in d.json("GET", "/volumes")[1]["Volumes"] or []}
    assert vols <= used, ("volumes left behind", vols - used)


@pytest.mark.parametrize("monitor", MONITORS)
def test_kill9_at_random_points(croot, busybox_archive, monkeypatch, monitor):
    if monitor == "python":
        monkeypatch.setenv("SAMPAN_MONITOR", "python")
    elif not os.access(monitorbin.BINARY, os.X_OK):
        pytest.skip("the Rust monitor is not built")
    else:
        monkeypatch.delenv("SAMPAN_MONITOR", raising=False)
    rng = random.Random(SEED)
    d = start_daemon(croot / f"faults-{monitor}", busybox_archive)
    seen: set[str] = set()
    watcher = IdWatcher(d)
    watcher.start()
    try:
        # how long each operation takes here, so the kills land inside them
        t = time.monotonic()
        st, r = d.json("POST", "/containers/create", body("sleep 100"))
        t_create = time.monotonic() - t
        t = time.monotonic()
        assert d.request("POST", f"/containers/{r['Id']}/start")[0] == 204
        t_start = time.monotonic() - t
        t = time.monotonic()
        assert d.request("DELETE", f"/containers/{r['Id']}?force=1")[0] == 204
        t_rm = time.monotonic() - t
        log = []
        for i in range(ITERATIONS):
            op = rng.choice(["create", "start", "run", "rm", "rm-running", "stop", "restart"])
            # something to act on
            existing = list(ids_of(d))
            if op in ("start", "rm", "rm-running", "stop", "restart") or not existing:
                st, r = d.json("POST", "/containers/create",
                               body(f"echo it-{i}; sleep 100", volume=i % 2 == 0))
                assert st == 201, (log[-1:], r, d.log()[-6000:])
                target = r["Id"]
                if op in ("rm-running", "stop", "restart"):
                    assert d.request("POST", f"/containers/{target}/start")[0] == 204
            span = {"create": t_create, "start": t_start, "run": t_create + t_start,
                    "rm": t_rm, "rm-running": t_rm + t_start, "stop": t_rm,
                    "restart": t_rm + t_start}[op]
            delay = rng.uniform(0, span * 1.3)
            log.append(f"{i}: {op} killed after {delay * 1000:.0f} ms")

            def act(op=op, i=i, target=locals().get("target")):
                if op == "create":
                    request_quietly(d, "POST", "/containers/create",
                                    body(f"echo it-{i}", volume=True))
                elif op == "start":
                    request_quietly(d, "POST", f"/containers/{target}/start")
                elif op == "run":
                    res = request_quietly(d, "POST", "/containers/create",
                                          body(f"echo it-{i}; sleep 100", volume=True))
                    if res[0] == 201:
                        request_quietly(d, "POST", f"/containers/{res[1]['Id']}/start")
                elif op in ("stop", "restart"):
                    request_quietly(d, "POST", f"/containers/{target}/{op}?t=0")
                else:
                    request_quietly(d, "DELETE", f"/containers/{target}?force=1&v=1")

            th = threading.Thread(target=act)
            th.start()
            time.sleep(delay)
            d.stop(signal.SIGKILL)
            th.join(30)
            d.start()
            try:
                check_consistent(d, seen)
            except AssertionError as e:
                raise AssertionError(f"after {log[-1]} (seed {SEED}): {e}\n"
                                     f"sampand's log ends:\n{d.log()[-6000:]}") from e
            # now and then, everything listed must start and remove
            if i % 5 == 4:
                for cid in ids_of(d):
                    st = d.json("GET", f"/containers/{cid}/json")[1]["State"]
                    if not st["Running"]:
                        r = d.request("POST", f"/containers/{cid}/start")
                        assert r[0] == 204, (log[-1], cid, r, d.log()[-6000:])
                    assert d.request("DELETE", f"/containers/{cid}?force=1&v=1")[0] == 204
        for cid in ids_of(d):
            assert d.request("DELETE", f"/containers/{cid}?force=1&v=1")[0] == 204
        assert ids_of(d) == set()
        # anonymous volumes of removed containers, and of creates cut short, are gone
        assert d.json("GET", "/volumes")[1]["Volumes"] in (None, []), log
        assert_clean(d, seen | watcher.stop(), d.pid)
        text = d.log()
        print(f"\nfault points: {log}\nrecovered at restart: "
              f"{text.count('adopted the container')} adopted, "
              f"{text.count('cleaned up a start cut short')} half-started cleaned, "
              f"{text.count('remains of an unfinished create')} half-created removed, "
              f"{text.count('detached the mounts a crash left')} mounted probes removed")
    finally:
        watcher.stop()
        if d.proc is not None:
            for cid in ids_of(d):
                d.request("DELETE", f"/containers/{cid}?force=1")
        d.stop()


class IdWatcher(threading.Thread):
    """Every container directory that ever appears under the data root, even for a moment (a
    create cut short is cleaned up at restart): the ids whose cgroups must be gone at the
    end."""

    def __init__(self, d):
        super().__init__(daemon=True)
        self.path = d.data / "containers"
        self.ids: set[str] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.ids.update(n for n in os.listdir(self.path) if len(n) == 64)
            except OSError:
                pass
            time.sleep(0.01)

    def stop(self) -> set[str]:
        self.done.set()
        self.join()
        return self.ids


# ---------------------------------------------------------------- concurrency


def run_api(d, i: int, results: dict) -> None:
    try:
        b = body(f"echo out-{i}; echo err-{i} >&2; exit {i % 256}")
        b["HostConfig"] = {}  # the default network, as a plain `docker run`
        st, r = d.json("POST", f"/containers/create?name=par{i}", b)
        assert st == 201, r
        cid = r["Id"]
        st, _h, b = d.request("POST", f"/containers/{cid}/start", timeout=120)
        assert st == 204, b
        st, w = d.json("POST", f"/containers/{cid}/wait")
        _st, _h, logs = d.request("GET", f"/containers/{cid}/logs?stdout=1&stderr=1")
        st2, _h, _b = d.request("DELETE", f"/containers/{cid}")
        results[i] = (w["StatusCode"], _demux(logs), st2)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        results[i] = ("error", repr(e), 0)


def _demux(data: bytes) -> tuple[str, str]:
    out = {1: b"", 2: b""}
    while data:
        n = int.from_bytes(data[4:8], "big")
        out[data[0]] += data[8:8 + n]
        data = data[8 + n:]
    return out[1].decode(), out[2].decode()


def test_fifty_concurrent_runs(croot, busybox_archive):
    d = start_daemon(croot / "concurrent", busybox_archive)
    watcher = IdWatcher(d)
    watcher.start()
    try:
        results: dict[int, tuple] = {}
        cli: dict[int, tuple] = {}
        threads = [threading.Thread(target=run_api, args=(d, i, results)) for i in range(50)]

        def run_cli(i: int) -> None:
            r = d.sampan("run", "--rm", "--name", f"cli{i}", "busybox",
                         "sh", "-c", f"echo cli-{i}; exit {100 + i}", timeout=300)
            cli[i] = (r.returncode, r.stdout, r.stderr)

        threads += [threading.Thread(target=run_cli, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        for i in range(50):
            assert results.get(i) == (i % 256, (f"out-{i}\n", f"err-{i}\n"), 204), \
                (i, results.get(i))
        for i in range(8):
            assert cli.get(i, (None,))[:2] == (100 + i, f"cli-{i}\n"), (i, cli.get(i))
        # --rm containers go once their output was read
        deadline = time.monotonic() + 30
        while ids_of(d) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ids_of(d) == set()
        ids = watcher.stop()
        assert len(ids) == 58
        assert_clean(d, ids, d.pid)
        assert d.request("GET", "/_ping")[0] == 200
    finally:
        watcher.stop()
        for cid in ids_of(d):
            d.request("DELETE", f"/containers/{cid}?force=1")
        d.stop()


# ---------------------------------------------------------------- one container, many clients


def _together(fns) -> list:
    """Run the callables at the same moment (a barrier), their results in order."""
    barrier = threading.Barrier(len(fns))
    out: list = [None] * len(fns)

    def one(i, fn):
        barrier.wait()
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001
            out[i] = e

    ts = [threading.Thread(target=one, args=(i, f)) for i, f in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return out


def _monitors_of(d, cid: str) -> list[int]:
    cdir = str(d.data / "containers" / cid)
    return [p for p in monitors_for(d.data / "containers")
            if cdir.encode() in open(f"/proc/{p}/cmdline", "rb").read()]


def test_same_container_from_many_clients(croot, busybox_archive):
    d = start_daemon(croot / "same", busybox_archive)
    watcher = IdWatcher(d)
    watcher.start()
    try:
        # one name, many creates: exactly one wins, the others are docker's 409
        res = _together([lambda: d.json("POST", "/containers/create?name=samename",
                                        body("true"))[0]] * 8)
        assert sorted(res) == [201] + [409] * 7, res
        assert d.request("DELETE", "/containers/samename")[0] == 204
        for round_ in range(3):
            # concurrent starts: one start, one monitor, and the container stays running
            st, r = d.json("POST", "/containers/create", body("sleep 1000"))
            cid = r["Id"]
            res = _together([lambda: d.request("POST", f"/containers/{cid}/start")[0]] * 6)
            assert 204 in res and set(res) <= {204, 304}, res
            time.sleep(0.3)
            ins = d.json("GET", f"/containers/{cid}/json")[1]
            assert ins["State"]["Running"], (round_, ins["State"])
            assert len(_monitors_of(d, cid)) == 1
            # concurrent stops and kills end it once; wait answers everyone
            res = _together([lambda: d.request("POST", f"/containers/{cid}/stop?t=1")[0]] * 3
                            + [lambda: d.json("POST", f"/containers/{cid}/wait")[1]] * 3)
            assert set(res[:3]) <= {204, 304} and 204 in res[:3], res
            assert all(w["StatusCode"] == 137 for w in res[3:]), res
            # a start racing a remove: either order is fine, but never a container that runs
            # without a record, or a record without its directory
            res = _together([lambda: d.request("POST", f"/containers/{cid}/start")[0],
                             lambda: d.request("DELETE", f"/containers/{cid}")[0]])
            time.sleep(0.5)
            st, ins = d.json("GET", f"/containers/{cid}/json")
            if st == 404:
                assert res[1] == 204, res
                assert not _monitors_of(d, cid) and not (d.data / "containers" / cid).exists()
            else:
                assert res[1] in (409,), res
                assert ins["State"]["Running"] == bool(_monitors_of(d, cid)), (res, ins["State"])
                assert d.request("DELETE", f"/containers/{cid}?force=1")[0] == 204
            # concurrent force removals of a running container
            st, r = d.json("POST", "/containers/create", body("sleep 1000"))
            cid = r["Id"]
            assert d.request("POST", f"/containers/{cid}/start")[0] == 204
            res = _together([lambda: d.request("DELETE", f"/containers/{cid}?force=1")[0]] * 4)
            assert 204 in res and set(res) <= {204, 404, 409}, res
            assert d.json("GET", f"/containers/{cid}/json")[0] == 404
        assert ids_of(d) == set()
        assert_clean(d, watcher.stop(), d.pid)
    finally:
        watcher.stop()
        for cid in ids_of(d):
            d.request("DELETE", f"/containers/{cid}?force=1")
        d.stop()


def test_monitor_killed(croot, busybox_archive):
    """SIGKILL of a container's monitor: the container is recorded as exited (255, with the
    reason) and its processes do not run on unseen; a second run's dead monitor never shows
    the first run's exit code; nothing is left after rm."""
    d = start_daemon(croot / "monkill", busybox_archive)
    watcher = IdWatcher(d)
    watcher.start()
    try:
        st, r = d.json("POST", "/containers/create?name=mk",
                       body("[ -e /tmp/ran ] && exec sleep 1000; touch /tmp/ran; exit 3"))
        cid = r["Id"]
        assert d.request("POST", "/containers/mk/start")[0] == 204
        assert d.json("POST", "/containers/mk/wait")[1]["StatusCode"] == 3
        assert d.request("POST", "/containers/mk/start")[0] == 204  # now it sleeps
        ins = d.json("GET", "/containers/mk/json")[1]
        pid = ins["State"]["Pid"]
        (mon,) = _monitors_of(d, cid)
        os.kill(mon, signal.SIGKILL)
        st, w = d.json("POST", "/containers/mk/wait")
        assert w["StatusCode"] == 255 and "monitor" in w["Error"]["Message"], w
        st = d.json("GET", "/containers/mk/json")[1]["State"]
        assert (st["Status"], st["ExitCode"], st["Running"]) == ("exited", 255, False), st
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{pid}"), "the container's process runs on"
        # it can be started again, and removed without leaks
        assert d.request("POST", "/containers/mk/start")[0] == 204
        assert d.request("DELETE", "/containers/mk?force=1")[0] == 204
        assert_clean(d, watcher.stop(), d.pid)
    finally:
        watcher.stop()
        for c in ids_of(d):
            d.request("DELETE", f"/containers/{c}?force=1")
        d.stop()


def test_lookup_during_create_is_404_not_500(croot, busybox_archive):
    """While a create is under way its name is reserved but there is no container yet: a
    lookup by that name is a 404 (or the finished container), never a 500."""
    d = start_daemon(croot / "lookup", busybox_archive)
    try:
        for i in range(5):
            stop = threading.Event()
            seen: list[int] = []

            def poll(name=f"racy{i}"):
                while not stop.is_set():
                    seen.append(d.request("GET", f"/containers/{name}/json")[0])

            ts = [threading.Thread(target=poll) for _ in range(3)]
            for t in ts:
                t.start()
            time.sleep(0.05)
            st, r = d.json("POST", f"/containers/create?name=racy{i}", body("true"))
            time.sleep(0.05)
            stop.set()
            for t in ts:
                t.join()
            assert st == 201, r
            assert set(seen) <= {200, 404} and 404 in seen, sorted(set(seen))
    finally:
        for cid in ids_of(d):
            d.request("DELETE", f"/containers/{cid}?force=1")
        d.stop()


def test_start_cut_short_is_recovered(croot, busybox_archive):
    """The two outcomes of a start the crash cut short, made deterministic: the record still
    says created while (a) the monitor runs the container — adopted as running, with its
    process, and stop works — or (b) a monitor hangs without a container — killed, and the
    record starts normally."""
    import subprocess
    import sys

    d = start_daemon(croot / "cutshort", busybox_archive)
    watcher = IdWatcher(d)
    watcher.start()
    stray = None
    try:
        st, r = d.json("POST", "/containers/create?name=adopt", body("echo hi; sleep 1000"))
        a = r["Id"]
        assert d.request("POST", "/containers/adopt/start")[0] == 204
        pid = d.json("GET", "/containers/adopt/json")[1]["State"]["Pid"]
        st, r = d.json("POST", "/containers/create?name=hung", body("echo ok"))
        h = r["Id"]
        d.stop(signal.SIGKILL)
        # (a) what the record looked like before the daemon could save the start
        p = d.data / "containers" / a / "config.v2.json"
        doc = json.loads(p.read_text())
        doc["State"].update({"Status": "created", "Running": False, "Pid": 0})
        doc["SampanMonitor"] = {"Pid": 0, "StartTime": 0}
        p.write_text(json.dumps(doc))
        # (b) a process with a run-mode monitor's argv for "hung" that never gets anywhere
        cdir = d.data / "containers" / h
        stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                                  "run", str(cdir), h, str(d.exec / "runtime"), "3"])
        d.start()
        st = d.json("GET", "/containers/adopt/json")[1]["State"]
        assert (st["Status"], st["Running"], st["Pid"]) == ("running", True, pid), st
        assert "adopted" in d.log()
        assert stray.wait(30) == -signal.SIGKILL
        assert d.json("GET", "/containers/hung/json")[1]["State"]["Status"] == "created"
        assert d.request("POST", "/containers/hung/start")[0] == 204
        assert d.json("POST", "/containers/hung/wait")[1]["StatusCode"] == 0
        assert d.request("POST", "/containers/adopt/stop?t=1")[0] == 204
        assert d.json("GET", "/containers/adopt/json")[1]["State"]["ExitCode"] == 137
        for n in ("adopt", "hung"):
            assert d.request("DELETE", f"/containers/{n}")[0] == 204
        assert_clean(d, watcher.stop(), d.pid)
    finally:
        watcher.stop()
        if stray is not None and stray.poll() is None:
            stray.kill()
            stray.wait()
        for cid in ids_of(d):
            d.request("DELETE", f"/containers/{cid}?force=1")
        d.stop()


def test_leftover_mounts_are_recovered(croot, busybox_archive):
    """Issue 4, made deterministic: the states a kill -9 leaves with something still mounted.
    (a) the overlay probe of a graph open, mounted on snapshots/.probe-*/m (every create then
    failed with EBUSY 'm'); (b) a create cut short after its rootfs was mounted, before its
    record; (c) a directory without a record holding mounts the graph does not know (stacked,
    nested, and copied into another mount namespace) over content that must survive; (d) a
    record cut short in the middle of rm. The restarted daemon detaches and removes all of
    it, deepest first, never deleting through a mount, and never touches the mounts of the
    container that runs on (live restore)."""
    import subprocess

    d = start_daemon(croot / "leftmounts", busybox_archive)
    watcher = IdWatcher(d)
    watcher.start()
    holder = None
    precious = croot / "leftmounts-precious"
    try:
        st, r = d.json("POST", "/containers/create?name=runs", body("sleep 1000"))
        assert d.request("POST", "/containers/runs/start")[0] == 204
        runs = d.json("GET", "/containers/runs/json")[1]
        runs_merged = runs["GraphDriver"]["Data"]["MergedDir"]
        half = d.json("POST", "/containers/create?name=half", body("true"))[1]["Id"]
        midrm = d.json("POST", "/containers/create?name=midrm", body("true", volume=True))[1]
        midrm = midrm["Id"]
        before = set(mounts_under(d.data))
        d.stop(signal.SIGKILL)

        # (a) the probe
        probe = d.data / "snapshots" / ".probe-1-deadbeef"
        for n in ("l", "u", "w", "m"):
            (probe / n).mkdir(parents=True)
        (probe / "l" / "f").write_text("x")
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={probe}/l,upperdir={probe}/u,workdir={probe}/w",
                        str(probe / "m")], check=True)
        # (b) the record of "half" never written (its rootfs stays mounted, as a create
        # leaves it between graph.prepare and the record)
        (d.data / "containers" / half / "config.v2.json").unlink()
        # (c) unknown mounts: a bind of content that must survive, a tmpfs stacked on it, a
        # bind nested in that, and a process in another mount namespace holding copies
        precious.mkdir()
        (precious / "keep").write_text("image content")
        odd = d.data / "containers" / ("e" * 64) / "fs" / "merged"
        odd.mkdir(parents=True)
        subprocess.run(["mount", "--bind", str(precious), str(odd)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(odd)], check=True)
        (odd / "sub").mkdir()
        subprocess.run(["mount", "--bind", str(precious), str(odd / "sub")], check=True)
        holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "600"])
        # (d) rm -v cut short after the record said removing
        p = d.data / "containers" / midrm / "config.v2.json"
        doc = json.loads(p.read_text())
        doc["State"]["Status"] = "removing"
        doc["SampanRemoving"] = {"Volumes": True}
        p.write_text(json.dumps(doc))

        d.start()
        # a create works (it failed with a 500 while the probe's overlay stayed mounted)
        st, r = d.json("POST", "/containers/create?name=after", body("echo fine"))
        assert st == 201, (r, d.log()[-4000:])
        assert d.request("POST", "/containers/after/start")[0] == 204
        assert d.json("POST", "/containers/after/wait")[1]["StatusCode"] == 0
        assert d.request("DELETE", "/containers/after")[0] == 204
        deadline = time.monotonic() + 30
        while d.json("GET", f"/containers/{midrm}/json")[0] != 404 and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert d.json("GET", f"/containers/{midrm}/json")[0] == 404
        assert d.json("GET", f"/containers/{half}/json")[0] == 404
        assert not probe.exists()
        assert sorted(os.listdir(d.data / "containers")) == [runs["Id"]]
        assert (precious / "keep").read_text() == "image content"
        assert os.listdir(precious) == ["keep"]
        assert "remains of an unfinished create" in d.log()
        assert "detached the mounts a crash left" in d.log()
        # the running container kept its rootfs mount and its process
        left = mounts_under(d.data)
        if runs_merged in before:  # overlay (vfs mounts nothing)
            assert left == [runs_merged], left
        else:
            assert left == [], left
        st = d.json("GET", "/containers/runs/json")[1]["State"]
        assert (st["Running"], st["Pid"]) == (True, runs["State"]["Pid"]), st
        assert d.json("GET", "/volumes")[1]["Volumes"] in (None, [])
        assert d.request("DELETE", "/containers/runs?force=1")[0] == 204
        assert_clean(d, watcher.stop(), d.pid)
    finally:
        watcher.stop()
        if holder is not None:
            holder.kill()
            holder.wait()
        for mp in mounts_under(d.data):
            subprocess.run(["umount", "-l", mp], check=False, capture_output=True)
        if d.proc is not None:
            for cid in ids_of(d):
                d.request("DELETE", f"/containers/{cid}?force=1")
        d.stop()
