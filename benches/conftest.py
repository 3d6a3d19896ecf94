"""Fixtures for the pytest-benchmark benchmarks (``pytest benches/ --benchmark-only``).

Everything here is skipped, never failed, when pytest-benchmark is not installed (or disabled
with ``-p no:benchmark``) or when not running as root. The options that pytest-benchmark would
add are accepted then, so that the same command line still parses.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
try:
    import sampan  # noqa: F401
except ImportError:  # a source tree that was not installed
    sys.path.insert(0, str(HERE.parent / "python"))

# pytest-benchmark's command-line options, accepted (and ignored) when it is missing.
_FLAGS = ("--benchmark-only", "--benchmark-skip", "--benchmark-disable", "--benchmark-autosave")
_VALUED = (
    "--benchmark-save",
    "--benchmark-json",
    "--benchmark-compare",
    "--benchmark-storage",
    "--benchmark-min-rounds",
    "--benchmark-max-time",
    "--benchmark-sort",
    "--benchmark-group-by",
    "--benchmark-columns",
    "--benchmark-histogram",
    "--benchmark-compare-fail",
    "--benchmark-warmup",
    "--benchmark-warmup-iterations",
)


def _have_plugin(pluginmanager) -> bool:
    return pluginmanager.has_plugin("benchmark")


def pytest_addoption(parser, pluginmanager):
    if _have_plugin(pluginmanager):
        return
    group = parser.getgroup("benchmark (pytest-benchmark is not installed: ignored)")
    for flag in _FLAGS:
        group.addoption(flag, action="store_true", default=False, help="ignored")
    for opt in _VALUED:
        group.addoption(opt, action="store", default=None, nargs="?", help="ignored")


def pytest_configure(config):
    if not _have_plugin(config.pluginmanager):
        config.addinivalue_line("markers", "benchmark(**kwargs): pytest-benchmark settings")


def pytest_collection_modifyitems(config, items):
    here = str(HERE)
    reason = None
    if not _have_plugin(config.pluginmanager):
        reason = "pytest-benchmark is not installed (pip install pytest-benchmark)"
    elif os.geteuid() != 0:
        reason = "the runtime benchmarks need root (namespaces and cgroups)"
    if reason is None:
        return
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def bench_dir():
    """A scratch directory for the session (bundle and state roots)."""
    path = Path(tempfile.mkdtemp(prefix="sampan-pybench-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def bundle(bench_dir):
    """The benchmark bundle: busybox-static, `runc spec` defaults, terminal false, `true`."""
    from sampan.bundle import make_bundle

    return make_bundle(bench_dir / "bundle", ["true"])


_ids = itertools.count()


@pytest.fixture
def new_id():
    """A function that returns a fresh container id at every call."""

    def make(prefix: str = "pb") -> str:
        return f"{prefix}-{os.getpid()}-{next(_ids)}"

    return make


@pytest.fixture
def runner(bench_dir, bundle, request):
    """runner(name) -> a run_compare.Runner with a state root of its own; whatever containers
    it leaves behind are force-deleted after the benchmark."""
    from run_compare import Runner

    made = []

    def make(name: str) -> Runner:
        root = bench_dir / "state" / f"{request.node.name}-{name}".replace("/", "_")
        r = Runner(name, bundle, root)
        made.append(r)
        return r

    yield make
    for r in made:
        r.cleanup()
