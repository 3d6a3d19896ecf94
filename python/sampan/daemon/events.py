"""The daemon's event bus and `GET /events`, in docker's shape.

For every part of the daemon, one call records an event (thread-safe: it may be called from a
worker thread as well as from the event loop):

    from sampan.daemon.events import emit
    emit(eng, "volume", "create", "myvol", {"driver": "local"})
    emit(eng, "network", "connect", net_id, {"name": "br0", "type": "bridge",
                                              "container": cid})

`emit(eng, type, action, actor_id, attributes=None)`: `type` is docker's event type
("container", "image", "volume", "network", "daemon", …), `action` its action ("create",
"destroy", "health_status: healthy", "exec_start: sh -c …"), `actor_id` the object's id (for
images the reference or image id, for volumes the name), `attributes` string → string (numbers
are turned into strings, None values dropped). For containers, `emit_container(eng, rec, action,
**extra)` adds docker's attributes (name, image, the container's labels).

The last `HISTORY` events are kept in memory so that `since` can replay them (docker keeps 256;
restarting the daemon forgets them, as docker does)."""

from __future__ import annotations

import asyncio
import calendar
import collections
import json
import logging
import re
import threading
import time
from typing import Any

from sampan.daemon.server import HTTPError, Request, StreamResponse

log = logging.getLogger("sampand")

HISTORY = 1000
FILTERS = {"config", "container", "daemon", "event", "image", "label", "network", "node",
           "plugin", "scope", "secret", "service", "type", "volume"}
TYPES = {"builder", "config", "container", "daemon", "image", "network", "node", "plugin",
         "secret", "service", "volume"}
# Actions docker matches by prefix (their action carries a ": detail" suffix).
_PREFIX_ACTIONS = {"health_status", "exec_create", "exec_start", "exec_die"}


class Bus:
    def __init__(self) -> None:
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY)
        self.subscribers: set[asyncio.Queue] = set()
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None

    def publish(self, ev: dict[str, Any]) -> None:
        with self.lock:
            self.history.append(ev)
            subs = list(self.subscribers)
        loop = self.loop
        if not subs or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for q in subs:
            if running is loop:
                _offer(q, ev)
            else:
                try:
                    loop.call_soon_threadsafe(_offer, q, ev)
                except RuntimeError:
                    pass  # the loop closed meanwhile (shutdown)

    def subscribe(self) -> tuple[list[dict[str, Any]], asyncio.Queue]:
        """The history and a queue of what comes next, taken atomically (nothing lost or seen
        twice between the two)."""
        q: asyncio.Queue = asyncio.Queue(10000)
        with self.lock:
            self.subscribers.add(q)
            return list(self.history), q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        with self.lock:
            self.subscribers.discard(q)


def _offer(q: asyncio.Queue, ev: dict[str, Any]) -> None:
    try:
        q.put_nowait(ev)
    except asyncio.QueueFull:
        pass  # a listener that stopped reading loses events rather than the daemon's memory


def bus(eng: Any) -> Bus:
    b = getattr(eng, "_events", None)
    if b is None:
        b = eng._events = Bus()
    if b.loop is None:
        try:
            b.loop = asyncio.get_running_loop()
        except RuntimeError:
            pass
    return b


