"""Crash-safe file writes shared by the stores (containers, volumes, networks, content).
Standard library only, so any module can use it without weighing on an idle daemon."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or create in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600, sync: bool = True) -> None:
    """Temp file + rename, so readers see the old or the new file, never half of one; with
    `sync`, the data is fsynced before the rename (the file survives a power cut, not just the
    writer's death). The temp name is hidden and fixed: a leftover is overwritten next time."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
