//! Run and exec modes (docs/monitor.md): the daemon handshake, the container's stdio, the
//! attach socket, the exit record.

use std::path::PathBuf;

use libc::c_int;
use serde_json::{json, Value};

use sampan_runtime::{Container, CreateOptions, ExecOptions};

use crate::jsonlog::JsonLog;
use crate::relay::Relay;
use crate::sys;

/// How long clients get, after the output ended, to take what is queued for them.
const CLIENT_GRACE_MS: i64 = 5000;

fn send(fd: c_int, v: &Value) {
    let _ = sys::write_all(fd, &serde_json::to_vec(v).unwrap_or_default());
}

/// One message from the daemon; None when it closed the socket or sent garbage.
fn recv(fd: c_int) -> Option<Value> {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n > 0 {
            return serde_json::from_slice(&buf[..n as usize]).ok();
        }
        if n == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

fn started(v: &Option<Value>) -> bool {
    v.as_ref()
        .and_then(|v| v.get("start"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Fork once more: the first process exits (the daemon reaps it) and the monitor goes on
/// under init, outliving the daemon.
fn detach() {
    match unsafe { libc::fork() } {
        0 => {}
        -1 => {
            eprintln!("sampan-monitor: fork: {}", std::io::Error::last_os_error());
            unsafe { libc::_exit(1) };
        }
        _ => unsafe { libc::_exit(0) },
    }
}

fn read_json(name: &str) -> Option<Value> {
    std::fs::read(name)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
}

fn flag(v: &Option<Value>, k: &str) -> bool {
    v.as_ref()
        .and_then(|v| v.get(k))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The container's stdio while the runtime creates its process (the runtime gives the
/// process our fds 0, 1 and 2); what the monitor keeps goes into the relay.
struct Stdio {
    keep_out: Vec<(c_int, u8)>,
    keep_in: c_int,
    give: Vec<c_int>,
    console: Option<(c_int, String)>,
}

fn stdio(tty: bool, stdin: bool, console_name: &str) -> std::io::Result<Stdio> {
    let null = sys::open("/dev/null", libc::O_RDWR, 0)?;
    let mut s = Stdio {
        keep_out: Vec::new(),
        keep_in: -1,
        give: vec![null],
        console: None,
    };
    if tty {
        let l = sys::listen_unix(console_name, libc::SOCK_STREAM)?;
        s.console = Some((l, console_name.to_owned()));
        for i in 0..3 {
            sys::dup2(null, i);
        }
        return Ok(s);
    }
    let (out_r, out_w) = sys::pipe()?;
    let (err_r, err_w) = sys::pipe()?;
    s.keep_out = vec![(out_r, 1), (err_r, 2)];
    s.give.extend([out_w, err_w]);
    if stdin {
        let (in_r, in_w) = sys::pipe()?;
        s.keep_in = in_w;
        s.give.push(in_r);
        sys::dup2(in_r, 0);
    } else {
        sys::dup2(null, 0);
    }
    sys::dup2(out_w, 1);
    sys::dup2(err_w, 2);
    Ok(s)
}

impl Stdio {
    /// After the runtime cloned the process: our 0/1/2 back to /dev/null and the monitor log,
    /// the container's ends closed here (or its output would never reach EOF).
    fn release(&mut self, mlog: c_int) {
        let Some(&null) = self.give.first() else {
            return; // released already
        };
        sys::dup2(null, 0);
        sys::dup2(if mlog >= 0 { mlog } else { null }, 1);
        sys::dup2(if mlog >= 0 { mlog } else { null }, 2);
        for fd in self.give.drain(..) {
            sys::close(fd);
        }
    }

    /// The pty master the runtime sent over the console socket.
    fn master(&mut self) -> std::io::Result<c_int> {
        let (l, name) = self.console.take().expect("console");
        let _ = std::fs::remove_file(&name);
        let r = match sys::accept(l) {
            Some(c) => {
                let r = sys::recv_fd(c);
                sys::close(c);
                r
            }
            None => Err(std::io::Error::last_os_error()),
        };
        sys::close(l);
        r
    }

    fn abandon(&mut self) {
        for (fd, _) in self.keep_out.drain(..) {
            sys::close(fd);
        }
        sys::close(self.keep_in);
        self.keep_in = -1;
        if let Some((l, name)) = self.console.take() {
            sys::close(l);
            let _ = std::fs::remove_file(name);
        }
    }

    fn into_relay(mut self, relay: &mut Relay, master: c_int, stdin: bool) {
        if master >= 0 {
            relay.set_master(master, stdin);
        }
        for (fd, s) in self.keep_out.drain(..) {
            relay.add_output(fd, s);
        }
        if self.keep_in >= 0 {
            relay.set_stdin(self.keep_in);
        }
        self.keep_in = -1;
    }
}

fn write_exit(name: &str, v: &Value) {
    if let Err(e) = sys::atomic_write(name, &serde_json::to_vec(v).unwrap_or_default()) {
        eprintln!("sampan-monitor: write {name}: {e}");
    }
}

fn run_exit(code: i32, oom: bool, error: &str) -> Value {
    json!({"ExitCode": code, "FinishedAt": sys::now_rfc3339(), "OOMKilled": oom, "Error": error})
}

fn parse_fd(s: &str) -> c_int {
    let fd = s.parse::<c_int>().unwrap_or(-1);
    if fd >= 0 {
        sys::set_cloexec(fd);
    }
    fd
}

/// `run CDIR ID RUNTIME_ROOT FD`
pub fn run(args: &[String]) -> i32 {
    let [cdir, id, root, fd] = match args {
        [a, b, c, d] => [a, b, c, d],
        _ => {
            eprintln!("usage: sampan-monitor run CDIR ID RUNTIME_ROOT FD");
            return 2;
        }
    };
    let fd = parse_fd(fd);
    detach();
    if let Err(e) = std::env::set_current_dir(cdir) {
        let msg = format!("chdir {cdir}: {e}");
        send(fd, &json!({ "error": msg }));
        return 1;
    }
    let mlog = sys::open(
        "monitor.log",
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        0o600,
    )
    .unwrap_or(-1);
    let _ = std::fs::remove_file("exit.json");
    let opts = read_json("monitor.json");
    let tty = flag(&opts, "tty");
    let stdin = flag(&opts, "stdin");
    let logcfg = opts.as_ref().and_then(|o| o.get("log"));
    let driver = logcfg
        .and_then(|l| l.get("driver"))
        .and_then(Value::as_str)
        .unwrap_or("json-file");
    let max_size = logcfg
        .and_then(|l| l.get("max_size"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let max_file = logcfg
        .and_then(|l| l.get("max_file"))
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;
    // where the daemon wants the log (its --log-root, e.g. on tmpfs); relative: to CDIR
    let log_path = logcfg
        .and_then(|l| l.get("path"))
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map_or_else(|| format!("{id}-json.log"), str::to_owned);

    let fail = |msg: String, stdio: Option<&mut Stdio>| {
        if let Some(s) = stdio {
            s.release(mlog);
            s.abandon();
        }
        write_exit(
            "exit.json",
            &run_exit(sys::exit_code_for(&msg), false, &msg),
        );
        send(fd, &json!({ "error": msg }));
        sys::close(fd);
        0
    };

    let log = if driver == "none" {
        None
    } else {
        match JsonLog::open(&log_path, max_size, max_file) {
            Ok(l) => Some(l),
            Err(e) => return fail(format!("open log: {e}"), None),
        }
    };
    let listen = match sys::listen_unix("attach.sock", libc::SOCK_SEQPACKET) {
        Ok(l) => l,
        Err(e) => return fail(format!("listen on attach.sock: {e}"), None),
    };
    let mut io = match stdio(tty, stdin, "console.sock") {
        Ok(s) => s,
        Err(e) => return fail(format!("container stdio: {e}"), None),
    };
    let copts = CreateOptions {
        id: id.clone(),
        bundle: PathBuf::from(cdir),
        root: PathBuf::from(root),
        console_socket: io.console.as_ref().map(|(_, n)| PathBuf::from(n)),
        pid_file: None,
        preserve_fds: 0,
    };
    let created = Container::create(&copts);
    let mut c = match created {
        Ok(c) => c,
        Err(e) => return fail(e.to_string(), Some(&mut io)),
    };
    io.release(mlog);
    let master = if tty {
        match io.master() {
            Ok(m) => m,
            Err(e) => {
                let _ = c.delete(true);
                return fail(format!("receive the pty master: {e}"), Some(&mut io));
            }
        }
    } else {
        -1
    };
    let me = std::process::id();
    let mut relay = Relay::new(listen, log, flag(&opts, "stdin_once"));
    io.into_relay(&mut relay, master, stdin);
    relay.watch(c.pid());
    send(fd, &json!({"created": true, "pid": c.pid(), "monitor": me}));
    relay.serve_until(fd);
    if !started(&recv(fd)) {
        let _ = c.delete(true);
        relay.finish(0);
        return fail(
            "the daemon went away before starting the container".into(),
            None,
        );
    }
    if let Err(e) = c.start() {
        let _ = c.delete(true);
        relay.finish(0);
        return fail(e.to_string(), None);
    }
    send(
        fd,
        &json!({"pid": c.pid(), "monitor": me, "started": sys::now_rfc3339()}),
    );
    sys::close(fd);
    sys::trim_heap();

    // Without a pid namespace of its own, processes outlive the init: they go with it, as
    // runc does at delete.
    relay.run(&mut || {
        let _ = c.kill(libc::SIGKILL, true);
    });
    let (code, error) = match c.wait() {
        Ok(code) => (code, String::new()),
        Err(e) => (255, e.to_string()),
    };
    let oom = c.oom_kills().unwrap_or(0) > 0;
    drop(relay.log.take());
    write_exit("exit.json", &run_exit(code, oom, &error));
    relay.finish(CLIENT_GRACE_MS);
    let _ = std::fs::remove_file("attach.sock");
    if let Err(e) = c.delete(true) {
        eprintln!("delete: {e}");
    }
    0
}

/// `exec CDIR ID RUNTIME_ROOT EXEC_ID FD`
pub fn exec(args: &[String]) -> i32 {
    let [cdir, id, root, eid, fd] = match args {
        [a, b, c, d, e] => [a, b, c, d, e],
        _ => {
            eprintln!("usage: sampan-monitor exec CDIR ID RUNTIME_ROOT EXEC_ID FD");
            return 2;
        }
    };
    let fd = parse_fd(fd);
    detach();
    let exit_name = format!("exec-{eid}.exit.json");
    let fail = |msg: String| {
        write_exit(
            &exit_name,
            &json!({"ExitCode": sys::exit_code_for(&msg), "Error": msg}),
        );
        send(fd, &json!({ "error": msg }));
        sys::close(fd);
        0
    };
    if let Err(e) = std::env::set_current_dir(cdir) {
        let msg = format!("chdir {cdir}: {e}");
        send(fd, &json!({ "error": msg }));
        return 1;
    }
    let _ = std::fs::remove_file(&exit_name);
    let conf = read_json(&format!("exec-{eid}.json"));
    let tty = flag(&conf, "tty");
    let stdin = flag(&conf, "stdin");
    let process: Option<oci_spec::runtime::Process> = conf
        .as_ref()
        .and_then(|c| c.get("process"))
        // Through bytes: the runtime's deserializer, not a second copy (ocijson, issue 6).
        .and_then(|p| serde_json::to_vec(p).ok())
        .and_then(|b| sampan_runtime::ocijson::process(&b).ok());
    let Some(mut process) = process else {
        return fail(format!("exec-{eid}.json: missing or invalid process"));
    };
    process.set_terminal(Some(tty));
    let sock = format!("exec-{eid}.sock");
    let listen = match sys::listen_unix(&sock, libc::SOCK_SEQPACKET) {
        Ok(l) => l,
        Err(e) => return fail(format!("listen on {sock}: {e}")),
    };
    let me = std::process::id();
    // stdin_once: an exec's stdin ends with its client's.
    let mut relay = Relay::new(listen, None, true);
    if stdin {
        relay.expect_stdin(tty);
    }
    send(fd, &json!({"ready": true, "monitor": me}));
    relay.serve_until(fd);
    if !started(&recv(fd)) {
        relay.finish(0);
        let _ = std::fs::remove_file(&sock);
        return fail("the daemon went away before starting the exec".into());
    }
    let c = match Container::load(std::path::Path::new(root), id) {
        Ok(c) => c,
        Err(e) => {
            relay.finish(0);
            let _ = std::fs::remove_file(&sock);
            return fail(e.to_string());
        }
    };
    // Our own stdio is the daemon's; the exec's is set up below and ours restored after.
    let saved: Vec<c_int> = (0..3)
        .map(|i| unsafe { libc::fcntl(i, libc::F_DUPFD_CLOEXEC, 3) })
        .collect();
    let mut io = match stdio(tty, stdin, &format!("exec-{eid}.console")) {
        Ok(s) => s,
        Err(e) => return fail(format!("exec stdio: {e}")),
    };
    let eopts = ExecOptions {
        console_socket: io.console.as_ref().map(|(_, n)| PathBuf::from(n)),
        pid_file: None,
        detach: false,
        preserve_fds: 0,
    };
    let spawned = c.exec_spawn(&process, &eopts);
    let restore = |io: &mut Stdio| {
        io.release(-1);
        for (i, s) in saved.iter().enumerate() {
            if *s >= 0 {
                sys::dup2(*s, i as c_int);
                sys::close(*s);
            }
        }
    };
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            restore(&mut io);
            io.abandon();
            relay.finish(0);
            let _ = std::fs::remove_file(&sock);
            return fail(e.to_string());
        }
    };
    restore(&mut io);
    let master = if tty {
        match io.master() {
            Ok(m) => m,
            Err(e) => {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                sys::try_reap(pid);
                return fail(format!("receive the pty master: {e}"));
            }
        }
    } else {
        -1
    };
    io.into_relay(&mut relay, master, stdin);
    relay.watch(pid);
    send(fd, &json!({ "pid": pid }));
    sys::close(fd);
    sys::trim_heap();
    relay.run(&mut || {});
    let mut st: c_int = 0;
    let code = loop {
        let r = unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
        if r == pid {
            break sampan_runtime::container::decode_status(st);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break 255;
        }
    };
    write_exit(&exit_name, &json!({"ExitCode": code, "Error": ""}));
    relay.finish(CLIENT_GRACE_MS);
    let _ = std::fs::remove_file(&sock);
    0
}
