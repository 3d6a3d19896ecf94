#!/usr/bin/env python3
"""Issue 4's benchmarks, side by side in one run:

1. `run --rm IMAGE true`: `sampan run --rm` (the CLI as a process, as a user runs it: the
   installed native `sampan`, rust/cli; the Python CLI, `python -m sampan.cli`, beside it) and the
   same through the API (create + start + wait + delete with `sampan.client.Client`, what the
   CLI costs without its Python start-up), against `podman run --rm`, each with the default
   network and with `--network none`. The image is the same busybox image for everybody,
   pulled from Debian's docker-registry on 127.0.0.1. Goal: sampan ≤ 0.33 × podman.
2. `ps` round trip: `sampan ps` (native, and the Python CLI) against `podman ps` (the docker
   CLI's `ps` needs dockerd, which this machine does not have: reported as unavailable) with 10
   containers running.
3. Memory with 10 containers running (`sleep`): sampand's VmRSS, and each monitor's PSS
   (/proc/PID/smaps_rollup; conmon's for podman's containers when podman runs). Goals:
   sampand ≤ 25 MiB, monitor ≤ 3 MiB.

The order of the contenders rotates every iteration; medians, p90 and ratios of medians are
printed. Nothing is asserted: this is a benchmark, not a test.

Run as root: ``python3 benches/containers_compare.py [-n 20] [--json out.json]``.
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
for p in (REPO / "tests" / "images", REPO / "tests" / "daemon"):
    sys.path.insert(0, str(p))
try:
    import sampan  # noqa: F401
except ImportError:  # a source tree that was not installed
    sys.path.insert(0, str(REPO / "python"))

RUN_GOAL = 0.33
PS_GOAL = 1.5
RSS_GOAL_MIB = 25
PSS_GOAL_MIB = 3


def kib(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def timed(argv: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.decode()[-500:]}")
    return dt


def summary(xs: list[float]) -> str:
    if not xs:
        return "unavailable"
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(len(xs) * 0.9))]
    return (f"median {statistics.median(xs) * 1000:7.1f} ms  p90 {p90 * 1000:7.1f}  "
            f"min {xs[0] * 1000:7.1f}")


def native_sampan(given: str | None) -> str | None:
    """The native client a user runs: --sampan, else the `sampan` pip installed beside this
    interpreter, else a developer's target/release/sampan (None: there is none)."""
    import sysconfig

    for p in ([given] if given else [Path(sysconfig.get_path("scripts")) / "sampan",
                                     REPO / "target" / "release" / "sampan"]):
        try:
            with open(p, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    return str(p)
        except OSError:
            continue
    return None


def api_run(client, ref: str, network: str | None) -> float:
    t = time.perf_counter()
    host = {"AutoRemove": False}
    if network:
        host["NetworkMode"] = network
    cid = client.post_json("/containers/create", body={"Image": ref, "Cmd": ["true"],
                                                        "HostConfig": host})["Id"]
    client.request("POST", f"/containers/{cid}/start").read()
    st = client.post_json(f"/containers/{cid}/wait")
    client.request("DELETE", f"/containers/{cid}").read()
    dt = time.perf_counter() - t
    if st.get("StatusCode") != 0:
        raise RuntimeError(f"API run exited {st}")
    return dt


def monitor_pids(cids: list[str]) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(cmd)
        if (b"sampan-monitor" in text or b"sampan.monitor" in text) and \
                any(c.encode() in text for c in cids):
            out.append(int(d.name))
    return out


def conmon_pids() -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == "conmon":
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="runs per contender (default 20)")
    ap.add_argument("--running", type=int, default=10, help="containers kept running for ps "
                                                           "and memory (default 10)")
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--json", default=None, help="write the raw timings here")
    ap.add_argument("--sampan", default=None, help="the native sampan to time (default: the "
                    "installed one, else target/release/sampan)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2

    import compileall

    import sampan
    from daemonlib import Daemon, _pythonpath, mkdir
    from registries import REGISTRY_BIN, Image, Registry, Uploader
    from sampan.client import Client
    from sampan.demoimage import layer_tar

    # An installed package has its bytecode; a source tree run with PYTHONDONTWRITEBYTECODE
    # (as this machine's environment sets) would compile every CLI module at every call.
    compileall.compile_dir(str(Path(sampan.__file__).parent), quiet=1)

    if not os.path.exists(REGISTRY_BIN):
        print("docker-registry is not installed", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="sampan-ctrbench-", dir=args.tmpdir))
    tmp.chmod(0o755)
    reg = d = None
    podman = shutil.which("podman")
    proot = tmp / "podman"
    pargs = [podman or "podman", "--root", str(proot / "root"), "--runroot",
             str(proot / "run"), "--storage-driver", "overlay", "--runtime", "runc"]
    # podman's default nofile and nproc are above this machine's hard limits (the runtime
    # refuses them), and crun refuses this hybrid cgroup layout: runc it is
    prun = ["run", "--ulimit", "nofile=1024:4096", "--ulimit", "nproc=1024:4096"]
    results: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    try:
        reg = Registry(tmp / "registry", "plain")
        Uploader(reg.url).image("bench/busybox", "1", Image([layer_tar()]))
        ref = f"{reg.host}/bench/busybox:1"
        d = Daemon(mkdir(tmp / "sampand"), fake=False)
        d.start("--insecure-registry", reg.host)
        client = Client(d.host, timeout=300)
        for _m in client.pull(f"{reg.host}/bench/busybox", "1"):
            pass
        env = dict(os.environ, SAMPAN_HOST=d.host, PYTHONPATH=_pythonpath(),
                   SAMPAN_PYTHON=sys.executable)
        pysampan = [sys.executable, "-m", "sampan.cli"]
        native = native_sampan(args.sampan)
        if native is None:
            notes["sampan (CLI)"] = "no native sampan (pip install ./, or cargo build " \
                                    "--release -p sampan-cli): the Python CLI's rows only"
        sampan = [native] if native else pysampan
        contenders = {
            "sampan run --rm (CLI)": lambda: timed([*sampan, "run", "--rm", ref, "true"], env),
            "sampan run --rm --network none (CLI)":
                lambda: timed([*sampan, "run", "--rm", "--network", "none", ref, "true"], env),
            "sampan run --rm (Python CLI)":
                lambda: timed([*pysampan, "run", "--rm", ref, "true"], env),
            "sampan API create+start+wait+rm": lambda: api_run(client, ref, None),
            "sampan API, network none": lambda: api_run(client, ref, "none"),
        }
        if podman:
            try:
                subprocess.run([*pargs, "pull", "--tls-verify=false", "-q", ref], check=True,
                               capture_output=True, timeout=300)
                contenders["podman run --rm"] = lambda: timed([*pargs, *prun, "--rm", ref, "true"])
                contenders["podman run --rm --network none"] = \
                    lambda: timed([*pargs, *prun, "--rm", "--network", "none", ref, "true"])
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                notes["podman"] = f"podman pull failed: {getattr(e, 'stderr', b'')!r}"[:300]
        else:
            notes["podman"] = "podman is not installed"
        names = list(contenders)
        for name in names:  # warm-up, and drop what does not work here
            try:
                contenders[name]()
                contenders[name]()
                results[name] = []
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                notes[name] = str(e)[:300]
        names = [n for n in names if n in results]
        if not names:
            raise SystemExit("nothing could run: " + json.dumps(notes, indent=1))
        for i in range(args.n):
            for name in names[i % len(names):] + names[:i % len(names)]:
                results[name].append(contenders[name]())

        # ---- ps round trip and memory with containers running
        cids = []
        for _ in range(args.running):
            cid = client.post_json("/containers/create", body={
                "Image": ref, "Cmd": ["sleep", "1000"],
                "HostConfig": {"NetworkMode": "none"}})["Id"]
            client.request("POST", f"/containers/{cid}/start").read()
            cids.append(cid)
        # idle memory with the containers running, as after a reboot of the daemon: a fresh
        # sampand that reattached to them (live-restore), not one that has just pulled
        client.close()
        d.stop()
        d.start("--insecure-registry", reg.host)
        client = Client(d.host, timeout=300)
        time.sleep(2.0)
        rss = kib(f"/proc/{d.pid}/status", "VmRSS") / 1024
        pcids = []
        if "podman run --rm" in results:
            for _ in range(args.running):
                pcids.append(subprocess.run([*pargs, *prun, "-d", "--network", "none", ref,
                                             "sleep", "1000"], check=True, capture_output=True,
                                            text=True).stdout.strip())
        ps = {"sampan ps (CLI)": lambda: timed([*sampan, "ps"], env),
              "sampan ps (Python CLI)": lambda: timed([*pysampan, "ps"], env),
              "sampan GET /containers/json (API)":
                  lambda: (lambda t: (client.get_json("/containers/json"),
                                      time.perf_counter() - t)[1])(time.perf_counter())}
        if pcids:
            ps["podman ps"] = lambda: timed([*pargs, "ps"])
        notes["docker ps"] = "unavailable: no dockerd on this machine"
        for name in ps:
            ps[name]()
            results[name] = []
        for i in range(args.n):
            for name in ps:
                results[name].append(ps[name]())
        rss_after_ps = kib(f"/proc/{d.pid}/status", "VmRSS") / 1024
        mons = monitor_pids(cids)
        pss = [kib(f"/proc/{p}/smaps_rollup", "Pss") / 1024 for p in mons]
        cpss = [kib(f"/proc/{p}/smaps_rollup", "Pss") / 1024 for p in conmon_pids()]
        for cid in cids:
            client.request("DELETE", f"/containers/{cid}", {"force": 1}).read()
        if pcids:
            subprocess.run([*pargs, "rm", "-f", "-t", "0", *pcids], capture_output=True)
    finally:
        if d is not None:
            d.stop()
        if reg is not None:
            reg.close()
        if podman and proot.exists():
            subprocess.run([*pargs, "system", "reset", "-f"], capture_output=True)
        subprocess.run(["umount", "-R", str(proot)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"load average {os.getloadavg()[0]:.1f}; N={args.n}; {args.running} containers running "
          f"for ps and memory; native sampan: {native or 'none'}")
    for name, xs in results.items():
        print(f"{name:42s} {summary(xs)}")
    for name, why in notes.items():
        print(f"{name:42s} {why}")

    def med(name: str) -> float | None:
        xs = results.get(name)
        return statistics.median(xs) if xs else None

    def ratio(a: str, b: str, goal: float) -> None:
        x, y = med(a), med(b)
        if x is None or y is None:
            return
        print(f"{a} / {b}: {x / y:.2f} (goal ≤ {goal}: {'met' if x / y <= goal else 'NOT met'})")

    print()
    ratio("sampan run --rm (CLI)", "podman run --rm", RUN_GOAL)
    ratio("sampan run --rm --network none (CLI)", "podman run --rm --network none", RUN_GOAL)
    ratio("sampan API create+start+wait+rm", "podman run --rm", RUN_GOAL)
    ratio("sampan run --rm (Python CLI)", "podman run --rm", RUN_GOAL)
    ratio("sampan ps (CLI)", "podman ps", PS_GOAL)
    ratio("sampan ps (Python CLI)", "podman ps", PS_GOAL)
    print(f"sampand VmRSS idle with {args.running} containers (restarted, reattached): "
          f"{rss:.1f} MiB (goal ≤ {RSS_GOAL_MIB}); after the ps loop {rss_after_ps:.1f} MiB")
    if pss:
        print(f"monitor PSS: median {statistics.median(pss):.2f} MiB, max {max(pss):.2f} "
              f"over {len(pss)} (goal ≤ {PSS_GOAL_MIB})")
    if cpss:
        print(f"conmon PSS: median {statistics.median(cpss):.2f} MiB over {len(cpss)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "notes": notes,
                                               "sampand_rss_mib": rss,
                                               "sampand_rss_after_ps_mib": rss_after_ps,
                                               "monitor_pss_mib": pss,
                                               "conmon_pss_mib": cpss}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
