//! The command lines served natively, parsed as click parses them for the Python CLI; `None`
//! for anything else (another verb, flag or form), which then goes to Python untouched.

use crate::lifecycle::{plain_name, Each, Kind};

/// What the native client does.
#[allow(clippy::large_enum_variant)] // one value per process
pub enum Verb {
    Ps(Ps),
    Run(Run),
    Each(Each),
}

pub struct Call {
    /// -H/--host (the last one given), before the verb.
    pub host: Option<String>,
    pub verb: Verb,
}

#[derive(Default)]
pub struct Ps {
    pub all: bool,
    pub quiet: bool,
    pub last: i64,
    pub latest: bool,
    pub no_trunc: bool,
}

#[derive(Default)]
pub struct Run {
    pub rm: bool,
    pub detach: bool,
    pub name: Option<String>,
    pub env: Vec<String>,
    pub network: Option<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub labels: Vec<String>,
    pub entrypoint: Option<String>,
    pub image: String,
    pub cmd: Vec<String>,
}

/// An option's value: `--opt=v`, `--opt v`, `-ov`, `-o v` (click takes the next argument
/// whatever it looks like).
fn value<'a>(
    arg: &'a str,
    long: &[&str],
    short: Option<char>,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Option<Option<&'a str>> {
    for l in long {
        if arg == *l {
            return Some(rest.next().map(|s| s.as_str()));
        }
        if let Some(v) = arg.strip_prefix(l).and_then(|r| r.strip_prefix('=')) {
            return Some(Some(v));
        }
    }
    if let Some(c) = short {
        let mut it = arg.chars();
        if it.next() == Some('-') && it.next() == Some(c) {
            let attached = &arg[2..];
            if attached.is_empty() {
                return Some(rest.next().map(|s| s.as_str()));
            }
            return Some(Some(attached));
        }
    }
    None
}

/// A decimal integer as the fast path accepts it (click's int() takes more: Python then).
fn int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub fn parse(args: &[String]) -> Option<Call> {
    let mut it = args.iter();
    let mut host = None;
    let verb = loop {
        let a = it.next()?;
        if !a.starts_with('-') || a == "-" {
            break a.as_str();
        }
        match value(a, &["--host"], Some('H'), &mut it) {
            Some(v) => host = Some(v?.to_string()),
            None => return None,
        }
    };
    let verb = match verb {
        "ps" => Verb::Ps(parse_ps(&mut it)?),
        "run" => Verb::Run(parse_run(&mut it)?),
        "start" | "stop" | "kill" | "rm" => Verb::Each(parse_each(verb, &mut it)?),
        _ => return None,
    };
    Some(Call { host, verb })
}

