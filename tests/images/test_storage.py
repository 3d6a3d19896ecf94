"""Storage drivers for real: choosing overlay or vfs (and saying why), container root file
systems on real overlay mounts and vfs copies, whiteouts honoured by both."""

from __future__ import annotations

import io
import os
import subprocess

import imagebuild as ib
import pytest
from sampan.drivers.storage import select_driver
from sampan.errors import InvalidArgument


def mounted(path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == os.path.realpath(path) for line in f)


@pytest.fixture
def host_mount():
    done = []

    def mount(*args):
        subprocess.run(["mount", *map(str, args)], check=True)
        done.append(str(args[-1]))

    yield mount
    for target in reversed(done):
        subprocess.run(["umount", "-l", target], check=False)


def test_default_is_overlay_on_ext4(graph):
    assert graph.driver_name == "overlay"
    assert graph.driver_reason == "overlay"


def test_driver_choice_requested_recorded_unknown(data_root, make_graph):
    g = make_graph("vfs")
    assert (g.driver_name, g.driver_reason) == ("vfs", "vfs: requested")
    g.apply_layer(None, io.BytesIO(ib.tar_bytes([ib.File("f", "x")])), None)
    g.close()
    # A data root with layers keeps its driver.
    g = make_graph()
    assert g.driver_name == "vfs"
    assert "created with vfs" in g.driver_reason
    g.close()
    with pytest.raises(InvalidArgument, match="holds layers of the vfs storage driver"):
        make_graph("overlay")
    with pytest.raises(InvalidArgument, match="unknown storage driver"):
        select_driver(data_root / "x", "aufs")


def test_overlayfs_data_root_falls_back_to_vfs(tmp_path, host_mount):
    base = tmp_path / "ovl"
    for d in ("l", "u", "w", "m"):
        (base / d).mkdir(parents=True)
    host_mount("-t", "overlay", "overlay", "-o",
               f"lowerdir={base}/l,upperdir={base}/u,workdir={base}/w", base / "m")
    root = base / "m" / "data"
    driver = select_driver(root)
    assert driver.name == "vfs"
    assert "overlayfs" in driver.reason
    with pytest.raises(InvalidArgument, match="overlay is not usable"):
        select_driver(root, "overlay")


def test_tmpfs_data_root_keeps_overlay(tmp_path, host_mount):
    (tmp_path / "t").mkdir()
    host_mount("-t", "tmpfs", "tmpfs", tmp_path / "t")
    assert select_driver(tmp_path / "t" / "data").name == "overlay"


def run_in(rootfs, script):
    out = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", script], check=False,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_container_rootfs_honours_whiteouts(make_graph, put_image, tmp_path, driver):
    graph = make_graph(driver)
    img = ib.busybox_image("gzip")
    image_id = put_image(graph, img, "busybox:latest")
    cdir = tmp_path / "containers" / "c1"
    cdir.parent.mkdir()
    rootfs = graph.prepare("busybox", "c1", cdir)
    if driver == "overlay":
        assert mounted(rootfs)
    # Layer 2 deleted /etc/group (whiteout) and emptied /var/spool (opaque) before adding.
    assert not (rootfs / "etc/group").exists()
    assert (rootfs / "etc/motd").read_text() == "welcome to sampan\n"
    assert (rootfs / "etc/passwd").exists()
    assert sorted(os.listdir(rootfs / "var/spool")) == ["new"]
    assert run_in(rootfs, "cat /etc/motd; ls /var/spool; echo changed > /etc/passwd; "
                          "rm /etc/hostname; cat /etc/passwd") == \
        "welcome to sampan\nnew\nchanged\n"
    # The container's writes stay in the container; the image's layers are untouched.
    for d in graph.layer_dirs(image_id):
        if (d / "etc/passwd").exists():
            assert (d / "etc/passwd").read_text().startswith("root:")
        if (d / "etc/hostname").exists():
            assert (d / "etc/hostname").read_text() == "busybox\n"
    # The image cannot go while a container uses its layers (unless forced).
    from sampan.errors import Conflict

    with pytest.raises(Conflict, match="container c1 is using its referenced image"):
        graph.remove("busybox")
    with pytest.raises(Conflict, match="being used by stopped container c1"):
        graph.remove(image_id)
    assert graph.resolve("busybox:latest") == image_id
    assert graph.df()[0]["Containers"] == 1
    graph.release("c1", remove=True)
    assert not mounted(rootfs)
    assert not cdir.exists()
    assert graph.check() == []


