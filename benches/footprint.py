#!/usr/bin/env python3
"""Sampan's footprint on a router (issue 6): wheel size per target, installed size with the
required dependencies, and sampand's idle memory — against what Docker takes.

For every wheel in dist/ (``scripts/build-wheels`` writes them; ``--build`` makes a fresh one
for this machine first, as ``pip install .`` would: maturin plus the monitor), the wheel is
installed with pip into an empty ``--target`` directory together with its REQUIRED
dependencies only (no extras), for that wheel's platform (``pip --platform …
--only-binary=:all:``, CPython 3.11 as on OpenWrt 23.05/24.10), and the directory is measured
three ways:

- ``py``: as pip leaves it with ``--no-compile`` (sources only);
- ``py+pyc``: pip's default, sources plus ``__pycache__``;
- ``pyc``: OpenWrt's layout — python3-package.mk compiles to legacy ``.pyc`` next to each
  source and ships the ``.pyc`` only (the sources go to the ``-src`` package).

Sizes are the sum of file sizes (what opkg's Installed-Size counts), in MB = 10^6 bytes.
The idle RSS is a real sampand (real graph, temporary data root) after it has been quiet for a
second, median of ``--rss-starts`` starts (benches/daemon_rss.py has the detail after pulls).

References (issue 6): OpenWrt's docker + dockerd + containerd + runc packages install about
60 MB; dockerd + containerd idle here: 111 MiB. Goal: ≤ 8 MB installed with the required
dependencies.

Needs pip access to PyPI (or a pip cache) for the dependencies. Run as root for the RSS part:
``python3 benches/footprint.py [--build] [--no-rss] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GOAL_MB = 8.0
OPENWRT_DOCKER_MB = 60
DOCKER_IDLE_MIB = 111
PYTHON_VERSION = "3.11"

PLATFORM_RE = re.compile(r"-cp\d+-abi3-(.+)\.whl$")


def mb(n: float) -> str:
    return f"{n / 1e6:6.2f}"


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
    return total


def wheel_platforms(wheel: Path) -> list[str]:
    m = PLATFORM_RE.search(wheel.name)
    return m.group(1).split(".") if m else []


def wheel_label(wheel: Path) -> str:
    """The wheel's last platform tag, and its build tag when it has one (the two MIPS wheels
    share musllinux_1_2_mips; the little-endian one is build tag 1mipsel)."""
    plat = wheel_platforms(wheel)
    if not plat:
        return wheel.name
    parts = wheel.name[:-4].split("-")
    return plat[-1] + (f" ({parts[2]})" if len(parts) == 6 else "")


def so_size(wheel: Path) -> int:
    with zipfile.ZipFile(wheel) as z:
        return sum(i.file_size for i in z.infolist() if ".so" in i.filename
                   or i.filename.endswith("/sampan-monitor"))


def tree_dependencies() -> list[str]:
    """The required dependencies of this tree's pyproject.toml (the wheels in dist/ may have
    been built from an older one)."""
    import tomllib

    with open(REPO / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"].get("dependencies") or [])


def pip_target(dest: Path, wheel: Path, native: bool, what: list[str], deps: bool) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
           "--disable-pip-version-check", "--root-user-action=ignore", "--target", str(dest)]
    if not deps:
        cmd.append("--no-deps")
    if not native:
        cmd += ["--only-binary=:all:", "--python-version", PYTHON_VERSION,
                "--implementation", "cp"]
        for p in wheel_platforms(wheel):
            cmd += ["--platform", p]
    subprocess.run(cmd + what, check=True)


def install(wheel: Path, dest: Path, native: bool) -> None:
    """The wheel (without its recorded dependencies) plus the tree's required dependencies,
    resolved for the wheel's platform."""
    pip_target(dest, wheel, native, [str(wheel)], deps=False)
    extra = dest.parent / (dest.name + "-deps")
    pip_target(extra, wheel, native, tree_dependencies(), deps=True)
    shutil.copytree(extra, dest, symlinks=True, dirs_exist_ok=True)
    shutil.rmtree(extra)


