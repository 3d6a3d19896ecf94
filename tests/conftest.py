"""Fixtures for the runtime tests. They run as root on the real kernel.

Options:
  --runtimes=runc,sampan-api,sampan-cli   drivers the behaviour tests run against
  --candidates=sampan-cli,sampan-api      runtimes compared with runc by the differential tests

runc runs too so that every expectation is first shown to hold for the reference; the
sampan drivers are skipped (with the reason) while ``sampan._runtime`` does not import.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
try:
    import sampan.bundle  # noqa: F401
except ImportError:  # running from a source tree that was not installed
    sys.path.insert(0, str(HERE.parent / "python"))

import support
from sampan.bundle import make_bundle

DEFAULT_RUNTIMES = "runc,sampan-api,sampan-cli"
DEFAULT_CANDIDATES = "sampan-cli,sampan-api"


def pytest_addoption(parser):
    group = parser.getgroup("sampan")
    group.addoption("--runtimes", default=os.environ.get("SAMPAN_TEST_RUNTIMES",
                                                          DEFAULT_RUNTIMES),
                    help=f"drivers for behaviour tests (default {DEFAULT_RUNTIMES})")
    group.addoption("--candidates", default=os.environ.get("SAMPAN_TEST_CANDIDATES",
                                                            DEFAULT_CANDIDATES),
                    help="runtimes compared with runc in the differential tests "
                         f"(default {DEFAULT_CANDIDATES}; runc and crun work too)")


def _names(config, option):
    return [n.strip() for n in config.getoption(option).split(",") if n.strip()]


def pytest_generate_tests(metafunc):
    # Only the runtime tests beside this file; other folders have their own fixtures.
    if Path(str(metafunc.definition.fspath)).parent != HERE:
        return
    if "runtime" in metafunc.fixturenames:
        metafunc.parametrize("runtime", _names(metafunc.config, "runtimes"), indirect=True)
    if "candidate" in metafunc.fixturenames:
        metafunc.parametrize("candidate", _names(metafunc.config, "candidates"), indirect=True)


def pytest_configure(config):
    if os.geteuid() != 0:
        raise pytest.UsageError("the runtime tests need root (real namespaces and cgroups)")


# --------------------------------------------------------------------------- places


@pytest.fixture(scope="session")
def workdir():
    """A scratch directory every user can traverse (user-namespaced containers need it)."""
    path = Path(tempfile.mkdtemp(prefix="sampan-tests-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
    # Parents of the cgroupsPath that tests use; runtimes leave parents in place.
    for parent in support.CGROUP_ROOT.glob("*/sampan-tests"):
        try:
            parent.rmdir()
        except OSError:
            pass


@pytest.fixture(scope="session")
def busybox_archive():
    """busybox as a docker archive, for the folders whose tests start a real sampand."""
    from sampan.demoimage import docker_archive

    return docker_archive("busybox:latest")


_counter = itertools.count()


@pytest.fixture
def tmpdir755(workdir):
    """A fresh directory for one test, traversable by every user."""
    path = workdir / f"t{next(_counter)}"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def new_id():
    """Unique container ids: short, valid for every runtime, unique across parallel runs."""
    def make(prefix="t"):
        return f"{prefix}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}"
    return make


@pytest.fixture
def cid(new_id):
    return new_id()


# --------------------------------------------------------------------------- bundles


@pytest.fixture
def bundle(tmpdir755):
    """Factory: bundle(args, name="b", out=False, **runc_spec tweaks) -> bundle Path.

    The rootfs has /probe.sh. With ``out=True`` a host directory (``bundle.out``) is
    bind-mounted read-write at ``/out`` so the container can hand files back.
    """
    made = itertools.count()

    def make(args=None, *, name=None, out=False, files=None, dirs=(), mounts=(), **tweaks):
        dest = tmpdir755 / (name or f"bundle{next(made)}")
        files = {"/probe.sh": support.PROBE.read_text(), **(files or {})}
        dirs = list(dirs)
        extra_mounts = list(mounts)
        if out:
            outdir = support.outdir(dest)
            outdir.mkdir(mode=0o777, exist_ok=True)
            os.chmod(outdir, 0o777)
            dirs.append("out")
            extra_mounts.append({"destination": "/out", "type": "bind", "source": str(outdir),
                                 "options": ["rbind", "rw"]})
        if extra_mounts:
            from sampan.bundle import runc_spec

            base = runc_spec(None, None).get("mounts", [])
            tweaks["mounts"] = tweaks.get("mounts", base) + extra_mounts
        path = make_bundle(dest, args, files=files, dirs=dirs, **tweaks)
        return path

    return make


# --------------------------------------------------------------------------- runtimes


def _driver(request, workdir, name):
    why = support.driver_unavailable(name)
    if why:
        pytest.skip(f"{name}: {why}")
    root = workdir / "state" / name
    before = set(support.child_pids())
    driver = support.make_driver(name, root)
    yield driver
    driver.cleanup()
    # Children this test left (a runtime process not waited for after a failure, a process
    # the binding did not reap) would show up in the next test's leak checks: end them here.
    left = support.end_children(exclude=before)
    if left:
        import warnings

        warnings.warn(f"{name}: the test left child processes {left}; killed and reaped",
                      stacklevel=1)


@pytest.fixture
def runtime(request, workdir):
    """The driver under test (parametrised by --runtimes)."""
    yield from _driver(request, workdir, request.param)


@pytest.fixture
def candidate(request, workdir):
    """A runtime compared with runc (parametrised by --candidates)."""
    yield from _driver(request, workdir, request.param)


@pytest.fixture
def runc(request, workdir):
    """runc, the reference."""
    yield from _driver(request, workdir, "runc")


@pytest.fixture
def sampan_api(request, workdir):
    yield from _driver(request, workdir, "sampan-api")


@pytest.fixture
def sampan_cli(request, workdir):
    yield from _driver(request, workdir, "sampan-cli")


# --------------------------------------------------------------------------- host mounts


@pytest.fixture
def host_mount():
    """Factory: host_mount(*mount args) runs mount(8) on the host; unmounted afterwards."""
    done = []

    def mount(*args):
        subprocess.run(["mount", *map(str, args)], check=True)
        done.append(str(args[-1]))

    yield mount
    for target in reversed(done):
        subprocess.run(["umount", "-l", target], check=False)
