//! Process creation: clone3 with CLONE_PIDFD (and CLONE_INTO_CGROUP on pure cgroup v2), falling
//! back to clone when clone3 answers ENOSYS (qemu-user, kernels before 5.3).

use libc::c_int;

/// clone3's argument block (struct clone_args, version 2 with `cgroup`).
#[repr(C)]
#[derive(Default)]
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

const CLONE_PIDFD: u64 = 0x1000;
pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What clone gave back in the parent.
pub struct Cloned {
    pub pid: libc::pid_t,
    /// -1 when the kernel has no pidfds.
    pub pidfd: c_int,
    pub into_cgroup: bool,
    /// false when clone3 was missing and clone(2) made the child.
    #[allow(dead_code)]
    pub used_clone3: bool,
}

/// Fork-like clone (no shared memory) into new namespaces. Returns Ok(None) in the child.
///
/// # Safety
/// In the child only async-signal-safe work is allowed until execve or _exit.
pub unsafe fn clone_child(
    ns_flags: c_int,
    cgroup_fd: Option<c_int>,
    force_fallback: bool,
) -> Result<Option<Cloned>, c_int> {
    if force_fallback {
        return clone_fallback(ns_flags);
    }
    let mut pidfd: c_int = -1;
    let mut args = CloneArgs {
        flags: ns_flags as u32 as u64 | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    let mut r = libc::syscall(
        libc::SYS_clone3,
        &mut args as *mut CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    );
    let mut into_cgroup = cgroup_fd.is_some();
    if r < 0 && cgroup_fd.is_some() {
        // Old kernels (5.3–5.6) have clone3 without CLONE_INTO_CGROUP: place it afterwards.
        let e = crate::sys::errno();
        if e == libc::EINVAL || e == libc::E2BIG {
            args.flags &= !CLONE_INTO_CGROUP;
            args.cgroup = 0;
            into_cgroup = false;
            r = libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            );
        }
    }
    if r == 0 {
        return Ok(None);
    }
    if r > 0 {
        return Ok(Some(Cloned {
            pid: r as libc::pid_t,
            pidfd,
            into_cgroup,
            used_clone3: true,
        }));
    }
    let e = crate::sys::errno();
    if e != libc::ENOSYS {
        return Err(e);
    }
    clone_fallback(ns_flags)
}

/// clone(2) with a NULL stack behaves like fork. The first three arguments (flags, stack,
/// parent_tid) sit in the same places on every architecture we target, and CLONE_PIDFD
/// returns the pidfd through parent_tid.
unsafe fn clone_fallback(ns_flags: c_int) -> Result<Option<Cloned>, c_int> {
    let mut pidfd: c_int = -1;
    let flags =
        ns_flags as libc::c_ulong | CLONE_PIDFD as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    let mut r = libc::syscall(
        libc::SYS_clone,
        flags,
        0usize,
        &mut pidfd as *mut c_int,
        0usize,
        0usize,
    );
    if r < 0 && crate::sys::errno() == libc::EINVAL {
        // Kernels before 5.2 know no CLONE_PIDFD; qemu-user refuses it too.
        pidfd = -1;
        r = libc::syscall(
            libc::SYS_clone,
            ns_flags as libc::c_ulong | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
    }
    if r == 0 {
        return Ok(None);
    }
    if r < 0 {
        return Err(crate::sys::errno());
    }
    Ok(Some(Cloned {
        pid: r as libc::pid_t,
        pidfd,
        into_cgroup: false,
        used_clone3: false,
    }))
}
