//! Applying resources to cgroup v1 controller directories, and reading their statistics.

use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory,
};

use super::fsutil::{exists, keyed, parse_limit, read, read_opt, read_u64, write};
use super::{devices, BlkioStats, CpuStats, MemoryStats};
use crate::error::{Error, Result};

const MEM_LIMIT: &str = "memory.limit_in_bytes";
const MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";

/// Whether memory+swap must be written before the memory limit. The kernel keeps
/// limit <= memsw at every step: raising memsw first works when it stays above the current
/// limit; otherwise lower the limit first.
pub(crate) fn memsw_first(current_limit: u64, new_memsw: i64) -> bool {
    new_memsw < 0 || new_memsw as u64 >= current_limit
}

/// memory: limit_in_bytes, memsw (the spec's swap is memory+swap, as v1 wants), soft limit,
/// swappiness, oom_control. Kernel limits are ignored: kernels since 5.16 refuse them.
///
/// Without swap accounting (no memory.memsw.* files) a swap value of -1 or equal to the
/// memory limit asks for nothing the kernel could enforce and is skipped, as Docker does;
/// any other swap value is an error rather than a limit silently not applied.
pub(crate) fn memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    let limit = m.limit().filter(|&l| l != 0);
    let mut swap = m.swap().filter(|&s| s != 0);
    let has_memsw = exists(dir, MEMSW_LIMIT);
    if limit == Some(-1) && swap.is_none() && has_memsw {
        // Unlimited memory must lift memsw too, or the kernel refuses the limit.
        swap = Some(-1);
    }
    if let (Some(l), Some(s)) = (limit, swap) {
        if l > 0 && s > 0 && s < l {
            return Err(Error::invalid(
                "apply memory limits",
                format!("memory+swap limit {s} is below the memory limit {l}"),
            ));
        }
    }
    if let Some(s) = swap {
        if !has_memsw {
            if s == -1 || Some(s) == limit {
                swap = None;
            } else {
                return Err(Error::invalid(
                    "apply memory+swap limit",
                    format!(
                        "swap limit {s} asked for but {MEMSW_LIMIT} does not exist: the kernel \
                         does not account swap (boot with swapaccount=1)"
                    ),
                )
                .with_path(&dir.join(MEMSW_LIMIT)));
            }
        }
    }
    let set_limit = |l: i64| {
        write(dir, MEM_LIMIT, &l.to_string()).map_err(|mut e| {
            if e.errno == Some(libc::EBUSY) {
                let usage = read_u64(dir, "memory.usage_in_bytes").unwrap_or(0);
                e.detail = Some(format!(
                    "the cgroup uses {usage} bytes and the kernel could not reclaim below {l}"
                ));
            }
            e
        })
    };
    let set_swap = |s: i64| write(dir, MEMSW_LIMIT, &s.to_string());
    match (limit, swap) {
        (Some(l), Some(s)) => {
            let current = read(dir, MEM_LIMIT)?.trim().parse().unwrap_or(u64::MAX);
            if memsw_first(current, s) {
                set_swap(s)?;
                set_limit(l)?;
            } else {
                set_limit(l)?;
                set_swap(s)?;
            }
        }
        (Some(l), None) => set_limit(l)?,
        (None, Some(s)) => set_swap(s)?,
        (None, None) => {}
    }
    if let Some(r) = m.reservation().filter(|&r| r != 0) {
        write(dir, "memory.soft_limit_in_bytes", &r.to_string())?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(Error::invalid(
                "apply memory swappiness",
                format!("swappiness {s} is not in 0..=100"),
            ));
        }
        write(dir, "memory.swappiness", &s.to_string())?;
    }
    if let Some(d) = m.disable_oom_killer() {
        write(dir, "memory.oom_control", if d { "1" } else { "0" })?;
    }
    Ok(())
}

