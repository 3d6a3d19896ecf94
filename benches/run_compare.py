#!/usr/bin/env python3
"""Run-to-completion of `true`: Sampan side by side with crun and runc.

One bundle (Debian's busybox-static, ``runc spec`` defaults, terminal false, args ``true``) and
ONE loop in which every runtime runs it in turn, N times each, in an order that rotates every
iteration so that none always goes first:

- ``sampan-api``: ``sampan.runtime.run()`` in this process (the way the daemon will call it);
- ``sampan-cli``: the ``sampan runtime run`` command started as a process;
- ``crun``: ``crun --root TMP run -b BUNDLE ID`` started as a process;
- ``runc``: ``runc --root TMP run -b BUNDLE ID`` started as a process;
- ``spawn-true``: ``/bin/true`` started as a process, the cost of starting any process from
  here, which the three commands above pay too.

Every run gets a unique container id and every runtime its own state root in one temporary
directory; any non-zero exit status aborts the benchmark. It prints median, p90 and min per
runtime, the ratios sampan/crun and sampan/runc, the size of the extension module and the peak
RSS of a process that only imports ``sampan.runtime``.

Run as root: ``python3 benches/run_compare.py [-n N]``. On a host whose cgroups are a v1/v2
hybrid with hugetlb on the v2 side, crun refuses to run and is reported as unavailable with its
error, unless one of:

- ``--fix-crun-hugetlb`` binds hugetlb to a v1 hierarchy for the duration of the benchmark and
  undoes it afterwards (a change to the whole host: containers started meanwhile by anybody
  join that hierarchy);
- ``--private-v1`` runs the whole benchmark in a mount namespace of its own where the cgroup2
  mount is detached, so that every runtime sees a pure v1 layout (nothing changes on the host).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
try:
    import sampan  # noqa: F401
except ImportError:  # a source tree that was not installed
    sys.path.insert(0, str(REPO / "python"))

from sampan.bundle import make_bundle

CGROUP = Path("/sys/fs/cgroup")
HUGETLB_V1 = CGROUP / "hugetlb"
ORDER = ("sampan-api", "sampan-cli", "crun", "runc", "spawn-true")
LABELS = {
    "sampan-api": "sampan (binding, in process)",
    "sampan-cli": "sampan runtime run (process)",
    "crun": "crun run (process)",
    "runc": "runc run (process)",
    "spawn-true": "/bin/true (process)",
}


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


# --------------------------------------------------------------------------- the runtimes


def sampan_cli_argv() -> list[str]:
    """The `sampan` command of this interpreter's environment.

    The console script next to ``sys.executable`` is preferred over ``shutil.which``, which may
    find a pyenv shim (a shell script that adds tens of milliseconds to every start).
    """
    script = Path(sys.executable).parent / "sampan"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    code = "import sys; from sampan.cli import main; sys.argv[0] = 'sampan'; sys.exit(main())"
    return [sys.executable, "-c", code]


def subprocess_env() -> dict[str, str]:
    """Environment for `sampan` subprocesses: they import the same package as this process."""
    import sampan as pkg

    env = dict(os.environ)
    parent = str(Path(next(iter(pkg.__path__))).parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
    return env


def command(name: str, root: Path, cid: str, bundle: Path) -> list[str]:
    """The command line that runs `bundle` to completion under runtime `name`."""
    if name == "crun":
        return [shutil.which("crun") or "crun", "--root", str(root), "run", "-b", str(bundle), cid]
    if name == "runc":
        return [shutil.which("runc") or "runc", "--root", str(root), "run", "-b", str(bundle), cid]
    if name == "sampan-cli":
        return sampan_cli_argv() + ["runtime", "--root", str(root), "run", "-b", str(bundle), cid]
    if name == "spawn-true":
        return [shutil.which("true") or "/bin/true"]
    raise ValueError(name)


def spawn(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `argv` with stdin and stdout on /dev/null: (exit status, what it wrote to stderr)."""
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        check=False,
    )
    return proc.returncode, proc.stderr.decode(errors="replace").strip()


