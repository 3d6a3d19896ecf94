"""What each wheel of scripts/build-wheels must be, independently of how it was built."""

from __future__ import annotations

from dataclasses import dataclass

from elfinfo import EM_AARCH64, EM_ARM, EM_MIPS, EM_X86_64

# AUDIT_ARCH_* (<linux/audit.h>): what a seccomp program compares seccomp_data.arch with.
AUDIT_ARCH = {
    "SCMP_ARCH_X86_64": 0xC000003E,
    "SCMP_ARCH_X86": 0x40000003,
    "SCMP_ARCH_AARCH64": 0xC00000B7,
    "SCMP_ARCH_ARM": 0x40000028,
    "SCMP_ARCH_MIPS": 0x00000008,
    "SCMP_ARCH_MIPSEL": 0x40000008,
}
# clone3's number as qemu's strace reports it (MIPS o32 numbers start at 4000).
CLONE3 = {"x86_64": 435, "aarch64": 435, "arm": 435, "mips": 4435}


@dataclass(frozen=True)
class WheelTarget:
    name: str  # scripts/build-wheels' name
    platform: str  # the wheel's platform tag(s)
    machine: int  # ELF e_machine
    bits: int
    endian: str
    libc: str  # "glibc" or "musl"
    float_abi: str | None  # "hard"/"soft" where the ABI has a choice
    qemu: str  # qemu-user binary that runs it
    seccomp_arch: str  # the build's native seccomp ABI
    uname: str  # what `uname -m` (platform.machine()) says on such a system
    kernel_arch: str  # key of CLONE3
    # RLIMIT_NOFILE / RLIMIT_NPROC / RLIMIT_AS: MIPS numbers them differently.
    rlimits: tuple[int, int, int]
    debian_arch: str | None = None  # glibc: whose Debian CPython imports it
    # PEP 427 build tag: both MIPS byte orders get the tag pip computes there (`uname -m` says
    # mips on either), the little-endian wheel's file name is told apart by this.
    build_tag: str = ""

    @property
    def glibc(self) -> bool:
        return self.libc == "glibc"

    @property
    def musl_loader_needed(self) -> list[str]:
        return ["libc.so"]


GENERIC_RLIMITS = (7, 6, 9)
MIPS_RLIMITS = (5, 8, 6)

TARGETS = [
    WheelTarget("x86_64", "manylinux_2_17_x86_64.manylinux2014_x86_64", EM_X86_64, 64, "little",
                "glibc", None, "qemu-x86_64-static", "SCMP_ARCH_X86_64", "x86_64", "x86_64",
                GENERIC_RLIMITS, "amd64"),
    WheelTarget("aarch64", "manylinux_2_17_aarch64.manylinux2014_aarch64", EM_AARCH64, 64,
                "little", "glibc", None, "qemu-aarch64-static", "SCMP_ARCH_AARCH64", "aarch64",
                "aarch64", GENERIC_RLIMITS, "arm64"),
    WheelTarget("x86_64-musl", "musllinux_1_2_x86_64", EM_X86_64, 64, "little", "musl", None,
                "qemu-x86_64-static", "SCMP_ARCH_X86_64", "x86_64", "x86_64", GENERIC_RLIMITS),
    WheelTarget("aarch64-musl", "musllinux_1_2_aarch64", EM_AARCH64, 64, "little", "musl", None,
                "qemu-aarch64-static", "SCMP_ARCH_AARCH64", "aarch64", "aarch64",
                GENERIC_RLIMITS),
    WheelTarget("armv7-musl", "musllinux_1_2_armv7l", EM_ARM, 32, "little", "musl", "hard",
                "qemu-arm-static", "SCMP_ARCH_ARM", "armv7l", "arm", GENERIC_RLIMITS),
    WheelTarget("mips-musl", "musllinux_1_2_mips", EM_MIPS, 32, "big", "musl", "soft",
                "qemu-mips-static", "SCMP_ARCH_MIPS", "mips", "mips", MIPS_RLIMITS),
    WheelTarget("mipsel-musl", "musllinux_1_2_mips", EM_MIPS, 32, "little", "musl", "soft",
                "qemu-mipsel-static", "SCMP_ARCH_MIPSEL", "mips", "mips", MIPS_RLIMITS,
                build_tag="1mipsel"),
]

BY_NAME = {t.name: t for t in TARGETS}

# The libraries a manylinux2014 extension may need (PEP 599), and the newest glibc symbol
# version manylinux_2_17 allows.
MANYLINUX_LIBS = {
    "libgcc_s.so.1", "libstdc++.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libc.so.6",
    "libnsl.so.1", "libutil.so.1", "libpthread.so.0", "libresolv.so.2", "libX11.so.6",
    "libXext.so.6", "libXrender.so.1", "libICE.so.6", "libSM.so.6", "libGL.so.1",
    "libgobject-2.0.so.0", "libgthread-2.0.so.0", "libglib-2.0.so.0",
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
}
GLIBC_MAX = (2, 17)
