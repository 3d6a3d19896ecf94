"""Just enough of an ELF reader to check a wheel's extension: header, dynamic NEEDED entries,
glibc symbol versions, MIPS ABI flags and ARM build attributes. Standard library only."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

EM_X86_64 = 62
EM_AARCH64 = 183
EM_ARM = 40
EM_MIPS = 8

ET_DYN = 3
SHT_DYNAMIC = 6
SHT_GNU_VERNEED = 0x6FFFFFFE
SHT_MIPS_ABIFLAGS = 0x7000002A
SHT_ARM_ATTRIBUTES = 0x70000003
DT_NEEDED = 1
DT_SONAME = 14
PT_INTERP = 3

# e_flags
EF_ARM_EABIMASK = 0xFF000000
EF_ARM_ABI_FLOAT_SOFT = 0x200
EF_ARM_ABI_FLOAT_HARD = 0x400
EF_MIPS_ABI = 0x0000F000
EF_MIPS_ABI_O32 = 0x00001000
EF_MIPS_ARCH = 0xF0000000
EF_MIPS_ARCH_32R2 = 0x70000000
EF_MIPS_ABI2 = 0x20
EF_MIPS_FP64 = 0x200

# .MIPS.abiflags fp_abi values (Val_GNU_MIPS_ABI_FP_*)
MIPS_FP_ABI = {0: "any", 1: "double", 2: "single", 3: "soft", 4: "old-64", 5: "xx",
               6: "64", 7: "64a"}
# ARM build attributes (aeabi): Tag_ABI_VFP_args 0 = base (soft-float calling convention),
# 1 = VFP registers (hard float).
TAG_ABI_VFP_ARGS = 28


@dataclass
class Elf:
    bits: int  # 32 or 64
    endian: str  # "little" or "big"
    machine: int
    type: int
    flags: int
    needed: list[str] = field(default_factory=list)
    soname: str | None = None
    interp: str | None = None
    verneed: dict[str, list[str]] = field(default_factory=dict)  # file -> version names
    mips_fp_abi: str | None = None
    arm_attributes: dict[int, int] = field(default_factory=dict)  # integer-valued tags only

    def glibc_max(self) -> tuple[int, int] | None:
        vs = [v for names in self.verneed.values() for v in names if v.startswith("GLIBC_")]
        parsed = []
        for v in vs:
            try:
                parsed.append(tuple(int(x) for x in v[len("GLIBC_"):].split(".")[:2]))
            except ValueError:
                pass  # GLIBC_PRIVATE
        return max(parsed) if parsed else None


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def _arm_attributes(data: bytes, e: str) -> dict[int, int]:
    """Integer tags of the "aeabi" vendor's file-scope subsection."""
    out: dict[int, int] = {}
    if not data or data[0] != ord("A"):
        return out
    pos = 1
    while pos < len(data):
        (length,) = struct.unpack_from(e + "I", data, pos)
        end = pos + length
        name_end = data.index(b"\0", pos + 4)
        vendor = data[pos + 4:name_end].decode()
        p = name_end + 1
        while vendor == "aeabi" and p < end:
            tag, p2 = _uleb(data, p)
            (sublen,) = struct.unpack_from(e + "I", data, p2)
            sub_end = p + sublen
            q = p2 + 4
            if tag == 1:  # Tag_File
                while q < sub_end:
                    t, q = _uleb(data, q)
                    if t in (4, 5, 67) or (t > 32 and t % 2 == 1):  # NTBS-valued tags
                        q = data.index(b"\0", q) + 1
                    else:
                        v, q = _uleb(data, q)
                        out[t] = v
            p = sub_end
        pos = end
    return out


def parse(data: bytes) -> Elf:
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    bits = {1: 32, 2: 64}[data[4]]
    endian = {1: "little", 2: "big"}[data[5]]
    e = "<" if endian == "little" else ">"
    if bits == 64:
        (etype, machine, _v, _entry, phoff, shoff, flags, _ehs, phentsize, phnum, shentsize,
         shnum, _shstrndx) = struct.unpack_from(e + "HHIQQQIHHHHHH", data, 16)
    else:
        (etype, machine, _v, _entry, phoff, shoff, flags, _ehs, phentsize, phnum, shentsize,
         shnum, _shstrndx) = struct.unpack_from(e + "HHIIIIIHHHHHH", data, 16)
    elf = Elf(bits=bits, endian=endian, machine=machine, type=etype, flags=flags)

    sections = []
    for i in range(shnum):
        off = shoff + i * shentsize
        if bits == 64:
            _name, stype, _fl, _addr, soff, size, link, info, _al, entsize = struct.unpack_from(
                e + "IIQQQQIIQQ", data, off)
        else:
            _name, stype, _fl, _addr, soff, size, link, info, _al, entsize = struct.unpack_from(
                e + "IIIIIIIIII", data, off)
        sections.append((stype, soff, size, link, info, entsize))

    def strtab(idx: int, off: int) -> str:
        base = sections[idx][1]
        end = data.index(b"\0", base + off)
        return data[base + off:end].decode()

    for i in range(phnum):
        off = phoff + i * phentsize
        ptype = struct.unpack_from(e + "I", data, off)[0]
        if ptype == PT_INTERP:
            if bits == 64:
                poff, _va, _pa, fsz = struct.unpack_from(e + "QQQQ", data, off + 8)
            else:
                poff, _va, _pa, fsz = struct.unpack_from(e + "IIII", data, off + 4)
            elf.interp = data[poff:poff + fsz].rstrip(b"\0").decode()

    for stype, soff, size, link, info, entsize in sections:
        if stype == SHT_DYNAMIC:
            fmt, step = (e + "qQ", 16) if bits == 64 else (e + "iI", 8)
            for pos in range(soff, soff + size, step):
                tag, val = struct.unpack_from(fmt, data, pos)
                if tag == 0:
                    break
                if tag == DT_NEEDED:
                    elf.needed.append(strtab(link, val))
                elif tag == DT_SONAME:
                    elf.soname = strtab(link, val)
        elif stype == SHT_GNU_VERNEED:
            pos = soff
            for _ in range(info):
                _ver, cnt, vfile, aux, nxt = struct.unpack_from(e + "HHIII", data, pos)
                names = []
                apos = pos + aux
                for _ in range(cnt):
                    _h, _f, _o, vname, anext = struct.unpack_from(e + "IHHII", data, apos)
                    names.append(strtab(link, vname))
                    apos += anext
                elf.verneed[strtab(link, vfile)] = names
                if not nxt:
                    break
                pos += nxt
        elif stype == SHT_MIPS_ABIFLAGS:
            fp_abi = data[soff + 7]
            elf.mips_fp_abi = MIPS_FP_ABI.get(fp_abi, str(fp_abi))
        elif stype == SHT_ARM_ATTRIBUTES:
            elf.arm_attributes = _arm_attributes(data[soff:soff + size], e)
    return elf
