# ruff: noqa: F811 - pytest fixtures imported from registries.py
"""Pull from a real registry (docker-registry on loopback): progress, platforms, hostile input."""

import json

import pytest
from registries import (  # noqa: F401 - fixtures
    Fault,
    Image,
    Recorder,
    Uploader,
    busybox_layer,
    graph,
    isolated_config,
    make_service,
    plain_registry,
    proxy_for,
    random_layer,
    reg_tmp,
    sha,
)
from sampan.errors import ImageNotFound, NotFound, RegistryError, SampanError

pytestmark = pytest.mark.usefixtures("isolated_config")

SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"


@pytest.fixture(scope="module")
def two_layer(plain_registry):
    """An image of busybox plus a 300 kB layer, pushed as pull/two:1."""
    im = Image([busybox_layer(), random_layer(300_000)])
    Uploader(plain_registry.url).image("pull/two", "1", im)
    return im


def assert_not_listed(graph, name):
    with pytest.raises(SampanError):
        graph.resolve(name)


def test_pull_plain_and_progress(graph, plain_registry, two_layer):
    svc = make_service(graph)
    rec = Recorder()
    name = f"{plain_registry.host}/pull/two:1"
    image_id = svc.pull(name, progress=rec)
    assert image_id == two_layer.id
    assert graph.resolve(name) == two_layer.id
    ids = [d.split(":")[1][:12] for d in two_layer.layer_digests]
    m = rec.messages
    assert m[0] == {"status": "Pulling from pull/two", "id": "1"}
    for short in ids:
        st = rec.statuses(short)
        assert st[0] == "Pulling fs layer"
        assert "Downloading" in st and "Verifying Checksum" in st
        assert "Download complete" in st and st[-1] == "Pull complete"
        assert st.index("Verifying Checksum") < st.index("Download complete")
    down = [x for x in m if x.get("status") == "Downloading" and x["id"] == ids[1]]
    assert down[-1]["progressDetail"] == {"current": down[-1]["progressDetail"]["total"],
                                          "total": json.loads(two_layer.manifest)["layers"][1][
                                              "size"]}
    assert down[-1]["progress"].startswith("[=====")
    assert {"status": f"Digest: {two_layer.digest}"} in m
    assert m[-1] == {"status": f"Status: Downloaded newer image for {name}"}
    for d in two_layer.layer_digests + [two_layer.id]:
        assert graph.store.exists(d)
    assert graph.store.exists(two_layer.digest)
    # again: nothing to download
    rec2 = Recorder()
    assert svc.pull(name, progress=rec2) == image_id
    assert [x["status"] for x in rec2.messages if x.get("id") in ids] == ["Already exists"] * 2
    assert rec2.messages[-1] == {"status": f"Status: Image is up to date for {name}"}


def test_pull_by_digest_and_oci(graph, plain_registry):
    im = Image([busybox_layer(), random_layer(1000)], oci=True)
    Uploader(plain_registry.url).image("pull/oci", "v1", im)
    svc = make_service(graph)
    rec = Recorder()
    name = f"{plain_registry.host}/pull/oci@{im.digest}"
    assert svc.pull(name, progress=rec) == im.id
    assert rec.messages[0] == {"status": "Pulling from pull/oci", "id": im.digest}
    assert graph.resolve(name) == im.id
    with pytest.raises(SampanError):
        graph.resolve(f"{plain_registry.host}/pull/oci:v1")      # a digest pull tags nothing
    # an uncompressed OCI layer
    im2 = Image([random_layer(5000)], oci=True, compress=False)
    Uploader(plain_registry.url).image("pull/oci", "plain", im2)
    assert svc.pull(f"{plain_registry.host}/pull/oci:plain") == im2.id


def test_pull_wrong_digest_reference(graph, plain_registry, two_layer):
    svc = make_service(graph)
    bad = "sha256:" + "1" * 64
    with pytest.raises(NotFound) as e:
        svc.pull(f"{plain_registry.host}/pull/two@{bad}")
    assert "not found" in str(e.value)


def test_pull_not_found(graph, plain_registry, two_layer):
    svc = make_service(graph)
    with pytest.raises(NotFound) as e:
        svc.pull(f"{plain_registry.host}/pull/two:nope")
    assert str(e.value) == (f"manifest for {plain_registry.host}/pull/two:nope not found: "
                            "manifest unknown: manifest unknown")
    with pytest.raises(NotFound):
        svc.pull(f"{plain_registry.host}/pull/nothing-here:1")


