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
import sys
import zipfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cross_targets import BY_NAME, TARGETS, WheelTarget  # noqa: E402
from crosslib import (  # noqa: E402
    CONFIG_TWEAKS,
    REPO,
    SMALL_PROFILE,
    dist_dir,
    run_smoke,
    wheel_for,
)


def pytest_configure(config):
    config.addinivalue_line("markers", "cross: cross-built wheels proven under qemu-user")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cross)


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


@pytest.fixture(scope="session")
def config_file(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "python"))
    from sampan.bundle import merge, runc_spec

    spec = merge(runc_spec(args=["sh", "-c", "true"]), CONFIG_TWEAKS)
    spec["linux"]["seccomp"] = SMALL_PROFILE
    p = tmp_path_factory.mktemp("config") / "config.json"
    p.write_text(json.dumps(spec))
    return p


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

