"""Layer unpacking: decompress, hash and untar in one streamed pass, safely.

    stream → HashReader (compressed digest) → decompressor (gzip/zstd/bzip2/xz/none, from the
    magic bytes) → HashReader (diff id) → tar reader → files under the layer root

Every member path is resolved inside the layer root by walking it one component at a time with
directory file descriptors opened O_NOFOLLOW; a component that is a symlink is followed only
when its target stays inside the root (relative, not climbing out with ".."). The kernel never
follows a symlink for us. Refused with InvalidArgument naming the member: absolute paths, ".."
components, writing through a symlink that leaves the root, hardlinks whose target is outside
(or missing), unknown member types.

Whiteouts: "overlay" mode turns `.wh.NAME` into a character device 0:0 and `.wh..wh..opq` into
the xattr trusted.overlay.opaque=y on its directory (the layer is an overlayfs lower dir);
"delete" mode (vfs: the layer root holds a copy of the parent) removes NAME, or every entry of
the directory that this layer did not itself write.
"""

from __future__ import annotations

import bz2
import errno
import lzma
import os
import stat
import zlib
from typing import BinaryIO

from sampan.errors import InvalidArgument, SampanError

from .fsutil import remove_entry
from .tarstream import Member, TarReader

CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
_MAX_SYMLINKS = 40
_MAX_CACHED_DIRS = 512


# --------------------------------------------------------------------------- streams


class HashReader:
    """Reads through to `raw`, hashing and counting every byte that passes (counting only
    when `algorithm` is None: bytes someone else verifies)."""

    def __init__(self, raw, algorithm: str | None = "sha256"):
        self.raw = raw
        self.algorithm = algorithm
        self.hash = None
        if algorithm is not None:
            import hashlib  # here: OpenSSL's libcrypto costs an idle daemon 3.5 MiB

            self.hash = hashlib.new(algorithm)
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n is not None and n >= 0 else CHUNK)
        if data:
            if self.hash is not None:
                self.hash.update(data)
            self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def digest(self) -> str | None:
        return None if self.hash is None else f"{self.algorithm}:{self.hash.hexdigest()}"


