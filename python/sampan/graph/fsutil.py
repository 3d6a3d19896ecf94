"""File-system helpers that never follow symlinks: removal by directory fd, exact tree copies."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_syncfs = None      # libc's syncfs, looked up at the first call (ctypes: ~1 MiB an idle daemon
                    # need not pay); False when there is none


def _load_syncfs():
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.syncfs
        fn.argtypes = [ctypes.c_int]
        return fn
    except (OSError, AttributeError):  # pragma: no cover - musl without syncfs, odd platforms
        return False


def syncfs(fd: int) -> None:
    """Flush the file system that holds `fd` (falls back to sync())."""
    global _syncfs
    if _syncfs is None:
        _syncfs = _load_syncfs()
    if _syncfs and _syncfs(fd) == 0:
        return
    os.sync()


def remove_entry(dir_fd: int, name: str) -> None:
    """Remove `name` inside the directory `dir_fd`, recursively, never following symlinks."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    # An entry that vanishes meanwhile is what we wanted: another remover (or the kernel,
    # in an overlay work dir still mounted after a crash) may be at it too.
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            return
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    try:
        clear_dir(fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def clear_dir(fd: int, keep=None) -> None:
    """Remove every entry of the directory `fd` (except names in `keep`)."""
    with os.scandir(fd) as it:
        names = [e.name for e in it]
    for name in names:
        if keep is not None and name in keep:
            continue
        remove_entry(fd, name)


def rmtree(path: str | Path) -> None:
    """Remove a path recursively (symlinks are removed, not followed). Missing is fine."""
    path = os.fspath(path)
    parent, name = os.path.split(path.rstrip("/")) if path != "/" else ("/", "")
    if not name:
        raise ValueError(f"refusing to remove {path!r}")
    try:
        pfd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        remove_entry(pfd, name)
    finally:
        os.close(pfd)


def _copy_xattrs(src: str, dst: str, follow: bool) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return
        raise
    for name in names:
        try:
            value = os.getxattr(src, name, follow_symlinks=follow)
            os.setxattr(dst, name, value, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.ENODATA):
                raise


def _copy_data(src: str, dst: str, mode: int) -> None:
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        try:
            size = os.fstat(sfd).st_size
            left = size
            use_cfr = hasattr(os, "copy_file_range")
            while left > 0:
                try:
                    n = (os.copy_file_range(sfd, dfd, min(left, 1 << 30)) if use_cfr
                         else os.sendfile(dfd, sfd, None, min(left, 1 << 30)))
                except OSError as exc:
                    if use_cfr and exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                                 errno.EOPNOTSUPP):
                        use_cfr = False
                        continue
                    raise
                if n == 0:
                    break
                left -= n
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def copytree(src: str | Path, dst: str | Path, links: dict | None = None) -> None:
    """Copy a directory tree exactly: types, hardlinks, ownership, modes, xattrs, times.

    `dst` must not exist. Sockets are skipped. Symlinks are copied as symlinks.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    links = {} if links is None else links
    st = os.lstat(src)
    os.mkdir(dst, 0o700)
    dirs = [(src, dst, st)]
    _copy_children(src, dst, links, dirs)
    # Directory metadata last (children change a directory's mtime; mode may forbid writing).
    for s, d, sst in reversed(dirs):
        os.chown(d, sst.st_uid, sst.st_gid, follow_symlinks=False)
        os.chmod(d, stat.S_IMODE(sst.st_mode))
        _copy_xattrs(s, d, True)
        os.utime(d, ns=(sst.st_atime_ns, sst.st_mtime_ns), follow_symlinks=False)


def _copy_children(src: str, dst: str, links: dict, dirs: list) -> None:
    with os.scandir(src) as it:
        entries = list(it)
    for entry in entries:
        s = entry.path
        d = os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(d, 0o700)
            dirs.append((s, d, st))
            _copy_children(s, d, links, dirs)
            continue
        if st.st_nlink > 1 and not stat.S_ISDIR(mode):
            key = (st.st_dev, st.st_ino)
            first = links.get(key)
            if first is not None:
                os.link(first, d, follow_symlinks=False)
                continue
            links[key] = d
        if stat.S_ISREG(mode):
            _copy_data(s, d, mode)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(d, mode, st.st_rdev)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(d, stat.S_IMODE(mode))
        else:  # sockets and other things that cannot be copied
            continue
        os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
        if not stat.S_ISLNK(mode):
            os.chmod(d, stat.S_IMODE(mode))
            _copy_xattrs(s, d, True)
        else:
            _copy_xattrs(s, d, False)
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def dir_size(path: str | Path) -> int:
    """Bytes of file content under `path` (hardlinks counted once, symlinks by target length)."""
    seen = set()
    total = 0
    stack = [os.fspath(path)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    total += st.st_size
    return total
