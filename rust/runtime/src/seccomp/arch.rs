//! The syscall ABIs a filter can name, and which of them a given kernel can run at once.
//!
//! A seccomp filter sees `seccomp_data.arch` (an `AUDIT_ARCH_*` value) for every syscall, so one
//! program must hold a rule set per ABI that a process under it could use: a 64-bit x86 kernel
//! also runs i386 and x32 binaries, an arm64 kernel also runs 32-bit arm binaries.

use oci_spec::runtime::Arch as OciArch;

// AUDIT_ARCH_* from <linux/audit.h>: the ELF machine number plus the 64-bit and little-endian bits.
const AUDIT_ARCH_64BIT: u32 = 0x8000_0000;
const AUDIT_ARCH_LE: u32 = 0x4000_0000;
const EM_386: u32 = 3;
const EM_MIPS: u32 = 8;
const EM_ARM: u32 = 40;
const EM_X86_64: u32 = 62;
const EM_AARCH64: u32 = 183;

/// x32 syscalls arrive under AUDIT_ARCH_X86_64 with this bit set in the syscall number.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
const NATIVE: Arch = Arch::X86_64;
#[cfg(all(target_arch = "x86_64", target_pointer_width = "32"))]
const NATIVE: Arch = Arch::X32;
#[cfg(target_arch = "x86")]
const NATIVE: Arch = Arch::X86;
#[cfg(target_arch = "aarch64")]
const NATIVE: Arch = Arch::Aarch64;
#[cfg(target_arch = "arm")]
const NATIVE: Arch = Arch::Arm;
#[cfg(all(target_arch = "mips", target_endian = "big"))]
const NATIVE: Arch = Arch::Mips;
#[cfg(all(target_arch = "mips", target_endian = "little"))]
const NATIVE: Arch = Arch::Mipsel;
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "mips"
)))]
compile_error!("seccomp: no syscall table for this target architecture");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    X86,
    X32,
    Aarch64,
    Arm,
    /// MIPS o32, big endian.
    Mips,
    /// MIPS o32, little endian (same numbers as `Mips`).
    Mipsel,
}

impl Arch {
    /// The ABI this crate was compiled for.
    pub fn native() -> Arch {
        NATIVE
    }

    /// The OCI name's ABI; `SCMP_ARCH_NATIVE` is this build's. `None` for ABIs without a syscall
    /// table here (mips64, ppc, s390, riscv, ...).
    pub fn from_oci(a: &OciArch) -> Option<Arch> {
        Some(match a {
            OciArch::ScmpArchNative => Arch::native(),
            OciArch::ScmpArchX86_64 => Arch::X86_64,
            OciArch::ScmpArchX86 => Arch::X86,
            OciArch::ScmpArchX32 => Arch::X32,
            OciArch::ScmpArchAarch64 => Arch::Aarch64,
            OciArch::ScmpArchArm => Arch::Arm,
            OciArch::ScmpArchMips => Arch::Mips,
            OciArch::ScmpArchMipsel => Arch::Mipsel,
            _ => return None,
        })
    }

    pub fn to_oci(self) -> OciArch {
        match self {
            Arch::X86_64 => OciArch::ScmpArchX86_64,
            Arch::X86 => OciArch::ScmpArchX86,
            Arch::X32 => OciArch::ScmpArchX32,
            Arch::Aarch64 => OciArch::ScmpArchAarch64,
            Arch::Arm => OciArch::ScmpArchArm,
            Arch::Mips => OciArch::ScmpArchMips,
            Arch::Mipsel => OciArch::ScmpArchMipsel,
        }
    }

    /// The value the kernel puts in `seccomp_data.arch`. x32 shares x86_64's.
    pub fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 | Arch::X32 => EM_X86_64 | AUDIT_ARCH_64BIT | AUDIT_ARCH_LE,
            Arch::X86 => EM_386 | AUDIT_ARCH_LE,
            Arch::Aarch64 => EM_AARCH64 | AUDIT_ARCH_64BIT | AUDIT_ARCH_LE,
            Arch::Arm => EM_ARM | AUDIT_ARCH_LE,
            Arch::Mips => EM_MIPS,
            Arch::Mipsel => EM_MIPS | AUDIT_ARCH_LE,
        }
    }

    /// Whether syscall arguments are 64 bits wide. x32 passes arguments in full 64-bit registers
    /// and the kernel reports all 64 bits, so it is compared like x86_64.
    pub(crate) fn args_are_64bit(self) -> bool {
        matches!(self, Arch::X86_64 | Arch::X32 | Arch::Aarch64)
    }

    /// Byte order of `seccomp_data` as the kernel fills it (the kernel's, hence the build's).
    pub(crate) fn big_endian(self) -> bool {
        matches!(self, Arch::Mips)
    }

    /// ABIs a kernel running `self` binaries may also run, so they belong in the same filter.
    /// Ones outside this set can never reach the filter; they are left out of the program and
    /// fall to the "bad arch" kill like any unknown `seccomp_data.arch`.
    pub(crate) fn family(self) -> &'static [Arch] {
        match self {
            Arch::X86_64 | Arch::X86 | Arch::X32 => &[Arch::X86_64, Arch::X86, Arch::X32],
            Arch::Aarch64 | Arch::Arm => &[Arch::Aarch64, Arch::Arm],
            Arch::Mips => &[Arch::Mips],
            Arch::Mipsel => &[Arch::Mipsel],
        }
    }

    /// Column in the generated syscall table.
    pub(crate) fn column(self) -> usize {
        match self {
            Arch::X86_64 => 0,
            Arch::X86 => 1,
            Arch::X32 => 2,
            Arch::Aarch64 => 3,
            Arch::Arm => 4,
            Arch::Mips | Arch::Mipsel => 5,
        }
    }
}