def tree_peak_rss(argv: list[str], env: dict[str, str] | None = None) -> int | None:
    """Peak RSS (KiB) of the largest process in the tree `argv` starts, from GNU time.

    Not from os.wait4 here: a child's ru_maxrss starts from its parent's high-water mark (the
    address space it was forked from), so a child of this Python process never reports less
    than this process's own peak. GNU time is small, so its children's figures are their own.
    """
    gnu_time = Path("/usr/bin/time")
    if not gnu_time.is_file():
        return None
    proc = subprocess.run(
        [str(gnu_time), "-f", "%M", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        check=False,
    )
    lines = proc.stderr.decode(errors="replace").split()
    if proc.returncode != 0 or not lines or not lines[-1].isdigit():
        return None
    return int(lines[-1])


class Runner:
    """Runs the bundle under one runtime, timing each run; ids are unique per run."""

    def __init__(self, name: str, bundle: Path, root: Path):
        self.name = name
        self.bundle = bundle
        self.root = root
        self.times: list[float] = []  # seconds
        self.count = 0
        self.env = subprocess_env() if name == "sampan-cli" else None
        if name == "sampan-api":
            from sampan import runtime

            self._rt = runtime

    def next_id(self) -> str:
        self.count += 1
        return f"bench-{os.getpid()}-{self.name}-{self.count}"

    def once(self) -> tuple[float, int, str]:
        """One run: (seconds, exit status, error text)."""
        cid = self.next_id()
        if self.name == "sampan-api":
            t0 = time.perf_counter()
            try:
                code = self._rt.run(cid, self.bundle, root=self.root)
                err = ""
            except self._rt.ContainerError as exc:
                code, err = -1, str(exc)
            return time.perf_counter() - t0, code, err
        argv = command(self.name, self.root, cid, self.bundle)
        t0 = time.perf_counter()
        code, err = spawn(argv, self.env)
        return time.perf_counter() - t0, code, err

    def peak_rss(self) -> int | None:
        """Peak RSS (KiB) of one run of this runtime as a process (None: in process)."""
        if self.name == "sampan-api":
            return None
        return tree_peak_rss(command(self.name, self.root, self.next_id(), self.bundle), self.env)

    def timed(self) -> None:
        elapsed, code, err = self.once()
        if code != 0:
            raise BenchError(
                f"{self.name}: run {self.count} exited with status {code}"
                + (f": {err}" if err else "")
            )
        self.times.append(elapsed)

    def cleanup(self) -> None:
        """Delete whatever containers an aborted run left under this runner's root."""
        if self.name == "spawn-true" or not self.root.is_dir():
            return
        ids = [p.name for p in self.root.iterdir() if p.is_dir()]
        for cid in ids:
            if self.name == "sampan-api":
                try:
                    self._rt.Container.load(cid, self.root).delete(force=True)
                except self._rt.ContainerError as exc:
                    print(f"# {self.name}: could not delete {cid}: {exc}", file=sys.stderr)
            elif self.name == "sampan-cli":
                argv = sampan_cli_argv() + [
                    "runtime",
                    "--root",
                    str(self.root),
                    "delete",
                    "-f",
                    cid,
                ]
                subprocess.run(argv, capture_output=True, env=self.env, check=False)
            else:
                subprocess.run(
                    [self.name, "--root", str(self.root), "delete", "-f", cid],
                    capture_output=True,
                    check=False,
                )


# --------------------------------------------------------------------------- crun and hugetlb


def _mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) for every mount of this process."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            if len(fields) >= 5 and len(rfields) >= 3:
                mnt = fields[4].replace("\\040", " ")
                out.append((mnt, rfields[0], rfields[2]))
    return out


def cgroup_layout() -> str:
    """'v2', 'v1', 'hybrid (v2 has: …)' — what this host mounts at /sys/fs/cgroup."""
    mounts = _mountinfo()
    v1 = [m for m in mounts if m[1] == "cgroup" and m[0].startswith(str(CGROUP))]
    v2 = [m for m in mounts if m[1] == "cgroup2" and m[0].startswith(str(CGROUP))]
    if v2 and not v1:
        return "v2"
    if v1 and not v2:
        return "v1"
    if v1 and v2:
        ctrl = Path(v2[0][0]) / "cgroup.controllers"
        try:
            have = ctrl.read_text().split()
        except OSError:
            have = []
        return f"hybrid (v2 at {v2[0][0]} has: {' '.join(have) or 'no controllers'})"
    return "none"


