# ruff: noqa: F811 - pytest fixtures imported from registries.py
"""Layers of one pull unpack side by side with overlay (each into a directory of its own) and
in order with vfs (which copies the parent); the compressed bytes are hashed once, by the
download, and a bad blob still never becomes a layer."""

import threading

import pytest
from registries import (  # noqa: F401 - fixtures
    Image,
    Uploader,
    isolated_config,
    make_service,
    plain_registry,
    random_layer,
    reg_tmp,
)
from sampan.errors import SampanError

pytestmark = pytest.mark.usefixtures("isolated_config")


def graph_with(tmp_path, driver):
    from sampan.graph import Graph

    g = Graph(tmp_path / driver, driver=driver, sync=False)
    if g.driver_name != driver:
        g.close()
        pytest.skip(f"{driver} is not usable here: {g.driver_reason}")
    return g


class Overlap:
    """Wraps Graph.apply_layer: counts applies running at once; the first two wait for each
    other, so applies made one after the other fail on the barrier's timeout."""

    def __init__(self, graph, meet: bool):
        self.orig = graph.apply_layer
        self.lock = threading.Lock()
        self.active = self.peak = self.calls = 0
        self.meet = meet
        self.barrier = threading.Barrier(2, timeout=10)
        graph.apply_layer = self

    def __call__(self, *a, **kw):
        with self.lock:
            self.active += 1
            self.calls += 1
            first_two = self.calls <= 2
            self.peak = max(self.peak, self.active)
        try:
            if self.meet and first_two:
                self.barrier.wait()
            return self.orig(*a, **kw)
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture(scope="module")
def four(plain_registry):
    im = Image([random_layer(300_000, f"p{i}") for i in range(4)])
    Uploader(plain_registry.url).image("parallel/four", "1", im)
    return im


def test_overlay_layers_unpack_side_by_side(tmp_path, plain_registry, four):
    g = graph_with(tmp_path, "overlay")
    try:
        spy = Overlap(g, meet=True)
        assert make_service(g).pull(f"{plain_registry.host}/parallel/four:1") == four.id
        assert spy.peak >= 2 and spy.calls == 4
        for d in g.layer_dirs(four.id):
            assert d.is_dir() and any(d.rglob("p*"))
    finally:
        g.close()


def test_vfs_layers_unpack_in_order(tmp_path, plain_registry, four):
    g = graph_with(tmp_path, "vfs")
    try:
        spy = Overlap(g, meet=False)
        assert make_service(g).pull(f"{plain_registry.host}/parallel/four:1") == four.id
        assert spy.peak == 1 and spy.calls == 4
        top = g.layer_dirs(four.id)[0]
        assert sorted(p.name for p in top.iterdir()) == ["p0", "p1", "p2", "p3"]
    finally:
        g.close()


def test_compressed_bytes_hashed_once(tmp_path, plain_registry, four, monkeypatch):
    import sampan.graph.unpack as unpack

    algorithms = []
    orig = unpack.unpack_stream

    def spy(stream, root, media_type=None, whiteouts="overlay", algorithm="sha256"):
        algorithms.append(algorithm)
        return orig(stream, root, media_type, whiteouts, algorithm)

    monkeypatch.setattr("sampan.graph.graph.unpack_stream", spy)
    g = graph_with(tmp_path, "overlay")
    try:
        make_service(g).pull(f"{plain_registry.host}/parallel/four:1")
        assert algorithms == [None] * 4               # the download verified the digest
        # the blobs and their records are right all the same
        for layer in g.image_record(four.id)["layers"]:
            assert [b["digest"] for b in layer["blobs"]][0] in four.layer_digests
    finally:
        g.close()


def test_bad_blob_is_no_layer_in_parallel(tmp_path, plain_registry):
    """A blob whose bytes do not match its digest, among good ones: a clear error, and none of
    the layers of the image is recorded half-verified."""
    good = Image([random_layer(200_000, "g0"), random_layer(200_000, "g1")])
    up = Uploader(plain_registry.url)
    for d, data in good.blobs.items():
        up.blob("parallel/bad", data)
    # a manifest naming layer 1 by the digest of other bytes of the same size
    import json

    from registries import _gzip, sha
    other = _gzip(random_layer(200_000, "zz"))
    up.blob("parallel/bad", other)
    m = json.loads(good.manifest)
    m["layers"][1]["digest"] = sha(other)
    m["layers"][1]["size"] = len(other)
    raw = json.dumps(m).encode()
    up.manifest("parallel/bad", "1", raw, good.manifest_type)
    g = graph_with(tmp_path, "overlay")
    try:
        with pytest.raises(SampanError, match="diff id|verification|digest"):
            make_service(g).pull(f"{plain_registry.host}/parallel/bad:1")
        assert g.list(all=True) == []
        import hashlib
        chain1 = "sha256:" + hashlib.sha256(
            f"{sha(good.tars[0])} {sha(good.tars[1])}".encode()).hexdigest()
        assert not g.has_layer(chain1)                 # the layer the bad blob stood for
    finally:
        g.close()
