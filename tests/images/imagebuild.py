"""Real image content built locally for the image tests, from Debian's busybox-static.

Everything is deterministic (fixed mtimes, gzip mtime 0), so digests are stable across runs.

Layer members (in the order given):
    File(path, data=b"", mode=0o644, uid=0, gid=0, xattrs=None)   xattrs: {name: bytes}
    Dir(path, mode=0o755, uid=0, gid=0, xattrs=None)
    Symlink(path, target)          Hardlink(path, target)
    Device(path, "c"|"b", major, minor, mode=0o666)                Fifo(path, mode=0o644)
    Whiteout(path)  → ".wh.<name>"      Opaque(dir) → "<dir>/.wh..wh..opq"
    every member also takes mtime= (default MTIME) and uid=/gid=

Blobs:
    tar_bytes(members) -> bytes                      an uncompressed (PAX) tar
    compress(data, "gzip" | "zstd" | "none") -> bytes
    layer(members_or_tar_bytes, compression="gzip") -> Layer   (.data .digest .size .diff_id
                                                                .media_type .tar .descriptor())
    config(layers, arch="amd64", os="linux", variant=None, cmd=("sh",), env=None, labels=None,
           history=None, created=CREATED) -> Blob
    manifest(config_blob, layers, oci=True) -> Blob  (oci=False: Docker schema 2)
    index(entries, oci=True) -> Blob                 entries: [(manifest Blob, platform dict)]
    Blob(data, media_type)                           .digest .size .descriptor(**extra)

Images:
    busybox_members() -> list                  /bin/busybox, every applet as a hardlink, /etc …
    image(*layer_member_lists, compression="gzip", oci=True, **config_kw) -> Image
    busybox_image(compression="gzip", oci=True, extra=True, **config_kw) -> Image
        layer 1: the busybox rootfs; with extra: layer 2 adds /etc/motd and deletes
        /etc/group (whiteout) and the directory /var/spool's contents (opaque)
    Image: .layers .config .manifest .id (config digest) .blobs() -> {digest: bytes}

Archives:
    docker_archive(images, layout="legacy" | "oci") -> bytes   images: [(Image, [tags])]
        legacy: <config>.json, <id>/layer.tar (repeated layers as symlinks), manifest.json
        oci: docker 25+ (blobs/sha256/…, index.json, manifest.json, oci-layout)
    write_oci_layout(path, images)                 an OCI image layout directory

Hostile layers (uncompressed tar bytes), each trying to write into the host directory `outside`
(which should stay as it is) — refused by a correct unpacker:
    hostile_layers(outside) -> {name: bytes}
        absolute, traversal, symlink_escape (relative target), symlink_escape_abs,
        hardlink_escape (relative "../…/victim"), hardlink_abs, symlink_then_hardlink
    `outside/victim` is what the hardlink ones point at; create it before unpacking.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = {"none": "application/vnd.oci.image.layer.v1.tar",
             "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
             "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


# --------------------------------------------------------------------------- members


@dataclass
class Member:
    path: str
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = MTIME
    xattrs: dict | None = None

    def tarinfo(self) -> tuple:
        raise NotImplementedError

    def _info(self, name: str, kind) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = self.mode
        ti.uid, ti.gid = self.uid, self.gid
        ti.uname = ti.gname = ""
        ti.mtime = self.mtime
        if self.xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                              for k, v in self.xattrs.items()}
        return ti


class File(Member):
    def __init__(self, path, data=b"", mode=0o644, uid=0, gid=0, mtime=MTIME, xattrs=None):
        super().__init__(path, mode, uid, gid, mtime, xattrs)
        self.data = data if isinstance(data, bytes) else data.encode()

    def tarinfo(self):
        ti = self._info(self.path, tarfile.REGTYPE)
        ti.size = len(self.data)
        return ti, self.data


class Dir(Member):
    def __init__(self, path, mode=0o755, uid=0, gid=0, mtime=MTIME, xattrs=None):
        super().__init__(path, mode, uid, gid, mtime, xattrs)

    def tarinfo(self):
        return self._info(self.path.rstrip("/") + "/", tarfile.DIRTYPE), None


class Symlink(Member):
    def __init__(self, path, target, uid=0, gid=0, mtime=MTIME):
        super().__init__(path, 0o777, uid, gid, mtime)
        self.target = target

    def tarinfo(self):
        ti = self._info(self.path, tarfile.SYMTYPE)
        ti.linkname = self.target
        return ti, None


class Hardlink(Member):
    def __init__(self, path, target, mode=0o755, uid=0, gid=0, mtime=MTIME):
        super().__init__(path, mode, uid, gid, mtime)
        self.target = target

    def tarinfo(self):
        ti = self._info(self.path, tarfile.LNKTYPE)
        ti.linkname = self.target
        return ti, None


class Device(Member):
    def __init__(self, path, kind="c", major=1, minor=3, mode=0o666, uid=0, gid=0,
                 mtime=MTIME):
        super().__init__(path, mode, uid, gid, mtime)
        self.kind, self.major, self.minor = kind, major, minor

    def tarinfo(self):
        ti = self._info(self.path, tarfile.CHRTYPE if self.kind == "c" else tarfile.BLKTYPE)
        ti.devmajor, ti.devminor = self.major, self.minor
        return ti, None


class Fifo(Member):
    def __init__(self, path, mode=0o644, uid=0, gid=0, mtime=MTIME):
        super().__init__(path, mode, uid, gid, mtime)

    def tarinfo(self):
        return self._info(self.path, tarfile.FIFOTYPE), None


class Whiteout(Member):
    def __init__(self, path, mtime=MTIME):
        d, name = os.path.split(path.rstrip("/"))
        super().__init__(os.path.join(d, ".wh." + name), 0o644, 0, 0, mtime)

    def tarinfo(self):
        ti = self._info(self.path, tarfile.REGTYPE)
        ti.size = 0
        return ti, b""


class Opaque(Whiteout):
    def __init__(self, directory, mtime=MTIME):
        Member.__init__(self, directory.rstrip("/") + "/.wh..wh..opq", 0o644, 0, 0, mtime)


def tar_bytes(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            ti, data = m.tarinfo()
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    if compression == "none":
        return data
    raise ValueError(compression)


# --------------------------------------------------------------------------- blobs


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass
class Layer(Blob):
    tar: bytes = b""
    compression: str = "gzip"

    @property
    def diff_id(self) -> str:
        return sha256(self.tar)


def layer(members, compression: str = "gzip", oci: bool = True) -> Layer:
    tar = members if isinstance(members, bytes) else tar_bytes(members)
    if oci or compression != "gzip":
        mt = OCI_LAYER[compression]
    else:
        mt = DOCKER_LAYER
    return Layer(compress(tar, compression), mt, tar, compression)


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def config(layers, arch="amd64", os="linux", variant=None, cmd=("sh",), env=None,
           labels=None, history=None, created=CREATED, oci=True, **extra) -> Blob:
    cfg = {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
           "Cmd": list(cmd)}
    if labels:
        cfg["Labels"] = dict(labels)
    if history is None:
        history = [{"created": created, "created_by": f"ADD layer{i} /"}
                   for i in range(len(layers))]
        history.append({"created": created, "created_by": f'CMD {json.dumps(list(cmd))}',
                        "empty_layer": True})
    doc = {"architecture": arch, "os": os, "created": created, "config": cfg,
           "rootfs": {"type": "layers", "diff_ids": [la.diff_id for la in layers]},
           "history": history, **extra}
    if variant:
        doc["variant"] = variant
    return Blob(_json(doc), OCI_CONFIG if oci else DOCKER_CONFIG)


def manifest(config_blob: Blob, layers, oci: bool = True) -> Blob:
    doc = {"schemaVersion": 2,
           "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
           "config": config_blob.descriptor(),
           "layers": [la.descriptor() for la in layers]}
    return Blob(_json(doc), doc["mediaType"])


def index(entries, oci: bool = True) -> Blob:
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX if oci else DOCKER_LIST,
           "manifests": [m.descriptor(platform=dict(p)) for m, p in entries]}
    return Blob(_json(doc), doc["mediaType"])


@dataclass
class Image:
    layers: list
    config: Blob
    manifest: Blob
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.config.digest

    @property
    def diff_ids(self) -> list:
        return [la.diff_id for la in self.layers]

    def blobs(self) -> dict:
        out = {b.digest: b.data for b in self.layers}
        out[self.config.digest] = self.config.data
        out[self.manifest.digest] = self.manifest.data
        return out


def image(*layer_members, compression: str = "gzip", oci: bool = True, **config_kw) -> Image:
    layers = [layer(m, compression, oci) for m in layer_members]
    cfg = config(layers, oci=oci, **config_kw)
    return Image(layers, cfg, manifest(cfg, layers, oci))


# --------------------------------------------------------------------------- busybox


@functools.cache
def _applets() -> tuple:
    out = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True)
    return tuple(sorted(a for a in out.stdout.split() if a and a != "busybox" and "/" not in a))


@functools.cache
def _busybox_bytes() -> bytes:
    return BUSYBOX.read_bytes()


def busybox_members() -> list:
    members = [Dir("bin"), Dir("dev"), Dir("etc"), Dir("home"), Dir("root", mode=0o700),
               Dir("tmp", mode=0o1777), Dir("usr"), Dir("usr/bin"), Dir("var"),
               Dir("var/spool"), Dir("var/spool/mail"),
               File("bin/busybox", _busybox_bytes(), mode=0o755)]
    members += [Hardlink(f"bin/{a}", "bin/busybox") for a in _applets()]
    members += [
        File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                           "nobody:x:65534:65534:nobody:/home:/bin/false\n"),
        File("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        File("etc/hostname", "busybox\n"),
        File("var/spool/mail/root", ""),
        Symlink("usr/bin/env", "../../bin/env"),
    ]
    return members


def busybox_extra_members() -> list:
    return [Dir("etc"), File("etc/motd", "welcome to sampan\n"), Whiteout("etc/group"),
            Dir("var/spool"), Opaque("var/spool"), File("var/spool/new", "fresh\n")]


@functools.cache
def _busybox_layer(compression: str, oci: bool) -> Layer:
    return layer(busybox_members(), compression, oci)


@functools.cache
def _extra_layer(compression: str, oci: bool) -> Layer:
    return layer(busybox_extra_members(), compression, oci)


def busybox_image(compression: str = "gzip", oci: bool = True, extra: bool = True,
                  **config_kw) -> Image:
    layers = [_busybox_layer(compression, oci)]
    if extra:
        layers.append(_extra_layer(compression, oci))
    cfg = config(layers, oci=oci, **config_kw)
    return Image(layers, cfg, manifest(cfg, layers, oci))


# --------------------------------------------------------------------------- archives


class _TarOut:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tf = tarfile.TarFile(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.seen = set()

    def file(self, name: str, data: bytes) -> None:
        if name in self.seen:
            return
        self.seen.add(name)
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode = len(data), MTIME, 0o644
        self.tf.addfile(ti, io.BytesIO(data))

    def dir(self, name: str) -> None:
        if name in self.seen:
            return
        self.seen.add(name)
        ti = tarfile.TarInfo(name)
        ti.type, ti.mtime, ti.mode = tarfile.DIRTYPE, MTIME, 0o755
        self.tf.addfile(ti)

    def symlink(self, name: str, target: str) -> None:
        self.seen.add(name)
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, target, MTIME
        self.tf.addfile(ti)

    def close(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()


def docker_archive(images, layout: str = "legacy") -> bytes:
    """A `docker save` archive of [(Image, [tags])]."""
    out = _TarOut()
    entries = []
    if layout == "legacy":
        first_path = {}
        repositories: dict = {}
        for img, tags in images:
            out.file(img.config.digest.split(":")[1] + ".json", img.config.data)
            paths = []
            parent = ""
            for i, la in enumerate(img.layers):
                lid = hashlib.sha256(f"{img.id} {i}".encode()).hexdigest()
                out.dir(lid)
                out.file(f"{lid}/VERSION", b"1.0")
                out.file(f"{lid}/json", _json({"id": lid, "parent": parent}))
                if la.diff_id in first_path:
                    out.symlink(f"{lid}/layer.tar", f"../{first_path[la.diff_id]}")
                else:
                    out.file(f"{lid}/layer.tar", la.tar)
                    first_path[la.diff_id] = f"{lid}/layer.tar"
                paths.append(f"{lid}/layer.tar")
                parent = lid
            for t in tags:
                repo, _, tag = t.rpartition(":")
                repositories.setdefault(repo, {})[tag] = parent
            entries.append({"Config": img.config.digest.split(":")[1] + ".json",
                            "RepoTags": list(tags) or None, "Layers": paths})
        out.file("repositories", _json(repositories))
    elif layout == "oci":
        out.dir("blobs")
        out.dir("blobs/sha256")
        idx = []
        for img, tags in images:
            layers = [Layer(la.tar, OCI_LAYER["none"], la.tar, "none") for la in img.layers]
            m = manifest(img.config, layers, oci=True)
            for b in [*layers, img.config, m]:
                out.file("blobs/sha256/" + b.digest.split(":")[1], b.data)
            idx += ([m.descriptor(annotations={"io.containerd.image.name": t}) for t in tags]
                    or [m.descriptor()])
            entries.append({"Config": "blobs/sha256/" + img.config.digest.split(":")[1],
                            "RepoTags": list(tags) or None,
                            "Layers": ["blobs/sha256/" + la.digest.split(":")[1]
                                       for la in layers]})
        out.file("index.json", _json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                      "manifests": idx}))
        out.file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    else:
        raise ValueError(layout)
    out.file("manifest.json", json.dumps(entries).encode())
    return out.close()


def write_oci_layout(path, images) -> Path:
    """An OCI image layout directory of [(Image, [tags])] (tags: "name:tag" → ref.name)."""
    path = Path(path)
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    manifests = []
    for img, tags in images:
        for digest, data in img.blobs().items():
            (blobs / digest.split(":")[1]).write_bytes(data)
        for t in tags or [None]:
            ann = {"org.opencontainers.image.ref.name": t.rpartition(":")[2]} if t else {}
            manifests.append(img.manifest.descriptor(**({"annotations": ann} if ann else {})))
    (path / "index.json").write_bytes(_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                             "manifests": manifests}))
    (path / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    return path


# --------------------------------------------------------------------------- hostile


def hostile_layers(outside) -> dict:
    """Uncompressed layer tars that try to write into the host directory `outside`."""
    outside = str(outside).rstrip("/")
    up = "../" * 24 + outside.lstrip("/")
    return {
        "absolute": tar_bytes([File(outside + "/pwned", "absolute\n")]),
        "traversal": tar_bytes([Dir("etc"), File(up + "/pwned", "traversal\n")]),
        "traversal_inner": tar_bytes([Dir("a"), File("a/../../" + up + "/pwned", "x\n")]),
        "symlink_escape": tar_bytes([Symlink("escape", up), File("escape/pwned", "via link\n")]),
        "symlink_escape_abs": tar_bytes([Symlink("escape", outside),
                                         File("escape/pwned", "via link\n")]),
        "symlink_escape_nested": tar_bytes([Dir("d"), Symlink("d/up", "../.."),
                                            File("d/up/pwned", "via link\n")]),
        "hardlink_escape": tar_bytes([Hardlink("link", up + "/victim")]),
        "hardlink_abs": tar_bytes([Hardlink("link", outside + "/victim")]),
        "symlink_then_hardlink": tar_bytes([Symlink("esc", outside),
                                            Hardlink("h", "esc/victim")]),
    }
