"""`-v`, `--mount` and `--tmpfs` of run/create, turned into the create request as the docker CLI
does: `-v SRC:DST[:MODE]` → HostConfig.Binds, `-v /DST` → Config.Volumes, `--mount k=v,…` →
HostConfig.Mounts, `--tmpfs DST[:OPTS]` → HostConfig.Tmpfs."""

from __future__ import annotations

import csv
from typing import Any

import click

_TRUE = {"", "1", "true", "yes"}
_FALSE = {"0", "false", "no"}


def _bool(key: str, v: str) -> bool:
    low = v.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise click.BadParameter(f"invalid value for {key}: {v}")


def ram_bytes(v: str) -> int:
    """docker's RAMInBytes: 64m, 1g, 512k, 1024 (binary units)."""
    s = v.strip().lower()
    mult = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
    if s.endswith("ib"):
        s = s[:-2]
    elif s.endswith("b") and len(s) > 1 and s[-2] in mult:
        s = s[:-1]
    try:
        if s and s[-1] in mult:
            return int(float(s[:-1]) * mult[s[-1]])
        return int(s)
    except ValueError:
        raise click.BadParameter(f"invalid size: '{v}'") from None


def parse_mount(spec: str) -> dict[str, Any]:
    try:
        fields = next(csv.reader([spec]))
    except (csv.Error, StopIteration):
        raise click.BadParameter(f"invalid mount spec: {spec}") from None
    m: dict[str, Any] = {"Type": "volume"}
    bind: dict[str, Any] = {}
    vol: dict[str, Any] = {}
    tmpfs: dict[str, Any] = {}
    for f in fields:
        key, sep, val = f.partition("=")
        key = key.strip().lower()
        if not sep and key not in ("readonly", "ro", "volume-nocopy", "bind-create-mountpoint",
                                   "bind-nonrecursive"):
            raise click.BadParameter(f"invalid field '{f}' must be a key=value pair")
        if key == "type":
            if val not in ("bind", "volume", "tmpfs", "npipe", "cluster", "image"):
                raise click.BadParameter(f"invalid mount type: {val}")
            m["Type"] = val
        elif key in ("source", "src"):
            m["Source"] = val
        elif key in ("target", "dst", "destination"):
            m["Target"] = val
        elif key in ("readonly", "ro"):
            m["ReadOnly"] = _bool(key, val)
        elif key == "consistency":
            m["Consistency"] = val
        elif key == "bind-propagation":
            bind["Propagation"] = val
        elif key == "bind-create-mountpoint":
            bind["CreateMountpoint"] = _bool(key, val)
        elif key == "bind-nonrecursive":
            bind["NonRecursive"] = _bool(key, val)
        elif key == "volume-nocopy":
            vol["NoCopy"] = _bool(key, val)
        elif key == "volume-label":
            k, _, v = val.partition("=")
            vol.setdefault("Labels", {})[k] = v
        elif key == "volume-driver":
            vol.setdefault("DriverConfig", {})["Name"] = val
        elif key == "volume-opt":
            k, s2, v = val.partition("=")
            if not s2:
                raise click.BadParameter(f"invalid volume-opt '{val}': must be key=value")
            vol.setdefault("DriverConfig", {}).setdefault("Options", {})[k] = v
        elif key == "volume-subpath":
            vol["Subpath"] = val
        elif key == "tmpfs-size":
            tmpfs["SizeBytes"] = ram_bytes(val)
        elif key == "tmpfs-mode":
            try:
                tmpfs["Mode"] = int(val, 8)
            except ValueError:
                raise click.BadParameter(f"invalid tmpfs-mode: {val}") from None
        else:
            raise click.BadParameter(f"unexpected key '{key}' in '{f}'")
    if not m.get("Target"):
        raise click.BadParameter("target is required")
    if bind:
        m["BindOptions"] = bind
    if vol:
        m["VolumeOptions"] = vol
    if tmpfs:
        m["TmpfsOptions"] = tmpfs
    return m


def apply(body: dict[str, Any], volumes: tuple[str, ...], mounts: tuple[str, ...],
          tmpfs: tuple[str, ...], volumes_from: tuple[str, ...] = ()) -> None:
    binds, anon = [], {}
    for v in volumes:
        if ":" not in v:
            anon[v] = {}
        else:
            binds.append(v)
    host = body.setdefault("HostConfig", {})
    host["Binds"] = binds or None
    if anon:
        body["Volumes"] = anon
    if mounts:
        host["Mounts"] = [parse_mount(m) for m in mounts]
    if tmpfs:
        t = {}
        for spec in tmpfs:
            dst, _, opts = spec.partition(":")
            t[dst] = opts
        host["Tmpfs"] = t
    if volumes_from:
        host["VolumesFrom"] = list(volumes_from)


def ps_mounts(summary: dict[str, Any], trunc: bool) -> str:
    """ps's MOUNTS column: volume names, else sources (docker's 15-character ellipsis)."""
    out = []
    for m in summary.get("Mounts") or []:
        name = m.get("Name") or m.get("Source") or ""
        if trunc and len(name) > 15:
            name = name[:14] + "…"
        out.append(name)
    return ",".join(out)
