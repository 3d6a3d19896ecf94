"""Local image operations: add, list (filters), inspect, history, tag, resolve, remove (docker's
semantics), prune, gc with leases and refcounts, df, save/load round trips, crash consistency."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time

import imagebuild as ib
import pytest
from sampan.errors import Conflict, ImageNotFound, InvalidArgument, InvalidReference


def base_layer_members(tag: str):
    return [ib.Dir("etc"), ib.File("etc/base", "shared base\n"),
            ib.File("etc/which", tag)]


@pytest.fixture
def bb(graph, put_image):
    """busybox:latest in the graph (two layers)."""
    img = ib.busybox_image("gzip")
    put_image(graph, img, "busybox:latest")
    return img


def small_image(name: str, labels=None, created=ib.CREATED, shared=True):
    """A one- or two-layer image; all of them share the busybox base layer when `shared`."""
    layers = [ib.busybox_members()] if shared else []
    layers.append([ib.File(f"{name}.txt", name)])
    return ib.image(*layers, compression="gzip", labels=labels, created=created)


# --------------------------------------------------------------------------- add / inspect


def test_add_list_inspect_history(graph, bb):
    [s] = graph.list()
    assert s["Id"] == bb.id
    assert s["RepoTags"] == ["busybox:latest"]
    assert s["RepoDigests"] == [f"busybox@{bb.manifest.digest}"]
    assert s["Created"] == 1_700_000_000
    assert s["Size"] == sum(graph.layer(ch).size for ch in ib_chains(bb)) > 1_900_000
    assert set(s) >= {"Id", "ParentId", "RepoTags", "RepoDigests", "Created", "Size",
                      "SharedSize", "Labels", "Containers"}
    info = graph.inspect("busybox")
    assert info["Id"] == bb.id
    assert info["RootFS"] == {"Type": "layers", "Layers": bb.diff_ids}
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Config"]["Cmd"] == ["sh"]
    assert info["GraphDriver"]["Name"] == "overlay"
    assert info["GraphDriver"]["Data"]["UpperDir"] == str(graph.layer_dirs("busybox")[0])
    assert info["Metadata"]["LastTagTime"].endswith("Z")
    assert info["Created"] == ib.CREATED
    hist = graph.history("busybox")
    assert [h["CreatedBy"] for h in hist] == ['CMD ["sh"]', "ADD layer1 /", "ADD layer0 /"]
    assert hist[0]["Id"] == bb.id and hist[0]["Tags"] == ["busybox:latest"]
    assert [h["Id"] for h in hist[1:]] == ["<missing>", "<missing>"]
    assert hist[0]["Size"] == 0
    assert hist[2]["Size"] == graph.layer(bb.diff_ids[0]).size
    # Every path a client may use.
    for name in ("busybox", "busybox:latest", "docker.io/library/busybox:latest",
                 "index.docker.io/library/busybox", bb.id, bb.id[7:], bb.id[7:19],
                 f"busybox@{bb.manifest.digest}"):
        assert graph.resolve(name) == bb.id, name
    with pytest.raises(ImageNotFound, match="No such image: nothere"):
        graph.resolve("nothere")
    with pytest.raises(InvalidReference):
        graph.resolve("UPPER")
    assert graph.check() == []


def ib_chains(img):
    from sampan.graph import chain_ids

    return chain_ids(img.diff_ids)


def test_add_image_needs_layers_and_blobs(graph):
    img = small_image("x")
    from sampan.errors import NotFound

    with pytest.raises(NotFound):
        graph.add_image(img.config.digest, None, "x:1")     # config blob not stored
    graph.store.put(img.config.data)
    with pytest.raises(NotFound, match="not unpacked"):
        graph.add_image(img.config.digest, None, "x:1")
    assert graph.list() == []


def test_tag_moves_and_dangling(graph, put_image):
    a = small_image("a")
    b = small_image("b")
    put_image(graph, a, "app:1")
    graph.tag("app:1", "app:latest")
    graph.tag(a.id, "localhost:5000/team/app:v1")
    assert graph.inspect("app")["RepoTags"] == ["app:1", "app:latest",
                                                "localhost:5000/team/app:v1"]
    put_image(graph, b, "app:1")          # the tag moves to b
    assert graph.resolve("app:1") == b.id
    assert graph.inspect(a.id)["RepoTags"] == ["app:latest", "localhost:5000/team/app:v1"]
    with pytest.raises(InvalidArgument, match="digest"):
        graph.tag(a.id, f"app@{a.manifest.digest}")
    ids = {s["Id"] for s in graph.list(filters={"dangling": ["true"]})}
    assert ids == set()
    graph.remove("app:latest")
    graph.remove("localhost:5000/team/app:v1")     # untagging the last tag deletes a
    assert {s["Id"] for s in graph.list()} == {b.id}


# --------------------------------------------------------------------------- list filters


def test_list_filters(graph, put_image):
    old = small_image("old", labels={"tier": "db", "team": "x"}, created="2020-01-01T00:00:00Z")
    mid = small_image("mid", labels={"tier": "web"}, created="2021-06-01T12:00:00.5Z")
    new = small_image("new", created="2023-01-01T00:00:00+01:00")
    put_image(graph, old, "busybox:old")
    put_image(graph, mid, "registry.example.com/web/mid:2")
    put_image(graph, new, None)      # dangling

    def ids(**f):
        return [s["Id"] for s in graph.list(filters={k: v for k, v in f.items()})]

    assert ids() == [new.id, mid.id, old.id]        # newest first
    assert ids(dangling=["true"]) == [new.id]
    assert ids(dangling=["false"]) == [mid.id, old.id]
    assert ids(label=["tier"]) == [mid.id, old.id]
    assert ids(label=["tier=db"]) == [old.id]
    assert ids(label=["tier=db", "team=x"]) == [old.id]
    assert ids(label=["tier=db", "team=y"]) == []
    assert ids(before=["registry.example.com/web/mid:2"]) == [old.id]
    assert ids(since=["busybox:old"]) == [new.id, mid.id]
    assert ids(reference=["busybox"]) == [old.id]
    assert ids(reference=["busy*"]) == [old.id]
    assert ids(reference=["busybox:o*"]) == [old.id]
    assert ids(reference=["*/web/*"]) == [mid.id]
    assert ids(reference=["registry.example.com/web/mid"]) == [mid.id]
    assert ids(reference=["mid"]) == []             # "*" and names do not cross "/"
    [s] = graph.list(filters={"reference": ["busybox:old"]})
    assert s["RepoTags"] == ["busybox:old"]
    # The old map form of the API's filters is accepted too.
    assert ids(label={"tier=web": True}) == [mid.id]
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        graph.list(filters={"colour": ["red"]})
    with pytest.raises(InvalidArgument):
        graph.list(filters={"dangling": ["maybe"]})
    summaries = {s["Id"]: s for s in graph.list()}
    assert summaries[new.id]["RepoTags"] == [] and summaries[new.id]["RepoDigests"] == []
    assert summaries[old.id]["Labels"] == {"tier": "db", "team": "x"}


# --------------------------------------------------------------------------- remove


def test_remove_untags_then_deletes(graph, put_image):
    img = small_image("r")
    put_image(graph, img, "one:1")
    graph.tag("one:1", "two:2")
    assert graph.remove("one:1") == [{"Untagged": "one:1"},
                                     {"Untagged": f"one@{img.manifest.digest}"}]
    assert graph.resolve("two:2") == img.id
    records = graph.remove("two:2")
    assert records[0] == {"Untagged": "two:2"}
    assert {"Deleted": img.id} in records
    # Its own layer went; the busybox base layer went too (nothing else used it).
    deleted = [r["Deleted"] for r in records if "Deleted" in r]
    assert set(deleted) == {img.id, *ib_chains(img)}
    assert graph.list() == []
    assert os.listdir(graph.snapshots) == []
    assert list(graph.store.blobs()) == []
    assert graph.check() == []


def test_remove_by_id_rules(graph, put_image):
    img = small_image("i")
    put_image(graph, img, "repo-a:1")
    graph.tag(img.id, "repo-b:1")
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        graph.remove(img.id[7:19])
    records = graph.remove(img.id[7:19], force=True)
    assert {"Untagged": "repo-a:1"} in records and {"Untagged": "repo-b:1"} in records
    assert {"Deleted": img.id} in records
    # One tag (and the repo digest of the same repository): removing by id deletes.
    put_image(graph, img, "same:1")
    records = graph.remove(img.id)
    assert records[:2] == [{"Untagged": "same:1"}, {"Untagged": f"same@{img.manifest.digest}"}]
    assert {"Deleted": img.id} in records
    # Two tags, even of one repository, need force (docker's rule).
    put_image(graph, img, "same:1")
    graph.tag(img.id, "same:2")
    with pytest.raises(Conflict):
        graph.remove(img.id)
    graph.remove(img.id, force=True)
    with pytest.raises(ImageNotFound):
        graph.remove(img.id)


def test_shared_layers_refcounted(graph, put_image):
    a, b = small_image("a"), small_image("b")
    put_image(graph, a, "a:1")
    put_image(graph, b, "b:1")
    base = a.diff_ids[0]
    assert base == b.diff_ids[0]
    refcount = graph.db.one("SELECT refcount FROM layers WHERE chain_id=?", (base,))[0]
    assert refcount == 2
    # Unpacked once: 3 layer directories for 4 layers.
    assert len(os.listdir(graph.snapshots)) == 3
    [sa] = [s for s in graph.df() if s["Id"] == a.id]
    assert sa["SharedSize"] == graph.layer(base).size and sa["Containers"] == 0
    graph.remove("a:1")
    assert graph.has_layer(base)
    assert (graph.layer_dirs("b:1")[-1] / "bin/busybox").exists()
    assert graph.db.one("SELECT refcount FROM layers WHERE chain_id=?", (base,))[0] == 1
    assert graph.layers_size() == sum(graph.layer(c).size for c in ib_chains(b))
    graph.remove("b:1")
    assert not graph.has_layer(base)
    assert graph.check() == []


def test_noprune_and_parents(graph, put_image):
    parent = small_image("p")
    child = small_image("c")
    put_image(graph, parent, None)
    put_image(graph, child, "child:1")
    graph.db.conn.execute("UPDATE images SET parent=? WHERE id=?", (parent.id, child.id))
    with pytest.raises(Conflict, match="dependent child images"):
        graph.remove(parent.id)
    assert [s["Id"] for s in graph.list()] == [child.id]        # the intermediate is hidden
    assert {s["Id"] for s in graph.list(all=True)} == {parent.id, child.id}
    records = graph.remove("child:1", noprune=True)
    assert {"Deleted": child.id} in records and graph.resolve(parent.id) == parent.id
    put_image(graph, child, "child:1")
    graph.db.conn.execute("UPDATE images SET parent=? WHERE id=?", (parent.id, child.id))
    records = graph.remove("child:1")
    assert {"Deleted": parent.id} in records
    assert graph.list(all=True) == []


# --------------------------------------------------------------------------- prune, gc, leases


def test_prune(graph, put_image):
    keep = small_image("keep", labels={"keep": "yes"})
    dangling = small_image("dangling")
    old = small_image("old", created="2001-01-01T00:00:00Z")
    put_image(graph, keep, "keep:1")
    put_image(graph, dangling, None)
    put_image(graph, old, "old:1")
    res = graph.prune()
    deleted = [r for r in res["ImagesDeleted"] if "Deleted" in r]
    assert deleted[0] == {"Deleted": dangling.id}
    assert res["SpaceReclaimed"] == len("dangling")       # its own layer: "dangling.txt"
    assert {s["Id"] for s in graph.list()} == {keep.id, old.id}
    res = graph.prune({"dangling": ["false"], "until": ["2010-01-01T00:00:00Z"]})
    assert {"Deleted": old.id} in res["ImagesDeleted"]
    assert {"Untagged": "old:1"} in res["ImagesDeleted"]
    res = graph.prune({"dangling": ["false"], "label!": ["keep=yes"]})
    assert res["ImagesDeleted"] is None
    res = graph.prune({"dangling": ["false"]})
    assert {"Deleted": keep.id} in res["ImagesDeleted"]
    assert res["SpaceReclaimed"] > 1_900_000       # the busybox base went with the last one
    assert graph.list() == [] and os.listdir(graph.snapshots) == []
    with pytest.raises(InvalidArgument):
        graph.prune({"reference": ["x"]})


def test_gc_respects_leases(graph):
    la = ib.layer([ib.File("leased", "x")], "gzip")
    blob = b"a blob being pulled"
    with graph.lease("pull-1") as lease:
        graph.lease_add(lease, ib.sha256(blob))
        graph.store.put(blob)
        info = graph.apply_layer(None, io.BytesIO(la.data), la.media_type, lease=lease)
        graph.gc()
        assert graph.has_layer(info.chain_id) and graph.store.exists(ib.sha256(blob))
    freed = graph.gc()
    assert not graph.has_layer(info.chain_id) and not graph.store.exists(ib.sha256(blob))
    assert freed >= len(blob) + 1
    assert os.listdir(graph.snapshots) == []
    with pytest.raises(Conflict), graph.lease("x"), graph.lease("x"):
        pass
    from sampan.errors import NotFound

    with pytest.raises(NotFound):
        graph.lease_add("no-such-lease", ib.sha256(blob))


def test_gc_keeps_images_and_drops_orphans(graph, bb):
    orphan = graph.store.put(b"orphan")
    w = graph.store.writer("stale-download")
    w.write(b"partial")
    w.close()
    freed = graph.gc(ingest_max_age=3600)
    assert not graph.store.exists(orphan)
    assert [i["ref"] for i in graph.store.ingests()] == ["stale-download"]   # still fresh
    assert freed == len(b"orphan")
    graph.gc(ingest_max_age=0)
    assert graph.store.ingests() == []
    for d in [bb.config.digest, bb.manifest.digest, *(la.digest for la in bb.layers)]:
        assert graph.store.exists(d)
    assert graph.check() == []


def test_leases_dropped_when_holder_died(make_graph):
    g = make_graph()
    cm = g.lease("crashed-pull")
    cm.__enter__()
    g.lease_add("crashed-pull", "sha256:" + "3" * 64)
    g.close()                                   # never released: the process "died"
    g2 = make_graph()
    assert g2.db.query("SELECT * FROM leases") == []
    assert g2.db.query("SELECT * FROM lease_resources") == []


# --------------------------------------------------------------------------- save / load


def archive_members(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: (tf.extractfile(m).read() if m.isreg() else None) for m in tf}


def test_save_load_round_trip(graph, bb, put_image, make_graph, tmp_path):
    other = small_image("other")
    put_image(graph, other, "other:1")
    graph.tag("busybox", "busybox:second")
    data = b"".join(graph.save(["busybox", "other:1"]))
    files = archive_members(data)
    manifest = json.loads(files["manifest.json"])
    assert [m["RepoTags"] for m in manifest] == [["busybox:latest", "busybox:second"],
                                                  ["other:1"]]
    assert manifest[0]["Config"] == f"blobs/sha256/{bb.id[7:]}"
    for m in manifest:
        for layer_path in m["Layers"]:
            assert ib.sha256(files[layer_path]) == "sha256:" + layer_path.split("/")[-1]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert {d["annotations"]["io.containerd.image.name"] for d in index["manifests"]} == {
        "docker.io/library/busybox:latest", "docker.io/library/busybox:second",
        "docker.io/library/other:1"}
    # The shared busybox layer is written once.
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = [m.name for m in tf]
    assert names.count(f"blobs/sha256/{bb.diff_ids[0][7:]}") == 1
    assert len(names) == len(set(names))

    fresh = make_graph(root=tmp_path / "fresh")
    msgs = fresh.load(io.BytesIO(data))
    assert msgs == ["Loaded image: busybox:latest", "Loaded image: busybox:second",
                    "Loaded image: other:1"]
    assert fresh.resolve("busybox:latest") == bb.id
    assert fresh.resolve("other:1") == other.id
    assert fresh.inspect("busybox")["RootFS"]["Layers"] == bb.diff_ids
    assert fresh.check() == []
    # Saved again from the fresh store: the same images, the same bytes of each layer.
    again = archive_members(b"".join(fresh.save(["busybox:latest"])))
    for name, content in again.items():
        if name.startswith("blobs/sha256/") and content is not None:
            assert content == files[name]
    fresh.gc()
    assert fresh.check() == []
    assert (fresh.layer_dirs("other:1")[-1] / "bin/busybox").exists()


def test_save_by_id_has_no_tags_and_load_twice(graph, bb, make_graph, tmp_path):
    data = b"".join(graph.save([bb.id[7:19]]))
    manifest = json.loads(archive_members(data)["manifest.json"])
    assert manifest[0]["RepoTags"] is None
    fresh = make_graph(root=tmp_path / "fresh")
    assert fresh.load(io.BytesIO(data)) == [f"Loaded image ID: {bb.id}"]
    assert fresh.load(io.BytesIO(gzip.compress(data))) == [f"Loaded image ID: {bb.id}"]
    assert fresh.list()[0]["RepoTags"] == []
    with pytest.raises(ImageNotFound):
        list(graph.save(["nothere:1"]))


@pytest.mark.parametrize("layout", ["legacy", "oci"])
def test_load_docker_archives(graph, layout):
    a, b = small_image("a"), small_image("b")
    data = ib.docker_archive([(a, ["a:1"]), (b, ["b:1", "localhost:5000/b:2"])], layout)
    if layout == "legacy":
        # The shared base layer is written once, then symlinked.
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            assert any(m.issym() and m.name.endswith("layer.tar") for m in tf)
    msgs = graph.load(io.BytesIO(data))
    assert msgs == ["Loaded image: a:1", "Loaded image: b:1", "Loaded image: localhost:5000/b:2"]
    assert graph.resolve("a:1") == a.id and graph.resolve("localhost:5000/b:2") == b.id
    assert len(os.listdir(graph.snapshots)) == 3
    assert graph.check() == []
    # Loading again moves nothing and adds nothing.
    assert graph.load(io.BytesIO(data)) == msgs
    assert len(os.listdir(graph.snapshots)) == 3


def test_load_renames_old_tag_and_refuses_bad_archives(graph, put_image):
    a, b = small_image("a"), small_image("b")
    put_image(graph, a, "app:1")
    msgs = graph.load(io.BytesIO(ib.docker_archive([(b, ["app:1"])])))
    renamed = (f"The image app:1 already exists, renaming the old one with ID {a.id} to "
               "empty string")
    assert msgs == [renamed, "Loaded image: app:1"]
    assert graph.list(filters={"dangling": ["true"]})[0]["Id"] == a.id
    # A layer that does not match the config's diff id.
    bad = ib.image([ib.File("x", "1")])
    evil = ib.Image([ib.layer([ib.File("x", "2")])], bad.config, bad.manifest)
    with pytest.raises(InvalidArgument, match="diff id mismatch"):
        graph.load(io.BytesIO(ib.docker_archive([(evil, ["evil:1"])])))
    with pytest.raises(ImageNotFound):
        graph.resolve("evil:1")
    with pytest.raises(InvalidArgument, match="manifest.json"):
        graph.load(io.BytesIO(ib.tar_bytes([ib.File("hello", "x")])))
    with pytest.raises(InvalidArgument):
        graph.load(io.BytesIO(b"not an archive" * 100))
    graph.gc()
    assert graph.check() == []


def test_load_hostile_layer_refused(graph, outside):
    hostile = ib.image(ib.hostile_layers(outside)["symlink_escape"])
    with pytest.raises(InvalidArgument, match="layer member 'escape/pwned'"):
        graph.load(io.BytesIO(ib.docker_archive([(hostile, ["hostile:1"])])))
    assert os.listdir(outside) == ["victim"]
    assert graph.list() == []
    graph.gc()
    assert os.listdir(graph.snapshots) == [] and list(graph.store.blobs()) == []


# --------------------------------------------------------------------------- crash safety


CHURN = textwrap.dedent("""
    import io, sys
    sys.path.insert(0, {here!r})
    sys.path.insert(0, {tests!r})
    import imagebuild as ib
    from conftest import put_image
    from sampan.graph import Graph

    g = Graph({root!r}, sync=False)
    images = [ib.image(ib.busybox_members(), [ib.File(f"f{{i}}", str(i) * 5000)],
                       compression="gzip", labels={{"n": str(i)}}) for i in range(4)]
    print("ready", flush=True)
    n = 0
    while True:
        img = images[n % 4]
        put_image(g, img, f"churn:{{n % 3}}")
        if n % 2:
            other = f"churn:{{(n + 1) % 3}}"
            g.remove(other) if g.list(filters={{"reference": [other]}}) else None
        if n % 5 == 4:
            g.prune({{"dangling": ["false"]}})
        n += 1
