"""Fixtures for the daemon/client/CLI tests (helpers in daemonlib.py): sampand runs for real as
a subprocess on a temporary data root, exec root and socket, and is stopped at the end."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from daemonlib import Daemon, mkdir


@pytest.fixture(scope="session")
def daemon_root():
    path = Path(tempfile.mkdtemp(prefix="sampand-tests-", dir="/tmp"))
    path.chmod(0o755)  # other users reach the sockets (group tests)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_daemon(daemon_root):
    """One sampand with the fake image service, for tests that only read."""
    d = Daemon(mkdir(daemon_root / "shared"))
    d.start()
    yield d
    d.stop()


_n = [0]


@pytest.fixture
def new_daemon(daemon_root):
    """Factory: a fresh (not started) Daemon in its own directory; stopped afterwards."""
    made: list[Daemon] = []

    def make(fake: bool = True) -> Daemon:
        _n[0] += 1
        d = Daemon(mkdir(daemon_root / f"d{_n[0]}"), fake=fake)
        d.root.chmod(0o755)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def daemon(new_daemon):
    """A fresh, started sampand with the fake image service (for tests that change state)."""
    return new_daemon().start()
