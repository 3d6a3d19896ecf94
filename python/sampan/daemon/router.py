"""Routing for the Engine API: `/v1.NN` prefixes (1.24–1.45), path patterns whose parameters
may contain slashes (`{name:.+}`), HEAD served by GET handlers, errors as `{"message": …}`."""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

from sampan.daemon.server import HTTPError, Request, error_response

log = logging.getLogger("sampand")

API_VERSION = "1.45"
MIN_API_VERSION = "1.24"

_VERSIONED = re.compile(r"^/v([0-9]+\.[0-9]+)(/.*)$")
_PARAM = re.compile(r"\{([a-zA-Z_]+)(?::([^}]+))?\}")


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def api_at_least(req: Request, v: str) -> bool:
    return version_tuple(req.api_version or API_VERSION) >= version_tuple(v)


def _compile(pattern: str) -> re.Pattern:
    out = []
    pos = 0
    for m in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(out) + "$")


class Router:
    """Routes are tried in the order they were added: static paths before patterns."""

    def __init__(self, engine: Any):
        self.engine = engine
        self._routes: list[tuple[str, re.Pattern, Callable]] = []

    def add(self, method: str, pattern: str, handler: Callable) -> None:
        self._routes.append((method.upper(), _compile(pattern), handler))

    def route(self, method: str, pattern: str) -> Callable[[Callable], Callable]:
        def deco(fn: Callable) -> Callable:
            self.add(method, pattern, fn)
            return fn
        return deco

    def match(self, method: str, path: str) -> tuple[Callable, dict[str, str]] | None:
        fallback = None
        for m, rx, handler in self._routes:
            mt = rx.match(path)
            if not mt:
                continue
            if m == method:
                return handler, mt.groupdict()
            if method == "HEAD" and m == "GET" and fallback is None:
                fallback = (handler, mt.groupdict())
        return fallback

    async def __call__(self, req: Request) -> Any:
        path = req.path
        m = _VERSIONED.match(path)
        if m:
            version, path = m.group(1), m.group(2)
            v = version_tuple(version)
            if v < version_tuple(MIN_API_VERSION):
                return error_response(400, f"client version {version} is too old. Minimum "
                                           f"supported API version is {MIN_API_VERSION}, "
                                           "please upgrade your client to a newer version")
            if v > version_tuple(API_VERSION):
                return error_response(400, f"client version {version} is too new. Maximum "
                                           f"supported API version is {API_VERSION}")
            req.api_version = version
        else:
            req.api_version = API_VERSION
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        found = self.match(req.method, path)
        if found is None:
            log.debug("%s %s: no route", req.method, req.target)
            return error_response(404, "page not found")
        handler, params = found
        req.params = params
        req.app = self.engine
        log.debug("%s %s", req.method, req.target)
        try:
            return await handler(req, self.engine)
        except HTTPError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes an API error
            return self.error(e, req)

    @staticmethod
    def error(e: BaseException, req: Request | None = None) -> Any:
        status = getattr(e, "status", None)
        if isinstance(status, int) and 400 <= status < 600:
            msg = str(e) or type(e).__name__
            if status >= 500:
                log.warning("%s %s: %s", req.method if req else "", req.target if req else "",
                            msg)
            return error_response(status, msg)
        if isinstance(e, NotImplementedError):
            return error_response(501, str(e) or "not implemented")
        log.exception("%s %s failed", req.method if req else "", req.target if req else "",
                      exc_info=e)
        return error_response(500, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
