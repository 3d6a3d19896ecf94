//! docker-init: a tiny init for `--init`. `docker-init -- CMD ARGS…` runs CMD as its child,
//! forwards the signals it gets to it, reaps every process that is reparented to it, and exits
//! with CMD's status (128+signal when CMD was killed).

use std::ffi::CString;

use libc::c_int;

/// Signals that are faults of this process itself (left to their default action), or that a
/// terminal sends to stop a background group: not forwarded.
const NOT_FORWARDED: [c_int; 9] = [
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

fn fatal(msg: String) -> ! {
    eprintln!("[docker-init] {msg}");
    unsafe { libc::_exit(1) }
}

pub fn main(args: &[String]) -> i32 {
    let cmd: &[String] = match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        _ => args,
    };
    if cmd.is_empty() {
        eprintln!("usage: docker-init -- COMMAND [ARG...]");
        return 1;
    }
    let argv: Vec<CString> = cmd
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());

    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        for s in NOT_FORWARDED {
            libc::sigdelset(&mut all, s);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let child = unsafe { libc::fork() };
    if child < 0 {
        fatal(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        unsafe {
            // Its own process group, in the foreground of the terminal if there is one, so a
            // ^C from the tty reaches it once (not through us as well).
            libc::setpgid(0, 0);
            if libc::isatty(0) == 1 {
                libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(0, libc::getpid());
                libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            }
            // Rust's start-up ignores SIGPIPE in this process; CMD must not inherit that.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            libc::execvp(ptrs[0], ptrs.as_ptr());
            let e = std::io::Error::last_os_error();
            eprintln!("[docker-init] exec {}: {e}", cmd[0]);
            libc::_exit(match e.raw_os_error() {
                Some(libc::ENOENT) => 127,
                _ => 126,
            });
        }
    }
    let mut status: Option<i32> = None;
    loop {
        // Reap whatever has exited: CMD, and orphans reparented to us.
        loop {
            let mut st: c_int = 0;
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == child {
                status = Some(sampan_runtime::container::decode_status(st));
            }
        }
        if let Some(code) = status {
            return code;
        }
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let ts = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        let sig = unsafe { libc::sigtimedwait(&all, &mut info, &ts) };
        if sig > 0 && sig != libc::SIGCHLD {
            unsafe { libc::kill(child, sig) };
        }
    }
}
