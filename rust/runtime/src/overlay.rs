//! Mounting overlayfs for the storage driver. Images can have many layers and the classic
//! mount(2) options string is limited to one page, so long lower lists go through the new
//! mount API ("lowerdir+", Linux 6.8+) or, failing that, through paths made relative to a
//! common parent from a short-lived thread with its own working directory.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::cpath;

pub struct Overlay<'a> {
    /// Lower layers, topmost first (overlayfs order).
    pub lower: &'a [PathBuf],
    pub upper: Option<&'a Path>,
    pub work: Option<&'a Path>,
    pub target: &'a Path,
    /// Extra options, e.g. "index=off" or "volatile".
    pub extra: &'a [String],
}

fn check_path(p: &Path) -> Result<()> {
    let b = p.as_os_str().as_bytes();
    if b.iter().any(|c| matches!(c, b':' | b',' | b'\\')) {
        return Err(Error::invalid(
            "overlay",
            format!("layer path {} contains ':', ',' or '\\'", p.display()),
        ));
    }
    Ok(())
}

fn options(o: &Overlay, lower: &[String], upper: Option<String>, work: Option<String>) -> String {
    let mut s = format!("lowerdir={}", lower.join(":"));
    if let Some(u) = upper {
        s.push_str(&format!(",upperdir={u}"));
    }
    if let Some(w) = work {
        s.push_str(&format!(",workdir={w}"));
    }
    for e in o.extra {
        s.push(',');
        s.push_str(e);
    }
    s
}

fn page_size() -> usize {
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

fn mount_classic(target: &Path, data: &str) -> Result<()> {
    let t = cpath(target)?;
    let d = CString::new(data).map_err(|_| Error::invalid("overlay", "NUL in options"))?;
    let r = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            t.as_ptr(),
            c"overlay".as_ptr(),
            0,
            d.as_ptr() as *const libc::c_void,
        )
    };
    if r < 0 {
        return Err(Error::last("mount overlay", Some(target)));
    }
    Ok(())
}

pub fn mount(o: &Overlay) -> Result<()> {
    if o.lower.is_empty() {
        return Err(Error::invalid("overlay", "no lower layers"));
    }
    for p in o
        .lower
        .iter()
        .map(|p| p.as_path())
        .chain(o.upper)
        .chain(o.work)
    {
        check_path(p)?;
        // The kernel's ENOENT would name the target (or nothing, with fsconfig): name the layer.
        let meta = std::fs::metadata(p).map_err(|e| Error::io("overlay layer", Some(p), &e))?;
        if !meta.is_dir() {
            return Err(Error::sys("overlay layer", Some(p), libc::ENOTDIR));
        }
    }
    let s = |p: &Path| p.to_string_lossy().to_string();
    let lower: Vec<String> = o.lower.iter().map(|p| s(p)).collect();
    let data = options(o, &lower, o.upper.map(s), o.work.map(s));
    if data.len() < page_size() {
        return mount_classic(o.target, &data);
    }
    match mount_new_api(o) {
        Ok(()) => Ok(()),
        Err(e) if e.errno == Some(libc::ENOSYS) || e.errno == Some(libc::EINVAL) => {
            mount_relative(o).map_err(|mut r| {
                // EINVAL may be a bad option rather than an old kernel: say what fsconfig said.
                if let (None, Some(d)) = (r.errno, r.detail.as_mut()) {
                    d.push_str(&format!(" (the mount API said: {e})"));
                }
                r
            })
        }
        Err(e) => Err(e),
    }
}

const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_SET_FD: u32 = 5;
const FSCONFIG_CMD_CREATE: u32 = 6;
const SYS_FSOPEN: libc::c_long = 430;
const SYS_FSCONFIG: libc::c_long = 431;
const SYS_FSMOUNT: libc::c_long = 432;
const SYS_MOVE_MOUNT: libc::c_long = 429;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

fn fsconfig(fd: i32, key: &str, value: Option<&str>) -> Result<()> {
    let k = CString::new(key).unwrap_or_default();
    let v = value.map(|v| CString::new(v).unwrap_or_default());
    let (cmd, vp) = match &v {
        Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
        None => (FSCONFIG_CMD_CREATE, std::ptr::null()),
    };
    let kp = if value.is_some() {
        k.as_ptr()
    } else {
        std::ptr::null()
    };
    let r = unsafe { libc::syscall(SYS_FSCONFIG, fd, cmd, kp, vp, 0) };
    if r < 0 {
        return Err(Error::last(format!("fsconfig overlay {key}"), None));
    }
    Ok(())
}

