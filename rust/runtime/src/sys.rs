//! Small syscall helpers that are safe in the child of a raw clone() of a multithreaded
//! process: no allocation, no locks, only stack buffers and raw syscalls.

use libc::{c_char, c_int};

pub const PATH_BUF: usize = 4096;

/// A NUL-terminated path assembled on the stack.
pub struct PathBuf {
    buf: [u8; PATH_BUF],
    len: usize,
}

impl PathBuf {
    pub const fn new() -> Self {
        PathBuf {
            buf: [0; PATH_BUF],
            len: 0,
        }
    }

    /// Appends bytes; returns false (and leaves the buffer unchanged) when they don't fit.
    pub fn push(&mut self, s: &[u8]) -> bool {
        if self.len + s.len() >= PATH_BUF {
            return false;
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
        self.buf[self.len] = 0;
        true
    }

    pub fn push_num(&mut self, mut n: u64) -> bool {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }

    pub fn as_ptr(&self) -> *const c_char {
        self.buf.as_ptr() as *const c_char
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// "/proc/self/fd/N": how the child names an fd it resolved safely inside the rootfs.
    pub fn fd_path(fd: c_int) -> Self {
        let mut p = PathBuf::new();
        p.push(b"/proc/self/fd/");
        p.push_num(fd as u64);
        p
    }
}

impl Default for PathBuf {
    fn default() -> Self {
        Self::new()
    }
}

pub fn errno() -> c_int {
    unsafe { *libc::__errno_location() }
}

pub fn close(fd: c_int) {
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2(root, path, RESOLVE_IN_ROOT): symlinks and ".." in `path` cannot leave `root`.
/// Falls back to a plain openat when the kernel lacks openat2 (before 5.6, or qemu-user).
pub fn open_in_root(root: c_int, path: *const c_char, flags: c_int) -> Result<c_int, c_int> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path,
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if r >= 0 {
        return Ok(r as c_int);
    }
    let e = errno();
    if e != libc::ENOSYS {
        return Err(e);
    }
    let r = unsafe { libc::openat(root, path, flags | libc::O_CLOEXEC) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// Resolve `rel` (relative to the rootfs, no leading '/') inside `root`, creating missing
/// directories, and the last component as a directory or an empty file. Returns an O_PATH fd.
pub fn ensure_in_root(root: c_int, rel: &[u8], last_is_file: bool) -> Result<c_int, c_int> {
    let mut prefix = PathBuf::new();
    let mut start = 0;
    let n = rel.len();
    if n == 0 {
        return open_in_root(root, c".".as_ptr(), libc::O_PATH);
    }
    while start < n {
        let mut end = start;
        while end < n && rel[end] != b'/' {
            end += 1;
        }
        let comp = &rel[start..end];
        let last = end >= n;
        if !comp.is_empty() {
            let parent_len = prefix.len;
            if parent_len > 0 && !prefix.push(b"/") {
                return Err(libc::ENAMETOOLONG);
            }
            if !prefix.push(comp) {
                return Err(libc::ENAMETOOLONG);
            }
            match open_in_root(root, prefix.as_ptr(), libc::O_PATH) {
                Ok(fd) => {
                    if last {
                        return Ok(fd);
                    }
                    close(fd);
                }
                Err(libc::ENOENT) => {
                    // Create it inside its (already resolved) parent.
                    let mut parent = PathBuf::new();
                    if parent_len == 0 {
                        parent.push(b".");
                    } else {
                        parent.push(&prefix.bytes()[..parent_len]);
                    }
                    let pfd =
                        open_in_root(root, parent.as_ptr(), libc::O_PATH | libc::O_DIRECTORY)?;
                    let mut name = PathBuf::new();
                    name.push(comp);
                    let r = if last && last_is_file {
                        let fd = unsafe {
                            libc::openat(
                                pfd,
                                name.as_ptr(),
                                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                                0o644,
                            )
                        };
                        if fd >= 0 {
                            close(fd);
                            0
                        } else {
                            -1
                        }
                    } else {
                        unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o755) }
                    };
                    let e = errno();
                    close(pfd);
                    if r < 0 && e != libc::EEXIST {
                        return Err(e);
                    }
                    let fd = open_in_root(root, prefix.as_ptr(), libc::O_PATH)?;
                    if last {
                        return Ok(fd);
                    }
                    close(fd);
                }
                Err(e) => return Err(e),
            }
        }
        start = end + 1;
    }
    open_in_root(root, prefix.as_ptr(), libc::O_PATH)
}

/// Write all of `data` to `fd` (an open file), for /proc and cgroup files.
pub fn write_all(fd: c_int, data: &[u8]) -> Result<(), c_int> {
    let mut off = 0;
    while off < data.len() {
        let r = unsafe { libc::write(fd, data[off..].as_ptr() as *const _, data.len() - off) };
        if r < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        off += r as usize;
    }
    Ok(())
}

pub fn write_file(path: *const c_char, data: &[u8]) -> Result<(), c_int> {
    let fd = unsafe { libc::open(path, libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    let r = write_all(fd, data);
    close(fd);
    r
}
