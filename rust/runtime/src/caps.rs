//! Capability names and the five capability sets, applied with raw syscalls so the code can run
//! in the post-clone child without allocating.

use oci_spec::runtime::{Capabilities, LinuxCapabilities};

const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

pub fn number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

pub fn name(n: u32) -> Option<&'static str> {
    NAMES.get(n as usize).copied()
}

/// The highest capability this kernel knows; caps above it are ignored as runc does.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn mask_of(set: &Option<Capabilities>, last: u32) -> u64 {
    let mut mask = 0u64;
    for cap in set.iter().flatten() {
        // The oci-spec enum serialises to its canonical "CAP_…" name.
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if let Some(n) = number(&name) {
            if n <= last {
                mask |= 1 << n;
            }
        }
    }
    mask
}

/// The five sets as bit masks (bit n = capability n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub last: u32,
}

impl CapSets {
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> CapSets {
        let last = last_cap();
        match c {
            None => CapSets {
                last,
                ..Default::default()
            },
            Some(c) => CapSets {
                bounding: mask_of(c.bounding(), last),
                effective: mask_of(c.effective(), last),
                permitted: mask_of(c.permitted(), last),
                inheritable: mask_of(c.inheritable(), last),
                ambient: mask_of(c.ambient(), last),
                last,
            },
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drop every capability outside the bounding set. Async-signal-safe. Returns 0 or errno.
pub fn apply_bounding(s: &CapSets) -> i32 {
    for n in 0..=s.last {
        if s.bounding & (1 << n) == 0 {
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong, 0, 0, 0) };
            if r < 0 {
                let e = crate::error::errno();
                // EINVAL: the kernel does not know this capability.
                if e != libc::EINVAL {
                    return e;
                }
            }
        }
    }
    0
}

/// Set effective/permitted/inheritable, then raise the ambient set. Async-signal-safe.
pub fn apply_sets(s: &CapSets) -> i32 {
    let hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: s.effective as u32,
            permitted: s.permitted as u32,
            inheritable: s.inheritable as u32,
        },
        CapData {
            effective: (s.effective >> 32) as u32,
            permitted: (s.permitted >> 32) as u32,
            inheritable: (s.inheritable >> 32) as u32,
        },
    ];
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if r < 0 {
        return crate::error::errno();
    }
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    for n in 0..=s.last {
        if s.ambient & (1 << n) != 0 {
            // Ambient raise fails unless the cap is permitted and inheritable; runc ignores
            // that failure too, since the spec allows listing such caps.
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    n as libc::c_ulong,
                    0,
                    0,
                )
            };
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("sys_admin"), Some(21));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
        assert_eq!(name(0), Some("CAP_CHOWN"));
    }

    #[test]
    fn masks_from_spec() {
        let caps = LinuxCapabilities::default();
        let s = CapSets::from_spec(Some(&caps));
        let expect = (1u64 << 29) | (1 << 5) | (1 << 10);
        assert_eq!(s.bounding, expect);
        assert_eq!(s.ambient, expect);
    }
}
