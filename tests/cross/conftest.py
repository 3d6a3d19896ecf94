"""Proof that the cross-built wheels are what they claim, on this x86 machine.

    scripts/build-wheels              # the wheels, into dist/
    scripts/cross/prepare             # qemu-user, Debian's arm64 CPython, musl CPythons
    python3 -m pytest tests/cross     # this suite (about a minute once prepared)

Every test skips, saying why, when what it needs is missing: a wheel in dist/ (or
SAMPAN_CROSS_DIST), qemu-user-static, an interpreter root in the cross cache
(SAMPAN_CROSS_CACHE, default /var/cache/sampan-cross as root). Nothing here downloads or
builds: that is scripts/cross/prepare's job. `-m "not cross"` leaves the suite out.
See docs/cross.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "scripts"))

from targets import BY_NAME, TARGETS, WheelTarget

DEBIAN_PYTHON = "usr/bin/python3.11"
MUSL_PYTHON = "usr/bin/python3.11"
HOST_PYTHON = "/usr/bin/python3.11"  # Debian's CPython, the reference run on x86_64


def pytest_configure(config):
    config.addinivalue_line("markers", "cross: cross-built wheels proven under qemu-user")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cross)


def cache_dir() -> Path:
    env = os.environ.get("SAMPAN_CROSS_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/sampan-cross")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sampan-cross"


def dist_dir() -> Path:
    return Path(os.environ.get("SAMPAN_CROSS_DIST", REPO / "dist"))


def wheel_for(t: WheelTarget) -> Path | None:
    want = set(t.platform.split("."))
    for w in sorted(dist_dir().glob("sampan-*.whl")):
        if set(w.name[:-4].split("-", 4)[4].split(".")) == want:
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


@pytest.fixture(scope="session")
def unpacked(tmp_path_factory):
    """target name -> directory holding its unpacked wheel."""
    done: dict[str, Path] = {}

    def get(t: WheelTarget) -> Path:
        if t.name not in done:
            w = wheel_for(t)
            if w is None:
                pytest.skip(f"no {t.platform} wheel in {dist_dir()}: "
                            f"run scripts/build-wheels {t.name}")
            d = tmp_path_factory.mktemp(f"site-{t.name}")
            with zipfile.ZipFile(w) as z:
                z.extractall(d)
            done[t.name] = d
        return done[t.name]

    return get


def _require_qemu(t: WheelTarget) -> str:
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


@pytest.fixture(scope="session")
def config_file(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "python"))
    from sampan.bundle import merge, runc_spec

    spec = merge(runc_spec(args=["sh", "-c", "true"]), CONFIG_TWEAKS)
    spec["linux"]["seccomp"] = SMALL_PROFILE
    p = tmp_path_factory.mktemp("config") / "config.json"
    p.write_text(json.dumps(spec))
    return p


def _bundle(base: Path) -> Path:
    from sampan.bundle import runc_spec, write_config

    bundle = base / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    write_config(bundle, runc_spec(args=["/bin/true"]))
    return bundle


def run_smoke(t: WheelTarget | None, site: Path, work: Path, *, emulate: bool,
              config: Path, bundle: bool) -> tuple[dict, str]:
    """Runs smoke.py in the target's interpreter; returns (report, qemu strace text)."""
    spec = {"site": str(site), "packaging": packaging_dir(), "config": str(config),
            "resources": RESOURCES}
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("PYTHON", "QEMU_")):
            del env[k]
    if bundle:
        spec["bundle"] = str(_bundle(work))
        spec["state_root"] = str(work / "state")
        spec["container_id"] = f"cross-{t.name if t else 'host'}-{os.getpid()}"
    strace = work / "strace.log"
    if emulate:
        assert t is not None
        root = interpreter_root(t)
        if root is None:
            what = (f"Debian's {t.debian_arch} CPython" if t.glibc
                    else f"the musl CPython for {t.name}")
            pytest.skip(f"{what} is not in {cache_dir()}/roots: "
                        f"run scripts/cross/prepare {t.name}")
        cmd = [_require_qemu(t), str(root / DEBIAN_PYTHON)]
        spec["qemu"] = cmd[0]
        if str(root) != "/":
            env["QEMU_LD_PREFIX"] = str(root)
        if bundle:
            env["QEMU_STRACE"] = "1"
    else:
        if not Path(HOST_PYTHON).exists():
            pytest.skip(f"{HOST_PYTHON} (Debian's python3.11) is missing")
        cmd = [HOST_PYTHON]
    spec_file = work / "smoke.json"
    spec_file.write_text(json.dumps(spec))
    cmd += ["-I", str(HERE / "smoke.py"), str(spec_file)]
    with open(strace, "w") as err:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=work,
                           timeout=900, check=False)
    text = strace.read_text(errors="replace")
    if r.returncode != 0 or not r.stdout.strip():
        tail = "\n".join(text.splitlines()[-40:])
        pytest.fail(f"{' '.join(cmd)} exited {r.returncode}:\n{tail}")
    return json.loads(r.stdout.decode().strip().splitlines()[-1]), text


@pytest.fixture(scope="session")
def host_report(unpacked, tmp_path_factory, config_file) -> dict:
    """smoke.py natively on x86_64 with the x86_64 glibc wheel: the reference."""
    t = BY_NAME["x86_64"]
    site = unpacked(t)
    report, _ = run_smoke(None, site, tmp_path_factory.mktemp("host"), emulate=False,
                          config=config_file, bundle=False)
    return report


@pytest.fixture(scope="session")
def emulated():
    """target name -> (report, strace) of smoke.py under qemu, computed once."""
    return {}


@pytest.fixture(params=[t.name for t in TARGETS])
def target(request) -> WheelTarget:
    return BY_NAME[request.param]


@pytest.fixture
def report(target, unpacked, emulated, tmp_path_factory, config_file):
    if target.name not in emulated:
        site = unpacked(target)
        try:
            emulated[target.name] = run_smoke(
                target, site, tmp_path_factory.mktemp(f"run-{target.name}"), emulate=True,
                config=config_file, bundle=True)
        except pytest.skip.Exception as e:
            emulated[target.name] = e
            raise
    got = emulated[target.name]
    if isinstance(got, BaseException):
        pytest.skip(str(got))
    return got
