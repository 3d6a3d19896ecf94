"""Image endpoints of the Engine API, over the ImageService (pull/push/login) and its Graph
(everything local). Blocking calls run in short-lived threads; progress and archives stream."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sampan.daemon.engine import Engine, SyncBody, blocking, iterate_in_thread, normalize_auth
from sampan.daemon.events import emit
from sampan.daemon.router import Router, api_at_least
from sampan.daemon.server import (
    HTTPError,
    Request,
    Response,
    StreamResponse,
    empty,
    json_response,
)

log = logging.getLogger("sampand")

LIST_FILTERS = {"before", "dangling", "label", "label!", "reference", "since", "until"}
PRUNE_FILTERS = {"dangling", "label", "label!", "until"}


def register(r: Router) -> None:
    r.add("GET", "/images/json", images_list)
    r.add("POST", "/images/create", images_create)
    r.add("POST", "/images/load", images_load)
    r.add("GET", "/images/get", images_get)
    r.add("POST", "/images/prune", images_prune)
    r.add("GET", "/images/search", images_search)
    r.add("GET", "/images/{name:.+}/json", image_inspect)
    r.add("GET", "/images/{name:.+}/history", image_history)
    r.add("POST", "/images/{name:.+}/tag", image_tag)
    r.add("POST", "/images/{name:.+}/push", image_push)
    r.add("GET", "/images/{name:.+}/get", image_get)
    r.add("DELETE", "/images/{name:.+}", image_delete)


# --------------------------------------------------------------------------- helpers


def parse_filters(raw: str | None, allowed: set[str] | None = None) -> dict[str, list[str]]:
    """The `filters` query parameter: {"key": {"value": true}} or the older {"key": ["value"]}."""
    if raw is None or raw.strip() == "":
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise HTTPError(400, f"invalid filter: {e}") from None
    except RecursionError:
        raise HTTPError(400, "invalid filter: nested too deeply") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "invalid filter: expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, v in data.items():
        if isinstance(v, dict):
            values = [str(k) for k, on in v.items() if on]
        elif isinstance(v, list):
            values = [str(x) for x in v]
        elif isinstance(v, str):
            values = [v]
        else:
            raise HTTPError(400, f"invalid filter '{key}'")
        if allowed is not None and key not in allowed:
            raise HTTPError(400, f"invalid filter '{key}'")
        out[key] = values
    for v in out.get("dangling", []):
        if v.lower() not in ("true", "false", "1", "0"):
            raise HTTPError(400, f"invalid filter 'dangling={v}'")
    return out


def registry_auth(req: Request) -> dict[str, Any] | None:
    """X-Registry-Auth: base64url(JSON AuthConfig); padding optional."""
    raw = (req.header("x-registry-auth") or "").strip()
    if not raw:
        return None
    padded = raw + "=" * (-len(raw) % 4)
    data = None
    for decode in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            data = json.loads(decode(padded))
            break
        except (ValueError, RecursionError):
            continue
    if not isinstance(data, dict):
        raise HTTPError(400, "invalid X-Registry-Auth header: not base64url-encoded JSON")
    try:
        auth = normalize_auth(data)
    except (TypeError, ValueError) as e:
        raise HTTPError(400, f"invalid X-Registry-Auth header: {e}") from None
    return auth or None


def _line(msg: Any) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\r\n"


def _error_line(e: BaseException) -> bytes:
    m = str(e) or type(e).__name__
    detail: dict[str, Any] = {"message": m}
    status = getattr(e, "status", None)
    if isinstance(status, int):
        detail["code"] = status
    return _line({"errorDetail": detail, "error": m})


class ClientGone(Exception):
    """Raised inside a pull/push when the client that asked for it went away."""

    status = 499


async def _progress_stream(eng: Engine, fn: Any, *args: Any) -> StreamResponse:
    """Run `fn(*args, progress)` in a thread; stream its progress messages as JSON lines. An
    error before the first message is the HTTP answer; later, an `errorDetail` line."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    gone = {"flag": False}

    def progress(msg: dict) -> None:
        if gone["flag"]:
            raise ClientGone("the client went away")
        loop.call_soon_threadsafe(q.put_nowait, ("msg", msg))

    fut = blocking(fn, *args, progress)
    fut.add_done_callback(lambda f: q.put_nowait(("done", f)))
    first = await q.get()
    if first[0] == "done" and first[1].exception() is not None:
        raise first[1].exception()

    async def chunks() -> AsyncIterator[bytes]:
        item = first
        try:
            while True:
                kind, value = item
                if kind == "msg":
                    yield _line(value)
                else:
                    err = value.exception()
                    if err is not None:
                        log.info("%s failed: %s", getattr(fn, "__name__", "job"), err)
                        yield _error_line(err)
                    return
                item = await q.get()
        finally:
            if not fut.done():
                gone["flag"] = True

    return StreamResponse(chunks())


