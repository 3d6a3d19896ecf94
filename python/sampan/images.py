"""ImageService: what the daemon calls to pull, push and log in (the graph does the rest)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Callable

from sampan.errors import InvalidArgument
from sampan.reference import parse
from sampan.registry import credentials
from sampan.registry.auth import TokenCache
from sampan.registry.client import ConnectError, Registry
from sampan.registry.config import RegistryConfig
from sampan.registry.progress import error_message
from sampan.registry.pull import Puller
from sampan.registry.push import Pusher

Progress = Callable[[dict], None]
_AUTH_KEYS = ("username", "password", "identitytoken", "registrytoken")

__all__ = ["ImageService", "RegistryConfig", "decode_auth_header", "error_message"]


def decode_auth_header(value: str | None) -> dict | None:
    """Decode an X-Registry-Auth header (base64url JSON) into an auth dict (None if empty)."""
    if not value:
        return None
    s = value.strip()
    try:
        raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        try:
            data = json.loads(s)
        except ValueError:
            raise InvalidArgument("invalid X-Registry-Auth header: not base64 JSON") from None
    if not isinstance(data, dict):
        raise InvalidArgument("invalid X-Registry-Auth header: not a JSON object")
    return {k.lower(): v for k, v in data.items() if isinstance(v, str)}


def _has_creds(auth: dict | None) -> bool:
    return bool(auth) and any(auth.get(k) for k in _AUTH_KEYS)


class ImageService:
    def __init__(self, graph, registry_config: RegistryConfig | None = None):
        self.graph = graph
        self.config = registry_config or RegistryConfig()
        self.tokens = TokenCache()

    def _creds(self, domain: str, auth: dict | None) -> dict | None:
        if _has_creds(auth):
            return {k: auth[k] for k in _AUTH_KEYS if auth.get(k)}
        return credentials.lookup(domain)

    def pull(self, ref: str, platform: str | None = None, auth: dict | None = None,
             progress: Progress | None = None) -> str:
        """Pull `ref` ("busybox", "localhost:5000/x:1", "x@sha256:…"); returns the image id.

        `progress` gets dockerd's JSON messages. Errors are raised (SampanError subclasses);
        a daemon that has already streamed progress ends the stream with
        `error_message(exc)`.
        """
        r = parse(ref)
        puller = Puller(self.graph, self.config, self.tokens, progress)
        return puller.pull(r, platform, self._creds(r.domain, auth), credentials.lookup)

    def pull_all_tags(self, repo: str, platform: str | None = None, auth: dict | None = None,
                      progress: Progress | None = None) -> list[str]:
        """`docker pull -a repo`: every tag the registry lists; returns the image ids."""
        r = parse(repo, default_tag=None)
        puller = Puller(self.graph, self.config, self.tokens, progress)
        return puller.pull_all(r, platform, self._creds(r.domain, auth), credentials.lookup)

    def push(self, ref: str, auth: dict | None = None,
             progress: Progress | None = None) -> str:
        """Push the local image `ref` to its registry; returns the manifest digest. A name
        without a tag pushes every local tag of the repository (dockerd's behaviour)."""
        r = parse(ref, default_tag=None)
        pusher = Pusher(self.graph, self.config, self.tokens, progress)
        return pusher.push(r, self._creds(r.domain, auth))

    def login(self, auth: dict) -> dict:
        """Check credentials against a registry (`POST /auth`)."""
        server = (auth or {}).get("serveraddress") or "docker.io"
        host = credentials.normalize_host(server)
        creds = {k: auth[k] for k in _AUTH_KEYS if auth.get(k)}
        last = None
        for ep in self.config.endpoints(host, push=True):
            reg = Registry(ep, self.config, creds, self.tokens)
            try:
                reg.login()
                token = reg.auth.creds.get("identitytoken_received", "")
                return {"Status": "Login Succeeded", "IdentityToken": token}
            except ConnectError as e:
                last = e
                if ep.fallback:
                    continue
                raise
            finally:
                reg.close()
        raise last
