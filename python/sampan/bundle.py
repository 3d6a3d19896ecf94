"""OCI bundles for tests and demos, built from Debian's busybox-static.

Pure Python and standard library only: the README's main job uses it before anything
else is known to work.

- :func:`busybox_rootfs` lays out a minimal root filesystem around a static busybox.
- :func:`runc_spec` returns the ``config.json`` that ``runc spec`` writes, as a dict,
  with the process arguments, the terminal flag and any other field changed.
- :func:`make_bundle` puts both together in a bundle directory.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

__all__ = [
    "BUSYBOX",
    "DEFAULT_CAPS",
    "busybox_rootfs",
    "make_bundle",
    "merge",
    "runc_spec",
    "write_config",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Where Debian's busybox-static installs its binary.
BUSYBOX = Path("/bin/busybox")

#: The capabilities ``runc spec`` grants in every set.
DEFAULT_CAPS = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"
_EMPTY_DIRS = ("proc", "sys", "dev", "tmp", "etc", "root", "run")


def _busybox_applets(busybox: Path) -> list[str]:
    out = subprocess.run(
        [str(busybox), "--list"], check=True, capture_output=True, text=True
    ).stdout
    return [name for name in out.split() if name and "/" not in name]


def busybox_rootfs(dest: PathLike, busybox: PathLike = BUSYBOX) -> Path:
    """Build a minimal root filesystem in ``dest`` (created if missing) and return it.

    ``dest/bin/busybox`` is a copy of the static busybox, every applet that
    ``busybox --list`` names is a symlink to it in ``/bin``, ``/etc/passwd`` and
    ``/etc/group`` know root and nobody, and the mount points proc, sys, dev, tmp
    exist. Calling it again on the same directory is harmless.
    """
    dest = Path(dest)
    busybox = Path(busybox)
    if not busybox.is_file():
        raise FileNotFoundError(
            f"{busybox} not found: install Debian's busybox-static (apt-get install busybox-static)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    for name in _EMPTY_DIRS:
        (dest / name).mkdir(exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    os.chmod(dest / "root", 0o700)
    bindir = dest / "bin"
    bindir.mkdir(exist_ok=True)
    target = bindir / "busybox"
    shutil.copy2(busybox, target)
    os.chmod(target, 0o755)
    for applet in _busybox_applets(target if os.access(target, os.X_OK) else busybox):
        link = bindir / applet
        if applet == "busybox" or link.is_symlink() or link.exists():
            continue
        link.symlink_to("busybox")
    # Programs that look for these in /usr/bin or /sbin find them too.
    for alias in ("usr/bin", "sbin", "usr/sbin"):
        path = dest / alias
        if not path.exists() and not path.is_symlink():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(os.path.relpath(bindir, path.parent))
    (dest / "etc" / "passwd").write_text(_PASSWD)
    (dest / "etc" / "group").write_text(_GROUP)
    for name in ("passwd", "group"):
        os.chmod(dest / "etc" / name, 0o644)
    return dest


def merge(base: dict, tweaks: Mapping[str, Any]) -> dict:
    """Deep-merge ``tweaks`` into ``base`` in place and return ``base``.

    Dicts merge key by key; any other value replaces the old one; ``None`` removes
    the key.
    """
    for key, value in tweaks.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _runc_default_spec() -> dict:
    """The document ``runc spec`` (runc 1.1) writes, field for field and in its order."""
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": list(caps),
                "effective": list(caps),
                "permitted": list(caps),
                "ambient": list(caps),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"},
                {"type": "network"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
            ],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


def runc_spec(
    bundle: PathLike | None = None,
    args: Sequence[str] | None = None,
    terminal: bool = False,
    **tweaks: Any,
) -> dict:
    """The ``config.json`` that ``runc spec`` writes, with changes.

    ``args`` replaces ``process.args`` (``["sh"]`` stays when None) and ``terminal``
    sets ``process.terminal`` (``runc spec`` says true; the default here is false so
    that the process shares the caller's stdio). Each keyword in ``tweaks`` is
    deep-merged at the top level of the document (see :func:`merge`), for instance
    ``hostname="box"`` or ``process={"cwd": "/tmp"}`` or
    ``linux={"resources": {"pids": {"limit": 10}}}``. When ``bundle`` is given the
    document is also written to ``bundle/config.json``.
    """
    spec = _runc_default_spec()
    if args is not None:
        spec["process"]["args"] = [str(a) for a in args]
    spec["process"]["terminal"] = bool(terminal)
    merge(spec, tweaks)
    if bundle is not None:
        write_config(bundle, spec)
    return spec


def write_config(bundle: PathLike, spec: Mapping[str, Any]) -> Path:
    """Write ``spec`` as ``bundle/config.json`` (tab-indented like runc) and return its path."""
    path = Path(bundle) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".config.json.tmp")
    tmp.write_text(json.dumps(spec, indent="\t"))
    os.replace(tmp, path)
    return path


def make_bundle(
    dest: PathLike,
    args: Sequence[str] | None = None,
    *,
    terminal: bool = False,
    files: Mapping[str, str | bytes] | None = None,
    dirs: Iterable[str] = (),
    busybox: PathLike = BUSYBOX,
    **tweaks: Any,
) -> Path:
    """Create a runnable bundle in ``dest``: ``rootfs/`` from busybox and ``config.json``.

    ``files`` maps paths inside the rootfs to contents (made executable when they start
    with ``#!``) and ``dirs`` names extra directories to create in the rootfs; the other
    arguments are those of :func:`runc_spec`. Returns ``dest``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    rootfs = busybox_rootfs(dest / "rootfs", busybox)
    for name in dirs:
        (rootfs / name.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        path = rootfs / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(data)
        os.chmod(path, 0o755 if data.startswith(b"#!") else 0o644)
    runc_spec(dest, args, terminal=terminal, **tweaks)
    return dest


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python3 -m sampan.bundle", description="Make an OCI bundle from busybox-static."
    )
    parser.add_argument("dest", help="bundle directory to create")
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, help="process arguments (default: sh)"
    )
    parser.add_argument("-t", "--terminal", action="store_true", help="set process.terminal")
    parser.add_argument("--hostname", help="the container's hostname (runc spec says runc)")
    ns = parser.parse_args(argv)
    tweaks = {} if ns.hostname is None else {"hostname": ns.hostname}
    make_bundle(ns.dest, ns.args or None, terminal=ns.terminal, **tweaks)
    print(ns.dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
