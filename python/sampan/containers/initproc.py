"""`--init` (HostConfig.Init, or daemon.json "init" by default): docker's behaviour — the init
binary bind-mounted read-only at /sbin/docker-init and the process run as
`/sbin/docker-init -- CMD…`. The init is the monitor binary itself (static, so it runs in any
image): called as docker-init it forwards signals, reaps zombies and exits with CMD's status."""

from __future__ import annotations

from typing import Any

from sampan.errors import SampanError

INIT_PATH = "/sbin/docker-init"
# daemon.json "init": the default for containers created without HostConfig.Init.
daemon_default = False


class InitUnavailable(SampanError):
    status = 500


def wanted(host: dict[str, Any]) -> bool:
    v = host.get("Init")
    return daemon_default if v is None else bool(v)


def apply(spec: dict[str, Any], host: dict[str, Any]) -> None:
    """Rewrite a config.json document for --init."""
    if not wanted(host):
        return
    from sampan.containers import monitorbin

    binary = monitorbin.BINARY
    if monitorbin.binary() is None and not binary.is_file():
        raise InitUnavailable(f"--init needs the init binary {binary} (scripts/build-monitor "
                              "builds it; pip install . puts it into the package)")
    spec["mounts"].append({"destination": INIT_PATH, "type": "bind", "source": str(binary),
                           "options": ["bind", "ro", "nosuid", "nodev"]})
    spec["process"]["args"] = [INIT_PATH, "--", *spec["process"]["args"]]


def user_args(spec: dict[str, Any]) -> list[str]:
    """The container's command without the init (what inspect shows as Path and Args)."""
    args = spec["process"]["args"]
    if len(args) > 2 and args[0] == INIT_PATH and args[1] == "--":
        return args[2:]
    return args
