"""Network endpoints of the Engine API (/networks…) over the network controller
(`sampan.drivers.network.controller`), and the controller's construction from the daemon's
configuration."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sampan.daemon.engine import Engine, blocking
from sampan.daemon.images import parse_filters
from sampan.daemon.router import Router
from sampan.daemon.server import HTTPError, Request, Response, empty, json_response

log = logging.getLogger("sampand")


def controller(eng: Engine) -> Any:
    """The engine's NetworkController (built once; its DNS server serves on the running
    loop)."""
    ctl = getattr(eng, "_network", None)
    if ctl is not None:
        return ctl
    from sampan.drivers.network.controller import NetworkController

    cfg = eng.config
    extra = getattr(cfg, "extra", {}) or {}
    ctl = NetworkController(
        cfg.data_root, cfg.exec_root,
        bridge=getattr(cfg, "bridge", None) or extra.get("bridge"),
        bip=getattr(cfg, "bip", None) or extra.get("bip"),
        mtu=int(getattr(cfg, "mtu", 0) or extra.get("mtu") or 0),
        firewall=getattr(cfg, "firewall_backend", None) or extra.get("firewall-backend"),
        iptables=extra.get("iptables", True) is not False,
        dns=getattr(cfg, "dns", None) or extra.get("dns"))
    try:
        from sampan.daemon.dns import DNSServer

        ctl.dns = DNSServer(asyncio.get_running_loop())
    except RuntimeError:
        log.warning("no event loop: the embedded DNS server is off")
    try:
        from sampan.daemon import events

        ctl.on_event = lambda *a: events.emit(eng, *a)
    except ImportError:
        pass
    eng._network = ctl  # type: ignore[attr-defined]
    return ctl


def register(r: Router) -> None:
    r.add("GET", "/networks", list_)
    r.add("POST", "/networks/create", create)
    r.add("POST", "/networks/prune", prune)
    r.add("GET", "/networks/{id}", inspect)
    r.add("DELETE", "/networks/{id}", delete)
    r.add("POST", "/networks/{id}/connect", connect)
    r.add("POST", "/networks/{id}/disconnect", disconnect)


async def list_(req: Request, eng: Engine) -> Response:
    ctl = controller(eng)
    return json_response(ctl.list(parse_filters(req.q("filters"))))


async def create(req: Request, eng: Engine) -> Response:
    body = await req.json({})
    net = await blocking(controller(eng).create, body)  # the controller emits "create"
    return json_response({"Id": net["Id"], "Warning": ""}, 201)


def _event(eng: Engine, action: str, ref: str, **extra: Any) -> dict[str, Any]:
    """A network event as docker's (Actor: the network's id; name and type attributes).
    Returns what it knew of the network, for a destroy to name it after it is gone."""
    from sampan.daemon.events import emit

    known = extra.pop("_known", None)
    try:
        if known is None:
            ctl = controller(eng)
            known = ctl.inspect(ctl.get(ref))
    except Exception:  # noqa: BLE001 - an event names what it can
        known = {"Id": ref, "Name": ref, "Driver": ""}
    if action:
        emit(eng, "network", action, known.get("Id", ref),
             {"name": known.get("Name", ref), "type": known.get("Driver", ""), **extra})
    return known


async def inspect(req: Request, eng: Engine) -> Response:
    ctl = controller(eng)
    return json_response(ctl.inspect(ctl.get(req.params["id"])))


async def delete(req: Request, eng: Engine) -> Response:
    await blocking(controller(eng).remove, req.params["id"])  # and "destroy" (prune too)
    return empty(204)


async def prune(req: Request, eng: Engine) -> Response:
    gone = await blocking(controller(eng).prune, parse_filters(req.q("filters")))
    return json_response({"NetworksDeleted": gone or None})


def _container(eng: Engine, body: Any) -> Any:
    from sampan.daemon import containers

    if not isinstance(body, dict) or not isinstance(body.get("Container"), str) \
            or not body["Container"]:
        raise HTTPError(400, "Container is required")
    return containers.get(eng).store.get(body["Container"])


async def connect(req: Request, eng: Engine) -> Response:
    body = await req.json({})
    rec = _container(eng, body)
    ecfg = body.get("EndpointConfig") or {}
    aliases = ecfg.get("Aliases") or [] if isinstance(ecfg, dict) else []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise HTTPError(400, "Aliases must be a list of strings")
    ctl = controller(eng)

    def work() -> None:
        with rec.lock:
            ctl.connect(req.params["id"], rec, aliases)
            rec.save()

    await blocking(work)
    _event(eng, "connect", req.params["id"], container=rec.id)
    return empty(200)


async def disconnect(req: Request, eng: Engine) -> Response:
    body = await req.json({})
    rec = _container(eng, body)
    ctl = controller(eng)

    def work() -> None:
        with rec.lock:
            ctl.disconnect(req.params["id"], rec, bool(body.get("Force")))
            rec.save()

    await blocking(work)
    _event(eng, "disconnect", req.params["id"], container=rec.id)
    return empty(200)
