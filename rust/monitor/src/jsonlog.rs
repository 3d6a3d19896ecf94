//! docker's json-file log: one `{"log","stream","time"}` object per line, byte for byte what
//! monitor.py writes (Python's json.dumps with ensure_ascii and compact separators), lines over
//! 16 KiB split into partial entries, optional rotation by size.

use std::io;

use libc::c_int;

use crate::sys;

/// docker's log message buffer: longer lines become several entries.
pub const MAX_LINE: usize = 16 * 1024;

const STREAMS: [&str; 2] = ["stdout", "stderr"];

pub struct JsonLog {
    fd: c_int,
    name: String,
    size: u64,
    max_size: u64,
    max_file: u32,
    partial: [Vec<u8>; 2],
}

impl JsonLog {
    /// Appends to `name` (absolute, or relative to the container's directory). `max_size` 0:
    /// no rotation; rotated files are `name.1`, `name.2`… beside it.
    pub fn open(name: &str, max_size: u64, max_file: u32) -> io::Result<JsonLog> {
        let fd = sys::open(name, libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND, 0o640)?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        unsafe { libc::fstat(fd, &mut st) };
        Ok(JsonLog {
            fd,
            name: name.to_owned(),
            size: st.st_size as u64,
            max_size,
            max_file: max_file.max(1),
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// `stream`: 0 stdout, 1 stderr.
    pub fn write(&mut self, stream: usize, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.partial[stream]);
        buf.extend_from_slice(data);
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut rest: &[u8] = &buf;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(i + 1);
            push_split(&mut lines, line);
            rest = tail;
        }
        while rest.len() >= MAX_LINE {
            let (line, tail) = rest.split_at(MAX_LINE);
            lines.push(line);
            rest = tail;
        }
        let keep = rest.to_vec();
        self.emit(stream, &lines);
        self.partial[stream] = keep;
    }

    /// What is left of an unfinished line, at EOF of its stream.
    pub fn flush(&mut self, stream: usize) {
        let p = std::mem::take(&mut self.partial[stream]);
        if !p.is_empty() {
            self.emit(stream, &[&p]);
        }
    }

    fn emit(&mut self, stream: usize, lines: &[&[u8]]) {
        if lines.is_empty() {
            return;
        }
        let time = sys::now_rfc3339();
        let mut out = Vec::new();
        for ln in lines {
            let mut e = Vec::with_capacity(ln.len() + 80);
            e.extend_from_slice(b"{\"log\":");
            py_json_str(&mut e, &String::from_utf8_lossy(ln));
            e.extend_from_slice(b",\"stream\":\"");
            e.extend_from_slice(STREAMS[stream].as_bytes());
            e.extend_from_slice(b"\",\"time\":\"");
            e.extend_from_slice(time.as_bytes());
            e.extend_from_slice(b"\"}\n");
            let filled = self.size + out.len() as u64;
            // An entry that would take the file past max_size opens the next one (a single
            // entry larger than max_size is still written whole).
            if self.max_size > 0 && filled > 0 && filled + e.len() as u64 > self.max_size {
                self.put(&out);
                out.clear();
                self.rotate();
            }
            out.extend_from_slice(&e);
        }
        self.put(&out);
    }

    fn put(&mut self, data: &[u8]) {
        if sys::write_all(self.fd, data).is_ok() {
            self.size += data.len() as u64;
        }
    }

    /// `name.(N-1)` → `name.N` … `name` → `name.1`, keeping `max_file` files in all; with
    /// max_file 1 the file is truncated, as docker does.
    fn rotate(&mut self) {
        let keep = self.max_file;
        if keep > 1 {
            for i in (1..keep).rev() {
                let from = if i == 1 {
                    self.name.clone()
                } else {
                    format!("{}.{}", self.name, i - 1)
                };
                let to = format!("{}.{}", self.name, i);
                let (a, b) = (sys::cstr(&from), sys::cstr(&to));
                unsafe { libc::rename(a.as_ptr(), b.as_ptr()) };
            }
        }
        let flags = if keep > 1 {
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_EXCL
        } else {
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_TRUNC
        };
        match sys::open(&self.name, flags, 0o640) {
            Ok(fd) => {
                sys::close(self.fd);
                self.fd = fd;
                self.size = 0;
            }
            Err(e) => eprintln!("sampan-monitor: rotate {}: {e}", self.name),
        }
    }
}

impl Drop for JsonLog {
    fn drop(&mut self) {
        sys::close(self.fd);
    }
}

fn push_split<'a>(lines: &mut Vec<&'a [u8]>, mut line: &'a [u8]) {
    while line.len() > MAX_LINE {
        let (a, b) = line.split_at(MAX_LINE);
        lines.push(a);
        line = b;
    }
    lines.push(line);
}

/// A JSON string as Python's json.dumps writes it by default (ensure_ascii): everything outside
/// printable ASCII escaped, astral characters as surrogate pairs, lowercase hex.
pub fn py_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.extend_from_slice(format!("\\u{:04x}", u).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        let mut v = Vec::new();
        py_json_str(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes_like_python() {
        assert_eq!(enc("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(enc("\u{1}\u{7f}é"), r#""\u0001\u007f\u00e9""#);
        assert_eq!(enc("😀"), r#""\ud83d\ude00""#);
        assert_eq!(enc("\u{fffd}"), r#""\ufffd""#);
    }
}
