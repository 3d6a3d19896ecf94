//! A container's cgroup, across whatever layout the host has: pure cgroup v2 (modern distros,
//! OpenWrt), pure v1, or the v1/v2 hybrid (v1 controllers plus a cgroup2 mount, often at
//! /sys/fs/cgroup/unified, holding the controllers v1 does not).
//!
//! The layout is read at run time from /proc/self/mountinfo and /proc/self/cgroup. Each
//! resource goes to the hierarchy that carries its controller: a v1 hierarchy if one has it,
//! else the cgroup2 one if the controller is available there (on a hybrid host that is how
//! hugetlb can live on the unified mount). A resource not asked for is never touched; one asked
//! for whose file does not exist is an error naming the file.
//!
//! Policy choices worth knowing:
//! - Swap without swap accounting (no memory.memsw.* / memory.swap.max): a swap value of -1 or
//!   equal to the memory limit is skipped (Docker's behaviour: nothing the kernel could
//!   enforce), any other value is an error rather than a limit silently dropped.
//! - v2: memory swappiness, disableOOMKiller, blkio leaf weights and kernel memory limits have
//!   no cgroup v2 file and are ignored; realtime cpu limits are an error.
//! - `unified` on a host that is not pure v2 is an error when non-empty.
//! - v1 devices: "a" is denied, then the list is written in order (on update, a running
//!   container briefly sees every device denied). v2: an eBPF program replaces the previous one
//!   (the new is attached before the old is detached).

mod devices;
mod fsutil;
mod layout;
mod v1;
mod v2;

#[cfg(test)]
mod tests_fake;
#[cfg(test)]
mod tests_real;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxResources};

use crate::error::{Error, Result};
use fsutil::{exists, read, read_opt, write};
pub use layout::Host;

/// Resource usage of a container's cgroup. Values a host does not offer are 0; limits are None
/// when unlimited.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub memory: MemoryStats,
    pub cpu: CpuStats,
    pub pids: PidsStats,
    pub blkio: BlkioStats,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MemoryStats {
    /// Bytes in use now (v1 usage_in_bytes, v2 memory.current).
    pub usage: u64,
    /// Peak bytes (v1 max_usage_in_bytes, v2 memory.peak where the kernel has it).
    pub max_usage: u64,
    pub limit: Option<u64>,
    /// Page cache bytes (v1 total_cache, v2 "file").
    pub cache: u64,
    /// Anonymous bytes (v1 total_rss, v2 "anon").
    pub rss: u64,
    /// Swap bytes (v1 memsw usage minus usage, v2 memory.swap.current).
    pub swap_usage: u64,
    /// Processes killed by the OOM killer in this cgroup.
    pub oom_kill: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CpuStats {
    pub usage_total_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_time_ns: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PidsStats {
    pub current: u64,
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BlkioStats {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ios: u64,
    pub write_ios: u64,
}

/// One hierarchy the container has a directory in.
#[derive(Debug, Clone)]
struct Hier {
    /// "memory", "cpu,cpuacct", "name=systemd", or "unified".
    name: String,
    /// v1: the controllers bound to the hierarchy; unified: those available at its root.
    controllers: Vec<String>,
    /// The directory where the hierarchy is mounted.
    mount: PathBuf,
    /// The container's directory in it.
    dir: PathBuf,
}

impl Hier {
    fn has(&self, ctrl: &str) -> bool {
        self.controllers.iter().any(|c| c == ctrl)
    }
}

/// Where a controller's files are for this container.
#[derive(Debug, Clone, Copy)]
enum Place<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

/// One container's cgroup across all hierarchies.
#[derive(Debug, Clone)]
pub struct Cgroup {
    v1: Vec<Hier>,
    unified: Option<Hier>,
    pure_v2: bool,
}

const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

fn cpu_asked(c: &LinuxCpu) -> bool {
    c.shares().is_some()
        || c.quota().is_some()
        || c.period().is_some()
        || c.burst().is_some()
        || c.idle().is_some()
        || c.realtime_runtime().is_some()
        || c.realtime_period().is_some()
}

fn cpuset_asked(c: &LinuxCpu) -> bool {
    c.cpus().as_deref().is_some_and(|s| !s.is_empty())
        || c.mems().as_deref().is_some_and(|s| !s.is_empty())
}

fn blkio_asked(b: &LinuxBlockIo) -> bool {
    b.weight().is_some()
        || b.leaf_weight().is_some()
        || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
        || b.throttle_read_bps_device()
            .as_ref()
            .is_some_and(|v| !v.is_empty())
        || b.throttle_write_bps_device()
            .as_ref()
            .is_some_and(|v| !v.is_empty())
        || b.throttle_read_iops_device()
            .as_ref()
            .is_some_and(|v| !v.is_empty())
        || b.throttle_write_iops_device()
            .as_ref()
            .is_some_and(|v| !v.is_empty())
}

/// The v2 controllers `res` needs ("io" for blkio).
fn v2_needs(res: &LinuxResources) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |c: &str| {
        if !out.iter().any(|x| x == c) {
            out.push(c.to_string());
        }
    };
    if res.memory().is_some() {
        add("memory");
    }
    if let Some(c) = res.cpu() {
        if cpu_asked(c) {
            add("cpu");
        }
        if cpuset_asked(c) {
            add("cpuset");
        }
    }
    if res.pids().is_some() {
        add("pids");
    }
    if res.block_io().as_ref().is_some_and(blkio_asked) {
        add("io");
    }
    if res
        .hugepage_limits()
        .as_ref()
        .is_some_and(|h| !h.is_empty())
    {
        add("hugetlb");
    }
    if res.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        add("rdma");
    }
    for key in res.unified().iter().flat_map(|u| u.keys()) {
        if let Some((ctrl, _)) = key.split_once('.') {
            if ctrl != "cgroup" {
                add(ctrl);
            }
        }
    }
    out
}

fn tokens(s: Option<String>) -> Vec<String> {
    s.unwrap_or_default()
        .split_whitespace()
        .map(|t| t.trim_start_matches('+').to_string())
        .collect()
}

fn mkdir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create cgroup directory", Some(dir), &e))
}

