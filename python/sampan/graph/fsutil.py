"""File-system helpers that never follow symlinks: removal by directory fd (which never crosses
into a file system mounted below), exact tree copies, and detaching the mounts a crash left."""

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


def mount_of(fd: int) -> tuple[str, int]:
    """Which mount the open file `fd` is on: its mount id (/proc/self/fdinfo), or, without
    /proc, its device (which misses a bind mount of the same file system)."""
    try:
        info = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ("dev", os.fstat(fd).st_dev)
    try:
        data = os.read(info, 512)
    finally:
        os.close(info)
    for line in data.split(b"\n"):
        if line.startswith(b"mnt_id:"):
            return ("mnt", int(line.split()[1]))
    return ("dev", os.fstat(fd).st_dev)


def remove_entry(dir_fd: int, name: str, _mount: tuple[str, int] | None = None) -> None:
    """Remove `name` inside the directory `dir_fd`, recursively, never following symlinks.

    A directory with a file system mounted on it (at `name` or anywhere below) is refused with
    EBUSY before anything of the mounted file system is touched: removing through a leftover
    mount would delete what it shows (a bind-mounted volume, an image layer), and rmdir of the
    mount point fails anyway. Callers that own such mounts detach them first
    (`detach_mounts`)."""
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
        here = mount_of(fd)
        if here != (mount_of(dir_fd) if _mount is None else _mount):
            raise OSError(errno.EBUSY, "a file system is mounted on it; not removing what it "
                          "shows", name)
        clear_dir(fd, _mount=here)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def clear_dir(fd: int, keep=None, _mount: tuple[str, int] | None = None) -> None:
    """Remove every entry of the directory `fd` (except names in `keep`); mounts below are
    refused as in `remove_entry`."""
    with os.scandir(fd) as it:
        names = [e.name for e in it]
    here = mount_of(fd) if _mount is None else _mount
    for name in names:
        if keep is not None and name in keep:
            continue
        remove_entry(fd, name, here)


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


def _unescape(field: str) -> str:
    """A path as /proc/self/mountinfo writes it (octal escapes for space, tab, newline, \\)."""
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def mounts_under(path: str | Path) -> list[str]:
    """Mount points at or below `path` in this process's mount namespace, deepest first (a
    mount stacked on another is listed once per mount)."""
    target = os.path.realpath(path)
    below = target.rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().decode(errors="surrogateescape").splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        mp = _unescape(fields[4])
        if mp == target or mp.startswith(below):
            found.append(mp)
    # deepest first; among mounts on one point, the later (upper) one first
    order = {mp: i for i, mp in enumerate(found)}
    return sorted(found, key=lambda mp: (-mp.count("/"), -order[mp]))


_libc = None


def _umount2(path: str, flags: int) -> int:
    """umount2(2); 0 or the errno."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.umount2(os.fsencode(path), flags) == 0:
        return 0
    import ctypes

    return ctypes.get_errno()


MNT_DETACH = 2


def detach_mounts(path: str | Path) -> int:
    """Lazily detach (MNT_DETACH) every mount at or below `path`, deepest first; how many.

    For what a crash left under a directory about to be removed (an overlay probe, a container
    rootfs with no record): MNT_DETACH never fails for a mount still in use, and a process still
    holding files there keeps them until it closes them. Only this mount namespace is seen;
    a copy of the mount in another namespace does not block rmdir (Linux >= 3.18 detaches it
    when its mount point is removed), and an unmount here propagates to slaves and peers."""
    if os.path.realpath(path) == "/":
        raise ValueError("refusing to detach every mount")
    done = 0
    for _ in range(100):  # stacked mounts come back one layer at a time
        mps = mounts_under(path)
        if not mps:
            return done
        for mp in mps:
            err = _umount2(mp, MNT_DETACH)
            if err == 0:
                done += 1
            elif err not in (errno.EINVAL, errno.ENOENT):  # gone meanwhile
                raise OSError(err, f"unmounting {mp}: {os.strerror(err)}", mp)
    raise OSError(errno.EBUSY, f"mounts under {path} keep coming back", os.fspath(path))


def remove_detached(path: str | Path) -> int:
    """Remove `path` recursively once whatever is mounted at or below it (what a crash or a
    lost record left) is detached: never deleting through a mount. How many were detached."""
    n = detach_mounts(path)
    rmtree(path)
    return n


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
