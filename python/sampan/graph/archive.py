"""docker save / docker load archives.

`save` writes what docker 25+ writes: an OCI image layout that is also a docker-archive —

    oci-layout, index.json, blobs/sha256/<hex> (configs, uncompressed layer tars, OCI manifests),
    manifest.json [{"Config": "blobs/sha256/<config>", "RepoTags": [...],
                    "Layers": ["blobs/sha256/<diff id>", ...]}]

`load` reads that, the older layout (`<config hex>.json`, `<id>/layer.tar`, symlinked
duplicate layers) and plain OCI layouts without manifest.json; the archive may be compressed
(gzip, zstd, bzip2, xz). Layers are verified against the config's diff ids.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
import time
import uuid
from collections.abc import Iterator

from sampan.errors import InvalidArgument, NotFound

from .content import check_digest
from .graph import chain_id
from .tarstream import TarReader
from .unpack import CHUNK, HashReader, decompressed

_MEMORY_NAMES = {"manifest.json", "index.json", "oci-layout", "repositories"}
_MAX_JSON = 64 << 20
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


# --------------------------------------------------------------------------- save


def _header(name: str, size: int, mtime: float, kind=tarfile.REGTYPE, mode: int = 0o644) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size = size if kind == tarfile.REGTYPE else 0
    ti.type = kind
    ti.mode = mode
    ti.mtime = int(mtime)
    return ti.tobuf(format=tarfile.PAX_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % 512)


def _resolve_names(graph, names: list) -> list:
    """[(image id, [familiar tags])] in the order asked, docker's rules for each name."""
    from sampan import reference

    order: list = []
    tags: dict = {}

    def add(image_id, tag=None):
        if image_id not in tags:
            order.append(image_id)
            tags[image_id] = []
        if tag and tag not in tags[image_id]:
            tags[image_id].append(tag)

    for name in names:
        ref = None
        try:
            ref = reference.parse(name, default_tag=None)
        except InvalidArgument:
            pass
        if ref is not None and ref.tag is None and ref.digest is None:
            rows = graph.db.query("SELECT name, image_id FROM refs WHERE repo=? AND kind='tag' "
                                  "ORDER BY name", (ref.name(),))
            if rows:
                for r in rows:
                    add(r["image_id"], reference.parse(r["name"]).familiar())
                continue
        image_id = graph.resolve(name)
        if ref is not None and ref.tag is not None and ref.digest is None and \
                not name.startswith("sha256:"):
            row = graph.db.one("SELECT 1 FROM refs WHERE name=?", (str(ref),))
            add(image_id, ref.familiar() if row else None)
        else:
            add(image_id)
    return [(i, tags[i]) for i in order]


def save(graph, names: list) -> Iterator[bytes]:
    if not names:
        raise InvalidArgument("no image names given to save")
    images = _resolve_names(graph, names)
    # Check everything before the first byte goes out.
    plan = []
    for image_id, tags in images:
        config = graph.store.read(image_id)
        layers = []
        for ch in graph._chains(image_id):
            r = graph.db.one("SELECT diff_id, tar_size FROM layers WHERE chain_id=?", (ch,))
            with graph.open_diff(r["diff_id"]):
                pass
            layers.append((r["diff_id"], r["tar_size"]))
        created = graph._image_row(image_id)["created"]
        plan.append((image_id, tags, config, layers, created))
    return _save_stream(graph, plan)


