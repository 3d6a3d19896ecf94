# ruff: noqa: F811 - pytest fixtures imported from registries.py
"""Push to real registries, and interop with skopeo both ways."""

import json

import pytest
from registries import (  # noqa: F401 - fixtures
    SERVICE,
    Fault,
    Image,
    Recorder,
    Uploader,
    busybox_layer,
    graph,
    isolated_config,
    make_service,
    needs_skopeo,
    plain_registry,
    proxy_for,
    random_layer,
    reg_tmp,
    sha,
    skopeo,
    token_registry,
    token_server,
    write_oci_layout,
)
from sampan.errors import InvalidArgument, SampanError, Unauthorized

pytestmark = pytest.mark.usefixtures("isolated_config")
ALICE = {"username": "alice", "password": "wonderland"}


def short(d):
    return d.split(":")[1][:12]


@pytest.fixture(scope="module")
def source(plain_registry):
    im = Image([busybox_layer(), random_layer(200_000, "p1"), random_layer(3000, "p2")])
    Uploader(plain_registry.url).image("push/src", "1", im)
    return im


def test_push_mount_exists_and_digest(graph, plain_registry, source):
    svc = make_service(graph)
    src = f"{plain_registry.host}/push/src:1"
    svc.pull(src)
    dst = f"{plain_registry.host}/push/dst:2"
    graph.tag(source.id, _ref(dst))
    rec = Recorder()
    digest = svc.push(dst, progress=rec)
    assert digest == source.digest                       # the pulled manifest, byte for byte
    ids = [short(sha(t)) for t in source.tars]           # progress ids are diff ids
    assert rec.messages[0] == {"status": f"The push refers to repository "
                                         f"[{plain_registry.host}/push/dst]"}
    for i in ids:
        st = rec.statuses(i)
        assert st[0] == "Preparing"
        assert st[-1] == "Mounted from push/src"
    assert {"status": f"2: digest: {digest} size: {len(source.manifest)}"} in rec.messages
    assert rec.messages[-1] == {"progressDetail": {}, "aux": {
        "Tag": "2", "Digest": digest, "Size": len(source.manifest)}}
    # again: everything is there
    rec = Recorder()
    assert svc.push(dst, progress=rec) == digest
    for i in ids:
        assert rec.statuses(i)[-1] == "Layer already exists"
    # and it pulls back
    graph2 = graph
    assert svc.pull(dst) == source.id == graph2.resolve(dst)


def _ref(s):
    from sampan.reference import parse
    return parse(s)


def test_push_upload_token_auth(graph, plain_registry, token_registry, token_server, source):
    svc = make_service(graph)
    svc.pull(f"{plain_registry.host}/push/src:1")
    dst = f"{token_registry.host}/alice/pushed:latest"
    graph.tag(source.id, _ref(dst))
    with pytest.raises(Unauthorized):
        svc.push(dst)                                     # anonymous cannot push
    with pytest.raises(Unauthorized):
        svc.push(dst, auth={"username": "bob", "password": "builder"})   # bob only pulls
    token_server.requests.clear()
    rec = Recorder()
    digest = svc.push(dst, auth=ALICE, progress=rec)
    assert digest == source.digest
    assert any("repository:alice/pushed:pull,push" in r["scopes"]
               for r in token_server.requests)
    ids = [short(sha(t)) for t in source.tars]
    for i in ids:
        st = rec.statuses(i)
        assert st[0] == "Preparing" and "Pushing" in st and st[-1] == "Pushed"
    pushing = [m for m in rec.messages if m.get("status") == "Pushing" and m["id"] == ids[1]]
    assert pushing[-1]["progressDetail"]["current"] == pushing[-1]["progressDetail"]["total"]
    assert rec.messages[-2] == {"status": f"latest: digest: {digest} size: "
                                          f"{len(source.manifest)}"}
    # cross-repository mount needs pull on the source: the token asks for both
    dst2 = f"{token_registry.host}/alice/second:latest"
    graph.tag(source.id, _ref(dst2))
    token_server.requests.clear()
    rec = Recorder()
    svc.push(dst2, auth=ALICE, progress=rec)
    assert rec.statuses(ids[1])[-1] == "Mounted from alice/pushed"
    assert any(set(r["scopes"]) >= {"repository:alice/second:pull,push",
                                    "repository:alice/pushed:pull"}
               for r in token_server.requests)


def test_chunked_upload(graph, plain_registry, source, proxy_for):
    svc = make_service(graph, chunk_size=64 * 1024)
    svc.pull(f"{plain_registry.host}/push/src:1")
    p = proxy_for(plain_registry)
    dst = f"{p.host}/push/chunked:1"
    graph.tag(source.id, _ref(dst))
    assert svc.push(dst) == source.digest
    uploads: dict = {}
    for m, path, h in p.log:
        if m == "PATCH":
            uploads.setdefault(path.split("?")[0], []).append(h["Content-Range"])
    assert len(uploads) == 2                      # two layers bigger than a chunk
    for ranges in uploads.values():
        assert ranges[:2] == ["0-65535", "65536-131071"]


def test_push_retries_500(graph, plain_registry, source, proxy_for):
    svc = make_service(graph)
    svc.pull(f"{plain_registry.host}/push/src:1")
    p = proxy_for(plain_registry)
    p.add(Fault("status", r"/manifests/", method="PUT", status=500, times=1))
    p.add(Fault("status", r"/blobs/sha256", method="HEAD", status=502, times=2))
    dst = f"{p.host}/push/retry:1"
    graph.tag(source.id, _ref(dst))
    assert svc.push(dst) == source.digest


