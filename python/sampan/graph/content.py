"""The content store: blobs addressed by digest, written crash-safely and verified.

Layout under its root (the data root):

    blobs/<alg>/<hex>          committed blobs (sha256; sha512 accepted)
    ingest/<sha256(ref)>/data  a partial blob being written under `ref` (kept across restarts)
    ingest/<sha256(ref)>/ref   the ref, and the expected digest on a second line
    ingest/.tmp-*              scratch files of `put`, removed at open

A blob is never visible half-written: bytes go to the ingest file, which is fsynced, verified
(digest and size) and renamed into `blobs/`. A writer reopened on the same ref finds the bytes
already written (`offset`) and rebuilds its hash state by re-reading them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from sampan.atomicfile import fsync_dir
from sampan.errors import Conflict, InvalidArgument, NotFound

CHUNK = 1 << 20
ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


def check_digest(digest: str) -> tuple[str, str]:
    """Split "alg:hex" after validating it; InvalidArgument otherwise."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: expected sha256:<64 hex> or "
                              "sha512:<128 hex>")
    alg, hexpart = digest.split(":", 1)
    return alg, hexpart


def sha256_digest(data: bytes) -> str:
    import hashlib  # imported where used: OpenSSL's libcrypto costs an idle daemon 3.5 MiB

    return "sha256:" + hashlib.sha256(data).hexdigest()


class Writer:
    """Appends bytes to the ingest file of one ref; `commit` verifies and publishes the blob."""

    def __init__(self, store: ContentStore, ref: str, expected: str | None,
                 size: int | None):
        self.store = store
        self.ref = ref
        self.expected = expected
        self.expected_size = size
        self.dir = store._ingest_dir(ref)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = -1
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise Conflict(f"ingest {ref!r} is being written by someone else") from None
            raise
        try:
            self._open(expected)
        except BaseException:
            self._unlock()
            raise

    def _open(self, expected: str | None) -> None:
        meta = self.dir / "ref"
        data = self.dir / "data"
        previous = None
        if meta.exists():
            lines = meta.read_text().split("\n")
            previous = lines[1] if len(lines) > 1 and lines[1] else None
        if expected is None:
            self.expected = previous
        elif previous is not None and previous != expected:
            # The partial bytes belong to another blob: start over.
            data.unlink(missing_ok=True)
        alg = check_digest(self.expected)[0] if self.expected else "sha256"
        import hashlib

        self._hash = hashlib.new(alg)
        self._alg = alg
        tmp = self.dir / "ref.tmp"
        tmp.write_text(f"{self.ref}\n{self.expected or ''}\n")
        os.replace(tmp, meta)
        self._fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        # Rebuild the hash state from the bytes kept from an earlier attempt.
        offset = 0
        with open(self._fd, "rb", closefd=False, buffering=0) as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                self._hash.update(chunk)
                offset += len(chunk)
        self.offset = offset
        if self.expected_size is not None and offset > self.expected_size:
            self.truncate(0)

    # -- writing

    def write(self, data) -> None:
        if self._fd < 0:
            raise InvalidArgument(f"ingest {self.ref!r} is closed")
        n = len(data)
        if self.expected_size is not None and self.offset + n > self.expected_size:
            raise InvalidArgument(f"blob {self.expected or self.ref}: more than the expected "
                                  f"{self.expected_size} bytes")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._hash.update(data)
        self.offset += n

    def truncate(self, offset: int = 0) -> None:
        """Drop the bytes from `offset` on (a restart from 0 when the server ignored Range)."""
        import hashlib

        os.ftruncate(self._fd, offset)
        self._hash = hashlib.new(self._alg)
        done = 0
        with open(self._fd, "rb", closefd=False, buffering=0) as f:
            f.seek(0)
            while done < offset:
                chunk = f.read(min(CHUNK, offset - done))
                if not chunk:
                    break
                self._hash.update(chunk)
                done += len(chunk)
        self.offset = done

    def digest(self) -> str:
        return f"{self._alg}:{self._hash.hexdigest()}"

    def commit(self, digest: str | None = None, size: int | None = None) -> str:
        """Verify, fsync and rename into `blobs/`; returns the digest. The ingest is gone after."""
        expected = digest or self.expected
        size = self.expected_size if size is None else size
        if expected is not None:
            alg, _ = check_digest(expected)
            if alg != self._alg:
                raise InvalidArgument(f"ingest {self.ref!r}: was hashed with {self._alg}, "
                                      f"cannot verify {expected}")
        actual = self.digest()
        if size is not None and self.offset != size:
            self.abort()
            raise InvalidArgument(f"blob {expected or actual}: size {self.offset}, "
                                  f"expected {size}")
        if expected is not None and actual != expected:
            self.abort()
            raise InvalidArgument(f"blob digest mismatch: expected {expected}, got {actual}")
        target = self.store.path(actual)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if target.exists():
            (self.dir / "data").unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.dir / "data", target)
            fsync_dir(target.parent)
        self._remove_dir()
        return actual

    # -- ending without a blob

    def close(self) -> None:
        """Keep the partial bytes (a later writer on the same ref resumes from them)."""
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1
        self._unlock()

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._remove_dir()

    def _remove_dir(self) -> None:
        for name in ("data", "ref", "ref.tmp", "lock"):
            try:
                os.unlink(self.dir / name)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __del__(self):
        with contextlib.suppress(OSError, AttributeError):
            if getattr(self, "_fd", -1) >= 0:
                os.close(self._fd)
            self._unlock()