""")


def test_kill_at_random_points_leaves_a_consistent_store(make_graph, data_root):
    here = os.path.dirname(os.path.abspath(ib.__file__))
    make_graph().close()
    rng = random.Random(1234)
    script = CHURN.format(here=here, tests=here, root=str(data_root))
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        g = make_graph()
        assert g.check() == []
        for s in g.list():
            for d in g.layer_dirs(s["Id"]):
                assert d.is_dir()
        g.close()
    g = make_graph()
    g.prune({"dangling": ["false"]})
    g.gc(ingest_max_age=0)
    assert g.list() == [] and os.listdir(g.snapshots) == []
    assert list(g.store.blobs()) == []


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed")
def test_save_and_load_interoperate_with_skopeo(graph, bb, make_graph, tmp_path):
    saved = tmp_path / "saved.tar"
    saved.write_bytes(b"".join(graph.save(["busybox:latest"])))
    # skopeo reads what save wrote, as a docker-archive and as an OCI archive.
    for transport in ("docker-archive", "oci-archive"):
        out = subprocess.run(["skopeo", "inspect", "--config", f"{transport}:{saved}"],
                             check=True, capture_output=True, text=True).stdout
        assert json.loads(out)["rootfs"]["diff_ids"] == bb.diff_ids
    # … and save loads what skopeo wrote.
    theirs = tmp_path / "skopeo.tar"
    subprocess.run(["skopeo", "copy", "-q", f"docker-archive:{saved}",
                    f"docker-archive:{theirs}:example.com/bb:copied"], check=True)
    fresh = make_graph(root=tmp_path / "fresh")
    assert fresh.load(theirs.open("rb")) == ["Loaded image: example.com/bb:copied"]
    assert fresh.inspect("example.com/bb:copied")["RootFS"]["Layers"] == bb.diff_ids
    assert fresh.check() == []
