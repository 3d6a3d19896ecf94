"""Local volumes: `<data-root>/volumes/<name>/_data` holds the content, `<name>/volume.json` the
metadata (Name, Driver "local", Labels, Options, CreatedAt, Mountpoint, Scope).

One JSON file per volume rather than a table in SQLite: volumes are independent records (no
transaction ever spans two), the container store keeps its records the same way, and a volume
exists exactly when its volume.json does — the file is written last at create (temp + fsync +
rename + fsync of the directory) and the directory is renamed away first at removal, so a crash
leaves either the whole volume or a leftover that `open` clears.

References (which containers use which volume) live in memory: containers declare them with
`ref`/`unref`, and `VolumeStore.open` rebuilds them from the container records on disk
(`<data-root>/containers/*/config.v2.json`, their `Mounts` of Type "volume").

Driver options of the local driver follow docker's: `type`, `device`, `o` — a volume with a type
is mounted (`mount -t TYPE -o O DEVICE _data`) when a container first needs it and unmounted when
the volume is removed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sampan.atomicfile import atomic_write, fsync_dir
from sampan.errors import Conflict, InvalidArgument, NotFound, SampanError

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
ANON_LABEL = "com.docker.volume.anonymous"
LOCAL_OPTS = ("type", "device", "o")

_stores: dict[str, VolumeStore] = {}
_stores_lock = threading.Lock()


def open_store(data_root: Path | str) -> VolumeStore:
    """The one VolumeStore of a data root (the daemon's routes and the container store share
    it, so references and locks are common)."""
    key = os.path.realpath(data_root)
    with _stores_lock:
        st = _stores.get(key)
        if st is None:
            st = _stores[key] = VolumeStore(Path(data_root))
        return st


def _rfc3339(t: float) -> str:
    """Go's time.RFC3339 in local time: "Z" for UTC, else "+hh:mm"."""
    lt = time.localtime(int(t))
    off = lt.tm_gmtoff or 0
    zone = "Z" if off == 0 else f"{'+' if off > 0 else '-'}{abs(off) // 3600:02d}:" \
        f"{abs(off) % 3600 // 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", lt) + zone


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj).encode())
    fsync_dir(path.parent)


def _mounted(path: Path) -> bool:
    from sampan.drivers.storage import _mounted as mounted

    return mounted(path)


def valid_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 255:
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path")
    return name


def check_driver(driver: str | None, name: str = "") -> str:
    d = driver or "local"
    if d != "local":
        e = NotFound(f"create {name}: error looking up volume plugin {d}: plugin \"{d}\" not "
                     "found")
        raise e
    return d