def test_overlay_many_layers(make_graph, tmp_path):
    graph = make_graph("overlay")
    layers = [ib.layer([ib.File(f"file{i}", str(i)), ib.File("top", str(i))], "none")
              for i in range(60)]
    cfg = ib.config(layers)
    graph.store.put(cfg.data)
    parent = None
    for la in layers:
        parent = graph.apply_layer(parent, io.BytesIO(la.data), la.media_type,
                                   la.diff_id).chain_id
    graph.add_image(cfg.digest, None, "many:layers")
    rootfs = graph.prepare("many:layers", "deep", tmp_path / "deep")
    try:
        assert (rootfs / "top").read_text() == "59"
        assert sorted(os.listdir(rootfs)) == sorted(["top"] + [f"file{i}" for i in range(60)])
    finally:
        graph.release("deep")


def test_release_keeps_dir_and_prepare_again(make_graph, put_image, tmp_path):
    graph = make_graph()
    put_image(graph, ib.busybox_image("zstd"), "bb:z")
    cdir = tmp_path / "c2"
    rootfs = graph.prepare("bb:z", "c2", cdir)
    (rootfs / "kept").write_text("in the upper dir")
    graph.release("c2", remove=False)
    assert not mounted(rootfs)
    rootfs = graph.prepare("bb:z", "c2", cdir)
    assert (rootfs / "kept").read_text() == "in the upper dir"
    assert graph.prepare("bb:z", "c2", cdir) == rootfs    # idempotent while mounted
    graph.release("c2")


def mounts_below(path) -> list:
    top = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return [mp for mp in (ln.split()[4] for ln in f) if mp == top or mp.startswith(top + "/")]


def test_open_recovers_a_probe_left_mounted(make_graph, data_root):
    """A daemon killed during the overlay probe of its graph open leaves the probe's overlay
    mounted on snapshots/.probe-*/m (issue 4: every later open, so every container create,
    failed with EBUSY 'm'). The next open detaches and removes it."""
    make_graph().close()
    probe = data_root / "snapshots" / ".probe-1-deadbeef"
    for d in ("l", "u", "w", "m"):
        (probe / d).mkdir(parents=True)
    (probe / "l" / "f").write_text("x")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={probe}/l,upperdir={probe}/u,workdir={probe}/w", str(probe / "m")],
                   check=True)
    try:
        g = make_graph()
        assert g.driver_name == "overlay"
        assert not probe.exists()
        assert mounts_below(data_root) == []
        assert g.check() == []
    finally:
        subprocess.run(["umount", "-l", str(probe / "m")], check=False, capture_output=True)


def test_rmtree_never_removes_through_a_mount(tmp_path, host_mount):
    """What is mounted under a tree being removed (a bind-mounted volume, an image layer) is
    never deleted through the mount: rmtree refuses; detach_mounts (deepest first, stacked
    mounts too) then lets it go, and the mounted content is intact."""
    from sampan.graph.fsutil import detach_mounts, rmtree

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("image content")
    victim = tmp_path / "victim"
    (victim / "a" / "b").mkdir(parents=True)
    (victim / "a" / "file").write_text("goes")
    host_mount("--bind", precious, victim / "a" / "b")
    host_mount("-t", "tmpfs", "tmpfs", victim / "a" / "b")            # stacked on it
    host_mount("--bind", precious, victim / "a" / "b")                 # and again
    with pytest.raises(OSError) as e:
        rmtree(victim)
    assert e.value.errno == 16
    assert (precious / "keep").read_text() == "image content"
    with pytest.raises(OSError):
        rmtree(victim / "a" / "b")       # the mount point itself
    assert (precious / "keep").read_text() == "image content"
    assert detach_mounts(victim) == 3
    assert mounts_below(victim) == []
    rmtree(victim)
    assert not victim.exists()
    assert (precious / "keep").read_text() == "image content"
