"""Named network namespaces: an nsfs file bind-mounted at `<exec-root>/netns/<id>` (as `ip
netns` and podman do), so that a namespace outlives the daemon and the container's runtime joins
it by path.

The daemon is a multithreaded Python process: it must not fork to make a namespace. Linux keeps
the network namespace per thread, so a fresh thread unshares its own, bind-mounts
/proc/thread-self/ns/net, does what it has to inside (sockets it opens stay in that namespace),
and ends; the other threads never leave the host's namespace."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any, Callable

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2

_libc: Any = None


def _c() -> Any:
    """libc through ctypes, imported on first use (an idle daemon does not pay for it)."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = _errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _in_thread(fn: Callable[[], Any]) -> Any:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["v"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["e"] = e

    t = threading.Thread(target=run, name="netns", daemon=True)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box.get("v")


def create(path: Path, then: Callable[[], Any] | None = None) -> Any:
    """Make a new network namespace pinned at `path`; `then()` runs inside it (in the same
    throwaway thread) and its result is returned."""

    def work() -> Any:
        libc = _c()
        _check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.close(fd)
        try:
            _check(libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), None,
                              MS_BIND, None), f"mount {path}")
        except OSError:
            os.unlink(path)
            raise
        return then() if then is not None else None

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    return _in_thread(work)


def run_in(path: Path | str, fn: Callable[[], Any]) -> Any:
    """`fn()` inside the namespace at `path` (a pinned file or /proc/PID/ns/net)."""

    def work() -> Any:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_c().setns(fd, CLONE_NEWNET), f"setns {path}")
        finally:
            os.close(fd)
        return fn()

    return _in_thread(work)


def remove(path: Path) -> None:
    """Unpin and delete; the namespace (with its interfaces) goes when nothing holds it."""
    rc = _c().umount2(str(path).encode(), MNT_DETACH)
    if rc != 0:
        e = _errno()
        if e not in (errno.EINVAL, errno.ENOENT):
            raise OSError(e, f"umount {path}: {os.strerror(e)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_pinned(path: Path) -> bool:
    """True when `path` is an nsfs mount (not just the empty file left by a crash)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False
