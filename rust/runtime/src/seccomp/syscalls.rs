//! Syscall names to numbers, per ABI, from the generated table (see gen_syscall_table.py).

use super::arch::{Arch, X32_SYSCALL_BIT};
use super::syscall_table::{N, OTHER_ARCH_NAMES, SYSCALLS};

/// The number `seccomp_data.nr` carries for `name` on `arch`, or `None` if `arch` has no such
/// call. x32 numbers include the x32 bit; mips o32 numbers start at 4000.
pub fn syscall_number(arch: Arch, name: &str) -> Option<u32> {
    let row = SYSCALLS
        .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
        .ok()?;
    let nr = SYSCALLS[row].1[arch.column()];
    if nr == N {
        return None;
    }
    Some(if arch == Arch::X32 {
        nr | X32_SYSCALL_BIT
    } else {
        nr
    })
}

/// Whether any Linux architecture has a syscall of that name. Profiles list calls of every arch
/// (Docker's allows `_llseek` and `riscv_hwprobe` alike), so a name missing on one arch is
/// normal; a name missing everywhere is a typo worth an error.
pub(crate) fn known_anywhere(name: &str) -> bool {
    SYSCALLS
        .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
        .is_ok()
        || OTHER_ARCH_NAMES
            .binary_search_by(|n| n.as_bytes().cmp(name.as_bytes()))
            .is_ok()
}
