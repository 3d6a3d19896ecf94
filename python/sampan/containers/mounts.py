"""A container's mounts as docker makes them: `Binds` (`-v`), `Mounts` (`--mount`), `Tmpfs`
(`--tmpfs`), `Config.Volumes` and the image's VOLUMEs (anonymous volumes).

`parse` validates everything and touches nothing (bad input changes nothing); `setup` then
creates the volumes (named ones on first use, anonymous ones always), copies the image's content
at the mount point into a volume that is still empty (not for binds, not with nocopy), records
the container's references and returns the OCI mounts and the inspect `Mounts`. `release`
drops the references at removal (and with `rm -v` removes the anonymous volumes)."""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any, Callable

from sampan.errors import InvalidArgument

_MODES = {"ro", "rw", "z", "Z", "nocopy", "consistent", "cached", "delegated"}
_PROPAGATION = {"private", "rprivate", "shared", "rshared", "slave", "rslave"}
_TMPFS_OPT = re.compile(r"^[a-z_]+(=[0-9a-zA-Z%.]+)?$")
_TMPFS_DEFAULT = ["nosuid", "nodev", "noexec"]


class BindSourceMissing(InvalidArgument):
    pass


def _dest(dst: Any, spec: str) -> str:
    if not isinstance(dst, str) or not dst:
        raise InvalidArgument(f"invalid volume specification: '{spec}': field Target must "
                              "not be empty")
    if not dst.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{spec}': invalid mount config: "
                              f"invalid mount path: '{dst}' mount path must be absolute")
    if "\0" in dst:
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    clean = posixpath.normpath(dst)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    if clean == "/":
        raise InvalidArgument(f"invalid volume specification: '{spec}': invalid mount config: "
                              "destination can't be '/'")
    return clean


def _vol_name(name: str, spec: str) -> str:
    from sampan.volumes import valid_name

    try:
        return valid_name(name)
    except InvalidArgument:
        raise InvalidArgument(
            f"invalid volume specification: '{spec}': \"{name}\" includes invalid characters "
            'for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you '
            "intended to pass a host directory, use absolute path") from None


def _bind_spec(b: str) -> dict[str, Any]:
    parts = b.split(":")
    if len(parts) == 1:
        src, dst, mode = "", parts[0], ""
    elif len(parts) == 2:
        if all(o in _MODES | _PROPAGATION for o in parts[1].split(",")) and parts[1]:
            src, dst, mode = "", parts[0], parts[1]
        else:
            src, dst, mode = parts[0], parts[1], ""
    elif len(parts) == 3:
        src, dst, mode = parts
    else:
        raise InvalidArgument(f"invalid volume specification: '{b}'")
    if len(parts) > 1 and not src and not mode:
        raise InvalidArgument(f"invalid volume specification: '{b}'")
    dst = _dest(dst, b)
    opts = [o for o in mode.split(",") if o] if mode else []
    rw_seen = prop_seen = 0
    for o in opts:
        if o in ("ro", "rw"):
            rw_seen += 1
        elif o in _PROPAGATION:
            prop_seen += 1
        elif o not in _MODES:
            raise InvalidArgument(f"invalid mode: {mode}")
    if rw_seen > 1 or prop_seen > 1:
        raise InvalidArgument(f"invalid mode: {mode}")
    mp: dict[str, Any] = {"destination": dst, "rw": "ro" not in opts, "mode": mode,
                          "spec": b}
    if src.startswith("/"):
        if "nocopy" in opts:
            raise InvalidArgument(f"invalid mode: {mode}")
        mp.update(type="bind", source=posixpath.normpath(src), create_source=True,
                  propagation=next((o for o in opts if o in _PROPAGATION), "rprivate"))
    else:
        if prop_seen:
            raise InvalidArgument(f"invalid mode: {mode}")
        mp.update(type="volume", name=_vol_name(src, b) if src else "",
                  nocopy="nocopy" in opts, driver="local", labels=None, options=None)
        if src and not mode:
            mp["mode"] = "z"
    return mp


