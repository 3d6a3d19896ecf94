"""Fixtures for the container tests: a real sampand (daemonlib) with the real graph and a
busybox:latest image built locally by sampan.demoimage and loaded through the API."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

DAEMON_TESTS = Path(__file__).resolve().parents[1] / "daemon"
if str(DAEMON_TESTS) not in sys.path:
    sys.path.insert(0, str(DAEMON_TESTS))

from daemonlib import Daemon, mkdir, start_daemon  # noqa: E402,F401

if os.geteuid() != 0:
    pytest.skip("containers need root", allow_module_level=True)


@pytest.fixture(scope="session")
def croot():
    path = Path(tempfile.mkdtemp(prefix="sampan-ctr-tests-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sd(croot, busybox_archive, request):
    d = start_daemon(croot / request.module.__name__.rsplit(".", 1)[-1], busybox_archive)
    yield d
    for c in d.json("GET", "/containers/json?all=1")[1] or []:
        d.request("DELETE", f"/containers/{c['Id']}?force=1")
    d.stop()
