"""`version`'s Arch on MIPS: `uname -m` says mips on either byte order, Go (and so docker)
says mips or mipsle. Both the daemon's and the CLI's answer, on a faked machine."""

from __future__ import annotations

import platform
import sys

import pytest
from sampan.cli import system_cmd
from sampan.daemon import system


@pytest.mark.parametrize("machine,order,want", [
    ("mips", "big", "mips"), ("mips", "little", "mipsle"),
    ("mips64", "big", "mips64"), ("mips64", "little", "mips64le"),
    ("x86_64", "little", "amd64"), ("aarch64", "little", "arm64"),
])
@pytest.mark.parametrize("goarch", [system.goarch, system_cmd.goarch],
                         ids=["daemon", "cli"])
def test_goarch(monkeypatch, goarch, machine, order, want):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(sys, "byteorder", order)
    assert goarch() == want
