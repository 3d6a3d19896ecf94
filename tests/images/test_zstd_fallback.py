"""zstd layers without the optional `zstandard` wheel (issue 6: it is the extra `sampan[zstd]`):
the `zstd` program as a pipe, and a clear 501 when there is no decoder at all."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys

import imagebuild as ib
import pytest
from sampan.errors import InvalidArgument
from sampan.graph.unpack import unpack_stream

needs_zstd_program = pytest.mark.skipif(shutil.which("zstd") is None,
                                        reason="no zstd program")


@pytest.fixture
def no_wheel(monkeypatch):
    """As on a router installed without the extra: `import zstandard` fails."""
    monkeypatch.setitem(sys.modules, "zstandard", None)
    monkeypatch.setitem(sys.modules, "compression", None)   # Python ≥ 3.14's stdlib module


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True,
                          check=True).stdout


def children() -> set[int]:
    me = os.getpid()
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        out.add(int(pid))
            except (OSError, IndexError, ValueError):
                pass
    return out


@needs_zstd_program
def test_zstd_layer_through_the_program(no_wheel, tmp_path):
    files = [ib.File(f"d/f{i}", os.urandom(3000) + b"x" * 200_000) for i in range(12)]
    tar = ib.tar_bytes([ib.Dir("d"), *files])
    half = len(tar) // 2
    blob = zstd(tar[:half]) + zstd(tar[half:])          # two frames, as pigz-style writers do
    before = children()
    info = unpack_stream(io.BytesIO(blob), tmp_path, ib.OCI_LAYER["zstd"], whiteouts="delete")
    assert info["compression"] == "zstd"
    assert info["diff_id"] == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert info["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert info["blob_size"] == len(blob)
    for f in files:
        assert (tmp_path / f.path).read_bytes() == f.data
    assert children() == before                         # the zstd process was reaped


@needs_zstd_program
def test_bad_zstd_data_is_a_clear_error(no_wheel, tmp_path):
    tar = ib.tar_bytes([ib.File("a", os.urandom(50_000) + b"y" * 100_000)])
    blob = zstd(tar)
    assert len(blob) > 50_000
    for d in "xyz":
        (tmp_path / d).mkdir()
    before = children()
    with pytest.raises(InvalidArgument, match="invalid zstd data"):
        unpack_stream(io.BytesIO(blob[:-2000] + os.urandom(2000)), tmp_path / "x")
    with pytest.raises(InvalidArgument):                # truncated
        unpack_stream(io.BytesIO(blob[: len(blob) // 2]), tmp_path / "y")
    # a hostile member stops the unpack early: the child is ended, not left blocked
    evil = ib.tar_bytes([ib.File("../escape", b"z" * 2_000_000), ib.File("b", b"x" * 100)])
    with pytest.raises(InvalidArgument, match=r"\.\."):
        unpack_stream(io.BytesIO(zstd(evil)), tmp_path / "z")
    assert not (tmp_path / "escape").exists()
    assert children() == before


def test_no_decoder_says_what_to_install(no_wheel, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPAN_ZSTD_BINARY", "")        # as if no zstd program on PATH
    from sampan.graph.zstd import ZstdUnavailable
    blob = b"\x28\xb5\x2f\xfd" + b"\0" * 64
    with pytest.raises(ZstdUnavailable) as e:
        unpack_stream(io.BytesIO(blob), tmp_path)
    assert e.value.status == 501
    assert "sampan[zstd]" in str(e.value) and "opkg install zstd" in str(e.value)
    assert not any(tmp_path.iterdir())
