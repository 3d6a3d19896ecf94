"""Container logs: HostConfig.LogConfig (json-file and none, docker's options and messages) and
a reader of a json-file log that is being rotated by the monitor (docs/monitor.md).

Rotation renames `ID-json.log.(N-1)` → `.N` … `ID-json.log` → `.1` and opens a new
`ID-json.log`; with max-file 1 the file is truncated instead."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sampan.errors import InvalidArgument

DRIVERS = ("json-file", "none")
# Options docker's json-file driver accepts; those without an effect here are kept (inspect
# shows them) and ignored.
JSON_FILE_OPTS = {"max-size", "max-file", "compress", "labels", "labels-regex", "env",
                  "env-regex", "tag", "mode", "max-buffer-size"}
COMMON_OPTS = {"mode", "max-buffer-size"}


def parse_size(s: str) -> int:
    """docker's units.RAMInBytes: 10k, 20m, 1g (binary multiples), plain bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", s, re.IGNORECASE)
    if not m:
        raise InvalidArgument(f"invalid size: '{s}'")
    mult = 1024 ** "bkmgtp".index(m.group(2).lower() or "b")
    return int(float(m.group(1)) * mult)


# daemon.json "log-driver" / "log-opts": what a container created without LogConfig.Type gets
# (its options too, unless the request gave some), as dockerd does.
daemon_default: dict[str, Any] = {"Type": "json-file", "Config": {}}


def set_daemon_default(driver: Any, opts: Any) -> None:
    """From daemon.json; a bad value raises InvalidArgument (the daemon reports it)."""
    global daemon_default
    daemon_default = {"Type": "json-file", "Config": {}}
    daemon_default = validate({"Type": driver or "json-file", "Config": opts or {}})


def validate(cfg: Any) -> dict[str, Any]:
    """HostConfig.LogConfig checked and normalised; a 400 with docker's words otherwise."""
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise InvalidArgument("LogConfig must be an object")
    driver = cfg.get("Type")
    if driver is not None and not isinstance(driver, str):
        raise InvalidArgument("LogConfig.Type must be a string")
    opts = cfg.get("Config") or {}
    if not driver:
        driver = daemon_default["Type"]
        if not opts:
            opts = dict(daemon_default["Config"])
    if not isinstance(opts, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in opts.items()):
        raise InvalidArgument("LogConfig.Config must be an object of strings")
    if driver not in DRIVERS:
        raise InvalidArgument(f"logger: no log driver named '{driver}' is registered")
    allowed = JSON_FILE_OPTS if driver == "json-file" else COMMON_OPTS
    for k in opts:
        if k not in allowed:
            raise InvalidArgument(f"unknown log opt '{k}' for {driver} log driver")
    if driver == "json-file":
        size = -1
        if "max-size" in opts:
            size = parse_size(opts["max-size"])
            if size <= 0:
                raise InvalidArgument("max-size must be a positive number")
        if "max-file" in opts:
            try:
                n = int(opts["max-file"])
            except ValueError:
                raise InvalidArgument(f"invalid value for max-file: {opts['max-file']}"
                                      ) from None
            if n < 1:
                raise InvalidArgument("max-file cannot be less than 1")
            if n > 1 and size == -1:
                raise InvalidArgument("max-file can only be used with max-size")
        if opts.get("compress") not in (None, "false"):
            raise InvalidArgument("compress is not supported by this json-file driver")
    return {"Type": driver, "Config": dict(opts)}


def monitor_options(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The `log` object of monitor.json."""
    cfg = cfg or {}
    driver = cfg.get("Type") or "json-file"
    opts = cfg.get("Config") or {}
    if driver == "none":
        return {"driver": "none", "max_size": 0, "max_file": 1}
    size = parse_size(opts["max-size"]) if opts.get("max-size") else 0
    return {"driver": "json-file", "max_size": size,
            "max_file": int(opts.get("max-file") or 1)}


def rotated(path: Path) -> list[Path]:
    """The rotated files of `path` that exist, oldest first."""
    found = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1:]
        if suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]


class LogReader:
    """Everything written to a json-file log, oldest first, then what is appended, across
    rotations: the live file is held open, so what was written before a rotation is read from
    the renamed file, then any rotated file not seen yet, then the new live file."""

    def __init__(self, path: Path, offset: int = 0, history: bool = True):
        self.path = path
        self.offset = offset
        self.f = None
        self.ino = 0
        self.seen: set[int] = set()
        self.older: list[Path] = []
        for p in rotated(path):
            try:
                self.seen.add(p.stat().st_ino)
            except OSError:
                continue
            if history and offset == 0:
                self.older.append(p)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    def _open_live(self, offset: int) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - held across reads
        except FileNotFoundError:
            return False
        self.f = f
        self.ino = os.fstat(f.fileno()).st_ino
        self.seen.add(self.ino)
        f.seek(offset)
        return True

    def read(self) -> bytes:
        chunks = []
        while self.older:
            p = self.older.pop(0)
            try:
                chunks.append(p.read_bytes())
            except OSError:
                pass
        if self.f is None and not self._open_live(self.offset):
            return b"".join(chunks)
        assert self.f is not None
        chunks.append(self.f.read())
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return b"".join(chunks)  # mid-rotation: the new file comes next time
        if st.st_ino != self.ino:
            chunks.append(self.f.read())  # the rest of the file that was renamed
            self.close()
            for p in rotated(self.path):  # rotated more than once since the last read
                try:
                    ino = p.stat().st_ino
                    if ino not in self.seen:
                        self.seen.add(ino)
                        chunks.append(p.read_bytes())
                except OSError:
                    pass
            if self._open_live(0):
                chunks.append(self.f.read())
        elif st.st_size < self.f.tell():
            self.f.seek(0)  # truncated (max-file 1)
            chunks.append(self.f.read())
        return b"".join(chunks)