def check_options(opts: dict[str, Any] | None, name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (opts or {}).items():
        if k not in LOCAL_OPTS:
            raise InvalidArgument(f"create {name}: invalid option key: \"{k}\"")
        if not isinstance(v, str):
            raise InvalidArgument(f"create {name}: option {k} must be a string")
        out[k] = v
    if out and not out.get("type"):
        raise InvalidArgument(f'create {name}: missing required option: "type"')
    if out.get("type") and not out.get("device"):
        raise InvalidArgument(f'create {name}: missing required option: "device"')
    if "\n" in "".join(out.values()) or "\0" in "".join(out.values()):
        raise InvalidArgument(f"create {name}: invalid characters in an option")
    return out


class VolumeStore:
    def __init__(self, data_root: Path):
        self.data_root = Path(data_root)
        self.root = self.data_root / "volumes"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o701)
        self.lock = threading.RLock()
        self.vols: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, set[str]] = {}
        # running containers per volume: a volume with a type stays mounted while it has one
        self.active: dict[str, set[str]] = {}
        # (action, name, attributes) for the daemon's event bus: "create", "destroy"
        self.notify: Callable[[str, str, dict[str, str]], None] | None = None
        self._load()

    # ---------------------------------------------------------------- state on disk

    def _load(self) -> None:
        for d in sorted(self.root.iterdir()):
            if d.name.startswith("."):
                # a removal or create interrupted by a crash
                self._purge(d)
                continue
            if not d.is_dir():
                continue
            try:
                meta = json.loads((d / "volume.json").read_text())
            except (OSError, ValueError):
                data = d / "_data"
                if data.is_dir() and not any(data.iterdir()):
                    self._purge(d)
                    continue
                # content without metadata (a copied-in directory): adopt it, like docker
                meta = {"Name": d.name, "Driver": "local", "Labels": None, "Options": None,
                        "CreatedAt": _rfc3339(d.stat().st_mtime)}
                data.mkdir(mode=0o755, exist_ok=True)
                _atomic_json(d / "volume.json", meta)
            self.vols[meta["Name"]] = meta
        self._load_refs()

    def _load_refs(self) -> None:
        croot = self.data_root / "containers"
        if not croot.is_dir():
            return
        for d in croot.iterdir():
            try:
                doc = json.loads((d / "config.v2.json").read_text())
            except (OSError, ValueError):
                continue
            running = bool((doc.get("State") or {}).get("Running"))
            for m in doc.get("Mounts") or []:
                if m.get("Type") == "volume" and m.get("Name"):
                    self.refs.setdefault(m["Name"], set()).add(doc.get("Id", d.name))
                    if running:
                        self.active.setdefault(m["Name"], set()).add(doc.get("Id", d.name))

    def _purge(self, d: Path) -> None:
        from sampan.graph.fsutil import rmtree

        data = d / "_data"
        try:
            while _mounted(data):
                subprocess.run(["umount", str(data)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return  # still mounted: never remove through a mount
        rmtree(d)

    def path(self, name: str) -> Path:
        return self.root / name / "_data"

    # ---------------------------------------------------------------- views

    def _view(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"CreatedAt": meta["CreatedAt"], "Driver": meta.get("Driver", "local"),
                "Labels": meta.get("Labels") or None, "Mountpoint": str(self.path(meta["Name"])),
                "Name": meta["Name"], "Options": meta.get("Options") or None, "Scope": "local"}

    def get(self, name: str) -> dict[str, Any]:
        with self.lock:
            meta = self.vols.get(name)
            if meta is None:
                raise NotFound(f"get {name}: no such volume")
            return self._view(meta)

    def exists(self, name: str) -> bool:
        return name in self.vols

    def users(self, name: str) -> list[str]:
        with self.lock:
            return sorted(self.refs.get(name, ()))

    def list(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        filters = filters or {}
        for k in filters:
            if k not in ("dangling", "name", "label", "driver"):
                raise InvalidArgument(f"invalid filter '{k}'")
        out = []
        with self.lock:
            for name in sorted(self.vols):
                meta = self.vols[name]
                if not self._match(meta, filters):
                    continue
                out.append(self._view(meta))
        return out

    def _match(self, meta: dict[str, Any], filters: dict[str, list[str]]) -> bool:
        name = meta["Name"]
        for v in filters.get("dangling", []):
            want = v.lower() in ("true", "1")
            if v.lower() not in ("true", "1", "false", "0"):
                raise InvalidArgument(f"invalid filter 'dangling={v}'")
            if want == bool(self.refs.get(name)):
                return False
        if "name" in filters and not any(re.search(re.escape(v), name) if v else True
                                         for v in filters["name"]):
            return False
        if "driver" in filters and meta.get("Driver", "local") not in filters["driver"]:
            return False
        labels = meta.get("Labels") or {}
        for lf in filters.get("label", []):
            k, sep, v = lf.partition("=")
            if k not in labels or (sep and labels[k] != v):
                return False
        for lf in filters.get("label!", []):
            k, sep, v = lf.partition("=")
            if k in labels and (not sep or labels[k] == v):
                return False
        return True

    # ---------------------------------------------------------------- changes

    def create(self, name: str | None = None, driver: str | None = None,
               labels: dict[str, str] | None = None, options: dict[str, str] | None = None,
               anonymous: bool = False) -> tuple[dict[str, Any], bool]:
        """(the volume, whether it was created now). An existing name returns the existing
        volume unchanged, as docker does."""
        if not name:
            name = os.urandom(32).hex()
            anonymous = True
        valid_name(name)
        check_driver(driver, name)
        if labels is not None and (not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items())):
            raise InvalidArgument(f"create {name}: Labels must be an object of strings")
        opts = check_options(options, name)
        labels = dict(labels or {})
        if anonymous:
            labels.setdefault(ANON_LABEL, "")
        with self.lock:
            if name in self.vols:
                return self._view(self.vols[name]), False
            d = self.root / name
            tmp = self.root / f".new-{name}-{os.urandom(4).hex()}"
            tmp.mkdir(mode=0o701)
            try:
                (tmp / "_data").mkdir(mode=0o755)
                meta = {"Name": name, "Driver": "local", "Labels": labels or None,
                        "Options": opts or None, "CreatedAt": _rfc3339(time.time())}
                _atomic_json(tmp / "volume.json", meta)
                os.rename(tmp, d)
                fsync_dir(self.root)
            except BaseException:
                self._purge(tmp)
                raise
            self.vols[name] = meta
        self._notify("create", name)
        return self._view(meta), True

    def remove(self, name: str, force: bool = False) -> None:
        with self.lock:
            if name not in self.vols:
                if force:
                    return
                raise NotFound(f"get {name}: no such volume")
            users = self.refs.get(name)
            if users:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(sorted(users))}]")
            d = self.root / name
            data = d / "_data"
            while _mounted(data):
                r = subprocess.run(["umount", str(data)], capture_output=True, text=True)
                if r.returncode:
                    raise SampanError(f"remove {name}: unmounting: {r.stderr.strip()}")
            gone = self.root / f".rm-{name}-{os.urandom(4).hex()}"
            os.rename(d, gone)
            fsync_dir(self.root)
            del self.vols[name]
            self.refs.pop(name, None)
        self._purge(gone)
        self._notify("destroy", name)

    def _notify(self, action: str, name: str, attrs: dict[str, str] | None = None) -> None:
        if self.notify is not None:
            try:
                self.notify(action, name, {"driver": "local", **(attrs or {})})
            except Exception:  # noqa: BLE001 - an event never fails the operation
                pass

    def prune(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """Unused volumes: anonymous ones only, unless the filter all=true (docker 23+)."""
        filters = dict(filters or {})
        all_ = False
        for v in filters.pop("all", []):
            if v.lower() not in ("true", "1", "false", "0"):
                raise InvalidArgument(f"invalid filter 'all={v}'")
            all_ = v.lower() in ("true", "1")
        for k in filters:
            if k not in ("label", "label!"):
                raise InvalidArgument(f"invalid filter '{k}'")
        deleted, space = [], 0
        from sampan.graph.fsutil import dir_size

        with self.lock:
            names = [n for n, m in self.vols.items()
                     if not self.refs.get(n) and self._match(m, filters)
                     and (all_ or ANON_LABEL in (m.get("Labels") or {}))]
        # sizes outside the lock (a big volume takes a while; exits take the lock too);
        # remove checks again that nothing uses the volume
        for n in names:
            try:
                size = dir_size(self.path(n))
            except OSError:
                size = 0
            try:
                self.remove(n)
            except (Conflict, NotFound, SampanError):
                continue
            deleted.append(n)
            space += size
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": space}

    def df(self) -> list[dict[str, Any]]:
        from sampan.graph.fsutil import dir_size

        out = []
        for v in self.list():
            try:
                size = dir_size(v["Mountpoint"])
            except OSError:
                size = -1
            v["UsageData"] = {"Size": size, "RefCount": len(self.users(v["Name"]))}
            out.append(v)
        return out

    # ---------------------------------------------------------------- use by containers

    def ref(self, name: str, cid: str) -> None:
        with self.lock:
            if name not in self.vols:
                raise NotFound(f"get {name}: no such volume")
            self.refs.setdefault(name, set()).add(cid)

    def unref(self, cid: str) -> list[str]:
        """Drop every reference of a container; the volumes it used."""
        used = []
        with self.lock:
            for name, users in list(self.refs.items()):
                if cid in users:
                    users.discard(cid)
                    used.append(name)
                    if not users:
                        del self.refs[name]
        return used

    def is_anonymous(self, name: str) -> bool:
        meta = self.vols.get(name)
        return bool(meta) and ANON_LABEL in (meta.get("Labels") or {})

    def activate(self, name: str, cid: str, attrs: dict[str, str] | None = None) -> Path:
        """A container that uses the volume starts: mounted (if it has a type) until the last
        such container stops, as docker's local driver counts its users. `attrs`: the mount
        event's (destination, propagation, read/write)."""
        with self.lock:
            data = self.mount(name)
            self.active.setdefault(name, set()).add(cid)
        self._notify("mount", name, {"container": cid, **(attrs or {})})
        return data

    def deactivate(self, cid: str) -> None:
        with self.lock:
            names = [n for n, users in self.active.items() if cid in users]
            for name in names:
                self.active[name].discard(cid)
                if not self.active[name]:
                    del self.active[name]
                    self.unmount_idle(name)
        for name in names:
            self._notify("unmount", name, {"container": cid})

    def unmount_idle(self, name: str) -> None:
        """Unmount a volume with a type that no running container uses (a tmpfs volume's
        content goes with it, as with docker)."""
        with self.lock:
            meta = self.vols.get(name)
            if meta is None or not (meta.get("Options") or {}).get("type") or \
                    self.active.get(name):
                return
            data = self.path(name)
            while _mounted(data):
                if subprocess.run(["umount", str(data)], capture_output=True).returncode:
                    return

    def mount(self, name: str) -> Path:
        """The volume's content directory, mounted first when the volume has a type."""
        with self.lock:
            meta = self.vols.get(name)
            if meta is None:
                raise NotFound(f"get {name}: no such volume")
            data = self.path(name)
            opts = meta.get("Options") or {}
            if opts.get("type") and not _mounted(data):
                argv = ["mount", "-t", opts["type"]]
                if opts.get("o"):
                    argv += ["-o", opts["o"]]
                argv += ["--", opts["device"], str(data)]
                r = subprocess.run(argv, capture_output=True, text=True)
                if r.returncode:
                    raise SampanError(f"error while mounting volume '{data}': "
                                      f"{r.stderr.strip() or 'mount failed'}")
            return data
