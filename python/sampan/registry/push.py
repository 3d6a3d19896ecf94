"""Push an image from the graph to a registry.

For each layer: the registry may have it already (HEAD), another repository on the same
registry may lend it (cross-repository mount), or it is uploaded — in one PUT, or in PATCH
chunks when `chunk_size` is set. Then the config, then the manifest. When the image came from a
registry, its original manifest (and so its digest) is pushed again; otherwise a Docker schema 2
manifest is made, compressing layers from `Graph.save()` when no compressed blobs are stored.
"""

from __future__ import annotations

import json
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from sampan.errors import InvalidArgument, NotFound, RegistryError, SampanError
from sampan.reference import Reference, parse
from sampan.registry import manifest as mf
from sampan.registry.auth import TokenCache
from sampan.registry.client import Registry, Repository
from sampan.registry.config import RegistryConfig
from sampan.registry.progress import Reporter
from sampan.registry.store import BlobStore

log = logging.getLogger("sampan.registry")
CHUNK = 1024 * 1024


class _Reader:
    """A file-like over a store blob that reports "Pushing" progress as it is read."""

    def __init__(self, f, size: int, on_read: Callable[[int], None]):
        self.f = f
        self.size = size
        self.n = 0
        self.on_read = on_read

    def __len__(self) -> int:           # the body is sent with Content-Length, not chunked
        return self.size - self.n

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n if n and n > 0 else CHUNK)
        if data:
            self.n += len(data)
            self.on_read(self.n)
        return data

    def __iter__(self):
        while True:
            data = self.read(CHUNK)
            if not data:
                return
            yield data


