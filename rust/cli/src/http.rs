//! HTTP/1.1 over the daemon's unix socket, as much as the fast verbs need: requests with a
//! JSON body or none, answers with Content-Length, chunked or read-to-close bodies, a
//! kept-alive connection retried once when the daemon closed it meanwhile (as http.client
//! does for the Python CLI), and the upgrade of attach (`Connection: Upgrade`) whose raw
//! stream follows the 101.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

pub const API_PREFIX: &str = "/v1.45";

pub enum Error {
    /// No daemon answers at the socket (the Python CLI's DaemonUnreachable).
    Unreachable,
    /// An error answer: status and the daemon's message.
    Api(u16, String),
    /// Anything else that went wrong on the wire.
    Proto(String),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Proto(e.to_string())
    }
}

pub struct Head {
    pub status: u16,
    chunked: bool,
    length: Option<usize>,
    close: bool,
}

/// One connection with its unread bytes.
pub struct Conn {
    pub sock: UnixStream,
    buf: Vec<u8>,
    pos: usize,
    used: bool,
}

pub fn connect(path: &str) -> Result<Conn, Error> {
    match UnixStream::connect(path) {
        Ok(sock) => Ok(Conn {
            sock,
            buf: Vec::new(),
            pos: 0,
            used: false,
        }),
        Err(_) => Err(Error::Unreachable),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut tmp = [0u8; 16384];
        loop {
            match self.sock.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The bytes read past what was consumed (after a hijack: the stream's first bytes).
    pub fn take_leftover(&mut self) -> Vec<u8> {
        let out = self.buf[self.pos..].to_vec();
        self.buf.clear();
        self.pos = 0;
        out
    }

    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        body: Option<&[u8]>,
        upgrade: bool,
    ) -> io::Result<()> {
        let mut req = format!(
            "{method} {API_PREFIX}{target} HTTP/1.1\r\nHost: localhost\r\n\
                               User-Agent: sampan-cli\r\n"
        );
        if upgrade {
            req.push_str("Connection: Upgrade\r\nUpgrade: tcp\r\n");
        }
        let data = body.unwrap_or(b"");
        if body.is_some() || upgrade {
            req.push_str("Content-Type: application/json\r\n");
        }
        if body.is_some() || upgrade || method == "POST" || method == "PUT" {
            req.push_str(&format!("Content-Length: {}\r\n", data.len()));
        }
        req.push_str("\r\n");
        let mut all = req.into_bytes();
        all.extend_from_slice(data);
        self.used = true;
        self.sock.write_all(&all)
    }

    pub fn read_head(&mut self) -> io::Result<Head> {
        let end = loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n\r\n") {
                break self.pos + i;
            }
            if self.buf.len() - self.pos > 65536 {
                return Err(io::Error::other(
                    "the daemon's answer has no end of headers",
                ));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection before answering",
                ));
            }
        };
        let text = String::from_utf8_lossy(&self.buf[self.pos..end]).into_owned();
        self.pos = end + 4;
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other("bad answer from the daemon"))?;
        let mut head = Head {
            status,
            chunked: false,
            length: None,
            close: false,
        };
        for l in lines {
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => head.length = v.parse().ok(),
                "transfer-encoding" => head.chunked = v.contains("chunked"),
                "connection" => head.close = v.contains("close"),
                _ => {}
            }
        }
        Ok(head)
    }

    fn read_exact_buf(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short chunk"));
            }
        }
    }

    /// The whole body of the answer `head` began.
    pub fn read_body(&mut self, head: &Head, method: &str) -> io::Result<Vec<u8>> {
        if method == "HEAD" || head.status == 204 || head.status == 304 || head.status < 200 {
            return Ok(Vec::new());
        }
        if head.chunked {
            let mut out = Vec::new();
            loop {
                let line = self.read_line()?;
                let size = line.split(';').next().unwrap_or("").trim();
                let n = usize::from_str_radix(size, 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                if n == 0 {
                    // trailers, up to the empty line
                    while !self.read_line()?.is_empty() {}
                    return Ok(out);
                }
                out.extend(self.read_exact_buf(n)?);
                self.read_line()?;
            }
        }
        if let Some(n) = head.length {
            return self.read_exact_buf(n);
        }
        while self.fill()? > 0 {}
        let out = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        Ok(out)
    }
}

/// docker's `{"message": …}` error body, else its text.
pub fn api_error(status: u16, raw: &[u8]) -> Error {
    let text = String::from_utf8_lossy(raw);
    let mut msg = text.trim().to_string();
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&msg) {
        if let Some(m) = o.get("message") {
            msg = match m {
                serde_json::Value::String(s) => s.clone(),
                other => crate::text::py_str(other),
            };
        }
    }
    if msg.is_empty() {
        msg = format!("HTTP {status}");
    }
    Error::Api(status, msg)
}

/// The daemon at `path`, with one kept-alive connection for plain requests.
pub struct Client {
    pub path: String,
    conn: Option<Conn>,
}

impl Client {
    pub fn new(path: &str) -> Client {
        Client {
            path: path.to_string(),
            conn: None,
        }
    }

    /// A request answered in full; error answers are `Error::Api`.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, Error> {
        for attempt in 0..2 {
            let fresh = self.conn.is_none();
            if fresh {
                self.conn = Some(connect(&self.path)?);
            }
            let conn = self.conn.as_mut().unwrap();
            let reused = conn.used;
            let head = match conn
                .send(method, target, body, false)
                .and_then(|_| conn.read_head())
            {
                Ok(h) => h,
                Err(_) => {
                    self.conn = None;
                    // a kept-alive connection the daemon closed: once more on a new one
                    if reused && !fresh && attempt == 0 {
                        continue;
                    }
                    return Err(Error::Unreachable);
                }
            };
            let conn = self.conn.as_mut().unwrap();
            let data = conn.read_body(&head, method);
            if head.close || data.is_err() {
                self.conn = None;
            }
            let data = data?;
            if head.status >= 400 {
                return Err(api_error(head.status, &data));
            }
            return Ok(data);
        }
        Err(Error::Unreachable)
    }
}

/// Start a request on a connection of its own and wait for the answer's head (a stream whose
/// body comes later: the wait of `run`).
pub fn open_stream(path: &str, method: &str, target: &str) -> Result<(Conn, Head), Error> {
    let mut c = connect(path)?;
    c.send(method, target, None, false)
        .map_err(|_| Error::Unreachable)?;
    let head = c.read_head().map_err(|_| Error::Unreachable)?;
    if head.status >= 400 {
        let data = c.read_body(&head, method)?;
        return Err(api_error(head.status, &data));
    }
    Ok((c, head))
}

/// POST asking for the connection's upgrade; the raw connection after the 101 (or docker's
/// plain 200), its first bytes kept in the connection's buffer.
pub fn hijack(path: &str, target: &str) -> Result<Conn, Error> {
    let mut c = connect(path)?;
    c.send("POST", target, None, true)?;
    let head = c.read_head()?;
    if head.status >= 400 {
        let n = head.length.unwrap_or(0);
        let data = c.read_exact_buf(n).unwrap_or_default();
        return Err(api_error(head.status, &data));
    }
    Ok(c)
}

/// `application/x-www-form-urlencoded` as Python's urlencode (quote_plus) writes it.
pub fn query(params: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (k, v) in params {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(&quote_plus(k));
        out.push('=');
        out.push_str(&quote_plus(v));
    }
    out
}

fn quote_plus(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