def emit(eng: Any, type_: str, action: str, actor_id: str,
         attributes: dict[str, Any] | None = None, scope: str = "local") -> dict[str, Any]:
    """Record one event and send it to every listener. Returns the event."""
    attrs = {str(k): str(v) for k, v in (attributes or {}).items() if v is not None}
    ns = time.time_ns()
    ev: dict[str, Any] = {}
    if type_ in ("container", "image"):
        # the fields of API < 1.22, still sent by docker for these two types
        ev["status"] = action
        ev["id"] = actor_id
        if type_ == "container" and "image" in attrs:
            ev["from"] = attrs["image"]
    ev.update({"Type": type_, "Action": action,
               "Actor": {"ID": actor_id, "Attributes": attrs},
               "scope": scope, "time": ns // 1_000_000_000, "timeNano": ns})
    try:
        bus(eng).publish(ev)
    except Exception as e:  # noqa: BLE001 - an event must never break the operation
        log.warning("event %s %s: %s", type_, action, e)
    return ev


def container_attributes(rec: Any) -> dict[str, Any]:
    cfg = rec.doc.get("Config") or {}
    attrs: dict[str, Any] = dict(cfg.get("Labels") or {})
    attrs["image"] = cfg.get("Image") or rec.doc.get("Image", "")
    attrs["name"] = rec.name
    return attrs


def emit_container(eng: Any, rec: Any, action: str, **extra: Any) -> dict[str, Any]:
    """A container event with docker's attributes (labels, image, name) plus `extra`."""
    attrs = container_attributes(rec)
    attrs.update(extra)
    return emit(eng, "container", action, rec.id, attrs)


# --------------------------------------------------------------------------- GET /events


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")


def parse_time(value: str, now: float | None = None) -> float:
    """docker's `since`/`until`: unix seconds ("1700000000", "1700000000.123456789"), RFC 3339
    ("2024-01-02T03:04:05Z", with fractions or an offset), a date, or a duration before now
    ("10m", "1h30m", as the CLI accepts)."""
    s = value.strip()
    if not s:
        raise ValueError("empty time")
    if re.fullmatch(r"-?\d+(\.\d+)?", s):
        sec, _, frac = s.partition(".")
        return int(sec) + (float("0." + frac) if frac else 0.0)
    m = _RFC3339.match(s)
    if m:
        base = calendar.timegm(time.strptime(f"{m.group(1)}T{m.group(2)}", "%Y-%m-%dT%H:%M:%S"))
        frac = float("0" + m.group(3)) if m.group(3) else 0.0
        tz = m.group(4)
        off = 0
        if tz and tz != "Z":
            sign = -1 if tz[0] == "-" else 1
            hh, mm = tz[1:3], tz[-2:]
            off = sign * (int(hh) * 3600 + int(mm) * 60)
        elif not tz:
            off = -time.localtime(base).tm_gmtoff  # no zone: local time, as docker reads it
            return base + frac + off
        return base + frac - off
    if re.fullmatch(r"\d{4}-\d\d-\d\d", s):
        return calendar.timegm(time.strptime(s, "%Y-%m-%d"))
    total = 0.0
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    pos = 0
    for mt in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", s):
        if mt.start() != pos:
            break
        total += float(mt.group(1)) * units[mt.group(2)]
        pos = mt.end()
    if pos == len(s) and pos:
        return (time.time() if now is None else now) - total
    raise ValueError(f"invalid time {value!r}")


def _strip_tag(ref: str) -> str:
    """busybox:latest → busybox (not a registry port: host:5000/img stays)."""
    i = ref.rfind(":")
    if i > ref.rfind("/") and "@" not in ref:
        return ref[:i]
    return ref


def _fuzzy(values: list[str] | None, *candidates: str | None) -> bool:
    if not values:
        return True
    for c in candidates:
        if not c:
            continue
        for v in values:
            if c == v or c.startswith(v):
                return True
    return False


def _exact(values: list[str] | None, *candidates: str | None) -> bool:
    if not values:
        return True
    return any(c in values for c in candidates if c is not None)


def matches(ev: dict[str, Any], f: dict[str, list[str]]) -> bool:
    """docker's event filter (daemon/events/filter.go): each key must match; the values of one
    key are alternatives."""
    t = ev["Type"]
    action = ev["Action"]
    actor = ev["Actor"]
    attrs = actor.get("Attributes") or {}
    if "event" in f:
        want = f["event"]
        if any(w in _PREFIX_ACTIONS for w in want):
            if not _fuzzy(want, action):
                return False
        elif action not in want:
            return False
    if not _exact(f.get("type"), t):
        return False
    if not _exact(f.get("scope"), ev.get("scope", "local")):
        return False
    for key in ("container", "volume", "network", "plugin", "node", "service", "secret",
                "config"):
        if key in f and not (t == key and _fuzzy(f[key], actor["ID"], attrs.get("name"))):
            return False
    if "daemon" in f and not (t == "daemon" and _exact(f["daemon"], actor["ID"],
                                                        attrs.get("name"))):
        return False
    if "image" in f:
        name = attrs.get("name" if t == "image" else "image") or ""
        cands = [actor["ID"], name, _strip_tag(actor["ID"]), _strip_tag(name)]
        if not _exact(f["image"], *cands):
            return False
    for lf in f.get("label", []):
        k, sep, v = lf.partition("=")
        if k not in attrs or (sep and attrs[k] != v):
            return False
    return True


def encode(ev: dict[str, Any]) -> bytes:
    return json.dumps(ev, separators=(",", ":")).encode() + b"\n"


async def events(req: Request, eng: Any) -> StreamResponse:
    from sampan.daemon.images import parse_filters

    f = parse_filters(req.q("filters"))
    for k in f:
        if k not in FILTERS:
            raise HTTPError(400, f"invalid filter '{k}'")
    for t in f.get("type", []):
        if t not in TYPES:
            raise HTTPError(400, f"invalid filter 'type={t}'")
    now = time.time()
    try:
        since = parse_time(req.q("since"), now) if req.q("since") else None
        until = parse_time(req.q("until"), now) if req.q("until") else None
    except ValueError as e:
        raise HTTPError(400, str(e)) from None
    if since is not None and until is not None and until < since:
        raise HTTPError(400, "`since` time must be before `until` time")
    b = bus(eng)
    history, q = b.subscribe()
    since_ns = None if since is None else int(since * 1e9)
    until_ns = None if until is None else int(until * 1e9)

    def wanted(ev: dict[str, Any]) -> bool:
        if since_ns is not None and ev["timeNano"] < since_ns:
            return False
        if until_ns is not None and ev["timeNano"] > until_ns:
            return False
        return matches(ev, f)

    async def body():
        try:
            if since_ns is not None:
                out = [encode(ev) for ev in history if wanted(ev)]
                if out:
                    yield b"".join(out)
            while True:
                if until_ns is not None:
                    left = until_ns / 1e9 - time.time()
                    if left <= 0:
                        return
                else:
                    left = None
                try:
                    ev = await asyncio.wait_for(q.get(), left)
                except asyncio.TimeoutError:
                    return
                if wanted(ev):
                    yield encode(ev)
        finally:
            b.unsubscribe(q)

    return StreamResponse(body(), 200, "application/json")


def register(r: Any) -> None:
    r.add("GET", "/events", events)
    bus(r.engine)