def _obj(v: Any, what: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise InvalidArgument(f"{what} must be an object")
    return v


def _mount_spec(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise InvalidArgument("Mounts must be a list of objects")
    kind = m.get("Type")
    spec = f"{m}"
    if kind not in ("bind", "volume", "tmpfs"):
        raise InvalidArgument(f"invalid mount config: mount type unknown: {kind!r}"
                              if kind else "invalid mount config: mount type must be specified")
    target = m.get("Target")
    if not target:
        raise InvalidArgument(f'invalid mount config for type "{kind}": field Target must not '
                              "be empty")
    dst = _dest(target, spec)
    src = m.get("Source") or ""
    if not isinstance(src, str):
        raise InvalidArgument(f'invalid mount config for type "{kind}": Source must be a '
                              "string")
    ro = m.get("ReadOnly")
    if ro is not None and not isinstance(ro, bool):
        raise InvalidArgument("ReadOnly must be a boolean")
    for key, own in (("BindOptions", "bind"), ("VolumeOptions", "volume"),
                     ("TmpfsOptions", "tmpfs")):
        if m.get(key) and kind != own:
            raise InvalidArgument(f'invalid mount config for type "{kind}": field {key} must '
                                  "not be specified")
    mp: dict[str, Any] = {"destination": dst, "rw": not ro, "mode": "", "spec": spec}
    if kind == "bind":
        if not src:
            raise InvalidArgument('invalid mount config for type "bind": field Source must not '
                                  "be empty")
        if not src.startswith("/"):
            raise InvalidArgument(f'invalid mount config for type "bind": invalid mount path: '
                                  f"'{src}' mount path must be absolute")
        bo = _obj(m.get("BindOptions"), "BindOptions")
        prop = bo.get("Propagation") or "rprivate"
        if prop not in _PROPAGATION:
            raise InvalidArgument(f'invalid mount config for type "bind": invalid propagation '
                                  f"{prop!r}")
        create = bool(bo.get("CreateMountpoint"))
        if not create and not os.path.exists(src):
            raise BindSourceMissing(f'invalid mount config for type "bind": bind source path '
                                    f"does not exist: {src}")
        mp.update(type="bind", source=posixpath.normpath(src), create_source=create,
                  propagation=prop, recursive=not bo.get("NonRecursive"))
    elif kind == "volume":
        vo = _obj(m.get("VolumeOptions"), "VolumeOptions")
        if vo.get("Subpath"):
            raise InvalidArgument('invalid mount config for type "volume": Subpath is not '
                                  "supported")
        dc = _obj(vo.get("DriverConfig"), "DriverConfig")
        from sampan.volumes import check_driver, check_options

        name = _vol_name(src, spec) if src else ""
        check_driver(dc.get("Name"), name)
        opts = check_options(_obj(dc.get("Options"), "DriverConfig.Options"), name)
        labels = _obj(vo.get("Labels"), "Labels")
        if not all(isinstance(v, str) for v in labels.values()):
            raise InvalidArgument("Labels must be an object of strings")
        mp.update(type="volume", name=name, nocopy=bool(vo.get("NoCopy")), driver="local",
                  labels=labels or None, options=opts or None, mode="z" if src else "")
    else:
        if src:
            raise InvalidArgument('invalid mount config for type "tmpfs": field Source must '
                                  "not be specified")
        to = _obj(m.get("TmpfsOptions"), "TmpfsOptions")
        opts = list(_TMPFS_DEFAULT)
        size = to.get("SizeBytes")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgument("TmpfsOptions.SizeBytes must be a positive integer")
            if size:
                opts.append(f"size={size}")
        mode = to.get("Mode")
        if mode is not None:
            if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
                raise InvalidArgument("TmpfsOptions.Mode must be a file mode")
            opts.append(f"mode={mode:o}")
        if ro:
            opts.append("ro")
        mp.update(type="tmpfs", options=opts, listed=True)
    return mp


def _tmpfs_spec(dst: str, opts: Any) -> dict[str, Any]:
    d = _dest(dst, dst)
    if not isinstance(opts, str):
        raise InvalidArgument(f"invalid tmpfs options for {dst}: must be a string")
    out = list(_TMPFS_DEFAULT)
    for o in [x for x in opts.split(",") if x]:
        if not _TMPFS_OPT.match(o):
            raise InvalidArgument(f"invalid tmpfs option {o!r} for {dst}")
        out.append(o)
    return {"type": "tmpfs", "destination": d, "options": out, "rw": "ro" not in out,
            "mode": "", "listed": False, "spec": dst}


def parse(config: dict[str, Any], host: dict[str, Any], image_config: dict[str, Any],
          lookup: Callable[[str], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every mount point of a create request, validated; no side effects. `lookup` gives the
    inspect document of a container named in VolumesFrom."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    vd = host.get("VolumeDriver") or None
    if vd is not None:
        from sampan.volumes import check_driver

        if not isinstance(vd, str):
            raise InvalidArgument("VolumeDriver must be a string")
        check_driver(vd)

    def add(mp: dict[str, Any]) -> None:
        if mp["destination"] in seen:
            raise InvalidArgument(f"Duplicate mount point: {mp['destination']}")
        seen.add(mp["destination"])
        out.append(mp)

    binds = host.get("Binds") or []
    if not isinstance(binds, list) or not all(isinstance(b, str) for b in binds):
        raise InvalidArgument("Binds must be a list of strings")
    for b in binds:
        add(_bind_spec(b))
    mounts = host.get("Mounts") or []
    if not isinstance(mounts, list):
        raise InvalidArgument("Mounts must be a list")
    for m in mounts:
        add(_mount_spec(m))
    tmpfs = host.get("Tmpfs") or {}
    if not isinstance(tmpfs, dict):
        raise InvalidArgument("Tmpfs must be an object")
    for dst, opts in tmpfs.items():
        add(_tmpfs_spec(dst, opts))
    # --volumes-from: the other container's volumes and binds, where nothing above mounts
    vfrom = host.get("VolumesFrom") or []
    if not isinstance(vfrom, list) or not all(isinstance(v, str) for v in vfrom):
        raise InvalidArgument("VolumesFrom must be a list of strings")
    for spec in vfrom:
        for mp in _volumes_from(spec, lookup):
            if mp["destination"] not in seen:
                seen.add(mp["destination"])
                out.append(mp)
    # anonymous volumes: Config.Volumes, then the image's; a mount above wins
    for src_name, vols in (("Volumes", config.get("Volumes")),
                           ("image", image_config.get("Volumes"))):
        if vols is None:
            continue
        if not isinstance(vols, dict):
            raise InvalidArgument(f"{src_name} must be an object")
        for dst in vols:
            d = _dest(dst, dst)
            if d in seen:
                continue
            seen.add(d)
            out.append({"type": "volume", "destination": d, "name": "", "rw": True,
                        "mode": "", "nocopy": False, "driver": "local", "labels": None,
                        "options": None, "spec": dst})
    return out


def _volumes_from(spec: str, lookup: Callable[[str], dict[str, Any]] | None
                  ) -> list[dict[str, Any]]:
    name, _, mode = spec.partition(":")
    if mode not in ("", "ro", "rw") or not name:
        raise InvalidArgument(f"invalid mode for volumes-from: {spec}")
    if lookup is None:
        raise InvalidArgument("VolumesFrom is not supported here")
    doc = lookup(name)
    out = []
    for m in doc.get("Mounts") or []:
        rw = m.get("RW", True) if not mode else mode == "rw"
        shown_mode = mode or m.get("Mode", "")
        dst = m["Destination"]
        if m.get("Type") == "volume" and m.get("Name"):
            out.append({"type": "volume", "destination": dst, "name": m["Name"], "rw": rw,
                        "mode": shown_mode, "nocopy": True, "driver": "local",
                        "labels": None, "options": None, "spec": spec})
        elif m.get("Type") == "bind":
            out.append({"type": "bind", "destination": dst, "source": m["Source"], "rw": rw,
                        "mode": shown_mode, "create_source": False,
                        "propagation": m.get("Propagation") or "rprivate", "spec": spec})
    return out


def _depth(dst: str) -> int:
    return len([p for p in dst.split("/") if p])


def setup(cid: str, rootfs: Path, mps: list[dict[str, Any]], vols: Any
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Create what the mounts need; (OCI mounts, inspect Mounts). On failure the references
    taken and the anonymous volumes made are undone."""
    oci: list[dict[str, Any]] = []
    shown: list[dict[str, Any]] = []
    try:
        for mp in mps:
            dst = mp["destination"]
            if mp["type"] == "bind":
                src = mp["source"]
                if not os.path.exists(src):
                    if not mp.get("create_source"):
                        raise BindSourceMissing(f'invalid mount config for type "bind": bind '
                                                f"source path does not exist: {src}")
                    os.makedirs(src, 0o755, exist_ok=True)
                opts = ["rbind" if mp.get("recursive", True) else "bind", mp["propagation"]] + \
                    (["ro"] if not mp["rw"] else [])
                oci.append({"destination": dst, "type": "bind", "source": src,
                            "options": opts})
                shown.append({"Type": "bind", "Source": src, "Destination": dst,
                              "Mode": mp["mode"], "RW": mp["rw"],
                              "Propagation": mp["propagation"]})
            elif mp["type"] == "volume":
                with vols.lock:  # made and referenced at once: a prune never sees it unused
                    vol, _new = vols.create(mp["name"] or None, mp["driver"], mp["labels"],
                                            mp["options"], anonymous=not mp["name"])
                    name = vol["Name"]
                    vols.ref(name, cid)
                data = vols.mount(name)
                if not mp["nocopy"]:
                    copy_up(rootfs, dst, data)
                vols.unmount_idle(name)  # mounted again when a container starts
                oci.append({"destination": dst, "type": "bind", "source": str(data),
                            "options": ["rbind", "rprivate"] + ([] if mp["rw"] else ["ro"])})
                shown.append({"Type": "volume", "Name": name, "Source": str(data),
                              "Destination": dst, "Driver": "local", "Mode": mp["mode"],
                              "RW": mp["rw"], "Propagation": ""})
            else:
                oci.append({"destination": dst, "type": "tmpfs", "source": "tmpfs",
                            "options": list(mp["options"])})
                if mp.get("listed"):
                    shown.append({"Type": "tmpfs", "Source": "", "Destination": dst,
                                  "Mode": "", "RW": mp["rw"], "Propagation": ""})
    except BaseException:
        release(cid, vols, remove_anonymous=True)
        raise
    return oci, shown


def merge(defaults: list[dict[str, Any]], user: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spec's mounts: the defaults a user mount does not replace, then the generated /etc
    files and the user's mounts by depth (a parent before what is mounted inside it)."""
    taken = {m["destination"] for m in user}
    base = [m for m in defaults if m["destination"] not in taken
            and not m["destination"].startswith("/etc/")]
    etc = [m for m in defaults if m["destination"] not in taken
           and m["destination"].startswith("/etc/")]
    return base + sorted(etc + user, key=lambda m: _depth(m["destination"]))


def copy_up(rootfs: Path, dst: str, data: Path) -> None:
    """Docker's copy-up: the image's content at `dst` into the volume when the volume is
    empty, with ownership, modes and times; the volume's root takes the directory's owner and
    mode."""
    from sampan.containers.fsview import View
    from sampan.graph.fsutil import _copy_children, _copy_xattrs

    if any(os.scandir(data)):
        return
    with View.for_path(str(rootfs)) as view:
        e = view.resolve(dst, follow_last=True)
        try:
            st = e.lstat()
            if st is None or not os.path.isdir(f"/proc/self/fd/{e.dfd}/{e.real}"):
                return
            src_fd = os.open(e.real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                             os.O_CLOEXEC, dir_fd=e.dfd)
        finally:
            e.close()
    try:
        src = f"/proc/self/fd/{src_fd}"
        st = os.fstat(src_fd)
        dirs: list[tuple[str, str, os.stat_result]] = []
        _copy_children(src, str(data), {}, dirs)
        for s, d, sst in reversed(dirs):
            os.chown(d, sst.st_uid, sst.st_gid, follow_symlinks=False)
            os.chmod(d, sst.st_mode & 0o7777)
            _copy_xattrs(s, d, True)
            os.utime(d, ns=(sst.st_atime_ns, sst.st_mtime_ns), follow_symlinks=False)
        os.chown(data, st.st_uid, st.st_gid)
        os.chmod(data, st.st_mode & 0o7777)
    finally:
        os.close(src_fd)


def release(cid: str, vols: Any, remove_anonymous: bool = False) -> list[str]:
    """Drop the container's references; with `remove_anonymous`, remove its anonymous volumes
    that nothing else uses. The volumes removed."""
    vols.deactivate(cid)
    used = vols.unref(cid)
    gone = []
    if remove_anonymous:
        for name in used:
            if vols.is_anonymous(name) and not vols.users(name):
                try:
                    vols.remove(name)
                    gone.append(name)
                except Exception:  # noqa: BLE001 - in use again, or already gone
                    pass
    return gone


def config_volumes(config: dict[str, Any], image_config: dict[str, Any]
                   ) -> dict[str, Any] | None:
    """Config.Volumes as docker shows it: the image's VOLUMEs and the request's."""
    merged = dict(image_config.get("Volumes") or {})
    merged.update(config.get("Volumes") or {})
    return merged or None


def on_start(cid: str, shown: list[dict[str, Any]] | None, vols: Any) -> None:
    """Before a container starts: its volumes mounted (those with a type — after a reboot
    too) and counted as in use by a running container."""
    for m in shown or []:
        if m.get("Type") == "volume" and m.get("Name"):
            vols.activate(m["Name"], cid, {
                "destination": m["Destination"], "propagation": m.get("Propagation") or "",
                "read/write": "true" if m.get("RW", True) else "false"})


def on_stop(cid: str, vols: Any) -> None:
    """After a container stopped: volumes with a type that no running container uses any
    more are unmounted."""
    vols.deactivate(cid)


def volumes_for(data_root: Path) -> Any:
    from sampan.volumes import open_store

    return open_store(data_root)


def uses(doc: dict[str, Any], wanted: list[str]) -> bool:
    """docker ps --filter volume=…: a mount's volume name, source or destination."""
    for m in doc.get("Mounts") or []:
        keys = {m.get("Name") or m.get("Source"), m.get("Destination")}
        if keys & set(wanted):
            return True
    return False
