"""The low-level runtime (the Rust extension `sampan._runtime`) with Python types.

Every blocking call releases the GIL; every failure raises `ContainerError`, whose message
names the step, the path and the errno reported by the runtime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from sampan import _runtime

ContainerError = _runtime.ContainerError
DEFAULT_ROOT = _runtime.DEFAULT_ROOT

PathLike = Union[str, "os.PathLike[str]"]


def _p(p: Optional[PathLike]) -> Optional[str]:
    return None if p is None else os.fspath(p)


def run(
    container_id: str,
    bundle: PathLike,
    *,
    root: Optional[PathLike] = None,
    console_socket: Optional[PathLike] = None,
    pid_file: Optional[PathLike] = None,
    preserve_fds: int = 0,
) -> int:
    """Create, start, wait for and delete a container; the exit status (128+signal if killed)."""
    return _runtime.run(
        container_id, os.fspath(bundle), _p(root), _p(console_socket), _p(pid_file), preserve_fds
    )


def list(root: Optional[PathLike] = None) -> "list[dict[str, Any]]":  # noqa: A001 - runc's verb
    return json.loads(_runtime.list(_p(root)))


class Container:
    """One container under a state root, for its whole lifecycle."""

    def __init__(self, inner: Any):
        self._c = inner

    @classmethod
    def create(
        cls,
        container_id: str,
        bundle: PathLike,
        *,
        root: Optional[PathLike] = None,
        console_socket: Optional[PathLike] = None,
        pid_file: Optional[PathLike] = None,
        preserve_fds: int = 0,
    ) -> "Container":
        return cls(
            _runtime.Container.create(
                container_id,
                os.fspath(bundle),
                _p(root),
                _p(console_socket),
                _p(pid_file),
                preserve_fds,
            )
        )

    @classmethod
    def load(cls, container_id: str, root: Optional[PathLike] = None) -> "Container":
        return cls(_runtime.Container.load(container_id, _p(root)))

    @property
    def id(self) -> str:
        return self._c.id

    @property
    def pid(self) -> int:
        return self._c.pid

    @property
    def bundle(self) -> Path:
        return Path(self._c.bundle)

    @property
    def status(self) -> str:
        return self._c.status()

    def start(self) -> None:
        self._c.start()

    def wait(self) -> int:
        return self._c.wait()

    def kill(self, sig: int = 15, all: bool = False) -> None:  # noqa: A002 - runc's flag
        self._c.kill(int(sig), all)

    def pause(self) -> None:
        self._c.pause()

    def resume(self) -> None:
        self._c.resume()

    def state(self) -> "dict[str, Any]":
        return json.loads(self._c.state())

    def stats(self) -> "dict[str, Any]":
        return json.loads(self._c.stats())

    def ps(self) -> "list[int]":
        return self._c.ps()

    def delete(self, force: bool = False) -> None:
        self._c.delete(force)

    def exec(
        self,
        process: "dict[str, Any]",
        *,
        console_socket: Optional[PathLike] = None,
        detach: bool = False,
        pid_file: Optional[PathLike] = None,
        preserve_fds: int = 0,
    ) -> int:
        """Run `process` (an OCI process object) inside; its exit status, or its pid if detached."""
        pid, status = self._c.exec(
            json.dumps(process), _p(console_socket), detach, _p(pid_file), preserve_fds
        )
        return pid if detach else status

    def __repr__(self) -> str:
        return f"<Container {self.id} pid={self.pid}>"
