"""sampan.bundle: the busybox rootfs and the runc-equivalent config.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from sampan.bundle import BUSYBOX, busybox_rootfs, make_bundle, merge, runc_spec


@pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed")
def test_runc_spec_is_what_runc_writes(tmp_path):
    subprocess.run(["runc", "spec"], cwd=tmp_path, check=True)
    written = (tmp_path / "config.json").read_text()
    ours = runc_spec(None, None, terminal=True)
    assert ours == json.loads(written)
    # Same keys in the same order, same indentation: byte for byte.
    assert json.dumps(ours, indent="\t") == written


def test_runc_spec_args_terminal_and_tweaks(tmp_path):
    spec = runc_spec(tmp_path, ["echo", "hi"], hostname="box",
                     process={"cwd": "/tmp", "env": ["A=1"]},
                     linux={"resources": {"pids": {"limit": 10}}, "maskedPaths": None})
    assert spec["process"]["args"] == ["echo", "hi"]
    assert spec["process"]["terminal"] is False
    assert spec["process"]["cwd"] == "/tmp"
    assert spec["process"]["env"] == ["A=1"]
    assert spec["process"]["user"] == {"uid": 0, "gid": 0}  # untouched neighbours stay
    assert spec["hostname"] == "box"
    assert spec["linux"]["resources"] == {
        "devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": 10}}
    assert "maskedPaths" not in spec["linux"]
    assert json.loads((tmp_path / "config.json").read_text()) == spec
    # Each call starts from a fresh document.
    assert runc_spec()["hostname"] == "runc"
    assert runc_spec()["process"]["args"] == ["sh"]


def test_merge_replaces_lists_and_deletes_on_none():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 2}
    assert merge(base, {"a": {"c": [3]}, "d": None}) == {"a": {"b": 1, "c": [3]}}


def test_busybox_rootfs_layout(tmp_path):
    root = busybox_rootfs(tmp_path / "rootfs")
    assert (root / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
    assert os.access(root / "bin" / "busybox", os.X_OK)
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "sh" in applets and len(applets) > 100
    for name in applets:
        if name == "busybox":
            continue
        link = root / "bin" / name
        assert link.is_symlink() and os.readlink(link) == "busybox", name
    for name in ("proc", "sys", "dev", "tmp"):
        assert (root / name).is_dir() and not any((root / name).iterdir()), name
    assert (root / "etc" / "passwd").read_text().splitlines()[0].startswith("root:x:0:0:")
    assert "nobody:x:65534:65534:" in (root / "etc" / "passwd").read_text()
    assert (root / "etc" / "group").read_text().startswith("root:x:0:")
    assert "nogroup:x:65534:" in (root / "etc" / "group").read_text()
    assert oct(os.stat(root / "tmp").st_mode & 0o7777) == "0o1777"
    # Idempotent.
    busybox_rootfs(root)
    assert (root / "bin" / "sh").is_symlink()


def test_busybox_rootfs_runs_on_the_host(tmp_path):
    root = busybox_rootfs(tmp_path / "rootfs")
    out = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "echo $((6*7)); id -un"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["42", "root"]


def test_missing_busybox_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="busybox-static"):
        busybox_rootfs(tmp_path / "rootfs", busybox=tmp_path / "nope")


def test_make_bundle_files_and_dirs(tmp_path):
    dest = make_bundle(tmp_path / "b", ["/hello.sh"], files={"/hello.sh": "#!/bin/sh\necho hi\n",
                                                              "etc/motd": b"motd\n"},
                       dirs=["/data/x"], hostname="h")
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg["process"]["args"] == ["/hello.sh"]
    assert cfg["hostname"] == "h"
    assert cfg["root"] == {"path": "rootfs", "readonly": True}
    assert os.access(dest / "rootfs" / "hello.sh", os.X_OK)
    assert not os.access(dest / "rootfs" / "etc" / "motd", os.X_OK)
    assert (dest / "rootfs" / "data" / "x").is_dir()


def test_bundle_command_line(tmp_path):
    import sys

    dest = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "sampan.bundle", str(dest), "echo", "-n", "x"],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": _pkg()})
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg["process"]["args"] == ["echo", "-n", "x"]


def _pkg():
    import sampan.bundle

    return os.path.dirname(os.path.dirname(sampan.bundle.__file__))


@pytest.mark.skipif(not shutil.which("runc"), reason="runc is not installed")
def test_bundle_runs_under_runc(bundle, runc, cid):
    b = bundle(["sh", "-c", "echo hello from $(hostname) > /out/hello"], out=True)
    assert runc.run(cid, b) == 0
    import support

    assert (support.outdir(b) / "hello").read_text() == "hello from runc\n"