class ContentStore:
    """Blobs by digest under `root/blobs`, partial writes under `root/ingest`."""

    def __init__(self, root: Path, sync: bool = True):
        self.root = Path(root)
        self.sync = sync
        self.blob_root = self.root / "blobs"
        self.ingest_root = self.root / "ingest"
        for alg in ALGORITHMS:
            (self.blob_root / alg).mkdir(parents=True, exist_ok=True)
        self.ingest_root.mkdir(parents=True, exist_ok=True)
        self._clean_scratch()

    def _clean_scratch(self) -> None:
        for entry in os.scandir(self.ingest_root):
            if entry.name.startswith(".tmp-"):
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
        for alg in ALGORITHMS:
            for entry in os.scandir(self.blob_root / alg):
                if entry.name.startswith(".") or entry.name.endswith(".tmp"):
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass

    # -- names

    def path(self, digest: str) -> Path:
        alg, hexpart = check_digest(digest)
        return self.blob_root / alg / hexpart

    def _ingest_dir(self, ref: str) -> Path:
        if not isinstance(ref, str) or not ref:
            raise InvalidArgument("ingest ref must be a non-empty string")
        import hashlib

        return self.ingest_root / hashlib.sha256(ref.encode()).hexdigest()

    # -- reading

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    __contains__ = exists

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def blobs(self) -> Iterator[tuple[str, int]]:
        for alg, length in ALGORITHMS.items():
            for entry in os.scandir(self.blob_root / alg):
                if len(entry.name) == length and entry.is_file(follow_symlinks=False):
                    yield f"{alg}:{entry.name}", entry.stat(follow_symlinks=False).st_size

    # -- writing

    def writer(self, ref: str, digest: str | None = None,
               size: int | None = None) -> Writer:
        if digest is not None:
            check_digest(digest)
        return Writer(self, ref, digest, size)

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store a small blob given whole; verified against `digest` when given."""
        import hashlib

        alg = check_digest(digest)[0] if digest else "sha256"
        actual = f"{alg}:{hashlib.new(alg, data).hexdigest()}"
        if digest is not None and actual != digest:
            raise InvalidArgument(f"blob digest mismatch: expected {digest}, got {actual}")
        target = self.path(actual)
        if target.exists():
            return actual
        tmp = self.ingest_root / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        if self.sync:
            fsync_dir(target.parent)
        return actual

    def ingest(self, stream: BinaryIO, digest: str | None = None,
               size: int | None = None) -> str:
        """Copy a stream into the store (verified when digest/size are given)."""
        ref = f"ingest-{os.getpid()}-{time.monotonic_ns()}"
        w = self.writer(ref, digest, size)
        try:
            w.truncate(0)
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                w.write(chunk)
            return w.commit()
        except BaseException:
            if w._fd >= 0 or w._lock_fd >= 0:
                w.abort()
            raise

    def delete(self, digest: str) -> bool:
        try:
            os.unlink(self.path(digest))
            return True
        except FileNotFoundError:
            return False

    # -- partial writes

    def ingests(self) -> list:
        out = []
        for entry in os.scandir(self.ingest_root):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            meta = Path(entry.path) / "ref"
            data = Path(entry.path) / "data"
            try:
                lines = meta.read_text().split("\n")
            except FileNotFoundError:
                lines = ["", ""]
            try:
                st = data.stat()
                offset, updated = st.st_size, st.st_mtime
            except FileNotFoundError:
                offset, updated = 0, entry.stat().st_mtime
            out.append({"ref": lines[0], "offset": offset,
                        "expected": (lines[1] if len(lines) > 1 and lines[1] else None),
                        "updated": updated, "dir": Path(entry.path)})
        return out

    def ingest_locked(self, ingest_dir: Path) -> bool:
        """True when a writer holds this ingest (in this or another process)."""
        try:
            fd = os.open(ingest_dir / "lock", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)

    def remove_ingest(self, ingest_dir: Path) -> int:
        freed = 0
        for entry in os.scandir(ingest_dir):
            try:
                freed += entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
            except OSError:
                pass
        try:
            os.rmdir(ingest_dir)
        except OSError:
            pass
        return freed
