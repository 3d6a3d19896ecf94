//! Applying resources to a cgroup v2 directory, with the conversions from the spec's v1-shaped
//! values, and reading its statistics.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory};

use super::fsutil::{exists, keyed, parse_limit, read_opt, read_u64, write};
use super::{BlkioStats, CpuStats, MemoryStats};
use crate::error::{Error, Result};

/// cpu.shares (2..=262144, default 1024) to cpu.weight (1..=10000, default 100), as current
/// runc and crun convert: on a log2 scale, a quadratic through the minimum, the default and the
/// maximum, rounded up. 0 stays 0 ("unset").
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        s => {
            let l = (s as f64).log2();
            // 10^((l^2 + 125 l - 126) / 612): 2 -> 1, 1024 -> 100, 262144 -> 10000.
            let exp = (l * l + 125.0 * l - 126.0) / 612.0;
            10f64.powf(exp).ceil() as u64
        }
    }
}

/// blkio.weight (10..=1000) to io.weight (1..=10000), linearly. 0 stays 0 ("unset").
pub(crate) fn blkio_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        0
    } else {
        1 + (w as u64).saturating_sub(10) * 9999 / 990
    }
}

/// The spec's swap (memory+swap, v1-style) to memory.swap.max (swap alone).
/// Returns None for "leave alone", Some(-1) for "max".
pub(crate) fn swap_to_v2(swap: i64, limit: i64) -> Result<Option<i64>> {
    let step = "convert memory+swap limit for cgroup v2";
    match (swap, limit) {
        // Unlimited memory with swap unset: unlimited swap too, as v1 would have it.
        (0, -1) => Ok(Some(-1)),
        (0, _) => Ok(None),
        (-1, _) => Ok(Some(-1)),
        (_, 0) | (_, -1) => Err(Error::invalid(
            step,
            format!("a swap limit ({swap}) needs a memory limit"),
        )),
        (s, l) if s < l => Err(Error::invalid(
            step,
            format!("memory+swap limit {s} is below the memory limit {l}"),
        )),
        (s, l) => Ok(Some(s - l)),
    }
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// memory.max, memory.swap.max, memory.low. swappiness and disableOOMKiller have no v2 file and
/// are ignored; kernel limits too. Without swap accounting (no memory.swap.max) the swap rule
/// of the v1 side applies: -1 or swap == limit is skipped, anything else is an error.
pub(crate) fn memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    let limit = m.limit().unwrap_or(0);
    let swap = swap_to_v2(m.swap().unwrap_or(0), limit)?;
    if let Some(s) = swap {
        if exists(dir, "memory.swap.max") {
            write(dir, "memory.swap.max", &max_or(s))?;
        } else if !(s == -1 || s == 0) {
            return Err(Error::invalid(
                "apply memory+swap limit",
                "swap limit asked for but memory.swap.max does not exist: the kernel does not \
                 account swap",
            )
            .with_path(&dir.join("memory.swap.max")));
        }
    }
    if limit != 0 {
        write(dir, "memory.max", &max_or(limit))?;
    }
    if let Some(r) = m.reservation().filter(|&r| r != 0) {
        write(dir, "memory.low", &max_or(r))?;
    }
    Ok(())
}

/// cpu.weight, cpu.max, cpu.max.burst, cpu.idle. Realtime scheduling has no v2 controller.
pub(crate) fn cpu(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if c.realtime_runtime().is_some_and(|r| r != 0) || c.realtime_period().is_some_and(|p| p != 0) {
        return Err(Error::invalid(
            "apply cpu realtime limits",
            "realtime runtime/period are not supported by cgroup v2",
        )
        .with_path(dir));
    }
    if let Some(s) = c.shares().filter(|&s| s != 0) {
        write(dir, "cpu.weight", &shares_to_weight(s).to_string())?;
    }
    let quota = c.quota().filter(|&q| q != 0);
    let period = c.period().filter(|&p| p != 0);
    if quota.is_some() || period.is_some() {
        write(dir, "cpu.max", &cpu_max(dir, quota, period)?)?;
    }
    if let Some(b) = c.burst() {
        write(dir, "cpu.max.burst", &b.to_string())?;
    }
    if let Some(i) = c.idle() {
        write(dir, "cpu.idle", &i.to_string())?;
    }
    Ok(())
}

