"""Anonymous volumes of a create, journaled so that a crash cannot leak them.

A create makes its anonymous volumes before the container's record exists. If the daemon dies
in between, the next start finds a container directory without a record and removes it, but
nothing else names those volumes (dockerd would keep them dangling until `volume prune`). So
the name of each anonymous volume is written into the container's directory (temp + fsync +
rename) before the volume is made, and the leftover clean-up removes what the journal lists."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

JOURNAL = "anonymous-volumes.json"


class Journaled:
    """The volume store for one create: `create` of an anonymous volume picks its name and
    journals it first; everything else goes to the real store."""

    def __init__(self, vols: Any, cdir: Path):
        self._vols = vols
        self._path = cdir / JOURNAL
        self._names: list[str] = []

    def create(self, name: str | None = None, driver: str | None = None,
               labels: dict[str, str] | None = None, options: dict[str, str] | None = None,
               anonymous: bool = False) -> tuple[dict[str, Any], bool]:
        if not name:
            from sampan.containers.spec import atomic_write

            name, anonymous = os.urandom(32).hex(), True
            self._names.append(name)
            atomic_write(self._path, json.dumps(self._names).encode())
        return self._vols.create(name, driver, labels, options, anonymous=anonymous)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._vols, attr)


def release_leftover(cdir: Path, data_root: Path) -> list[str]:
    """The anonymous volumes an unfinished create made, removed when nothing uses them."""
    from sampan.containers import mounts as mountsmod

    try:
        names = set(json.loads((cdir / JOURNAL).read_text()))
    except (OSError, ValueError, TypeError):
        return []
    vols = mountsmod.volumes_for(data_root)
    mountsmod.release(cdir.name, vols, True)
    gone = []
    for name in names:
        if isinstance(name, str) and vols.exists(name) and vols.is_anonymous(name) \
                and not vols.users(name):
            try:
                vols.remove(name)
                gone.append(name)
            except Exception:  # noqa: BLE001 - in use, or gone already
                pass
    return gone