def _hugetlb_hierarchy() -> int:
    """The v1 hierarchy id hugetlb is bound to (0: the v2 hierarchy), from /proc/cgroups."""
    with open("/proc/cgroups") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "hugetlb":
                return int(parts[1])
    return -1


class HugetlbFix:
    """Binds the hugetlb controller to a v1 hierarchy at /sys/fs/cgroup/hugetlb so that crun
    accepts the hybrid layout (the issue's workaround), and undoes it.

    ``mount -t cgroup -o hugetlb`` answers EBUSY while hugetlb is enabled in a
    cgroup.subtree_control of the v2 hierarchy (Sampan enables it there); those entries are
    switched off first, deepest first, and switched back on by :meth:`undo`.
    """

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.made_dir = False
        self.mounted = False
        self.disabled: list[Path] = []  # cgroup dirs whose subtree_control lost hugetlb

    @staticmethod
    def _unified() -> Path | None:
        for mnt, fstype, _ in _mountinfo():
            if fstype == "cgroup2" and mnt.startswith(str(CGROUP)):
                return Path(mnt)
        return None

    @staticmethod
    def _mount() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(HUGETLB_V1)],
            capture_output=True,
            text=True,
            check=False,
        )

    def apply(self) -> None:
        if _hugetlb_hierarchy() > 0:
            self.log("hugetlb is already bound to a v1 hierarchy")
            return
        if not HUGETLB_V1.exists():
            HUGETLB_V1.mkdir(parents=True)
            self.made_dir = True
        res = self._mount()
        if res.returncode != 0:
            unified = self._unified()
            if unified is not None:
                users = [
                    p.parent
                    for p in unified.rglob("cgroup.subtree_control")
                    if "hugetlb" in p.read_text().split()
                ]
                for d in sorted(users, key=lambda p: len(p.parts), reverse=True):
                    (d / "cgroup.subtree_control").write_text("-hugetlb")
                    self.disabled.append(d)
                if users:
                    self.log(
                        "hugetlb switched off in the v2 subtree_control of: "
                        + ", ".join(str(d) for d in users)
                    )
            for _ in range(20):
                res = self._mount()
                if res.returncode == 0:
                    break
                time.sleep(0.1)
        if res.returncode != 0:
            msg = (res.stderr or res.stdout).strip()
            self.undo()
            raise BenchError(f"cannot bind hugetlb to a v1 hierarchy: {msg}")
        self.mounted = True
        self.log(f"mounted a cgroup v1 hierarchy with hugetlb at {HUGETLB_V1}")

    def undo(self) -> None:
        if self.mounted and not self._unbind():
            # Containers (this run's or anybody's) still hold cgroups there: leave the hierarchy
            # mounted, where it can be seen and cleaned up, rather than hidden.
            self._mount()
            self.log(
                f"warning: hugetlb stays bound to the v1 hierarchy at {HUGETLB_V1}: cgroups "
                "there are still in use; remove them, then umount it and rmdir the directory"
                + (
                    "; then write +hugetlb to cgroup.subtree_control in "
                    + ", ".join(str(d) for d in reversed(self.disabled))
                    if self.disabled
                    else ""
                )
            )
            return
        self.mounted = False
        if self.made_dir:
            try:
                HUGETLB_V1.rmdir()
            except OSError as exc:
                self.log(f"warning: could not remove {HUGETLB_V1}: {exc}")
            self.made_dir = False
        for d in reversed(self.disabled):
            for _ in range(20):
                try:
                    (d / "cgroup.subtree_control").write_text("+hugetlb")
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                self.log(f"warning: could not switch hugetlb back on in {d}")
        if self.disabled:
            self.log("hugetlb switched back on in the v2 subtree_control")
        self.disabled = []

    def _unbind(self) -> bool:
        """Unmount the v1 hierarchy so that hugetlb returns to v2; True when it did.

        The hierarchy is only destroyed when it has no cgroups left at unmount time, and a
        removed cgroup can linger a little, so: remove the cgroups, unmount, and if the
        hierarchy survived, mount it again and retry.
        """
        for attempt in range(20):
            if attempt:
                time.sleep(0.1)
                if self._mount().returncode != 0:
                    return _hugetlb_hierarchy() == 0
            dirs = [p for p in HUGETLB_V1.rglob("*") if p.is_dir()]
            for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
                try:
                    d.rmdir()
                except OSError:
                    continue
            subprocess.run(["umount", str(HUGETLB_V1)], capture_output=True, check=False)
            time.sleep(0.05)
            if _hugetlb_hierarchy() == 0:
                return True
        return False


