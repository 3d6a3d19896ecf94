//! OCI hooks: run a hook binary with the container state on stdin, within its timeout.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

pub fn run_all(kind: &str, hooks: Option<&Vec<Hook>>, state_json: &[u8]) -> Result<()> {
    for (i, h) in hooks.into_iter().flatten().enumerate() {
        run_one(kind, i, h, state_json)?;
    }
    Ok(())
}

fn run_one(kind: &str, index: usize, h: &Hook, state_json: &[u8]) -> Result<()> {
    let path = h.path();
    let step = format!("{kind} hook #{index}");
    let mut cmd = Command::new(path);
    if let Some(args) = h.args() {
        if let Some((first, rest)) = args.split_first() {
            cmd.arg0(first);
            cmd.args(rest);
        }
    }
    cmd.env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::io(&step, Some(path), &e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state_json);
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    return Ok(());
                }
                return Err(Error::invalid(
                    step,
                    format!("{} failed: {status}", path.display()),
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(Error::io(&step, Some(path), &e)),
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::invalid(
                    step,
                    format!("{} timed out", path.display()),
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
