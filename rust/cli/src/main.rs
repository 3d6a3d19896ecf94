//! `sampan`: the hot verbs (`ps`, `run` without a terminal session, `start`/`stop`/`kill`/`rm`) spoken natively to the
//! daemon's unix socket, so that they do not pay the Python CLI's start-up (80–100 ms of CPU on
//! a small machine); every other verb, flag or host goes, before any request that changes
//! anything, to the Python CLI with the same arguments (docs/cli-native.md).

mod args;
mod fallback;
mod http;
mod lifecycle;
mod ps;
mod run;
mod text;

use std::ffi::OsString;

pub const DEFAULT_SOCKET: &str = "/run/sampan/sampan.sock";

/// sampan.cli.system_cmd.START_HINT
pub const START_HINT: &str = "Start one (as root) with:
    sampand &
  or, with your own places:
    sampand --data-root DIR --exec-root DIR -H unix:///path/to/sampan.sock &
and point the CLI at it with -H unix:///path/to/sampan.sock or SAMPAN_HOST.";

/// With SAMPAN_CLI_TRACE set, which path a call took (for tests), on stderr.
pub fn trace(msg: &str) {
    if std::env::var_os("SAMPAN_CLI_TRACE").is_some_and(|v| !v.is_empty()) {
        run::say(&format!("sampan-cli: {msg}"));
    }
}

/// The host as the Python CLI picks it (-H, else $SAMPAN_HOST, else the default) and the
/// socket path when it is a unix one.
fn resolve_host(flag: Option<String>) -> Option<(String, String)> {
    let env = match std::env::var_os("SAMPAN_HOST") {
        None => None,
        Some(v) => Some(v.into_string().ok()?),
    };
    let host = flag
        .filter(|h| !h.is_empty())
        .or(env.filter(|h| !h.is_empty()))
        .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"));
    let t = host.trim();
    let path = if let Some(p) = t.strip_prefix("unix://") {
        if p.is_empty() {
            DEFAULT_SOCKET.to_string()
        } else {
            p.to_string()
        }
    } else if t.starts_with('/') {
        t.to_string()
    } else {
        return None; // tcp, TLS: Python's
    };
    Some((host, path))
}

extern "C" fn interrupted(_: libc::c_int) {
    // the Python CLI's KeyboardInterrupt outside a relay: exit 130
    unsafe { libc::_exit(130) }
}

fn main() {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let strings: Option<Vec<String>> = argv.iter().map(|a| a.to_str().map(String::from)).collect();
    let Some(call) = strings.as_deref().and_then(args::parse) else {
        fallback::exec_python(&argv, "not a fast path")
    };
    let Some((host, path)) = resolve_host(call.host) else {
        fallback::exec_python(&argv, "not a unix socket")
    };
    unsafe {
        // Python keeps an inherited SIG_IGN (a background job's), so does this
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old);
        if old.sa_sigaction != libc::SIG_IGN {
            libc::signal(libc::SIGINT, interrupted as *const () as libc::sighandler_t);
        }
    }
    let mut c = http::Client::new(&path);
    match call.verb {
        args::Verb::Ps(p) => {
            trace("native ps");
            let rows = match ps::fetch(&mut c, &p) {
                Ok(v) => v,
                Err(http::Error::Proto(_)) => fallback::exec_python(&argv, "ps answer"),
                Err(e) => run::daemon_error(e, &host),
            };
            match ps::render(&rows, &p, now()) {
                Some(out) => {
                    run::write_all(1, out.as_bytes());
                }
                None => fallback::exec_python(&argv, "ps answer"),
            }
        }
        args::Verb::Run(r) => {
            trace("native run");
            let cid = match run::create(&mut c, &r, &host) {
                run::Created::Id(id) => id,
                run::Created::NoImage => fallback::exec_python(&argv, "no such image"),
            };
            if r.detach {
                run::run_detached(&mut c, &r, &cid, &host);
            }
            run::run_attached(&mut c, &r, &cid, &host);
        }
        args::Verb::Each(e) => {
            trace("native each");
            lifecycle::run(&mut c, &e, &host);
        }
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
