"""The content store: verified, crash-safe, resumable blob writes."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from sampan.errors import Conflict, InvalidArgument, NotFound
from sampan.graph import ContentStore


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(data_root):
    return ContentStore(data_root)


def test_put_read_delete(store):
    data = b"hello blob"
    d = store.put(data)
    assert d == sha256(data)
    assert store.exists(d) and d in store
    assert store.read(d) == data and store.size(d) == len(data)
    assert store.path(d) == store.root / "blobs" / "sha256" / d.split(":")[1]
    with store.open(d) as f:
        assert f.read() == data
    assert dict(store.blobs()) == {d: len(data)}
    assert store.delete(d) and not store.exists(d)
    assert not store.delete(d)
    with pytest.raises(NotFound):
        store.read(d)


def test_sha512_accepted(store):
    data = b"sha512 content"
    d = "sha512:" + hashlib.sha512(data).hexdigest()
    assert store.put(data, d) == d
    assert store.read(d) == data
    w = store.writer("five-twelve", d, len(data))
    w.write(data)
    assert w.commit() == d


def test_verified_on_write(store):
    with pytest.raises(InvalidArgument, match="mismatch"):
        store.put(b"abc", sha256(b"abd"))
    with pytest.raises(InvalidArgument, match="mismatch"):
        store.ingest(io.BytesIO(b"abc"), sha256(b"xyz"))
    with pytest.raises(InvalidArgument):
        store.ingest(io.BytesIO(b"abcdef"), sha256(b"abcdef"), size=3)
    with pytest.raises(InvalidArgument, match="invalid digest"):
        store.put(b"abc", "md5:1234")
    assert list(store.blobs()) == []
    assert store.ingests() == []


def test_writer_resumes_with_offset(store):
    data = os.urandom(3 << 20) + b"tail"
    d = sha256(data)
    w = store.writer("layer-1", d, len(data))
    assert w.offset == 0
    w.write(data[:1_000_000])
    w.close()                     # a dropped connection: keep the bytes
    assert not store.exists(d)
    [ing] = store.ingests()
    assert ing["ref"] == "layer-1" and ing["offset"] == 1_000_000 and ing["expected"] == d
    w = store.writer("layer-1")   # the expected digest is remembered
    assert w.offset == 1_000_000 and w.expected == d
    w.write(data[w.offset:])
    assert w.commit() == d
    assert store.read(d) == data
    assert store.ingests() == []


def test_writer_mismatch_discards_partial(store):
    data = b"x" * 10_000
    w = store.writer("bad", sha256(b"y" * 10_000), 10_000)
    w.write(data)
    with pytest.raises(InvalidArgument, match="mismatch"):
        w.commit()
    assert store.ingests() == [] and list(store.blobs()) == []
    w = store.writer("big", sha256(data), 100)
    with pytest.raises(InvalidArgument, match="more than"):
        w.write(data)
    w.abort()


def test_writer_truncate_and_lock(store):
    data = b"0123456789" * 1000
    w = store.writer("ref", sha256(data), len(data))
    w.write(b"garbage that the server sent before ignoring Range")
    with pytest.raises(Conflict):
        store.writer("ref")
    w.truncate(0)
    w.write(data)
    assert w.commit() == sha256(data)
    # Committing content that is already there is fine.
    w = store.writer("again", sha256(data))
    w.write(data)
    assert w.commit() == sha256(data)


def test_scratch_files_cleaned_at_open(store):
    (store.ingest_root / ".tmp-123-456").write_bytes(b"half a put")
    (store.blob_root / "sha256" / ".junk.tmp").write_bytes(b"x")
    ContentStore(store.root)
    assert not (store.ingest_root / ".tmp-123-456").exists()
    assert not (store.blob_root / "sha256" / ".junk.tmp").exists()


SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from sampan.graph import ContentStore
    data = bytes(range(256)) * 4096 * 4          # 4 MiB
    import hashlib
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store = ContentStore({root!r})
    w = store.writer("pull-layer", digest, len(data))
    for i in range(0, len(data), 65536):
        w.write(data[i:i + 65536])
        if i >= len(data) // 2:
            open({marker!r}, "w").write(str(w.offset))
            time.sleep(30)
""")


def test_kill_during_ingest_then_resume(data_root, tmp_path):
    marker = tmp_path / "half"
    proc = subprocess.Popen([sys.executable, "-c",
                             SLOW_WRITER.format(root=str(data_root), marker=str(marker))])
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = int(marker.read_text())
    data = bytes(range(256)) * 4096 * 4
    store = ContentStore(data_root)
    assert list(store.blobs()) == []          # nothing half-written is visible
    w = store.writer("pull-layer")
    assert w.offset == written and w.expected == sha256(data)
    w.write(data[w.offset:])                  # the hash state was rebuilt from the file
    assert w.commit() == sha256(data)
    assert store.read(sha256(data)) == data
