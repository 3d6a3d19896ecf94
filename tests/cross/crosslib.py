"""Helpers of the cross-build proof (tests/cross): where wheels, caches and interpreters are,
and running smoke.py in a target's interpreter. Named uniquely so that importing it from a test
module never picks up another directory's conftest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

from cross_targets import WheelTarget  # noqa: E402

DEBIAN_PYTHON = "usr/bin/python3.11"
HOST_PYTHON = "/usr/bin/python3.11"  # Debian's CPython, the reference run on x86_64


def cache_dir() -> Path:
    env = os.environ.get("SAMPAN_CROSS_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/sampan-cross")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sampan-cross"


def dist_dir() -> Path:
    return Path(os.environ.get("SAMPAN_CROSS_DIST", REPO / "dist"))


def wheel_name_parts(name: str) -> tuple[str, str, str, str, str, str]:
    """(distribution, version, build tag or "", python, abi, platforms) of a wheel file name
    (PEP 427: a build tag starts with a digit)."""
    parts = name[:-4].split("-")
    if len(parts) == 5:
        parts.insert(2, "")
    dist, version, build, py, abi, plat = parts
    return dist, version, build, py, abi, plat


def wheel_for(t: WheelTarget) -> Path | None:
    want = (t.build_tag, set(t.platform.split(".")))
    for w in sorted(dist_dir().glob("sampan-*.whl")):
        _, _, build, _, _, plat = wheel_name_parts(w.name)
        if (build, set(plat.split("."))) == want:
            return w
    return None


def interpreter_root(t: WheelTarget) -> Path | None:
    """The directory qemu uses as library prefix, holding usr/bin/python3.11."""
    if t.glibc:
        if t.debian_arch == "amd64":
            return Path("/")
        root = cache_dir() / "roots" / f"debian-{t.debian_arch}" / "root"
    else:
        root = cache_dir() / "roots" / t.name / "root"
    return root if (root / DEBIAN_PYTHON).exists() else None


def packaging_dir() -> str | None:
    """A directory from which `import packaging` gives pip's tag logic (pure Python)."""
    try:
        import pip._vendor.packaging as p  # what pip itself uses

        return str(Path(p.__file__).parent.parent)
    except ImportError:
        pass
    try:
        import packaging.tags as p2

        return str(Path(p2.__file__).parent.parent)
    except ImportError:
        return None


def require_qemu(t: WheelTarget) -> str:
    q = shutil.which(t.qemu)
    if q is None:
        pytest.skip(f"{t.qemu} is missing: apt-get install qemu-user-static "
                    "(or run scripts/cross/prepare)")
    return q


CONFIG_TWEAKS = {
    "hostname": "cross",
    "process": {
        "rlimits": [
            {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096},
            {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200},
            {"type": "RLIMIT_AS", "soft": 1 << 30, "hard": 1 << 30},
        ],
        "noNewPrivileges": True,
    },
}

SMALL_PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}],
}

RESOURCES = {
    "memory": {"limit": 67108864, "swap": 134217728, "reservation": 33554432},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
    "pids": {"limit": 100},
    "blockIO": {"weight": 500},
    "devices": [{"allow": False, "access": "rwm"}],
}


def make_bundle(base: Path) -> Path:
    from sampan.bundle import runc_spec, write_config

    bundle = base / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    write_config(bundle, runc_spec(args=["/bin/true"]))
    return bundle


def run_emulated(t: WheelTarget, args: list[str]) -> subprocess.CompletedProcess:
    """The target's CPython under qemu-user with `args` (skips when it is not prepared)."""
    root = interpreter_root(t)
    if root is None:
        pytest.skip(f"no interpreter for {t.name} in {cache_dir()}/roots: "
                    f"run scripts/cross/prepare {t.name}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))}
    if str(root) != "/":
        env["QEMU_LD_PREFIX"] = str(root)
    return subprocess.run([require_qemu(t), str(root / DEBIAN_PYTHON), *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def run_smoke(t: WheelTarget | None, site: Path, work: Path, *, emulate: bool,
              config: Path, bundle: bool) -> tuple[dict, str]:
    """Runs smoke.py in the target's interpreter; returns (report, qemu's strace log)."""
    spec = {"site": str(site), "packaging": packaging_dir(), "config": str(config),
            "resources": RESOURCES}
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("PYTHON", "QEMU_")):
            del env[k]
    if bundle:
        spec["bundle"] = str(make_bundle(work))
        spec["state_root"] = str(work / "state")
        spec["container_id"] = f"cross-{t.name if t else 'host'}-{os.getpid()}"
    stderr_file = work / "stderr.log"
    if emulate:
        assert t is not None
        root = interpreter_root(t)
        if root is None:
            what = (f"Debian's {t.debian_arch} CPython" if t.glibc
                    else f"the musl CPython for {t.name}")
            pytest.skip(f"{what} is not in {cache_dir()}/roots: "
                        f"run scripts/cross/prepare {t.name}")
        cmd = [require_qemu(t), str(root / DEBIAN_PYTHON)]
        spec["qemu"] = cmd[0]
        if str(root) != "/":
            env["QEMU_LD_PREFIX"] = str(root)
        if bundle:
            # qemu's strace, into its log file (not stderr, which children inherit).
            env["QEMU_STRACE"] = "1"
            env["QEMU_LOG_FILENAME"] = str(work / "qemu-strace.log")
    else:
        if not Path(HOST_PYTHON).exists():
            pytest.skip(f"{HOST_PYTHON} (Debian's python3.11) is missing")
        cmd = [HOST_PYTHON]
    spec_file = work / "smoke.json"
    spec_file.write_text(json.dumps(spec))
    cmd += ["-I", str(HERE / "smoke.py"), str(spec_file)]
    with open(stderr_file, "w") as err:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=work,
                           timeout=900, check=False)
    stderr = stderr_file.read_text(errors="replace")
    if r.returncode != 0 or not r.stdout.strip():
        tail = "\n".join(stderr.splitlines()[-40:])
        pytest.fail(f"{' '.join(cmd)} exited {r.returncode}:\n{tail}")
    log = work / "qemu-strace.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return json.loads(r.stdout.decode().strip().splitlines()[-1]), text