@pytest.fixture(scope="module")
def multiarch(plain_registry):
    bb = busybox_layer()
    images = {
        "linux/amd64": Image([bb, random_layer(100, "amd64")], "amd64"),
        "linux/arm64": Image([bb, random_layer(100, "arm64")], "arm64", "v8"),
        "linux/arm/v7": Image([bb, random_layer(100, "armv7")], "arm", "v7"),
        "linux/arm/v6": Image([bb, random_layer(100, "armv6")], "arm", "v6"),
        "linux/mips": Image([bb, random_layer(100, "mips")], "mips"),
        "linux/mipsle": Image([bb, random_layer(100, "mipsle")], "mipsle"),
    }
    up = Uploader(plain_registry.url)
    up.index("pull/multi", "oci", list(images.values()), oci=True)
    up.index("pull/multi", "list", list(images.values()), oci=False)
    return images


@pytest.mark.parametrize("platform, want", [
    ("linux/amd64", "linux/amd64"), ("linux/arm64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"), ("linux/arm/v7", "linux/arm/v7"),
    ("linux/arm", "linux/arm/v7"), ("linux/arm/v6", "linux/arm/v6"),
    ("linux/mips", "linux/mips"), ("linux/mipsle", "linux/mipsle"), ("mipsle", "linux/mipsle"),
])
@pytest.mark.parametrize("kind", ["oci", "list"])
def test_index_platform_selection(graph, plain_registry, multiarch, platform, want, kind):
    svc = make_service(graph)
    name = f"{plain_registry.host}/pull/multi:{kind}"
    assert svc.pull(name, platform=platform) == multiarch[want].id
    assert graph.resolve(name) == multiarch[want].id


def test_index_default_platform_and_no_match(graph, plain_registry, multiarch, monkeypatch):
    svc = make_service(graph)
    name = f"{plain_registry.host}/pull/multi:oci"
    monkeypatch.setenv("SAMPAN_PLATFORM", "linux/amd64")
    assert svc.pull(name) == multiarch["linux/amd64"].id
    with pytest.raises(NotFound) as e:
        svc.pull(name, platform="linux/s390x")
    assert str(e.value) == "no matching manifest for linux/s390x in the manifest list entries"
    with pytest.raises(SampanError) as e:
        svc.pull(name, platform="linux//x")
    assert e.value.status == 400


def test_single_manifest_platform_mismatch(graph, plain_registry, two_layer):
    svc = make_service(graph)
    name = f"{plain_registry.host}/pull/two:1"
    with pytest.raises(NotFound) as e:
        svc.pull(name, platform="linux/arm64")
    assert "does not match the specified platform: wanted linux/arm64, actual: linux/amd64" in \
        str(e.value)
    assert_not_listed(graph, name)


# ---- hostile and broken registries ------------------------------------------------------

def via(proxy, path):
    return f"{proxy.host}/{path}"


def test_unknown_media_type_and_schema1(graph, plain_registry, two_layer, proxy_for):
    p = proxy_for(plain_registry)
    svc = make_service(graph)
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/x-weird"}).encode()
    p.add(Fault("replace", r"/manifests/", body=body, content_type="application/x-weird",
                times=None))
    with pytest.raises(RegistryError) as e:
        svc.pull(via(p, "pull/two:1"))
    assert "unsupported manifest media type 'application/x-weird'" in str(e.value)
    p.clear()
    schema1 = json.dumps({"schemaVersion": 1, "name": "pull/two", "tag": "1",
                          "architecture": "amd64", "fsLayers": [], "history": [],
                          "signatures": []}).encode()
    p.add(Fault("replace", r"/manifests/", body=schema1, content_type=SCHEMA1, times=None))
    with pytest.raises(RegistryError) as e:
        svc.pull(via(p, "pull/two:1"))
    assert "schema 1" in str(e.value) and "not supported" in str(e.value)
    assert_not_listed(graph, via(p, "pull/two:1"))
    # an unknown layer media type
    p.clear()
    doc = json.loads(two_layer.manifest)
    doc["layers"][0]["mediaType"] = "application/vnd.example.layer"
    p.add(Fault("replace", r"/manifests/", body=json.dumps(doc).encode(),
                content_type=two_layer.manifest_type, times=None))
    with pytest.raises(RegistryError) as e:
        svc.pull(via(p, "pull/two:1"))
    assert "unsupported layer media type 'application/vnd.example.layer'" in str(e.value)


