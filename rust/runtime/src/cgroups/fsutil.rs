//! Reading and writing cgroupfs files, with errors that name the file, the value and errno.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `value` to `dir/file` in one write(2), as cgroupfs wants. A missing file is an error
/// that says so: the controller is not enabled there or the kernel lacks the feature.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    let step = || format!("write {value:?} to cgroup file");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| explain(Error::io(step(), Some(&path), &e)))?;
    match f.write(value.as_bytes()) {
        Ok(n) if n == value.len() => Ok(()),
        Ok(n) => Err(Error::invalid(
            step(),
            format!("short write of {n} of {} bytes", value.len()),
        )
        .with_path(&path)),
        Err(e) => Err(explain(Error::io(step(), Some(&path), &e))),
    }
}

fn explain(mut e: Error) -> Error {
    if e.errno == Some(libc::ENOENT) && e.detail.is_none() {
        e.detail = Some(
            "no such cgroup file: the controller is not enabled for this cgroup or the kernel \
             lacks the feature"
                .to_string(),
        );
    }
    e
}

/// Reads `dir/file` whole.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    let mut s = String::new();
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|e| Error::io("read cgroup file", Some(&path), &e))?;
    Ok(s)
}

/// Reads `dir/file`, None when it does not exist.
pub(crate) fn read_opt(dir: &Path, file: &str) -> Result<Option<String>> {
    match read(dir, file) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.errno == Some(libc::ENOENT) || e.errno == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// A single number; "max" (and v1's page-rounded "unlimited") is None.
pub(crate) fn parse_limit(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return None;
    }
    match s.parse::<u64>() {
        // v1 prints "unlimited" as LONG_MAX rounded down to a page.
        Ok(v) if v >= 0x7FFF_FFFF_FFFF_0000 => None,
        Ok(v) => Some(v),
        Err(_) => None,
    }
}

/// Value of `key` in a flat-keyed file ("key value" lines, as memory.stat or cpu.stat).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        if it.next() == Some(key) {
            it.next().and_then(|v| v.parse().ok())
        } else {
            None
        }
    })
}

/// A single u64 file, 0 when missing or not a number.
pub(crate) fn read_u64(dir: &Path, file: &str) -> Result<u64> {
    Ok(read_opt(dir, file)?
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0))
}
