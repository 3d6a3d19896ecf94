//! Handing a call to the Python CLI: the interpreter pip installed `sampand` for (the shebang
//! of the sibling console script), exec'd with the same arguments so that its exit code and
//! terminal are the user's.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The Python CLI. With -c, not -m: the current directory would come first on sys.path and a
/// `sampan/` folder there would shadow the installed package; `-c` puts '' there, dropped.
const CODE: &str = "import sys\n\
if sys.path and sys.path[0] == '':\n    del sys.path[0]\n\
sys.argv[0] = 'sampan'\n\
from sampan.cli import main\n\
main(prog_name='sampan')\n";

/// The interpreter (and its argument, for `#!/usr/bin/env python3`) named by a console
/// script's shebang: pip's `#!/path/python`, or for long paths its `#!/bin/sh` trampoline
/// whose second line is `'''exec' "/path/python" "$0" "$@"`.
pub fn shebang_python(script: &[u8]) -> Option<Vec<OsString>> {
    let mut lines = script.split(|&b| b == b'\n');
    let first = lines.next()?.strip_prefix(b"#!")?;
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let first = trim(first);
    let (prog, arg) = match first.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&first[..i], trim(&first[i..])),
        None => (first, &b""[..]),
    };
    if prog == b"/bin/sh" {
        for line in lines {
            if let Some(rest) = line.strip_prefix(b"'''exec' \"") {
                let end = rest.iter().position(|&b| b == b'"')?;
                return Some(vec![OsStr::from_bytes(&rest[..end]).into()]);
            }
            // a wrapper of its own (OpenWrt's: `exec /usr/bin/python3 -m sampan.daemon.main`)
            if let Some(rest) = line.strip_prefix(b"exec ") {
                let word = rest.split(|&b| b == b' ').next()?;
                let base = word.rsplit(|&b| b == b'/').next()?;
                return base
                    .starts_with(b"python")
                    .then(|| vec![OsStr::from_bytes(word).into()]);
            }
        }
        return None;
    }
    if prog.is_empty() {
        return None;
    }
    let mut out = vec![OsStr::from_bytes(prog).to_os_string()];
    if !arg.is_empty() {
        out.push(OsStr::from_bytes(arg).into());
    }
    Some(out)
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |i| i + 1);
    &b[s..e]
}

/// $SAMPAN_PYTHON, else the interpreter of the `sampand` beside this binary, else python3.
pub fn python() -> Vec<OsString> {
    if let Some(p) = std::env::var_os("SAMPAN_PYTHON").filter(|p| !p.is_empty()) {
        return vec![p];
    }
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        if let Some(dir) = exe.parent() {
            if let Some(p) = read_head(&dir.join("sampand"))
                .as_deref()
                .and_then(shebang_python)
            {
                return p;
            }
        }
    }
    vec!["python3".into()]
}

fn read_head(p: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; 4096];
    let mut f = std::fs::File::open(p).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    buf.truncate(n);
    Some(buf)
}

/// Replace this process by the Python CLI with `args` (argv without argv[0]).
pub fn exec_python(args: &[OsString], why: &str) -> ! {
    crate::trace(&format!("python ({why})"));
    let py = python();
    // Rust's runtime ignores SIGPIPE; an exec'd program should find the default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let err = Command::new(&py[0])
        .args(&py[1..])
        .arg("-c")
        .arg(CODE)
        .args(args)
        .exec();
    eprintln!(
        "sampan: cannot run the Python CLI ({}): {err}",
        py[0].to_string_lossy()
    );
    std::process::exit(127);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs() {
        assert_eq!(
            shebang_python(b"#!/usr/bin/python3\nimport sys\n").unwrap(),
            vec![OsString::from("/usr/bin/python3")]
        );
        assert_eq!(
            shebang_python(b"#!/usr/bin/env python3\n").unwrap(),
            vec![OsString::from("/usr/bin/env"), OsString::from("python3")]
        );
        let tramp = b"#!/bin/sh\n'''exec' \"/very/long/p y/bin/python\" \"$0\" \"$@\"\n' '''\n";
        assert_eq!(
            shebang_python(tramp).unwrap(),
            vec![OsString::from("/very/long/p y/bin/python")]
        );
        let owrt = b"#!/bin/sh\nexec /usr/bin/python3 -m sampan.daemon.main \"$@\"\n";
        assert_eq!(
            shebang_python(owrt).unwrap(),
            vec![OsString::from("/usr/bin/python3")]
        );
        assert!(shebang_python(b"#!/bin/sh\nexec foo\n").is_none());
        assert!(shebang_python(b"\x7fELF").is_none());
    }
}