/// "QUOTA PERIOD" for cpu.max. A negative quota is "max"; with only a period given the current
/// quota is kept (writing "max PERIOD" would silently lift it).
fn cpu_max(dir: &Path, quota: Option<i64>, period: Option<u64>) -> Result<String> {
    let q = match quota {
        Some(q) if q > 0 => q.to_string(),
        Some(_) => "max".to_string(),
        None => read_opt(dir, "cpu.max")?
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "max".to_string()),
    };
    Ok(match period {
        Some(p) => format!("{q} {p}"),
        None => q,
    })
}

/// io.bfq.weight when BFQ offers it (same scale as blkio.weight), else io.weight converted;
/// io.max throttles (rate 0 lifts the limit). Leaf weights have no v2 counterpart.
pub(crate) fn io(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    let bfq = exists(dir, "io.bfq.weight");
    let weight = |w: u16| {
        if bfq {
            ("io.bfq.weight", w as u64)
        } else {
            ("io.weight", blkio_to_io_weight(w))
        }
    };
    if let Some(w) = b.weight().filter(|&w| w != 0) {
        let (file, v) = weight(w);
        write(dir, file, &v.to_string())?;
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight().filter(|&w| w != 0) {
            let (file, v) = weight(w);
            write(dir, file, &format!("{}:{} {v}", d.major(), d.minor()))?;
        }
    }
    let throttles = [
        ("rbps", b.throttle_read_bps_device()),
        ("wbps", b.throttle_write_bps_device()),
        ("riops", b.throttle_read_iops_device()),
        ("wiops", b.throttle_write_iops_device()),
    ];
    for (key, list) in throttles {
        for t in list.iter().flatten() {
            let rate = if t.rate() == 0 {
                "max".to_string()
            } else {
                t.rate().to_string()
            };
            write(
                dir,
                "io.max",
                &format!("{}:{} {key}={rate}", t.major(), t.minor()),
            )?;
        }
    }
    Ok(())
}

/// hugetlb.<size>.max, and the reservation limit too where the kernel has it.
pub(crate) fn hugetlb(dir: &Path, limits: &[LinuxHugepageLimit]) -> Result<()> {
    for h in limits {
        let v = max_or(h.limit());
        write(dir, &format!("hugetlb.{}.max", h.page_size()), &v)?;
        let rsvd = format!("hugetlb.{}.rsvd.max", h.page_size());
        if exists(dir, &rsvd) {
            write(dir, &rsvd, &v)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Statistics

pub(crate) fn memory_stats(dir: &Path) -> Result<MemoryStats> {
    let stat = read_opt(dir, "memory.stat")?.unwrap_or_default();
    Ok(MemoryStats {
        usage: read_u64(dir, "memory.current")?,
        max_usage: read_u64(dir, "memory.peak")?,
        limit: read_opt(dir, "memory.max")?.and_then(|s| parse_limit(&s)),
        cache: keyed(&stat, "file").unwrap_or(0),
        rss: keyed(&stat, "anon").unwrap_or(0),
        swap_usage: read_u64(dir, "memory.swap.current")?,
        oom_kill: oom_kills(dir)?,
    })
}

pub(crate) fn oom_kills(dir: &Path) -> Result<u64> {
    Ok(read_opt(dir, "memory.events")?
        .and_then(|s| keyed(&s, "oom_kill"))
        .unwrap_or(0))
}

pub(crate) fn cpu_stats(dir: &Path) -> Result<CpuStats> {
    let st = read_opt(dir, "cpu.stat")?.unwrap_or_default();
    let us = |k: &str| keyed(&st, k).unwrap_or(0).saturating_mul(1000);
    Ok(CpuStats {
        usage_total_ns: us("usage_usec"),
        user_ns: us("user_usec"),
        system_ns: us("system_usec"),
        nr_periods: keyed(&st, "nr_periods").unwrap_or(0),
        nr_throttled: keyed(&st, "nr_throttled").unwrap_or(0),
        throttled_time_ns: us("throttled_usec"),
    })
}

/// Sums io.stat ("MAJ:MIN rbytes=N wbytes=N rios=N wios=N ..." lines).
pub(crate) fn io_stats(dir: &Path) -> Result<BlkioStats> {
    let text = read_opt(dir, "io.stat")?.unwrap_or_default();
    let mut s = BlkioStats::default();
    for line in text.lines() {
        for kv in line.split_whitespace().skip(1) {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "rbytes" => s.read_bytes += v,
                "wbytes" => s.write_bytes += v,
                "rios" => s.read_ios += v,
                "wios" => s.write_ios += v,
                _ => {}
            }
        }
    }
    Ok(s)
}
