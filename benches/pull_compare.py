#!/usr/bin/env python3
"""Pull + unpack of a ~100 MB, 6-layer image from a local registry: Sampan against skopeo and
podman, in one run.

The image: 6 gzip layers of random bytes (incompressible: the blobs really are ~100 MB; the
first layer also holds /bin/busybox so that the image is runnable), pushed to Debian's
`docker-registry` (distribution v2, plain HTTP on 127.0.0.1, started here on a temporary
directory, see tests/images/registries.py). Then ONE loop, N times, in an order that rotates
every iteration:

- ``sampan (API)``: `POST /images/create` to a real sampand (started here on a temporary data
  root, default storage driver, `--insecure-registry`) through `sampan.client.Client`, until
  its progress stream ends: download, verify and unpack, as `docker pull` does;
- ``sampan pull (CLI)``: the `sampan -H unix://… pull -q REF` command as a process (it pays
  for starting Python and importing the CLI);
- ``skopeo copy``: `skopeo copy docker://REF dir:DIR`, download only (no unpack);
- ``podman pull``: `podman --root R --runroot R pull REF` on a storage root of its own (overlay),
  download and unpack; only when podman is installed (`--install-podman` runs `apt-get install
  -y podman` first; without it a missing podman is reported as not available).

Between two runs (untimed) everything is removed so that each run really downloads: sampand
gets `DELETE /images/REF` + `POST /images/prune` (and the data root is checked to hold no blob
any more), skopeo's directory is deleted, podman gets `rmi -af`. One untimed warm-up run per
contender comes first (`--warmup`). Medians, min/max, MB/s (compressed bytes / median) and the
ratios are printed, and the goal of issue 3: Sampan's median ≤ 0.5 × docker's time (docker
2.6 s, measured earlier on this VM: `--docker-seconds`).

The CPU column is the median CPU time (user + system) of whatever did the pull: sampand's
process for the API runs, the child processes for skopeo and podman — steadier than wall time
on a loaded machine.

``--baseline-tree DIR`` adds ``sampan baseline (API)``: a second sampand running another Python
tree (e.g. ``git archive <commit> python | tar -x -C /tmp/old`` plus the current
``_runtime.abi3.so``), timed in the same loop: before/after under the same load.

Run as root: ``python3 benches/pull_compare.py [-n 3] [--install-podman] [--json out.json]``.
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
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# this tree's sampan (and so this tree's sampand, which daemonlib starts from the sampan it
# imports), not an installed copy
for p in (REPO / "tests" / "images", REPO / "tests" / "daemon", REPO / "python"):
    sys.path.insert(0, str(p))

MB = 1_000_000
MiB = 1 << 20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the image


def build_image(total: int, layers: int):
    """`layers` layers of random bytes (several files each), about `total` bytes in all."""
    from registries import Image, _tar

    per = total // layers
    tars = []
    for i in range(layers):
        files: dict = {}
        left, n = per, 0
        while left > 0:
            size = min(left, 4 * MiB)
            files[f"data/layer{i}/file{n}"] = os.urandom(size)
            left -= size
            n += 1
        if i == 0:
            files["bin/busybox"] = (Path(shutil.which("busybox") or "/bin/busybox")
                                    .read_bytes())
            files["bin/sh"] = "->busybox"
        tars.append(_tar(files))
    return Image(tars)


# --------------------------------------------------------------------------- contenders


class Contender:
    name = ""
    available = True
    why = ""

    def prepare(self) -> None:
        """Untimed: make sure the next run downloads everything."""

    def run(self) -> None:
        raise NotImplementedError


class SampanAPI(Contender):
    name = "sampan (API)"

    def __init__(self, daemon, ref: str, image_id: str):
        self.d = daemon
        self.ref = ref
        self.repo, _, self.tag = ref.rpartition(":")
        self.image_id = image_id

    def prepare(self) -> None:
        from sampan.client import Client, ClientError

        c = Client(self.d.host, timeout=600)
        try:
            try:
                c.remove_image(self.ref, force=True)
            except ClientError as e:
                if getattr(e, "status", 0) != 404:
                    raise
            c.prune_images({"dangling": ["false"]})
            if c.images(all=True):
                raise RuntimeError(f"sampand still lists images: {c.images(all=True)}")
        finally:
            c.close()
        left = list((self.d.data / "blobs" / "sha256").iterdir())
        if left:
            raise RuntimeError(f"blobs left in sampand's store after rmi + prune: {left[:3]}")

    def run(self) -> None:
        from sampan.client import Client

        c = Client(self.d.host, timeout=600)
        try:
            last = None
            for m in c.pull(self.repo, self.tag):
                last = m
        finally:
            c.close()
        if not (last or {}).get("status", "").startswith("Status: Downloaded newer image"):
            raise RuntimeError(f"sampan pull ended with {last}")


class SampanCLI(SampanAPI):
    name = "sampan pull (CLI)"

    def run(self) -> None:
        from daemonlib import sampan_argv

        r = subprocess.run([*sampan_argv(), "-H", self.d.host, "pull", "-q", self.ref],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"sampan pull: {r.returncode}: {r.stderr}")


class Skopeo(Contender):
    name = "skopeo copy (no unpack)"

    def __init__(self, ref: str, tmp: Path):
        self.ref = ref
        self.dest = tmp / "skopeo-dir"
        self.bin = shutil.which("skopeo")
        if self.bin is None:
            self.available, self.why = False, "skopeo is not installed (apt-get install skopeo)"

    def prepare(self) -> None:
        shutil.rmtree(self.dest, ignore_errors=True)

    def run(self) -> None:
        subprocess.run([self.bin, "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                        f"docker://{self.ref}", f"dir:{self.dest}"], check=True,
                       capture_output=True)


class Podman(Contender):
    name = "podman pull"

    def __init__(self, ref: str, tmp: Path):
        self.ref = ref
        self.root = tmp / "podman"
        self.bin = shutil.which("podman")
        if self.bin is None:
            self.available = False
            self.why = "podman is not installed (run with --install-podman)"

    def cmd(self, *args: str) -> list[str]:
        return [self.bin, "--root", str(self.root / "root"), "--runroot",
                str(self.root / "run"), "--storage-driver", "overlay", *args]

    def prepare(self) -> None:
        subprocess.run(self.cmd("rmi", "-af"), check=False, capture_output=True)

    def run(self) -> None:
        subprocess.run(self.cmd("pull", "-q", "--tls-verify=false", self.ref), check=True,
                       capture_output=True)

    def close(self) -> None:
        if self.bin:
            subprocess.run(self.cmd("system", "reset", "-f"), check=False,
                           capture_output=True)


def install_podman() -> None:
    if shutil.which("podman"):
        return
    log("installing podman (apt-get install -y podman) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "podman"],
                       env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "podman"],
                           env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        log(f"apt-get install podman failed: {r.stderr[-1000:]}")


# --------------------------------------------------------------------------- the loop


def timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cpu_seconds(c: Contender) -> float:
    """CPU time used so far by what does the pull: sampand's process, or this process's
    finished children (skopeo, podman and what they start)."""
    d = getattr(c, "d", None)
    if d is not None and not isinstance(c, SampanCLI):
        f = Path(f"/proc/{d.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=3, help="timed runs per contender (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    ap.add_argument("--size-mb", type=float, default=100, help="image size in MB (100)")
    ap.add_argument("--layers", type=int, default=6, help="number of layers (6)")
    ap.add_argument("--install-podman", action="store_true",
                    help="apt-get install podman when it is missing")
    ap.add_argument("--no-cli", action="store_true", help="skip the `sampan pull` CLI runs")
    ap.add_argument("--docker-seconds", type=float, default=2.6,
                    help="docker pull's time on this machine, the reference (2.6)")
    ap.add_argument("--tmpdir", default=None, help="where the registry and data roots go")
    ap.add_argument("--json", default=None, help="write the raw timings here")
    ap.add_argument("--baseline-tree", default=None, metavar="DIR",
                    help="also time a second sampand running the Python tree DIR (e.g. an "
                    "older commit's python/ from `git archive`, with a _runtime .so): "
                    "before/after in the same run")
    args = ap.parse_args()
    if os.geteuid() != 0:
        log("run as root")
        return 2
    if args.install_podman:
        install_podman()

    from daemonlib import Daemon
    from registries import REGISTRY_BIN, Registry, Uploader

    if not os.path.exists(REGISTRY_BIN):
        log("docker-registry is not installed (apt-get install docker-registry)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="sampan-pullbench-", dir=args.tmpdir))
    reg = daemon = podman = baseline = None
    try:
        log(f"building a {args.size_mb:g} MB, {args.layers}-layer image ...")
        image = build_image(int(args.size_mb * MB), args.layers)
        layer_bytes = sum(len(image.blobs[d]) for d in image.layer_digests)
        reg = Registry(tmp / "registry", "plain")
        Uploader(reg.url).image("bench/pull", "latest", image)
        ref = f"{reg.host}/bench/pull:latest"
        log(f"pushed {ref}: {len(image.layer_digests)} layers, {layer_bytes / MB:.1f} MB "
            "compressed")

        (tmp / "sampand").mkdir()
        daemon = Daemon(tmp / "sampand", fake=False)
        daemon.start("--insecure-registry", reg.host)
        contenders: list[Contender] = [SampanAPI(daemon, ref, image.id)]
        if args.baseline_tree:
            (tmp / "baseline").mkdir()
            baseline = Daemon(tmp / "baseline", fake=False)
            env = dict(baseline.env(), PYTHONPATH=os.pathsep.join(
                [str(Path(args.baseline_tree).resolve()), str(REPO / "tests" / "daemon")]))
            baseline.env = lambda: env
            baseline.start("--insecure-registry", reg.host)
            before = SampanAPI(baseline, ref, image.id)
            before.name = "sampan baseline (API)"
            contenders.append(before)
        if not args.no_cli:
            contenders.append(SampanCLI(daemon, ref, image.id))
        podman = Podman(ref, tmp)
        contenders += [Skopeo(ref, tmp), podman]
        active = [c for c in contenders if c.available]
        for c in contenders:
            if not c.available:
                log(f"{c.name}: not available: {c.why}")

        for c in active:
            for _ in range(args.warmup):
                c.prepare()
                c.run()
        times: dict[str, list[float]] = {c.name: [] for c in active}
        cpus: dict[str, list[float]] = {c.name: [] for c in active}
        for i in range(args.n):
            order = active[i % len(active):] + active[:i % len(active)]
            for c in order:
                c.prepare()
                c0 = cpu_seconds(c)
                t = timed(c.run)
                times[c.name].append(t)
                cpus[c.name].append(cpu_seconds(c) - c0)
                log(f"  run {i + 1}/{args.n} {c.name:26s} {t:7.3f} s")
        from sampan.client import Client

        driver = Client(daemon.host).info().get("Driver")
    finally:
        if daemon is not None:
            daemon.stop()
        if baseline is not None:
            baseline.stop()
        if podman is not None:
            podman.close()
        if reg is not None:
            reg.close()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    sampan_t = med.get("sampan (API)")
    print()
    print(f"Pull of a {layer_bytes / MB:.1f} MB ({len(image.layer_digests)} layers, gzip, "
          f"incompressible) image from docker-registry on 127.0.0.1 (plain HTTP); N={args.n} "
          f"per contender, alternating; sampand storage driver: {driver}")
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
          f"Python {platform.python_version()}")
    print()
    print(f"{'contender':28s} {'median':>8s} {'min':>8s} {'max':>8s} {'MB/s':>7s} "
          f"{'sampan/x':>9s} {'CPU s':>6s}")
    for c in contenders:
        if c.name not in times:
            print(f"{c.name:28s} {'not available: ' + c.why}")
            continue
        v = times[c.name]
        print(f"{c.name:28s} {med[c.name]:8.3f} {min(v):8.3f} {max(v):8.3f} "
              f"{layer_bytes / MB / med[c.name]:7.1f} {fmt_ratio(sampan_t, med[c.name]):>9s} "
              f"{statistics.median(cpus[c.name]):6.2f}")
    print(f"{'docker pull (reference)':28s} {args.docker_seconds:8.3f} {'':8s} {'':8s} "
          f"{layer_bytes / MB / args.docker_seconds:7.1f} "
          f"{fmt_ratio(sampan_t, args.docker_seconds):>9s}")
    if sampan_t:
        goal = 0.5 * args.docker_seconds
        print(f"\ngoal: sampan ≤ 0.5 × docker = {goal:.2f} s: median {sampan_t:.3f} s → "
              f"{'met' if sampan_t <= goal else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "bytes": layer_bytes, "layers": len(image.layer_digests), "n": args.n,
            "driver": driver, "times": times, "cpu_seconds": cpus,
            "docker_reference": args.docker_seconds,
            "unavailable": {c.name: c.why for c in contenders if not c.available}},
            indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
