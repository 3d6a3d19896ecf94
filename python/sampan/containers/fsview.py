"""A container's file system seen from the daemon, resolved as if chrooted — for `cp` (archive
GET/HEAD/PUT), `export`, `changes` and the copy-up of image content into new volumes.

Every path is walked one component at a time from a directory fd, with O_NOFOLLOW opens and
fstatat(AT_SYMLINK_NOFOLLOW): the kernel never follows a symlink for us. A symlink met on the
way is read and its target resolved in the container's root — an absolute target restarts at
the container's "/", ".." never climbs above it — so a link to "/" or "../../etc/passwd" lands
inside the container, never on the host. An entry swapped for a symlink between our stat and
our open fails the O_NOFOLLOW open and is resolved again.

Two kinds of root:
- a running container: /proc/PID/root (the container's own mount namespace, so volumes, binds
  and tmpfs mounts are crossed by the kernel exactly as the container sees them), pinned with a
  pidfd and checked to be in the container's cgroup;
- a stopped one: its rootfs (the overlay `merged` dir) plus a map of its mount points
  (volumes, binds, the generated /etc files) to their sources on the host, crossed by us.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sampan.errors import InvalidArgument, NotFound, SampanError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40
CHUNK = 1 << 20
# Kernel file systems of a running container: listed, never descended into.
PSEUDO = {("proc",), ("sys",), ("dev", "pts"), ("dev", "mqueue"), ("sys", "fs", "cgroup")}


class Forbidden(SampanError):
    status = 403


def split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


@dataclass
class Entry:
    """A resolved path: `dfd` is the directory holding it (owned by the caller: close it),
    `real` its name there ("." for a root), `vname` its name in the container, `vparts` the
    container path of `dfd`."""

    dfd: int
    real: str
    vname: str
    vparts: tuple[str, ...]

    @property
    def vpath(self) -> str:
        if self.vname == "/":
            return "/"
        return "/" + "/".join(self.vparts + (self.vname,))

    def lstat(self) -> os.stat_result | None:
        try:
            return os.stat(self.real, dir_fd=self.dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def close(self) -> None:
        if self.dfd >= 0:
            os.close(self.dfd)
            self.dfd = -1


class View:
    def __init__(self, root_fd: int, mounts: dict[tuple[str, ...], str] | None = None,
                 pseudo: bool = False, pidfd: int = -1):
        self.root_fd = root_fd
        self.mounts = dict(mounts or {})
        self.pseudo = pseudo       # skip the contents of /proc, /sys, … (a live root)
        self.pidfd = pidfd
        # container paths where something is mounted: never replaced by an upload
        self.mountpoints = {"/" + "/".join(k) for k in self.mounts}

    @classmethod
    def for_path(cls, root: str, mounts: dict[tuple[str, ...], str] | None = None) -> View:
        return cls(os.open(root, _DIR), mounts)

    @classmethod
    def for_process(cls, pid: int, cid: str) -> View | None:
        """The live root of a container's process, or None when it is gone (or the pid is not
        the container's any more)."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if cid not in f.read():
                    os.close(pidfd)
                    return None
            fd = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            os.close(pidfd)
            return None
        import select

        if select.select([pidfd], [], [], 0)[0]:  # exited meanwhile: the pid may be reused
            os.close(fd)
            os.close(pidfd)
            return None
        view = cls(fd, None, pseudo=True, pidfd=pidfd)
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 4:
                        view.mountpoints.add(_unescape(fields[4]))
        except OSError:
            pass
        return view

    def close(self) -> None:
        for fd in (self.root_fd, self.pidfd):
            if fd >= 0:
                os.close(fd)
        self.root_fd = self.pidfd = -1

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- resolution

    def open_child(self, fd: int, vparts: tuple[str, ...], name: str) -> int:
        """The directory `name` of `fd` (at container path `vparts`), crossing a mapped mount
        point; OSError when it is not a directory (or became a symlink)."""
        src = self.mounts.get(vparts + (name,))
        if src is not None:
            return os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return os.open(name, _DIR, dir_fd=fd)

    def resolve(self, path: str, follow_last: bool = False, mkdirs: bool = False) -> Entry:
        """The entry at container path `path` (which need not exist: then `lstat()` is None).
        Every parent must be a directory (NotFound / InvalidArgument otherwise)."""
        todo = split(path)
        stack = [os.dup(self.root_fd)]
        vparts: list[str] = []
        links = 0
        try:
            while todo:
                name = todo.pop(0)
                if name == "..":
                    if vparts:
                        os.close(stack.pop())
                        vparts.pop()
                    continue
                last = not todo
                fd = stack[-1]
                key = tuple(vparts) + (name,)
                src = self.mounts.get(key)
                if src is not None:
                    if last:
                        return self._mount_entry(src, name, vparts)
                    try:
                        stack.append(self.open_child(fd, tuple(vparts), name))
                    except NotADirectoryError:
                        raise InvalidArgument(f"{path}: {'/' + '/'.join(key)} is not a "
                                              "directory") from None
                    vparts.append(name)
                    continue
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    if last:
                        return Entry(os.dup(fd), name, name, tuple(vparts))
                    if not mkdirs:
                        raise NotFound(f"Could not find the file {path} in container") from None
                    os.mkdir(name, 0o755, dir_fd=fd)
                    todo.insert(0, name)
                    continue
                if stat.S_ISLNK(st.st_mode) and (not last or follow_last):
                    links += 1
                    if links > _MAX_LINKS:
                        raise InvalidArgument(f"{path}: too many levels of symbolic links")
                    target = os.readlink(name, dir_fd=fd)
                    if target.startswith("/"):
                        for f in stack[1:]:
                            os.close(f)
                        del stack[1:]
                        vparts.clear()
                    todo = split_keep_dotdot(target) + todo
                    continue
                if last:
                    return Entry(os.dup(fd), name, name, tuple(vparts))
                if not stat.S_ISDIR(st.st_mode):
                    raise InvalidArgument(f"{path}: {'/' + '/'.join(key)} is not a directory")
                try:
                    nfd = os.open(name, _DIR, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        links += 1  # changed under us: look at it again (bounded)
                        if links > _MAX_LINKS:
                            raise InvalidArgument(f"{path}: changed while resolving") from None
                        todo.insert(0, name)
                        continue
                    raise
                stack.append(nfd)
                vparts.append(name)
            # the path names a directory reached through its parts (or the root)
            if not vparts:
                return Entry(os.dup(stack[0]), ".", "/", ())
            parent = stack[-2]
            name = vparts[-1]
            key = tuple(vparts)
            if key in self.mounts:
                return self._mount_entry(self.mounts[key], name, vparts[:-1])
            return Entry(os.dup(parent), name, name, tuple(vparts[:-1]))
        finally:
            for f in stack:
                os.close(f)

    def _mount_entry(self, src: str, name: str, vparts: list[str] | tuple[str, ...]) -> Entry:
        head, tail = os.path.split(src.rstrip("/"))
        return Entry(os.open(head or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), tail,
                     name, tuple(vparts))


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def split_keep_dotdot(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


# -------------------------------------------------------------------- stat (the header)


def go_mode(mode: int) -> int:
    """A unix st_mode as Go's os.FileMode (what docker's path stat carries)."""
    out = mode & 0o777
    if stat.S_ISDIR(mode):
        out |= 1 << 31
    elif stat.S_ISLNK(mode):
        out |= 1 << 27
    elif stat.S_ISFIFO(mode):
        out |= 1 << 25
    elif stat.S_ISSOCK(mode):
        out |= 1 << 24
    elif stat.S_ISCHR(mode):
        out |= (1 << 26) | (1 << 21)
    elif stat.S_ISBLK(mode):
        out |= 1 << 26
    if mode & stat.S_ISUID:
        out |= 1 << 23
    if mode & stat.S_ISGID:
        out |= 1 << 22
    if mode & stat.S_ISVTX:
        out |= 1 << 20
    return out


def rfc3339(t: float) -> str:
    s = int(t)
    ns = int(round((t - s) * 1e9))
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
    return base + (f".{ns:09d}".rstrip("0") if ns else "") + "Z"


def path_stat(view: View, path: str) -> dict[str, Any]:
    """docker's ContainerPathStat of `path` (symlinks in the last component not followed unless
    the path ends with "/" or "/.")."""
    follow = path.endswith("/") or path.endswith("/.")
    e = view.resolve(path, follow_last=follow)
    try:
        st = e.lstat()
        if st is None:
            raise NotFound(f"Could not find the file {path} in container")
        link = ""
        if stat.S_ISLNK(st.st_mode):
            t = view.resolve(path, follow_last=True)
            try:
                link = t.vpath
            finally:
                t.close()
        name = os.path.basename(path.rstrip("/")) if path.rstrip("/") else "/"
        if path.endswith("/."):
            name = "."
        return {"name": name, "size": st.st_size, "mode": go_mode(st.st_mode),
                "mtime": rfc3339(st.st_mtime), "linkTarget": link}
    finally:
        e.close()


# -------------------------------------------------------------------- tar out


def _header(name: str, st: os.stat_result, kind: bytes, linkname: str = "",
            xattrs: dict[str, bytes] | None = None) -> bytes:
    ti = tarfile.TarInfo(name)
    if xattrs:
        # binary values go through surrogateescape: tarfile writes them back byte for byte
        ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                          for k, v in xattrs.items()}
    ti.type = kind
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = int(st.st_mtime)
    ti.size = st.st_size if kind == tarfile.REGTYPE else 0
    ti.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _capability(fd: int) -> dict[str, bytes] | None:
    """File capabilities, the one xattr docker's archives carry."""
    try:
        return {"security.capability": os.getxattr(fd, "security.capability")}
    except OSError:
        return None


def _file_data(fd: int, size: int) -> Iterator[bytes]:
    left = size
    while left > 0:
        chunk = os.read(fd, min(CHUNK, left))
        if not chunk:  # shrank while we read: the header promised `size` bytes
            chunk = b"\0" * min(CHUNK, left)
        left -= len(chunk)
        yield chunk
    if size % 512:
        yield b"\0" * (512 - size % 512)


def tar_entry(view: View, e: Entry, rebase: str, end: bool = True) -> Iterator[bytes]:
    """The entry (a directory recursively, never following symlinks) as a tar stream whose
    names start with `rebase`."""
    links: dict[tuple[int, int], str] = {}
    st = e.lstat()
    if st is None:
        raise NotFound(f"Could not find the file {e.vpath} in container")
    vparts = () if e.vname == "/" else e.vparts + (e.vname,)
    yield from _tar_one(view, e.dfd, e.real, vparts, st, rebase, links)
    if end:
        yield b"\0" * 1024


def _tar_one(view: View, dfd: int, real: str, vparts: tuple[str, ...], st: os.stat_result,
             name: str, links: dict) -> Iterator[bytes]:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        yield _header(name.rstrip("/") + "/", st, tarfile.DIRTYPE)
        if view.pseudo and vparts in PSEUDO:
            return
        try:
            fd = os.dup(dfd) if real == "." else os.open(real, _DIR, dir_fd=dfd)
        except OSError:
            return  # changed under us: listed as it was
        try:
            with os.scandir(fd) as it:
                names = sorted(x.name for x in it)
            for child in names:
                cv = vparts + (child,)
                child_name = f"{name.rstrip('/')}/{child}"
                src = view.mounts.get(cv)
                if src is not None:  # a mount point of a stopped container: its source
                    try:
                        cst = os.stat(src)
                    except OSError:
                        continue
                    head, tail = os.path.split(src.rstrip("/"))
                    hfd = os.open(head or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        yield from _tar_one(view, hfd, tail, cv, cst, child_name, links)
                    finally:
                        os.close(hfd)
                    continue
                try:
                    cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield from _tar_one(view, fd, child, cv, cst, child_name, links)
        finally:
            os.close(fd)
    elif stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            yield _header(name, st, tarfile.LNKTYPE, links[key])
            return
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        except OSError:
            return
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                return
            if st.st_nlink > 1:
                links[key] = name
            yield _header(name, fst, tarfile.REGTYPE, xattrs=_capability(fd))
            yield from _file_data(fd, fst.st_size)
        finally:
            os.close(fd)
    elif stat.S_ISLNK(mode):
        try:
            target = os.readlink(real, dir_fd=dfd)
        except OSError:
            return
        yield _header(name, st, tarfile.SYMTYPE, target)
    elif stat.S_ISFIFO(mode):
        yield _header(name, st, tarfile.FIFOTYPE)
    elif stat.S_ISCHR(mode):
        yield _header(name, st, tarfile.CHRTYPE)
    elif stat.S_ISBLK(mode):
        yield _header(name, st, tarfile.BLKTYPE)
    # sockets are not archived (like docker)


# -------------------------------------------------------------------- tar in


def check_members(reader: Any) -> int:
    """First pass over an upload: every member name relative and inside, supported types.
    InvalidArgument names the first bad member; nothing is written. Returns the count."""
    from sampan.graph.tarstream import TarReader

    tar = TarReader(reader, "archive member")
    n = 0
    for m in tar:
        _check_name(m.name, m.name)
        if m.islnk():
            _check_name(m.linkname, m.name, "hardlink target ")
        n += 1
    return n


def _check_name(name: str, member: str, what: str = "") -> list[str]:
    if name.startswith("/"):
        raise InvalidArgument(f"archive member {member!r}: {what}absolute path refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"archive member {member!r}: {what}'..' in the path refused "
                              "(it would leave the destination)")
    return parts


def extract(view: View, dest: str, reader: Any, no_overwrite_dir_nondir: bool = False,
            owner: tuple[int, int] | None = None, rebase: tuple[str, str] | None = None
            ) -> None:
    """Unpack a (checked) tar stream into the container directory `dest`, resolving every
    member inside the container's root. `rebase` (old, new) renames the first component of
    member names (and hardlink targets), as the cp client does."""
    from sampan.graph.tarstream import TarReader

    tar = TarReader(reader, "archive member")
    dir_times: list[tuple[str, float]] = []
    base = dest.rstrip("/") or "/"
    # the directory of the last member (members come grouped by directory): its fd is
    # anchored inside the container, so reusing it never leaves the root
    cached: tuple[str, int, tuple[str, ...]] | None = None
    try:
        for m in tar:
            if rebase is not None:
                _check_name(m.name, m.name)
                m.name = _rebase(m.name, *rebase)
                if m.islnk():
                    _check_name(m.linkname, m.name, "hardlink target ")
                    m.linkname = _rebase(m.linkname, *rebase)
            parts = _check_name(m.name, m.name)
            if not parts:
                continue  # the destination itself: left as it is (docker keeps its metadata)
            vpath = base.rstrip("/") + "/" + "/".join(parts)
            parent = vpath.rpartition("/")[0] or "/"
            leaf = parts[-1]
            if cached is not None and cached[0] == parent and \
                    cached[2] + (leaf,) not in view.mounts:
                e = Entry(os.dup(cached[1]), leaf, leaf, cached[2])
            else:
                e = view.resolve(vpath, follow_last=False, mkdirs=True)
                if cached is not None:
                    os.close(cached[1])
                    cached = None
                if e.vparts + (e.vname,) not in view.mounts:
                    cached = (parent, os.dup(e.dfd), e.vparts)
            try:
                _apply(view, tar, m, e, vpath, base, no_overwrite_dir_nondir, owner)
            finally:
                e.close()
            if m.isdir():
                dir_times.append((vpath, m.mtime))
    finally:
        if cached is not None:
            os.close(cached[1])
    for vpath, mtime in reversed(dir_times):
        e = view.resolve(vpath)
        try:
            os.utime(e.real, (mtime, mtime), dir_fd=e.dfd, follow_symlinks=False)
        except OSError:
            pass
        finally:
            e.close()


def _set_xattrs(fd: int, m: Any) -> None:
    for key, value in (getattr(m, "xattrs", None) or {}).items():
        # overlay metadata would steer the container's overlay mount: never from an upload
        if key.startswith(("trusted.overlay.", "user.overlay.")):
            continue
        try:
            os.setxattr(fd, key, value)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EINVAL):
                raise


def _rebase(name: str, old: str, new: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")] if old != "." else \
        ["."] + [p for p in name.split("/") if p not in ("", ".")]
    if parts and parts[0] == old:
        parts[0] = new
    return "/".join(p for p in parts if p != ".") or "."


def _apply(view: View, tar: Any, m: Any, e: Entry, vpath: str, base: str, no_over: bool,
           owner: tuple[int, int] | None) -> None:
    from sampan.graph.fsutil import remove_entry

    st = e.lstat()
    uid, gid = owner if owner is not None else (m.uid, m.gid)
    if st is not None:
        is_dir = stat.S_ISDIR(st.st_mode)
        if not (m.isdir() and is_dir) and e.vpath in view.mountpoints:
            raise InvalidArgument(f"cannot replace the mount point {e.vpath} with "
                                  f"\"{m.name}\"")
        if m.isdir() and is_dir:
            os.chown(e.real, uid, gid, dir_fd=e.dfd, follow_symlinks=False)
            os.chmod(e.real, m.mode & 0o7777, dir_fd=e.dfd, follow_symlinks=False)
            return
        if no_over and is_dir and not m.isdir():
            raise InvalidArgument(f"cannot overwrite directory \"{vpath}\" with non-directory "
                                  f"\"{m.name}\"")
        if no_over and not is_dir and m.isdir():
            raise InvalidArgument(f"cannot overwrite non-directory \"{vpath}\" with directory "
                                  f"\"{m.name}\"")
        remove_entry(e.dfd, e.real)
    pfd, name = e.dfd, e.real
    if m.isreg():
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            for chunk in tar.data(m):
                view_ = memoryview(chunk)
                while view_:
                    n = os.write(fd, view_)
                    view_ = view_[n:]
            os.fchown(fd, uid, gid)
            os.fchmod(fd, m.mode & 0o7777)
            _set_xattrs(fd, m)  # after the chown, which clears security.capability
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)
        return
    if m.isdir():
        os.mkdir(name, 0o700, dir_fd=pfd)
    elif m.issym():
        os.symlink(m.linkname, name, dir_fd=pfd)
    elif m.islnk():
        target = view.resolve(base.rstrip("/") + "/" + "/".join(_check_name(m.linkname, m.name)))
        try:
            tst = target.lstat()
            if tst is None or stat.S_ISDIR(tst.st_mode):
                raise InvalidArgument(f"archive member {m.name!r}: hardlink target "
                                      f"{m.linkname!r} not found")
            os.link(target.real, name, src_dir_fd=target.dfd, dst_dir_fd=pfd,
                    follow_symlinks=False)
        finally:
            target.close()
        return
    elif m.isfifo():
        os.mkfifo(name, 0o600, dir_fd=pfd)
    elif m.ischr() or m.isblk():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        os.mknod(name, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
    else:
        raise InvalidArgument(f"archive member {m.name!r}: unsupported type")
    os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
    if not m.issym():
        os.chmod(name, m.mode & 0o7777, dir_fd=pfd, follow_symlinks=False)
    os.utime(name, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)


def coalesce(chunks: Iterator[bytes], size: int = 1 << 18) -> Iterator[bytes]:
    """Small pieces (tar headers, small files) joined into chunks of about `size`: each chunk
    costs a thread hand-off and an HTTP chunk."""
    buf: list[bytes] = []
    n = 0
    try:
        for c in chunks:
            buf.append(c)
            n += len(c)
            if n >= size:
                yield b"".join(buf)
                buf, n = [], 0
        if buf:
            yield b"".join(buf)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def tar_tree(root: str) -> Iterator[bytes]:
    """A whole root file system (export): its entries with relative names, no mounts."""
    with View.for_path(root) as view:
        links: dict = {}
        with os.scandir(view.root_fd) as it:
            names = sorted(x.name for x in it)
        for child in names:
            try:
                st = os.stat(child, dir_fd=view.root_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield from _tar_one(view, view.root_fd, child, (child,), st, child, links)
        yield b"\0" * 1024


# -------------------------------------------------------------------- changes


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def changes_overlay(upper: str, lowers: list[str]) -> list[dict[str, Any]]:
    """The writable layer's changes, docker's way: walk the upper dir in lexical order; a
    whiteout is a deletion, a path present in a lower layer a modification, else an
    addition (0 modified, 1 added, 2 deleted); the parent of an addition or deletion counts as
    modified."""
    out: list[dict[str, Any]] = []
    changed_dirs: set[str] = set()

    def in_lower(rel: str) -> bool:
        return any(os.path.lexists(os.path.join(lo, rel)) for lo in lowers)

    def walk(dirpath: str, rel: str) -> None:
        try:
            with os.scandir(dirpath) as it:
                entries = sorted(it, key=lambda x: x.name)
        except OSError:
            return
        for ent in entries:
            crel = f"{rel}/{ent.name}" if rel else ent.name
            path = "/" + crel
            st = ent.stat(follow_symlinks=False)
            if _is_whiteout(st):
                kind = 2
            else:
                kind = 0 if in_lower(crel) else 1
            if kind in (1, 2):
                parent = os.path.dirname(path)
                if parent != "/" and parent not in changed_dirs:
                    out.append({"Path": parent, "Kind": 0})
                    changed_dirs.add(parent)
            if stat.S_ISDIR(st.st_mode):
                changed_dirs.add(path)
            out.append({"Path": path, "Kind": kind})
            if stat.S_ISDIR(st.st_mode):
                walk(ent.path, crel)

    walk(upper, "")
    return out


def changes_copy(rootfs: str, base: str | None) -> list[dict[str, Any]]:
    """vfs: compare the container's full copy with its image's top layer, docker's way: an
    entry differs by type, mode, owner, or (not for directories) size and mtime; a directory
    that holds changes is reported modified before them (never the root)."""

    def same(a: os.stat_result, b: os.stat_result) -> bool:
        if (a.st_mode, a.st_uid, a.st_gid, a.st_rdev) != (b.st_mode, b.st_uid, b.st_gid,
                                                          b.st_rdev):
            return False
        return stat.S_ISDIR(a.st_mode) or (a.st_size, a.st_mtime_ns) == (b.st_size,
                                                                         b.st_mtime_ns)

    def listdir(p: str | None) -> set[str]:
        if p is None or not os.path.isdir(p) or os.path.islink(p):
            return set()
        return set(os.listdir(p))

    def walk(rel: str, out: list[dict[str, Any]]) -> None:
        cur = os.path.join(rootfs, rel)
        old = os.path.join(base, rel) if base else None
        names, old_names = listdir(cur), listdir(old)
        for name in sorted(names | old_names):
            crel = os.path.join(rel, name)
            path = "/" + crel
            if name not in names:
                out.append({"Path": path, "Kind": 2})
                continue
            st = os.lstat(os.path.join(rootfs, crel))
            added = name not in old_names
            if added:
                out.append({"Path": path, "Kind": 1})
            else:
                ost = os.lstat(os.path.join(base or "", crel))
                if not same(st, ost):
                    out.append({"Path": path, "Kind": 0})
            if stat.S_ISDIR(st.st_mode) and not os.path.islink(os.path.join(rootfs, crel)):
                at = len(out)
                walk(crel, out)
                if len(out) > at and not added and not (out[at - 1:at] and
                                                        out[at - 1]["Path"] == path):
                    out.insert(at, {"Path": path, "Kind": 0})

    result: list[dict[str, Any]] = []
    walk("", result)
    return result
