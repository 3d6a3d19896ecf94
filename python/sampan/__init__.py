"""Sampan: a small, fast, crash-safe container engine with Docker's interfaces."""

import os as _os

__version__ = "0.1.0"

# Both MIPS byte orders share one wheel tag: a wrong-endian extension is refused by name.
if _os.uname().machine.startswith("mips"):
    from sampan import byteorder as _byteorder

    _byteorder.guard(_os.path.dirname(__file__), _os.uname().machine)