def enter_private_v1() -> str:
    """Move this process (and so every runtime it starts) into a mount namespace of its own in
    which the cgroup2 mounts under /sys/fs/cgroup are detached: a pure v1 layout that crun
    accepts. Nothing changes outside this process; returns the detached mount points."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private, mnt_detach = 0x00020000, 0x4000, 0x40000, 2
    if libc.unshare(clone_newns) != 0:
        err = ctypes.get_errno()
        raise BenchError(f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        err = ctypes.get_errno()
        raise BenchError(f"mount --make-rprivate /: {os.strerror(err)}")
    gone = []
    for mnt, fstype, _ in reversed(_mountinfo()):
        if fstype == "cgroup2" and mnt.startswith(str(CGROUP)):
            if libc.umount2(mnt.encode(), mnt_detach) != 0:
                err = ctypes.get_errno()
                raise BenchError(f"umount {mnt}: {os.strerror(err)}")
            gone.append(mnt)
    return ", ".join(gone) or "nothing"


# --------------------------------------------------------------------------- facts


def so_facts() -> dict[str, object]:
    """Path, size and strip state of the extension module `sampan._runtime`."""
    from sampan import _runtime

    path = Path(_runtime.__file__)
    facts: dict[str, object] = {"path": str(path), "bytes": path.stat().st_size}
    try:
        sections = _elf_sections(path)
        facts["symtab"] = ".symtab" in sections
        facts["debug_info"] = any(s.startswith(".debug") for s in sections)
    except (OSError, ValueError, struct.error):
        pass
    return facts


def _elf_sections(path: Path) -> list[str]:
    """The section names of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    str_off, str_size = headers[shstrndx][4], headers[shstrndx][5]
    strtab = data[str_off : str_off + str_size]
    return [strtab[h[0] : strtab.index(b"\0", h[0])].decode() for h in headers]


def import_peak_rss(code: str) -> int:
    """Peak RSS (KiB, VmHWM) of a fresh `python -c code`, as the process itself sees it."""
    probe = (
        f"{code}\n"
        "for line in open('/proc/self/status'):\n"
        "    if line.startswith('VmHWM:'):\n"
        "        print(line.split()[1])\n"
    )
    values = []
    for _ in range(5):
        proc = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            check=False,
        )
        if proc.returncode != 0:
            raise BenchError(f"python -c {code!r} failed: {proc.stderr.strip()}")
        values.append(int(proc.stdout.split()[-1]))
    return int(statistics.median(values))


def version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "not installed"
    return out.splitlines()[0].strip() if out else "?"


def fs_type(path: Path) -> str:
    best = ("", "?")
    for mnt, fstype, _ in _mountinfo():
        if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best[0]):
            best = (mnt, fstype)
    return best[1]


# --------------------------------------------------------------------------- statistics