def test_wrong_blob_digest(graph, plain_registry, two_layer, proxy_for):
    p = proxy_for(plain_registry)
    big = two_layer.layer_digests[1]
    p.add(Fault("corrupt", f"/blobs/{big}", times=None))
    svc = make_service(graph)
    rec = Recorder()
    with pytest.raises(RegistryError) as e:
        svc.pull(via(p, "pull/two:1"), progress=rec)
    assert f"verification failed for digest {big}" in str(e.value) or "mismatch" in str(e.value)
    assert_not_listed(graph, via(p, "pull/two:1"))
    assert not graph.store.exists(big)
    assert not [i for i in graph.store.ingests() if i["expected"] == big]


def test_truncated_blob(graph, plain_registry, two_layer, proxy_for):
    p = proxy_for(plain_registry)
    big = two_layer.layer_digests[1]
    p.add(Fault("short", f"/blobs/{big}", after=1000, times=None))
    svc = make_service(graph)
    with pytest.raises(RegistryError) as e:
        svc.pull(via(p, "pull/two:1"))
    assert "truncated" in str(e.value)
    assert_not_listed(graph, via(p, "pull/two:1"))
    assert not graph.store.exists(big)


def test_connection_cut_mid_blob_resumes(graph, plain_registry, two_layer, proxy_for):
    p = proxy_for(plain_registry)
    big = two_layer.layer_digests[1]
    p.add(Fault("cut", f"/blobs/{big}", after=100_000, times=2))
    svc = make_service(graph)
    assert svc.pull(via(p, "pull/two:1")) == two_layer.id
    gets = [h for (m, path, h) in p.log if m == "GET" and big in path]
    assert len(gets) == 3
    assert "Range" not in gets[0]
    assert gets[1].get("Range") == "bytes=100000-"
    assert gets[2].get("Range") == "bytes=200000-"


def test_500s_are_retried(graph, plain_registry, two_layer, proxy_for):
    p = proxy_for(plain_registry)
    p.add(Fault("status", r"/manifests/", status=500, times=2))
    p.add(Fault("status", r"/blobs/sha256", status=503, times=3))
    svc = make_service(graph)
    assert svc.pull(via(p, "pull/two:1")) == two_layer.id
    # and a registry that keeps failing gives a clear error and no image
    p.clear()
    p.add(Fault("status", r"/manifests/", status=500, times=None))
    graph2_name = via(p, "pull/two:1")
    with pytest.raises(RegistryError) as e:
        make_service(graph).pull(graph2_name.replace(":1", ":2"))
    assert "500" in str(e.value)


def test_resume_from_partial_ingest_after_restart(graph, plain_registry, two_layer, proxy_for):
    """A daemon killed mid-download left bytes in the store's ingest: the next pull asks the
    registry only for the rest."""
    big = two_layer.layer_digests[1]
    blob = two_layer.blobs[big]
    w = graph.store.writer(big, big, len(blob))
    w.write(blob[:123_456])
    w.close()
    p = proxy_for(plain_registry)
    rec = Recorder()
    assert make_service(graph).pull(via(p, "pull/two:1"), progress=rec) == two_layer.id
    gets = [h for (m, path, h) in p.log if m == "GET" and big in path]
    assert [g.get("Range") for g in gets] == ["bytes=123456-"]
    first = next(x for x in rec.messages if x.get("status") == "Downloading"
                 and x["id"] == big.split(":")[1][:12])
    assert first["progressDetail"]["current"] > 123_456


def test_range_ignored_by_server(graph, plain_registry, two_layer, proxy_for):
    """A server that answers 200 to a Range request: the bytes we have are skipped."""
    big = two_layer.layer_digests[1]
    blob = two_layer.blobs[big]
    w = graph.store.writer(big, big, len(blob))
    w.write(blob[:5000])
    w.close()
    p = proxy_for(plain_registry)
    body = blob
    p.add(Fault("replace", f"/blobs/{big}", body=body, content_type="application/octet-stream"))
    assert make_service(graph).pull(via(p, "pull/two:1")) == two_layer.id


