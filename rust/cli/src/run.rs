//! `sampan run` without a terminal session: the Python CLI's create request, then docker's
//! order — the wait registered (condition removed for --rm, else next-exit), attach, start,
//! the multiplexed stream relayed to fds 1 and 2 while the proxied signals go to the
//! container, and the wait's result as the exit code (sampan.cli.containers_cmd.run_cmd,
//! sampan.cli.exec_cmd.attach_and_start, sampan.cli.attach.Session).

use crate::args::Run;
use crate::http::{self, query, Client, Conn, Error};
use crate::text::json_str;
use serde_json::Value;
use std::io::Read;
use std::os::unix::io::AsRawFd;

pub const EXIT_ENGINE: i32 = 125;

/// sampan.cli.attach.PROXIED_SIGNALS
const PROXIED: [libc::c_int; 9] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGCONT,
    libc::SIGTSTP,
];

fn strs(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json_str(out, s, true);
    }
    out.push(']');
}

fn key(out: &mut String, k: &str) {
    out.push_str(", ");
    json_str(out, k, true);
    out.push_str(": ");
}

/// The create body, byte for byte what the Python CLI's json.dumps sends for these flags
/// (its key order included: the daemon keeps the Labels' order).
pub fn create_body(r: &Run) -> String {
    let attach = if r.detach { "false" } else { "true" };
    let mut o = String::from("{\"Image\": ");
    json_str(&mut o, &r.image, true);
    key(&mut o, "Env");
    strs(&mut o, &r.env);
    key(&mut o, "Labels");
    // a dict: a repeated key keeps its first place and takes the last value
    let mut labels: Vec<(&str, &str)> = Vec::new();
    for l in &r.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        match labels.iter_mut().find(|e| e.0 == k) {
            Some(e) => e.1 = v,
            None => labels.push((k, v)),
        }
    }
    o.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            o.push_str(", ");
        }
        json_str(&mut o, k, true);
        o.push_str(": ");
        json_str(&mut o, v, true);
    }
    o.push('}');
    o.push_str(&format!(
        ", \"Tty\": false, \"OpenStdin\": false, \"AttachStdout\": {attach}, \
                         \"AttachStderr\": {attach}"
    ));
    if !r.cmd.is_empty() {
        key(&mut o, "Cmd");
        strs(&mut o, &r.cmd);
    }
    if let Some(e) = &r.entrypoint {
        key(&mut o, "Entrypoint");
        strs(
            &mut o,
            if e.is_empty() {
                &[]
            } else {
                std::slice::from_ref(e)
            },
        );
    }
    for (v, k) in [
        (&r.workdir, "WorkingDir"),
        (&r.user, "User"),
        (&r.hostname, "Hostname"),
    ] {
        if let Some(v) = v {
            key(&mut o, k);
            json_str(&mut o, v, true);
        }
    }
    key(&mut o, "HostConfig");
    o.push_str("{\"Binds\": null, \"Memory\": 0, \"PidsLimit\": null, \"ReadonlyRootfs\": false, \
                \"Privileged\": false, \"CapAdd\": null, \"CapDrop\": null, \"SecurityOpt\": null, ");
    o.push_str(&format!("\"AutoRemove\": {}, \"NetworkMode\": ", r.rm));
    json_str(&mut o, r.network.as_deref().unwrap_or("default"), true);
    o.push_str("}, \"AttachStdin\": false, \"StdinOnce\": false}");
    o
}

pub fn say(msg: &str) {
    write_all(2, format!("{msg}\n").as_bytes());
}

fn fail(msg: &str, code: i32) -> ! {
    say(msg);
    std::process::exit(code)
}

/// What sampan.cli.system_cmd.daemon_errors prints and returns for an error no verb handled.
pub fn daemon_error(e: Error, host: &str) -> ! {
    match e {
        Error::Unreachable => {
            say(&format!(
                "Cannot connect to the Sampan daemon at {host}. Is sampand running?"
            ));
            say(crate::START_HINT);
            std::process::exit(EXIT_ENGINE)
        }
        Error::Api(_, m) => fail(&format!("Error response from daemon: {m}"), 1),
        Error::Proto(m) => fail(&format!("Error: {m}"), 1),
    }
}

/// `exec_cmd._start_error_code` (`detach`: containers_cmd._start_failed, which does not know
/// "is a directory").
fn start_error_code(msg: &str, detach: bool) -> i32 {
    let low = msg.to_lowercase();
    if low.contains("not found") || low.contains("no such file") {
        127
    } else if low.contains("permission denied") || (!detach && low.contains("is a directory")) {
        126
    } else {
        EXIT_ENGINE
    }
}

pub enum Created {
    Id(String),
    NoImage,
}

pub fn create(c: &mut Client, r: &Run, host: &str) -> Created {
    let mut params = Vec::new();
    if let Some(n) = &r.name {
        params.push(("name", n.clone()));
    }
    let target = format!("/containers/create{}", query(&params));
    let body = create_body(r);
    match c.request("POST", &target, Some(body.as_bytes())) {
        Ok(data) => {
            let v: Value = serde_json::from_slice(&data).unwrap_or_else(|e| {
                daemon_error(Error::Proto(format!("bad JSON from the daemon: {e}")), host)
            });
            if let Some(ws) = v.get("Warnings").and_then(|w| w.as_array()) {
                for w in ws {
                    say(&format!("WARNING: {}", crate::text::py_str(w)));
                }
            }
            match v.get("Id").and_then(|i| i.as_str()) {
                Some(id) => Created::Id(id.to_string()),
                None => daemon_error(Error::Proto("the daemon's answer has no Id".into()), host),
            }
        }
        // nothing was created: Python's run decides what a missing image means
        Err(Error::Api(404, m)) if m.contains("No such image") => Created::NoImage,
        Err(Error::Api(_, m)) => fail(&format!("Error response from daemon: {m}"), EXIT_ENGINE),
        Err(e) => daemon_error(e, host),
    }
}

