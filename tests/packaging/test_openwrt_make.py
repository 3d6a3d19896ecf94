"""packaging/openwrt/Makefile run for real by GNU make, against a stand-in for the parts of the
OpenWrt SDK it uses (openwrt_sdk_stub/: rules.mk, package.mk, python3-package.mk), so that its
Build/Prepare, Build/Compile and install recipes execute as the SDK would run them. The SDK
itself is not available here (it is downloaded from openwrt.org); what it adds — the .ipk, the
.pyc compilation — is not exercised.

The wheel it unpacks is this installation of sampan put back into wheel form (the files its
RECORD lists, scripts under sampan-<version>.data/scripts as in the built wheel), named with the
router tag the Makefile asks for on x86_64."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "packaging" / "openwrt"
STUB = Path(__file__).with_name("openwrt_sdk_stub")
SITE = "usr/lib/python3.11/site-packages"

needs_tools = pytest.mark.skipif(not (shutil.which("make") and shutil.which("unzip")),
                                 reason="needs make and unzip")


def _rewheel(out: Path) -> str:
    """This installed sampan as a wheel in `out`; its version."""
    dist = importlib.metadata.distribution("sampan")
    ver = dist.version
    whl = out / f"sampan-{ver}-cp39-abi3-musllinux_1_2_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for f in dist.files or []:
            parts = Path(f).parts
            src = Path(dist.locate_file(f))
            if "__pycache__" in parts or not src.is_file():
                continue
            # console and data scripts are recorded relative to site-packages (../../../bin/x)
            name = f"sampan-{ver}.data/scripts/{src.name}" if parts[0] == ".." else str(f)
            z.write(src, name)
    return ver


@needs_tools
def test_makefile_recipes_install_a_working_tree(tmp_path):
    (tmp_path / "dist").mkdir()
    ver = _rewheel(tmp_path / "dist")
    root = tmp_path / "root"
    r = subprocess.run(
        ["make", "-C", str(PKG), "compile", f"TOPDIR={STUB}", "ARCH=x86_64",
         f"SAMPAN_DIST={tmp_path / 'dist'}", f"BUILD_DIR={tmp_path / 'build'}",
         f"STAGING_ROOT={root}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

    def mode(rel: str) -> int:
        return stat.S_IMODE(os.stat(root / rel).st_mode)

    assert (mode("usr/bin/sampan"), mode("usr/bin/sampand"), mode("etc/init.d/sampand"),
            mode("etc/config/sampan"), mode("etc/profile.d/sampan.sh")) == \
        (0o755, 0o755, 0o755, 0o600, 0o644)
    assert (root / "usr/bin/sampand").read_bytes() == (PKG / "files/sampand.sh").read_bytes()
    pkg = root / SITE / "sampan"
    assert (pkg / "_runtime.abi3.so").is_file() and (pkg / "libexec/sampan-monitor").is_file()
    assert (root / SITE / f"sampan-{ver}.dist-info" / "RECORD").is_file()
    # the staged tree is a working sampan: the runtime and the daemon import from it alone
    env = dict(os.environ, PYTHONPATH=str(root / SITE))
    r = subprocess.run([sys.executable, "-S", "-c", "import sampan._runtime, sampan.daemon.main; "
                        "import sampan; print(sampan.__file__)"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(str(pkg)), r
    client = root / "usr/bin/sampan"
    if client.read_bytes()[:4] == b"\x7fELF":  # the native client, as the wheel ships it
        r = subprocess.run([str(client), "-H", f"unix://{tmp_path}/none.sock", "ps"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 125 and "Cannot connect" in r.stderr, r
