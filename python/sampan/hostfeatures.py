"""What this host's kernel offers containers, for `info`'s flags and Warnings and for the
daemon's choices: seccomp filters and the cgroup controllers (v1, v2 or hybrid).

Routers run kernels built without much: OpenWrt's have no CONFIG_SECCOMP_FILTER on several
targets, and some lack memory or cpu controllers. Containers still run there, without what is
missing, and `info` and the daemon's log say so with docker's wording.

Reading only /proc and /sys (no ctypes): the daemon imports this at start and stays small.
`SAMPAN_FAKE_NO_SECCOMP=1` makes `seccomp_supported()` answer False — a test hook, because no
kernel without seccomp can be booted on the test machine.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
NO_SECCOMP_WARNING = ("WARNING: seccomp is not enabled in this kernel: containers run without "
                      "the default seccomp profile")


@functools.lru_cache(maxsize=None)
def _seccomp_supported() -> bool:
    # /proc/sys/kernel/seccomp exists with CONFIG_SECCOMP_FILTER (kernel ≥ 4.14); before it,
    # the "Seccomp:" line of /proc/self/status tells CONFIG_SECCOMP, which filters then
    # came with on every kernel that docker supports.
    if os.path.exists("/proc/sys/kernel/seccomp/actions_avail"):
        return True
    try:
        with open("/proc/self/status") as f:
            status = f.read()
    except OSError:
        return False
    if "Seccomp_filters:" in status:     # 5.9+: the line exists with CONFIG_SECCOMP_FILTER
        return True
    if "Seccomp:" not in status:
        return False
    release = os.uname().release.split(".")
    try:
        return (int(release[0]), int(release[1].split("-")[0])) < (4, 14)
    except (IndexError, ValueError):
        return False


def seccomp_supported() -> bool:
    """Whether the kernel can load seccomp filters (what every profile needs)."""
    if os.environ.get("SAMPAN_FAKE_NO_SECCOMP", "") not in ("", "0"):
        return False
    return _seccomp_supported()


def cgroup_version(root: Path = CGROUP_ROOT) -> str:
    return "2" if (root / "cgroup.controllers").exists() else "1"


def _v2_child(root: Path, name: str) -> bool:
    """Whether some non-root cgroup has the interface file `name` (a v2 root has no
    memory.max, cpu.max…, a v1 root no pids.max); one level down is enough."""
    try:
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False) and (Path(entry.path) / name).exists():
                return True
    except OSError:
        pass
    return False


def cgroup_features(root: Path = CGROUP_ROOT) -> dict[str, bool]:
    """docker's `info` flags: MemoryLimit, SwapLimit, CpuCfsPeriod, CpuCfsQuota, CPUShares,
    CPUSet, PidsLimit, for the cgroup layout this host has."""
    if cgroup_version(root) == "2":
        try:
            ctrl = set((root / "cgroup.controllers").read_text().split())
        except OSError:
            ctrl = set()
        memory, cpu = "memory" in ctrl, "cpu" in ctrl
        return {
            "MemoryLimit": memory,
            "SwapLimit": memory and _v2_child(root, "memory.swap.max"),
            "CpuCfsPeriod": cpu, "CpuCfsQuota": cpu, "CPUShares": cpu,
            "CPUSet": "cpuset" in ctrl, "PidsLimit": "pids" in ctrl,
        }

    def has(ctrl: str, name: str) -> bool:
        # some files exist only below the hierarchy's root (pids.max)
        return (root / ctrl / name).exists() or _v2_child(root / ctrl, name)

    return {
        "MemoryLimit": has("memory", "memory.limit_in_bytes"),
        "SwapLimit": has("memory", "memory.memsw.limit_in_bytes"),
        "CpuCfsPeriod": has("cpu", "cpu.cfs_period_us"),
        "CpuCfsQuota": has("cpu", "cpu.cfs_quota_us"),
        "CPUShares": has("cpu", "cpu.shares"),
        "CPUSet": has("cpuset", "cpuset.cpus"),
        "PidsLimit": has("pids", "pids.max"),
    }


# docker's wording (daemon/info_unix.go), in its order
_CGROUP_WARNINGS = (
    ("MemoryLimit", "WARNING: No memory limit support"),
    ("SwapLimit", "WARNING: No swap limit support"),
    ("CpuCfsQuota", "WARNING: No cpu cfs quota support"),
    ("CpuCfsPeriod", "WARNING: No cpu cfs period support"),
    ("CPUShares", "WARNING: No cpu shares support"),
    ("CPUSet", "WARNING: No cpuset support"),
    ("PidsLimit", "WARNING: No pids limit support"),
)


def warnings(features: dict[str, bool] | None = None) -> list[str]:
    """`info` Warnings about the kernel: missing cgroup controllers, missing seccomp."""
    features = cgroup_features() if features is None else features
    out = [text for key, text in _CGROUP_WARNINGS if not features.get(key, True)]
    if not seccomp_supported():
        out.append(NO_SECCOMP_WARNING)
    return out


# Go's GOARCH for `uname -m`, as docker's version and info report Arch
_GOARCH = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "i386": "386", "i686": "386", "armv7l": "arm", "armv6l": "arm", "armv5tel": "arm",
    "mips": "mips", "mipsel": "mipsle", "mips64": "mips64", "mips64el": "mips64le",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
}


def goarch() -> str:
    """This machine's architecture in Go's words (the daemon's and the CLI's `version`)."""
    import platform
    import sys

    m = platform.machine()
    if m in ("mips", "mips64") and sys.byteorder == "little":
        m += "el"  # uname -m says mips on little-endian MIPS too; Go calls it mipsle
    return _GOARCH.get(m, m)