def _save_stream(graph, plan) -> Iterator[bytes]:
    now = time.time()
    written = set()
    yield _header("blobs/", 0, now, tarfile.DIRTYPE, 0o755)
    yield _header("blobs/sha256/", 0, now, tarfile.DIRTYPE, 0o755)
    manifest_json = []
    index = {"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": []}
    for image_id, tags, config, layers, created in plan:
        mtime = created or now
        descs = []
        for diff_id, tar_size in layers:
            name = f"blobs/sha256/{diff_id.split(':', 1)[1]}"
            if tar_size is None:
                tar_size = _measure(graph, diff_id)
            descs.append({"mediaType": _OCI_LAYER, "digest": diff_id, "size": tar_size})
            if diff_id in written:
                continue
            written.add(diff_id)
            yield _header(name, tar_size, mtime)
            with graph.open_diff(diff_id) as f:
                h = HashReader(f)
                left = tar_size
                while left > 0:
                    chunk = h.read(min(CHUNK, left))
                    if not chunk:
                        raise InvalidArgument(f"layer {diff_id}: stored blob is shorter than "
                                              "recorded")
                    left -= len(chunk)
                    yield chunk
                if h.digest() != diff_id:
                    raise InvalidArgument(f"layer {diff_id}: stored blob does not match")
            yield _pad(tar_size)
        if image_id not in written:
            written.add(image_id)
            yield _header(f"blobs/sha256/{image_id.split(':', 1)[1]}", len(config), mtime)
            yield config + _pad(len(config))
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": _OCI_MANIFEST,
            "config": {"mediaType": _OCI_CONFIG, "digest": image_id, "size": len(config)},
            "layers": descs,
        }, separators=(",", ":")).encode()
        from .content import sha256_digest

        mdigest = sha256_digest(manifest)
        if mdigest not in written:
            written.add(mdigest)
            yield _header(f"blobs/sha256/{mdigest.split(':', 1)[1]}", len(manifest), mtime)
            yield manifest + _pad(len(manifest))
        entry = {"mediaType": _OCI_MANIFEST, "digest": mdigest, "size": len(manifest)}
        if tags:
            from sampan import reference

            for t in tags:
                ref = reference.parse(t)
                index["manifests"].append(dict(entry, annotations={
                    "io.containerd.image.name": str(ref),
                    "org.opencontainers.image.ref.name": ref.tag or "latest"}))
        else:
            index["manifests"].append(entry)
        manifest_json.append({
            "Config": f"blobs/sha256/{image_id.split(':', 1)[1]}",
            "RepoTags": tags or None,
            "Layers": [f"blobs/sha256/{d['digest'].split(':', 1)[1]}" for d in descs],
        })
    for name, data in (("index.json", json.dumps(index).encode()),
                       ("manifest.json", json.dumps(manifest_json).encode()),
                       ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')):
        yield _header(name, len(data), now)
        yield data + _pad(len(data))
    yield b"\0" * 1024


def _measure(graph, diff_id: str) -> int:
    n = 0
    with graph.open_diff(diff_id) as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                return n
            n += len(b)


# --------------------------------------------------------------------------- load


def _norm(name: str) -> str:
    if name.startswith("/"):
        raise InvalidArgument(f"archive member {name!r}: absolute path refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"archive member {name!r}: '..' refused")
    return "/".join(parts)


def load(graph, stream) -> list:
    from sampan import reference

    reader, _ = decompressed(stream)
    messages: list = []
    with graph.lease() as lease:
        try:
            files = _read_members(graph, reader, lease)
        finally:
            release = getattr(reader, "release", None)   # a decompressing child process
            if release is not None:
                release()

        def lookup(path: str):
            path = _norm(path)
            for _ in range(16):
                kind = files.get(path)
                if kind is None:
                    raise InvalidArgument(f"archive: {path} is missing")
                if kind[0] != "link":
                    return kind
                path = kind[1]
            raise InvalidArgument(f"archive: too many links at {path}")

        def blob(path: str) -> str:
            kind = lookup(path)
            if kind[0] == "mem":
                with graph._gc_lock.share():
                    digest = graph.store.put(kind[1])
                    graph.lease_add(lease, digest)
                return digest
            return kind[1]

        entries = _manifest_entries(files, lookup, graph)
        for entry in entries:
            config_digest = blob(entry["Config"])
            try:
                config = json.loads(graph.store.read(config_digest))
            except ValueError:
                raise InvalidArgument(f"archive: {entry['Config']} is not a JSON config") \
                    from None
            diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
            layer_paths = entry.get("Layers") or []
            if len(diff_ids) != len(layer_paths):
                raise InvalidArgument(f"archive: {len(layer_paths)} layers listed but the config "
                                      f"has {len(diff_ids)} diff ids")
            parent = None
            for diff_id, path in zip(diff_ids, layer_paths):
                digest = blob(path)
                chain = chain_id(parent, diff_id)
                graph.lease_add(lease, chain)
                if not graph.has_layer(chain):
                    with graph.store.open(digest) as f:
                        graph.apply_layer(parent, f, None, expected_diff_id=diff_id,
                                          lease=lease, digest=(digest if digest.startswith(
                                              "sha256:") else None))
                else:
                    graph.add_layer_blob(diff_id, digest, None, graph.store.size(digest))
                parent = chain
            image_id = graph.add_image(config_digest, None, None)
            tags = entry.get("RepoTags") or []
            for t in tags:
                ref = reference.parse(t)
                try:
                    old = graph.resolve(str(ref))
                except NotFound:
                    old = None
                if old and old != image_id:
                    messages.append(f"The image {ref.familiar()} already exists, renaming the "
                                    f"old one with ID {old} to empty string")
                graph.tag(image_id, ref)
                messages.append(f"Loaded image: {ref.familiar()}")
            if not tags:
                messages.append(f"Loaded image ID: {image_id}")
    return messages


def _read_members(graph, reader, lease: str) -> dict:
    """Stream the archive: blobs into the store (leased), small JSON files into memory.

    Returns {path: ("blob", digest) | ("mem", bytes) | ("link", path)}.
    """
    files: dict = {}
    tar = TarReader(reader, "archive member")
    for m in tar:
        name = _norm(m.name)
        if m.isreg():
            files[name] = _read_file(graph, tar, m, name, lease)
        elif m.issym():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            files[name] = ("link", _norm(target))
        elif m.islnk():
            files[name] = ("link", _norm(m.linkname))
    return files


def _read_file(graph, tar, m, name: str, lease: str):
    base = posixpath.basename(name)
    if name in _MEMORY_NAMES or base in ("VERSION", "json"):
        if m.size > _MAX_JSON:
            raise InvalidArgument(f"archive member {name}: too large")
        return ("mem", b"".join(tar.data(m)))
    known = None
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        try:
            known = parts[1] + ":" + parts[2]
            check_digest(known)
        except InvalidArgument:
            known = None
    with graph._gc_lock.share():
        if known:
            graph.lease_add(lease, known)
        if known and graph.store.exists(known):
            return ("blob", known)
        w = graph.store.writer(f"load-{uuid.uuid4().hex}", known, m.size)
        try:
            for chunk in tar.data(m):
                w.write(chunk)
            digest = w.commit()
        except BaseException:
            w.abort()
            raise
        graph.lease_add(lease, digest)
    return ("blob", digest)


def _manifest_entries(files: dict, lookup, graph) -> list:
    if "manifest.json" in files:
        try:
            entries = json.loads(lookup("manifest.json")[1])
        except ValueError:
            raise InvalidArgument("archive: manifest.json is not JSON") from None
        if not isinstance(entries, list):
            raise InvalidArgument("archive: manifest.json is not a list")
        for e in entries:
            if not isinstance(e, dict) or not isinstance(e.get("Config"), str):
                raise InvalidArgument("archive: manifest.json entry without Config")
        return entries
    if "index.json" in files:
        # A plain OCI image layout.
        try:
            index = json.loads(lookup("index.json")[1])
        except ValueError:
            raise InvalidArgument("archive: index.json is not JSON") from None
        out = []
        for desc in index.get("manifests") or []:
            digest = desc.get("digest", "")
            check_digest(digest)
            path = "blobs/" + digest.replace(":", "/")
            kind = lookup(path)
            manifest = json.loads(graph.store.read(kind[1]) if kind[0] == "blob" else kind[1])
            if "config" not in manifest:
                raise InvalidArgument(f"archive: {digest} is not an image manifest (nested "
                                      "indexes are not supported)")
            ann = desc.get("annotations") or {}
            name = ann.get("io.containerd.image.name")
            tags = [name] if name else []
            out.append({"Config": "blobs/" + manifest["config"]["digest"].replace(":", "/"),
                        "RepoTags": tags,
                        "Layers": ["blobs/" + layer["digest"].replace(":", "/")
                                   for layer in manifest.get("layers") or []]})
        return out
    if "repositories" in files:
        raise InvalidArgument("archive: legacy v1 image format (no manifest.json) is not "
                              "supported")
    raise InvalidArgument("archive: no manifest.json or index.json found; not a docker image "
                          "archive")
