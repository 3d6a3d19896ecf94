"""Registry credentials from config files, in docker's config.json format.

Looked up in order: Sampan's own file (`$SAMPAN_CONFIG/config.json`, default
`~/.sampan/config.json`), then Docker's (`$DOCKER_CONFIG/config.json`, default
`~/.docker/config.json`). Each file may name credential helpers (`credHelpers`,
`credsStore`: the `docker-credential-<name>` programs) or hold `auths` entries with a base64
`auth` ("user:password"), `username`/`password`, or an `identitytoken`.

`lookup(host)` answers an X-Registry-Auth-shaped dict (username, password, serveraddress,
identitytoken) or None. `store()` and `erase()` write Sampan's file (mode 0600, atomically), for
`sampan login`/`logout`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from sampan.errors import InvalidArgument

INDEX_SERVER = "https://index.docker.io/v1/"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


def sampan_config_dir() -> Path:
    env = os.environ.get("SAMPAN_CONFIG")
    return Path(env) if env else Path.home() / ".sampan"


def docker_config_dir() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def config_files() -> list[Path]:
    """The files `lookup` reads, in order of preference."""
    return [sampan_config_dir() / "config.json", docker_config_dir() / "config.json"]


def server_key(host: str) -> str:
    """The key docker uses in `auths` for a registry: the Hub's v1 URL, else the host."""
    h = normalize_host(host)
    return INDEX_SERVER if h == "docker.io" else h


def normalize_host(server: str) -> str:
    """"https://index.docker.io/v1/" → "docker.io"; "http://h:5000/v2/" → "h:5000"."""
    s = (server or "").strip()
    if "://" in s:
        s = s.split("://", 1)[1]
    s = s.split("/", 1)[0].lower() if s else s
    if s in _HUB_ALIASES or s == "":
        return "docker.io"
    return s


def _read(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"error loading config file {path}: {e}") from None
    return data if isinstance(data, dict) else None


def _decode_auth(entry: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    if entry.get("auth"):
        try:
            raw = base64.b64decode(entry["auth"]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidArgument("invalid auth configuration: auth is not base64 "
                                  "\"user:password\"") from None
        if ":" not in raw:
            raise InvalidArgument("invalid auth configuration file: auth has no ':'")
        out["username"], out["password"] = raw.split(":", 1)
    for k in ("username", "password", "identitytoken", "registrytoken", "email"):
        if entry.get(k):
            out[k] = entry[k]
    return out


def _helper_get(helper: str, server: str) -> dict[str, str] | None:
    prog = shutil.which(f"docker-credential-{helper}")
    if prog is None:
        return None
    try:
        p = subprocess.run([prog, "get"], input=server.encode(), capture_output=True,
                           timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    try:
        data = json.loads(p.stdout)
    except ValueError:
        return None
    user, secret = data.get("Username", ""), data.get("Secret", "")
    if not secret:
        return None
    if user == "<token>":
        return {"identitytoken": secret}
    return {"username": user, "password": secret}


def _candidates(host: str, keys: Iterable[str]) -> str | None:
    want = normalize_host(host)
    for k in keys:
        if normalize_host(k) == want:
            return k
    return None


def lookup(host: str, files: list[Path] | None = None) -> dict[str, str] | None:
    """Credentials for registry `host` ("docker.io", "localhost:5000") or None."""
    for path in files if files is not None else config_files():
        data = _read(path)
        if not data:
            continue
        helpers = data.get("credHelpers") or {}
        hkey = _candidates(host, helpers)
        helper = helpers.get(hkey) if hkey else data.get("credsStore")
        if helper:
            got = _helper_get(helper, server_key(host))
            if got:
                got["serveraddress"] = server_key(host)
                return got
        auths = data.get("auths") or {}
        key = _candidates(host, auths)
        if key is not None and isinstance(auths[key], dict):
            got = _decode_auth(auths[key])
            if got:
                got["serveraddress"] = key
                return got
    return None


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=".config.json.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def store(host: str, username: str = "", password: str = "", identitytoken: str = "",
          path: Path | None = None) -> Path:
    """Save credentials for `host` in Sampan's config file; returns the file written."""
    path = path or sampan_config_dir() / "config.json"
    data = _read(path) or {}
    auths = data.setdefault("auths", {})
    old = _candidates(host, auths)
    if old is not None:
        del auths[old]
    entry: dict[str, str] = {}
    if identitytoken:
        entry["identitytoken"] = identitytoken
        if username:
            entry["auth"] = base64.b64encode(f"{username}:".encode()).decode()
    else:
        entry["auth"] = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths[server_key(host)] = entry
    _write(path, data)
    return path


def erase(host: str, path: Path | None = None) -> bool:
    """Forget the credentials for `host` in Sampan's file; False when there were none."""
    path = path or sampan_config_dir() / "config.json"
    data = _read(path)
    if not data:
        return False
    auths = data.get("auths") or {}
    key = _candidates(host, auths)
    if key is None:
        return False
    del auths[key]
    _write(path, data)
    return True