def p90(values: list[float]) -> float:
    """The 90th percentile (nearest rank)."""
    s = sorted(values)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def summary(times: list[float]) -> dict[str, float]:
    ms = [t * 1000.0 for t in times]
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p90_ms": p90(ms),
        "min_ms": min(ms),
        "mean_ms": statistics.fmean(ms),
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run_compare.py",
        description="Run-to-completion of `true`: Sampan against crun and runc, side by side.",
    )
    p.add_argument("-n", type=int, default=100, help="runs per runtime (default 100)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per runtime (default 2)")
    p.add_argument(
        "--runtimes", default=",".join(ORDER), help=f"comma-separated subset of {','.join(ORDER)}"
    )
    p.add_argument(
        "--tmpdir",
        default=None,
        help="where the bundle and the state roots go (default: the system's temp "
        "directory); its file system matters since Sampan fsyncs its state",
    )
    p.add_argument(
        "--fix-crun-hugetlb",
        action="store_true",
        help="if crun refuses the hybrid cgroup layout, bind hugetlb to a v1 "
        "hierarchy at /sys/fs/cgroup/hugetlb for the run (undone afterwards)",
    )
    p.add_argument(
        "--private-v1",
        action="store_true",
        help="run everything in a mount namespace of its own without the cgroup2 mount, so "
        "that every runtime (crun included) sees a pure v1 layout; changes nothing on the host",
    )
    p.add_argument(
        "--keep-hugetlb-mount",
        action="store_true",
        help="with --fix-crun-hugetlb: leave hugetlb bound to v1 afterwards",
    )
    p.add_argument("--json", metavar="FILE", help="also write the raw timings and summary here")
    ns = p.parse_args(argv)
    ns.runtimes = [r.strip() for r in ns.runtimes.split(",") if r.strip()]
    unknown = [r for r in ns.runtimes if r not in ORDER]
    if unknown:
        p.error(f"unknown runtime(s): {', '.join(unknown)}")
    if ns.private_v1 and ns.fix_crun_hugetlb:
        p.error("--private-v1 and --fix-crun-hugetlb are two ways to the same end: pick one")
    if ns.n < 1:
        p.error("-n must be at least 1")
    return ns


