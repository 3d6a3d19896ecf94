"""Volume endpoints of the Engine API over `sampan.volumes.VolumeStore`: list, create, inspect,
remove, prune, and the volumes part of /system/df."""

from __future__ import annotations

from typing import Any

from sampan.daemon.engine import Engine, blocking
from sampan.daemon.images import parse_filters
from sampan.daemon.router import Router
from sampan.daemon.server import HTTPError, Request, Response, empty, json_response


def store(eng: Engine) -> Any:
    from sampan.volumes import open_store

    st = open_store(eng.config.data_root)
    if st.notify is None:
        from sampan.daemon.events import emit

        st.notify = lambda action, name, attrs: emit(eng, "volume", action, name, attrs)
    return st


def register(r: Router) -> None:
    store(r.engine)  # open now: crash leftovers cleared, events wired before any create
    r.add("GET", "/volumes", list_)
    r.add("POST", "/volumes/create", create)
    r.add("POST", "/volumes/prune", prune)
    r.add("GET", "/volumes/{name}", inspect)
    r.add("DELETE", "/volumes/{name}", delete)


async def list_(req: Request, eng: Engine) -> Response:
    filters = parse_filters(req.q("filters"))
    vols = await blocking(store(eng).list, filters)
    return json_response({"Volumes": vols, "Warnings": None})


async def create(req: Request, eng: Engine) -> Response:
    body = await req.json({})
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object (VolumeCreateOptions)")
    name = body.get("Name") or None
    if name is not None and not isinstance(name, str):
        raise HTTPError(400, "Name must be a string")
    driver = body.get("Driver") or None
    if driver is not None and not isinstance(driver, str):
        raise HTTPError(400, "Driver must be a string")
    opts = body.get("DriverOpts")
    if opts is not None and not isinstance(opts, dict):
        raise HTTPError(400, "DriverOpts must be an object")
    vol, _new = await blocking(store(eng).create, name, driver, body.get("Labels"), opts)
    return json_response(vol, 201)


async def inspect(req: Request, eng: Engine) -> Response:
    return json_response(store(eng).get(req.params["name"]))


async def delete(req: Request, eng: Engine) -> Response:
    await blocking(store(eng).remove, req.params["name"], req.qbool("force"))
    return empty(204)


async def prune(req: Request, eng: Engine) -> Response:
    filters = parse_filters(req.q("filters"))
    return json_response(await blocking(store(eng).prune, filters))


def df(eng: Engine) -> list[dict[str, Any]]:
    """For /system/df (blocking)."""
    return store(eng).df()
