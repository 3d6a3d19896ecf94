"""Container file-system endpoints: archive (GET/HEAD/PUT, what `docker cp` calls), export and
changes. Paths are resolved inside the container (see sampan.containers.fsview): running
containers through their own mount namespace, stopped ones through the rootfs plus their mount
points. An upload is spooled and checked whole before anything is written."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from typing import Any

from sampan.daemon.engine import Engine, blocking, iterate_in_thread
from sampan.daemon.router import Router
from sampan.daemon.server import HTTPError, Request, Response, StreamResponse, json_response
from sampan.errors import NotFound


def register(r: Router) -> None:
    r.add("HEAD", "/containers/{id}/archive", archive_head)
    r.add("GET", "/containers/{id}/archive", archive_get)
    r.add("PUT", "/containers/{id}/archive", archive_put)
    r.add("GET", "/containers/{id}/export", export)
    r.add("GET", "/containers/{id}/changes", changes)


def _rec(req: Request, eng: Engine) -> Any:
    from sampan.daemon.containers import get

    return get(eng).store.get(req.params["id"])


def _path(req: Request) -> str:
    path = req.q("path")
    if not path:
        raise HTTPError(400, "Bad parameter: path cannot be empty")
    if "\0" in path:
        raise HTTPError(400, "Bad parameter: invalid path")
    if not path.startswith("/"):
        path = "/" + path  # relative to the container's root, like docker
    return path


def _rootfs(eng: Engine, rec: Any) -> str:
    return str(eng.graph.prepare(rec.doc["Image"], rec.id, rec.dir / "fs"))


def open_view(eng: Engine, rec: Any) -> Any:
    """The container's file system: its live root while it runs, else rootfs + mounts."""
    from sampan.containers.fsview import View, split

    if rec.running and rec.state.get("Pid"):
        v = View.for_process(int(rec.state["Pid"]), rec.id)
        if v is not None:
            return v
    mounts: dict[tuple[str, ...], str] = {}
    for key, name in (("ResolvConfPath", "resolv.conf"), ("HostnamePath", "hostname"),
                      ("HostsPath", "hosts")):
        if rec.doc.get(key):
            mounts[("etc", name)] = rec.doc[key]
    for m in rec.doc.get("Mounts") or []:
        if m.get("Type") in ("volume", "bind") and m.get("Source"):
            mounts[tuple(split(m["Destination"]))] = m["Source"]
    return View.for_path(_rootfs(eng, rec), mounts)


def _not_found(rec: Any, path: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {rec.name}")


def _stat(eng: Engine, rec: Any, path: str) -> dict[str, Any]:
    from sampan.containers.fsview import path_stat

    with open_view(eng, rec) as view:
        try:
            return path_stat(view, path)
        except NotFound:
            raise _not_found(rec, path) from None


def _stat_header(st: dict[str, Any]) -> tuple[str, str]:
    return ("X-Docker-Container-Path-Stat",
            base64.b64encode(json.dumps(st).encode()).decode())


async def archive_head(req: Request, eng: Engine) -> Response:
    rec = _rec(req, eng)
    path = _path(req)
    st = await blocking(_stat, eng, rec, path)
    return Response(200, b"", "application/json", headers=[_stat_header(st)])


def _tar(eng: Engine, rec: Any, path: str) -> tuple[dict[str, Any], Any]:
    """(stat, a generator of the tar) — the path is resolved before the answer starts."""
    from sampan.containers.fsview import path_stat, tar_entry

    view = open_view(eng, rec)
    try:
        try:
            st = path_stat(view, path)
        except NotFound:
            raise _not_found(rec, path) from None
        follow = path.endswith("/") or path.endswith("/.")
        e = view.resolve(path, follow_last=follow)
    except BaseException:
        view.close()
        raise

    def gen():
        try:
            # the root's entries are named from "." (a "/" would make them absolute)
            yield from tar_entry(view, e, "." if st["name"] == "/" else st["name"])
        finally:
            e.close()
            view.close()
    return st, gen()


async def archive_get(req: Request, eng: Engine) -> StreamResponse:
    rec = _rec(req, eng)
    path = _path(req)
    from sampan.containers.fsview import coalesce

    st, gen = await blocking(_tar, eng, rec, path)
    return StreamResponse(iterate_in_thread(coalesce(gen)), 200, "application/x-tar",
                          headers=[_stat_header(st)])


def _covering_mount(rec: Any, vpath: str) -> dict[str, Any] | None:
    best = None
    for m in rec.doc.get("Mounts") or []:
        d = m["Destination"].rstrip("/")
        if vpath == d or vpath.startswith(d + "/"):
            if best is None or len(d) > len(best["Destination"]):
                best = m
    return best


def _extract(eng: Engine, rec: Any, path: str, spool: Any, no_over: bool, copy_ids: bool
             ) -> None:
    import stat as st_

    from sampan.containers.fsview import Forbidden, check_members, extract
    from sampan.graph.unpack import decompressed

    # docker takes the archive plain or compressed (gzip, bzip2, xz; zstd too here)
    spool.seek(0)
    check_members(decompressed(spool)[0])
    owner = None
    with open_view(eng, rec) as view:
        if copy_ids and (rec.doc["Config"].get("User") or ""):
            owner = _container_user(view, rec.doc["Config"]["User"])
        try:
            e = view.resolve(path, follow_last=True)
        except NotFound:
            raise _not_found(rec, path) from None
        try:
            st = e.lstat()
            if st is None:
                raise _not_found(rec, path)
            if not st_.S_ISDIR(os.stat(e.real, dir_fd=e.dfd).st_mode):
                from sampan.errors import InvalidArgument

                raise InvalidArgument("extraction point is not a directory")
            dest = e.vpath
        finally:
            e.close()
        m = _covering_mount(rec, dest)
        if m is not None and not m.get("RW", True):
            raise Forbidden("mounted volume is marked read-only")
        if m is None and rec.doc["HostConfig"].get("ReadonlyRootfs"):
            raise Forbidden("container rootfs is marked read-only")
        spool.seek(0)
        extract(view, dest, decompressed(spool)[0], no_over, owner)


def _container_user(view: Any, user: str) -> tuple[int, int]:
    """The container user's uid/gid from the container's own /etc/passwd and /etc/group, read
    through the view (a symlinked /etc/passwd never reads the host's)."""
    from sampan.containers.spec import resolve_user

    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "etc"))
        for name in ("passwd", "group"):
            data = _read_small(view, "/etc/" + name)
            if data is not None:
                with open(os.path.join(tmp, "etc", name), "wb") as f:
                    f.write(data)
        from pathlib import Path

        u = resolve_user(user, Path(tmp))
    return u["uid"], u["gid"]


