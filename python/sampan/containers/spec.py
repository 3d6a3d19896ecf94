"""OCI runtime config for a container, made the way dockerd makes it: the image config merged
with the create request's Config and HostConfig, Docker's default capabilities, masked and
read-only paths, its default seccomp profile, generated /etc/hosts, /etc/hostname and
/etc/resolv.conf bind-mounted, cgroupsPath /sampan/<id>."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from sampan import hostfeatures
from sampan.atomicfile import atomic_write  # also used as spec.atomic_write by the stores
from sampan.containers import resources as resmod
from sampan.errors import InvalidArgument

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default capability set (oci/caps/defaults.go): 14 capabilities.
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
ALL_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
# Docker's defaults (oci/defaults.go).
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")  # dockerd's: two characters at least


def normalize_cap(c: str) -> str:
    c = c.strip().upper()
    if c == "ALL":
        return c
    if not c.startswith("CAP_"):
        c = "CAP_" + c
    if c not in ALL_CAPS:
        raise InvalidArgument(f"unknown capability: {c!r}")
    return c


def capabilities(cap_add: list[str] | None, cap_drop: list[str] | None,
                 privileged: bool) -> list[str]:
    from sampan.containers.capsets import held

    # "all" is what the engine holds: capset cannot grant more (moby does the same)
    if privileged:
        return held(list(ALL_CAPS))
    add = [normalize_cap(c) for c in cap_add or []]
    drop = [normalize_cap(c) for c in cap_drop or []]
    caps = held(list(ALL_CAPS)) if "ALL" in add else list(DEFAULT_CAPS)
    if "ALL" in drop:
        caps = []
    else:
        caps = [c for c in caps if c not in drop]
    for c in add:
        if c != "ALL" and c not in caps and c not in drop:
            caps.append(c)
    return caps


def _lookup(path: Path, key: str, by_name: bool) -> list[str] | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        f = line.split(":")
        if len(f) < 4:
            continue
        if (f[0] if by_name else f[2]) == key:
            return f
    return None


def resolve_user(user: str, rootfs: Path) -> dict[str, Any]:
    """"uid", "name", "uid:gid", "name:group" → OCI process.user (from the rootfs's
    /etc/passwd and /etc/group, like docker)."""
    if not user:
        return {"uid": 0, "gid": 0}
    u, _, g = user.partition(":")
    passwd, group = rootfs / "etc/passwd", rootfs / "etc/group"
    uid = gid = None
    if u.isdigit():
        uid = int(u)
        ent = _lookup(passwd, u, False)
        gid = int(ent[3]) if ent else 0
    else:
        ent = _lookup(passwd, u, True)
        if ent is None:
            raise InvalidArgument(f"unable to find user {u}: no matching entries in passwd file")
        uid, gid = int(ent[2]), int(ent[3])
    if g:
        if g.isdigit():
            gid = int(g)
        else:
            ent = _lookup(group, g, True)
            if ent is None:
                raise InvalidArgument(
                    f"unable to find group {g}: no matching entries in group file")
            gid = int(ent[2])
    if uid > 2**31 or gid > 2**31:
        raise InvalidArgument(f"invalid user {user!r}")
    return {"uid": uid, "gid": gid}


def merge_env(image_env: list[str], env: list[str]) -> list[str]:
    out: dict[str, str] = {}
    for e in list(image_env or []) + list(env or []):
        k, sep, v = e.partition("=")
        if not k:
            raise InvalidArgument(f"invalid environment variable: {e!r}")
        out[k] = e if sep else f"{k}="
    return list(out.values())


def seccomp_profile(caps: list[str]) -> dict[str, Any]:
    from sampan import _runtime

    return json.loads(_runtime.seccomp_default_profile(caps))


def make_spec(cid: str, rootfs: Path, cdir: Path, image_config: dict[str, Any],
              config: dict[str, Any], host: dict[str, Any]) -> dict[str, Any]:
    """The config.json document. `image_config` is the image's Config; `config`/`host` the
    create request's Config and HostConfig (already validated)."""
    args = command(config, image_config)
    if not args:
        raise InvalidArgument("no command specified")
    privileged = bool(host.get("Privileged"))
    caps = capabilities(host.get("CapAdd"), host.get("CapDrop"), privileged)
    user = resolve_user(config.get("User") or image_config.get("User") or "", rootfs)
    tty = bool(config.get("Tty"))
    env = merge_env(image_config.get("Env") or [], [])
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, "PATH=" + DEFAULT_PATH)
    env.append("HOSTNAME=" + config["Hostname"])
    if tty:
        env.append("TERM=xterm")
    env = merge_env(env, config.get("Env") or [])
    root_user = user["uid"] == 0
    process: dict[str, Any] = {
        "terminal": tty,
        "user": user,
        "args": args,
        "env": env,
        "cwd": config.get("WorkingDir") or image_config.get("WorkingDir") or "/",
        "capabilities": {
            "bounding": list(caps),
            "effective": list(caps) if root_user else [],
            "permitted": list(caps) if root_user else [],
        },
        "noNewPrivileges": False,
    }
    size = host.get("ConsoleSize")
    if tty and isinstance(size, list) and len(size) == 2 and all(
            isinstance(x, int) and 0 < x < 65536 for x in size):
        process["consoleSize"] = {"height": size[0], "width": size[1]}  # docker run -t's size
    security = [str(s) for s in host.get("SecurityOpt") or []]
    seccomp_unconfined = privileged
    for opt in security:
        k, sep, v = opt.partition("=")
        if not sep:
            k, sep, v = opt.partition(":")
        if k == "seccomp" and v == "unconfined":
            seccomp_unconfined = True
        elif k == "no-new-privileges" and v in ("", "true"):
            process["noNewPrivileges"] = True
        elif opt == "no-new-privileges":
            process["noNewPrivileges"] = True
        elif k == "no-new-privileges" and v == "false":
            pass
        elif resmod.security_opt(opt) is not None:
            pass  # resources.apply: seccomp profiles, apparmor/label, systempaths
        else:
            raise InvalidArgument(f"invalid --security-opt: {opt!r} (supported: "
                                  "seccomp=unconfined, no-new-privileges)")
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]
    for name in ("resolv.conf", "hostname", "hosts"):
        mounts.append({"destination": "/etc/" + name, "type": "bind",
                       "source": str(cdir / name), "options": ["rbind", "rprivate"]})
    netmode = network_mode(host)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")]
    if netmode != "host":
        namespaces.append({"type": "network"})
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    mem = int(host.get("Memory") or 0)
    if mem:
        resources["memory"] = {"limit": mem}
        swap = int(host.get("MemorySwap") or 0)
        if swap > 0:
            resources["memory"]["swap"] = swap
    pids = host.get("PidsLimit")
    if pids:
        resources["pids"] = {"limit": int(pids)}
    linux: dict[str, Any] = {
        "resources": resources,
        "cgroupsPath": f"/sampan/{cid}",
        "namespaces": namespaces,
    }
    if not privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    # A kernel without seccomp filters (some routers'): no default profile, as dockerd; the
    # daemon warns at start and in `info`.
    if not seccomp_unconfined and hostfeatures.seccomp_supported():
        linux["seccomp"] = seccomp_profile(caps)
    spec = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": str(rootfs), "readonly": bool(host.get("ReadonlyRootfs"))},
        "hostname": config["Hostname"],
        "mounts": mounts,
        "linux": linux,
    }
    from sampan.containers import initproc

    initproc.apply(spec, host)
    return spec