def packages(root: Path) -> dict[str, int]:
    """Bytes per distribution (its package dirs and modules plus its .dist-info)."""
    owner: dict[str, str] = {}
    for info in root.glob("*.dist-info"):
        dist = info.name.split("-")[0]
        record = info / "RECORD"
        if record.exists():
            for line in record.read_text().splitlines():
                top = line.split(",", 1)[0].split("/", 1)[0]
                if top and not top.endswith(".dist-info"):
                    owner.setdefault(top, dist)
        owner[info.name] = dist
    out: dict[str, int] = {}
    for entry in root.iterdir():
        if entry.name == "bin":
            dist = "scripts"
        else:
            dist = owner.get(entry.name, entry.name)
        size = tree_bytes(entry) if entry.is_dir() else entry.lstat().st_size
        out[dist] = out.get(dist, 0) + size
    return out


def parts(root: Path) -> dict[str, int]:
    """Bytes per kind of file: where an install's size goes."""
    out: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            if p.is_symlink():
                continue
            rel = p.relative_to(root).as_posix()
            top = rel.split("/", 1)[0]
            if top.endswith(".dist-info"):
                kind = "dist-info (metadata, RECORD, SBOM)"
            elif top == "bin":
                kind = "bin/ (native sampan client, sampand launcher)"
            elif rel.endswith(".so"):
                kind = "sampan: extension _runtime.abi3.so"
            elif rel.endswith("/libexec/sampan-monitor"):
                kind = "sampan: static monitor"
            elif top == "sampan":
                kind = "sampan: " + ("bytecode (.pyc)" if f.endswith(".pyc") else "sources")
            else:
                kind = f"{top}: " + ("bytecode (.pyc)" if f.endswith(".pyc") else "sources")
            out[kind] = out.get(kind, 0) + p.lstat().st_size
    return out


def measure(wheel: Path, tmp: Path, native: bool) -> dict:
    dest = tmp / ("site-" + wheel.stem)
    install(wheel, dest, native)
    py = tree_bytes(dest)
    per = packages(dest)
    # pip's default: __pycache__ next to the sources
    both = tmp / "both"
    shutil.copytree(dest, both, symlinks=True)
    compileall.compile_dir(str(both), quiet=2, workers=1)
    py_pyc = tree_bytes(both)
    kinds = parts(both)
    shutil.rmtree(both)
    # OpenWrt: legacy .pyc beside each source, sources removed
    only = tmp / "only"
    shutil.copytree(dest, only, symlinks=True)
    compileall.compile_dir(str(only), quiet=2, legacy=True, workers=1)
    for p in only.rglob("*.py"):
        p.unlink()
    pyc = tree_bytes(only)
    shutil.rmtree(only)
    shutil.rmtree(dest)
    return {"py": py, "py+pyc": py_pyc, "pyc": pyc, "packages": per, "parts": kinds}