fn parse_ps<'a>(it: &mut impl Iterator<Item = &'a String>) -> Option<Ps> {
    let mut p = Ps {
        last: -1,
        ..Ps::default()
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--all" => p.all = true,
            "--quiet" => p.quiet = true,
            "--latest" => p.latest = true,
            "--no-trunc" => p.no_trunc = true,
            s if s.starts_with("--last") => p.last = int(value(s, &["--last"], None, it)??)?,
            s if s.starts_with('-') && !s.starts_with("--") && s.len() > 1 => {
                // a cluster of short flags, -n last with its value
                for (i, c) in s.char_indices().skip(1) {
                    match c {
                        'a' => p.all = true,
                        'q' => p.quiet = true,
                        'l' => p.latest = true,
                        'n' => {
                            let attached = &s[i + 1..];
                            let v = if attached.is_empty() {
                                it.next()?.as_str()
                            } else {
                                attached
                            };
                            p.last = int(v)?;
                            break;
                        }
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    Some(p)
}

/// start (no flags: -a/-i attach, Python's), stop -t/-s, kill -s, rm -f/-v; options and
/// names in any order (click's), `--` ends the options.
fn parse_each<'a>(verb: &str, it: &mut impl Iterator<Item = &'a String>) -> Option<Each> {
    let mut kind = match verb {
        "start" => Kind::Start,
        "stop" => Kind::Stop {
            timeout: None,
            signal: None,
        },
        "kill" => Kind::Kill {
            signal: "KILL".into(),
        },
        _ => Kind::Rm {
            force: false,
            volumes: false,
        },
    };
    let mut names = Vec::new();
    let mut options = true;
    while let Some(a) = it.next() {
        if !options || !a.starts_with('-') || a == "-" {
            names.push(a.clone());
            continue;
        }
        if a == "--" {
            options = false;
            continue;
        }
        match &mut kind {
            Kind::Start => return None,
            Kind::Stop { timeout, signal } => {
                if let Some(v) = value(a, &["--time", "--timeout"], Some('t'), it) {
                    *timeout = Some(int(v?)?);
                } else {
                    *signal = Some(value(a, &["--signal"], Some('s'), it)??.to_string());
                }
            }
            Kind::Kill { signal } => {
                *signal = value(a, &["--signal"], Some('s'), it)??.to_string();
            }
            Kind::Rm { force, volumes } => match a.as_str() {
                "--force" => *force = true,
                "--volumes" => *volumes = true,
                s if !s.starts_with("--") => {
                    for c in s.chars().skip(1) {
                        match c {
                            'f' => *force = true,
                            'v' => *volumes = true,
                            _ => return None,
                        }
                    }
                }
                _ => return None,
            },
        }
    }
    if names.is_empty() || !names.iter().all(|n| plain_name(n)) {
        return None;
    }
    Some(Each { kind, names })
}

fn parse_run<'a>(it: &mut impl Iterator<Item = &'a String>) -> Option<Run> {
    let mut r = Run::default();
    loop {
        let a = it.next()?;
        if a == "--" {
            r.image = it.next()?.clone();
            break;
        }
        if !a.starts_with('-') || a == "-" {
            r.image = a.clone();
            break;
        }
        match a.as_str() {
            "--rm" => {
                r.rm = true;
                continue;
            }
            "-d" | "--detach" => {
                r.detach = true;
                continue;
            }
            _ => {}
        }
        type Slot = fn(&mut Run, String);
        let table: [(&[&str], char, Slot); 8] = [
            (&["--name"], '\0', |r, v| r.name = Some(v)),
            (&["--env"], 'e', |r, v| r.env.push(v)),
            (&["--network", "--net"], '\0', |r, v| r.network = Some(v)),
            (&["--workdir"], 'w', |r, v| r.workdir = Some(v)),
            (&["--user"], 'u', |r, v| r.user = Some(v)),
            (&["--hostname"], 'h', |r, v| r.hostname = Some(v)),
            (&["--label"], 'l', |r, v| r.labels.push(v)),
            (&["--entrypoint"], '\0', |r, v| r.entrypoint = Some(v)),
        ];
        let mut matched = false;
        for (long, short, set) in table {
            let short = if short == '\0' { None } else { Some(short) };
            if let Some(v) = value(a, long, short, it) {
                set(&mut r, v?.to_string());
                matched = true;
                break;
            }
        }
        if !matched {
            return None;
        }
    }
    r.cmd = it.cloned().collect();
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(a: &[&str]) -> Option<Call> {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ps_forms() {
        let Some(Call {
            verb: Verb::Ps(p),
            host,
        }) = call(&["-H", "unix:///x", "ps", "-aqn5"])
        else {
            panic!()
        };
        assert!(p.all && p.quiet && p.last == 5 && host.as_deref() == Some("unix:///x"));
        assert!(call(&["ps", "--format", "x"]).is_none());
        assert!(call(&["ps", "-s"]).is_none());
        assert!(call(&["ps", "--last=x"]).is_none());
        assert!(call(&["ps", "-n"]).is_none());
        assert!(call(&["-D", "ps"]).is_none());
        assert!(call(&["images"]).is_none());
        assert!(call(&["rm"]).is_none());
        assert!(call(&["rm", "-fx", "a"]).is_none());
        assert!(call(&["start", "-a", "a"]).is_none());
        assert!(call(&["stop", "a b"]).is_none());
        assert!(call(&["stop", "-t", "x", "a"]).is_none());
        let Some(Call {
            verb: Verb::Each(e),
            ..
        }) = call(&["stop", "a", "-t5", "--", "-b"])
        else {
            panic!()
        };
        assert!(matches!(
            e.kind,
            Kind::Stop {
                timeout: Some(5),
                signal: None
            }
        ));
        assert_eq!(e.names, ["a", "-b"]);
    }

    #[test]
    fn run_forms() {
        let Some(Call {
            verb: Verb::Run(r), ..
        }) = call(&[
            "run",
            "--rm",
            "-eA=1",
            "--env=B=2",
            "--net",
            "none",
            "-h",
            "x",
            "img",
            "sh",
            "-c",
            "--rm",
        ])
        else {
            panic!()
        };
        assert!(r.rm && r.env == ["A=1", "B=2"] && r.network.as_deref() == Some("none"));
        assert_eq!((r.image.as_str(), r.cmd.len()), ("img", 3));
        assert!(call(&["run", "-it", "img"]).is_none());
        assert!(call(&["run", "-v", "/a:/b", "img"]).is_none());
        assert!(call(&["run", "--rm"]).is_none());
        assert!(call(&["run", "--name"]).is_none());
    }
}
