
"""Docker's reference grammar and normalisation."""

import pytest
from sampan.errors import InvalidReference
from sampan.reference import Reference, is_id_prefix, is_image_id, parse

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("s, full, familiar", [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("foo/bar", "docker.io/foo/bar:latest", "foo/bar:latest"),
    ("foo/bar/baz:v1", "docker.io/foo/bar/baz:v1", "foo/bar/baz:v1"),
    ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
    ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
    ("localhost:5000/x/y:1.0", "localhost:5000/x/y:1.0", "localhost:5000/x/y:1.0"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
    ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
    ("ghcr.io/o/r:Tag_1.x-y", "ghcr.io/o/r:Tag_1.x-y", "ghcr.io/o/r:Tag_1.x-y"),
    ("Registry.Example.com/x", "Registry.Example.com/x:latest",
     "Registry.Example.com/x:latest"),
    ("foo:5000", "docker.io/library/foo:5000", "foo:5000"),
    ("a_b-c__d/e--f.g", "docker.io/a_b-c__d/e--f.g:latest", "a_b-c__d/e--f.g:latest"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}", f"busybox@{D}"),
    (f"busybox:1@{D}", f"docker.io/library/busybox:1@{D}", f"busybox:1@{D}"),
    (f"localhost:5000/x@{D}", f"localhost:5000/x@{D}", f"localhost:5000/x@{D}"),
])
def test_normalise(s, full, familiar):
    r = parse(s)
    assert str(r) == full
    assert r.familiar() == familiar
    assert parse(full) == r


def test_parts_and_hosts():
    r = parse("busybox")
    assert (r.domain, r.path, r.tag, r.digest) == ("docker.io", "library/busybox", "latest", None)
    assert r.name() == "docker.io/library/busybox"
    assert r.registry_host == "registry-1.docker.io"
    assert r.ref == "latest"
    r = parse(f"localhost:5000/x@{D}")
    assert r.tag is None and r.digest == D and r.ref == D
    assert r.registry_host == "localhost:5000"
    assert parse("x", default_tag=None).tag is None
    assert parse("x").with_tag("v2").familiar() == "x:v2"
    assert isinstance(r, Reference) and hash(r) == hash(parse(str(r)))
    with pytest.raises(AttributeError):
        r.tag = "x"


@pytest.mark.parametrize("s, message", [
    ("", "invalid reference format: repository name must have at least one component"),
    ("Busybox", "repository name (library/Busybox) must be lowercase"),
    ("ghcr.io/Foo/bar", "repository name (Foo/bar) must be lowercase"),
    ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
    ("busybox:", "invalid tag format"),
    ("busybox:-x", "invalid tag format"),
    ("busybox:" + "t" * 129, "invalid tag format"),
    ("busybox@sha256:abc", "invalid digest format"),
    ("busybox@@x", "invalid digest format"),
    ("busybox@sha256:" + "A" * 64, "invalid digest"),
    ("busybox@md5:" + "a" * 32, "invalid digest"),
    (":tag", "at least one component"),
    ("a/../b", "invalid reference format"),
    ("-a/b", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("a b", "invalid reference format"),
    ("x/" + "a" * 260, "must not be more than 255 characters"),
])
def test_invalid(s, message):
    with pytest.raises(InvalidReference) as e:
        parse(s)
    assert message in str(e.value)
    assert e.value.status == 400


def test_ids():
    assert is_image_id("a" * 64) and is_image_id("sha256:" + "0" * 64)
    assert not is_image_id("a" * 63) and not is_image_id("busybox")
    assert is_id_prefix("abc123") and is_id_prefix("sha256:abc")
    assert not is_id_prefix("busybox")
