//! Finding the cgroup hierarchies: which are mounted where (from mountinfo), where the calling
//! process sits in each (from /proc/self/cgroup), and the directory a container's cgroup path
//! maps to in each of them.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What the layout detection reads, so tests can stand a temporary directory in for "/".
#[derive(Debug, Clone)]
pub struct Host {
    /// Text of /proc/self/mountinfo.
    pub mountinfo: String,
    /// Text of /proc/self/cgroup.
    pub cgroup: String,
    /// The directory standing for "/": every mount point is looked up under it.
    pub root: PathBuf,
}

impl Host {
    /// The real machine: /proc/self/{mountinfo,cgroup} and "/".
    pub fn real() -> Result<Host> {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map_err(|e| Error::io("read cgroup layout", Some(Path::new(p)), &e))
        };
        Ok(Host {
            mountinfo: read("/proc/self/mountinfo")?,
            cgroup: read("/proc/self/cgroup")?,
            root: PathBuf::from("/"),
        })
    }

    /// A fake host for tests: `root` stands for "/".
    pub fn fake(root: impl Into<PathBuf>, mountinfo: &str, cgroup: &str) -> Host {
        Host {
            mountinfo: mountinfo.to_string(),
            cgroup: cgroup.to_string(),
            root: root.into(),
        }
    }

    /// Where mount point `point` (absolute, as mountinfo shows it) is under `root`.
    pub(crate) fn at(&self, point: &str) -> PathBuf {
        self.root.join(point.trim_start_matches('/'))
    }
}

/// One cgroupfs mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// The part of the hierarchy that is mounted ("/" normally; deeper inside a cgroup namespace
    /// or a bind mount).
    pub root: String,
    pub point: String,
    pub v2: bool,
    pub superopts: Vec<String>,
}

pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 5 || fields.len() < sep + 3 {
            continue;
        }
        let fstype = fields[sep + 1];
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        out.push(Mount {
            root: unescape(fields[3]),
            point: unescape(fields[4]),
            v2,
            superopts: fields
                .get(sep + 3)
                .map(|o| o.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of /proc/self/cgroup: "ID:controllers:path".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub id: u32,
    /// Empty for the unified (v2) hierarchy; may hold "name=systemd" for named v1 hierarchies.
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(id) = id.trim().parse() else { continue };
        out.push(Membership {
            id,
            controllers: ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            path: path.to_string(),
        });
    }
    out
}

/// One v1 hierarchy or the unified one, as found on the host.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// v1: the controllers bound to it ("cpu", "cpuacct", "name=systemd"); v2: empty.
    pub controllers: Vec<String>,
    pub mount: Mount,
    /// Where the calling process sits in it, relative to the hierarchy root ("/" if unknown).
    pub own: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Detected {
    pub v1: Vec<Found>,
    pub unified: Option<Found>,
    /// No v1 hierarchy carries a controller: the host is pure cgroup v2.
    pub pure_v2: bool,
}

pub(crate) fn detect(host: &Host) -> Result<Detected> {
    let mounts = parse_mountinfo(&host.mountinfo);
    let members = parse_proc_cgroup(&host.cgroup);
    let mut v1: Vec<Found> = Vec::new();
    for m in members.iter().filter(|m| !m.controllers.is_empty()) {
        let candidates: Vec<&Mount> = mounts
            .iter()
            .filter(|mnt| !mnt.v2 && m.controllers.iter().all(|c| mnt.superopts.contains(c)))
            .collect();
        // Prefer a mount whose mounted part holds our own cgroup (normally the one of "/").
        let Some(mount) = candidates
            .iter()
            .find(|mnt| under(&mnt.root, &m.path).is_some())
            .or(candidates.first())
        else {
            continue; // a hierarchy we are in but that nobody mounted: nothing to do there
        };
        if v1.iter().any(|f| f.mount.point == mount.point) {
            continue;
        }
        v1.push(Found {
            controllers: m.controllers.clone(),
            mount: (*mount).clone(),
            own: m.path.clone(),
        });
    }
    let own_v2 = members
        .iter()
        .find(|m| m.id == 0 && m.controllers.is_empty())
        .map(|m| m.path.clone());
    let v2_mounts: Vec<&Mount> = mounts.iter().filter(|m| m.v2).collect();
    let unified = v2_mounts
        .iter()
        .find(|m| m.point == "/sys/fs/cgroup")
        .or_else(|| {
            v2_mounts.iter().find(|m| {
                own_v2
                    .as_deref()
                    .is_some_and(|p| under(&m.root, p).is_some())
            })
        })
        .or(v2_mounts.first())
        .map(|m| Found {
            controllers: Vec::new(),
            mount: (*m).clone(),
            own: own_v2.clone().unwrap_or_else(|| "/".to_string()),
        });
    let pure_v2 = !v1
        .iter()
        .any(|f| f.controllers.iter().any(|c| !c.starts_with("name=")));
    if pure_v2 {
        // Named-only v1 hierarchies (an old name=systemd mount) are not ours to manage there.
        v1.clear();
        if unified.is_none() {
            return Err(Error::invalid(
                "detect cgroup layout",
                "no cgroup filesystem is mounted (neither cgroup v1 controllers nor cgroup2)",
            ));
        }
    }
    Ok(Detected {
        v1,
        unified,
        pure_v2,
    })
}

/// `path` relative to `root` when it lies at or below it (both absolute cgroup paths).
pub(crate) fn under<'a>(root: &str, path: &'a str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    if root.is_empty() {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/').map(|r| r.trim_start_matches('/'))
    }
}

/// Cleans a cgroup path: drops empty and "." components, refuses "..", keeps it relative or
/// absolute as given. Returns (absolute?, components joined by '/').
pub(crate) fn clean(path: &str) -> Result<(bool, String)> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::invalid(
                    "resolve cgroup path",
                    format!("cgroup path {path:?} must not contain \"..\""),
                ))
            }
            c => parts.push(c),
        }
    }
    Ok((path.starts_with('/'), parts.join("/")))
}

/// The directory of hierarchy-absolute cgroup path `cg` (starting with '/') in `found`.
pub(crate) fn dir_of(host: &Host, found: &Found, cg: &str) -> Result<PathBuf> {
    let rel = under(&found.mount.root, cg).ok_or_else(|| {
        Error::invalid(
            "resolve cgroup path",
            format!(
                "cgroup {cg} lies outside the part {} of the hierarchy mounted at {}",
                found.mount.root, found.mount.point
            ),
        )
    })?;
    let base = host.at(&found.mount.point);
    Ok(if rel.is_empty() { base } else { base.join(rel) })
}

/// The hierarchy-absolute cgroup path of a container in `found`: `abs` as is, or `rel` under
/// the calling process's own cgroup.
pub(crate) fn cgroup_path(found: &Found, absolute: bool, cleaned: &str) -> String {
    if absolute {
        format!("/{cleaned}")
    } else {
        let own = found.own.trim_end_matches('/');
        format!("{own}/{cleaned}")
    }
}
