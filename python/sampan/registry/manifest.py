"""Manifest media types, parsing and validation, and platform selection in indexes."""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import re
from dataclasses import dataclass, field

from sampan.errors import InvalidArgument, RegistryError

# Manifests
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# Configs
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# Layers
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

IMAGE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
SCHEMA1 = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)
LAYER_TYPES = (DOCKER_LAYER, DOCKER_FOREIGN_LAYER, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD,
               OCI_LAYER_ND, OCI_LAYER_ND_GZIP, OCI_LAYER_ND_ZSTD)
CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)
FOREIGN_LAYERS = (DOCKER_FOREIGN_LAYER, OCI_LAYER_ND, OCI_LAYER_ND_GZIP, OCI_LAYER_ND_ZSTD)

# What we send in Accept, in order of preference.
ACCEPT = [OCI_INDEX, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, OCI_MANIFEST]
MAX_MANIFEST_SIZE = 4 * 1024 * 1024

_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_digest(data: bytes, digest: str, what: str) -> None:
    algo = digest.split(":", 1)[0]
    if algo not in ("sha256", "sha512"):
        raise RegistryError(f"{what}: unsupported digest algorithm {algo!r}")
    got = digest_of(data, algo)
    if got != digest:
        raise RegistryError(f"{what}: manifest verification failed: digest mismatch: "
                            f"got {got}, expected {digest}")