def _read_small(view: Any, path: str, limit: int = 1 << 20) -> bytes | None:
    import stat as st_

    try:
        e = view.resolve(path, follow_last=True)
    except Exception:  # noqa: BLE001 - no such file: no entries
        return None
    try:
        fd = os.open(e.real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=e.dfd)
    except OSError:
        return None
    finally:
        e.close()
    try:
        if not st_.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    finally:
        os.close(fd)


async def archive_put(req: Request, eng: Engine) -> Response:
    rec = _rec(req, eng)
    path = _path(req)
    no_over = req.qbool("noOverwriteDirNonDir")
    copy_ids = req.qbool("copyUIDGID")
    spool = tempfile.TemporaryFile(dir=str(rec.dir))
    try:
        async for chunk in req.body:
            spool.write(chunk)
        await blocking(_extract, eng, rec, path, spool, no_over, copy_ids)
    finally:
        spool.close()
    return Response(200, b"", "text/plain")


async def export(req: Request, eng: Engine) -> StreamResponse:
    from sampan.containers.fsview import coalesce, tar_tree

    rec = _rec(req, eng)
    root = await blocking(_rootfs, eng, rec)
    return StreamResponse(iterate_in_thread(coalesce(tar_tree(root))), 200, "application/x-tar")


def _changes(eng: Engine, rec: Any) -> list[dict[str, Any]]:
    from sampan.containers.fsview import changes_copy, changes_overlay

    graph = eng.graph
    rootfs = _rootfs(eng, rec)
    lowers = [str(p) for p in graph.layer_dirs(rec.doc["Image"])]
    upper = rec.dir / "fs" / "diff"
    if getattr(graph, "driver_name", "") == "overlay" and upper.is_dir():
        found = changes_overlay(str(upper), lowers)
    else:
        found = changes_copy(rootfs, lowers[0] if lowers else None)
    return _without_init(found)


# What the runtime makes for every container (mount targets of /proc, /dev, the generated
# /etc files): docker keeps them in an init layer below the writable one, so they are no
# change; neither is a parent directory touched only because of them.
_INIT = {"/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/console",
         "/sys/fs/cgroup", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/.dockerenv"}
_INIT_PARENTS = {"/etc", "/dev", "/sys", "/sys/fs"}


def _without_init(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = [c for c in found if c["Path"] not in _INIT]
    paths = [c["Path"] for c in kept]
    return [c for c in kept if not (c["Kind"] == 0 and c["Path"] in _INIT_PARENTS and not any(
        p.startswith(c["Path"] + "/") for p in paths))]


async def changes(req: Request, eng: Engine) -> Response:
    rec = _rec(req, eng)
    return json_response(await blocking(_changes, eng, rec) or None)
