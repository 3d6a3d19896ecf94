"""sampan.byteorder: an extension of the other byte order is refused with a message that names
the wheel to install (both MIPS wheels carry the platform tag musllinux_1_2_mips). The real
thing, under qemu with the two MIPS wheels, is tests/cross/test_emulated.py; this holds the
logic to account on any machine, with extension files that only have an ELF header."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sampan
from sampan import byteorder

OTHER = {"little": "big", "big": "little"}
EI_DATA = {"little": 1, "big": 2}


def fake_extension(d: Path, order: str) -> Path:
    (d / "sampan").mkdir(parents=True)
    ext = d / "sampan" / byteorder.EXTENSION
    ext.write_bytes(b"\x7fELF\x01" + bytes([EI_DATA[order]]) + b"\x01" + b"\0" * 57)
    return d / "sampan"


def try_import(package_dir: Path) -> dict:
    """A fresh interpreter: the guard for `package_dir`, then `import sampan._runtime`."""
    code = f"""
import json, sys
sys.path.insert(0, {str(Path(sampan.__file__).parent.parent)!r})
from sampan import byteorder
byteorder.guard({str(package_dir)!r}, "mips")
try:
    import sampan._runtime
    print(json.dumps({{"imported": True}}))
except ImportError as e:
    print(json.dumps({{"error": str(e), "name": e.name}}))
"""
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout)


def test_reads_the_byte_order_from_the_elf_header(tmp_path):
    for order in ("little", "big"):
        pkg = fake_extension(tmp_path / order, order)
        assert byteorder.extension_byte_order(pkg / byteorder.EXTENSION) == order
    (tmp_path / "junk").write_bytes(b"MZ\x90\x00\x03\x00")
    assert byteorder.extension_byte_order(tmp_path / "junk") is None
    assert byteorder.extension_byte_order(tmp_path / "missing") is None


def test_the_other_byte_order_is_refused_by_name(tmp_path):
    mine, other = sys.byteorder, OTHER[sys.byteorder]
    got = try_import(fake_extension(tmp_path, other))
    assert got["name"] == "sampan._runtime"
    msg = got["error"]
    assert f"built for {other}-endian MIPS" in msg
    assert f"this mips machine is {mine}-endian" in msg
    build = "-1mipsel" if mine == "little" else ""
    assert msg.endswith(f"install sampan-{sampan.__version__}{build}-cp39-abi3-"
                        "musllinux_1_2_mips.whl")


def test_the_same_byte_order_is_left_to_the_import_system(tmp_path):
    got = try_import(fake_extension(tmp_path, sys.byteorder))
    # no refusal: the normal import finds the real extension, or fails as it would anyway
    assert "built for" not in got.get("error", "")