pub fn run_detached(c: &mut Client, r: &Run, cid: &str, host: &str) -> ! {
    match c.request("POST", &format!("/containers/{cid}/start"), None) {
        Ok(_) => {
            write_all(1, format!("{cid}\n").as_bytes());
            std::process::exit(0)
        }
        Err(Error::Api(_, m)) => {
            if r.rm {
                let _ = c.request("DELETE", &format!("/containers/{cid}?force=1"), None);
            }
            fail(
                &format!("Error response from daemon: {m}"),
                start_error_code(&m, true),
            )
        }
        Err(e) => daemon_error(e, host),
    }
}

pub fn run_attached(c: &mut Client, r: &Run, cid: &str, host: &str) -> ! {
    let cond = if r.rm { "removed" } else { "next-exit" };
    let wait = http::open_stream(
        &c.path,
        "POST",
        &format!("/containers/{cid}/wait?condition={cond}"),
    );
    let (mut waiter, whead) = wait.unwrap_or_else(|e| daemon_error(e, host));
    let target = format!("/containers/{cid}/attach?stream=1&stdin=0&stdout=1&stderr=1");
    let mut h = http::hijack(&c.path, &target).unwrap_or_else(|e| daemon_error(e, host));
    if let Err(e) = c.request("POST", &format!("/containers/{cid}/start"), None) {
        let Error::Api(_, m) = e else {
            daemon_error(e, host)
        };
        drop(h);
        if r.rm {
            // as docker: return once the daemon has removed it
            let _ = waiter.read_body(&whead, "POST");
        }
        fail(
            &format!("Error response from daemon: {m}"),
            start_error_code(&m, false),
        );
    }
    relay(&mut h, &c.path, cid);
    drop(h);
    let res: Value = waiter
        .read_body(&whead, "POST")
        .ok()
        .and_then(|b| {
            if b.is_empty() {
                None
            } else {
                serde_json::from_slice(&b).ok()
            }
        })
        .unwrap_or(Value::Object(Default::default()));
    let code = res.get("StatusCode");
    if let Some(Value::Object(err)) = res.get("Error") {
        let msg = err.get("Message").and_then(|m| m.as_str()).unwrap_or("");
        if !msg.is_empty() && matches!(code, None | Some(Value::Null)) {
            fail(&format!("Error: {msg}"), EXIT_ENGINE);
        }
    }
    std::process::exit(code.and_then(|v| v.as_i64()).unwrap_or(0) as i32)
}

pub fn write_all(fd: i32, mut data: &[u8]) {
    while !data.is_empty() {
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // the Python CLI's BrokenPipeError: exit 1, quietly
            std::process::exit(1);
        }
        data = &data[n as usize..];
    }
}

/// Docker's 8-byte-header frames → stdout (1) / stderr (2), as they come.
struct Demux {
    buf: Vec<u8>,
}

impl Demux {
    fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        let mut pos = 0;
        while self.buf.len() - pos >= 8 {
            let h = &self.buf[pos..pos + 8];
            let size = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
            if self.buf.len() - pos < 8 + size {
                break;
            }
            let fd = if h[0] == 2 { 2 } else { 1 };
            write_all(fd, &self.buf[pos + 8..pos + 8 + size]);
            pos += 8 + size;
        }
        self.buf.drain(..pos);
    }
}

/// Relay the attach stream until the daemon closes it; the proxied signals, blocked and read
/// from a signalfd meanwhile, are sent to the container.
fn relay(h: &mut Conn, path: &str, cid: &str) {
    let sfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in PROXIED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    // the signals are the container's from before the first output is shown, as in Python
    let mut demux = Demux { buf: Vec::new() };
    let first = h.take_leftover();
    demux.feed(&first);
    let mut kc = Client::new(path);
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: h.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let n = unsafe { libc::poll(fds.as_mut_ptr(), if sfd >= 0 { 2 } else { 1 }, -1) };
        if n < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            proxy(sfd, &mut kc, cid);
        }
        if fds[0].revents != 0 {
            match h.sock.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => demux.feed(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    unsafe {
        if sfd >= 0 {
            // signals that came after the last poll are the container's too
            proxy(sfd, &mut kc, cid);
            libc::close(sfd);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in PROXIED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Send the signals queued on `sfd` to the container (errors ignored, as the Python CLI does).
fn proxy(sfd: i32, kc: &mut Client, cid: &str) {
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let sz = std::mem::size_of::<libc::signalfd_siginfo>();
    while unsafe { libc::read(sfd, (&mut info as *mut libc::signalfd_siginfo).cast(), sz) }
        == sz as isize
    {
        let sig = info.ssi_signo;
        let _ = kc.request(
            "POST",
            &format!("/containers/{cid}/kill?signal={sig}"),
            None,
        );
    }
}
