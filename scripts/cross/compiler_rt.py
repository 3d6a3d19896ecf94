"""zig's compiler_rt as a plain object for linking musl's libc.so.

musl links its libc.so against libgcc for the compiler's helper routines (64-bit division,
soft-float arithmetic on MIPS, ...). Given `-lgcc`, `zig cc` links its compiler_rt, which also
carries memcpy, memset, memmove, memcmp, bcmp, strlen and the stack-protector entry points as
*weak hidden* symbols (for freestanding code). ELF merges visibility to the most restrictive,
so musl's own public memcpy/strlen/... end up hidden and libc.so stops exporting them
("Error relocating ...: strlen: symbol not found").

Here compiler_rt is compiled once per target with `zig build-obj`, and the visibility of its
libc-named symbols is reset to default (a one-byte patch of st_other in .symtab): they stay weak,
so musl's strong definitions win and keep their default visibility. musl's build is then given
this object instead of -lgcc.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

SHT_SYMTAB = 2
STV_MASK = 0x3
STV_HIDDEN = 2
SHN_UNDEF = 0
KEEP_HIDDEN_PREFIX = "__"
UNHIDE_ANYWAY = {"__stack_chk_fail", "__stack_chk_guard", "__chk_fail"}


def unhide_libc_symbols(path: Path) -> list[str]:
    """Gives default visibility to the hidden, defined, libc-named symbols of an ELF
    relocatable object, in place. Returns their names."""
    data = bytearray(path.read_bytes())
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{path}: not ELF")
    is64 = data[4] == 2
    e = "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x2E)

    def section(i: int) -> tuple[int, int, int, int, int]:
        off = shoff + i * shentsize
        if is64:
            _n, stype, _f, _a, soff, size, link, _i, _al, ent = struct.unpack_from(
                e + "IIQQQQIIQQ", data, off)
        else:
            _n, stype, _f, _a, soff, size, link, _i, _al, ent = struct.unpack_from(
                e + "IIIIIIIIII", data, off)
        return stype, soff, size, link, ent

    changed = []
    for i in range(shnum):
        stype, soff, size, link, ent = section(i)
        if stype != SHT_SYMTAB:
            continue
        _t, str_off, _s, _l, _e = section(link)
        for pos in range(soff, soff + size, ent):
            name_off, = struct.unpack_from(e + "I", data, pos)
            other_at = pos + (5 if is64 else 13)
            shndx_at = pos + (6 if is64 else 14)
            shndx, = struct.unpack_from(e + "H", data, shndx_at)
            if data[other_at] & STV_MASK != STV_HIDDEN or shndx == SHN_UNDEF:
                continue
            end = data.index(b"\0", str_off + name_off)
            name = data[str_off + name_off:end].decode()
            if name and (not name.startswith(KEEP_HIDDEN_PREFIX) or name in UNHIDE_ANYWAY):
                data[other_at] &= ~STV_MASK & 0xFF
                changed.append(name)
    path.write_bytes(bytes(data))
    return changed


def build(zig: Path, zig_target: str, cpu: str | None, out: Path) -> Path:
    """compiler_rt for `zig_target`, position independent, patched; cached at `out`."""
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.o")
    cmd = [str(zig), "build-obj", "-target", zig_target, "-O", "ReleaseSmall", "-fPIC",
           str(zig.parent / "lib" / "compiler_rt.zig"), "--name", "compiler_rt",
           f"-femit-bin={tmp}"]
    if cpu:
        cmd[4:4] = ["-mcpu", cpu]
    subprocess.run(cmd, check=True)
    names = unhide_libc_symbols(tmp)
    if "memcpy" not in names:
        raise SystemExit(f"cross: compiler_rt for {zig_target}: no hidden memcpy to fix "
                         f"(zig changed?): {names}")
    tmp.replace(out)
    return out
