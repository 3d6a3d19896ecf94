"""The overlayfs helper of the storage driver: ``sampan._runtime.mount_overlay`` / ``unmount``.

Real mounts on the real kernel: layer precedence, copy-up into the upper directory,
whiteouts, a lower list far longer than the one page that mount(2) accepts for its options,
and refusals that leave nothing mounted.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sampan import _runtime

ContainerError = _runtime.ContainerError


def mountpoints() -> set:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def is_mounted(path: Path) -> bool:
    return str(path) in mountpoints()


def overlay_options(path: Path) -> str:
    """The superblock options of the overlay mounted at ``path`` (as mountinfo shows them)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(path):
                sep = fields.index("-")
                assert fields[sep + 1] == "overlay", line
                return fields[sep + 3]
    raise AssertionError(f"{path} is not mounted")


def kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    return (int(release[0]), int(release[1])) >= (major, minor)


def unmount_quietly(target: Path) -> None:
    while is_mounted(target):
        _runtime.unmount(str(target))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def place(tmpdir755):
    """A fresh directory for one test, made canonical (the kernel reports real paths)."""
    return Path(os.path.realpath(tmpdir755))


# --------------------------------------------------------------------------- (a) semantics


def test_three_layers_upper_work_precedence_copy_up_and_whiteout(place):
    # lower[0] is the topmost layer, as in overlayfs' lowerdir=top:middle:bottom.
    lower = [place / "l0", place / "l1", place / "l2"]
    upper, work, target = place / "upper", place / "work", place / "merged"
    for d in (*lower, upper, work, target):
        d.mkdir()
    for i, layer in enumerate(lower):
        write(layer / "everywhere", f"layer {i}\n")
        write(layer / f"only{i}", f"only in layer {i}\n")
        write(layer / "dir" / f"from{i}", f"dir entry of layer {i}\n")
    write(lower[1] / "mid-and-bottom", "middle\n")
    write(lower[2] / "mid-and-bottom", "bottom\n")
    write(lower[2] / "bottom-only-edited", "original\n")
    write(lower[2] / "doomed", "whited out\n")
    write(lower[1] / "dir" / "doomed-too", "whited out as well\n")
    write(upper / "everywhere", "upper\n")
    # A whiteout is a character device 0:0 in the upper layer.
    os.mknod(upper / "doomed", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    (upper / "dir").mkdir()
    os.mknod(upper / "dir" / "doomed-too", stat.S_IFCHR | 0o600, os.makedev(0, 0))

    assert not is_mounted(target)
    _runtime.mount_overlay([str(p) for p in lower], str(target), str(upper), str(work))
    try:
        assert is_mounted(target)
        opts = overlay_options(target)
        assert f"lowerdir={lower[0]}:{lower[1]}:{lower[2]}" in opts, opts
        assert f"upperdir={upper}" in opts and f"workdir={work}" in opts, opts

        # Precedence: upper over l0 over l1 over l2.
        assert (target / "everywhere").read_text() == "upper\n"
        assert (target / "mid-and-bottom").read_text() == "middle\n"
        for i in range(3):
            assert (target / f"only{i}").read_text() == f"only in layer {i}\n"
        # Directories merge across every layer.
        assert sorted(os.listdir(target / "dir")) == ["from0", "from1", "from2"]

        # The whiteouts hide the lower files, in the root and in a merged directory.
        assert not (target / "doomed").exists()
        assert "doomed" not in os.listdir(target)
        assert not (target / "dir" / "doomed-too").exists()
        assert (lower[2] / "doomed").read_text() == "whited out\n"

        # Writes land in the upper layer; the lower layers never change.
        write(target / "new-file", "written through the overlay\n")
        assert (upper / "new-file").read_text() == "written through the overlay\n"
        with open(target / "bottom-only-edited", "a") as f:
            f.write("appended\n")
        assert (upper / "bottom-only-edited").read_text() == "original\nappended\n"
        assert (lower[2] / "bottom-only-edited").read_text() == "original\n"
        write(target / "dir" / "from1", "rewritten\n")
        assert (upper / "dir" / "from1").read_text() == "rewritten\n"
        assert (lower[1] / "dir" / "from1").read_text() == "dir entry of layer 1\n"

        # Deleting a lower file through the overlay makes a whiteout in upper.
        os.unlink(target / "only2")
        assert not (target / "only2").exists()
        st = os.lstat(upper / "only2")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
        assert (lower[2] / "only2").exists()
    finally:
        unmount_quietly(target)
    assert not is_mounted(target)
    # Unmounted: the target is the empty directory it was.
    assert os.listdir(target) == []


def test_read_only_overlay_without_upper(place):
    lower = [place / "a", place / "b"]
    target = place / "merged"
    for d in (*lower, target):
        d.mkdir()
    write(lower[0] / "f", "a\n")
    write(lower[1] / "f", "b\n")
    write(lower[1] / "g", "b only\n")
    _runtime.mount_overlay([str(p) for p in lower], str(target))
    try:
        assert (target / "f").read_text() == "a\n"
        assert (target / "g").read_text() == "b only\n"
        with pytest.raises(OSError):
            write(target / "h", "no upper layer, no writes\n")
    finally:
        unmount_quietly(target)


def test_extra_options_are_passed(place):
    lower, upper, work, target = (place / n for n in ("l", "u", "w", "m"))
    for d in (lower, upper, work, target):
        d.mkdir()
    write(lower / "f", "x\n")
    _runtime.mount_overlay([str(lower)], str(target), str(upper), str(work),
                           ["uuid=off", "volatile"])
    try:
        opts = overlay_options(target).split(",")
        assert "uuid=off" in opts and "fsync=volatile" in opts, opts
        assert (target / "f").read_text() == "x\n"
    finally:
        unmount_quietly(target)


# --------------------------------------------------------------------------- (b) many layers


def make_layers(base: Path, count: int, name_len: int) -> list:
    """``count`` layers under ``base``, topmost first; layer i holds ``layer-<i>`` and ``top``."""
    layers = []
    for i in range(count):
        name = f"{i:03d}-" + "x" * (name_len - 4)
        layer = base / name
        write(layer / f"layer-{i}", f"{i}\n")
        write(layer / "top", f"{i}\n")
        layers.append(layer)
    return layers


@pytest.mark.parametrize("shape", ["long-names", "paths-over-255-bytes"])
def test_lowerdir_longer_than_a_page(place, shape):
    """120 layers whose lowerdir option is far over 4096 bytes still mount.

    ``long-names``: ~100-byte paths with long layer names, too long for one page even
    relative to their common parent, so only the lowerdir+ mount API (Linux 6.8) takes them.
    ``paths-over-255-bytes``: each path is longer than fsconfig accepts as a string, so they
    go as file descriptors (Linux 6.13) or, on older kernels, relative to their long common
    parent (which holds upper and work too).
    """
    if shape == "long-names":
        base = place / "layers"
        layers = make_layers(base, 120, 60)
        upper, work = place / "upper", place / "work"
    else:
        base = place / ("p" * 200) / ("q" * 200)
        layers = make_layers(base / "layers", 120, 12)
        assert all(len(str(p)) > 255 for p in layers)
        upper, work = base / "upper", base / "work"
        rel = ":".join(str(p.relative_to(base)) for p in layers)
        assert len(f"lowerdir={rel},upperdir=upper,workdir=work") < 4096
    lowerdir = ":".join(str(p) for p in layers)
    assert len(f"lowerdir={lowerdir}") > 2 * 4096
    if shape == "long-names":
        rel = ":".join(p.name for p in layers)
        assert len(f"lowerdir={rel}") > 4096

    target = place / "merged"
    for d in (upper, work, target):
        d.mkdir()
    # Extra options, a key=value one and a flag, travel the same way as the layers.
    extra = ["uuid=off", "volatile"]
    _runtime.mount_overlay([str(p) for p in layers], str(target), str(upper), str(work), extra)
    try:
        opts = overlay_options(target).split(",")
        assert "uuid=off" in opts and "fsync=volatile" in opts, opts
        # Which way it went: the new mount API shows "lowerdir+=" once per layer.
        new_api = kernel_at_least(6, 8) if shape == "long-names" else kernel_at_least(6, 13)
        if new_api:
            assert [o for o in opts if o.startswith("lowerdir+=")] == [
                f"lowerdir+={p}" for p in layers], opts[:3]
        names = set(os.listdir(target))
        assert {f"layer-{i}" for i in range(120)} <= names
        assert (target / "layer-0").read_text() == "0\n"
        assert (target / "layer-119").read_text() == "119\n"
        assert (target / "top").read_text() == "0\n"  # the first layer is the topmost
        write(target / "written", "w\n")
        assert (upper / "written").read_text() == "w\n"
        write(target / "top", "changed\n")
        assert (upper / "top").read_text() == "changed\n"
        assert (layers[0] / "top").read_text() == "0\n"
    finally:
        unmount_quietly(target)
    assert not is_mounted(target)


# --------------------------------------------------------------------------- (c) bad input


@pytest.mark.parametrize("bad", [":", ",", "\\"])
def test_separator_in_a_path_is_refused(place, bad):
    good = place / "good"
    odd = place / f"odd{bad}layer"
    target = place / "merged"
    for d in (good, odd, target):
        d.mkdir()
    before = mountpoints()
    with pytest.raises(ContainerError) as info:
        _runtime.mount_overlay([str(good), str(odd)], str(target))
    msg = str(info.value)
    assert msg.startswith("overlay") and str(odd) in msg and "contains" in msg, msg
    assert mountpoints() == before
    # The same check guards upper and work.
    with pytest.raises(ContainerError, match="contains"):
        _runtime.mount_overlay([str(good)], str(target), str(odd), str(place / "w"))
    assert mountpoints() == before


def test_missing_layer_is_refused_naming_it(place):
    present = place / "present"
    missing = place / "missing-layer"
    target = place / "merged"
    for d in (present, target):
        d.mkdir()
    before = mountpoints()
    try:
        with pytest.raises(ContainerError) as info:
            _runtime.mount_overlay([str(present), str(missing)], str(target))
        msg = str(info.value)
        assert str(missing) in msg and "ENOENT" in msg, msg
        assert mountpoints() == before
    finally:
        unmount_quietly(target)


def test_missing_layer_in_a_long_list_is_refused_naming_it(place):
    layers = make_layers(place / "layers", 120, 60)
    missing = layers[77]
    for f in missing.iterdir():
        f.unlink()
    missing.rmdir()
    target = place / "merged"
    target.mkdir()
    before = mountpoints()
    try:
        with pytest.raises(ContainerError) as info:
            _runtime.mount_overlay([str(p) for p in layers], str(target))
        msg = str(info.value)
        assert str(missing) in msg and "ENOENT" in msg, msg
        assert mountpoints() == before
    finally:
        unmount_quietly(target)


def test_missing_target_and_no_layers_are_refused(place):
    layer = place / "l"
    layer.mkdir()
    before = mountpoints()
    with pytest.raises(ContainerError) as info:
        _runtime.mount_overlay([str(layer)], str(place / "no-such-target"))
    assert str(place / "no-such-target") in str(info.value)
    assert "ENOENT" in str(info.value)
    with pytest.raises(ContainerError, match="no lower layers"):
        _runtime.mount_overlay([], str(place))
    assert mountpoints() == before


def test_unmount_of_something_not_mounted_says_so(place):
    with pytest.raises(ContainerError) as info:
        _runtime.unmount(str(place))
    msg = str(info.value)
    assert "unmount" in msg and str(place) in msg and "EINVAL" in msg, msg
