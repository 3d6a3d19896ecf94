//! Real kernel tests: install compiled filters in forked children and watch the syscalls' fate.
//!
//! The test harness is multithreaded, so a forked child may only make raw syscalls (no malloc,
//! no panics, no std I/O): every check returns a number, the child exits with the first failed
//! check's number (0 = all passed) and the parent asserts on it.

use oci_spec::runtime::LinuxSeccomp;

use super::*;

fn spec(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).expect("test spec parses")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// True if the raw syscall result `r` is a failure with errno `e`.
fn failed_with(r: libc::c_long, e: i32) -> bool {
    r == -1 && errno() == e
}

/// Forks; the child sets no_new_privs, installs `prog`, runs `checks` and exits with its
/// result. Returns the child's wait status.
fn in_child(prog: &Program, checks: fn() -> i32) -> i32 {
    // SAFETY: the child only makes raw syscalls before _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(200);
            }
            let e = install(prog);
            if e != 0 {
                libc::_exit(200 + e.min(50));
            }
            libc::_exit(checks());
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        status
    }
}

fn assert_exit_0(status: i32) {
    assert!(
        libc::WIFEXITED(status),
        "child killed by signal {}",
        libc::WTERMSIG(status)
    );
    let code = libc::WEXITSTATUS(status);
    assert!(code < 200, "install failed with errno {}", code - 200);
    assert_eq!(code, 0, "child check {code} failed");
}

#[test]
fn errno_actions_and_argument_rules() {
    let prog = compile(&spec(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC"],"syscalls":[
            {"names":["uname"],"action":"SCMP_ACT_ERRNO"},
            {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":42},
            {"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":61,
             "args":[{"index":0,"value":2,"op":"SCMP_CMP_EQ"},
                     {"index":1,"value":4294967295,"op":"SCMP_CMP_GT"}]},
            {"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":62,
             "args":[{"index":0,"value":240,"valueTwo":16,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
    ))
    .unwrap();
    assert_eq!(prog.flags, FILTER_FLAG_TSYNC);
    fn checks() -> i32 {
        unsafe {
            let mut uts: libc::utsname = std::mem::zeroed();
            if !failed_with(libc::syscall(libc::SYS_uname, &mut uts), libc::EPERM) {
                return 1;
            }
            let mut buf = [0u8; 256];
            if !failed_with(libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), 256), 42) {
                return 2;
            }
            // PRIO_USER with a "uid" above 32 bits: the high word must be compared.
            #[cfg(target_pointer_width = "64")]
            if !failed_with(
                libc::syscall(libc::SYS_getpriority, 2, 0x1_0000_0000u64),
                61,
            ) {
                return 3;
            }
            if libc::syscall(libc::SYS_getpriority, 2, 0) < 0 {
                return 4;
            }
            if !failed_with(libc::syscall(libc::SYS_getpriority, 0x13, 0), 62) {
                return 5;
            }
            if libc::syscall(libc::SYS_getpriority, 0, 0) < 0 {
                return 6;
            }
            if libc::syscall(libc::SYS_getpid) <= 0 {
                return 7;
            }
        }
        0
    }
    assert_exit_0(in_child(&prog, checks));
}

#[test]
fn kill_actions() {
    for action in ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"] {
        let prog = compile(&spec(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["getppid"],"action":"{action}"}}]}}"#
        )))
        .unwrap();
        fn checks() -> i32 {
            unsafe { libc::syscall(libc::SYS_getppid) };
            1
        }
        let status = in_child(&prog, checks);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "{action}: status {status:#x}"
        );
    }
}

#[test]
fn docker_default_profile() {
    let prog = compile(&default_profile(&[])).unwrap();
    fn checks() -> i32 {
        unsafe {
            let none = c"none".as_ptr();
            let tmp = c"/tmp".as_ptr();
            let tmpfs = c"tmpfs".as_ptr();
            let r = libc::syscall(libc::SYS_mount, none, tmp, tmpfs, 0, 0);
            if !failed_with(r, libc::EPERM) {
                return 1;
            }
            if !failed_with(
                libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER),
                libc::EPERM,
            ) {
                return 2;
            }
            if !failed_with(libc::syscall(libc::SYS_clone3, 0, 0), libc::ENOSYS) {
                return 3;
            }
            if !failed_with(libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0), libc::EPERM) {
                return 4;
            }
            let vsock = libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0);
            if !failed_with(vsock, libc::EPERM) {
                return 5;
            }
            let unix = libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if unix < 0 {
                return 6;
            }
            libc::close(unix as i32);
            let mut uts: libc::utsname = std::mem::zeroed();
            if libc::syscall(libc::SYS_getpid) <= 0 || libc::syscall(libc::SYS_uname, &mut uts) != 0
            {
                return 7;
            }
            if libc::syscall(libc::SYS_personality, 0xffff_ffffu32) < 0 {
                return 8;
            }
            let no_aslr = libc::syscall(libc::SYS_personality, 0x0004_0000);
            if !failed_with(no_aslr, libc::EPERM) {
                return 9;
            }
            // A plain fork-style clone works; one making a user namespace does not.
            let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
            if pid == 0 {
                libc::_exit(0);
            }
            if pid < 0 {
                return 10;
            }
            let mut status = 0;
            if libc::waitpid(pid as i32, &mut status, 0) != pid as i32 || status != 0 {
                return 11;
            }
            let ns = libc::syscall(
                libc::SYS_clone,
                libc::SIGCHLD | libc::CLONE_NEWUSER,
                0,
                0,
                0,
                0,
            );
            if ns == 0 {
                libc::_exit(0);
            }
            if !failed_with(ns, libc::EPERM) {
                return 12;
            }
        }
        0
    }
    assert_exit_0(in_child(&prog, checks));
}

#[test]
fn install_refuses_empty_programs() {
    let empty = Program {
        filters: Vec::new(),
        flags: 0,
    };
    assert_eq!(unsafe { install(&empty) }, libc::EINVAL);
}