def command(config: dict[str, Any], image_config: dict[str, Any]) -> list[str]:
    """docker's rule: an Entrypoint given at create drops the image's Cmd."""
    ep = config.get("Entrypoint")
    cmd = config.get("Cmd")
    if ep is None:
        ep = image_config.get("Entrypoint") or []
        if not cmd:
            cmd = image_config.get("Cmd") or []
    else:
        cmd = cmd or []
    if isinstance(ep, str):
        ep = [ep]
    if isinstance(cmd, str):
        cmd = ["/bin/sh", "-c", cmd]
    return [str(x) for x in list(ep) + list(cmd)]


def network_mode(host: dict[str, Any]) -> str:
    mode = host.get("NetworkMode") or "default"
    if mode in ("default", "bridge", "none"):
        return "none" if mode == "none" else "bridge"
    if mode == "host":
        return "host"
    if isinstance(mode, str) and mode.startswith("container:") and len(mode) > 10:
        return "container"  # joins another container's (resources.apply)
    if isinstance(mode, str) and mode:
        return "bridge"  # a user-defined network: the network controller checks that it exists
    raise InvalidArgument(f"invalid network mode {mode!r}")


def write_etc_files(cdir: Path, cid: str, hostname: str, netmode: str) -> None:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf for the container (bind-mounted)."""
    if netmode == "host":
        hosts = _read("/etc/hosts") or "127.0.0.1\tlocalhost\n"
        hostname_file = (_read("/etc/hostname") or os.uname().nodename + "\n")
    else:
        hosts = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 "fe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
                 "ff02::2\tip6-allrouters\n")
        hostname_file = hostname + "\n"
    resolv = _read("/etc/resolv.conf")
    if netmode != "host":
        # loopback-only resolvers cannot be reached from a new network namespace
        lines = [ln for ln in resolv.splitlines()
                 if not (ln.startswith("nameserver") and
                         (" 127." in ln or " ::1" in ln))]
        resolv = "\n".join(lines) + ("\n" if lines else "")
    for name, text in (("hostname", hostname_file), ("hosts", hosts),
                       ("resolv.conf", resolv)):
        atomic_write(cdir / name, text.encode(), mode=0o644)


def _read(p: str) -> str:
    try:
        return Path(p).read_text()
    except OSError:
        return ""


def valid_name(name: str) -> str:
    n = name[1:] if name.startswith("/") else name
    if not n or not _NAME.match(n) or len(n) > 255:
        raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                              "are allowed")
    return n
