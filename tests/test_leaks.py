"""Nothing accumulates over many runs: state dirs, cgroups, mounts, processes, and, in
this process, file descriptors, threads and unreaped children.

Marked ``slow`` (deselect with ``-m 'not slow'``) but run by default: 100 runs of ``true``
take a few seconds under runc.
"""

from __future__ import annotations

import os
import signal

import pytest
import support
from sampan.bundle import runc_spec

RUNS = 100


def snapshot(runtime, prefix, bundle_path):
    return {
        "state dirs": sorted(p.name for p in runtime.root.iterdir()),
        "cgroups": sorted(
            d for h in support.CGROUP_ROOT.iterdir()
            for d, _, _ in os.walk(h) if prefix in d
        ),
        "mounts": [m for m in support.host_mounts() if prefix in m or str(bundle_path) in m],
        "processes in the rootfs": support.processes_rooted_at(bundle_path / "rootfs"),
        "fds": support.open_fds(),
        "threads": support.thread_count(),
        "children": support.child_pids(),
    }


@pytest.mark.slow
def test_no_leak_over_100_runs(bundle, runtime, new_id):
    prefix = f"leak-{os.getpid()}-"
    b = bundle(["true"])
    assert runtime.run(new_id(prefix + "warm"), b) == 0  # lazy one-time set-up happens here
    before = snapshot(runtime, prefix, b)
    statuses = [runtime.run(f"{prefix}{i}", b) for i in range(RUNS)]
    assert statuses == [0] * RUNS
    after = snapshot(runtime, prefix, b)
    assert after == before


@pytest.mark.slow
def test_no_leak_over_many_execs(bundle, runtime, cid):
    b = bundle(["sleep", "1000"])
    proc = runtime.spawn(cid, b)
    process = runc_spec(None, ["true"])["process"]
    assert runtime.exec(cid, process) == 0
    before = snapshot(runtime, cid, b)
    statuses = [runtime.exec(cid, process) for _ in range(30)]
    assert statuses == [0] * 30
    assert len(runtime.ps(cid)) == 1  # no exec'd process lingers
    assert snapshot(runtime, cid, b) == before
    runtime.kill(cid, signal.SIGKILL)
    proc.wait()
