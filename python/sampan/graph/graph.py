"""The graph: images, references, layers and leases over a content store and a storage driver.

On-disk layout under the data root:

    graph.db                     SQLite (WAL): images, refs, manifests, layers, leases, containers
    blobs/sha256/<hex>           the content store (configs, manifests, layer blobs)
    ingest/                      partial blobs (resumable)
    snapshots/<chain-hex>/fs     one unpacked layer per chain id, shared by every image using it
    snapshots/.tmp-*             layers being unpacked or removed (dropped at open)

Crash safety: a layer is unpacked into `snapshots/.tmp-*`, verified, renamed to its chain id
and only then recorded; metadata changes are SQLite transactions; open() drops temporary
directories, snapshot directories nobody recorded, rows whose directory is gone, and the
temporary leases of a process that died.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sampan.errors import Conflict, ImageNotFound, InvalidArgument, NotFound, SampanError

from . import filters as flt
from .content import ContentStore, check_digest, fsync_dir
from .fsutil import remove_detached, rmtree, syncfs
from .metadata import Database
from .unpack import check_media_type, decompressed, unpack_stream

LAYER_MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "bzip2": "application/vnd.oci.image.layer.v1.tar",   # no OCI type; only kept locally
    "xz": "application/vnd.oci.image.layer.v1.tar",
}
INGEST_MAX_AGE = 24 * 3600


@dataclass(frozen=True)
class LayerInfo:
    chain_id: str
    diff_id: str
    size: int
    digest: str | None = None      # the blob it came from (sha256 of the bytes read)
    tar_size: int | None = None    # length of the uncompressed tar


def chain_id(parent: str | None, diff_id: str) -> str:
    if not parent:
        return diff_id
    import hashlib  # here: OpenSSL's libcrypto costs an idle daemon 3.5 MiB

    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def chain_ids(diff_ids: list) -> list:
    out, parent = [], None
    for d in diff_ids:
        parent = chain_id(parent, d)
        out.append(parent)
    return out


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _short(image_id: str) -> str:
    return _hex(image_id)[:12]


def _reference():
    from sampan import reference

    return reference


class _SharedExclusive:
    """Writers of new content share it; garbage collection takes it alone."""

    def __init__(self):
        self.cond = threading.Condition()
        self.shared = 0
        self.exclusive = False

    @contextlib.contextmanager
    def share(self):
        with self.cond:
            while self.exclusive:
                self.cond.wait()
            self.shared += 1
        try:
            yield
        finally:
            with self.cond:
                self.shared -= 1
                self.cond.notify_all()

    @contextlib.contextmanager
    def exclusive_hold(self):
        with self.cond:
            while self.exclusive or self.shared:
                self.cond.wait()
            self.exclusive = True
        try:
            yield
        finally:
            with self.cond:
                self.exclusive = False
                self.cond.notify_all()


class Graph:
    """Images, layers and blobs under one data root. Thread-safe."""

    def __init__(self, data_root, driver: str | None = None, *, sync: bool = True):
        from sampan.drivers.storage import select_driver

        self.root = Path(data_root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.closed = False
        self.sync = sync
        self.store = ContentStore(self.root, sync=sync)
        self.snapshots = self.root / "snapshots"
        self.snapshots.mkdir(exist_ok=True)
        self.db = Database(self.root / "graph.db")
        self._gc_lock = _SharedExclusive()
        recorded = self.db.one("SELECT value FROM meta WHERE key='driver'")
        recorded = recorded["value"] if recorded else None
        if not self.db.one("SELECT 1 FROM layers LIMIT 1"):
            recorded = None       # nothing unpacked yet: any driver will do
        elif driver and recorded and driver.replace("overlay2", "overlay") != recorded:
            raise InvalidArgument(f"the data root {self.root} holds layers of the {recorded} "
                                  f"storage driver, not {driver}")
        self.driver = select_driver(self.snapshots, driver, recorded)
        self.driver_name = self.driver.name
        self.driver_reason = (self.driver.name if not self.driver.reason
                              else f"{self.driver.name}: {self.driver.reason}")
        with self.db.tx() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('driver', ?)",
                      (self.driver_name,))
        self._recover()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> None:
        """Bring the store back to a consistent state after a crash."""
        for entry in os.scandir(self.snapshots):
            if entry.name.startswith((".tmp-", ".probe-", ".del-")):
                # a daemon killed during the overlay probe of its graph open left the probe's
                # overlay mounted on .probe-*/m: rmdir of it is EBUSY (every later open, so
                # every create, failed with a 500)
                if remove_detached(entry.path):
                    logging.getLogger("sampan.graph").warning(
                        "detached the mounts a crash left under %s", entry.path)
        with self.db.tx() as c:
            c.execute("DELETE FROM lease_resources WHERE lease IN "
                      "(SELECT name FROM leases WHERE temporary=1)")
            c.execute("DELETE FROM leases WHERE temporary=1")
            rows = c.query("SELECT chain_id FROM layers")
            known = {_hex(r["chain_id"]) for r in rows}
            for r in rows:
                if not (self._layer_dir(r["chain_id"]) / "fs").is_dir():
                    c.execute("DELETE FROM layers WHERE chain_id=?", (r["chain_id"],))
            self._refresh_refcounts(c)
        for entry in os.scandir(self.snapshots):
            if not entry.name.startswith(".") and entry.name not in known:
                remove_detached(entry.path)
        # Ingests nothing can resume: one whose blob got committed (killed between the rename
        # and the removal of its directory), one without a ref, and the private ones of a load
        # or ingest() that died. Partial downloads (ref = their digest) stay for the next pull.
        for ing in self.store.ingests():
            ref, expected = ing["ref"], ing["expected"]
            try:
                dead = (not ref or ref.startswith(("load-", "ingest-"))
                        or bool(expected and self.store.exists(expected)))
            except InvalidArgument:     # a garbled ref file
                dead = True
            if dead and not self.store.ingest_locked(ing["dir"]):
                self.store.remove_ingest(ing["dir"])

    def check(self) -> list:
        """Problems found in the store (empty when consistent): for tests and diagnostics."""
        problems = []
        rows = self.db.query("SELECT * FROM layers")
        chains = {r["chain_id"] for r in rows}
        for r in rows:
            if not (self._layer_dir(r["chain_id"]) / "fs").is_dir():
                problems.append(f"layer {r['chain_id']}: directory missing")
            want = self.db.one(
                "SELECT (SELECT COUNT(*) FROM image_layers WHERE chain_id=?) + "
                "(SELECT COUNT(*) FROM container_layers WHERE chain_id=?) AS n",
                (r["chain_id"], r["chain_id"]))["n"]
            if want != r["refcount"]:
                problems.append(f"layer {r['chain_id']}: refcount {r['refcount']}, "
                                f"expected {want}")
        for entry in os.scandir(self.snapshots):
            if entry.name.startswith("."):
                problems.append(f"snapshots/{entry.name}: leftover")
            elif "sha256:" + entry.name not in chains:
                problems.append(f"snapshots/{entry.name}: not recorded")
        for r in self.db.query("SELECT * FROM images"):
            if not self.store.exists(r["id"]):
                problems.append(f"image {r['id']}: config blob missing")
            config = json.loads(self.store.read(r["id"])) if self.store.exists(r["id"]) else {}
            diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
            if self._chains(r["id"]) != chain_ids(diff_ids):
                problems.append(f"image {r['id']}: layer list does not match its config")
            for ch in self._chains(r["id"]):
                if ch not in chains:
                    problems.append(f"image {r['id']}: layer {ch} missing")
        for r in self.db.query("SELECT * FROM refs"):
            if not self.db.one("SELECT 1 FROM images WHERE id=?", (r["image_id"],)):
                problems.append(f"ref {r['name']}: image {r['image_id']} missing")
        for r in self.db.query("SELECT * FROM manifests"):
            if not self.store.exists(r["digest"]):
                problems.append(f"manifest {r['digest']}: blob missing")
        return problems

    @staticmethod
    def _refresh_refcounts(c, chains=None) -> None:
        sql = ("UPDATE layers SET refcount = "
               "(SELECT COUNT(*) FROM image_layers il WHERE il.chain_id = layers.chain_id) + "
               "(SELECT COUNT(*) FROM container_layers cl WHERE cl.chain_id = layers.chain_id)")
        if chains is None:
            c.execute(sql)
        else:
            for ch in set(chains):
                c.execute(sql + " WHERE chain_id = ?", (ch,))

    # ------------------------------------------------------------------ leases

    @contextlib.contextmanager
    def lease(self, name: str | None = None):
        name = name or f"lease-{uuid.uuid4().hex}"
        with self.db.tx() as c:
            if c.one("SELECT 1 FROM leases WHERE name=?", (name,)):
                raise Conflict(f"lease {name!r} already exists")
            c.execute("INSERT INTO leases (name, created, temporary) VALUES (?, ?, 1)",
                      (name, time.time()))
        try:
            yield name
        finally:
            # A graph closed meanwhile drops it at the next open, like a crashed holder's.
            if not self.closed:
                with self.db.tx() as c:
                    c.execute("DELETE FROM lease_resources WHERE lease=?", (name,))
                    c.execute("DELETE FROM leases WHERE name=?", (name,))

    def lease_add(self, lease: str, resource: str) -> None:
        with self.db.tx() as c:
            self._lease_add(c, lease, resource)

    @staticmethod
    def _lease_add(c, lease: str, resource: str) -> None:
        if not c.one("SELECT 1 FROM leases WHERE name=?", (lease,)):
            raise NotFound(f"lease {lease!r} not found")
        c.execute("INSERT OR IGNORE INTO lease_resources (lease, resource) VALUES (?, ?)",
                  (lease, resource))

    # ------------------------------------------------------------------ layers

    def _layer_dir(self, chain: str) -> Path:
        return self.snapshots / _hex(chain)

    def has_layer(self, chain_id: str) -> bool:
        return self.db.one("SELECT 1 FROM layers WHERE chain_id=?", (chain_id,)) is not None

    def layer(self, chain_id: str) -> LayerInfo:
        r = self.db.one("SELECT * FROM layers WHERE chain_id=?", (chain_id,))
        if r is None:
            raise NotFound(f"layer {chain_id} not found")
        return LayerInfo(r["chain_id"], r["diff_id"], r["size"], r["blob_digest"], r["tar_size"])

    def apply_layer(self, parent_chain_id: str | None, stream: BinaryIO,
                    media_type: str | None = None, expected_diff_id: str | None = None,
                    lease: str | None = None, *, digest: str | None = None,
                    digest_verified: bool = False) -> LayerInfo:
        """Unpack a layer stream on top of `parent_chain_id`, once per chain id.

        `digest_verified`: the caller verifies that the stream's bytes are `digest` (a pull's
        download does, and the stream ends only once it has), so they are not hashed a second
        time here — one sha256 pass less, which a router's CPU feels. The files are checked
        against `expected_diff_id` either way."""
        check_media_type(media_type)
        if expected_diff_id is not None:
            check_digest(expected_diff_id)
        if digest is not None:
            check_digest(digest)
        if parent_chain_id is not None:
            check_digest(parent_chain_id)
        if expected_diff_id is not None:
            chain = chain_id(parent_chain_id, expected_diff_id)
            if lease:
                self.lease_add(lease, chain)
            if self.has_layer(chain):
                return self.layer(chain)
        parent_fs = None
        if parent_chain_id and self.driver.whiteouts == "delete":
            if not self.has_layer(parent_chain_id):
                raise NotFound(f"parent layer {parent_chain_id} is not unpacked (the vfs driver "
                               "copies it)")
            parent_fs = self._layer_dir(parent_chain_id) / "fs"
        with self._gc_lock.share():
            tmp = self.snapshots / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir(mode=0o700)
            final = None
            try:
                fs = tmp / "fs"
                self.driver.new_layer(parent_fs, fs)
                trusted = digest_verified and digest is not None
                res = unpack_stream(stream, fs, media_type, self.driver.whiteouts,
                                    None if trusted else
                                    digest.split(":", 1)[0] if digest else "sha256")
                if trusted:
                    res["digest"] = digest
                if expected_diff_id is not None and res["diff_id"] != expected_diff_id:
                    raise InvalidArgument(f"layer diff id mismatch: expected {expected_diff_id},"
                                          f" got {res['diff_id']}")
                if digest is not None and res["digest"] != digest:
                    raise InvalidArgument(f"layer blob digest mismatch: expected {digest}, got "
                                          f"{res['digest']}")
                chain = chain_id(parent_chain_id, res["diff_id"])
                if self.sync:
                    fd = os.open(fs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        syncfs(fd)
                    finally:
                        os.close(fd)
                mt = media_type or LAYER_MEDIA_TYPES[res["compression"]]
                with self.db.tx() as c:
                    if lease:
                        self._lease_add(c, lease, chain)
                    self._add_layer_blob(c, res["diff_id"], res["digest"], mt,
                                         res["blob_size"])
                    if c.one("SELECT 1 FROM layers WHERE chain_id=?", (chain,)):
                        rmtree(tmp)
                        r = c.one("SELECT * FROM layers WHERE chain_id=?", (chain,))
                        return LayerInfo(chain, r["diff_id"], r["size"], res["digest"],
                                         r["tar_size"])
                    if self._layer_dir(chain).exists():
                        rmtree(self._layer_dir(chain))     # unrecorded: a crash's leftover
                    final = self._layer_dir(chain)
                    os.rename(tmp, final)
                    fsync_dir(self.snapshots)
                    c.execute("INSERT INTO layers (chain_id, diff_id, parent, size, tar_size, "
                              "blob_digest, media_type, refcount, created) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                              (chain, res["diff_id"], parent_chain_id, res["size"],
                               res["tar_size"], res["digest"], mt, time.time()))
                return LayerInfo(chain, res["diff_id"], res["size"], res["digest"],
                                 res["tar_size"])
            except BaseException:
                rmtree(tmp)
                if final is not None:      # renamed but not recorded: the tx rolled back
                    rmtree(final)
                raise

    @staticmethod
    def _add_layer_blob(c, diff_id: str, digest: str, media_type: str | None,
                        size: int | None) -> None:
        c.execute("INSERT OR IGNORE INTO layer_blobs (diff_id, digest, media_type, size) "
                  "VALUES (?, ?, ?, ?)", (diff_id, digest, media_type, size))
        if size is not None:
            c.execute("UPDATE layer_blobs SET size=? WHERE diff_id=? AND digest=? AND "
                      "size IS NULL", (size, diff_id, digest))

    def add_layer_blob(self, diff_id: str, digest: str, media_type: str | None = None,
                       size: int | None = None) -> None:
        """Record that the blob `digest` holds the layer `diff_id` (for save and push)."""
        check_digest(diff_id)
        check_digest(digest)
        with self.db.tx() as c:
            self._add_layer_blob(c, diff_id, digest, media_type, size)

    def open_diff(self, diff_id: str):
        """The uncompressed tar of a layer, read from a stored blob that holds it."""
        for r in self.db.query("SELECT digest, media_type FROM layer_blobs WHERE diff_id=? "
                               "ORDER BY (digest = diff_id) DESC", (diff_id,)):
            try:
                f = self.store.open(r["digest"])
            except NotFound:
                continue
            reader, _ = decompressed(f)
            return _DiffReader(reader, f)
        raise NotFound(f"no stored blob holds the layer {diff_id}")

    # ------------------------------------------------------------------ images

    def add_image(self, config_digest: str, manifest_digest: str | None = None, ref=None,
                  manifest_media_type: str | None = None, *,
                  index_digest: str | None = None, parent: str | None = None) -> str:
        check_digest(config_digest)
        try:
            config = json.loads(self.store.read(config_digest))
        except ValueError as exc:
            raise InvalidArgument(f"image config {config_digest} is not JSON: {exc}") from None
        if not isinstance(config, dict):
            raise InvalidArgument(f"image config {config_digest} is not a JSON object")
        rootfs = config.get("rootfs") if isinstance(config.get("rootfs"), dict) else {}
        if rootfs.get("type", "layers") != "layers":
            raise InvalidArgument(f"image config {config_digest}: unsupported rootfs type "
                                  f"{rootfs.get('type')!r}")
        diff_ids = rootfs.get("diff_ids") or []
        if not isinstance(diff_ids, list):
            raise InvalidArgument(f"image config {config_digest}: rootfs.diff_ids is not a list")
        for d in diff_ids:
            check_digest(d)
        chains = chain_ids(diff_ids)
        manifest_layers = None
        if manifest_digest is not None:
            check_digest(manifest_digest)
            try:
                manifest = json.loads(self.store.read(manifest_digest))
            except ValueError as exc:
                raise InvalidArgument(f"manifest {manifest_digest} is not JSON: {exc}") from None
            manifest_media_type = manifest_media_type or manifest.get("mediaType")
            layers = manifest.get("layers")
            if isinstance(layers, list) and len(layers) == len(diff_ids):
                manifest_layers = layers
        if index_digest is not None:
            check_digest(index_digest)
            if not self.store.exists(index_digest):
                raise NotFound(f"index blob {index_digest} not found")
        if isinstance(ref, str):
            ref = _reference().parse(ref)
        image_id = config_digest
        cfg = config.get("config") if isinstance(config.get("config"), dict) else {}
        labels = cfg.get("Labels") if isinstance(cfg.get("Labels"), dict) else {}
        with self.db.tx() as c:
            layers = []
            for ch in chains:
                r = c.one("SELECT size FROM layers WHERE chain_id=?", (ch,))
                if r is None:
                    raise NotFound(f"layer {ch} of image {image_id} is not unpacked")
                layers.append(r)
            now = time.time()
            if not c.one("SELECT 1 FROM images WHERE id=?", (image_id,)):
                c.execute("INSERT INTO images (id, parent, created, size, labels, top_chain, "
                          "added) VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (image_id, parent or "", flt.parse_time(config.get("created")),
                           sum(r["size"] for r in layers), json.dumps(labels),
                           chains[-1] if chains else None, now))
                c.executemany("INSERT INTO image_layers (image_id, idx, chain_id) "
                              "VALUES (?, ?, ?)",
                              [(image_id, i, ch) for i, ch in enumerate(chains)])
                self._refresh_refcounts(c, chains)
            if manifest_digest is not None:
                c.execute("INSERT OR IGNORE INTO manifests (digest, image_id, media_type, kind) "
                          "VALUES (?, ?, ?, 'manifest')",
                          (manifest_digest, image_id, manifest_media_type))
                for d, desc in zip(diff_ids, manifest_layers or []):
                    if isinstance(desc, dict) and isinstance(desc.get("digest"), str):
                        try:
                            check_digest(desc["digest"])
                        except InvalidArgument:
                            continue
                        self._add_layer_blob(c, d, desc["digest"], desc.get("mediaType"),
                                             desc.get("size"))
            if index_digest is not None:
                c.execute("INSERT OR IGNORE INTO manifests (digest, image_id, media_type, kind) "
                          "VALUES (?, ?, NULL, 'index')", (index_digest, image_id))
            if ref is not None:
                if ref.tag is not None:
                    self._set_ref(c, ref.with_digest(None), "tag", image_id)
                d = index_digest or manifest_digest or ref.digest
                if d is not None:
                    self._set_ref(c, ref.repo().with_digest(d), "digest", image_id)
        return image_id

    def _set_ref(self, c, ref, kind: str, image_id: str) -> None:
        now = time.time()
        c.execute("INSERT OR REPLACE INTO refs (name, repo, kind, image_id, created) "
                  "VALUES (?, ?, ?, ?, ?)", (str(ref), ref.name(), kind, image_id, now))
        if kind == "tag":
            c.execute("UPDATE images SET last_tag_time=? WHERE id=?", (now, image_id))

    def tag(self, image: str, ref) -> None:
        reference = _reference()
        if isinstance(ref, str):
            ref = reference.parse(ref)
        if ref.digest is not None:
            raise InvalidArgument("refusing to create a tag with a digest reference")
        if ref.tag is None:
            ref = ref.with_tag("latest")
        image_id = self.resolve(image)
        with self.db.tx() as c:
            self._set_ref(c, ref, "tag", image_id)

    def tags_of(self, repo: str) -> list:
        """[(fully qualified "repo:tag", image id)] of one repository ("docker.io/library/x")."""
        return [(r["name"], r["image_id"]) for r in self.db.query(
            "SELECT name, image_id FROM refs WHERE repo=? AND kind='tag' ORDER BY name",
            (repo,))]

    def resolve(self, name: str) -> str:
        """A reference, full id or unique id prefix → the image id; ImageNotFound otherwise."""
        reference = _reference()
        if not isinstance(name, str) or not name:
            raise ImageNotFound(f"No such image: {name}")
        if reference.is_image_id(name):
            image_id = name if name.startswith("sha256:") else "sha256:" + name
            if self.db.one("SELECT 1 FROM images WHERE id=?", (image_id,)):
                return image_id
            raise ImageNotFound(f"No such image: {name}")
        error = None
        try:
            ref = reference.parse(name)
        except SampanError as exc:
            ref, error = None, exc
        if ref is not None:
            key = str(ref.repo().with_digest(ref.digest)) if ref.digest else str(ref)
            r = self.db.one("SELECT image_id FROM refs WHERE name=?", (key,))
            if r is not None:
                return r["image_id"]
        if reference.is_id_prefix(name):
            prefix = name if name.startswith("sha256:") else "sha256:" + name
            rows = self.db.query("SELECT id FROM images WHERE substr(id, 1, ?) = ? LIMIT 2",
                                 (len(prefix), prefix))
            if len(rows) == 1:
                return rows[0]["id"]
            if len(rows) > 1:
                raise InvalidArgument(f"multiple IDs found with provided prefix: {name}")
        if error is not None:
            raise error
        raise ImageNotFound(f"No such image: {name}")

    def _image_row(self, image_id: str):
        r = self.db.one("SELECT * FROM images WHERE id=?", (image_id,))
        if r is None:
            raise ImageNotFound(f"No such image: {image_id}")
        return r

    def _config(self, image_id: str) -> dict:
        try:
            return json.loads(self.store.read(image_id))
        except NotFound:
            raise SampanError(f"image {image_id}: its config blob is missing") from None

    def _refs(self, image_id: str | None = None) -> dict:
        """{image id: {"tags": [familiar], "digests": [familiar]}} (one image or all)."""
        reference = _reference()
        sql = "SELECT name, kind, image_id FROM refs"
        args = ()
        if image_id is not None:
            sql += " WHERE image_id=?"
            args = (image_id,)
        out: dict = {}
        for r in self.db.query(sql + " ORDER BY created, name", args):
            entry = out.setdefault(r["image_id"], {"tags": [], "digests": [], "refs": []})
            ref = reference.parse(r["name"])
            entry["refs"].append(ref)
            entry["tags" if r["kind"] == "tag" else "digests"].append(ref.familiar())
        return out

    def _chains(self, image_id: str) -> list:
        return [r["chain_id"] for r in self.db.query(
            "SELECT chain_id FROM image_layers WHERE image_id=? ORDER BY idx", (image_id,))]

    def layer_dirs(self, image: str) -> list:
        image_id = self.resolve(image)
        return [self._layer_dir(ch) / "fs" for ch in reversed(self._chains(image_id))]

    def image_record(self, name: str) -> dict:
        image_id = self.resolve(name)
        refs = self._refs(image_id).get(image_id, {"tags": [], "digests": []})
        layers = []
        for ch in self._chains(image_id):
            r = self.db.one("SELECT * FROM layers WHERE chain_id=?", (ch,))
            blobs = [{"digest": b["digest"], "media_type": b["media_type"], "size": b["size"]}
                     for b in self.db.query("SELECT * FROM layer_blobs WHERE diff_id=?",
                                            (r["diff_id"],))
                     if self.store.exists(b["digest"])]
            for b in blobs:
                if b["size"] is None:
                    b["size"] = self.store.size(b["digest"])
            layers.append({"chain_id": ch, "diff_id": r["diff_id"], "size": r["size"],
                           "tar_size": r["tar_size"], "blobs": blobs})
        manifests = [{"digest": m["digest"], "media_type": m["media_type"], "kind": m["kind"]}
                     for m in self.db.query("SELECT * FROM manifests WHERE image_id=?",
                                            (image_id,))]
        return {"id": image_id, "config_digest": image_id, "manifests": manifests,
                "layers": layers, "repo_tags": refs["tags"], "repo_digests": refs["digests"]}

    # ------------------------------------------------------------------ listing

    def _summaries(self) -> list:
        refs = self._refs()
        containers = {}
        for r in self.db.query("SELECT image_id, COUNT(*) AS n FROM containers "
                               "GROUP BY image_id"):
            containers[r["image_id"]] = r["n"]
        out = []
        for r in self.db.query("SELECT * FROM images"):
            ref = refs.get(r["id"], {"tags": [], "digests": [], "refs": []})
            out.append({"row": r, "refs": ref, "containers": containers.get(r["id"], 0)})
        return out

    @staticmethod
    def _summary(item: dict, tags=None, digests=None) -> dict:
        r = item["row"]
        return {
            "Id": r["id"],
            "ParentId": r["parent"] or "",
            "RepoTags": list(item["refs"]["tags"] if tags is None else tags),
            "RepoDigests": list(item["refs"]["digests"] if digests is None else digests),
            "Created": int(r["created"]),
            "Size": r["size"],
            "SharedSize": -1,
            "VirtualSize": r["size"],
            "Labels": json.loads(r["labels"]) or {},
            "Containers": -1,
        }

    def list(self, all: bool = False, filters=None) -> list:
        f = flt.normalize(filters, {"reference", "dangling", "label", "before", "since",
                                    "until"})
        dangling = flt.bool_filter(f, "dangling")
        before = min((self._created(v) for v in f.get("before", [])), default=None)
        since = max((self._created(v) for v in f.get("since", [])), default=None)
        until = None
        if f.get("until"):
            until = min(flt.parse_timestamp(v) for v in f["until"])
        for p in f.get("reference", []):
            flt.glob_to_regex(p)
        items = self._summaries()
        parents = {it["row"]["parent"] for it in items if it["row"]["parent"]}
        out = []
        for it in items:
            r = it["row"]
            tags, digests = it["refs"]["tags"], it["refs"]["digests"]
            if dangling is True and tags:
                continue
            if dangling is False and not tags:
                continue
            if f.get("label") and not flt.labels_match(json.loads(r["labels"]), f["label"]):
                continue
            if before is not None and not r["created"] < before:
                continue
            if since is not None and not r["created"] > since:
                continue
            if until is not None and not r["created"] < until:
                continue
            if f.get("reference"):
                keep = []
                for ref in it["refs"]["refs"]:
                    if any(flt.familiar_match(p, ref.familiar(), ref.familiar_name())
                           for p in f["reference"]):
                        keep.append(ref)
                if not keep:
                    continue
                tags = [x.familiar() for x in keep if x.digest is None]
                digests = [x.familiar() for x in keep if x.digest is not None]
            if not all and not tags and not digests and r["id"] in parents:
                continue  # an intermediate image
            out.append(self._summary(it, tags, digests))
        out.sort(key=lambda s: (-s["Created"], s["Id"]))
        return out

    def _created(self, name: str) -> float:
        return self._image_row(self.resolve(name))["created"]

    def inspect(self, name: str) -> dict:
        image_id = self.resolve(name)
        r = self._image_row(image_id)
        config = self._config(image_id)
        refs = self._refs(image_id).get(image_id, {"tags": [], "digests": []})
        layer_dirs = [self._layer_dir(ch) / "fs" for ch in reversed(self._chains(image_id))]
        rootfs = config.get("rootfs") or {}
        out = {
            "Id": image_id,
            "RepoTags": refs["tags"],
            "RepoDigests": refs["digests"],
            "Parent": r["parent"] or "",
            "Comment": config.get("comment", ""),
            "Created": config.get("created") or flt.ZERO_TIME,
            "Container": config.get("container", ""),
            "ContainerConfig": _container_config(config.get("container_config")),
            "DockerVersion": config.get("docker_version", ""),
            "Author": config.get("author", ""),
            "Config": _container_config(config.get("config")),
            "Architecture": config.get("architecture", ""),
            "Os": config.get("os", ""),
            "Size": r["size"],
            "VirtualSize": r["size"],
            "GraphDriver": {"Name": self.driver_name, "Data": self.driver.data(layer_dirs)},
            "RootFS": {"Type": rootfs.get("type", "layers"),
                       "Layers": list(rootfs.get("diff_ids") or [])},
            "Metadata": {"LastTagTime": (flt.format_time(r["last_tag_time"])
                                         if r["last_tag_time"] else flt.ZERO_TIME)},
        }
        if config.get("variant"):
            out["Variant"] = config["variant"]
        if config.get("os.version"):
            out["OsVersion"] = config["os.version"]
        return out

    def history(self, name: str) -> list:
        image_id = self.resolve(name)
        config = self._config(image_id)
        chains = self._chains(image_id)
        sizes = {}
        for ch in chains:
            row = self.db.one("SELECT size FROM layers WHERE chain_id=?", (ch,))
            sizes[ch] = row["size"] if row else 0
        out = []
        i = 0
        for h in config.get("history") or []:
            if not isinstance(h, dict):
                continue
            size = 0
            if not h.get("empty_layer"):
                if i < len(chains):
                    size = sizes[chains[i]]
                i += 1
            out.append({"Id": "<missing>", "Created": int(flt.parse_time(h.get("created"))),
                        "CreatedBy": h.get("created_by", ""), "Tags": None, "Size": size,
                        "Comment": h.get("comment", "")})
        out.reverse()
        # The topmost entry (and those of local parents) carry the image ids and tags.
        current = image_id
        for entry in out:
            entry["Id"] = current
            tags = self._refs(current).get(current, {"tags": []})["tags"]
            entry["Tags"] = tags or None
            row = self.db.one("SELECT parent FROM images WHERE id=?", (current,))
            if not row or not row["parent"]:
                break
            current = row["parent"]
        return out

    def df(self) -> list:
        """ImageSummary entries with SharedSize and Containers filled in (for /system/df)."""
        counts = {r["chain_id"]: r["n"] for r in self.db.query(
            "SELECT chain_id, COUNT(*) AS n FROM image_layers GROUP BY chain_id")}
        sizes = {r["chain_id"]: r["size"] for r in self.db.query(
            "SELECT chain_id, size FROM layers")}
        out = []
        for it in self._summaries():
            s = self._summary(it)
            chains = self._chains(s["Id"])
            s["SharedSize"] = sum(sizes.get(ch, 0) for ch in chains if counts.get(ch, 0) > 1)
            s["Containers"] = it["containers"]
            out.append(s)
        out.sort(key=lambda s: (-s["Created"], s["Id"]))
        return out

    def layers_size(self) -> int:
        r = self.db.one("SELECT COALESCE(SUM(size), 0) AS n FROM layers")
        return r["n"]

    # ------------------------------------------------------------------ removal

    def remove(self, name: str, force: bool = False, noprune: bool = False) -> list:
        """Docker's image delete: untag by reference, delete by id (see docs)."""
        reference = _reference()
        records: list = []
        image_id = self.resolve(name)
        by_ref = not (reference.is_id_prefix(name)
                      and self._image_id_matches(image_id, name))
        with self._gc_lock.exclusive_hold(), self.db.tx() as c:
            refs = self._ref_rows(c, image_id)
            if by_ref:
                ref = reference.parse(name)
                key = str(ref.repo().with_digest(ref.digest)) if ref.digest else str(ref)
                removed = c.one("SELECT * FROM refs WHERE name=?", (key,))
                c.execute("DELETE FROM refs WHERE name=?", (key,))
                records.append({"Untagged": reference.parse(key).familiar()})
                refs = [x for x in refs if x["name"] != key]
                if removed is not None and removed["kind"] == "tag":
                    same_repo_tag = any(x["kind"] == "tag" and x["repo"] == removed["repo"]
                                        for x in refs)
                    if not same_repo_tag:
                        for x in [x for x in refs if x["kind"] == "digest"
                                  and x["repo"] == removed["repo"]]:
                            c.execute("DELETE FROM refs WHERE name=?", (x["name"],))
                            records.append({"Untagged": reference.parse(x["name"]).familiar()})
                        refs = [x for x in refs if not (x["kind"] == "digest"
                                                        and x["repo"] == removed["repo"])]
                if refs:
                    return records
                users = c.query("SELECT id FROM containers WHERE image_id=?", (image_id,))
                if users and not force:
                    raise Conflict(f'conflict: unable to remove repository reference "{name}" '
                                   f"(must force) - container {users[0]['id'][:12]} is using "
                                   f"its referenced image {_short(image_id)}")
            else:
                if len(refs) > 1 and not force and not _single_repository(refs):
                    raise Conflict(f"conflict: unable to delete {_short(image_id)} (must be "
                                   "forced) - image is referenced in multiple repositories")
            self._delete_image(c, image_id, force, not noprune, records, explicit=True)
        self._collect(records)
        return records

    def _image_id_matches(self, image_id: str, name: str) -> bool:
        prefix = name if name.startswith("sha256:") else "sha256:" + name
        if not image_id.startswith(prefix):
            return False
        # A name that is also a reference that resolves by itself counts as a reference.
        r = None
        try:
            ref = _reference().parse(name)
            r = self.db.one("SELECT 1 FROM refs WHERE name=?", (str(ref),))
        except SampanError:
            pass
        return r is None

    @staticmethod
    def _ref_rows(c, image_id: str) -> list:
        return c.query("SELECT * FROM refs WHERE image_id=? ORDER BY created, name",
                       (image_id,))

    def _delete_image(self, c, image_id: str, force: bool, prune: bool, records: list,
                      explicit: bool) -> bool:
        """Delete one image (and then its untagged parents when `prune`). False on a soft
        conflict of a parent (left alone)."""
        reference = _reference()
        children = c.query("SELECT id FROM images WHERE parent=?", (image_id,))
        if children:
            if not explicit:
                return False
            raise Conflict(f"conflict: unable to delete {_short(image_id)} (cannot be forced) - "
                           "image has dependent child images")
        users = c.query("SELECT id FROM containers WHERE image_id=?", (image_id,))
        if users and not force:
            if not explicit:
                return False
            raise Conflict(f"conflict: unable to delete {_short(image_id)} (must be forced) - "
                           f"image is being used by stopped container {users[0]['id'][:12]}")
        for x in self._ref_rows(c, image_id):
            c.execute("DELETE FROM refs WHERE name=?", (x["name"],))
            records.append({"Untagged": reference.parse(x["name"]).familiar()})
        row = c.one("SELECT parent FROM images WHERE id=?", (image_id,))
        chains = [r["chain_id"] for r in c.query(
            "SELECT chain_id FROM image_layers WHERE image_id=?", (image_id,))]
        c.execute("DELETE FROM image_layers WHERE image_id=?", (image_id,))
        c.execute("DELETE FROM manifests WHERE image_id=?", (image_id,))
        c.execute("DELETE FROM images WHERE id=?", (image_id,))
        self._refresh_refcounts(c, chains)
        records.append({"Deleted": image_id})
        parent = row["parent"] if row else ""
        if prune and parent and c.one("SELECT 1 FROM images WHERE id=?", (parent,)) and \
                not c.one("SELECT 1 FROM refs WHERE image_id=?", (parent,)):
            self._delete_image(c, parent, False, True, records, explicit=False)
        return True

    def prune(self, filters=None) -> dict:
        f = flt.normalize(filters, {"dangling", "until", "label", "label!"})
        dangling = flt.bool_filter(f, "dangling")
        dangling = True if dangling is None else dangling
        until = None
        if f.get("until"):
            until = min(flt.parse_timestamp(v) for v in f["until"])
        records: list = []
        with self._gc_lock.exclusive_hold(), self.db.tx() as c:
            parents = {r["parent"] for r in c.query("SELECT parent FROM images")}
            used = {r["image_id"] for r in c.query("SELECT image_id FROM containers")}
            tagged = {r["image_id"] for r in c.query(
                "SELECT image_id FROM refs WHERE kind='tag'")}
            for r in c.query("SELECT * FROM images ORDER BY created DESC"):
                image_id = r["id"]
                if not c.one("SELECT 1 FROM images WHERE id=?", (image_id,)):
                    continue  # gone with a child
                if image_id in used or image_id in parents:
                    continue
                if dangling and image_id in tagged:
                    continue
                if until is not None and not r["created"] < until:
                    continue
                labels = json.loads(r["labels"])
                if f.get("label") and not flt.labels_match(labels, f["label"]):
                    continue
                if f.get("label!") and any(flt.labels_match(labels, [w]) for w in f["label!"]):
                    continue
                self._delete_image(c, image_id, False, True, records, explicit=False)
        freed = self._collect(records)
        return {"ImagesDeleted": records or None, "SpaceReclaimed": freed}

    # ------------------------------------------------------------------ garbage collection

    def gc(self, ingest_max_age: float = INGEST_MAX_AGE) -> int:
        """Remove layers, blobs and stale ingests that nothing references; bytes freed."""
        return self._collect(None, ingest_max_age)

    def _collect(self, records: list | None, ingest_max_age: float = INGEST_MAX_AGE) -> int:
        freed = 0
        with self._gc_lock.exclusive_hold():
            with self.db.tx() as c:
                leased = {r["resource"] for r in c.query("SELECT resource FROM lease_resources")}
                dead = [r for r in c.query("SELECT chain_id, size FROM layers WHERE refcount=0")
                        if r["chain_id"] not in leased]
                for r in dead:
                    c.execute("DELETE FROM layers WHERE chain_id=?", (r["chain_id"],))
                c.execute("DELETE FROM layer_blobs WHERE diff_id NOT IN "
                          "(SELECT diff_id FROM layers)")
                keep = set(leased)
                keep.update(r["id"] for r in c.query("SELECT id FROM images"))
                keep.update(r["digest"] for r in c.query("SELECT digest FROM manifests"))
                keep.update(r["digest"] for r in c.query("SELECT digest FROM layer_blobs"))
            for r in dead:
                d = self._layer_dir(r["chain_id"])
                if d.exists():
                    trash = self.snapshots / f".del-{uuid.uuid4().hex}"
                    os.rename(d, trash)
                    rmtree(trash)
                freed += r["size"]
                if records is not None:
                    records.append({"Deleted": r["chain_id"]})
            for digest, size in list(self.store.blobs()):
                if digest not in keep and self.store.delete(digest) and records is None:
                    freed += size
            now = time.time()
            for ing in self.store.ingests():
                if f"ingest:{ing['ref']}" in leased or self.store.ingest_locked(ing["dir"]):
                    continue
                if now - ing["updated"] >= ingest_max_age:
                    freed += self.store.remove_ingest(ing["dir"])
        return freed

    # ------------------------------------------------------------------ containers

    def prepare(self, image: str, container_id: str, container_dir) -> Path:
        """Record that a container uses `image` and lay out its rootfs; the rootfs path."""
        image_id = self.resolve(image)
        chains = self._chains(image_id)
        with self.db.tx() as c:
            row = c.one("SELECT image_id FROM containers WHERE id=?", (container_id,))
            if row is not None and row["image_id"] != image_id:
                raise Conflict(f"container {container_id} already uses image {row['image_id']}")
            c.execute("INSERT OR REPLACE INTO containers (id, image_id, dir, created) "
                      "VALUES (?, ?, ?, ?)", (container_id, image_id, str(container_dir),
                                              time.time()))
            c.executemany("INSERT OR IGNORE INTO container_layers (container_id, chain_id) "
                          "VALUES (?, ?)", [(container_id, ch) for ch in chains])
            c.execute("UPDATE images SET last_used=? WHERE id=?", (time.time(), image_id))
            self._refresh_refcounts(c, chains)
        try:
            return self.driver.prepare([self._layer_dir(ch) / "fs" for ch in reversed(chains)],
                                       Path(container_dir))
        except BaseException:
            self.release(container_id, remove=True)
            raise

    def release(self, container_id: str, remove: bool = True) -> None:
        """Undo `prepare`: unmount, and with `remove` delete the container's layer and record."""
        row = self.db.one("SELECT * FROM containers WHERE id=?", (container_id,))
        if row is None:
            raise NotFound(f"No such container: {container_id}")
        self.driver.release(Path(row["dir"]), remove=remove)
        if remove:
            with self.db.tx() as c:
                chains = [r["chain_id"] for r in c.query(
                    "SELECT chain_id FROM container_layers WHERE container_id=?",
                    (container_id,))]
                c.execute("DELETE FROM container_layers WHERE container_id=?", (container_id,))
                c.execute("DELETE FROM containers WHERE id=?", (container_id,))
                self._refresh_refcounts(c, chains)
            if not self.db.one("SELECT 1 FROM images WHERE id=?", (row["image_id"],)):
                self._collect(None)

    # ------------------------------------------------------------------ archives

    def save(self, names: list) -> Iterator[bytes]:
        from .archive import save

        return save(self, names)

    def load(self, stream: BinaryIO) -> list:
        from .archive import load

        return load(self, stream)


class _DiffReader:
    def __init__(self, reader, f):
        self.reader = reader
        self.f = f

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            chunks = []
            while True:
                b = self.reader.read(1 << 20)
                if not b:
                    return b"".join(chunks)
                chunks.append(b)
        return self.reader.read(n)

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _single_repository(refs) -> bool:
    """Docker's isSingleReference: at most one tag, and every digest ref in its repository."""
    tags = [r for r in refs if r["kind"] == "tag"]
    if len(tags) > 1:
        return False
    repo = tags[0]["repo"] if tags else refs[0]["repo"]
    return all(r["repo"] == repo for r in refs)


_CONFIG_DEFAULTS = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
    "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
    "StdinOnce": False, "Env": None, "Cmd": None, "Image": "", "Volumes": None,
    "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
}


def _container_config(cfg) -> dict | None:
    if not isinstance(cfg, dict):
        return None
    out = dict(_CONFIG_DEFAULTS)
    out.update(cfg)
    return out
