"""What the registry client needs from the graph's content store, in one place.

`BlobStore` wraps `Graph.store`; the pull and push code only use the methods below, so a
different store (or a test fake) needs only these:

    has(digest) -> bool
    open(digest) -> BinaryIO             a committed blob
    size(digest) -> int
    put(data, digest) -> None            small blobs (manifests, configs), verified
    writer(digest, size) -> Writer       resumable ingest keyed by the digest

A Writer has `offset` (bytes already ingested, possibly by an earlier daemon), `write(b)`,
`commit()` (verifies size and digest, moves the blob into place; raises on mismatch and
discards the ingest), `abort()` (discard), `close()` (keep the partial ingest for a later
resume) and optionally `path` (the partial file, read while it grows to unpack a layer as it
downloads).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from sampan.errors import RegistryError


class BlobStore:
    def __init__(self, store):
        self.store = store

    def has(self, digest: str) -> bool:
        s = self.store
        return bool(s.exists(digest) if hasattr(s, "exists") else s.has(digest))

    def open(self, digest: str) -> BinaryIO:
        return self.store.open(digest)

    def read(self, digest: str) -> bytes:
        if hasattr(self.store, "read"):
            return self.store.read(digest)
        with self.open(digest) as f:
            return f.read()

    def size(self, digest: str) -> int:
        s = self.store
        if hasattr(s, "size"):
            return int(s.size(digest))
        if hasattr(s, "path"):
            return Path(s.path(digest)).stat().st_size
        with self.open(digest) as f:
            f.seek(0, 2)
            return f.tell()

    def put(self, data: bytes, digest: str) -> None:
        if self.has(digest):
            return
        got = self.store.put(data, digest) if _accepts(self.store.put, 2) else \
            self.store.put(data)
        if got is not None and isinstance(got, str) and got != digest:
            raise RegistryError(f"content store: digest mismatch: got {got}, expected {digest}")

    def writer(self, digest: str, size: int) -> Writer:
        """A resumable ingest for blob `digest`, keyed by the digest (so a restart resumes).

        Raises Conflict while another writer (another pull) holds it.
        """
        return Writer(self.store.writer(digest, digest, size))

    def path_of_partial(self, w: Writer) -> Path | None:
        return w.path


def _accepts(fn, n: int) -> bool:
    import inspect
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(params) >= n or any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())


class Writer:
    """Adapter over the store's ingest writer."""

    def __init__(self, w):
        self.w = w

    @property
    def offset(self) -> int:
        return int(self.w.offset)

    @property
    def path(self) -> Path | None:
        p = getattr(self.w, "path", None)
        if p:
            return Path(p)
        d = getattr(self.w, "dir", None)        # sampan.graph.content: ingest/<hash>/data
        return Path(d) / "data" if d else None

    def write(self, data: bytes) -> None:
        self.w.write(data)

    def flush(self) -> None:
        f = getattr(self.w, "flush", None)
        if f is not None:
            f()

    def truncate(self, n: int = 0) -> None:
        self.w.truncate(n)

    def commit(self) -> None:
        self.w.commit()

    def abort(self) -> None:
        self.w.abort()

    def close(self) -> None:
        c = getattr(self.w, "close", None)
        if c is not None:
            c()
