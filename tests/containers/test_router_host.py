"""Hosts like an OpenWrt router (issue 6): a data root on overlayfs (OpenWrt's root file
system) falls back to vfs and says why; a kernel without seccomp runs containers without the
default profile, with a clear warning; missing cgroup controllers are reported as docker does.

The overlay root is a real overlayfs mount the test makes. A kernel without seccomp cannot be
booted here, so that case goes through SAMPAN_FAKE_NO_SECCOMP (sampan/hostfeatures.py), which
only changes what the daemon believes; the runtime and the kernel are the real ones."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from daemonlib import mkdir, start_daemon


def run_ok(d, *argv: str) -> str:
    r = d.sampan("run", "--rm", *argv)
    assert r.returncode == 0, r.stderr + d.log()
    return r.stdout


@pytest.fixture
def overlay_root(tmp_path):
    """A directory on a real overlayfs mount (upper on the test's own file system)."""
    base = tmp_path / "ovl"
    dirs = {n: mkdir(base / n) for n in ("lower", "upper", "work", "merged")}
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}",
                    str(dirs["merged"])], check=True)
    try:
        yield dirs["merged"]
    finally:
        subprocess.run(["umount", "-l", str(dirs["merged"])], check=False)


@pytest.fixture
def tmpfs_root(tmp_path):
    mnt = mkdir(tmp_path / "tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_select_driver_by_file_system(overlay_root, tmpfs_root):
    from sampan.drivers.storage import OverlayDriver, VfsDriver, fs_type, select_driver

    assert fs_type(overlay_root) == "overlay"
    d = select_driver(overlay_root / "snapshots")
    assert isinstance(d, VfsDriver)
    assert "is on overlayfs, which overlayfs cannot use for its upper directory" in d.reason
    assert "ext4, f2fs, btrfs" in d.reason
    with pytest.raises(Exception, match="overlay is not usable"):
        select_driver(overlay_root / "snapshots2", requested="overlay")
    # tmpfs can be an upper directory: overlay there
    assert isinstance(select_driver(tmpfs_root / "snapshots"), OverlayDriver)


def test_data_root_on_overlayfs_uses_vfs_and_runs(overlay_root, busybox_archive):
    d = start_daemon(overlay_root / "sampand", busybox_archive)
    try:
        st, info = d.json("GET", "/info")
        assert st == 200 and info["Driver"] == "vfs"
        status = dict(info["DriverStatus"])
        assert status["Backing Filesystem"] == "overlay"
        assert "overlayfs cannot use for its upper directory" in status["Reason"]
        assert any("overlay storage driver is not usable" in w for w in info["Warnings"])
        assert "storage driver vfs" in d.log()
        r = d.sampan("info")
        assert " Storage Driver: vfs" in r.stdout and "WARNING: the overlay storage" in r.stderr
        assert run_ok(d, "busybox", "sh", "-c", "echo hi > /x && cat /x") == "hi\n"
    finally:
        d.stop()


def test_kernel_without_seccomp(croot, busybox_archive, monkeypatch):
    monkeypatch.setenv("SAMPAN_FAKE_NO_SECCOMP", "1")
    d = start_daemon(croot / "noseccomp", busybox_archive)
    try:
        st, info = d.json("GET", "/info")
        assert not any("seccomp" in s for s in info["SecurityOptions"])
        assert "WARNING: seccomp is not enabled in this kernel: containers run without the " \
               "default seccomp profile" in info["Warnings"]
        assert "seccomp is not enabled in this kernel" in d.log()
        # the container runs, without a filter (the kernel's own view of it)
        out = run_ok(d, "busybox", "grep", "^Seccomp:", "/proc/self/status")
        assert out.split() == ["Seccomp:", "0"]
        # a profile asked for explicitly is an error, as dockerd's
        profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW"})
        st, _, body = d.request("POST", "/containers/create", json.dumps({
            "Image": "busybox", "Cmd": ["true"],
            "HostConfig": {"SecurityOpt": [f"seccomp={profile}"]}}).encode(),
            {"Content-Type": "application/json"})
        assert st == 400, body
        assert b"seccomp is not enabled in your kernel" in body
    finally:
        d.stop()


def test_seccomp_on_by_default(sd):
    st, info = sd.json("GET", "/info")
    assert "name=seccomp,profile=builtin" in info["SecurityOptions"]
    assert not any("seccomp" in w for w in info["Warnings"])
    assert run_ok(sd, "busybox", "grep", "^Seccomp:", "/proc/self/status").split() == \
        ["Seccomp:", "2"]


def test_cgroup_features_and_warnings():
    from sampan import hostfeatures as hf

    # this host's v1 hierarchies (memory, cpu, cpuset, pids are mounted)
    v1 = hf.cgroup_features()
    unified = Path("/sys/fs/cgroup/unified")
    if hf.cgroup_version() == "1":
        assert v1["MemoryLimit"] and v1["CPUShares"] and v1["PidsLimit"]
    # the real cgroup2 mount of this hybrid host, read as a pure v2 host: it has no
    # controllers of its own (they are all on v1), exactly what a small kernel offers
    if not (unified / "cgroup.controllers").exists():
        pytest.skip("no cgroup2 mount")
    ctrl = set((unified / "cgroup.controllers").read_text().split())
    v2 = hf.cgroup_features(unified)
    assert hf.cgroup_version(unified) == "2"
    assert v2["MemoryLimit"] == ("memory" in ctrl)
    assert v2["PidsLimit"] == ("pids" in ctrl)
    warnings = hf.warnings(v2)
    if "memory" not in ctrl:
        assert "WARNING: No memory limit support" in warnings
        assert "WARNING: No swap limit support" in warnings
    if "cpu" not in ctrl:
        assert "WARNING: No cpu cfs quota support" in warnings
    assert hf.warnings({k: True for k in v2}) == ([] if hf.seccomp_supported() else
                                                  [hf.NO_SECCOMP_WARNING])
