"""Image references: Docker's grammar and normalisation.

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [ domain "/" ] path-component ( "/" path-component )*
    domain      := host [ ":" port ]      host: DNS labels, an IPv4 address or "[" IPv6 "]"
    path-comp   := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag         := [\\w][\\w.-]{0,127}
    digest      := algorithm ":" hex   (sha256: 64 hex digits, sha512: 128)

A name whose first component holds no "." or ":" and is not "localhost" lives on Docker Hub
("docker.io"); a single-component Hub name gets the "library/" prefix. Upper case is refused
in repository names (but allowed in hosts and tags), as Docker does.
"""

from __future__ import annotations

import re

from sampan.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
DEFAULT_REGISTRY_HOST = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_ANCHORED_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_SHORT_ID_RE = re.compile(r"^(sha256:)?[a-f0-9]{1,64}$")

FORMAT_ERROR = "invalid reference format"


class Reference:
    """An image reference, fully qualified. Immutable."""

    __slots__ = ("digest", "domain", "path", "tag")

    domain: str
    path: str
    tag: str | None
    digest: str | None

    def __init__(self, domain: str, path: str, tag: str | None = None,
                 digest: str | None = None):
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "digest", digest)

    def __setattr__(self, key, value):
        raise AttributeError("Reference is immutable")

    def name(self) -> str:
        """Fully qualified repository name: "docker.io/library/busybox"."""
        return f"{self.domain}/{self.path}"

    def familiar_name(self) -> str:
        """Repository name as docker shows it: "busybox", "foo/bar", "localhost:5000/x"."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name()
        path = self.path
        if path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX):]:
            return path[len(OFFICIAL_PREFIX):]
        return path

    def familiar(self) -> str:
        """Reference as docker shows it: "busybox:latest", "localhost:5000/x:1", "x@sha256:…"."""
        return self.familiar_name() + self._suffix()

    def _suffix(self) -> str:
        s = ""
        if self.tag is not None:
            s += ":" + self.tag
        if self.digest is not None:
            s += "@" + self.digest
        return s

    def with_tag(self, tag: str | None) -> Reference:
        if tag is not None and not _TAG_RE.match(tag):
            raise InvalidReference(f"{FORMAT_ERROR}: invalid tag format")
        return Reference(self.domain, self.path, tag, self.digest)

    def with_digest(self, digest: str | None) -> Reference:
        return Reference(self.domain, self.path, self.tag, digest)

    def repo(self) -> Reference:
        """The bare repository (no tag, no digest)."""
        return Reference(self.domain, self.path)

    @property
    def ref(self) -> str:
        """What a registry calls the manifest: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def registry_host(self) -> str:
        """The host that serves this repository's registry API."""
        return DEFAULT_REGISTRY_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    def __str__(self) -> str:
        return self.name() + self._suffix()

    def __repr__(self) -> str:
        return f"Reference({str(self)!r})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Reference):
            return NotImplemented
        return (self.domain, self.path, self.tag, self.digest) == (
            other.domain, other.path, other.tag, other.digest)

    def __hash__(self) -> int:
        return hash((self.domain, self.path, self.tag, self.digest))


def split_domain(name: str) -> tuple[str, str]:
    """Split a (not yet validated) name into its registry domain and path, docker's way."""
    i = name.find("/")
    if i == -1:
        domain, rest = DEFAULT_DOMAIN, name
    else:
        first = name[:i]
        if ("." not in first and ":" not in first and first != "localhost"
                and first.lower() == first):
            domain, rest = DEFAULT_DOMAIN, name
        else:
            domain, rest = first, name[i + 1:]
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = OFFICIAL_PREFIX + rest
    return domain, rest


def parse(s: str, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse and normalise a reference the way `docker pull` does.

    A reference with neither tag nor digest gets `default_tag` (pass None to keep it bare).
    Raises InvalidReference with docker's messages.
    """
    if not isinstance(s, str):
        raise InvalidReference(f"{FORMAT_ERROR}: not a string")
    if s == "":
        raise InvalidReference(f"{FORMAT_ERROR}: repository name must have at least one "
                               "component")
    if _IDENTIFIER_RE.match(s):
        raise InvalidReference(f"invalid repository name ({s}), cannot specify 64-byte "
                               "hexadecimal strings")
    # Split off digest and tag before looking at the name.
    name, tag, digest = s, None, None
    if "@" in name:
        name, digest = name.split("@", 1)
        if not re.match(rf"^{_DIGEST}$", digest):
            raise InvalidReference(f"{FORMAT_ERROR}: invalid digest format")
        if not _DIGEST_RE.match(digest):
            raise InvalidReference(f"{FORMAT_ERROR}: invalid digest {digest!r}: unsupported "
                                   "algorithm or wrong length")
    i = name.rfind(":")
    if i > name.rfind("/"):
        name, tag = name[:i], name[i + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"{FORMAT_ERROR}: invalid tag format")
    if name == "":
        raise InvalidReference(f"{FORMAT_ERROR}: repository name must have at least one "
                               "component")
    domain, path = split_domain(name)
    if path.lower() != path:
        raise InvalidReference(f"{FORMAT_ERROR}: repository name ({path}) must be lowercase")
    if not _ANCHORED_DOMAIN_RE.match(domain) or not _PATH_RE.match(path):
        raise InvalidReference(FORMAT_ERROR)
    full = f"{domain}/{path}"
    if len(full) > NAME_MAX:
        raise InvalidReference(f"{FORMAT_ERROR}: repository name must not be more than "
                               f"{NAME_MAX} characters")
    if not _REFERENCE_RE.match(full + (f":{tag}" if tag else "") + (f"@{digest}" if digest
                                                                       else "")):
        raise InvalidReference(FORMAT_ERROR)
    if tag is None and digest is None:
        tag = default_tag
    return Reference(domain, path, tag, digest)


def parse_repository(s: str) -> Reference:
    """A repository name without tag or digest (for `docker tag` targets, `images REPO`)."""
    ref = parse(s, default_tag=None)
    return ref


def is_image_id(s: str) -> bool:
    """A full image id: 64 hex digits, with or without "sha256:"."""
    s = s.removeprefix("sha256:")
    return bool(_IDENTIFIER_RE.match(s))


def is_id_prefix(s: str) -> bool:
    """Could be an (abbreviated) image id: hex, optionally "sha256:"-prefixed."""
    return bool(_SHORT_ID_RE.match(s))


def is_digest(s: str) -> bool:
    return bool(_DIGEST_RE.match(s))


def validate_tag(tag: str) -> str:
    if not _TAG_RE.match(tag):
        raise InvalidReference(f"{FORMAT_ERROR}: invalid tag format")
    return tag
