"""A streaming tar reader: one pass over a non-seekable stream, no whole member in memory.

Reads ustar, GNU (long names and links, base-256 numbers) and POSIX pax (local and global
headers: path, linkpath, size, uid, gid, mtime, SCHILY.xattr.*, LIBARCHIVE.xattr.*) archives,
which is what image layers are. Names come back as str decoded from UTF-8 with
surrogateescape, so the exact bytes reach the file system. Sparse and multi-volume members are
refused. Errors are InvalidArgument.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote

from sampan.errors import InvalidArgument

BLOCK = 512
CHUNK = 1 << 20

REGULAR = frozenset(b"0\x007")
TYPE_NAMES = {ord("0"): "file", 0: "file", ord("7"): "file", ord("1"): "hardlink",
              ord("2"): "symlink", ord("3"): "char", ord("4"): "block", ord("5"): "dir",
              ord("6"): "fifo"}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _nts(field: bytes) -> bytes:
    i = field.find(b"\0")
    return field if i < 0 else field[:i]


def _number(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:
        # GNU base-256: 0x80 positive, 0xff negative.
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        return value
    s = _nts(field).strip(b" \0")
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        raise InvalidArgument(f"tar header: invalid {what} field {field!r}") from None


class Member:
    """One archive member (the subset of tarfile.TarInfo that unpacking needs)."""

    __slots__ = (
        "devmajor",
        "devminor",
        "gid",
        "kind",
        "linkname",
        "mode",
        "mtime",
        "name",
        "pax",
        "size",
        "type",
        "uid",
        "xattrs",
    )

    def isreg(self) -> bool:
        return self.kind == "file"

    def isdir(self) -> bool:
        return self.kind == "dir"

    def issym(self) -> bool:
        return self.kind == "symlink"

    def islnk(self) -> bool:
        return self.kind == "hardlink"

    def ischr(self) -> bool:
        return self.kind == "char"

    def isblk(self) -> bool:
        return self.kind == "block"

    def isfifo(self) -> bool:
        return self.kind == "fifo"

    def __repr__(self) -> str:
        return f"<Member {self.kind} {self.name!r}>"


def _parse_pax(data: bytes, where: str) -> dict:
    out = {}
    pos = 0
    while pos < len(data):
        if data[pos:pos + 1] in (b"\0", b""):
            break
        sp = data.find(b" ", pos)
        if sp < 0:
            raise InvalidArgument(f"{where}: invalid pax header")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise InvalidArgument(f"{where}: invalid pax record length") from None
        if length <= 0 or pos + length > len(data) or data[pos + length - 1:pos + length] != b"\n":
            raise InvalidArgument(f"{where}: invalid pax record")
        record = data[sp + 1:pos + length - 1]
        eq = record.find(b"=")
        if eq < 0:
            raise InvalidArgument(f"{where}: invalid pax record")
        out[_text(record[:eq])] = record[eq + 1:]
        pos += length
    return out


class TarReader:
    """Iterate members of a tar stream; `data(member)` yields the current member's bytes.

    The data of a member not read (or not read to the end) is skipped when the next member is
    asked for. After the end-of-archive block, `raw` is left where it was; read it to its end
    to hash trailing bytes.
    """

    def __init__(self, raw, what: str = "layer member"):
        self.raw = raw
        self.what = what
        self.buf = b""
        self.pos = 0
        self.offset = 0          # bytes of the archive consumed
        self._left = 0           # data bytes of the current member not yet read
        self._pad = 0
        self._global: dict = {}
        self.done = False

    # -- input

    def _fill(self, n: int) -> bool:
        """Make at least n bytes available in the buffer; False at end of stream."""
        avail = len(self.buf) - self.pos
        if avail >= n:
            return True
        parts = [self.buf[self.pos:]]
        while avail < n:
            data = self.raw.read(max(CHUNK, n - avail))
            if not data:
                break
            parts.append(data)
            avail += len(data)
        self.buf = b"".join(parts)
        self.pos = 0
        return avail >= n

    def _take(self, n: int, what: str) -> bytes:
        if not self._fill(n):
            raise InvalidArgument(f"tar archive truncated in {what}")
        data = self.buf[self.pos:self.pos + n]
        self.pos += n
        self.offset += n
        return data

    def _skip(self, n: int, what: str) -> None:
        while n > 0:
            avail = len(self.buf) - self.pos
            if avail == 0:
                if not self._fill(1):
                    raise InvalidArgument(f"tar archive truncated in {what}")
                avail = len(self.buf) - self.pos
            step = min(avail, n)
            self.pos += step
            self.offset += step
            n -= step

    # -- members

    def data(self, member: Member):
        """Yield the data of `member` (the current one) in chunks."""
        while self._left > 0:
            avail = len(self.buf) - self.pos
            if avail:
                step = min(avail, self._left)
                chunk = self.buf[self.pos:self.pos + step]
                self.pos += step
            else:
                chunk = self.raw.read(min(CHUNK, self._left))
                if not chunk:
                    raise InvalidArgument(f"tar archive truncated in the data of {member.name!r}")
                if len(chunk) > self._left:  # a reader that ignored the size asked for
                    self.buf, self.pos = chunk[self._left:], 0
                    chunk = chunk[:self._left]
            self._left -= len(chunk)
            self.offset += len(chunk)
            yield chunk

    def _finish_member(self) -> None:
        if self._left:
            self._skip(self._left, "member data")
            self._left = 0
        if self._pad:
            self._skip(self._pad, "member padding")
            self._pad = 0

    def __iter__(self):
        while True:
            m = self.next()
            if m is None:
                return
            yield m

    def next(self) -> Member | None:
        if self.done:
            return None
        self._finish_member()
        pax: dict = {}
        longname = longlink = None
        while True:
            if not self._fill(BLOCK):
                if len(self.buf) - self.pos == 0 and self.offset == 0:
                    self.done = True
                    return None      # an empty stream: an empty layer
                if len(self.buf) - self.pos == 0:
                    raise InvalidArgument("tar archive truncated: no end-of-archive marker")
                raise InvalidArgument("tar archive truncated in a header")
            start = self.offset
            header = self._take(BLOCK, "a header")
            if header == b"\0" * BLOCK:
                self.done = True
                return None
            self._check(header, start)
            typeflag = header[156]
            size = _number(header[124:136], "size")
            if "size" in pax:
                size = self._pax_int(pax, "size", start)
            if size < 0:
                raise InvalidArgument(f"tar header at {start}: negative size")
            if typeflag in (ord("x"), ord("g")):
                data = self._take(size, "a pax header")
                self._skip(-size % BLOCK, "a pax header")
                parsed = _parse_pax(data, f"tar header at {start}")
                if typeflag == ord("g"):
                    self._global.update(parsed)
                else:
                    pax.update(parsed)
                continue
            if typeflag in (ord("L"), ord("K")):
                data = _nts(self._take(size, "a GNU long name"))
                self._skip(-size % BLOCK, "a GNU long name")
                if typeflag == ord("L"):
                    longname = data
                else:
                    longlink = data
                continue
            return self._member(header, typeflag, size, {**self._global, **pax}, longname,
                                longlink, start)

    @staticmethod
    def _check(header: bytes, offset: int) -> None:
        stored = _number(header[148:156], "checksum")
        unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored == unsigned:
            return
        signed = sum(b - 256 if b > 127 else b for b in header[:148]) + 8 * 32 + \
            sum(b - 256 if b > 127 else b for b in header[156:])
        if stored != signed:
            raise InvalidArgument(f"invalid tar header at offset {offset} (bad checksum)")

    @staticmethod
    def _pax_int(pax: dict, key: str, offset: int) -> int:
        try:
            return int(pax[key])
        except ValueError:
            raise InvalidArgument(f"tar header at {offset}: invalid pax {key}") from None

    def _member(self, header, typeflag, size, pax, longname, longlink, offset) -> Member:
        m = Member()
        magic = header[257:265]
        name = _nts(header[0:100])
        if magic[:6] == b"ustar\0":
            prefix = _nts(header[345:500])
            if prefix:
                name = prefix + b"/" + name
        if longname is not None:
            name = longname
        if "path" in pax:
            name = pax["path"]
        link = _nts(header[157:257])
        if longlink is not None:
            link = longlink
        if "linkpath" in pax:
            link = pax["linkpath"]
        m.name = _text(name)
        m.linkname = _text(link)
        m.type = typeflag
        kind = TYPE_NAMES.get(typeflag)
        if typeflag == ord("D"):
            kind = "dir"
        if kind == "file" and name.endswith(b"/"):
            kind = "dir"
        if kind is None or any(k.startswith("GNU.sparse.") for k in pax):
            what = "sparse" if typeflag == ord("S") or kind == "file" else \
                f"type {chr(typeflag)!r}" if 32 < typeflag < 127 else f"type {typeflag}"
            raise InvalidArgument(f"{self.what} {m.name!r}: unsupported tar member ({what})")
        m.kind = kind
        m.mode = _number(header[100:108], "mode") & 0o7777
        m.uid = self._pax_int(pax, "uid", offset) if "uid" in pax else \
            _number(header[108:116], "uid")
        m.gid = self._pax_int(pax, "gid", offset) if "gid" in pax else \
            _number(header[116:124], "gid")
        if "mtime" in pax:
            try:
                m.mtime = float(pax["mtime"])
            except ValueError:
                raise InvalidArgument(f"tar header at {offset}: invalid pax mtime") from None
        else:
            m.mtime = float(_number(header[136:148], "mtime"))
        m.devmajor = _number(header[329:337], "devmajor")
        m.devminor = _number(header[337:345], "devminor")
        m.pax = pax
        xattrs = {}
        for key, value in pax.items():
            if key.startswith("SCHILY.xattr."):
                xattrs[key[len("SCHILY.xattr."):]] = value
            elif key.startswith("LIBARCHIVE.xattr."):
                try:
                    xattrs[unquote(key[len("LIBARCHIVE.xattr."):])] = base64.b64decode(
                        value + b"=" * (-len(value) % 4))
                except ValueError:
                    raise InvalidArgument(f"{self.what} {m.name!r}: invalid xattr "
                                          "encoding") from None
        m.xattrs = xattrs
        # Only regular files carry data; anything else that claims a size is skipped.
        m.size = size if kind == "file" else 0
        self._left = size
        self._pad = -size % BLOCK
        return m
