"""Layer unpacking for real: busybox layers (gzip, zstd, plain, bzip2, xz), every kind of
member and its metadata, whiteouts for both drivers, hostile tars, broken streams, and a
kill -9 in the middle of an unpack."""

from __future__ import annotations

import bz2
import gc
import io
import lzma
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import imagebuild as ib
import pytest
from sampan.errors import InvalidArgument

CAP_NET_RAW = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")


def layer_fs(graph, info):
    return graph.snapshots / info.chain_id.split(":")[1] / "fs"


def snapshot_entries(graph):
    return sorted(os.listdir(graph.snapshots))


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_busybox_layer_unpacks_and_runs(graph, compression):
    img = ib.busybox_image(compression, extra=False)
    la = img.layers[0]
    info = graph.apply_layer(None, io.BytesIO(la.data), la.media_type, la.diff_id,
                             digest=la.digest)
    assert info.diff_id == la.diff_id == info.chain_id
    assert info.digest == la.digest
    assert info.tar_size == len(la.tar)
    fs = layer_fs(graph, info)
    assert (fs / "bin/busybox").read_bytes() == ib.BUSYBOX.read_bytes()
    applets = len(ib._applets())
    assert os.stat(fs / "bin/busybox").st_nlink == applets + 1
    assert os.stat(fs / "bin/sh").st_ino == os.stat(fs / "bin/busybox").st_ino
    assert stat.S_IMODE(os.stat(fs / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(fs / "root").st_mode) == 0o700
    assert os.readlink(fs / "usr/bin/env") == "../../bin/env"
    # The unpacked layer is a working root file system.
    script = "echo hello from $(cat /etc/hostname)"
    out = subprocess.run(["chroot", str(fs), "/bin/sh", "-c", script], check=False,
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "hello from busybox\n", out.stderr
    assert graph.has_layer(info.chain_id)
    # Once per chain id: a second apply does not read the stream.
    again = graph.apply_layer(None, io.BytesIO(b"not read"), la.media_type, la.diff_id)
    assert again.chain_id == info.chain_id


@pytest.mark.parametrize("kind", ["bzip2", "xz"])
def test_other_compressions_detected_by_magic(graph, kind):
    tar = ib.tar_bytes([ib.File("a", "x" * 5000), ib.Dir("d"), ib.File("d/b", "y")])
    data = bz2.compress(tar) if kind == "bzip2" else lzma.compress(tar)
    info = graph.apply_layer(None, io.BytesIO(data), None)
    assert info.diff_id == ib.sha256(tar)
    assert (layer_fs(graph, info) / "a").read_text() == "x" * 5000


def test_concatenated_gzip_members_and_wrong_media_type(graph):
    tar = ib.tar_bytes([ib.File(f"f{i}", str(i) * 100) for i in range(50)])
    half = len(tar) // 2
    data = ib.compress(tar[:half], "gzip") + ib.compress(tar[half:], "gzip")
    # Magic bytes decide, whatever the media type says.
    info = graph.apply_layer(None, io.BytesIO(data), ib.OCI_LAYER["zstd"])
    assert info.diff_id == ib.sha256(tar)
    assert (layer_fs(graph, info) / "f49").read_text() == "49" * 100


def test_member_kinds_and_metadata(make_graph):
    graph = make_graph()
    members = [
        ib.Dir("d", mode=0o750, uid=1000, gid=1001, mtime=1_600_000_000),
        ib.File("d/setuid", "#!/bin/sh\n", mode=0o4755, uid=1000, gid=1001,
                mtime=1_500_000_000),
        ib.File("d/caps", "ping", mode=0o755,
                xattrs={"security.capability": CAP_NET_RAW, "user.note": b"\xffbinary\x00"}),
        ib.Hardlink("d/caps-link", "d/caps"),
        ib.Symlink("d/abs-link", "/etc/passwd", uid=7, gid=8, mtime=1_400_000_000),
        ib.Symlink("d/rel-link", "../d/setuid"),
        ib.Device("d/null", "c", 1, 3, mode=0o666),
        ib.Device("d/loop0", "b", 7, 0, mode=0o660, gid=6),
        ib.Fifo("d/fifo", mode=0o620),
        ib.Dir("empty", mode=0o711, mtime=1_300_000_000),
        ib.File("d/late", "written after the directory entry", mtime=1_700_000_001),
        ib.File("trusted", "x", xattrs={"trusted.overlay.redirect": b"/etc",
                                       "trusted.overlay.opaque": b"y"}),
    ]
    data = ib.tar_bytes(members)
    info = graph.apply_layer(None, io.BytesIO(data), None)
    fs = layer_fs(graph, info)
    st = os.stat(fs / "d")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1000, 1001)
    assert st.st_mtime == 1_600_000_000        # set after its contents were written
    st = os.stat(fs / "d/setuid")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 1000, 1001)
    assert st.st_mtime == 1_500_000_000
    assert os.getxattr(fs / "d/caps", "security.capability") == CAP_NET_RAW
    assert os.getxattr(fs / "d/caps", "user.note") == b"\xffbinary\x00"
    assert os.stat(fs / "d/caps-link").st_ino == os.stat(fs / "d/caps").st_ino
    st = os.lstat(fs / "d/abs-link")
    assert stat.S_ISLNK(st.st_mode) and os.readlink(fs / "d/abs-link") == "/etc/passwd"
    assert (st.st_uid, st.st_gid, st.st_mtime) == (7, 8, 1_400_000_000)
    assert os.readlink(fs / "d/rel-link") == "../d/setuid"
    st = os.lstat(fs / "d/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(fs / "d/loop0")
    assert stat.S_ISBLK(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (7, 0)
    assert st.st_gid == 6
    st = os.lstat(fs / "d/fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620
    st = os.stat(fs / "empty")
    assert stat.S_IMODE(st.st_mode) == 0o711 and st.st_mtime == 1_300_000_000
    # A layer cannot smuggle overlayfs metadata in.
    assert not [x for x in os.listxattr(fs / "trusted") if x.startswith("trusted.overlay.")]

    # vfs copies the parent into each layer: all of it must survive the copy.
    vfs = make_graph("vfs", root=graph.root.parent / "vfsroot")
    base = vfs.apply_layer(None, io.BytesIO(data), None)
    top = vfs.apply_layer(base.chain_id, io.BytesIO(ib.tar_bytes([ib.File("new", "n")])), None)
    fs2 = layer_fs(vfs, top)
    for name in ("d", "d/setuid", "d/caps", "d/abs-link", "d/null", "d/loop0", "d/fifo",
                 "empty"):
        a, b = os.lstat(fs / name), os.lstat(fs2 / name)
        assert (a.st_mode, a.st_uid, a.st_gid, a.st_rdev) == (b.st_mode, b.st_uid, b.st_gid,
                                                              b.st_rdev), name
        assert a.st_mtime_ns == b.st_mtime_ns, name
    assert os.getxattr(fs2 / "d/caps", "security.capability") == CAP_NET_RAW
    assert os.stat(fs2 / "d/caps-link").st_ino == os.stat(fs2 / "d/caps").st_ino
    assert (fs2 / "new").read_text() == "n"


def test_symlinks_inside_the_layer_are_followed(graph):
    data = ib.tar_bytes([ib.Dir("usr"), ib.Dir("usr/lib"), ib.Symlink("lib", "usr/lib"),
                         ib.File("lib/libx.so", "x"), ib.Symlink("usr/up", ".."),
                         ib.File("usr/up/top", "t")])
    info = graph.apply_layer(None, io.BytesIO(data), None)
    fs = layer_fs(graph, info)
    assert (fs / "usr/lib/libx.so").read_text() == "x"
    assert os.path.islink(fs / "lib")
    assert (fs / "top").read_text() == "t"


def test_replacing_entries(graph):
    data = ib.tar_bytes([ib.Dir("a"), ib.File("a/f", "1"), ib.File("a", "now a file"),
                         ib.Symlink("s", "/nowhere"), ib.File("s", "file over link"),
                         ib.File("x", "old"), ib.File("x", "new")])
    info = graph.apply_layer(None, io.BytesIO(data), None)
    fs = layer_fs(graph, info)
    assert (fs / "a").read_text() == "now a file"
    assert not os.path.islink(fs / "s") and (fs / "s").read_text() == "file over link"
    assert (fs / "x").read_text() == "new"


def whiteout_layers():
    base = ib.tar_bytes([ib.Dir("etc"), ib.File("etc/keep", "k"), ib.File("etc/gone", "g"),
                         ib.Dir("etc/sub"), ib.File("etc/sub/f", "f"),
                         ib.Dir("opq"), ib.File("opq/old", "o"), ib.Dir("opq/olddir"),
                         ib.File("opq/olddir/x", "x")])
    top = ib.tar_bytes([ib.Dir("etc"), ib.Whiteout("etc/gone"), ib.Whiteout("etc/sub"),
                        ib.Dir("opq"), ib.File("opq/early", "e"), ib.Opaque("opq"),
                        ib.File("opq/new", "n"), ib.Whiteout("missing/parent")])
    return base, top


def test_whiteouts_overlay_form(graph):
    base, top = whiteout_layers()
    b = graph.apply_layer(None, io.BytesIO(base), None)
    t = graph.apply_layer(b.chain_id, io.BytesIO(top), None)
    fs = layer_fs(graph, t)
    for name in ("etc/gone", "etc/sub", "missing/parent"):
        st = os.lstat(fs / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, name
    assert os.getxattr(fs / "opq", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(fs / "opq")) == ["early", "new"]
    assert not (fs / "etc/keep").exists()      # only the changes live in the layer


def test_whiteouts_vfs_form(make_graph):
    graph = make_graph("vfs")
    base, top = whiteout_layers()
    b = graph.apply_layer(None, io.BytesIO(base), None)
    t = graph.apply_layer(b.chain_id, io.BytesIO(top), None)
    fs = layer_fs(graph, t)
    assert sorted(os.listdir(fs / "etc")) == ["keep"]
    # Opaque: what lower layers had is gone, what this layer wrote (even before) stays.
    assert sorted(os.listdir(fs / "opq")) == ["early", "new"]
    assert not (fs / "missing").exists()
    assert sorted(os.listdir(layer_fs(graph, b) / "etc")) == ["gone", "keep", "sub"]


@pytest.mark.parametrize("driver", ["overlay", "vfs"])
@pytest.mark.parametrize("name", sorted(ib.hostile_layers("/x")))
def test_hostile_layers_refused(make_graph, outside, driver, name):
    graph = make_graph(driver)
    data = ib.hostile_layers(outside)[name]
    before = snapshot_entries(graph)
    with pytest.raises(InvalidArgument) as err:
        graph.apply_layer(None, io.BytesIO(ib.compress(data, "gzip")), None)
    msg = str(err.value)
    assert "layer member" in msg, msg
    assert os.listdir(outside) == ["victim"]
    assert (outside / "victim").read_text() == "do not touch\n"
    assert os.stat(outside / "victim").st_nlink == 1
    assert snapshot_entries(graph) == before
    assert graph.db.query("SELECT * FROM layers") == []
    assert graph.check() == []


def test_hostile_member_named_in_error(graph, outside):
    data = ib.hostile_layers(outside)["symlink_escape"]
    with pytest.raises(InvalidArgument, match="'escape/pwned'.*symlink"):
        graph.apply_layer(None, io.BytesIO(data), None)


def test_broken_streams_leave_nothing(graph):
    tar = ib.busybox_image("gzip", extra=False).layers[0]
    cases = {
        "diff id": (tar.data, "sha256:" + "0" * 64, None),
        "blob digest": (tar.data, None, "sha256:" + "1" * 64),
        "truncated gzip": (tar.data[: len(tar.data) // 2], None, None),
        "corrupt gzip": (tar.data[:1000] + b"\x00" * 5000 + tar.data[6000:], None, None),
        "not a tar": (b"this is not a tar archive at all" * 40, None, None),
    }
    for what, (data, diff_id, digest) in cases.items():
        with pytest.raises(InvalidArgument):
            graph.apply_layer(None, io.BytesIO(data), None, diff_id, digest=digest)
        assert snapshot_entries(graph) == [], what
        assert not graph.db.query("SELECT * FROM layers"), what
    with pytest.raises(InvalidArgument, match="encrypted"):
        graph.apply_layer(None, io.BytesIO(tar.data),
                          "application/vnd.oci.image.layer.v1.tar+gzip+encrypted")


def test_empty_layer(graph):
    info = graph.apply_layer(None, io.BytesIO(b""), None)
    assert info.diff_id == ib.sha256(b"") and info.size == 0
    info = graph.apply_layer(None, io.BytesIO(ib.tar_bytes([])), None)
    assert info.diff_id == ib.sha256(ib.tar_bytes([]))


def test_vfs_needs_parent(make_graph):
    graph = make_graph("vfs")
    from sampan.errors import NotFound

    with pytest.raises(NotFound):
        graph.apply_layer("sha256:" + "2" * 64, io.BytesIO(ib.tar_bytes([])), None)


SLOW_APPLY = textwrap.dedent("""
    import io, sys, time
    sys.path.insert(0, {here!r})
    import imagebuild as ib
    from sampan.graph import Graph

    class Slow(io.RawIOBase):
        def __init__(self, data):
            self.data, self.pos = data, 0
        def readable(self):
            return True
        def read(self, n=-1):
            n = 4096 if n is None or n < 0 else min(n, 4096)
            chunk = self.data[self.pos:self.pos + n]
            self.pos += len(chunk)
            if self.pos > len(self.data) // 2:
                open({marker!r}, "w").close()
                time.sleep(0.01)
            return chunk

    g = Graph({root!r}, sync=False)
    la = ib.busybox_image("none", extra=False).layers[0]
    g.apply_layer(None, Slow(la.data), la.media_type, la.diff_id)
    print("finished")
""")


def test_kill_during_unpack_leaves_no_half_layer(make_graph, data_root, tmp_path):
    here = os.path.dirname(os.path.abspath(ib.__file__))
    marker = tmp_path / "halfway"
    script = SLOW_APPLY.format(here=here, marker=str(marker), root=str(data_root))
    make_graph().close()   # created with this test's driver
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, "the unpacking child ended early"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert b"finished" not in proc.stdout.read()
    # A half-unpacked temporary directory was left behind by the dead process...
    leftovers = [e for e in os.listdir(data_root / "snapshots") if e.startswith(".tmp-")]
    assert leftovers
    graph = make_graph()
    # ... and reopening drops it; nothing half-done is visible.
    assert snapshot_entries(graph) == []
    assert graph.check() == []
    la = ib.busybox_image("none", extra=False).layers[0]
    assert not graph.has_layer(la.diff_id)
    info = graph.apply_layer(None, io.BytesIO(la.data), la.media_type, la.diff_id)
    assert (layer_fs(graph, info) / "bin/busybox").stat().st_size == ib.BUSYBOX.stat().st_size


def test_parallel_applies(graph):
    from concurrent.futures import ThreadPoolExecutor

    tars = [ib.tar_bytes([ib.File(f"f{i}", str(i) * 100_000)]) for i in range(4)]
    jobs = [*tars, tars[0], tars[0]]          # the same layer three times at once
    with ThreadPoolExecutor(6) as pool:
        infos = list(pool.map(lambda t: graph.apply_layer(
            None, io.BytesIO(ib.compress(t, "gzip")), None, ib.sha256(t)), jobs))
    assert len({i.chain_id for i in infos}) == 4
    assert len(snapshot_entries(graph)) == 4
    assert graph.check() == []


def test_many_and_deep_directories_no_fd_leak(graph):
    deep = "/".join(["d"] * 700)
    members = [ib.File(f"{deep}/bottom", "deep")]
    for i in range(1200):
        members += [ib.Dir(f"x{i}", mtime=1_600_000_000 + i), ib.File(f"x{i}/f", str(i))]
    members += [ib.Hardlink("x0/deep-link", f"{deep}/bottom"),
                ib.Dir("x5"), ib.Hardlink("x5", "x7/f")]       # a hardlink replaces a dir
    data = ib.tar_bytes(members)
    gc.collect()  # an earlier test's garbage must not close its fds in the middle
    fds = len(os.listdir("/proc/self/fd"))
    info = graph.apply_layer(None, io.BytesIO(data), None)
    assert len(os.listdir("/proc/self/fd")) <= fds  # none left open (a leak only adds)
    fs = layer_fs(graph, info)
    assert (fs / deep / "bottom").read_text() == "deep"
    assert os.stat(fs / "x0/deep-link").st_ino == os.stat(fs / deep / "bottom").st_ino
    assert os.stat(fs / "x5").st_ino == os.stat(fs / "x7/f").st_ino
    assert os.stat(fs / "x1199").st_mtime == 1_600_001_199
    assert (fs / "x1000/f").read_text() == "1000"


@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar", "python-gnu"])
def test_tars_written_by_other_tools(graph, tmp_path, fmt):
    src = tmp_path / "src"
    long_dir = src / ("a" * 60) / ("b" * 60)
    long_dir.mkdir(parents=True)
    (long_dir / ("c" * 90)).write_text("long name")
    (src / "exe").write_text("#!/bin/sh\n")
    os.chown(src / "exe", 123456, 654321)          # large ids (base-256 in GNU headers)
    os.chmod(src / "exe", 0o4755)                  # (chown clears setuid and capabilities)
    os.setxattr(src / "exe", "security.capability", CAP_NET_RAW)
    os.symlink("x" * 150, src / "longlink")
    os.link(src / "exe", src / "exe-hard")
    os.utime(src / "exe", (1_234_567_890, 1_234_567_890))
    if fmt == "python-gnu":
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
            tf.add(src, arcname=".")
        data = buf.getvalue()
    else:
        if fmt == "ustar":   # ustar cannot hold these: keep what fits
            os.unlink(src / "longlink")
            os.chown(src / "exe", 1000, 1000)
            os.chmod(src / "exe", 0o4755)
        data = subprocess.run(["tar", f"--format={fmt}", "--xattrs", "--xattrs-include=*",
                               "-C", str(src), "-cf", "-", "."], check=True,
                              capture_output=True).stdout
    info = graph.apply_layer(None, io.BytesIO(data), None)
    fs = layer_fs(graph, info)
    assert (fs / ("a" * 60) / ("b" * 60) / ("c" * 90)).read_text() == "long name"
    st = os.stat(fs / "exe")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_mtime == 1_234_567_890
    assert st.st_uid == (1000 if fmt == "ustar" else 123456)
    assert os.stat(fs / "exe-hard").st_ino == st.st_ino
    if fmt != "ustar":
        assert os.readlink(fs / "longlink") == "x" * 150
    if fmt == "posix":            # GNU tar writes xattrs as SCHILY.xattr pax records
        assert os.getxattr(fs / "exe", "security.capability") == CAP_NET_RAW
