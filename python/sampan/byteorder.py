"""A clear ImportError when the extension was built for the other MIPS byte order.

`uname -m` says `mips` on big- and little-endian MIPS alike, so pip computes the platform tag
`musllinux_1_2_mips` on both, and both of Sampan's MIPS wheels carry that tag (the little-endian
one is told apart by its build tag, `1mipsel`; docs/cross.md). pip can therefore install the
wrong one, and loading it would fail with the loader's bare "Exec format error". `guard` makes
`import sampan._runtime` say what happened and which wheel to install. Only MIPS pays for the
check (`sampan/__init__.py`), one read of the extension's first bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXTENSION = "_runtime.abi3.so"
MODULE = "sampan._runtime"
ELF_DATA = {1: "little", 2: "big"}  # e_ident[EI_DATA]
# What each MIPS byte order's wheel is called (scripts/build-wheels).
WHEELS = {
    "big": "sampan-{version}-cp39-abi3-musllinux_1_2_mips.whl",
    "little": "sampan-{version}-1mipsel-cp39-abi3-musllinux_1_2_mips.whl",
}


def extension_byte_order(path: Path) -> str | None:
    """'little' or 'big' from the ELF header; None if it cannot be read or is no ELF file."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return None
    if len(head) < 6 or head[:4] != b"\x7fELF":
        return None
    return ELF_DATA.get(head[5])


def message(built: str, machine: str) -> str:
    from sampan import __version__

    wheel = WHEELS[sys.byteorder].format(version=__version__)
    return (f"{MODULE} was built for {built}-endian MIPS, but this {machine} machine is "
            f"{sys.byteorder}-endian: pip cannot tell Sampan's two MIPS wheels apart (both are "
            f"tagged musllinux_1_2_mips); install {wheel}")


class _Refuse:
    """A meta path finder that stops the import of the extension with `text`."""

    def __init__(self, text: str):
        self.text = text

    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            raise ImportError(self.text, name=name)
        return None


def guard(package_dir: Path, machine: str) -> None:
    """Refuse to import the extension in `package_dir` if its byte order is not ours."""
    built = extension_byte_order(Path(package_dir) / EXTENSION)
    if built is not None and built != sys.byteorder:
        sys.meta_path.insert(0, _Refuse(message(built, machine)))