def test_parallel_downloads_and_waiting(graph, plain_registry):
    im = Image([random_layer(50_000, f"l{i}") for i in range(5)])
    Uploader(plain_registry.url).image("pull/five", "1", im)
    rec = Recorder()
    assert make_service(graph).pull(f"{plain_registry.host}/pull/five:1",
                                    progress=rec) == im.id
    waiting = [m["id"] for m in rec.messages if m.get("status") == "Waiting"]
    assert len(waiting) == 2
    complete = [m["id"] for m in rec.messages if m.get("status") == "Pull complete"]
    ids = [d.split(":")[1][:12] for d in im.layer_digests]
    if getattr(getattr(graph, "driver", None), "name", "") == "overlay":
        assert sorted(complete) == sorted(ids)      # each layer in its own dir: side by side
    else:
        assert complete == ids                      # vfs copies the parent: in order


def test_lease_held_during_pull(graph, plain_registry, two_layer, monkeypatch):
    seen = []
    orig = graph.apply_layer

    def spy(*a, **kw):
        seen.append(kw.get("lease"))
        return orig(*a, **kw)

    monkeypatch.setattr(graph, "apply_layer", spy)
    make_service(graph).pull(f"{plain_registry.host}/pull/two:1")
    assert seen and all(seen)


def test_same_blob_twice_in_one_image(graph, plain_registry):
    empty = random_layer(10, "x")
    im = Image([busybox_layer(), empty, empty])
    Uploader(plain_registry.url).image("pull/dup", "1", im)
    assert make_service(graph).pull(f"{plain_registry.host}/pull/dup:1") == im.id


def test_error_message_shape():
    from sampan.images import error_message
    msg = error_message(ImageNotFound("No such image: x"))
    assert msg == {"errorDetail": {"message": "No such image: x"}, "error": "No such image: x"}


@pytest.mark.parametrize("kind", ["absolute", "traversal", "symlink_escape"])
def test_hostile_layer_from_registry(graph, plain_registry, tmp_path, kind):
    """A layer that tries to write outside: a clear error, no image, nothing outside."""
    imagebuild = pytest.importorskip("imagebuild")
    if not hasattr(graph, "layer_dirs"):
        pytest.skip("the fake graph does not unpack")
    outside = tmp_path / "outside"
    outside.mkdir()
    tar = imagebuild.hostile_layers(outside)[kind]
    im = Image([busybox_layer(), tar])
    Uploader(plain_registry.url).image("pull/hostile", kind, im)
    name = f"{plain_registry.host}/pull/hostile:{kind}"
    with pytest.raises(SampanError) as e:
        make_service(graph).pull(name)
    assert e.value.status in (400, 500)
    assert list(outside.iterdir()) == []
    assert_not_listed(graph, name)


def test_kill_9_mid_pull_then_resume(tmp_path, plain_registry, proxy_for):
    """A process killed (SIGKILL) in the middle of a pull leaves a consistent store; the next
    pull resumes the partial blob with a Range request and completes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from registries import make_graph

    im = Image([busybox_layer(), random_layer(3_000_000, "big")])
    Uploader(plain_registry.url).image("pull/crash", "1", im)
    big = im.layer_digests[1]
    p = proxy_for(plain_registry)
    p.add(Fault("slow", f"/blobs/{big}", after=32 * 1024, times=None))
    root = tmp_path / "root"
    name = f"{p.host}/pull/crash:1"
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(os.path.dirname(__file__))!r})\n"
        "from registries import make_graph, make_service\n"
        f"g = make_graph({str(root)!r})\n"
        f"make_service(g).pull({name!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        partial = 0
        while time.monotonic() < deadline and partial < 300_000:
            assert proc.poll() is None, "the pull ended before it could be killed"
            for ref in (root / "ingest").glob("*/ref"):
                try:
                    if big in ref.read_text():
                        partial = (ref.parent / "data").stat().st_size
                except OSError:
                    pass
            time.sleep(0.02)
        assert partial >= 300_000
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    graph = make_graph(root)
    try:
        assert_not_listed(graph, name)
        p.clear()
        assert make_service(graph).pull(name) == im.id
        ranges = [h.get("Range") for (m, path, h) in p.log if m == "GET" and big in path]
        assert len(ranges) == 1 and ranges[0] and int(ranges[0][6:-1]) >= 300_000
        assert graph.resolve(name) == im.id
    finally:
        if hasattr(graph, "close"):
            graph.close()