def log(msg: str) -> None:
    print(f"# {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("run_compare.py: needs root (namespaces and cgroups)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sampan-bench-", dir=args.tmpdir))
    os.chmod(work, 0o755)
    fix: HugetlbFix | None = None
    runners: dict[str, Runner] = {}
    layout = cgroup_layout()
    if args.private_v1:
        try:
            gone = enter_private_v1()
        except BenchError as exc:
            print(f"run_compare.py: error: {exc}", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
            return 1
        layout += f"; seen by the runtimes: {cgroup_layout()} (--private-v1 detached {gone})"
    try:
        bundle = make_bundle(work / "bundle", ["true"])
        unavailable: dict[str, str] = {}
        for name in args.runtimes:
            if name in ("crun", "runc") and shutil.which(name) is None:
                unavailable[name] = f"{name} is not installed"
                continue
            runners[name] = Runner(name, bundle, work / "state" / name)

        # Probe (and warm up) every runtime; crun may refuse the hybrid cgroup layout.
        for name, r in list(runners.items()):
            _, code, err = r.once()
            if code != 0 and name == "crun" and args.fix_crun_hugetlb:
                log(f"crun refused to run: {err}")
                fix = HugetlbFix(log)
                fix.apply()
                _, code, err = r.once()
            if code != 0:
                r.cleanup()
                if name in ("sampan-api", "sampan-cli", "spawn-true"):
                    raise BenchError(f"{name}: exit status {code}: {err}")
                hint = (
                    "; try --private-v1 or --fix-crun-hugetlb"
                    if name == "crun" and "hybrid" in err and not args.fix_crun_hugetlb
                    else ""
                )
                unavailable[name] = f"exit status {code}: {err or '(no message)'}{hint}"
                del runners[name]
                continue
            for _ in range(max(0, args.warmup - 1)):
                r.timed()
            r.times.clear()
        if not runners:
            raise BenchError("no runtime left to measure")

        names = [n for n in ORDER if n in runners]
        log(f"{len(names)} runtimes x {args.n} runs, one loop, order rotating: " + ", ".join(names))
        t_start = time.perf_counter()
        gc.collect()
        gc.disable()
        try:
            for i in range(args.n):
                k = i % len(names)
                for name in names[k:] + names[:k]:
                    runners[name].timed()
        finally:
            gc.enable()
        wall = time.perf_counter() - t_start

        if fix is not None and fix.mounted:
            layout += f"; hugetlb bound to v1 at {HUGETLB_V1} for crun (--fix-crun-hugetlb)"
        report(args, names, runners, unavailable, bundle, work, wall, layout)
        return 0
    except BenchError as exc:
        print(f"run_compare.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for r in runners.values():
            r.cleanup()
        if fix is not None and not args.keep_hugetlb_mount:
            fix.undo()
        shutil.rmtree(work, ignore_errors=True)


def report(args, names, runners, unavailable, bundle, work, wall, layout) -> None:
    stats = {n: summary(runners[n].times) for n in names}
    so = so_facts()
    rss_python = import_peak_rss("pass")
    rss_import = import_peak_rss("import sampan.runtime")
    rss_runs = {n: runners[n].peak_rss() for n in names}

    print()
    print(f"date        {datetime.date.today().isoformat()}")
    print(f"host        {platform.node()}  Linux {platform.release()}  {os.cpu_count()} CPUs")
    print(f"cgroups     {layout}")
    print(f"runtimes    {version(['crun', '--version'])}; {version(['runc', '--version'])}")
    print(f"python      {sys.executable} {platform.python_version()}")
    print(f"sampan cli  {' '.join(sampan_cli_argv())}")
    print(f"bundle      {bundle} (busybox-static, runc spec defaults, terminal false, `true`)")
    print(f"state roots {work / 'state'} ({fs_type(work)})")
    print(f"loop        {args.n} runs per runtime, {wall:.1f} s in all")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load        {load} (1, 5, 15 min; other work on the host skews the numbers)")
    print()
    head = (
        f"{'runtime':<31}{'median ms':>10}{'p90 ms':>10}{'min ms':>10}{'mean ms':>10}"
        f"{'peak RSS':>11}"
    )
    print(head)
    print("-" * len(head))
    for n in names:
        s = stats[n]
        rss = rss_runs[n]
        rss_s = f"{rss / 1024:.1f} MiB" if rss else "-"
        print(
            f"{LABELS[n]:<31}{s['median_ms']:>10.2f}{s['p90_ms']:>10.2f}{s['min_ms']:>10.2f}"
            f"{s['mean_ms']:>10.2f}{rss_s:>11}"
        )
    for n, why in unavailable.items():
        print(f"{LABELS.get(n, n):<31}unavailable: {why}")
    if any(rss_runs.values()):
        print(
            "(peak RSS: the largest process of one more run, measured with GNU time apart "
            "from the timed loop)"
        )
    print()

    ratios = {}
    for a in ("sampan-api", "sampan-cli"):
        for b in ("crun", "runc"):
            if a in stats and b in stats:
                ratios[f"{a}/{b}"] = stats[a]["median_ms"] / stats[b]["median_ms"]
    if ratios:
        print("ratios of medians (below 1: Sampan is faster)")
        for k, v in ratios.items():
            print(f"  {k:<22}{v:6.2f}")
        if "sampan-api/crun" in ratios:
            met = ratios["sampan-api/crun"] <= 1.0
            print(f"  goal (binding at or below crun): {'met' if met else 'NOT met'}")
        print()
    size = int(so["bytes"])
    strip = ""
    if "symtab" in so:
        strip = ", stripped" if not so["symtab"] else ", not stripped"
        strip += ", with debug info" if so.get("debug_info") else ""
    print(f"extension   {so['path']}: {size} bytes ({size / 2**20:.2f} MiB{strip})")
    print(
        f"peak RSS    python -c 'import sampan.runtime': {rss_import / 1024:.1f} MiB "
        f"(python -c pass: {rss_python / 1024:.1f} MiB, +{(rss_import - rss_python) / 1024:.1f}"
        f" MiB)"
    )

    if args.json:
        doc = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "cgroups": layout,
            "n": args.n,
            "loadavg": os.getloadavg(),
            "state_fs": fs_type(work),
            "summary": stats,
            "unavailable": unavailable,
            "ratios": ratios,
            "extension": so,
            "peak_rss_kib": {
                "python": rss_python,
                "import_sampan_runtime": rss_import,
                "runs": rss_runs,
            },
            "times_ms": {n: [t * 1000.0 for t in runners[n].times] for n in names},
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"raw timings written to {args.json}")


if __name__ == "__main__":
    sys.exit(main())
