//! `start`, `stop`, `kill`, `rm` over several names with their simple flags, as
//! sampan.cli.containers_cmd and system_cmd.each_name do them: one request per name, on one
//! kept-alive connection; each success prints the name, each error answer prints docker's
//! message and makes the exit code 1; a daemon that does not answer stops the loop (125).

use crate::http::{query, Client, Error};
use crate::run::{daemon_error, say, write_all};

pub enum Kind {
    Start,
    Stop {
        timeout: Option<i64>,
        signal: Option<String>,
    },
    Kill {
        signal: String,
    },
    Rm {
        force: bool,
        volumes: bool,
    },
}

pub struct Each {
    pub kind: Kind,
    pub names: Vec<String>,
}

/// The request for one name. The Python CLI puts the name in the path as it is; http.client
/// refuses controls, spaces and non-ASCII there (a traceback), so the parser leaves such names
/// to Python.
fn request(kind: &Kind, name: &str) -> (&'static str, String) {
    match kind {
        Kind::Start => ("POST", format!("/containers/{name}/start")),
        Kind::Stop { timeout, signal } => {
            let mut params = Vec::new();
            if let Some(t) = timeout {
                params.push(("t", t.to_string()));
            }
            if let Some(s) = signal {
                params.push(("signal", s.clone()));
            }
            ("POST", format!("/containers/{name}/stop{}", query(&params)))
        }
        Kind::Kill { signal } => (
            "POST",
            format!(
                "/containers/{name}/kill{}",
                query(&[("signal", signal.clone())])
            ),
        ),
        Kind::Rm { force, volumes } => {
            let b = |v: bool| (if v { "1" } else { "0" }).to_string();
            let q = query(&[("force", b(*force)), ("v", b(*volumes))]);
            ("DELETE", format!("/containers/{name}{q}"))
        }
    }
}

pub fn run(c: &mut Client, e: &Each, host: &str) -> ! {
    let mut failed = false;
    for n in &e.names {
        let (method, target) = request(&e.kind, n);
        match c.request(method, &target, None) {
            Ok(_) => write_all(1, format!("{n}\n").as_bytes()),
            Err(Error::Api(_, m)) => {
                say(&format!("Error response from daemon: {m}"));
                failed = true;
            }
            Err(err) => daemon_error(err, host),
        }
    }
    std::process::exit(if failed { 1 } else { 0 })
}

/// A name the Python CLI would send as it is.
pub fn plain_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b > 0x20 && b < 0x7f)
}