/// Options without a value ("volatile", "userxattr") are flags to fsconfig, not strings.
fn fsconfig_flag(fd: i32, key: &str) -> Result<()> {
    let k = CString::new(key).unwrap_or_default();
    let r = unsafe {
        libc::syscall(
            SYS_FSCONFIG,
            fd,
            FSCONFIG_SET_FLAG,
            k.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if r < 0 {
        return Err(Error::last(format!("fsconfig overlay {key}"), None));
    }
    Ok(())
}

/// fsconfig copies string values of at most 255 bytes: a longer layer path goes as an fd
/// (overlayfs takes those since Linux 6.13; older kernels answer EINVAL and the caller falls
/// back to relative paths).
fn fsconfig_path(fd: i32, key: &str, p: &Path) -> Result<()> {
    if p.as_os_str().len() < 256 {
        return fsconfig(fd, key, Some(&p.to_string_lossy())).map_err(|e| e.with_path(p));
    }
    let c = cpath(p)?;
    let dir = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return Err(Error::last(format!("open overlay {key}"), Some(p)));
    }
    let k = CString::new(key).unwrap_or_default();
    let r = unsafe {
        libc::syscall(
            SYS_FSCONFIG,
            fd,
            FSCONFIG_SET_FD,
            k.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            dir,
        )
    };
    let err = Error::last(format!("fsconfig overlay {key}"), Some(p));
    unsafe { libc::close(dir) };
    if r < 0 {
        return Err(err);
    }
    Ok(())
}

fn mount_new_api(o: &Overlay) -> Result<()> {
    let fsfd = unsafe { libc::syscall(SYS_FSOPEN, c"overlay".as_ptr(), 1u32) } as i32;
    if fsfd < 0 {
        return Err(Error::last("fsopen overlay", None));
    }
    let result = (|| {
        fsconfig(fsfd, "source", Some("overlay"))?;
        for l in o.lower {
            fsconfig_path(fsfd, "lowerdir+", l)?;
        }
        if let Some(u) = o.upper {
            fsconfig_path(fsfd, "upperdir", u)?;
        }
        if let Some(w) = o.work {
            fsconfig_path(fsfd, "workdir", w)?;
        }
        for e in o.extra {
            match e.split_once('=') {
                Some((k, v)) => fsconfig(fsfd, k, Some(v))?,
                None => fsconfig_flag(fsfd, e)?,
            }
        }
        fsconfig(fsfd, "create", None)?;
        let mfd = unsafe { libc::syscall(SYS_FSMOUNT, fsfd, 1u32, 0u32) } as i32;
        if mfd < 0 {
            return Err(Error::last("fsmount overlay", None));
        }
        let t = cpath(o.target)?;
        let r = unsafe {
            libc::syscall(
                SYS_MOVE_MOUNT,
                mfd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        let err = Error::last("move_mount overlay", Some(o.target));
        unsafe { libc::close(mfd) };
        if r < 0 {
            return Err(err);
        }
        Ok(())
    })();
    unsafe { libc::close(fsfd) };
    result
}

fn common_parent(paths: &[&Path]) -> PathBuf {
    let mut common: PathBuf = paths[0].parent().unwrap_or(Path::new("/")).to_path_buf();
    for p in &paths[1..] {
        while !p.starts_with(&common) {
            if !common.pop() {
                return PathBuf::from("/");
            }
        }
    }
    common
}

/// Mount with paths relative to their common parent, from a thread that owns its cwd.
fn mount_relative(o: &Overlay) -> Result<()> {
    let mut all: Vec<&Path> = o.lower.iter().map(|p| p.as_path()).collect();
    all.extend(o.upper);
    all.extend(o.work);
    let base = common_parent(&all);
    let rel = |p: &Path| {
        p.strip_prefix(&base)
            .map(|r| r.to_string_lossy().to_string())
            .unwrap_or_else(|_| p.to_string_lossy().to_string())
    };
    let lower: Vec<String> = o.lower.iter().map(|p| rel(p)).collect();
    let data = options(o, &lower, o.upper.map(rel), o.work.map(rel));
    if data.len() >= page_size() {
        return Err(Error::invalid(
            "overlay",
            format!(
                "{} layers do not fit in a mount option page even as relative paths, \
                 and this kernel lacks the lowerdir+ mount API (Linux 6.8)",
                o.lower.len()
            ),
        ));
    }
    let target = std::fs::canonicalize(o.target)
        .map_err(|e| Error::io("overlay target", Some(o.target), &e))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            if unsafe { libc::unshare(libc::CLONE_FS) } < 0 {
                return Err(Error::last("unshare CLONE_FS", None));
            }
            std::env::set_current_dir(&base).map_err(|e| Error::io("chdir", Some(&base), &e))?;
            mount_classic(&target, &data)
        })
        .join()
        .unwrap_or_else(|_| Err(Error::invalid("overlay", "mount thread panicked")))
    })
}

pub fn unmount(target: &Path) -> Result<()> {
    let t = cpath(target)?;
    if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(Error::last("unmount", Some(target)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_layers() {
        let a = PathBuf::from("/var/lib/s/snap/1/fs");
        let b = PathBuf::from("/var/lib/s/snap/22/fs");
        assert_eq!(
            common_parent(&[a.as_path(), b.as_path()]),
            PathBuf::from("/var/lib/s/snap")
        );
    }

    #[test]
    fn refuses_separators() {
        assert!(check_path(Path::new("/a:b")).is_err());
        assert!(check_path(Path::new("/a/b")).is_ok());
    }
}
