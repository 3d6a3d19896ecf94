"""The bindings in a process that has threads, as the daemon will be.

Containers are created from many Python threads at once while other threads keep running
Python code; the blocking calls must release the GIL (other threads make progress while a
container runs), one thread may wait for a container while another signals it or asks its
state, and nothing (fds, children, threads) is left behind.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import support
from sampan import runtime as rt

TIMEOUT = 60.0


class Spinner:
    """A thread running pure Python; records when it made progress."""

    def __init__(self):
        self.count = 0
        self.stamps: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self):
        last = time.monotonic()
        self.stamps.append(last)
        while not self._stop.is_set():
            # Python bytecode only: it can only run while it holds the GIL.
            sum(i * i for i in range(200))
            self.count += 1
            now = time.monotonic()
            if now - last >= 0.01:
                self.stamps.append(now)
                last = now

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(TIMEOUT)

    def progress_between(self, start: float, end: float) -> list:
        return [t for t in self.stamps if start <= t <= end]

    def longest_stall(self, start: float, end: float) -> float:
        """The longest time within [start, end] during which the spinner made no progress."""
        points = [start, *self.progress_between(start, end), end]
        return max(b - a for a, b in zip(points, points[1:]))


def in_thread(fn, *args, **kw):
    """Start ``fn`` in a daemon thread; returns (thread, box) where box gets value/error."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args, **kw)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def result(thread, box, timeout=TIMEOUT, what="call"):
    thread.join(timeout)
    assert not thread.is_alive(), f"{what} did not return within {timeout}s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def fd_table() -> dict:
    """This process's open fds and what they point to (the listing's own fd is left out)."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out


def assert_same_fds(before: dict) -> None:
    after = fd_table()
    new = {fd: what for fd, what in after.items() if before.get(fd) != what}
    gone = {fd: what for fd, what in before.items() if after.get(fd) != what}
    assert not new and not gone, f"fds opened and not closed: {new}; closed: {gone}"


def kill_rooted_at(rootfs):
    for pid in support.processes_rooted_at(rootfs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- many threads


def test_eight_threads_run_containers_concurrently(bundle, tmpdir755, new_id):
    children_before = set(support.child_pids())  # other suites' servers
    threads, runs = 8, 5
    # One bundle shared by every container (the rootfs is read-only) and one per thread.
    shared = bundle(["sh", "-c", 'test "$(hostname)" = runc && test "$$" = 1'], name="shared")
    own = [bundle(["sh", "-c", "test -e /probe.sh"], name=f"own{i}") for i in range(threads)]
    roots = [tmpdir755 / f"state{i}" for i in range(threads)]
    statuses: dict = {}
    errors: list = []
    start = threading.Barrier(threads + 1)

    def worker(i):
        try:
            start.wait(TIMEOUT)
            for n in range(runs):
                cid = new_id(f"thr{i}")
                b = shared if n % 2 == 0 else own[i]
                statuses[cid] = rt.run(cid, b, root=roots[i])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append((i, exc))

    def churn():
        # Threads starting and ending all the time: a child cloned meanwhile inherits libc's
        # view of them (a libc call there that waits for "all threads" would hang).
        while not done.is_set():
            t = threading.Thread(target=lambda: None)
            t.start()
            t.join()

    done = threading.Event()
    fds_before = fd_table()
    with Spinner() as spinner:
        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        workers = [threading.Thread(target=worker, args=(i,), daemon=True)
                   for i in range(threads)]
        for w in workers:
            w.start()
        start.wait(TIMEOUT)
        t0 = time.monotonic()
        for w in workers:
            w.join(TIMEOUT * 2)
        t1 = time.monotonic()
        done.set()
        churner.join(TIMEOUT)
        hung = [w.name for w in workers if w.is_alive()]
        assert not hung, f"threads still running after {TIMEOUT * 2}s: {hung}"
    assert not errors, errors
    assert len(statuses) == threads * runs
    assert set(statuses.values()) == {0}, statuses
    # The spinner kept running Python all along.
    assert spinner.progress_between(t0, t1), "the spinning thread never ran"
    assert spinner.longest_stall(t0, t1) < 1.0, spinner.longest_stall(t0, t1)
    # Nothing left: no state, no children, no fds.
    for root in roots:
        assert rt.list(root) == []
        assert list(root.iterdir()) == []
    assert set(support.child_pids()) <= children_before
    assert_same_fds(fds_before)


# --------------------------------------------------------------------------- the GIL


def test_gil_is_released_while_a_container_runs(bundle, tmpdir755, new_id):
    b = bundle(["sleep", "1.5"])
    root = tmpdir755 / "state"
    with Spinner() as spinner:
        time.sleep(0.05)
        t0 = time.monotonic()
        assert rt.run(new_id(), b, root=root) == 0
        t1 = time.monotonic()
    assert t1 - t0 >= 1.5
    stall = spinner.longest_stall(t0, t1)
    assert stall < 0.5, f"the other thread stalled for {stall:.2f}s while run() blocked"
    # Progress throughout, not only at the edges: at least one tick in every 0.25s window.
    ticks = spinner.progress_between(t0, t1)
    assert len(ticks) > (t1 - t0) / 0.25


def test_gil_is_released_in_each_lifecycle_call(bundle, tmpdir755, new_id):
    b = bundle(["sleep", "1"])
    root = tmpdir755 / "state"
    with Spinner() as spinner:
        time.sleep(0.05)
        t0 = time.monotonic()
        c = rt.Container.create(new_id(), b, root=root)
        try:
            c.start()
            assert c.status == "running"
            tw = time.monotonic()
            assert c.wait() == 0
            t1 = time.monotonic()
        finally:
            c.delete(force=True)
    assert t1 - tw >= 0.5
    assert spinner.longest_stall(t0, t1) < 0.5


def test_python_thread_runs_while_container_runs_in_another(bundle, tmpdir755, new_id):
    """The container blocks a worker thread; the main thread keeps computing meanwhile."""
    b = bundle(["sleep", "1"])
    t, box = in_thread(rt.run, new_id(), b, root=tmpdir755 / "state")
    done = 0
    t0 = time.monotonic()
    while t.is_alive() and time.monotonic() - t0 < TIMEOUT:
        sum(i * i for i in range(200))
        done += 1
    assert result(t, box, what="run") == 0
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.9
    # Thousands of iterations a second when the GIL is free; a handful if run() held it.
    assert done > 1000 * elapsed, (done, elapsed)


# --------------------------------------------------------------------------- one container,
# several threads


def test_kill_and_state_from_another_thread_while_one_waits(bundle, tmpdir755, new_id):
    """The daemon waits for a container in one thread and stops it from another."""
    b = bundle(["sleep", "1000"])
    c = rt.Container.create(new_id(), b, root=tmpdir755 / "state")
    rootfs = b / "rootfs"
    try:
        c.start()
        waiter, wbox = in_thread(c.wait)
        time.sleep(0.3)
        assert waiter.is_alive()
        # Asking for the state or the pid must not wait for the container to exit.
        t, box = in_thread(lambda: (c.status, c.pid, c.state()["status"]))
        status, pid, state = result(t, box, 10, "status/pid/state while another thread waits")
        assert status == state == "running" and pid > 0
        t, box = in_thread(c.kill, signal.SIGKILL)
        result(t, box, 10, "kill while another thread waits")
        assert result(waiter, wbox, 10, "wait") == 128 + signal.SIGKILL
        assert c.status == "stopped"
    finally:
        kill_rooted_at(rootfs)  # unblocks a stuck waiter if the binding is broken
        c.delete(force=True)


def test_exec_in_one_thread_does_not_block_the_container_for_others(bundle, tmpdir755,
                                                                       new_id):
    b = bundle(["sleep", "1000"])
    c = rt.Container.create(new_id(), b, root=tmpdir755 / "state")
    rootfs = b / "rootfs"
    try:
        c.start()
        proc = {"args": ["sleep", "1000"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                "env": ["PATH=/bin"]}
        execer, ebox = in_thread(c.exec, proc)
        time.sleep(0.3)
        assert execer.is_alive()
        t, box = in_thread(c.ps)
        pids = result(t, box, 10, "ps while another thread execs")
        assert len(pids) == 2, pids
        t, box = in_thread(c.kill, signal.SIGKILL, True)
        result(t, box, 10, "kill --all while another thread execs")
        assert result(execer, ebox, 10, "exec") == 128 + signal.SIGKILL
    finally:
        kill_rooted_at(rootfs)
        c.delete(force=True)


def test_force_delete_while_another_thread_execs_and_another_waits(bundle, tmpdir755,
                                                                     new_id):
    """``rm -f`` of a container with an exec attached in one thread and a waiter in another."""
    b = bundle(["sleep", "1000"])
    c = rt.Container.create(new_id(), b, root=tmpdir755 / "state")
    rootfs = b / "rootfs"
    try:
        c.start()
        proc = {"args": ["sleep", "1000"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                "env": ["PATH=/bin"]}
        execer, ebox = in_thread(c.exec, proc)
        waiter, wbox = in_thread(c.wait)
        time.sleep(0.3)
        assert execer.is_alive() and waiter.is_alive()
        t, box = in_thread(c.delete, True)
        result(t, box, 10, "delete --force while another thread execs")
        assert result(waiter, wbox, 10, "wait") == 128 + signal.SIGKILL
        assert result(execer, ebox, 10, "exec") == 128 + signal.SIGKILL
        assert rt.list(tmpdir755 / "state") == []
        assert support.processes_rooted_at(rootfs) == []
    finally:
        kill_rooted_at(rootfs)
        try:
            c.delete(force=True)
        except rt.ContainerError:
            pass


def test_created_container_does_not_hold_up_containers_of_other_threads(bundle, tmpdir755,
                                                                          new_id):
    """Containers created (and not started) while other threads run containers must not keep
    those threads' descriptors: their starts would then wait until the first one starts."""
    children_before = set(support.child_pids())  # other suites' servers
    b = bundle(["true"])
    root = tmpdir755 / "state"
    created: list = []
    stop = threading.Event()

    def creator():
        while not stop.is_set() and len(created) < 40:
            created.append(rt.Container.create(new_id("idle"), b, root=root))

    def runner():
        codes = []
        for _ in range(30):
            codes.append(rt.run(new_id("busy"), b, root=root))
        return codes

    fds_before = fd_table()
    ct, cbox = in_thread(creator)
    runners = [in_thread(runner) for _ in range(3)]
    try:
        for t, box in runners:
            assert result(t, box, 30, "runs beside idle created containers") == [0] * 30
    finally:
        stop.set()
        ct.join(TIMEOUT)
        # Dropped as they go: a Container object keeps its init's pidfd until then.
        while created:
            try:
                created.pop().delete(force=True)
            except rt.ContainerError:
                pass
        # A hung runner is unblocked by the deletes; let it finish before the checks.
        for t, _ in runners:
            t.join(TIMEOUT)
    if "error" in cbox:
        raise cbox["error"]
    assert rt.list(root) == []
    assert set(support.child_pids()) <= children_before
    assert_same_fds(fds_before)


# --------------------------------------------------------------------------- leaks


def test_no_fd_or_thread_leak_after_many_runs(bundle, tmpdir755, new_id):
    children_before = set(support.child_pids())  # other suites' servers
    b = bundle(["true"])
    root = tmpdir755 / "state"
    # Warm up: the first call may open things once per process (the extension itself).
    assert rt.run(new_id(), b, root=root) == 0
    fds, threads = fd_table(), support.thread_count()
    for _ in range(40):
        assert rt.run(new_id(), b, root=root) == 0
    # A few with every lifecycle call, and failures too.
    for _ in range(10):
        c = rt.Container.create(new_id(), b, root=root)
        c.state()
        c.start()
        assert c.wait() == 0
        c.delete()
    del c  # a Container object keeps its init's pidfd until it is dropped
    bad = bundle(["/no/such/program"])
    for _ in range(10):
        with pytest.raises(rt.ContainerError):
            rt.run(new_id(), bad, root=root)
    assert_same_fds(fds)
    assert support.thread_count() == threads
    assert set(support.child_pids()) <= children_before
    assert rt.list(root) == []