def test_push_errors(graph, plain_registry):
    svc = make_service(graph)
    with pytest.raises(SampanError) as e:
        svc.push(f"{plain_registry.host}/push/none:1")
    assert e.value.status == 404
    with pytest.raises(InvalidArgument):
        svc.push(f"{plain_registry.host}/push/none@sha256:" + "a" * 64)


def test_push_without_stored_manifest(graph, plain_registry, source):
    """An image with no manifest of its own (built, loaded): layers compressed from the
    layer diffs, a schema 2 manifest made."""
    svc = make_service(graph)
    svc.pull(f"{plain_registry.host}/push/src:1")
    rec = graph.image_record(source.id)
    for m in rec["manifests"]:
        graph.store.delete(m["digest"])
    for layer in rec["layers"]:
        for b in layer["blobs"]:
            graph.store.delete(b["digest"])
            graph.store.put(json.dumps({}).encode()) if False else None
    # keep uncompressed diffs only: re-store each layer as its plain tar
    for t in source.tars:
        graph.store.put(t, sha(t))
        if hasattr(graph, "add_layer_blob"):
            graph.add_layer_blob(sha(t), sha(t), "application/vnd.oci.image.layer.v1.tar")
        else:
            graph.layer_blobs.setdefault(sha(t), []).append((sha(t), None, len(t)))
    dst = f"{plain_registry.host}/push/built:1"
    graph.tag(source.id, _ref(dst))
    digest = svc.push(dst)
    assert digest != source.digest
    graph_b = make_service(graph)
    pulled = graph_b.pull(dst)
    assert pulled == source.id


# ---- skopeo interop -----------------------------------------------------------------------

@needs_skopeo
def test_skopeo_pushes_sampan_pulls(graph, plain_registry, tmp_path):
    im = Image([busybox_layer(), random_layer(50_000, "sk")], oci=True)
    layout = write_oci_layout(tmp_path / "oci", im, "v1")
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1",
           f"docker://{plain_registry.host}/interop/from-skopeo:v1")
    insp = json.loads(skopeo("inspect", "--tls-verify=false",
                             f"docker://{plain_registry.host}/interop/from-skopeo:v1").stdout)
    rec = Recorder()
    svc = make_service(graph)
    image_id = svc.pull(f"{plain_registry.host}/interop/from-skopeo:v1", progress=rec)
    assert image_id == im.id
    assert {"status": f"Digest: {insp['Digest']}"} in rec.messages
    assert insp["Digest"] == im.digest


@needs_skopeo
def test_sampan_pushes_skopeo_reads(graph, plain_registry, source, tmp_path):
    svc = make_service(graph)
    svc.pull(f"{plain_registry.host}/push/src:1")
    dst = f"{plain_registry.host}/interop/from-sampan:v2"
    graph.tag(source.id, _ref(dst))
    digest = svc.push(dst)
    insp = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{dst}").stdout)
    assert insp["Digest"] == digest
    assert insp["Layers"] == source.layer_digests
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{dst}").stdout
    assert sha(raw.encode()) == digest
    cfg = json.loads(skopeo("inspect", "--config", "--raw", "--tls-verify=false",
                            f"docker://{dst}").stdout)
    assert cfg["rootfs"]["diff_ids"] == [sha(t) for t in source.tars]
    out = tmp_path / "copy"
    skopeo("copy", "--src-tls-verify=false", f"docker://{dst}", f"dir:{out}")
    for d in source.layer_digests:
        assert (out / d.split(":")[1]).read_bytes() == source.blobs[d]


@needs_skopeo
def test_skopeo_token_registry(graph, token_registry, token_server, tmp_path):
    """skopeo pushes through the token flow with alice's credentials; Sampan pulls it."""
    im = Image([random_layer(2000, "tok")], oci=True)
    layout = write_oci_layout(tmp_path / "oci", im, "t")
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "alice:wonderland",
           f"oci:{layout}:t", f"docker://{token_registry.host}/alice/skopeo:t")
    assert make_service(graph).pull(f"{token_registry.host}/alice/skopeo:t",
                                    auth=ALICE) == im.id
    assert SERVICE


@needs_skopeo
@pytest.mark.parametrize("compression, oci", [("gzip", True), ("zstd", True)])
def test_skopeo_imagebuild_busybox(graph, plain_registry, tmp_path, compression, oci):
    """The busybox image of imagebuild.py (whiteouts, hardlinks), pushed by skopeo from an
    OCI layout, pulled and unpacked by Sampan: same digests, a runnable rootfs."""
    imagebuild = pytest.importorskip("imagebuild")
    if compression == "zstd" and not imagebuild_has_zstd(imagebuild):
        pytest.skip("no zstd compressor")
    img = imagebuild.busybox_image(compression=compression, oci=oci)
    layout = imagebuild.write_oci_layout(tmp_path / "oci", [(img, ["bb:v1"])])
    repo = f"{plain_registry.host}/interop/busybox-{compression}-{int(oci)}"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{repo}:v1")
    insp = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{repo}:v1").stdout)
    assert insp["Digest"] == img.manifest.digest
    rec = Recorder()
    assert make_service(graph).pull(f"{repo}:v1", progress=rec) == img.id
    assert {"status": f"Digest: {img.manifest.digest}"} in rec.messages
    if hasattr(graph, "layer_dirs"):
        dirs = graph.layer_dirs(img.id)
        assert any((d / "bin" / "busybox").exists() for d in dirs)


def imagebuild_has_zstd(imagebuild) -> bool:
    try:
        imagebuild.compress(b"x", "zstd")
    except Exception:  # noqa: BLE001 - any failure means no zstd here
        return False
    return True