class _Peek:
    """A reader that lets the first bytes be looked at before they are consumed."""

    def __init__(self, raw):
        self.raw = raw
        self.buf = b""

    def peek(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.raw.read(n - len(self.buf))
            if not data:
                break
            self.buf += data
        return self.buf[:n]

    def read(self, n: int = -1) -> bytes:
        if self.buf:
            if n is None or n < 0 or n >= len(self.buf):
                data, self.buf = self.buf, b""
                return data
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        return self.raw.read(n)


class _Decompressing:
    """Decompresses `raw` with objects from `factory`; concatenated streams are read on.

    zlib objects keep unconsumed input in `unconsumed_tail`; bz2/lzma ones (`buffered`) keep it
    inside and want to be called with b"" until they need input again.
    """

    def __init__(self, raw, factory, name: str, buffered: bool = False):
        self.raw = raw
        self.factory = factory
        self.name = name
        self.buffered = buffered
        self.d = factory()
        self.started = False
        self.pending = b""

    def read(self, n: int = -1) -> bytes:
        limit = CHUNK if n is None or n < 0 else max(n, 1)
        while True:
            d = self.d
            if self.buffered and self.started and not d.eof and not d.needs_input:
                data = b""
            elif self.pending:
                data, self.pending = self.pending, b""
            else:
                data = self.raw.read(CHUNK // 4)
                if not data:
                    if self.started and not d.eof:
                        raise InvalidArgument(f"layer: truncated {self.name} stream")
                    return b""
            if d.eof:
                if not data.strip(b"\0"):
                    continue  # zero padding after the last stream
                d = self.d = self.factory()
                self.started = False
            try:
                out = d.decompress(data, limit)
            except (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError) as exc:
                raise InvalidArgument(f"layer: invalid {self.name} data: {exc}") from None
            self.started = True
            if d.eof:
                self.pending = d.unused_data
            elif not self.buffered:
                self.pending = d.unconsumed_tail
            if out:
                return out


def _zstd_reader(raw):
    from .zstd import reader  # the decoder this machine has (the zstandard wheel is optional)

    return reader(raw)


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


def detect_compression(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC) and len(head) >= 4 and head[3:4] in b"123456789":
        return "bzip2"
    return "none"


def check_media_type(media_type: str | None) -> None:
    if media_type and ("+encrypted" in media_type or media_type.endswith("+enc")):
        raise InvalidArgument(f"layer media type {media_type}: encrypted layers are not "
                              "supported")


def decompressed(stream, media_type: str | None = None):
    """A reader of the uncompressed bytes of `stream`, and the compression found.

    The magic bytes decide (gzip, zstd, bzip2, xz, else none); the media type only tells when
    the stream is empty or refused (encrypted).
    """
    check_media_type(media_type)
    peek = _Peek(stream)
    kind = detect_compression(peek.peek(6))
    if kind == "gzip":
        return _Decompressing(peek, lambda: zlib.decompressobj(wbits=31), "gzip"), kind
    if kind == "zstd":
        return _zstd_reader(peek), kind
    if kind == "bzip2":
        return _Decompressing(peek, bz2.BZ2Decompressor, "bzip2", buffered=True), kind
    if kind == "xz":
        return _Decompressing(peek, lzma.LZMADecompressor, "xz", buffered=True), kind
    return peek, kind


# --------------------------------------------------------------------------- applying


def _xattrs(member) -> dict:
    # Overlay metadata in a layer would let an image steer the overlay mount (redirects,
    # opaque marks): only the whiteout conversion here may produce it.
    return {k: v for k, v in member.xattrs.items()
            if not k.startswith("trusted.overlay.") and not k.startswith("user.overlay.")}


def _mtime_ns(member: Member) -> int:
    return round(float(member.mtime) * 1_000_000_000)


class LayerApplier:
    """Applies tar members to one layer root. Not thread-safe; one per layer."""

    def __init__(self, root, whiteouts: str = "overlay"):
        if whiteouts not in ("overlay", "delete"):
            raise ValueError(f"whiteouts must be 'overlay' or 'delete', not {whiteouts!r}")
        self.mode = whiteouts
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._dirs: dict = {}            # real path → directory fd, kept between members
        self._loose: list = []           # fds not cached (cache full), closed between members
        self._unpacked: set = set()      # real paths this layer wrote (for "delete" opaques)
        self._dir_times: list = []
        self._inodes: set = set()
        self.size = 0

    # -- bookkeeping

    def close(self) -> None:
        self._safe_point()
        self._forget_dirs()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def _forget_dirs(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _remember(self, real: tuple, fd: int) -> bool:
        """Cache a directory fd; when the cache is full it is closed at the next safe point."""
        if len(self._dirs) >= _MAX_CACHED_DIRS:
            self._loose.append(fd)
            return False
        self._dirs[real] = fd
        return True

    def _safe_point(self) -> None:
        """Between members, when no fd handed out is in use any more."""
        for fd in self._loose:
            os.close(fd)
        self._loose.clear()
        if len(self._dirs) >= _MAX_CACHED_DIRS:
            self._forget_dirs()

    @staticmethod
    def _refuse(member: str, why: str):
        raise InvalidArgument(f"layer member {member!r}: {why}")

    def _split(self, name: str, member: str, what: str = "") -> list:
        if name.startswith("/"):
            self._refuse(member, f"{what}absolute path refused")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            self._refuse(member, f"{what}'..' in the path refused (it would leave the layer)")
        return parts

    # -- safe path resolution

    def _walk(self, parts, member: str, create: bool):
        """(fd, real parts) of the directory `parts` inside the root; None if missing and not
        `create`. Symlinks are followed only while they stay inside the root."""
        key = tuple(parts)
        if not key:
            return self.root_fd, ()
        fd = self._dirs.get(key)
        if fd is not None:
            return fd, key
        todo = list(parts)
        real: tuple = ()
        fd = self.root_fd
        links = 0
        loose = None      # the previous uncached fd of this walk: closed once we moved on
        while todo:
            name = todo.pop(0)
            nxt = real + (name,)
            cached = self._dirs.get(nxt)
            if cached is not None:
                fd, real = cached, nxt
                continue
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(name, 0o755, dir_fd=fd)
                self._unpacked.add(nxt)
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                where = "/".join(nxt)
                if not stat.S_ISLNK(st.st_mode):
                    if not create:
                        return None
                    self._refuse(member, f"{where!r} is not a directory")
                links += 1
                if links > _MAX_SYMLINKS:
                    self._refuse(member, "too many levels of symbolic links")
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    self._refuse(member, f"{where!r} is a symlink to {target!r}, outside the "
                                         "layer; writing through it is refused")
                resolved = list(real)
                for comp in target.split("/"):
                    if comp in ("", "."):
                        continue
                    if comp == "..":
                        if not resolved:
                            self._refuse(member, f"{where!r} is a symlink to {target!r}, "
                                                 "outside the layer; writing through it is "
                                                 "refused")
                        resolved.pop()
                    else:
                        resolved.append(comp)
                todo = resolved + todo
                real, fd = (), self.root_fd
                continue
            cached = self._remember(nxt, nfd)
            if loose is not None:
                self._loose.remove(loose)
                os.close(loose)
            loose = None if cached else nfd
            fd, real = nfd, nxt
        return fd, real

    # -- metadata

    def _set_xattrs(self, member: Member, target, xattrs: dict, follow: bool) -> None:
        for key, value in xattrs.items():
            try:
                os.setxattr(target, key, value, follow_symlinks=follow)
            except OSError as exc:
                if exc.errno == errno.ENOTSUP or (exc.errno == errno.EPERM
                                                  and key.startswith("user.")):
                    continue
                raise SampanError(f"layer member {member.name!r}: setting xattr {key}: "
                                  f"{exc.strerror}") from None

    # -- members

    def apply(self, tar: TarReader, member: Member) -> None:
        self._safe_point()
        name = member.name
        parts = self._split(name, name)
        if not parts:
            if not member.isdir():
                self._refuse(name, "the layer root must be a directory")
            os.fchown(self.root_fd, member.uid, member.gid)
            os.fchmod(self.root_fd, member.mode & 0o7777)
            self._set_xattrs(member, self.root_fd, _xattrs(member), True)
            self._dir_times.append(((), _mtime_ns(member)))
            return
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts[:-1], base, member)
            return
        link_source = None
        if member.islnk():
            link_source = self._link_source(member)
        pfd, preal = self._walk(parts[:-1], name, create=True)
        real = preal + (base,)
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            if member.isdir() and stat.S_ISDIR(st.st_mode):
                pass
            elif link_source is not None and link_source[2] == (st.st_dev, st.st_ino):
                self._unpacked.add(real)
                return
            else:
                remove_entry(pfd, base)
                if stat.S_ISDIR(st.st_mode):
                    # Cached fds below it are stale now (and may be reused numbers).
                    self._forget_dirs()
                    pfd, preal = self._walk(parts[:-1], name, create=True)
                    if link_source is not None:
                        link_source = self._link_source(member)
        self._unpacked.add(real)
        if member.isreg():
            self._file(tar, member, pfd, base)
        elif member.isdir():
            self._dir(member, pfd, base, real)
        elif member.issym():
            self._symlink(member, pfd, base)
        elif member.islnk():
            lfd, lbase, _ = link_source
            os.link(lbase, base, src_dir_fd=lfd, dst_dir_fd=pfd, follow_symlinks=False)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._node(member, pfd, base)
        else:
            self._refuse(name, f"unsupported tar member type {member.type!r}")

    def _link_source(self, member: Member):
        target = member.linkname
        parts = self._split(target, member.name, f"hardlink target {target!r}: ")
        if not parts:
            self._refuse(member.name, f"hardlink to {target!r} refused")
        found = self._walk(parts[:-1], member.name, create=False)
        if found is None:
            self._refuse(member.name, f"hardlink target {target!r} not found in the layer")
        lfd, _ = found
        try:
            st = os.stat(parts[-1], dir_fd=lfd, follow_symlinks=False)
        except FileNotFoundError:
            self._refuse(member.name, f"hardlink target {target!r} not found in the layer")
        if stat.S_ISDIR(st.st_mode):
            self._refuse(member.name, f"hardlink to the directory {target!r} refused")
        return lfd, parts[-1], (st.st_dev, st.st_ino)

    def _file(self, tar: TarReader, member: Member, pfd: int, base: str) -> None:
        fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            for chunk in tar.data(member):
                n = os.write(fd, chunk)
                if n < len(chunk):
                    view = memoryview(chunk)
                    while n < len(chunk):
                        n += os.write(fd, view[n:])
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)
            self._set_xattrs(member, fd, _xattrs(member), True)
            ns = _mtime_ns(member)
            os.utime(fd, ns=(ns, ns))
            st = os.fstat(fd)
            self._inodes.add((st.st_dev, st.st_ino))
            self.size += member.size
        finally:
            os.close(fd)

    def _dir(self, member, pfd: int, base: str, real: tuple) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            pass
        fd = self._dirs.get(real)
        if fd is None:
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            self._remember(real, fd)
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        self._set_xattrs(member, fd, _xattrs(member), True)
        self._dir_times.append((real, _mtime_ns(member)))

    def _symlink(self, member, pfd: int, base: str) -> None:
        if not member.linkname:
            self._refuse(member.name, "symlink with an empty target")
        os.symlink(member.linkname, base, dir_fd=pfd)
        os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
        xattrs = _xattrs(member)
        if xattrs:
            self._set_xattrs(member, f"/proc/self/fd/{pfd}/{base}", xattrs, False)
        ns = _mtime_ns(member)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
        self.size += len(member.linkname.encode("utf-8", "surrogateescape"))

    def _node(self, member, pfd: int, base: str) -> None:
        perm = member.mode & 0o7777
        if member.isfifo():
            os.mkfifo(base, 0o600, dir_fd=pfd)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor),
                     dir_fd=pfd)
        os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(base, perm, dir_fd=pfd)
        xattrs = _xattrs(member)
        if xattrs:
            self._set_xattrs(member, f"/proc/self/fd/{pfd}/{base}", xattrs, False)
        ns = _mtime_ns(member)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    # -- whiteouts

    def _whiteout(self, parent: list, base: str, member: Member) -> None:
        name = member.name
        if base == WHITEOUT_OPAQUE:
            if self.mode == "overlay":
                pfd, preal = self._walk(parent, name, create=True)
                self._unpacked.add(preal)
                os.setxattr(pfd, "trusted.overlay.opaque", b"y")
            else:
                found = self._walk(parent, name, create=False)
                if found is not None and self._prune_opaque(found[0], found[1]):
                    self._forget_dirs()
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing to apply
        victim = base[len(WHITEOUT_PREFIX):]
        if victim in ("", ".", ".."):
            self._refuse(name, "invalid whiteout name")
        if self.mode == "overlay":
            pfd, preal = self._walk(parent, name, create=True)
            try:
                st = os.stat(victim, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None:
                remove_entry(pfd, victim)
                if stat.S_ISDIR(st.st_mode):
                    self._forget_dirs()
                    pfd, preal = self._walk(parent, name, create=True)
            os.mknod(victim, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
            os.chown(victim, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
            self._unpacked.add(preal + (victim,))
        else:
            found = self._walk(parent, name, create=False)
            if found is None:
                return
            pfd, _ = found
            try:
                st = os.stat(victim, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                return
            remove_entry(pfd, victim)
            if stat.S_ISDIR(st.st_mode):
                self._forget_dirs()

    def _prune_opaque(self, fd: int, real: tuple) -> bool:
        """vfs: remove what this layer did not write under an opaque directory. True when a
        directory went (the caller then drops the fd cache)."""
        self._unpacked.add(real)
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        removed_dir = False
        for name, is_dir in entries:
            path = real + (name,)
            if path not in self._unpacked:
                remove_entry(fd, name)
                removed_dir = removed_dir or is_dir
            elif is_dir:
                cfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                try:
                    removed_dir = self._prune_opaque(cfd, path) or removed_dir
                finally:
                    os.close(cfd)
        return removed_dir

    # -- end

    def finish(self) -> None:
        """Directory times, deepest first (writing inside a directory changes its mtime)."""
        for real, ns in sorted(self._dir_times, key=lambda item: -len(item[0])):
            self._safe_point()
            if not real:
                os.utime(self.root_fd, ns=(ns, ns))
                continue
            found = self._walk(list(real[:-1]), "/".join(real), create=False)
            if found is None:
                continue
            pfd, _ = found
            try:
                st = os.stat(real[-1], dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                os.utime(real[-1], ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)


def apply_tar(reader, root, whiteouts: str = "overlay") -> int:
    """Untar the uncompressed stream `reader` into the directory `root`; the content size."""
    applier = LayerApplier(root, whiteouts)
    try:
        tar = TarReader(reader)
        for member in tar:
            applier.apply(tar, member)
        applier.finish()
        return applier.size
    finally:
        applier.close()


def unpack_stream(stream: BinaryIO, root, media_type: str | None = None,
                  whiteouts: str = "overlay", algorithm: str | None = "sha256") -> dict:
    """Decompress, hash and apply a layer stream to `root` in one pass.

    Returns {"diff_id", "digest" (of the bytes read; None with `algorithm` None, when the
    caller verifies them itself), "size" (file content), "tar_size", "compression",
    "blob_size" (bytes read)}.
    """
    compressed = HashReader(stream, algorithm)
    plain, kind = decompressed(compressed, media_type)
    try:
        diff = HashReader(plain)
        size = apply_tar(diff, root, whiteouts)
        diff.drain()
        compressed.drain()
    finally:
        release = getattr(plain, "release", None)   # a decompressing child process
        if release is not None:
            release()
    return {"diff_id": diff.digest(), "digest": compressed.digest(), "size": size,
            "tar_size": diff.count, "compression": kind, "blob_size": compressed.count}