def for_version(req: Request, image: dict[str, Any], inspect: bool = False) -> dict[str, Any]:
    """Fields as the requested API version has them: VirtualSize went in 1.44; Container and
    ContainerConfig left image inspect in 1.45."""
    if api_at_least(req, "1.44"):
        image.pop("VirtualSize", None)
    elif "Size" in image:
        image.setdefault("VirtualSize", image["Size"])
    if inspect and api_at_least(req, "1.45"):
        image.pop("Container", None)
        image.pop("ContainerConfig", None)
    return image


def _has_tag_or_digest(name: str) -> bool:
    return "@" in name or ":" in name.rsplit("/", 1)[-1]


def _reference():
    try:
        from sampan import reference
    except ImportError as e:
        raise HTTPError(501, f"image references are not available: {e}") from None
    return reference


def _familiar(ref: str) -> str:
    """docker.io/library/busybox:latest → busybox:latest, as docker's events name images."""
    for p in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if ref.startswith(p):
            return ref[len(p):]
    return ref


async def _image_id(eng: Engine, ref: str) -> str:
    try:
        return str(await eng.on_graph("resolve", ref))
    except Exception:  # noqa: BLE001 - an event names what it can
        return ref


def _then_event(eng: Engine, fn: Any, action: str, ref: str) -> Any:
    """`fn`, then (when it succeeded) an image event named like docker's: the reference with
    its tag (busybox:latest), attribute name without (busybox)."""
    def call(*args: Any) -> Any:
        out = fn(*args)
        name = _familiar(ref)
        if not _has_tag_or_digest(name):
            name += ":latest"
        repo = name.split("@")[0]
        if ":" in repo.rsplit("/", 1)[-1]:
            repo = repo.rsplit(":", 1)[0]
        emit(eng, "image", action, name, {"name": repo})
        return out
    call.__name__ = getattr(fn, "__name__", action)
    return call


# --------------------------------------------------------------------------- handlers


async def images_list(req: Request, eng: Engine) -> Response:
    filters = parse_filters(req.q("filters"), LIST_FILTERS)
    # API < 1.41 had `filter=<reference>`
    legacy = req.q("filter")
    if legacy:
        filters.setdefault("reference", []).append(legacy)
    images = await eng.on_graph("list", all=req.qbool("all"), filters=filters or None)
    images = sorted(images, key=lambda i: -int(i.get("Created") or 0))
    return json_response([for_version(req, dict(i)) for i in images])


async def images_create(req: Request, eng: Engine) -> Any:
    if req.q("fromSrc"):
        raise HTTPError(501, "importing a root filesystem (fromSrc) is not supported yet")
    name = (req.q("fromImage") or "").strip()
    if not name:
        raise HTTPError(400, "fromImage is required")
    tag = (req.q("tag") or "").strip()
    if tag:
        base = name.split("@", 1)[0]
        if ":" in base.rsplit("/", 1)[-1]:
            base = base.rsplit(":", 1)[0]
        name = f"{base}@{tag}" if ":" in tag else f"{base}:{tag}"
    elif not _has_tag_or_digest(name):
        platform = (req.q("platform") or "").strip() or None
        pull_all = eng.on_images("pull_all_tags", missing="pulling all tags of a repository "
                                 "is not supported yet; name a tag")
        return await _progress_stream(eng, pull_all, name, platform, registry_auth(req))
    platform = (req.q("platform") or "").strip() or None
    auth = registry_auth(req)
    pull = _then_event(eng, eng.on_images("pull"), "pull", name)
    return await _progress_stream(eng, pull, name, platform, auth)


async def image_push(req: Request, eng: Engine) -> Any:
    name = req.params["name"]
    tag = (req.q("tag") or "").strip()
    if tag:
        name = f"{name}:{tag}" if not _has_tag_or_digest(name) else name
    auth = registry_auth(req)
    push = _then_event(eng, eng.on_images("push"), "push", name)
    return await _progress_stream(eng, push, name, auth)