impl Cgroup {
    /// `path` is the spec's linux.cgroupsPath: absolute → relative to each hierarchy's root;
    /// relative or None → under the cgroup of the calling process in each hierarchy (None means
    /// the container id, as runc does). Detects the layout from the real /proc and /sys.
    pub fn open(path: Option<&str>, id: &str) -> Result<Cgroup> {
        Self::open_with(&Host::real()?, path, id)
    }

    /// Same against a fake root for tests: mountinfo/cgroup texts and a directory standing
    /// for "/".
    pub fn open_with(host: &Host, path: Option<&str>, id: &str) -> Result<Cgroup> {
        let raw = match path {
            Some(p) if !p.trim().is_empty() => p,
            _ => id,
        };
        let (absolute, cleaned) = layout::clean(raw)?;
        if cleaned.is_empty() {
            return Err(Error::invalid(
                "resolve cgroup path",
                format!("cgroup path {raw:?} names no cgroup below the root"),
            ));
        }
        let det = layout::detect(host)?;
        let mut v1 = Vec::new();
        for f in &det.v1 {
            let cg = layout::cgroup_path(f, absolute, &cleaned);
            let dir = match layout::dir_of(host, f, &cg) {
                Ok(d) => d,
                // A named hierarchy (name=systemd) we cannot reach carries no limits: skip it.
                Err(_) if f.controllers.iter().all(|c| c.starts_with("name=")) => continue,
                Err(e) => return Err(e),
            };
            v1.push(Hier {
                name: f.controllers.join(","),
                controllers: f.controllers.clone(),
                mount: host.at(&f.mount.point),
                dir,
            });
        }
        let mut unified = None;
        if let Some(f) = &det.unified {
            let cg = layout::cgroup_path(f, absolute, &cleaned);
            match layout::dir_of(host, f, &cg) {
                Ok(dir) => {
                    let mount = host.at(&f.mount.point);
                    // Unreadable counts as empty: on a hybrid host the unified side is optional.
                    let mut controllers =
                        tokens(read_opt(&mount, "cgroup.controllers").unwrap_or(None));
                    if controllers.is_empty()
                        && det.pure_v2
                        && !exists(&mount, "cgroup.controllers")
                    {
                        controllers = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma"]
                            .map(String::from)
                            .to_vec();
                    }
                    unified = Some(Hier {
                        name: "unified".to_string(),
                        controllers,
                        mount,
                        dir,
                    });
                }
                Err(e) if det.pure_v2 => return Err(e),
                Err(_) => {} // hybrid: the unified side is optional
            }
        }
        Ok(Cgroup {
            v1,
            unified,
            pure_v2: det.pure_v2,
        })
    }

