#!/usr/bin/env python3
"""Per-container monitor memory (issue 4: goal ≤ 3 MiB PSS per container): N containers
(`sleep`) started through a real sampand with each monitor — the Rust binary
(python/sampan/libexec/sampan-monitor) and the Python module (SAMPAN_MONITOR=python) — and,
when podman is installed, N podman containers for conmon, all in the same run.

PSS comes from /proc/PID/smaps_rollup: pages shared between the N monitors (the binary's text,
the interpreter's) count 1/N each, so it is what one more container costs. RSS and the private
part (Private_Clean + Private_Dirty) are printed too. Nothing is asserted: a benchmark.

Run as root: ``python3 benches/monitor_pss.py [-n 10] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "tests" / "daemon"))

GOAL_MIB = 3.0


def rollup(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        k, _, v = line.partition(":")
        parts = v.split()
        if parts and parts[0].isdigit():
            out[k.strip()] = int(parts[0])  # KiB
    return out


def monitor_pids(ids: list[str]) -> list[int]:
    """The run-mode monitors of these containers (their argv names the container)."""
    want = {i.encode() for i in ids}
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"run" in argv and want.intersection(argv):
            pids.append(int(d.name))
    return pids


def measure(pids: list[int]) -> dict[str, float]:
    rows = [rollup(p) for p in pids]
    pss = [r["Pss"] / 1024 for r in rows]
    rss = [r["Rss"] / 1024 for r in rows]
    priv = [(r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)) / 1024 for r in rows]
    return {"n": len(rows), "pss_median": statistics.median(pss), "pss_max": max(pss),
            "rss_median": statistics.median(rss), "private_median": statistics.median(priv)}


def sampan_round(kind: str, n: int, tmp: Path, archive: bytes) -> dict[str, float] | str:
    from daemonlib import Daemon, mkdir
    from sampan.containers import monitorbin

    if kind == "rust" and not os.access(monitorbin.BINARY, os.X_OK):
        return "not built (scripts/build-monitor)"
    old = os.environ.get("SAMPAN_MONITOR")
    if kind == "python":
        os.environ["SAMPAN_MONITOR"] = "python"
    else:
        os.environ.pop("SAMPAN_MONITOR", None)
    root = mkdir(tmp / f"sampand-{kind}")
    ids: list[str] = []
    d = Daemon(root, fake=False)
    try:
        d.start()
    finally:
        if old is None:
            os.environ.pop("SAMPAN_MONITOR", None)
        else:
            os.environ["SAMPAN_MONITOR"] = old
    try:
        st, _h, body = d.request("POST", "/images/load?quiet=1", archive,
                                 {"Content-Type": "application/x-tar"})
        assert st == 200, body
        for i in range(n):
            st, r = d.json("POST", f"/containers/create?name=pss{i}",
                           {"Image": "busybox", "Cmd": ["sleep", "600"],
                            "HostConfig": {"NetworkMode": "none"}})
            assert st == 201, r
            ids.append(r["Id"])
            st, _h, body = d.request("POST", f"/containers/{r['Id']}/start")
            assert st == 204, body
        time.sleep(1)  # settled: the monitors wait in poll
        pids = monitor_pids(ids)
        if len(pids) != n:
            return f"found {len(pids)} monitors for {n} containers"
        return measure(pids)
    finally:
        for cid in ids:
            d.request("DELETE", f"/containers/{cid}?force=1")
        d.stop()


def conmon_round(n: int, tmp: Path, archive: bytes) -> dict[str, float] | str:
    podman = shutil.which("podman")
    if not podman or not shutil.which("conmon"):
        return "podman/conmon not installed"
    proot = tmp / "podman"
    pargs = [podman, "--root", str(proot / "root"), "--runroot", str(proot / "run"),
             "--storage-driver", "overlay", "--runtime", "runc"]
    tar = tmp / "busybox.tar"
    tar.write_bytes(archive)
    r = subprocess.run([*pargs, "load", "-i", str(tar)], capture_output=True, text=True)
    if r.returncode != 0:
        return f"podman load failed: {r.stderr.strip()[:200]}"
    # podman's default ulimits are above this machine's hard limits; crun refuses this hybrid
    # cgroup layout: runc.
    run = ["run", "-d", "--network", "none", "--ulimit", "nofile=1024:4096",
           "--ulimit", "nproc=1024:4096"]
    names = []
    try:
        for i in range(n):
            r = subprocess.run([*pargs, *run, "--name", f"pss{i}", "busybox", "sleep", "600"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                return f"podman run failed: {r.stderr.strip()[:200]}"
            names.append(f"pss{i}")
        time.sleep(1)
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    argv = (d / "cmdline").read_bytes()
                except OSError:
                    continue
                if (d / "comm").exists() and (d / "comm").read_text().strip() == "conmon" \
                        and str(proot).encode() in argv:
                    pids.append(int(d.name))
        if len(pids) != n:
            return f"found {len(pids)} conmon for {n} containers"
        return measure(pids)
    finally:
        if names:
            subprocess.run([*pargs, "rm", "-f", "-t", "0", *names], capture_output=True)
        subprocess.run([*pargs, "system", "reset", "-f"], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10, help="containers per contender (10)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--tmpdir", default="/tmp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    from sampan.demoimage import docker_archive

    archive = docker_archive("busybox:latest")
    tmp = Path(tempfile.mkdtemp(prefix="sampan-pss-", dir=args.tmpdir))
    tmp.chmod(0o755)
    results: dict[str, dict | str] = {}
    try:
        results["sampan-monitor (Rust)"] = sampan_round("rust", args.n, tmp, archive)
        results["python -m sampan.monitor"] = sampan_round("python", args.n, tmp, archive)
        results["conmon (podman)"] = conmon_round(args.n, tmp, archive)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.n} containers each; MiB per monitor (median unless said)")
    print(f"{'monitor':28} {'PSS':>7} {'PSS max':>8} {'RSS':>7} {'private':>8}")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"{name:28} {r}")
        else:
            print(f"{name:28} {r['pss_median']:7.2f} {r['pss_max']:8.2f} "
                  f"{r['rss_median']:7.2f} {r['private_median']:8.2f}")
    print(f"goal: PSS ≤ {GOAL_MIB} MiB per container")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