async def image_inspect(req: Request, eng: Engine) -> Response:
    img = await eng.on_graph("inspect", req.params["name"])
    return json_response(for_version(req, dict(img), inspect=True))


async def image_history(req: Request, eng: Engine) -> Response:
    return json_response(await eng.on_graph("history", req.params["name"]))


async def image_tag(req: Request, eng: Engine) -> Response:
    repo = (req.q("repo") or "").strip()
    tag = (req.q("tag") or "").strip()
    if not repo:
        raise HTTPError(400, "repository name (repo) is required")
    if "@" in repo or (tag and tag.startswith("sha256:")):
        raise HTTPError(400, "refusing to create a tag with a digest reference")
    reference = _reference()
    text = f"{repo}:{tag}" if tag else repo
    ref = reference.parse(text)
    if getattr(ref, "digest", None):
        raise HTTPError(400, "refusing to create a tag with a digest reference")
    await eng.on_graph("tag", req.params["name"], ref)
    image_id = await _image_id(eng, req.params["name"])
    emit(eng, "image", "tag", image_id, {"name": _familiar(text)})
    return empty(201)


async def image_delete(req: Request, eng: Engine) -> Response:
    image_id = await _image_id(eng, req.params["name"])
    result = await eng.on_graph("remove", req.params["name"], force=req.qbool("force"),
                                noprune=req.qbool("noprune"))
    for item in result or []:
        if isinstance(item, dict) and item.get("Untagged"):
            emit(eng, "image", "untag", image_id, {"name": image_id})
        elif isinstance(item, dict) and item.get("Deleted"):
            emit(eng, "image", "delete", item["Deleted"], {"name": item["Deleted"]})
    return json_response(result)


async def images_prune(req: Request, eng: Engine) -> Response:
    filters = parse_filters(req.q("filters"), PRUNE_FILTERS)
    result = await eng.on_graph("prune", filters or None)
    result.setdefault("ImagesDeleted", None)
    result.setdefault("SpaceReclaimed", 0)
    for item in result["ImagesDeleted"] or []:
        if isinstance(item, dict) and item.get("Untagged"):
            emit(eng, "image", "untag", item["Untagged"], {"name": item["Untagged"]})
        elif isinstance(item, dict) and item.get("Deleted"):
            emit(eng, "image", "delete", item["Deleted"], {"name": item["Deleted"]})
    emit(eng, "image", "prune", "", {"reclaimed": result["SpaceReclaimed"]})
    return json_response(result)


async def _save(eng: Engine, names: list[str]) -> StreamResponse:
    if not names:
        raise HTTPError(400, "no image names given")
    it = await blocking(lambda: iter(eng.graph.save(names)))
    gen = iterate_in_thread(it)
    # the first chunk decides: an error before it is the HTTP answer (e.g. 404)
    try:
        first = await gen.__anext__()
    except StopAsyncIteration:
        first = b""

    async def chunks() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for c in gen:
                yield c
        finally:
            await gen.aclose()
        for n in names:
            image_id = await _image_id(eng, n)
            emit(eng, "image", "save", image_id, {"name": image_id})

    return StreamResponse(chunks(), content_type="application/x-tar")


async def images_get(req: Request, eng: Engine) -> StreamResponse:
    return await _save(eng, [n for n in req.qlist("names") if n])


async def image_get(req: Request, eng: Engine) -> StreamResponse:
    return await _save(eng, [req.params["name"]])


async def images_search(req: Request, eng: Engine) -> Response:
    raise HTTPError(501, "searching registries is not supported yet")


async def images_load(req: Request, eng: Engine) -> Response:
    loop = asyncio.get_running_loop()
    body = SyncBody(req.body, loop)
    loaded = await eng.on_graph("load", body)
    lines = []
    for item in loaded or []:
        s = str(item)
        if not s.startswith("Loaded image"):
            s = (f"Loaded image ID: {s}" if s.startswith("sha256:") else f"Loaded image: {s}")
        lines.append(_line({"stream": s.rstrip("\n") + "\n"}))
        ref = s.split(":", 1)[1].strip() if s.startswith("Loaded image") else s
        image_id = await _image_id(eng, ref.removeprefix("ID:").strip())
        emit(eng, "image", "load", image_id, {"name": image_id})
    return Response(200, b"".join(lines), "application/json")