def build_host_wheel(out: Path) -> Path:
    """The wheel `pip install .` makes here: through the project's PEP 517 backend, which adds
    the monitor (a bare `maturin build` leaves it out: libexec/ is git-ignored)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "--wheel-dir",
                    str(out), str(REPO)], check=True)
    return max(out.glob("sampan-*.whl"), key=lambda p: p.stat().st_mtime)


def idle_rss(starts: int) -> list[int]:
    # this tree's sampand, not an installed copy (daemonlib runs the sampan it imports)
    for p in (REPO / "tests" / "images", REPO / "tests" / "daemon", REPO / "python", HERE):
        sys.path.insert(0, str(p))
    from daemon_rss import compile_tree
    from daemonlib import Daemon

    compile_tree()
    out = []
    for _ in range(starts):
        root = Path(tempfile.mkdtemp(prefix="sampan-fp-"))
        d = Daemon(root, fake=False)
        d.start()
        try:
            time.sleep(1.0)
            for line in Path(f"/proc/{d.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]))
        finally:
            d.stop()
            shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dist", default=str(REPO / "dist"), help="where the wheels are")
    ap.add_argument("--build", action="store_true",
                    help="first build this machine's wheel from the tree (maturin)")
    ap.add_argument("--no-rss", action="store_true", help="skip sampand's idle RSS")
    ap.add_argument("--rss-starts", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sampan-footprint-"))
    result: dict = {"wheels": {}, "goal_mb": GOAL_MB}
    try:
        wheels = sorted(Path(args.dist).glob("sampan-*.whl"))
        native_tag = None
        if args.build:
            built = build_host_wheel(tmp / "built")
            wheels = [built] + [w for w in wheels if wheel_platforms(w) != wheel_platforms(built)]
            native_tag = wheel_platforms(built)
        if not wheels:
            print(f"no wheels in {args.dist}: run scripts/build-wheels or pass --build",
                  file=sys.stderr)
            return 2
        print(f"required dependencies (this tree's pyproject.toml): "
              f"{', '.join(tree_dependencies())}")
        print(f"{'wheel (target)':44s} {'wheel':>6s} {'native':>6s} {'py':>6s} "
              f"{'py+pyc':>6s} {'pyc':>6s}   MB, installed with required dependencies")
        for w in wheels:
            native = wheel_platforms(w) == native_tag
            try:
                m = measure(w, tmp, native)
            except subprocess.CalledProcessError as e:
                print(f"{w.name}: pip failed ({e})", file=sys.stderr)
                continue
            m["wheel"] = w.stat().st_size
            m["native"] = so_size(w)
            result["wheels"][w.name] = m
            target = wheel_label(w)
            print(f"{target:44s} {mb(m['wheel'])} {mb(m['native'])} {mb(m['py'])} "
                  f"{mb(m['py+pyc'])} {mb(m['pyc'])}")
        if result["wheels"]:
            name, first = next(iter(result["wheels"].items()))
            print(f"\nper distribution, {name} (py, MB):")
            for dist, n in sorted(first["packages"].items(), key=lambda x: -x[1]):
                print(f"  {dist:28s} {mb(n)}")
            for name, m in result["wheels"].items():
                print(f"\nwhere the bytes go, {name} (py+pyc, pip's default, MB):")
                for kind, n in sorted(m["parts"].items(), key=lambda x: -x[1]):
                    print(f"  {kind:48s} {mb(n)}")
            worst = max(max(m["py"], m["pyc"]) for m in result["wheels"].values())
            worst_all = max(m["py+pyc"] for m in result["wheels"].values())
            print(f"\ngoal: ≤ {GOAL_MB:.0f} MB installed with the required dependencies "
                  f"(OpenWrt's docker + dockerd + containerd + runc: ~{OPENWRT_DOCKER_MB} MB)")
            print(f"  router layout (pyc only) or sources only, worst target: "
                  f"{worst / 1e6:.2f} MB → {'met' if worst <= GOAL_MB * 1e6 else 'NOT met'}")
            print(f"  pip's default (sources + __pycache__), worst target: "
                  f"{worst_all / 1e6:.2f} MB → "
                  f"{'met' if worst_all <= GOAL_MB * 1e6 else 'NOT met'}")
        if not args.no_rss:
            if os.geteuid() != 0:
                print("\nsampand idle RSS: skipped (needs root)")
            else:
                kib = idle_rss(args.rss_starts)
                result["idle_rss_kib"] = kib
                print(f"\nsampand idle RSS: {statistics.median(kib) / 1024:.1f} MiB (median of "
                      f"{len(kib)} starts; dockerd + containerd idle here: {DOCKER_IDLE_MIB} "
                      "MiB)")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