class Pusher:
    def __init__(self, graph, config: RegistryConfig, tokens: TokenCache,
                 progress: Callable[[dict], None] | None = None):
        self.graph = graph
        self.store = BlobStore(graph.store)
        self.config = config
        self.tokens = tokens
        self.out = Reporter(progress)

    def push(self, ref: Reference, creds: dict | None) -> str:
        """Push `ref`; without a tag, every local tag of its repository in lexical order, as
        dockerd does. Returns the (last) manifest digest."""
        if ref.digest:
            raise InvalidArgument("cannot push a digest reference")
        if ref.tag:
            targets = [(ref, self.graph.resolve(str(ref)))]
        else:
            targets = self._local_tags(ref)
            if not targets:
                raise NotFound(f"An image does not exist locally with the tag: "
                               f"{ref.familiar_name()}")
        self.out.plain(f"The push refers to repository [{ref.name()}]")
        digest = ""
        for tagged, image_id in targets:
            digest = self._push_one(tagged, image_id, creds)
        return digest

    def _local_tags(self, ref: Reference) -> list[tuple[Reference, str]]:
        refs = [(parse(name, default_tag=None), image_id)
                for name, image_id in self.graph.tags_of(ref.name())]
        return sorted(refs, key=lambda x: str(x[0]))

    def _push_one(self, ref: Reference, image_id: str, creds: dict | None) -> str:
        endpoint = self.config.endpoints(ref.domain, push=True)
        last: BaseException | None = None
        for ep in endpoint:
            reg = Registry(ep, self.config, creds, self.tokens)
            try:
                reg.ping()
            except RegistryError as e:
                last = e
                reg.close()
                if ep.fallback:
                    continue
                raise
            try:
                return self._push_to(reg, ref, image_id)
            finally:
                reg.close()
        assert last is not None
        raise last

    # ---- what to push -------------------------------------------------------------------
    def _stored_manifest(self, rec: dict) -> mf.Manifest | None:
        """The manifest the image was pulled with, when it and all its blobs are stored."""
        for m in rec.get("manifests") or []:
            d = m.get("digest")
            if not d or m.get("kind") == "index" or not self.store.has(d):
                continue
            try:
                man = mf.parse_manifest(self.store.read(d), m.get("media_type") or "", d, d)
            except (SampanError, OSError):
                continue
            if man.is_index or man.config is None or man.config.digest != rec["config_digest"]:
                continue
            if self.store.has(man.config.digest) and all(
                    self.store.has(x.digest) or x.media_type in mf.FOREIGN_LAYERS
                    for x in man.layers):
                return man
        return None

    def _sources(self, rec: dict, ref: Reference) -> list[str]:
        """Other repositories on the same registry that hold this image (mount sources)."""
        out: list[str] = []
        for name in (rec.get("repo_digests") or []) + (rec.get("repo_tags") or []):
            try:
                r = parse(name, default_tag=None)
            except SampanError:
                continue
            if r.domain == ref.domain and r.path != ref.path and r.path not in out:
                out.append(r.path)
        return out

    def _layer_blob(self, layer: dict) -> mf.Descriptor:
        """A compressed blob of a layer: one already stored, else gzip its diff now."""
        for b in layer.get("blobs") or []:
            if b.get("digest") and self.store.has(b["digest"]) and (
                    b.get("media_type") in mf.LAYER_TYPES):
                return mf.Descriptor(b["media_type"], b["digest"],
                                     self.store.size(b["digest"]))
        with self.graph.open_diff(layer["diff_id"]) as raw:
            digest = self.graph.store.ingest(_GzipReader(raw))
        return mf.Descriptor(mf.DOCKER_LAYER, digest, self.store.size(digest))

    def _build(self, rec: dict) -> mf.Manifest:
        """A Docker schema 2 manifest for an image that has no stored manifest."""
        layers = [self._layer_blob(x) for x in rec.get("layers") or []]
        cd = rec["config_digest"]
        config = mf.Descriptor(mf.DOCKER_CONFIG, cd, self.store.size(cd))
        return self._schema2(config, layers)

    @staticmethod
    def _schema2(config: mf.Descriptor, layers: list[mf.Descriptor]) -> mf.Manifest:
        doc = {"schemaVersion": 2, "mediaType": mf.DOCKER_MANIFEST,
               "config": config.to_json(), "layers": [x.to_json() for x in layers]}
        raw = json.dumps(doc, indent=3).encode()
        return mf.Manifest(mf.DOCKER_MANIFEST, raw, mf.digest_of(raw), config, layers)

    # ---- push ---------------------------------------------------------------------------
    def _push_to(self, reg: Registry, ref: Reference, image_id: str) -> str:
        rec = self.graph.image_record(image_id)
        m = self._stored_manifest(rec) or self._build(rec)
        config = json.loads(self.store.read(m.config.digest))
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        ids = [d.split(":", 1)[-1][:12] for d in diff_ids]
        if len(ids) != len(m.layers):
            ids = [x.short for x in m.layers]
        repo = Repository(reg, ref.path, ["pull", "push"])
        sources = self._sources(rec, ref)
        # docker lists the layers top-most first
        order = list(range(len(m.layers)))[::-1]
        for i in order:
            self.out.status("Preparing", ids[i])
        workers = max(1, self.config.max_concurrent_uploads)
        for n, i in enumerate(order):
            if n >= workers:
                self.out.status("Waiting", ids[i])
        done: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sampan-push") as pool:
            futs = []
            for i in order:
                d = m.layers[i]
                if d.digest in done:
                    continue
                done[d.digest] = ids[i]
                futs.append(pool.submit(self._push_layer, repo, d, ids[i], sources))
            for f in futs:
                f.result()
        self._push_blob(repo, m.config, None, sources)
        digest = repo.put_manifest(ref.tag, m.raw, m.media_type) or m.digest
        if digest != m.digest:
            log.warning("registry reports manifest digest %s, computed %s", digest, m.digest)
        self.out.plain(f"{ref.tag}: digest: {m.digest} size: {len(m.raw)}")
        self.out.send({"progressDetail": {}, "aux": {"Tag": ref.tag, "Digest": m.digest,
                                                     "Size": len(m.raw)}})
        return m.digest

    def _push_layer(self, repo: Repository, d: mf.Descriptor, pid: str,
                    sources: list[str]) -> None:
        if d.media_type in mf.FOREIGN_LAYERS:
            self.out.status("Skipped foreign layer", pid)
            return
        self._push_blob(repo, d, pid, sources)

    def _push_blob(self, repo: Repository, d: mf.Descriptor, pid: str | None,
                   sources: list[str]) -> None:
        size = repo.blob_size(d.digest)
        if size is not None:
            if pid:
                self.out.status("Layer already exists", pid)
            return
        location = None
        for src in sources:
            try:
                location = repo.mount_blob(d.digest, src)
            except (RegistryError, NotFound):
                location = None
                continue
            if location is None:
                if pid:
                    self.out.status(f"Mounted from {src}", pid)
                return
            break
        if location is None:
            location = repo.start_upload()
        if not self.store.has(d.digest):
            raise NotFound(f"blob {d.digest} is not in the content store")
        size = self.store.size(d.digest)
        if size != d.size:
            raise RegistryError(f"blob {d.digest}: stored size {size} does not match the "
                                f"manifest's {d.size}")
        report = (lambda n: self.out.update("Pushing", pid, n, size)) if pid else (lambda n: None)
        chunk = self.config.chunk_size
        if chunk and size > chunk:
            self._upload_chunked(repo, location, d, size, chunk, report)
        else:
            def body():
                return _Reader(self.store.open(d.digest), size, report)
            repo.upload_monolithic(location, d.digest, size, body)
        if pid:
            self.out.update("Pushing", pid, size, size, force=True)
            self.out.status("Pushed", pid)

    def _upload_chunked(self, repo: Repository, location: str, d: mf.Descriptor, size: int,
                        chunk: int, report: Callable[[int], None]) -> None:
        offset = 0
        with self.store.open(d.digest) as f:
            while offset < size:
                data = f.read(chunk)
                if not data:
                    raise RegistryError(f"blob {d.digest}: short read at {offset} of {size}")
                location = repo.upload_chunk(location, offset, data)
                offset += len(data)
                report(offset)
        repo.finish_upload(location, d.digest)


class _GzipReader:
    """Reads as the gzip compression of another stream (layer tar → blob for push)."""

    def __init__(self, raw):
        self.raw = raw
        self.z = zlib.compressobj(6, zlib.DEFLATED, 31)
        self.buf = b""
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        while len(self.buf) < n and not self.eof:
            data = self.raw.read(CHUNK)
            if data:
                self.buf += self.z.compress(data)
            else:
                self.buf += self.z.flush()
                self.eof = True
        out, self.buf = self.buf[:n], self.buf[n:]
        return out
