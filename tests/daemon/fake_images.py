"""A small in-memory ImageService + Graph for the daemon tests (what docs/images-interfaces.md
promises, nothing more), plus a test-only upgrade route. Loaded by sampand through
SAMPAN_DAEMON_IMAGE_SERVICE=fake_images:make."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time

from sampan.errors import Conflict, ImageNotFound, InvalidArgument, NotFound, Unauthorized


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _familiar(ref: str) -> str:
    """busybox → busybox:latest; docker.io/library/x:1 → x:1 (just enough for the tests)."""
    name, tag = ref, "latest"
    if "@" in name:
        return name
    i = name.rfind(":")
    if i > name.rfind("/"):
        name, tag = name[:i], name[i + 1:]
    for p in ("docker.io/library/", "docker.io/"):
        name = name.removeprefix(p)
    return f"{name}:{tag}"


class FakeGraph:
    driver_name = "vfs"
    driver_reason = "fake graph for tests"

    def __init__(self):
        self.images: dict[str, dict] = {}
        self.lock = threading.Lock()

    def add(self, ref: str | None, size: int = 1000, created: int | None = None,
            labels: dict | None = None, seed: str | None = None) -> str:
        data = json.dumps({"ref": ref, "seed": seed or ref, "size": size}).encode()
        iid = _digest(data)
        with self.lock:
            img = self.images.setdefault(iid, {
                "Id": iid, "ParentId": "", "RepoTags": [], "RepoDigests": [],
                "Created": created if created is not None else int(time.time()) - 3600,
                "Size": size, "SharedSize": -1, "VirtualSize": size,
                "Labels": labels or {}, "Containers": -1,
            })
            if ref:
                self._untag(_familiar(ref))
                img["RepoTags"].append(_familiar(ref))
                repo = _familiar(ref).rsplit(":", 1)[0]
                img["RepoDigests"].append(f"{repo}@{_digest(data + b'm')}")
        return iid

    def _untag(self, tag: str) -> None:
        for img in self.images.values():
            if tag in img["RepoTags"]:
                img["RepoTags"].remove(tag)

    def resolve(self, name: str) -> str:
        with self.lock:
            fam = _familiar(name)
            for iid, img in self.images.items():
                if fam in img["RepoTags"] or name in img["RepoTags"]:
                    return iid
            n = name.removeprefix("sha256:")
            hits = [i for i in self.images if i[7:].startswith(n)] if len(n) >= 1 and all(
                c in "0123456789abcdef" for c in n) else []
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise InvalidArgument(f"ambiguous image id prefix {name}")
        raise ImageNotFound(f"No such image: {fam if ':' in fam else name}")

    def list(self, all: bool = False, filters: dict | None = None) -> list[dict]:
        out = []
        with self.lock:
            imgs = [dict(i) for i in self.images.values()]
        for img in imgs:
            ok = True
            for k, vals in (filters or {}).items():
                if k == "dangling":
                    want = vals[0].lower() in ("true", "1")
                    ok &= (not img["RepoTags"]) == want
                elif k == "reference":
                    ok &= any(t.split(":")[0] == v.split(":")[0] and (":" not in v or t == v)
                              for t in img["RepoTags"] for v in vals)
                elif k == "label":
                    ok &= not [v for v in vals if v.split("=")[0] not in img["Labels"]]
            if ok:
                out.append(img)
        return out

    def inspect(self, name: str) -> dict:
        iid = self.resolve(name)
        img = self.images[iid]
        return {"Id": iid, "RepoTags": list(img["RepoTags"]),
                "RepoDigests": list(img["RepoDigests"]), "Parent": "", "Comment": "",
                "Created": "2024-01-02T03:04:05.123456789Z", "Architecture": "amd64",
                "Os": "linux", "Size": img["Size"],
                "Config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "Labels": img["Labels"]},
                "RootFS": {"Type": "layers", "Layers": [_digest(iid.encode())]}}

    def history(self, name: str) -> list[dict]:
        iid = self.resolve(name)
        img = self.images[iid]
        return [{"Id": iid, "Created": img["Created"], "CreatedBy": "/bin/sh -c #(nop)  CMD "
                 "[\"sh\"] and a long tail to truncate", "Tags": img["RepoTags"], "Size": 0,
                 "Comment": ""},
                {"Id": "<missing>", "Created": img["Created"] - 10,
                 "CreatedBy": "/bin/sh -c #(nop) ADD file:abc in / ", "Tags": None,
                 "Size": img["Size"], "Comment": ""}]

    def tag(self, image: str, ref) -> None:
        iid = self.resolve(image)
        fam = ref.familiar() if hasattr(ref, "familiar") else _familiar(str(ref))
        with self.lock:
            self._untag(fam)
            self.images[iid]["RepoTags"].append(fam)

    def remove(self, name: str, force: bool = False, noprune: bool = False) -> list[dict]:
        iid = self.resolve(name)
        with self.lock:
            img = self.images[iid]
            fam = _familiar(name)
            if fam in img["RepoTags"] and (len(img["RepoTags"]) > 1):
                img["RepoTags"].remove(fam)
                return [{"Untagged": fam}]
            if len(img["RepoTags"]) > 1 and not force:
                raise Conflict(f"conflict: unable to delete {iid[7:19]} (must be forced) - "
                               "image is referenced in multiple repositories")
            out = [{"Untagged": t} for t in img["RepoTags"]]
            out += [{"Untagged": d} for d in img["RepoDigests"]]
            del self.images[iid]
            out.append({"Deleted": iid})
            return out

    def prune(self, filters: dict | None = None) -> dict:
        dangling = (filters or {}).get("dangling", ["true"])[0] in ("true", "1")
        deleted, space = [], 0
        with self.lock:
            for iid in list(self.images):
                img = self.images[iid]
                if dangling and img["RepoTags"]:
                    continue
                deleted += [{"Untagged": t} for t in img["RepoTags"]]
                deleted.append({"Deleted": iid})
                space += img["Size"]
                del self.images[iid]
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": space}

    def save(self, names: list[str]):
        ids = [self.resolve(n) for n in names]  # raises before the first chunk
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            manifest = []
            for n, iid in zip(names, ids):
                data = json.dumps(self.images[iid]).encode()
                ti = tarfile.TarInfo(f"{iid[7:]}.json")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
                by_id = n.removeprefix("sha256:") in iid
                manifest.append({"Config": f"{iid[7:]}.json",
                                 "RepoTags": None if by_id else [_familiar(n)]})
            m = json.dumps(manifest).encode()
            ti = tarfile.TarInfo("manifest.json")
            ti.size = len(m)
            tf.addfile(ti, io.BytesIO(m))
            pad = b"\0" * (300 * 1024)  # big enough to need several chunks
            ti = tarfile.TarInfo("padding")
            ti.size = len(pad)
            tf.addfile(ti, io.BytesIO(pad))
        data = buf.getvalue()
        for i in range(0, len(data), 64 * 1024):
            yield data[i:i + 64 * 1024]

    def load(self, stream) -> list[str]:
        try:
            manifest = None
            configs = {}
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for member in tf:
                    f = tf.extractfile(member)
                    if f is None:
                        continue
                    data = f.read()
                    if member.name == "manifest.json":
                        manifest = json.loads(data)
                    elif member.name.endswith(".json"):
                        configs[member.name] = json.loads(data)
        except (tarfile.TarError, ValueError, EOFError) as e:
            raise InvalidArgument(f"invalid archive: {e}") from None
        if manifest is None:
            raise InvalidArgument("invalid archive: no manifest.json")
        out = []
        for entry in manifest:
            cfg = configs.get(entry["Config"], {})
            if not entry.get("RepoTags"):
                iid = self.add(None, size=cfg.get("Size", 1000), seed=cfg.get("Id"))
                out.append(f"Loaded image ID: {iid}")
            for t in entry.get("RepoTags") or []:
                self.add(t, size=cfg.get("Size", 1000), seed=cfg.get("Id"))
                out.append(f"Loaded image: {_familiar(t)}")
        return out

    def df(self) -> list[dict]:
        with self.lock:
            return [dict(i, Containers=0, SharedSize=0) for i in self.images.values()]


class FakeImageService:
    def __init__(self, config):
        self.config = config
        self.graph = FakeGraph()
        self.graph.add("busybox:latest", size=4261375, created=int(time.time()) - 14 * 86400)
        self.graph.add("localhost:5000/team/app:1.0", size=12345678, labels={"tier": "web"})
        self.graph.add(None, size=2000, seed="dangling")
        self.pulls = 0

    def pull(self, ref: str, platform=None, auth=None, progress=None) -> str:
        self.pulls += 1
        fam = _familiar(ref)
        repo, tag = fam.rsplit(":", 1) if "@" not in fam else (fam.split("@")[0], "")
        if repo.startswith("private/") and not (auth and auth.get("username") == "alice"):
            raise Unauthorized(f"pull access denied for {repo}, repository does not exist or "
                               "may require 'docker login'")
        if repo.startswith("missing/"):
            raise NotFound(f"manifest for {fam} not found: manifest unknown")
        if platform and platform not in ("linux/amd64", "linux/arm64"):
            raise InvalidArgument(f"no matching manifest for {platform} in the manifest list "
                                  "entries")
        progress({"status": f"Pulling from {repo}", "id": tag or "latest"})
        layers = ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
        for lid in layers:
            progress({"status": "Pulling fs layer", "progressDetail": {}, "id": lid})
        slow = repo.startswith("slow/")
        for lid in layers:
            for cur in (0, 500, 1000):
                if slow:
                    time.sleep(0.3)
                progress({"status": "Downloading", "progressDetail": {"current": cur,
                          "total": 1000}, "progress": f"[==>  ] {cur}B/1kB", "id": lid})
            progress({"status": "Download complete", "progressDetail": {}, "id": lid})
        if repo.startswith("broken/"):
            raise InvalidArgument("failed to register layer: broken layer")
        for lid in layers:
            progress({"status": "Pull complete", "progressDetail": {}, "id": lid})
        iid = self.graph.add(fam, size=777, seed=fam)
        progress({"status": f"Digest: {_digest(fam.encode())}"})
        progress({"status": f"Status: Downloaded newer image for {fam}"})
        return iid

    def push(self, ref: str, auth=None, progress=None) -> str:
        fam = _familiar(ref)
        self.graph.resolve(fam)
        repo, tag = fam.rsplit(":", 1)
        progress({"status": f"The push refers to repository [{repo}]"})
        progress({"status": "Preparing", "progressDetail": {}, "id": "aaaaaaaaaaaa"})
        progress({"status": "Pushed", "progressDetail": {}, "id": "aaaaaaaaaaaa"})
        d = _digest(fam.encode())
        progress({"status": f"{tag}: digest: {d} size: 527"})
        progress({"progressDetail": {}, "aux": {"Tag": tag, "Digest": d, "Size": 527}})
        return d

    def login(self, auth: dict) -> dict:
        if auth.get("username") == "alice" and auth.get("password") == "secret":
            return {"Status": "Login Succeeded", "IdentityToken": ""}
        raise Unauthorized("Get \"https://registry.example/v2/\": unauthorized: incorrect "
                           "username or password")


def make(config):
    return FakeImageService(config)


def register_routes(router) -> None:
    """A test-only hijack route: echoes what the client sends, upper-cased, until EOF."""
    from sampan.daemon.server import Hijack

    async def echo(req, eng):
        async def run(stream):
            await stream.write(b"hello\n")
            while True:
                data = await stream.read(4096)
                if not data:
                    break
                await stream.write(data.upper())
        return Hijack(run)

    router.add("POST", "/_test/echo", echo)