    /// (controller or "unified", directory) of every hierarchy, for state and debugging.
    pub fn paths(&self) -> Vec<(String, PathBuf)> {
        self.v1
            .iter()
            .chain(self.unified.iter())
            .map(|h| (h.name.clone(), h.dir.clone()))
            .collect()
    }

    /// Whether the host is pure cgroup v2.
    pub fn is_v2(&self) -> bool {
        self.pure_v2
    }

    fn place(&self, ctrl: &str) -> Option<Place<'_>> {
        if let Some(h) = self.v1.iter().find(|h| h.has(ctrl)) {
            return Some(Place::V1(&h.dir));
        }
        let v2_name = if ctrl == "blkio" { "io" } else { ctrl };
        self.unified
            .as_ref()
            .filter(|u| u.has(v2_name))
            .map(|u| Place::V2(&u.dir))
    }

    fn need(&self, ctrl: &str) -> Result<Place<'_>> {
        self.place(ctrl).ok_or_else(|| {
            Error::invalid(
                format!("apply {ctrl} resources"),
                format!("the {ctrl} cgroup controller is not available on this host"),
            )
        })
    }

    fn v1_dir(&self, ctrl: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|h| h.has(ctrl))
            .map(|h| h.dir.as_path())
    }

    /// Creates the directory in every hierarchy (v1 cpuset: fills empty cpuset.cpus/mems from
    /// the parent; v2: enables the controllers in the ancestors' cgroup.subtree_control), then
    /// applies `res`.
    pub fn create(&self, res: Option<&LinuxResources>) -> Result<()> {
        for h in &self.v1 {
            mkdir_all(&h.dir)?;
            if h.has("cpuset") {
                v1::cpuset_fill(&h.mount, &h.dir)?;
            }
        }
        if let Some(u) = &self.unified {
            // Controllers this container needs from the cgroup2 side.
            let needed: Vec<String> = res
                .map(v2_needs)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| matches!(self.place(c), Some(Place::V2(_))))
                .collect();
            if let Err(e) = self.create_unified(u, &needed) {
                if self.pure_v2 || !needed.is_empty() {
                    return Err(e);
                }
                // Hybrid and nothing needed there: the unified side is best effort (it may be
                // read-only or not delegated to us).
            }
        }
        if let Some(r) = res {
            self.apply(r)?;
        }
        Ok(())
    }

    fn create_unified(&self, u: &Hier, needed: &[String]) -> Result<()> {
        let parent = u.dir.parent().unwrap_or(&u.mount).to_path_buf();
        mkdir_all(&parent)?;
        // Every ancestor from the mount down to the parent enables what it has available (best
        // effort, one by one when the batch fails); only a needed controller that could not be
        // enabled is an error.
        let mut ancestors = vec![u.mount.clone()];
        if let Ok(rel) = parent.strip_prefix(&u.mount) {
            let mut cur = u.mount.clone();
            for c in rel.components() {
                cur = cur.join(c);
                ancestors.push(cur.clone());
            }
        }
        let mut failures: Vec<(String, Error)> = Vec::new();
        for a in &ancestors {
            let avail = tokens(read_opt(a, "cgroup.controllers")?);
            let on = tokens(read_opt(a, "cgroup.subtree_control")?);
            let want: Vec<&String> = avail.iter().filter(|c| !on.contains(c)).collect();
            if want.is_empty() {
                continue;
            }
            let line: Vec<String> = want.iter().map(|c| format!("+{c}")).collect();
            if write(a, "cgroup.subtree_control", &line.join(" ")).is_err() {
                for c in want {
                    if let Err(e) = write(a, "cgroup.subtree_control", &format!("+{c}")) {
                        failures.push((c.clone(), e));
                    }
                }
            }
        }
        let enabled = tokens(read_opt(&parent, "cgroup.subtree_control")?);
        for c in needed {
            if !enabled.contains(c) {
                let mut err = failures
                    .iter()
                    .rev()
                    .find(|(f, _)| f == c)
                    .map(|(_, e)| e.clone())
                    .unwrap_or_else(|| {
                        Error::invalid(
                            format!("enable cgroup controller {c}"),
                            "the controller is not available in the parent cgroup",
                        )
                        .with_path(&parent.join("cgroup.subtree_control"))
                    });
                err.step = format!("enable cgroup controller {c} ({})", err.step);
                if err.errno == Some(libc::EBUSY) {
                    err.detail = Some(
                        "a cgroup with processes of its own cannot delegate controllers (the \
                         no-internal-processes rule): use an absolute cgroupsPath"
                            .to_string(),
                    );
                }
                return Err(err);
            }
        }
        match std::fs::create_dir(&u.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("create cgroup directory", Some(&u.dir), &e)),
        }
    }

    /// Applies `res` to an existing cgroup.
    pub fn update(&self, res: &LinuxResources) -> Result<()> {
        self.apply(res)
    }

    fn apply(&self, res: &LinuxResources) -> Result<()> {
        if let Some(m) = res.memory() {
            match self.need("memory")? {
                Place::V1(d) => v1::memory(d, m)?,
                Place::V2(d) => v2::memory(d, m)?,
            }
        }
        if let Some(c) = res.cpu() {
            if cpu_asked(c) {
                match self.need("cpu")? {
                    Place::V1(d) => v1::cpu(d, c)?,
                    Place::V2(d) => v2::cpu(d, c)?,
                }
            }
            if cpuset_asked(c) {
                match self.need("cpuset")? {
                    Place::V1(d) | Place::V2(d) => v1::cpuset(d, c)?,
                }
            }
        }
        if let Some(p) = res.pids() {
            match self.need("pids")? {
                Place::V1(d) | Place::V2(d) => v1::pids(d, p.limit())?,
            }
        }
        if let Some(b) = res.block_io().as_ref().filter(|b| blkio_asked(b)) {
            match self.need("blkio")? {
                Place::V1(d) => v1::blkio(d, b)?,
                Place::V2(d) => v2::io(d, b)?,
            }
        }
        if let Some(h) = res.hugepage_limits().as_ref().filter(|h| !h.is_empty()) {
            match self.need("hugetlb")? {
                Place::V1(d) => v1::hugetlb(d, h)?,
                Place::V2(d) => v2::hugetlb(d, h)?,
            }
        }
        if let Some(n) = res.network() {
            if let Some(id) = n.class_id() {
                let Place::V1(d) = self.need("net_cls")? else {
                    unreachable!("net_cls is v1 only")
                };
                write(d, "net_cls.classid", &id.to_string())?;
            }
            for p in n.priorities().iter().flatten() {
                let Place::V1(d) = self.need("net_prio")? else {
                    unreachable!("net_prio is v1 only")
                };
                write(
                    d,
                    "net_prio.ifpriomap",
                    &format!("{} {}", p.name(), p.priority()),
                )?;
            }
        }
        if let Some(r) = res.rdma() {
            let mut devs: Vec<_> = r.iter().collect();
            devs.sort_by(|a, b| a.0.cmp(b.0));
            for (dev, lim) in devs {
                let mut line = dev.clone();
                if let Some(h) = lim.hca_handles() {
                    line.push_str(&format!(" hca_handle={h}"));
                }
                if let Some(o) = lim.hca_objects() {
                    line.push_str(&format!(" hca_object={o}"));
                }
                if line.len() > dev.len() {
                    match self.need("rdma")? {
                        Place::V1(d) | Place::V2(d) => write(d, "rdma.max", &line)?,
                    }
                }
            }
        }
        if let Some(list) = res.devices() {
            if let Some(d) = self.v1_dir("devices") {
                v1::devices(d, list)?;
            } else if let Some(u) = &self.unified {
                devices::attach(&u.dir, &devices::rules_from_spec(list)?)?;
            } else {
                return Err(Error::invalid(
                    "apply device rules",
                    "no devices cgroup controller and no cgroup2 mount on this host",
                ));
            }
        }
        if let Some(map) = res.unified().as_ref().filter(|m| !m.is_empty()) {
            let u = match &self.unified {
                Some(u) if self.pure_v2 => u,
                _ => {
                    return Err(Error::invalid(
                        "apply unified resources",
                        "linux.resources.unified can only be used on a pure cgroup v2 host",
                    ))
                }
            };
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                if k.is_empty() || k.contains('/') || k.starts_with('.') {
                    return Err(Error::invalid(
                        "apply unified resources",
                        format!("{k:?} is not a cgroup file name"),
                    ));
                }
                write(&u.dir, k, &map[k])?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` into the container's cgroup in every hierarchy (on a hybrid host the
    /// unified one too, when it exists and is writable).
    pub fn add_task(&self, pid: i32) -> Result<()> {
        let value = pid.to_string();
        let join = |dir: &Path| -> Result<()> {
            let mut tries = 0;
            loop {
                match write(dir, "cgroup.procs", &value) {
                    // A task still being forked (TASK_NEW) is refused with EINVAL for a moment.
                    Err(e) if e.errno == Some(libc::EINVAL) && tries < 5 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    r => return r,
                }
            }
        };
        for h in &self.v1 {
            join(&h.dir)?;
        }
        if let Some(u) = &self.unified {
            if self.pure_v2 {
                join(&u.dir)?;
            } else if u.dir.is_dir() {
                match join(&u.dir) {
                    Err(e)
                        if matches!(
                            e.errno,
                            Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::ENOENT)
                        ) => {}
                    r => r?,
                }
            }
        }
        Ok(())
    }

    /// An O_PATH|O_DIRECTORY descriptor of the container's cgroup for clone3's
    /// CLONE_INTO_CGROUP, on a pure v2 host only (and only once the directory exists).
    pub fn v2_dir_fd(&self) -> Option<OwnedFd> {
        let u = self.unified.as_ref().filter(|_| self.pure_v2)?;
        devices::open_dir(&u.dir, libc::O_PATH).ok()
    }

    fn freezer(&self) -> Option<Place<'_>> {
        if let Some(d) = self.v1_dir("freezer") {
            return Some(Place::V1(d));
        }
        self.unified
            .as_ref()
            .filter(|u| self.pure_v2 || u.dir.is_dir())
            .map(|u| Place::V2(&u.dir))
    }

    fn no_freezer() -> Error {
        Error::invalid(
            "freeze cgroup",
            "no freezer: neither a v1 freezer hierarchy nor cgroup v2",
        )
    }

    /// Freezes every process and waits until the kernel reports the cgroup frozen. If that does
    /// not happen within a few seconds the cgroup is thawed again and an error returned.
    pub fn freeze(&self) -> Result<()> {
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        let mut nap = Duration::from_millis(1);
        match self.freezer().ok_or_else(Self::no_freezer)? {
            Place::V1(d) => loop {
                // FREEZING can stall on a task that forks meanwhile: writing again retries.
                write(d, "freezer.state", "FROZEN")?;
                if read(d, "freezer.state")?.trim() == "FROZEN" {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = write(d, "freezer.state", "THAWED");
                    return Err(Error::sys(
                        "freeze cgroup (freezer.state stays FREEZING)",
                        Some(d),
                        libc::EBUSY,
                    ));
                }
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(100));
            },
            Place::V2(d) => {
                write(d, "cgroup.freeze", "1")?;
                loop {
                    if Self::v2_frozen(d)? {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        let _ = write(d, "cgroup.freeze", "0");
                        return Err(Error::sys(
                            "freeze cgroup (cgroup.events never showed frozen 1)",
                            Some(d),
                            libc::EBUSY,
                        ));
                    }
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(Duration::from_millis(100));
                }
            }
        }
    }

    fn v2_frozen(d: &Path) -> Result<bool> {
        Ok(read_opt(d, "cgroup.events")?.and_then(|s| fsutil::keyed(&s, "frozen")) == Some(1))
    }

    /// Thaws the cgroup.
    pub fn thaw(&self) -> Result<()> {
        match self.freezer().ok_or_else(Self::no_freezer)? {
            Place::V1(d) => write(d, "freezer.state", "THAWED"),
            Place::V2(d) => write(d, "cgroup.freeze", "0"),
        }
    }

    /// Whether the cgroup is frozen (v1 freezer.state FROZEN, v2 cgroup.events frozen 1).
    pub fn frozen(&self) -> Result<bool> {
        match self.freezer() {
            None => Ok(false),
            Some(Place::V1(d)) => {
                Ok(read_opt(d, "freezer.state")?.is_some_and(|s| s.trim() == "FROZEN"))
            }
            Some(Place::V2(d)) => Self::v2_frozen(d),
        }
    }

    /// Memory, cpu, pids and block I/O figures; a controller the host lacks gives zeros.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        match self.place("memory") {
            Some(Place::V1(d)) => s.memory = v1::memory_stats(d)?,
            Some(Place::V2(d)) => s.memory = v2::memory_stats(d)?,
            None => {}
        }
        let (cpuacct, cpu) = (self.v1_dir("cpuacct"), self.v1_dir("cpu"));
        if cpuacct.is_some() || cpu.is_some() {
            s.cpu = v1::cpu_stats(cpuacct, cpu)?;
        } else if let Some(u) = self.unified.as_ref().filter(|_| self.pure_v2) {
            s.cpu = v2::cpu_stats(&u.dir)?;
        }
        if let Some(Place::V1(d) | Place::V2(d)) = self.place("pids") {
            s.pids.current = fsutil::read_u64(d, "pids.current")?;
            s.pids.limit = read_opt(d, "pids.max")?.and_then(|v| fsutil::parse_limit(&v));
        }
        match self.place("blkio") {
            Some(Place::V1(d)) => s.blkio = v1::blkio_stats(d)?,
            Some(Place::V2(d)) => s.blkio = v2::io_stats(d)?,
            None => {}
        }
        Ok(s)
    }

    /// How many processes the OOM killer killed in this cgroup (0 without a memory controller).
    pub fn oom_kills(&self) -> Result<u64> {
        match self.place("memory") {
            Some(Place::V1(d)) => v1::oom_kills(d),
            Some(Place::V2(d)) => v2::oom_kills(d),
            None => Ok(0),
        }
    }

    /// The directory whose cgroup.procs lists the container's processes.
    fn procs_dir(&self) -> Option<&Path> {
        if self.pure_v2 {
            return self.unified.as_ref().map(|u| u.dir.as_path());
        }
        [
            "pids", "freezer", "memory", "cpu", "cpuacct", "devices", "blkio", "cpuset",
        ]
        .iter()
        .find_map(|c| self.v1_dir(c))
        .or_else(|| self.v1.first().map(|h| h.dir.as_path()))
    }

    /// Every process in the container's cgroup and its descendants (empty once destroyed).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        if let Some(d) = self.procs_dir() {
            collect_pids(d, &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Sends `sig` to every process. SIGKILL uses cgroup.kill on pure v2; elsewhere it freezes
    /// the cgroup first (best effort) so nothing forks past the kill, then thaws it so the kill
    /// lands.
    pub fn kill_all(&self, sig: i32) -> Result<()> {
        if sig == libc::SIGKILL {
            if let Some(u) = self.unified.as_ref().filter(|_| self.pure_v2) {
                if exists(&u.dir, "cgroup.kill") {
                    return write(&u.dir, "cgroup.kill", "1");
                }
            }
        }
        let freeze = sig == libc::SIGKILL && self.freezer().is_some();
        if freeze {
            let _ = self.freeze();
        }
        let result = self.signal_all(sig);
        if freeze {
            let _ = self.thaw();
        }
        result
    }

    fn signal_all(&self, sig: i32) -> Result<()> {
        for pid in self.pids()? {
            // SAFETY: kill has no memory-safety preconditions.
            if unsafe { libc::kill(pid, sig) } != 0 && crate::error::errno() != libc::ESRCH {
                return Err(Error::last(
                    format!("send signal {sig} to process {pid}"),
                    None,
                ));
            }
        }
        Ok(())
    }

    /// Removes the container's directory in every hierarchy, children first, retrying briefly
    /// while the kernel still reports it busy. A directory already gone is fine. Kills nothing.
    pub fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for h in self.v1.iter().chain(self.unified.iter()) {
            if let Err(e) = remove_tree(&h.dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let Some(text) = read_opt(dir, "cgroup.procs")? else {
        return Ok(());
    };
    out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    for sub in subdirs(dir)? {
        collect_pids(&sub, out)?;
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list cgroup directory", Some(dir), &e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("list cgroup directory", Some(dir), &e))?;
        if ent.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(ent.path());
        }
    }
    Ok(out)
}

fn remove_tree(dir: &Path) -> Result<()> {
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    let mut nap = Duration::from_millis(2);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(Error::io("remove cgroup directory", Some(dir), &e)),
        }
    }
}