/// cpu: shares, CFS quota/period/burst, realtime runtime/period, idle.
pub(crate) fn cpu(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(shares) = c.shares().filter(|&s| s != 0) {
        write(dir, "cpu.shares", &shares.to_string())?;
        // The kernel clamps out-of-range shares silently; say so instead.
        let got: u64 = read(dir, "cpu.shares")?.trim().parse().unwrap_or(shares);
        if got != shares {
            return Err(Error::invalid(
                "apply cpu shares",
                format!(
                    "the kernel set cpu.shares to {got} instead of {shares} (range 2..=262144)"
                ),
            )
            .with_path(&dir.join("cpu.shares")));
        }
    }
    let quota = c.quota().filter(|&q| q != 0);
    let mut period_pending = None;
    if let Some(p) = c.period().filter(|&p| p != 0) {
        if let Err(e) = write(dir, "cpu.cfs_period_us", &p.to_string()) {
            // A shorter period can exceed the parent's bandwidth with the old quota; when a new
            // quota comes too, set the period again after it.
            if e.errno != Some(libc::EINVAL) || quota.is_none() {
                return Err(e);
            }
            period_pending = Some(p);
        }
    }
    if let Some(q) = quota {
        write(dir, "cpu.cfs_quota_us", &q.to_string())?;
        if let Some(p) = period_pending {
            write(dir, "cpu.cfs_period_us", &p.to_string())?;
        }
    }
    if let Some(b) = c.burst() {
        write(dir, "cpu.cfs_burst_us", &b.to_string())?;
    }
    realtime(dir, c)?;
    if let Some(i) = c.idle() {
        write(dir, "cpu.idle", &i.to_string())?;
    }
    Ok(())
}

fn realtime(dir: &Path, c: &LinuxCpu) -> Result<()> {
    let period = c.realtime_period().filter(|&p| p != 0);
    let runtime = c.realtime_runtime();
    match (period, runtime) {
        (Some(p), Some(r)) => {
            // runtime must fit in period at every step: try period first, else runtime first.
            if write(dir, "cpu.rt_period_us", &p.to_string()).is_err() {
                write(dir, "cpu.rt_runtime_us", &r.to_string())?;
                write(dir, "cpu.rt_period_us", &p.to_string())?;
            } else {
                write(dir, "cpu.rt_runtime_us", &r.to_string())?;
            }
        }
        (Some(p), None) => write(dir, "cpu.rt_period_us", &p.to_string())?,
        (None, Some(r)) => write(dir, "cpu.rt_runtime_us", &r.to_string())?,
        (None, None) => {}
    }
    Ok(())
}

/// cpuset.cpus / cpuset.mems (same names on v2).
pub(crate) fn cpuset(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        write(dir, "cpuset.cpus", cpus)?;
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        write(dir, "cpuset.mems", mems)?;
    }
    Ok(())
}

/// Copies cpuset.cpus and cpuset.mems down from the parent into every directory from the
/// hierarchy root to `dir` that has them empty: a v1 cpuset cgroup with empty sets accepts no
/// task.
pub(crate) fn cpuset_fill(mount: &Path, dir: &Path) -> Result<()> {
    let Ok(rel) = dir.strip_prefix(mount) else {
        return Ok(());
    };
    let mut parent = mount.to_path_buf();
    for comp in rel.components() {
        let cur = parent.join(comp);
        for file in ["cpuset.mems", "cpuset.cpus"] {
            let Some(mine) = read_opt(&cur, file)? else {
                continue;
            };
            if mine.trim().is_empty() {
                let theirs = read(&parent, file)?;
                if !theirs.trim().is_empty() {
                    write(&cur, file, theirs.trim())?;
                }
            }
        }
        parent = cur;
    }
    Ok(())
}

/// blkio: weight (blkio.weight, or blkio.bfq.weight when only BFQ's exists), leaf weight,
/// per-device weights, throttles.
pub(crate) fn blkio(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    let bfq = !exists(dir, "blkio.weight") && exists(dir, "blkio.bfq.weight");
    let (weight, weight_dev) = if bfq {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    } else {
        ("blkio.weight", "blkio.weight_device")
    };
    if let Some(w) = b.weight().filter(|&w| w != 0) {
        write(dir, weight, &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight().filter(|&w| w != 0) {
        write(dir, "blkio.leaf_weight", &w.to_string())?;
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            write(dir, weight_dev, &format!("{}:{} {w}", d.major(), d.minor()))?;
        }
        if let Some(w) = d.leaf_weight() {
            let line = format!("{}:{} {w}", d.major(), d.minor());
            write(dir, "blkio.leaf_weight_device", &line)?;
        }
    }
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ];
    for (file, list) in throttles {
        for t in list.iter().flatten() {
            write(
                dir,
                file,
                &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
            )?;
        }
    }
    Ok(())
}

pub(crate) fn pids(dir: &Path, limit: i64) -> Result<()> {
    let v = if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    };
    write(dir, "pids.max", &v)
}

