#!/usr/bin/env python3
"""sampand's memory: resident set size (VmRSS) at idle right after start, after one `images`
request (the graph is opened), after a pull (the registry client is loaded), and after a second
pull (steady state); with the peak (VmHWM), the thread count, and for scale what a bare
`python3 -c pass` process takes on this machine.

A real sampand (the real graph and ImageService, default storage driver) runs on a temporary
data root; the pulls come from Debian's `docker-registry` on 127.0.0.1 (started here, see
tests/images/registries.py): an image of busybox and one layer of `--layer-mb` MB of random
bytes. Each sample is taken after the daemon has been quiet for `--settle` seconds; `--samples`
starts (fresh daemon, fresh data root) give the median of each stage.

Goal of issue 3: ≤ 25 MiB idle (dockerd + containerd idle here: 111 MiB).

Run as root: ``python3 benches/daemon_rss.py [--samples 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# this tree's sampand (daemonlib starts the sampan it imports), not an installed copy
for p in (REPO / "tests" / "images", REPO / "tests" / "daemon", REPO / "python"):
    sys.path.insert(0, str(p))

GOAL_MIB = 25


def compile_tree() -> None:
    """Bytecode for this tree, as an installed sampan has it: without it each start compiles
    the sources in memory, ~4 MiB more resident (PYTHONDONTWRITEBYTECODE keeps it from being
    written by the daemon itself)."""
    import compileall

    compileall.compile_dir(str(REPO / "python" / "sampan"), quiet=1)
DOCKER_MIB = 111
STAGES = ("idle after start", "after `images`", "after a pull", "after a second pull")


def status(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            out[key] = int(value.split()[0])
    return out


def bare_python_kib() -> int:
    code = ("import re; print(re.search(r'VmRSS:\\s+(\\d+)', "
            "open('/proc/self/status').read()).group(1))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout)


def one_start(tmp: Path, reg, ref: str, settle: float) -> list[dict]:
    from daemonlib import Daemon
    from sampan.client import Client

    root = Path(tempfile.mkdtemp(prefix="rss-", dir=tmp))
    d = Daemon(root, fake=False)
    d.start("--insecure-registry", reg.host)
    samples = []
    try:
        def sample() -> None:
            time.sleep(settle)
            samples.append(status(d.pid))

        sample()
        c = Client(d.host, timeout=300)
        c.images()
        sample()
        repo, _, tag = ref.rpartition(":")
        for _ in range(2):
            for _m in c.pull(repo, tag):
                pass
            c.remove_image(ref, force=True)
            c.close()
            sample()
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=3, help="daemon starts (default 3)")
    ap.add_argument("--layer-mb", type=float, default=10, help="pulled layer size in MB (10)")
    ap.add_argument("--settle", type=float, default=0.5, help="quiet seconds before a sample")
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--json", default=None, help="write the raw samples here")
    args = ap.parse_args()
    compile_tree()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2

    from registries import REGISTRY_BIN, Image, Registry, Uploader, busybox_layer, random_layer

    if not os.path.exists(REGISTRY_BIN):
        print("docker-registry is not installed", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="sampan-rssbench-", dir=args.tmpdir))
    reg = None
    runs = []
    try:
        reg = Registry(tmp / "registry", "plain")
        image = Image([busybox_layer(), random_layer(int(args.layer_mb * 1_000_000))])
        Uploader(reg.url).image("bench/rss", "1", image)
        ref = f"{reg.host}/bench/rss:1"
        for _ in range(args.samples):
            runs.append(one_start(tmp, reg, ref, args.settle))
    finally:
        if reg is not None:
            reg.close()
        shutil.rmtree(tmp, ignore_errors=True)
    bare = bare_python_kib()

    def mib(kib: float) -> str:
        return f"{kib / 1024:6.1f}"

    print(f"sampand RSS (MiB), median of {args.samples} starts; host {platform.node()}, "
          f"Linux {platform.release()}, Python {platform.python_version()}")
    print(f"{'stage':24s} {'VmRSS':>7s} {'anon':>7s} {'file':>7s} {'VmHWM':>7s} {'threads':>8s}")
    for i, stage in enumerate(STAGES):
        vals = [r[i] for r in runs]

        def med(key: str, vals=vals) -> float:
            return statistics.median(v[key] for v in vals)

        print(f"{stage:24s} {mib(med('VmRSS'))} {mib(med('RssAnon'))} {mib(med('RssFile'))} "
              f"{mib(med('VmHWM'))} {int(med('Threads')):8d}")
    print(f"{'python3 -c pass':24s} {mib(bare)}")
    idle = statistics.median(r[0]["VmRSS"] for r in runs) / 1024
    print(f"\ngoal: idle ≤ {GOAL_MIB} MiB (dockerd + containerd idle here: {DOCKER_MIB} MiB): "
          f"{idle:.1f} MiB → {'met' if idle <= GOAL_MIB else 'NOT met'}; after a pull "
          f"{statistics.median(r[2]['VmRSS'] for r in runs) / 1024:.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"stages": STAGES, "runs": runs,
                                               "bare_python_kib": bare}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
