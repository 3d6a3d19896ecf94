"""`version`'s Arch on MIPS: `uname -m` says mips on either byte order, Go (and so docker)
says mips or mipsle. The daemon's and the CLI's answer (one function), on a faked machine."""

from __future__ import annotations

import platform
import sys

import pytest
from sampan.hostfeatures import goarch


@pytest.mark.parametrize("machine,order,want", [
    ("mips", "big", "mips"), ("mips", "little", "mipsle"),
    ("mips64", "big", "mips64"), ("mips64", "little", "mips64le"),
    ("x86_64", "little", "amd64"), ("aarch64", "little", "arm64"),
])
def test_goarch(monkeypatch, machine, order, want):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(sys, "byteorder", order)
    assert goarch() == want