/// hugetlb.<size>.limit_in_bytes, and the reservation limit too where the kernel has it.
pub(crate) fn hugetlb(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<()> {
    for h in limits {
        let v = if h.limit() < 0 {
            "-1".to_string()
        } else {
            h.limit().to_string()
        };
        write(
            dir,
            &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
            &v,
        )?;
        let rsvd = format!("hugetlb.{}.rsvd.limit_in_bytes", h.page_size());
        if exists(dir, &rsvd) {
            write(dir, &rsvd, &v)?;
        }
    }
    Ok(())
}

/// devices.deny "a", then the list in order. On a running container this briefly denies all
/// devices; v1 offers no atomic replace.
pub(crate) fn devices(dir: &Path, list: &[LinuxDeviceCgroup]) -> Result<()> {
    for (file, line) in devices::v1_writes(list)? {
        write(dir, file, &line)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statistics

pub(crate) fn memory_stats(dir: &Path) -> Result<MemoryStats> {
    let stat = read_opt(dir, "memory.stat")?.unwrap_or_default();
    let pick = |total: &str, local: &str| keyed(&stat, total).or_else(|| keyed(&stat, local));
    let usage = read_u64(dir, "memory.usage_in_bytes")?;
    let memsw = read_opt(dir, "memory.memsw.usage_in_bytes")?.and_then(|s| s.trim().parse().ok());
    Ok(MemoryStats {
        usage,
        max_usage: read_u64(dir, "memory.max_usage_in_bytes")?,
        limit: read_opt(dir, MEM_LIMIT)?.and_then(|s| parse_limit(&s)),
        cache: pick("total_cache", "cache").unwrap_or(0),
        rss: pick("total_rss", "rss").unwrap_or(0),
        swap_usage: memsw.map(|m: u64| m.saturating_sub(usage)).unwrap_or(0),
        oom_kill: oom_kills(dir)?,
    })
}

pub(crate) fn oom_kills(dir: &Path) -> Result<u64> {
    Ok(read_opt(dir, "memory.oom_control")?
        .and_then(|s| keyed(&s, "oom_kill"))
        .unwrap_or(0))
}

/// cpuacct: usage; cpu: throttling. Either directory may be absent.
pub(crate) fn cpu_stats(cpuacct: Option<&Path>, cpu: Option<&Path>) -> Result<CpuStats> {
    let mut s = CpuStats::default();
    if let Some(d) = cpuacct {
        s.usage_total_ns = read_u64(d, "cpuacct.usage")?;
        let user = read_opt(d, "cpuacct.usage_user")?;
        let sys = read_opt(d, "cpuacct.usage_sys")?;
        if let (Some(u), Some(y)) = (user, sys) {
            s.user_ns = u.trim().parse().unwrap_or(0);
            s.system_ns = y.trim().parse().unwrap_or(0);
        } else if let Some(st) = read_opt(d, "cpuacct.stat")? {
            // USER_HZ ticks.
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            let ns = |t: u64| t.saturating_mul(1_000_000_000 / hz);
            s.user_ns = ns(keyed(&st, "user").unwrap_or(0));
            s.system_ns = ns(keyed(&st, "system").unwrap_or(0));
        }
    }
    if let Some(d) = cpu {
        let st = read_opt(d, "cpu.stat")?.unwrap_or_default();
        s.nr_periods = keyed(&st, "nr_periods").unwrap_or(0);
        s.nr_throttled = keyed(&st, "nr_throttled").unwrap_or(0);
        s.throttled_time_ns = keyed(&st, "throttled_time").unwrap_or(0);
    }
    Ok(s)
}

/// Sums blkio.throttle.io_service{_bytes,d}_recursive ("MAJ:MIN Read N" lines).
pub(crate) fn blkio_stats(dir: &Path) -> Result<BlkioStats> {
    let mut s = BlkioStats::default();
    let pick = |base: &str| -> Result<String> {
        Ok(read_opt(dir, &format!("{base}_recursive"))?
            .or(read_opt(dir, base)?)
            .unwrap_or_default())
    };
    let sum = |text: &str, op: &str| -> u64 {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3 && f[1] == op).then(|| f[2].parse::<u64>().ok())?
            })
            .sum()
    };
    let bytes = pick("blkio.throttle.io_service_bytes")?;
    let ios = pick("blkio.throttle.io_serviced")?;
    s.read_bytes = sum(&bytes, "Read");
    s.write_bytes = sum(&bytes, "Write");
    s.read_ios = sum(&ios, "Read");
    s.write_ios = sum(&ios, "Write");
    Ok(s)
}
