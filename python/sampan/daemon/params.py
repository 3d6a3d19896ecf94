"""Query parameters of the container endpoints, checked as dockerd checks them: a value that
does not parse is a 400 naming the parameter (never a 500 from deep inside a handler)."""

from __future__ import annotations

from typing import Any, Callable

from sampan.daemon.server import HTTPError, Request

PRUNE_FILTERS = {"label", "label!", "until"}


def timeout(req: Request, *names: str) -> int | None:
    """Stop/restart's `t` (seconds, -1 for no limit); None when absent."""
    for name in names:
        v = req.q(name)
        if v not in (None, ""):
            try:
                n = int(v)
            except ValueError:
                raise HTTPError(400, f"invalid value for {name}: {v!r}: must be an integer "
                                     "number of seconds") from None
            if n < -1:
                raise HTTPError(400, f"invalid value for {name}: {n}: must be -1 or more")
            return n
    return None


def timestamp(req: Request, name: str) -> float:
    """Logs' `since`/`until`: 0 when absent."""
    v = req.q(name)
    if not v:
        return 0.0
    from sampan.daemon.events import parse_time

    try:
        return parse_time(v)
    except (ValueError, OverflowError):
        raise HTTPError(400, f"invalid value for {name}: {v!r}: not a timestamp") from None


def prune_filter(filters: dict[str, list[str]]) -> Callable[[Any], bool]:
    """Container prune's filters (label, label!, until) as a predicate on a record; a bad
    filter is a 400 before anything is removed."""
    from sampan.containers.store import parse_rfc3339
    from sampan.daemon.events import parse_time

    for k in filters:
        if k not in PRUNE_FILTERS:
            raise HTTPError(400, f"invalid filter '{k}'")
    untils = []
    for v in filters.get("until", []):
        try:
            untils.append(parse_time(v))
        except (ValueError, OverflowError):
            raise HTTPError(400, f"invalid filter 'until={v}'") from None

    def label_ok(labels: dict[str, str], spec: str) -> bool:
        k, sep, v = spec.partition("=")
        return k in labels and (not sep or labels[k] == v)

    def keep(rec: Any) -> bool:
        labels = rec.doc["Config"].get("Labels") or {}
        if not all(label_ok(labels, s) for s in filters.get("label", [])):
            return False
        if any(label_ok(labels, s) for s in filters.get("label!", [])):
            return False
        created = parse_rfc3339(rec.doc.get("Created", ""))
        return all(created < u for u in untils)

    return keep
