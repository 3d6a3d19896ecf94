"""Registry authentication: the `/v2/` challenge, Bearer tokens and Basic.

A registry answers 401 with `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` (token
auth, the Docker token spec) or `Basic realm="…"`. For Bearer we ask the realm for a token for
the scopes an operation needs (`repository:<path>:pull`, `…:pull,push`, plus `…:pull` on the
source repository of a cross-repository mount), with the user's credentials as Basic auth when
there are any (anonymous otherwise), or with an identity token (OAuth2 refresh_token grant).
Tokens are cached per (realm, service, credentials, scopes) and refreshed a little before they
expire, and whenever the registry refuses one.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sampan.errors import RegistryError, Unauthorized
from sampan.registry import http

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')
MIN_TOKEN_LIFETIME = 60                  # the spec's default when expires_in is missing
REFRESH_MARGIN = 10                      # renew this many seconds before expiry
CLIENT_ID = "sampan"


@dataclass
class Challenge:
    scheme: str                          # "bearer" or "basic" (lower case)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate header into its challenges."""
    out: list[Challenge] = []
    s = header or ""
    pos = 0
    while pos < len(s):
        m = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9_\-]*)").match(s, pos)
        if not m or not m.group(1):
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while True:
            pm = _PARAM_RE.match(s, pos)
            if not pm or not pm.group(0).strip():
                break
            # a following scheme name looks like "Basic realm=…": stop at a bare token
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            pos = pm.end()
        out.append(Challenge(scheme, params))
    return out


def repository_scope(path: str, actions: Sequence[str]) -> str:
    return f"repository:{path}:{','.join(actions)}"


@dataclass
class Token:
    value: str
    expires: float

    def valid(self) -> bool:
        return time.time() < self.expires - REFRESH_MARGIN


def _cred_key(creds: dict | None) -> str:
    if not creds:
        return ""
    return "|".join(str(creds.get(k, "")) for k in ("username", "password", "identitytoken",
                                                     "registrytoken"))


class TokenCache:
    """Tokens shared by the operations of one daemon, keyed by realm/service/creds/scopes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._tokens: dict[tuple, Token] = {}

    def get(self, key) -> Token | None:
        with self._lock:
            t = self._tokens.get(key)
            if t is not None and not t.valid():
                del self._tokens[key]
                return None
            return t

    def put(self, key, token: Token) -> None:
        with self._lock:
            self._tokens[key] = token

    def drop(self, key) -> None:
        with self._lock:
            self._tokens.pop(key, None)


def basic_header(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _registry_message(resp: http.Response) -> str:
    """The first error of a registry's JSON error body, "code: message" in docker's style."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        errs = data.get("errors")
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            code = str(errs[0].get("code", "")).lower().replace("_", " ")
            msg = errs[0].get("message", "")
            return f"{code}: {msg}" if code else str(msg)
        for k in ("details", "detail", "message", "error"):
            if isinstance(data.get(k), str) and data[k]:
                return data[k]
    return ""


class Authenticator:
    """Authorization for one registry endpoint with one set of credentials."""

    def __init__(self, session: http.Session, creds: dict | None, cache: TokenCache,
                 timeout: float = 30.0):
        self.session = session
        self.creds = dict(creds or {})
        self.cache = cache
        self.timeout = timeout
        self.challenge: Challenge | None = None
        self._lock = threading.Lock()

    def update(self, header: str) -> None:
        """Take the challenge of a 401 (Bearer preferred over Basic)."""
        chals = parse_challenges(header)
        for scheme in ("bearer", "basic"):
            for c in chals:
                if c.scheme == scheme:
                    self.challenge = c
                    return

    @property
    def has_credentials(self) -> bool:
        c = self.creds
        return bool(c.get("username") or c.get("password") or c.get("identitytoken")
                    or c.get("registrytoken"))

    def _key(self, scopes: Sequence[str]):
        c = self.challenge
        return (c.realm, c.params.get("service", ""), _cred_key(self.creds),
                tuple(sorted(set(scopes))))

    def invalidate(self, scopes: Sequence[str]) -> None:
        if self.challenge is not None and self.challenge.scheme == "bearer":
            self.cache.drop(self._key(scopes))

    def header(self, scopes: Sequence[str]) -> str | None:
        """The Authorization header value for a request needing `scopes`, or None."""
        c = self.challenge
        if self.creds.get("registrytoken"):
            return "Bearer " + self.creds["registrytoken"]
        if c is None:
            return None
        if c.scheme == "basic":
            if not (self.creds.get("username") or self.creds.get("password")):
                return None
            return basic_header(self.creds.get("username", ""), self.creds.get("password", ""))
        if c.scheme != "bearer":
            return None
        key = self._key(scopes)
        tok = self.cache.get(key)
        if tok is None:
            with self._lock:
                tok = self.cache.get(key)
                if tok is None:
                    tok = self.fetch_token(scopes)
                    self.cache.put(key, tok)
        return "Bearer " + tok.value

    def fetch_token(self, scopes: Sequence[str]) -> Token:
        """Ask the challenge's realm for a token (the Docker token spec)."""
        c = self.challenge
        assert c is not None
        realm = c.realm
        if not realm:
            raise RegistryError("registry's Bearer challenge has no realm")
        if not realm.startswith(("http://", "https://")):
            raise RegistryError(f"token realm {realm!r} is not an http(s) URL")
        service = c.params.get("service", "")
        scope_list = sorted(set(scopes)) or ([c.params["scope"]] if c.params.get("scope")
                                             else [])
        creds = self.creds
        try:
            if creds.get("identitytoken"):
                data = {"grant_type": "refresh_token", "refresh_token": creds["identitytoken"],
                        "service": service, "client_id": CLIENT_ID,
                        "scope": " ".join(scope_list)}
                resp = self.session.post(realm, data=data, timeout=self.timeout)
            else:
                params: list[tuple[str, str]] = []
                if service:
                    params.append(("service", service))
                params.extend(("scope", s) for s in scope_list)
                headers = {}
                if creds.get("username") or creds.get("password"):
                    params.append(("account", creds.get("username", "")))
                    headers["Authorization"] = basic_header(creds.get("username", ""),
                                                            creds.get("password", ""))
                resp = self.session.get(realm, params=params, headers=headers,
                                        timeout=self.timeout)
        except http.RequestException as e:
            raise RegistryError(f"Get \"{realm}\": {_short(e)}") from None
        if resp.status_code in (401, 403):
            why = _registry_message(resp) or "incorrect username or password"
            if not why.startswith("unauthorized") and not why.startswith("denied"):
                why = "unauthorized: " + why
            raise Unauthorized(f"Get \"{realm}\": {why}")
        if resp.status_code != 200:
            raise RegistryError(f"Get \"{realm}\": token server answered "
                                f"{resp.status_code} {resp.reason}")
        try:
            body = resp.json()
        except ValueError:
            raise RegistryError(f"Get \"{realm}\": token server answered invalid JSON") from None
        value = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not value or not isinstance(value, str):
            raise RegistryError(f"Get \"{realm}\": token server answered no token")
        try:
            lifetime = int(body.get("expires_in") or MIN_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = MIN_TOKEN_LIFETIME
        lifetime = max(lifetime, MIN_TOKEN_LIFETIME)
        if isinstance(body.get("refresh_token"), str) and body["refresh_token"]:
            self.creds.setdefault("identitytoken_received", body["refresh_token"])
        return Token(value, time.time() + lifetime)


def _short(e: Exception) -> str:
    s = str(e)
    return s if len(s) < 300 else s[:300] + "…"
