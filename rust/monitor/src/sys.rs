//! Thin wrappers over the few syscalls the monitor makes. Everything is a raw fd: the monitor is
//! one poll loop over a handful of descriptors and owns each of them explicitly.

use std::ffi::CString;
use std::io;

use libc::c_int;

pub fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn close(fd: c_int) {
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
}

pub fn cstr(s: &str) -> CString {
    CString::new(
        s.as_bytes()
            .iter()
            .copied()
            .filter(|b| *b != 0)
            .collect::<Vec<u8>>(),
    )
    .unwrap_or_default()
}

/// Write everything to a blocking fd (files, the daemon's socket).
pub fn write_all(fd: c_int, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = unsafe { libc::write(fd, buf.as_ptr() as *const libc::c_void, buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// One read; Ok(0) at EOF. A pty master reports EIO once every slave fd is closed: EOF too.
pub fn read(fd: c_int, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EIO) => return Ok(0),
            _ => return Err(e),
        }
    }
}

pub fn set_nonblock(fd: c_int) {
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

pub fn set_cloexec(fd: c_int) {
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

pub fn pipe() -> io::Result<(c_int, c_int)> {
    let mut p = [0 as c_int; 2];
    cvt(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((p[0], p[1]))
}

pub fn dup2(from: c_int, to: c_int) {
    unsafe { libc::dup2(from, to) };
}

pub fn open(path: &str, flags: c_int, mode: libc::mode_t) -> io::Result<c_int> {
    let c = cstr(path);
    cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })
}

fn sockaddr(name: &str) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let b = name.as_bytes();
    if b.len() >= addr.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, c) in b.iter().enumerate() {
        addr.sun_path[i] = *c as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + b.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// A listening unix socket at `name` (relative to the cwd, which is the container's
/// directory: its absolute path can be longer than sun_path), mode 0600, nonblocking.
pub fn listen_unix(name: &str, kind: c_int) -> io::Result<c_int> {
    let (addr, len) = sockaddr(name)?;
    let c = cstr(name);
    unsafe { libc::unlink(c.as_ptr()) };
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // The socket file takes its mode from the umask at bind time.
    let old = unsafe { libc::umask(0o177) };
    let r = unsafe {
        libc::bind(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    };
    unsafe { libc::umask(old) };
    if r < 0 || unsafe { libc::listen(fd, 128) } < 0 {
        let e = io::Error::last_os_error();
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

pub fn accept(fd: c_int) -> Option<c_int> {
    loop {
        let r = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if r >= 0 {
            return Some(r);
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// Receive one fd passed with SCM_RIGHTS (the pty master from the runtime).
pub fn recv_fd(sock: c_int) -> io::Result<c_int> {
    #[repr(C, align(8))]
    struct Cmsg([u8; 64]);
    let mut cbuf = Cmsg([0; 64]);
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cbuf.0.len() as _;
    loop {
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            let mut fd: c_int = -1;
            std::ptr::copy_nonoverlapping(
                libc::CMSG_DATA(cmsg),
                &mut fd as *mut c_int as *mut u8,
                std::mem::size_of::<c_int>(),
            );
            return Ok(fd);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EBADMSG))
}

/// Send one packet without blocking and without SIGPIPE. Ok(false): the socket is full.
pub fn send_packet(fd: c_int, pkt: &[u8]) -> io::Result<bool> {
    loop {
        let r = unsafe {
            libc::send(
                fd,
                pkt.as_ptr() as *const libc::c_void,
                pkt.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if r >= 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Receive one packet; Ok(None) when nothing is waiting, Ok(Some(0)) at EOF.
pub fn recv_packet(fd: c_int, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        let r = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r >= 0 {
            return Ok(Some(r as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(e),
        }
    }
}

pub fn pidfd_open(pid: i32) -> c_int {
    unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) as c_int }
}

/// Reap `pid` if it has exited: its status as shells report it (128+signal when killed).
pub fn try_reap(pid: i32) -> Option<i32> {
    let mut st: c_int = 0;
    let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG | libc::__WALL) };
    if r == pid {
        Some(sampan_runtime::container::decode_status(st))
    } else {
        None
    }
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: c_int) -> usize {
    loop {
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return r as usize;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 0;
        }
    }
}

/// `path` replaced atomically and durably: temp file, fsync, rename, fsync of the directory.
/// Paths are relative to the cwd (the container's directory).
pub fn atomic_write(path: &str, data: &[u8]) -> io::Result<()> {
    let tmp = format!("{path}.tmp");
    let fd = open(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o600)?;
    let r = write_all(fd, data).and_then(|_| cvt(unsafe { libc::fsync(fd) }).map(|_| ()));
    close(fd);
    r?;
    let (a, b) = (cstr(&tmp), cstr(path));
    cvt(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) })?;
    let dir = match path.rfind('/') {
        Some(i) => &path[..i.max(1)],
        None => ".",
    };
    let dfd = open(dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    unsafe { libc::fsync(dfd) };
    close(dfd);
    Ok(())
}

/// RFC 3339 UTC with nanoseconds, the format monitor.py and the daemon write (the runtime
/// prints `created` the same way).
pub use sampan_runtime::state::now_rfc3339;

/// docker's codes for a process that could not be started (as monitor.py's exit_code_for).
pub fn exit_code_for(msg: &str) -> i32 {
    let low = msg.to_lowercase();
    if low.contains("not found") || low.contains("no such file") {
        127
    } else if low.contains("permission denied") || low.contains("is a directory") {
        126
    } else {
        128
    }
}

pub fn set_winsize(fd: c_int, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ as _, &ws) };
}

/// Give back to the kernel what creating the container allocated (the parsed spec, the plan):
/// the monitor then idles for the container's whole life, and each one costs its dirty pages.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}
