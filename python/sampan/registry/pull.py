"""Pull an image from a registry into the graph.

Manifest (and index → platform) first, then the config, then the layers: up to
`max_concurrent_downloads` blobs download at once into the content store's resumable ingests,
while the layers are unpacked in order, each as soon as its parent is unpacked — straight from
the growing ingest file when the store exposes it (download → hash → decompress → untar in one
pass), else from the committed blob. A broken connection resumes with a Range request from the
bytes already ingested, which also survive a daemon restart. The whole pull holds a graph lease
so garbage collection leaves what it writes alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable

from sampan.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    RegistryError,
    SampanError,
    Unauthorized,
)
from sampan.reference import Reference
from sampan.registry import http
from sampan.registry import manifest as mf
from sampan.registry.auth import TokenCache
from sampan.registry.client import ConnectError, Registry, Repository
from sampan.registry.config import Endpoint, RegistryConfig
from sampan.registry.progress import Reporter
from sampan.registry.store import BlobStore, Writer

log = logging.getLogger("sampan.registry")
CHUNK = 256 * 1024
MAX_CONFIG_SIZE = 8 * 1024 * 1024
_NET_ERRORS = (http.RequestException, *http.BODY_ERRORS)


class Cancelled(Exception):
    pass


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


class LayerJob:
    """One layer of the pull: its download state, shared by downloader and unpacker."""

    def __init__(self, index: int, desc: mf.Descriptor, diff_id: str, chain_id: str,
                 parent: str | None):
        self.index = index
        self.desc = desc
        self.diff_id = diff_id
        self.chain_id = chain_id
        self.parent = parent
        self.exists = False
        self.cond = threading.Condition()
        self.state = "pending"        # pending, downloading, done, failed
        self.written = 0
        self.path = None              # partial ingest file, when the store tells
        self.generation = 0
        self.error: BaseException | None = None

    def set(self, **kw) -> None:
        with self.cond:
            for k, v in kw.items():
                setattr(self, k, v)
            self.cond.notify_all()


class FollowReader(io.RawIOBase):
    """Reads a blob's ingest file while the download is still writing it.

    Returns EOF only once the download has been verified and committed; raises the
    download's error instead when it failed (so a bad blob never unpacks completely).
    """

    def __init__(self, job: LayerJob, cancelled: threading.Event):
        self.job = job
        self.cancelled = cancelled
        self.generation = job.generation
        self.f = open(job.path, "rb")  # noqa: SIM115 - closed by close()
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        job = self.job
        while True:
            with job.cond:
                if job.generation != self.generation:
                    raise RegistryError(f"download of {job.desc.digest} restarted")
                avail = job.written - self.pos
                state = job.state
                if avail <= 0:
                    if state == "done":
                        return 0
                    if state == "failed":
                        raise job.error or RegistryError("download failed")
                    if self.cancelled.is_set():
                        raise Cancelled()
                    job.cond.wait(0.5)
                    continue
            n = self.f.readinto(memoryview(b)[:min(len(b), avail)])
            if n == 0:  # the writer has not flushed what it counted yet
                time.sleep(0.001)
                continue
            self.pos += n
            return n

    def close(self) -> None:
        try:
            self.f.close()
        finally:
            super().close()


class CountingReader(io.RawIOBase):
    """Counts the compressed bytes the unpacker consumes, for "Extracting" progress."""

    def __init__(self, raw, on_read: Callable[[int], None]):
        self.raw = raw
        self.on_read = on_read
        self.n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if hasattr(self.raw, "readinto"):
            n = self.raw.readinto(b)
        else:
            data = self.raw.read(len(b))
            n = len(data)
            b[:n] = data
        if n:
            self.n += n
            self.on_read(self.n)
        return n or 0

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            super().close()


class Puller:
    def __init__(self, graph, config: RegistryConfig, tokens: TokenCache,
                 progress: Callable[[dict], None] | None = None):
        self.graph = graph
        self.store = BlobStore(graph.store)
        self.config = config
        self.tokens = tokens
        self.out = Reporter(progress)
        self.cancelled = threading.Event()
        self.newer = False          # did the last tag pulled get a new image or tag?

    # ---- entry point --------------------------------------------------------------------
    def pull(self, ref: Reference, platform: str | None, creds: dict | None,
             creds_for: Callable[[str], dict | None] = lambda host: None) -> str:
        """Pull `ref`; returns the image id. `creds_for(host)` gives mirrors' credentials."""
        want = mf.parse_platform(platform) if platform else mf.host_platform()
        if ref.digest and ref.tag:
            ref = ref.with_tag(None)
        return self._on_endpoints(ref, creds, creds_for, lambda reg: self._pull_from(
            reg, ref, want, explicit=platform is not None))

    def pull_all(self, ref: Reference, platform: str | None, creds: dict | None,
                 creds_for: Callable[[str], dict | None] = lambda host: None) -> list[str]:
        """`docker pull -a`: every tag the registry lists for the repository, each pulled as
        `pull` does, then one Status line for the repository (dockerd's output). Returns the
        image ids in the registry's tag order."""
        if ref.tag or ref.digest:
            raise InvalidArgument("tag can't be used with --all-tags/-a")
        want = mf.parse_platform(platform) if platform else mf.host_platform()
        return self._on_endpoints(ref, creds, creds_for, lambda reg: self._pull_all_from(
            reg, ref, want, explicit=platform is not None))

    def _on_endpoints(self, ref: Reference, creds: dict | None,
                      creds_for: Callable[[str], dict | None], fn: Callable):
        """`fn(registry)` on the first endpoint (mirrors first) that can answer."""
        last: BaseException | None = None
        for ep in self.config.endpoints(ref.domain):
            c = creds if not ep.mirror else creds_for(ep.auth_host)
            reg = Registry(ep, self.config, c, self.tokens)
            try:
                return fn(reg)
            except _Fallback as fb:
                last = fb.cause
                log.info("pull %s from %s failed, trying the next endpoint: %s", ref, ep,
                         fb.cause)
                continue
            finally:
                reg.close()
        assert last is not None
        raise last

    def _pull_all_from(self, reg: Registry, ref: Reference, want: mf.Platform,
                       explicit: bool) -> list[str]:
        repo = Repository(reg, ref.path, ["pull"])
        try:
            reg.ping()
            tags = repo.tags()
        except ConnectError as e:
            raise _Fallback(e) from None
        except SampanError as e:
            if reg.endpoint.mirror:
                raise _Fallback(e) from None
            if isinstance(e, Unauthorized) and not (
                    reg.auth.has_credentials and "incorrect" in str(e)):
                detail = str(e).split(": ", 1)[-1]
                raise Unauthorized(f"pull access denied for {ref.familiar_name()}, repository "
                                   f"does not exist or may require 'docker login': {detail}"
                                   ) from None
            if isinstance(e, NotFound):
                detail = str(e).split(": ", 1)[-1]
                raise NotFound(f"repository {ref.familiar_name()} not found: {detail}"
                               ) from None
            raise
        ids: list[str] = []
        newer = False
        for tag in tags:
            try:
                tagged = ref.with_tag(tag)
            except SampanError:
                raise RegistryError(f"{ref.familiar_name()}: the registry lists an invalid "
                                    f"tag {tag!r}") from None
            try:
                ids.append(self._pull_from(reg, tagged, want, explicit, final_status=False))
            except _Fallback as fb:
                # tags already pulled from this endpoint: another one would mix sources
                raise fb.cause from None
            newer = newer or self.newer
        what = "Downloaded newer image" if newer else "Image is up to date"
        self.out.plain(f"Status: {what} for {ref.familiar_name()}")
        return ids

    def _pull_from(self, reg: Registry, ref: Reference, want: mf.Platform,
                   explicit: bool, final_status: bool = True) -> str:
        ep: Endpoint = reg.endpoint
        repo = Repository(reg, ref.path, ["pull"])
        try:
            reg.ping()
            top = self._get_manifest(repo, ref, ref.ref, ref.digest)
        except ConnectError as e:
            raise _Fallback(e) from None
        except SampanError as e:
            if ep.mirror:
                raise _Fallback(e) from None
            raise
        self.out.plain(f"Pulling from {ref.path}", ref.digest or ref.tag)
        m = top
        if top.is_index:
            d = mf.select_manifest(top, want)
            if d is None:
                raise NotFound(f"no matching manifest for {want} in the manifest list entries")
            m = self._get_manifest(repo, ref, d.digest, d.digest)
            if m.is_index:
                raise RegistryError(f"{ref.familiar()}: nested index {d.digest} is not "
                                    "supported")
        config_raw = self._get_config(repo, m.config)
        try:
            config = json.loads(config_raw)
        except ValueError as e:
            raise RegistryError(f"{ref.familiar()}: invalid image config: {e}") from None
        have = mf.config_platform(config)
        if explicit and have is not None and not mf.platform_matches(have, want):
            raise NotFound(f"image with reference {ref.familiar()} was found but does not "
                           f"match the specified platform: wanted {want}, actual: {have}")
        diff_ids = ((config.get("rootfs") or {}).get("diff_ids") or []) if isinstance(
            config, dict) else []
        if len(diff_ids) != len(m.layers):
            raise RegistryError(f"{ref.familiar()}: invalid image: the config lists "
                                f"{len(diff_ids)} layers, the manifest {len(m.layers)}")
        old_id = self._resolve(ref)
        chains = chain_ids(diff_ids)
        jobs = [LayerJob(i, d, diff_ids[i], chains[i], chains[i - 1] if i else None)
                for i, d in enumerate(m.layers)]
        lease_name = f"pull-{uuid.uuid4().hex[:16]}"
        with self.graph.lease(lease_name) as lease:
            lease = lease if isinstance(lease, str) else lease_name
            for dgst in {top.digest, m.digest, m.config.digest}:
                self.graph.lease_add(lease, dgst)
            self._layers(repo, jobs, lease)
            # Manifests go in last: a manifest in the store means everything it names is too.
            if m is not top:
                self.store.put(m.raw, m.digest)
            self.store.put(top.raw, top.digest)
            image_id = self.graph.add_image(m.config.digest, m.digest, ref, m.media_type,
                                            index_digest=top.digest if top is not m else None)
        self.out.plain(f"Digest: {top.digest}")
        self.newer = old_id != image_id
        if final_status:
            what = "Downloaded newer image" if self.newer else "Image is up to date"
            self.out.plain(f"Status: {what} for {ref.familiar()}")
        return image_id

    def _resolve(self, ref: Reference) -> str | None:
        try:
            return self.graph.resolve(str(ref))
        except SampanError:
            return None

    # ---- manifests and config -----------------------------------------------------------
    def _get_manifest(self, repo: Repository, ref: Reference, what: str,
                      digest: str | None) -> mf.Manifest:
        try:
            raw, ct, _hdr = repo.get_manifest(what, mf.ACCEPT)
        except NotFound as e:
            detail = str(e).split(": ", 1)[-1]
            raise NotFound(f"manifest for {ref.familiar()} not found: {detail}") from None
        except Unauthorized as e:
            if repo.registry.auth.has_credentials and "incorrect" in str(e):
                raise
            detail = str(e).split(": ", 1)[-1]
            raise Unauthorized(f"pull access denied for {ref.familiar_name()}, repository does "
                               f"not exist or may require 'docker login': {detail}") from None
        if digest:
            mf.verify_digest(raw, digest, ref.familiar())
        return mf.parse_manifest(raw, ct, ref.familiar(), digest)

    def _get_config(self, repo: Repository, desc: mf.Descriptor) -> bytes:
        if self.store.has(desc.digest):
            return self.store.read(desc.digest)
        if desc.size > MAX_CONFIG_SIZE:
            raise RegistryError(f"image config {desc.digest} too large ({desc.size} bytes)")
        resp = repo.get_blob(desc.digest)
        try:
            data = resp.raw.read(desc.size + 1, decode_content=False)
        except _NET_ERRORS as e:
            raise RegistryError(f"image config {desc.digest}: {e}") from None
        finally:
            resp.close()
        if len(data) != desc.size:
            raise RegistryError(f"image config {desc.digest}: size {len(data)} does not match "
                                f"the manifest's {desc.size}")
        mf.verify_digest(data, desc.digest, f"image config {desc.digest}")
        self.store.put(data, desc.digest)
        return data

    # ---- layers -------------------------------------------------------------------------
    def _layers(self, repo: Repository, jobs: list[LayerJob], lease: str) -> None:
        todo: list[LayerJob] = []
        for job in jobs:
            if self.graph.has_layer(job.chain_id):
                job.exists = True
                self.out.status("Already exists", job.desc.short)
            else:
                todo.append(job)
        if not todo:
            return
        downloads: dict[str, LayerJob] = {}
        for job in todo:
            if job.desc.digest in downloads:
                continue
            downloads[job.desc.digest] = job
            self.out.status("Pulling fs layer", job.desc.short)
        workers = max(1, self.config.max_concurrent_downloads)
        for n, job in enumerate(downloads.values()):
            if n >= workers:
                self.out.status("Waiting", job.desc.short)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sampan-pull")
        # With overlay every layer unpacks into a directory of its own (its chain id comes
        # from the config, not from its parent's files), so layers unpack side by side as
        # their downloads arrive; vfs copies the parent first, so there they go in order.
        independent = getattr(getattr(self.graph, "driver", None), "name", "") == "overlay"
        appliers = ThreadPoolExecutor(max_workers=min(len(todo), 8) if independent else 1,
                                      thread_name_prefix="sampan-unpack")
        try:
            futures = [pool.submit(self._download, repo, job, lease)
                       for job in downloads.values()]
            applied = [appliers.submit(self._apply, downloads[job.desc.digest], job, lease)
                       for job in todo]
            wait(applied, return_when=FIRST_EXCEPTION)
            errors = [f.exception() for f in applied if f.done() and f.exception()]
            if errors:
                raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
            for f in applied:
                f.result()
            for f in futures:
                f.result()
        except BaseException as e:
            self.cancelled.set()
            appliers.shutdown(wait=True)
            pool.shutdown(wait=True)
            if isinstance(e, Cancelled):
                for dl in downloads.values():
                    if dl.error is not None and not isinstance(dl.error, Cancelled):
                        raise dl.error from None
                raise RegistryError("pull cancelled") from None
            raise
        finally:
            appliers.shutdown(wait=True)
            pool.shutdown(wait=True)

    def _apply(self, dl: LayerJob, job: LayerJob, lease: str) -> None:
        """Unpack `job` (whose blob `dl` downloads) on top of its parent."""
        with dl.cond:
            while dl.state == "pending" or (dl.state == "downloading" and dl.path is None):
                dl.cond.wait(0.5)
                if self.cancelled.is_set():
                    raise Cancelled()
            state = dl.state
        if state == "failed":
            raise dl.error or RegistryError("download failed")
        if state == "done" or dl is not job:
            self._wait(dl)
            raw = self.store.open(job.desc.digest)
        else:
            try:
                raw = FollowReader(dl, self.cancelled)
            except FileNotFoundError:       # committed (renamed) just now
                self._wait(dl)
                raw = self.store.open(job.desc.digest)
        short, total = job.desc.short, job.desc.size
        stream = CountingReader(raw, lambda n: self.out.update("Extracting", short, n, total))
        try:
            reader = io.BufferedReader(stream, CHUNK)
            # the download verifies the blob digest (FollowReader ends only after it has;
            # a committed blob was verified on commit)
            info = self.graph.apply_layer(job.parent, reader, job.desc.media_type,
                                          expected_diff_id=job.diff_id, lease=lease,
                                          digest=job.desc.digest, digest_verified=True)
            while reader.read(CHUNK):   # the rest (tar padding): verifies the download
                pass
        finally:
            stream.close()
        self._wait(dl)
        got = getattr(info, "chain_id", None)
        if got and got != job.chain_id:
            raise RegistryError(f"layer {job.desc.digest}: chain id {got} does not match the "
                                f"expected {job.chain_id}")
        self.out.status("Pull complete", short)

    def _wait(self, dl: LayerJob) -> None:
        with dl.cond:
            while dl.state not in ("done", "failed"):
                dl.cond.wait(0.5)
                if self.cancelled.is_set():
                    raise Cancelled()
        if dl.state == "failed":
            raise dl.error or RegistryError("download failed")

    def _download(self, repo: Repository, job: LayerJob, lease: str) -> None:
        desc = job.desc
        try:
            self.graph.lease_add(lease, desc.digest)
            self.graph.lease_add(lease, f"ingest:{desc.digest}")   # the partial download
            if self.store.has(desc.digest):
                self.out.status("Download complete", desc.short)
                job.set(state="done", written=desc.size)
                return
            self._fetch(repo, job)
            self.out.status("Download complete", desc.short)
            job.set(state="done")
        except BaseException as e:
            if not isinstance(e, SampanError) and not isinstance(e, Cancelled):
                e = RegistryError(f"{desc.digest}: {e}")
            job.set(state="failed", error=e)
            self.cancelled.set()
            if not isinstance(e, Cancelled):
                raise e from None

    def _fetch(self, repo: Repository, job: LayerJob) -> None:
        desc = job.desc
        size, digest, short = desc.size, desc.digest, desc.short
        w = self._open_writer(digest, size)
        if w is None:           # another pull committed it meanwhile
            return
        offset = w.offset
        if offset > size:
            w.abort()
            w = self.store.writer(digest, size)
            offset = w.offset
        job.set(state="downloading", written=offset, path=w.path)
        attempts = max(1, self.config.max_download_attempts)
        failures = 0
        keep = True
        try:
            while offset < size:
                if self.cancelled.is_set():
                    raise Cancelled()
                resp = None
                start = offset
                try:
                    resp = repo.get_blob(digest, offset)
                    if resp.status_code == 416:
                        # the server has fewer bytes than we think we have: start over
                        resp.close()
                        w.abort()
                        w = self.store.writer(digest, size)
                        offset = w.offset
                        job.set(written=offset, path=w.path, generation=job.generation + 1)
                        failures += 1
                        if failures >= attempts:
                            raise RegistryError(f"blob {digest}: the registry refuses ranges")
                        continue
                    skip = offset if (offset and resp.status_code == 200) else 0
                    if offset and resp.status_code == 206:
                        cr = resp.headers.get("Content-Range", "")
                        if not cr.startswith(f"bytes {offset}-"):
                            skip = -1
                    if skip < 0:
                        raise RegistryError(f"blob {digest}: bad Content-Range {cr!r} for "
                                            f"offset {offset}")
                    for chunk in resp.raw.stream(CHUNK, decode_content=False):
                        if self.cancelled.is_set():
                            raise Cancelled()
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk = chunk[skip:]
                            skip = 0
                        if offset + len(chunk) > size:
                            keep = False
                            raise RegistryError(
                                f"filesystem layer verification failed for digest {digest}: "
                                f"the registry sent more than the {size} bytes expected")
                        w.write(chunk)
                        w.flush()
                        offset += len(chunk)
                        job.set(written=offset)
                        self.out.update("Downloading", short, offset, size)
                except _NET_ERRORS as e:
                    failures += 1 if offset == start else 0
                    if offset == start and failures >= attempts:
                        raise RegistryError(f"blob {digest}: {e}") from None
                    log.info("blob %s: %s at %d/%d bytes; resuming", digest, e, offset, size)
                    self._backoff(failures)
                    continue
                finally:
                    if resp is not None:
                        resp.close()
                if offset < size:
                    failures += 1 if offset == start else 0
                    if failures >= attempts:
                        raise RegistryError(f"blob {digest} truncated: got {offset} of {size} "
                                            "bytes")
                    self._backoff(failures)
            self.out.update("Downloading", short, offset, size, force=True)
            self.out.status("Verifying Checksum", short)
            try:
                w.commit()
            except Exception as e:  # noqa: BLE001 - the store's own error type
                keep = False
                raise RegistryError(f"filesystem layer verification failed for digest "
                                    f"{digest}: {e}") from None
            w = None
        finally:
            if w is not None:
                try:
                    w.close() if keep else w.abort()
                except Exception:
                    log.exception("closing ingest of %s", digest)

    def _open_writer(self, digest: str, size: int) -> Writer | None:
        """The ingest writer for `digest`; waits while another pull holds it."""
        while True:
            try:
                w = self.store.writer(digest, size)
            except Conflict:
                if self.store.has(digest):
                    return None
                if self.cancelled.is_set():
                    raise Cancelled() from None
                time.sleep(0.1)
                continue
            if self.store.has(digest):
                w.abort()
                return None
            return w

    def _backoff(self, n: int) -> None:
        time.sleep(min(self.config.backoff * (2 ** max(0, n - 1)), 4.0))


class _Fallback(Exception):
    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause
