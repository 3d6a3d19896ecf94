//! One error type for the whole runtime. Every failure names the step that failed, the path it
//! was working on (when there is one) and the errno, so a user can act on the message alone.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What the runtime was doing, e.g. "mount proc" or "write cgroup memory.limit_in_bytes".
    pub step: String,
    pub path: Option<PathBuf>,
    pub errno: Option<i32>,
    /// Free text for errors that are not syscalls (validation, protocol).
    pub detail: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn sys(step: impl Into<String>, path: Option<&Path>, errno: i32) -> Self {
        Error {
            step: step.into(),
            path: path.map(Path::to_path_buf),
            errno: Some(errno),
            detail: None,
        }
    }

    /// The current thread's errno, attributed to `step` on `path`.
    pub fn last(step: impl Into<String>, path: Option<&Path>) -> Self {
        Self::sys(step, path, errno())
    }

    pub fn io(step: impl Into<String>, path: Option<&Path>, e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(n) => Self::sys(step, path, n),
            None => Error {
                step: step.into(),
                path: path.map(Path::to_path_buf),
                errno: None,
                detail: Some(e.to_string()),
            },
        }
    }

    pub fn invalid(step: impl Into<String>, detail: impl Into<String>) -> Self {
        Error {
            step: step.into(),
            path: None,
            errno: None,
            detail: Some(detail.into()),
        }
    }

    pub fn with_path(mut self, path: &Path) -> Self {
        self.path = Some(path.to_path_buf());
        self
    }
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The symbolic name of an errno ("ENOENT"), so messages are greppable across libcs.
pub fn errno_name(n: i32) -> &'static str {
    match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ECONNREFUSED => "ECONNREFUSED",
        _ => "errno",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.step)?;
        if let Some(p) = &self.path {
            write!(f, " {}", p.display())?;
        }
        if let Some(n) = self.errno {
            let text = std::io::Error::from_raw_os_error(n);
            // io::Error's Display appends "(os error N)"; keep only the human part.
            let text = text.to_string();
            let human = text.split(" (os error").next().unwrap_or(&text);
            write!(f, ": {} ({} {})", human, errno_name(n), n)?;
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