@dataclass
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: list[str] = field(default_factory=list)
    platform: dict | None = None
    annotations: dict | None = None

    @classmethod
    def from_json(cls, d, what: str) -> Descriptor:
        if not isinstance(d, dict):
            raise RegistryError(f"{what}: descriptor is not an object")
        digest = d.get("digest")
        size = d.get("size")
        if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
            raise RegistryError(f"{what}: invalid descriptor digest {digest!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryError(f"{what}: invalid descriptor size {size!r}")
        return cls(d.get("mediaType", "") or "", digest, size, list(d.get("urls") or []),
                   d.get("platform"), d.get("annotations"))

    def to_json(self) -> dict:
        out = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = self.urls
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = self.annotations
        return out

    @property
    def short(self) -> str:
        """12 hex digits, as docker's progress shows layers."""
        return self.digest.split(":", 1)[1][:12]


@dataclass
class Manifest:
    """An image manifest (Docker schema 2 or OCI) or an index / manifest list."""

    media_type: str
    raw: bytes
    digest: str
    config: Descriptor | None = None
    layers: list[Descriptor] = field(default_factory=list)
    manifests: list[Descriptor] = field(default_factory=list)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEXES


def schema1_message(name: str) -> str:
    return (f"{name}: the image uses Docker Image manifest version 2, schema 1, which is "
            "deprecated and not supported; ask the image's author to push it again in the "
            "OCI format or as Docker Image manifest version 2, schema 2")


def parse_manifest(raw: bytes, content_type: str, name: str,
                   digest: str | None = None) -> Manifest:
    """Parse and validate a manifest body; `name` is used in error messages."""
    if len(raw) > MAX_MANIFEST_SIZE:
        raise RegistryError(f"{name}: manifest too large ({len(raw)} bytes)")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise RegistryError(f"{name}: invalid manifest: {e}") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{name}: invalid manifest: not a JSON object")
    mt = doc.get("mediaType") or ""
    ct = (content_type or "").split(";")[0].strip()
    if ct in SCHEMA1 or mt in SCHEMA1 or doc.get("schemaVersion") == 1:
        raise RegistryError(schema1_message(name))
    if not mt:
        # OCI allows mediaType to be absent: infer it from the content type or the shape.
        if ct in IMAGE_MANIFESTS + INDEXES:
            mt = ct
        elif "manifests" in doc:
            mt = OCI_INDEX
        elif "config" in doc:
            mt = OCI_MANIFEST
    elif ct and ct in IMAGE_MANIFESTS + INDEXES and ct != mt:
        raise RegistryError(f"{name}: manifest media type {mt!r} does not match the "
                            f"Content-Type {ct!r}")
    if mt not in IMAGE_MANIFESTS + INDEXES:
        raise RegistryError(f"{name}: unsupported manifest media type {mt or ct!r}")
    if doc.get("schemaVersion") != 2:
        raise RegistryError(f"{name}: unsupported manifest schemaVersion "
                            f"{doc.get('schemaVersion')!r}")
    m = Manifest(mt, raw, digest or digest_of(raw))
    if mt in INDEXES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise RegistryError(f"{name}: invalid index: no manifests")
        m.manifests = [Descriptor.from_json(d, name) for d in items]
        return m
    m.config = Descriptor.from_json(doc.get("config"), name)
    if m.config.media_type not in CONFIG_TYPES:
        raise RegistryError(f"{name}: unsupported config media type "
                            f"{m.config.media_type!r}")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise RegistryError(f"{name}: invalid manifest: no layers")
    m.layers = [Descriptor.from_json(d, name) for d in layers]
    for layer in m.layers:
        if layer.media_type not in LAYER_TYPES:
            raise RegistryError(f"{name}: unsupported layer media type "
                                f"{layer.media_type!r} ({layer.digest})")
    return m


# ---- platforms --------------------------------------------------------------------------

_ARCH_ALIASES = {
    "x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386", "i686": "386",
    "armhf": ("arm", "v7"), "armel": ("arm", "v6"), "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"), "mipsel": "mipsle",
    "mips64el": "mips64le",
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return s + (f"/{self.variant}" if self.variant else "")


def normalize_arch(arch: str, variant: str = "") -> tuple[str, str]:
    arch = arch.lower()
    a = _ARCH_ALIASES.get(arch, arch)
    if isinstance(a, tuple):
        return a[0], variant or a[1]
    arch = a
    if arch == "arm64" and variant in ("8", "v8"):
        variant = ""
    if arch == "arm" and variant in ("5", "6", "7", "8"):
        variant = "v" + variant
    return arch, variant


def host_platform() -> Platform:
    """linux/<arch>[/variant] of this machine, in OCI terms (overridable by $SAMPAN_PLATFORM)."""
    env = os.environ.get("SAMPAN_PLATFORM")
    if env:
        return parse_platform(env)
    machine = _platform.machine() or "amd64"
    arch, variant = normalize_arch(machine)
    if arch == "arm" and not variant:
        variant = "v7"
    if arch.startswith("mips"):
        import sys
        if sys.byteorder == "little" and not arch.endswith("le"):
            arch += "le"
    return Platform("linux", arch, variant)


def parse_platform(s: str) -> Platform:
    """"os/arch[/variant]" (or "arch" alone, meaning linux) → Platform."""
    parts = [p.strip() for p in (s or "").strip().lower().split("/")]
    if not parts or not all(parts) or len(parts) > 3:
        raise InvalidArgument(f"\"{s}\": unknown operating system or architecture: invalid "
                              "argument")
    if len(parts) == 1:
        os_, arch, variant = "linux", parts[0], ""
    elif len(parts) == 2:
        os_, arch, variant = parts[0], parts[1], ""
    else:
        os_, arch, variant = parts
    arch, variant = normalize_arch(arch, variant)
    if os_ not in ("linux", "windows", "darwin", "freebsd"):
        raise InvalidArgument(f"\"{s}\": unknown operating system or architecture: invalid "
                              "argument")
    return Platform(os_, arch, variant)


def _compatible_variants(p: Platform) -> list[str]:
    """Variants that `p` can run, best first ("" = unspecified)."""
    if p.architecture == "arm":
        order = {"v8": ["v8", "v7", "v6", "v5"], "v7": ["v7", "v6", "v5"], "v6": ["v6", "v5"],
                 "v5": ["v5"]}.get(p.variant or "v7", [p.variant])
        return order + [""]
    if p.architecture == "arm64":
        return ["", "v8"] if not p.variant else [p.variant, "", "v8"]
    return [p.variant, ""] if p.variant else [""]


def platform_of(d: Descriptor) -> Platform | None:
    p = d.platform
    if not isinstance(p, dict) or not p.get("os") or not p.get("architecture"):
        return None
    arch, variant = normalize_arch(str(p["architecture"]), str(p.get("variant") or ""))
    return Platform(str(p["os"]).lower(), arch, variant)


def select_manifest(index: Manifest, want: Platform) -> Descriptor | None:
    """The index entry for platform `want`, Docker's way (best variant wins)."""
    variants = _compatible_variants(want)
    best = None
    best_rank = len(variants)
    for d in index.manifests:
        if d.media_type and d.media_type not in IMAGE_MANIFESTS + INDEXES:
            continue
        p = platform_of(d)
        if p is None or p.os != want.os or p.architecture != want.architecture:
            continue
        variant = p.variant
        if want.architecture == "arm64" and variant == "v8":
            variant = ""
        if variant in variants:
            rank = variants.index(variant)
        elif not want.variant and want.architecture not in ("arm", "arm64"):
            rank = len(variants) - 1
        else:
            continue
        if rank < best_rank:
            best, best_rank = d, rank
    return best


def config_platform(config: dict) -> Platform | None:
    if not isinstance(config, dict) or not config.get("architecture"):
        return None
    arch, variant = normalize_arch(str(config["architecture"]), str(config.get("variant") or ""))
    return Platform(str(config.get("os") or "linux"), arch, variant)


def platform_matches(have: Platform, want: Platform) -> bool:
    if have.os != want.os or have.architecture != want.architecture:
        return False
    if not want.variant or not have.variant:
        return True
    return have.variant in _compatible_variants(want)
