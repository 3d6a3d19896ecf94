"""pytest-benchmark benchmarks of the runtime, so that history can be kept.

    pytest benches/ --benchmark-only                      # as root
    pytest benches/ --benchmark-only --benchmark-autosave # keep a history in .benchmarks/
    pytest benches/ --benchmark-only --benchmark-compare  # against the last saved run

Group ``run-true``: run-to-completion of `true` (one bundle from busybox-static, `runc spec`
defaults, terminal false), through the binding in process, through ``runtime.Container``
(create + start + wait + delete), and, for reference on the same machine in the same session,
``crun run`` and ``runc run`` as processes (skipped when they are missing or refuse to run).
Not part of the test suite (``pytest tests``); skipped without pytest-benchmark or root. The
side-by-side comparison with ratios is ``python3 benches/run_compare.py``.
"""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.benchmark(group="run-true")


def test_run_in_process(benchmark, runner, new_id, bundle):
    """sampan.runtime.run(): create, start, wait, delete in one call."""
    from sampan import runtime

    root = runner("sampan-api").root

    def run() -> int:
        return runtime.run(new_id("run"), bundle, root=root)

    assert run() == 0  # warm up, and fail early
    code = benchmark(run)
    assert code == 0


def test_container_lifecycle(benchmark, runner, new_id, bundle):
    """runtime.Container: create, start, wait, delete as four calls."""
    from sampan import runtime

    root = runner("sampan-api").root

    def lifecycle() -> int:
        c = runtime.Container.create(new_id("life"), bundle, root=root)
        c.start()
        code = c.wait()
        c.delete()
        return code

    assert lifecycle() == 0
    code = benchmark(lifecycle)
    assert code == 0


@pytest.mark.parametrize("name", ["crun", "runc"])
def test_reference_run_process(benchmark, runner, name):
    """`crun run` / `runc run` started as a process: the yardsticks."""
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed")
    r = runner(name)
    _, code, err = r.once()
    if code != 0:
        pytest.skip(f"{name} cannot run here: {err or f'exit status {code}'}")

    def run() -> int:
        _, status, message = r.once()
        assert status == 0, message
        return status

    assert benchmark(run) == 0
