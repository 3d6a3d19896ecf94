"""`cp` side by side: sampan cp and docker cp (both against sampand) and podman cp (its own
engine), into and out of a created container: one 128 MiB file, and a directory of 3000 small
files. Best of 3 per case; ratios against podman.

    sudo python3 benches/cp_compare.py

Needs root, the docker CLI and podman (skipped when missing); builds the busybox image locally.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests" / "daemon"))

from daemonlib import Daemon, mkdir, sampan_argv  # noqa: E402


def best(argv: list[str], env: dict, reset: list[str] | None = None, n: int = 3) -> float:
    out = []
    for _ in range(n):
        if reset:
            subprocess.run(reset, env=env, check=False, capture_output=True)
        t = time.perf_counter()
        r = subprocess.run(argv, env=env, capture_output=True)
        out.append(time.perf_counter() - t)
        if r.returncode:
            raise SystemExit(f"{argv}: {r.stderr.decode()[-500:]}")
    return min(out)


def main() -> int:
    if os.geteuid() != 0:
        print("needs root")
        return 1
    from sampan.demoimage import docker_archive

    work = Path(tempfile.mkdtemp(prefix="sampan-cp-bench-", dir="/tmp"))
    work.chmod(0o755)
    d = Daemon(mkdir(work / "d"), fake=False)
    archive = docker_archive("busybox:latest")
    try:
        d.start()
        st, _h, body = d.request("POST", "/images/load?quiet=1", archive,
                                 {"Content-Type": "application/x-tar"})
        assert st == 200, body
        st, c = d.json("POST", "/containers/create?name=cpb",
                       {"Image": "busybox", "Cmd": ["true"]})
        assert st == 201, c
        big = work / "big.bin"
        with open(big, "wb") as f:
            f.write(os.urandom(128 << 20))
        small = work / "small"
        small.mkdir()
        for i in range(3000):
            (small / f"f{i}").write_text(f"{i}\n")
        env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), SAMPAN_HOST=d.host,
                   DOCKER_HOST=d.host, DOCKER_CONFIG=str(work / "dc"))
        tools: dict[str, tuple[list[str], str]] = {"sampan": (sampan_argv() + ["cp"], "cpb")}
        if shutil.which("docker"):
            tools["docker→sampand"] = (["docker", "cp"], "cpb")
        if shutil.which("podman"):
            (work / "bb.tar").write_bytes(archive)
            subprocess.run(["podman", "load", "-q", "-i", str(work / "bb.tar")], check=True,
                           capture_output=True)
            subprocess.run(["podman", "rm", "-f", "cpbench"], capture_output=True)
            subprocess.run(["podman", "create", "--name", "cpbench", "--network", "none",
                            "localhost/busybox:latest", "true"], check=True,
                           capture_output=True)
            tools["podman"] = (["podman", "cp"], "cpbench")
        results: dict[str, dict[str, float]] = {}
        for name, (argv, ctr) in tools.items():
            out = work / f"out-{name.split('→')[0]}"
            r: dict[str, float] = {}
            r["file in"] = best(argv + [str(big), f"{ctr}:/tmp/big.bin"], env)
            r["file out"] = best(argv + [f"{ctr}:/tmp/big.bin", str(out) + ".bin"], env)
            r["3000 files in"] = best(argv + [str(small), f"{ctr}:/tmp/"], env)
            r["3000 files out"] = best(argv + [f"{ctr}:/tmp/small", str(out)], env,
                                       reset=["rm", "-rf", str(out)])
            results[name] = r
        cases = list(next(iter(results.values())))
        print(f"{'case':<16}" + "".join(f"{t:>18}" for t in results))
        for case in cases:
            row = f"{case:<16}"
            for t in results:
                v = results[t][case]
                ratio = f" ({v / results['podman'][case]:.2f}×)" if "podman" in results else ""
                row += f"{v:>9.3f}s{ratio:>9}"
            print(row)
        return 0
    finally:
        if shutil.which("podman"):
            subprocess.run(["podman", "rm", "-f", "cpbench"], capture_output=True)
        d.request("DELETE", "/containers/cpb?force=1")
        d.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
