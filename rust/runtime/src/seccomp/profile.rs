//! Docker's default seccomp profile, rebuilt here so Sampan containers get the same syscall
//! surface as `docker run` without shipping Docker's JSON.
//!
//! Same effect as Moby's default profile for a given capability set: deny with EPERM by default;
//! allow the calls every ordinary program needs; allow the dangerous ones (mount, bpf, ptrace,
//! kernel modules, clock setting...) only when the container holds the capability that the kernel
//! would check anyway, so the filter never blocks what the capability grants; and let `clone`
//! create no namespaces without CAP_SYS_ADMIN.

use oci_spec::runtime::{
    Arch as OciArch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

use super::arch::Arch;

/// Files and directories by path.
#[rustfmt::skip]
const PATHS: &[&str] = &[
    "access", "chdir", "chmod", "chown", "chown32", "creat", "faccessat", "faccessat2",
    "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fstatat64",
    "futimesat", "getcwd", "getdents", "getdents64", "lchown", "lchown32", "link", "linkat",
    "listmount", "lstat", "lstat64", "mkdir", "mkdirat", "mknod", "mknodat", "name_to_handle_at",
    "newfstatat", "open", "openat", "openat2", "readlink", "readlinkat", "rename", "renameat",
    "renameat2", "rmdir", "stat", "stat64", "statfs", "statfs64", "statmount", "statx", "symlink",
    "symlinkat", "truncate", "truncate64", "umask", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes",
];

/// Reading, writing and managing open file descriptors.
#[rustfmt::skip]
const FD_IO: &[&str] = &[
    "cachestat", "close", "close_range", "copy_file_range", "dup", "dup2", "dup3", "fadvise64",
    "fadvise64_64", "fallocate", "fcntl", "fcntl64", "fdatasync", "flock", "fstat", "fstat64",
    "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "ioctl", "_llseek", "lseek",
    "pipe", "pipe2", "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read",
    "readahead", "readv", "sendfile", "sendfile64", "splice", "sync", "sync_file_range", "syncfs",
    "tee", "vmsplice", "write", "writev",
];

/// Extended attributes.
#[rustfmt::skip]
const XATTRS: &[&str] = &[
    "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "getxattrat",
    "lgetxattr", "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lsetxattr",
    "removexattr", "removexattrat", "setxattr", "setxattrat",
];

/// Waiting for events: poll/select/epoll, eventfd, signalfd, timerfd, inotify, fanotify marks,
/// and Linux AIO.
#[rustfmt::skip]
const EVENTS: &[&str] = &[
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "fanotify_mark", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit",
    "_newselect", "poll", "ppoll", "ppoll_time64", "pselect6", "pselect6_time64", "select",
    "signalfd", "signalfd4", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64",
];

/// Process and thread life cycle, scheduling, limits, self-restriction.
#[rustfmt::skip]
const PROCESSES: &[&str] = &[
    "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "get_robust_list",
    "get_thread_area", "getcpu", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrlimit", "getrusage", "getsid", "gettid", "ioprio_get", "ioprio_set", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "pidfd_open",
    "pidfd_send_signal", "prctl", "prlimit64", "process_mrelease", "restart_syscall", "rseq",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "set_robust_list", "set_thread_area",
    "set_tid_address", "setpgid", "setpriority", "setrlimit", "setsid", "tgkill", "tkill",
    "ugetrlimit", "uretprobe", "vfork", "wait4", "waitid", "waitpid",
];

/// User and group ids (the kernel still checks CAP_SETUID/CAP_SETGID).
#[rustfmt::skip]
const CREDENTIALS: &[&str] = &[
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getresgid", "getresgid32", "getresuid", "getresuid32", "getuid", "getuid32",
    "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
    "setgroups32", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32",
];

/// Signals.
#[rustfmt::skip]
const SIGNALS: &[&str] = &[
    "alarm", "pause", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sigaltstack", "sigprocmask", "sigreturn",
];

/// Memory mappings and futexes.
#[rustfmt::skip]
const MEMORY: &[&str] = &[
    "brk", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
    "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore",
    "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mremap", "mseal", "msync",
    "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "remap_file_pages",
];

/// Reading clocks, sleeping, timers (setting the clock needs CAP_SYS_TIME, below; adjtimex
/// only reads without it).
#[rustfmt::skip]
const TIME: &[&str] = &[
    "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64",
    "clock_gettime", "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "getitimer",
    "gettimeofday", "nanosleep", "setitimer", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    "times",
];

/// Sockets once created (creation is filtered by family, below).
#[rustfmt::skip]
const SOCKETS: &[&str] = &[
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg",
    "sendto", "setsockopt", "shutdown", "socketcall", "socketpair",
];

/// System V and POSIX message queues, semaphores, shared memory.
#[rustfmt::skip]
const IPC: &[&str] = &[
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt",
    "shmget",
];

/// Harmless questions about the system.
#[rustfmt::skip]
const SYSTEM_INFO: &[&str] = &["getrandom", "riscv_hwprobe", "sysinfo", "uname"];

/// Before Linux 4.8 a ptraced process could skip seccomp, so these need CAP_SYS_PTRACE there.
#[rustfmt::skip]
const TRACING: &[&str] = &["process_vm_readv", "process_vm_writev", "ptrace"];

/// Capability -> the calls it unlocks; the kernel checks the same capability inside each.
#[rustfmt::skip]
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
            "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr",
            "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl",
            "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
            "umount2", "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "finit_module", "init_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    ("CAP_SYS_TIME", &["clock_settime", "clock_settime64", "settimeofday", "stime"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Calls that only exist for, or are only safe on, some architectures.
#[rustfmt::skip]
const ARM_ONLY: &[&str] = &[
    "arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls",
    "sync_file_range2",
];

// Address families refused to socket(): AF_ALG (kernel crypto API, a frequent source of kernel
// bugs) and AF_VSOCK (talks to the hypervisor, not namespaced). Every other family is allowed.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// personality(2) values that only select Linux behaviour: PER_LINUX, UNAME26, PER_LINUX32,
/// PER_LINUX32|UNAME26, and 0xffffffff which only queries. Others change the ABI (e.g.
/// READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE) and are refused.
#[rustfmt::skip]
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Namespace flags of clone(2): CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET (0x7E020000). Without CAP_SYS_ADMIN clone must
/// have none of them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Docker's default profile for this build's ABI and the given capabilities ("CAP_SYS_ADMIN";
/// the "CAP_" prefix is optional).
pub fn default_profile(capabilities: &[String]) -> LinuxSeccomp {
    default_profile_for(capabilities, Arch::native())
}

/// Same, for a runtime built for `native` (tests compile other ABIs' programs with it).
pub fn default_profile_for(capabilities: &[String], native: Arch) -> LinuxSeccomp {
    build(capabilities, native, kernel_at_least(4, 8))
}

pub(crate) fn build(capabilities: &[String], native: Arch, kernel_4_8: bool) -> LinuxSeccomp {
    let has = |cap: &str| {
        let want = cap.trim_start_matches("CAP_");
        capabilities
            .iter()
            .any(|c| c.trim_start_matches("CAP_").eq_ignore_ascii_case(want))
    };
    let mut rules = Vec::new();

    let always: Vec<&str> = [
        PATHS,
        FD_IO,
        XATTRS,
        EVENTS,
        PROCESSES,
        CREDENTIALS,
        SIGNALS,
        MEMORY,
        TIME,
        SOCKETS,
        IPC,
        SYSTEM_INFO,
    ]
    .concat();
    rules.push(allow(&always));
    if kernel_4_8 {
        rules.push(allow(TRACING));
    }

    rules.push(allow_if(
        "socket",
        LinuxSeccompOperator::ScmpCmpLt,
        AF_ALG,
        0,
    ));
    rules.push(allow_if(
        "socket",
        LinuxSeccompOperator::ScmpCmpEq,
        AF_ALG + 1,
        0,
    ));
    rules.push(allow_if(
        "socket",
        LinuxSeccompOperator::ScmpCmpGt,
        AF_VSOCK,
        0,
    ));
    for &p in PERSONALITIES {
        rules.push(allow_if(
            "personality",
            LinuxSeccompOperator::ScmpCmpEq,
            p,
            0,
        ));
    }

    match native {
        Arch::Aarch64 | Arch::Arm => rules.push(allow(ARM_ONLY)),
        Arch::X86_64 | Arch::X32 => rules.push(allow(&["arch_prctl", "modify_ldt"])),
        Arch::X86 => rules.push(allow(&["modify_ldt"])),
        Arch::Mips | Arch::Mipsel => {}
    }

    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            rules.push(allow(names));
        }
    }
    if !has("CAP_SYS_ADMIN") {
        rules.push(allow_if(
            "clone",
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            CLONE_NAMESPACE_FLAGS,
            0,
        ));
        // ENOSYS, not EPERM: clone3 passes flags in memory where a filter cannot look, and
        // ENOSYS makes libcs fall back to clone, which is checked above.
        let mut clone3 = LinuxSyscall::default();
        clone3
            .set_names(vec!["clone3".to_string()])
            .set_action(LinuxSeccompAction::ScmpActErrno)
            .set_errno_ret(Some(libc::ENOSYS as u32));
        rules.push(clone3);
    }

    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(LinuxSeccompAction::ScmpActErrno)
        .set_default_errno_ret(Some(libc::EPERM as u32))
        .set_architectures(Some(architectures(native)))
        .set_syscalls(Some(rules));
    profile
}

/// The ABIs listed in the profile, as Docker lists them per native arch: the ones a kernel for
/// the native ABI commonly runs too.
fn architectures(native: Arch) -> Vec<OciArch> {
    let arches: &[Arch] = match native {
        Arch::X86_64 | Arch::X32 => &[Arch::X86_64, Arch::X86, Arch::X32],
        Arch::Aarch64 => &[Arch::Aarch64, Arch::Arm],
        other => return vec![other.to_oci()],
    };
    arches.iter().map(|a| a.to_oci()).collect()
}

fn allow(names: &[&str]) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect())
        .set_action(LinuxSeccompAction::ScmpActAllow);
    s
}

fn allow_if(name: &str, op: LinuxSeccompOperator, value: u64, value_two: u64) -> LinuxSyscall {
    let mut arg = LinuxSeccompArgBuilder::default()
        .index(0usize)
        .value(value)
        .op(op);
    if op == LinuxSeccompOperator::ScmpCmpMaskedEq {
        arg = arg.value_two(value_two);
    }
    // Every field has a default, so building cannot fail.
    let arg = arg
        .build()
        .expect("LinuxSeccompArg has defaults for all fields");
    let mut s = allow(&[name]);
    s.set_args(Some(vec![arg]));
    s
}

/// Whether the running kernel is at least `major.minor` (false if uname fails or is odd).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: uname only writes into the zeroed struct we own.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    // SAFETY: the kernel NUL-terminates release within the array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    let release = release.to_string_lossy();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let num = |p: Option<&str>| p.and_then(|s| s.parse::<u32>().ok());
    match (num(parts.next()), num(parts.next())) {
        (Some(ma), Some(mi)) => (ma, mi) >= (major, minor),
        _ => false,
    }
}
