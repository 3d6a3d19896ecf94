"""zstd decompression for layers, from whichever decoder this machine has.

The `zstandard` wheel installs ~23 MB, three times a router's whole budget (issue 6), so it is
the optional extra `sampan[zstd]`. Without it, zstd layers still unpack through, in order:
  1. `compression.zstd` (the standard library from Python 3.14);
  2. the `zstd` program on PATH (`opkg install zstd` on OpenWrt), as a pipe;
and only when none is there does a zstd layer fail, with an error that says what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

from sampan.errors import InvalidArgument, SampanError

CHUNK = 1 << 20


class ZstdUnavailable(SampanError):
    # The request is fine; this daemon lacks a decoder: dockerd answers 501 for what it
    # cannot do.
    status = 501


def _binary() -> str | None:
    if os.environ.get("SAMPAN_ZSTD_BINARY") == "":
        return None                      # switched off: tests of the "nothing there" path
    return os.environ.get("SAMPAN_ZSTD_BINARY") or shutil.which("zstd")


def reader(raw):
    """A `read(n)` object of the decompressed bytes of the zstd stream `raw`."""
    try:
        import zstandard
    except ImportError:
        zstandard = None
    if zstandard is not None:
        return _Zstandard(zstandard, raw)
    try:
        from compression import zstd as stdlib_zstd  # Python ≥ 3.14
    except ImportError:
        stdlib_zstd = None
    if stdlib_zstd is not None:
        return _Stdlib(stdlib_zstd, raw)
    exe = _binary()
    if exe:
        return _Pipe(exe, raw)
    raise ZstdUnavailable(
        "zstd-compressed layer: no zstd decoder here: install the extra "
        "(pip install 'sampan[zstd]') or the zstd program (opkg install zstd)")


class _Zstandard:
    def __init__(self, mod, raw):
        self.mod = mod
        self.r = mod.ZstdDecompressor().stream_reader(
            raw, read_size=CHUNK // 4, read_across_frames=True, closefd=False)

    def read(self, n: int = -1) -> bytes:
        try:
            return self.r.read(CHUNK if n is None or n < 0 else max(n, 1))
        except self.mod.ZstdError as exc:
            raise InvalidArgument(f"layer: invalid zstd data: {exc}") from None


class _Stdlib:
    """compression.zstd's incremental decompressor, one frame after another (not exercised
    by the tests on this machine's Python 3.11)."""

    def __init__(self, mod, raw):
        self.mod = mod
        self.raw = raw
        self.d = mod.ZstdDecompressor()
        self.fed = False                  # has the current frame's decompressor had input?
        self.buf = b""
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else max(n, 1)
        try:
            while not self.buf and not self.eof:
                if self.d.eof:
                    rest, self.d = self.d.unused_data, self.mod.ZstdDecompressor()
                    self.fed = bool(rest)
                    if rest:
                        self.buf = self.d.decompress(rest)
                        continue
                data = self.raw.read(CHUNK // 4)
                if not data:
                    if self.fed and not self.d.eof:
                        raise InvalidArgument("layer: invalid zstd data: truncated frame")
                    self.eof = True
                    break
                self.fed = True
                self.buf = self.d.decompress(data)
        except self.mod.ZstdError as exc:
            raise InvalidArgument(f"layer: invalid zstd data: {exc}") from None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class _Pipe:
    """`zstd -dc` as a filter: a thread feeds the compressed stream to its stdin while the
    caller reads its stdout. `release()` (the unpacker calls it in every case) ends both."""

    def __init__(self, exe: str, raw):
        self.raw = raw
        self.proc = subprocess.Popen([exe, "-d", "-c", "-q"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     close_fds=True)
        self.feed_error: BaseException | None = None
        self.feeder = threading.Thread(target=self._feed, name="sampan-zstd", daemon=True)
        self.feeder.start()
        self.done = False

    def _feed(self) -> None:
        try:
            while True:
                data = self.raw.read(CHUNK // 4)
                if not data:
                    break
                self.proc.stdin.write(data)
        except BrokenPipeError:
            pass                          # zstd stopped reading: its exit status tells why
        except BaseException as e:  # noqa: BLE001 - reported by read()
            self.feed_error = e
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        n = CHUNK if n is None or n < 0 else max(n, 1)
        data = self.proc.stdout.read1(n)
        if data:
            return data
        self.feeder.join()
        if self.feed_error is not None:
            raise self.feed_error
        err = self.proc.stderr.read().decode(errors="replace").strip()
        if self.proc.wait() != 0:
            raise InvalidArgument(f"layer: invalid zstd data: {err or 'zstd failed'}")
        self.done = True
        return b""

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        # a feeder blocked on a stalled download must not hold the caller: it is a daemon
        # thread and ends at its next write (broken pipe)
        self.feeder.join(timeout=5)
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()
