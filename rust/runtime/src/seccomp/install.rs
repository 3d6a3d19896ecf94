//! Loading a compiled program into the kernel for the calling thread.

use super::bpf::BPF_MAXINSNS;
use super::compile::Program;

/// Installs `prog` on the calling thread (all threads with SECCOMP_FILTER_FLAG_TSYNC).
/// Returns 0 or the errno.
///
/// The caller must hold CAP_SYS_ADMIN in its user namespace or have set PR_SET_NO_NEW_PRIVS,
/// else the kernel answers EACCES.
///
/// # Safety
/// Meant for the child of a raw clone() of a multithreaded process, just before execve: it
/// allocates nothing and takes no lock (no malloc, no std I/O), only reads `prog` and makes
/// syscalls. `prog` must stay alive for the call, nothing more; the kernel copies the filter.
pub unsafe fn install(prog: &Program) -> i32 {
    if prog.filters.is_empty() || prog.filters.len() > BPF_MAXINSNS {
        return libc::EINVAL;
    }
    let fprog = libc::sock_fprog {
        len: prog.filters.len() as libc::c_ushort,
        // SockFilter is #[repr(C)] with sock_filter's fields; the kernel only reads it.
        filter: prog.filters.as_ptr() as *mut libc::sock_filter,
    };
    let fprog_ptr = &fprog as *const libc::sock_fprog;
    let r = libc::syscall(
        libc::SYS_seccomp,
        libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
        prog.flags as libc::c_ulong,
        fprog_ptr,
    );
    if r == 0 {
        return 0;
    }
    if r > 0 {
        // With TSYNC the kernel returns the id of a thread it could not synchronise; report it
        // the way SECCOMP_FILTER_FLAG_TSYNC_ESRCH would.
        return libc::ESRCH;
    }
    let err = last_errno();
    if err != libc::ENOSYS || prog.flags != 0 {
        return err;
    }
    // Kernels before 3.17 have no seccomp(2); prctl takes the same program but no flags.
    let r = libc::prctl(
        libc::PR_SET_SECCOMP,
        libc::SECCOMP_MODE_FILTER as libc::c_ulong,
        fprog_ptr,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
    );
    if r == 0 {
        0
    } else {
        last_errno()
    }
}

/// errno without allocating (io::Error's OS variant is a plain integer).
fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}
