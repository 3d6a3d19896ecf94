//! The device allow list: v1 devices.allow/devices.deny lines, and for cgroup v2 an eBPF
//! BPF_PROG_TYPE_CGROUP_DEVICE program compiled from the rules and attached with bpf(2).
//!
//! Semantics (v1's and the program's alike): access is decided per access bit (mknod, read,
//! write). For each bit the last rule in the list that matches the device and names the bit
//! decides; a bit no rule decides is denied. A request is allowed when all its bits are.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};

/// Access bits as the kernel passes them to the program (bpf_cgroup_dev_ctx.access_type >> 16).
pub(crate) const ACC_MKNOD: u32 = 1;
pub(crate) const ACC_READ: u32 = 2;
pub(crate) const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
/// Device types as the kernel passes them (access_type & 0xffff).
pub(crate) const DEV_BLOCK: u32 = 1;
pub(crate) const DEV_CHAR: u32 = 2;

/// One rule in the form the program tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    /// DEV_BLOCK / DEV_CHAR; None = any.
    pub typ: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

impl Rule {
    fn is_catch_all(&self) -> bool {
        self.typ.is_none() && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }

    #[cfg(test)]
    /// Whether the rule decides `bit` for device (typ, major, minor).
    pub(crate) fn covers(&self, typ: u32, major: u32, minor: u32, bit: u32) -> bool {
        self.typ.is_none_or(|t| t == typ)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && self.access & bit != 0
    }
}

fn parse_access(a: Option<&str>) -> Result<u32> {
    let a = a.unwrap_or("");
    if a.is_empty() {
        return Ok(ACC_ALL);
    }
    let mut bits = 0;
    for c in a.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(Error::invalid(
                    "apply device rules",
                    format!("invalid device access {a:?}: only r, w and m are allowed"),
                ))
            }
        };
    }
    Ok(bits)
}

fn number(n: Option<i64>, what: &str) -> Result<Option<u32>> {
    match n {
        None => Ok(None),
        Some(v) if v < 0 => Ok(None), // -1 is the wildcard some tools write
        Some(v) if v <= i32::MAX as i64 => Ok(Some(v as u32)),
        Some(v) => Err(Error::invalid(
            "apply device rules",
            format!("device {what} number {v} is out of range"),
        )),
    }
}

/// The spec's rules as the program sees them. FIFO ("p") rules are dropped: the device
/// controller never checks FIFOs.
pub(crate) fn rules_from_spec(list: &[LinuxDeviceCgroup]) -> Result<Vec<Rule>> {
    let mut out = Vec::with_capacity(list.len());
    for d in list {
        let typ = match d.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            LinuxDeviceType::P => continue,
        };
        out.push(Rule {
            allow: d.allow(),
            typ,
            major: number(d.major(), "major")?,
            minor: number(d.minor(), "minor")?,
            access: parse_access(d.access().as_deref())?,
        });
    }
    Ok(out)
}

/// The (file, line) writes that put a v1 devices cgroup into the state the list describes:
/// deny everything, then each rule in order.
pub(crate) fn v1_writes(list: &[LinuxDeviceCgroup]) -> Result<Vec<(&'static str, String)>> {
    let mut out = vec![("devices.deny", "a".to_string())];
    for d in list {
        let typ = d.typ().unwrap_or(LinuxDeviceType::A);
        let typ = match typ {
            LinuxDeviceType::U => LinuxDeviceType::C,
            t => t,
        };
        if typ == LinuxDeviceType::P {
            continue;
        }
        let num = |n: Option<i64>| match n {
            Some(v) if v >= 0 => v.to_string(),
            _ => "*".to_string(),
        };
        let bits = parse_access(d.access().as_deref())?;
        let mut access = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if bits & bit != 0 {
                access.push(c);
            }
        }
        let line = if typ == LinuxDeviceType::A {
            format!("a *:* {access}")
        } else {
            format!(
                "{} {}:{} {access}",
                typ.as_str(),
                num(d.major()),
                num(d.minor())
            )
        };
        out.push((
            if d.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            },
            line,
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// eBPF

/// One eBPF instruction, laid out as struct bpf_insn.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    /// dst_reg:4 and src_reg:4 bitfields; their order within the byte follows endianness.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const fn regs(dst: u8, src: u8) -> u8 {
    if cfg!(target_endian = "little") {
        dst | (src << 4)
    } else {
        (dst << 4) | src
    }
}

// Opcodes used (class | op | source).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH64_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JA: u8 = 0x05; // BPF_JMP | BPF_JA
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// Registers: r1 = ctx on entry; r2 = device type, r3 = access bits still undecided,
// r4 = major, r5 = minor; r0 = verdict.
const R_TYPE: u8 = 2;
const R_ACC: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: regs(dst, src),
            off,
            imm,
        }
    }

    #[cfg(test)]
    /// The 8 bytes the kernel reads.
    pub(crate) fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The first instruction of the next rule to test (or the default verdict after the last).
    Next,
    Deny,
    Allow,
}

/// Compiles rules into a program that returns 1 (allow) or 0 (deny) for a bpf_cgroup_dev_ctx.
///
/// Rules are tested from the last to the first. r3 starts as the requested access bits; an
/// allow rule that matches the device clears the bits it grants and allows once none are left;
/// a deny rule that matches the device and names any bit still undecided denies. Whatever falls
/// through gets the default: that of the last catch-all rule ("a *:* rwm"), deny if none; rules
/// before that catch-all can never decide anything and are left out.
pub(crate) fn compile(rules: &[Rule]) -> Vec<Insn> {
    let (default_allow, start) = match rules.iter().rposition(Rule::is_catch_all) {
        Some(i) => (rules[i].allow, i + 1),
        None => (false, 0),
    };
    let live = &rules[start..];
    if live.is_empty() {
        return vec![
            Insn::new(MOV64_K, 0, 0, 0, default_allow as i32),
            Insn::new(EXIT, 0, 0, 0, 0),
        ];
    }
    // Pass 1: instructions with symbolic jump targets; rule_start[i] = index of rule i's first.
    let mut code: Vec<(Insn, Option<Target>)> = vec![
        (Insn::new(LDX_W, R_TYPE, 1, 0, 0), None),
        (Insn::new(AND64_K, R_TYPE, 0, 0, 0xffff), None),
        (Insn::new(LDX_W, R_ACC, 1, 0, 0), None),
        (Insn::new(RSH64_K, R_ACC, 0, 0, 16), None),
        (Insn::new(LDX_W, R_MAJOR, 1, 4, 0), None),
        (Insn::new(LDX_W, R_MINOR, 1, 8, 0), None),
    ];
    let mut rule_end = Vec::new(); // index just past each rule's block, in emission order
    let mut owner = Vec::new(); // which emitted block each instruction belongs to
    owner.resize(code.len(), usize::MAX);
    for (block, r) in live.iter().rev().enumerate() {
        let mut push = |i: Insn, t: Option<Target>| {
            code.push((i, t));
            owner.push(block);
        };
        if let Some(t) = r.typ {
            push(Insn::new(JNE_K, R_TYPE, 0, 0, t as i32), Some(Target::Next));
        }
        if let Some(m) = r.major {
            push(
                Insn::new(JNE_K, R_MAJOR, 0, 0, m as i32),
                Some(Target::Next),
            );
        }
        if let Some(m) = r.minor {
            push(
                Insn::new(JNE_K, R_MINOR, 0, 0, m as i32),
                Some(Target::Next),
            );
        }
        if !r.allow {
            push(
                Insn::new(JSET_K, R_ACC, 0, 0, r.access as i32),
                Some(Target::Deny),
            );
        } else if r.access == ACC_ALL {
            push(Insn::new(JA, 0, 0, 0, 0), Some(Target::Allow));
        } else {
            push(
                Insn::new(AND64_K, R_ACC, 0, 0, (!r.access & ACC_ALL) as i32),
                None,
            );
            push(Insn::new(JEQ_K, R_ACC, 0, 0, 0), Some(Target::Allow));
        }
        rule_end.push(code.len());
    }
    // Tail: the default verdict first (reached by falling through), then the other verdict
    // only if some rule jumps to it (the verifier refuses unreachable instructions).
    let default_at = code.len();
    let wants_other = code.iter().any(|(_, t)| {
        *t == Some(if default_allow {
            Target::Deny
        } else {
            Target::Allow
        })
    });
    let other_at = default_at + 2;
    let (allow_at, deny_at) = if default_allow {
        (default_at, other_at)
    } else {
        (other_at, default_at)
    };
    // Pass 2: resolve jumps (offsets count from the next instruction).
    let mut out: Vec<Insn> = Vec::with_capacity(code.len() + 4);
    for (pc, (mut insn, target)) in code.into_iter().enumerate() {
        if let Some(t) = target {
            let to = match t {
                Target::Next => rule_end[owner[pc]],
                Target::Allow => allow_at,
                Target::Deny => deny_at,
            };
            insn.off = (to as i64 - pc as i64 - 1) as i16;
        }
        out.push(insn);
    }
    out.push(Insn::new(MOV64_K, 0, 0, 0, default_allow as i32));
    out.push(Insn::new(EXIT, 0, 0, 0, 0));
    if wants_other {
        out.push(Insn::new(MOV64_K, 0, 0, 0, !default_allow as i32));
        out.push(Insn::new(EXIT, 0, 0, 0, 0));
    }
    out
}

#[cfg(test)]
/// The program's bytes, as bpf(BPF_PROG_LOAD) reads them.
pub(crate) fn program_bytes(prog: &[Insn]) -> Vec<u8> {
    prog.iter().flat_map(|i| i.to_bytes()).collect()
}

// bpf(2) commands, types and flags (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// union bpf_attr for BPF_PROG_LOAD, up to expected_attach_type; every field at its natural
/// offset so the layout is the kernel's on 32- and 64-bit targets alike.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// union bpf_attr for BPF_PROG_ATTACH / BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _pad: u32,
}

/// union bpf_attr for BPF_PROG_QUERY.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// union bpf_attr for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: attr is a live, initialised bpf_attr-shaped struct of the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    }
}

fn fd_from(ret: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us.
    unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) }
}

/// Loads a device program; on failure reloads with the verifier log to explain why.
pub(crate) fn load(prog: &[Insn]) -> Result<OwnedFd> {
    let license = b"Apache-2.0\0";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"sampan_devs");
    let attr = |log: &mut Vec<u8>| ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as usize as u64,
        license: license.as_ptr() as usize as u64,
        log_level: if log.is_empty() { 0 } else { 1 },
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as usize as u64
        },
        prog_name: name,
        ..Default::default()
    };
    let mut no_log = Vec::new();
    let mut a = attr(&mut no_log);
    let mut ret = bpf(BPF_PROG_LOAD, &mut a);
    if ret < 0 && crate::error::errno() == libc::EPERM {
        // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, often tiny: lift it, retry.
        let inf = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain setrlimit on a valid struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) } == 0 {
            a = attr(&mut no_log);
            ret = bpf(BPF_PROG_LOAD, &mut a);
        }
    }
    if ret >= 0 {
        return Ok(fd_from(ret));
    }
    let errno = crate::error::errno();
    let mut err = Error::sys("load eBPF device program (bpf BPF_PROG_LOAD)", None, errno);
    if errno == libc::EINVAL || errno == libc::EACCES {
        let mut log = vec![0u8; 64 * 1024];
        let mut a = attr(&mut log);
        let again = bpf(BPF_PROG_LOAD, &mut a);
        if again >= 0 {
            drop(fd_from(again));
        }
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
        if !text.is_empty() {
            err.detail = Some(format!("verifier: {text}"));
        }
    }
    Err(err)
}

/// IDs of the device programs attached to the cgroup open at `cg`.
fn attached(cg: &OwnedFd) -> Vec<u32> {
    let mut ids = vec![0u32; 64];
    let mut q = QueryAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as usize as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    if bpf(BPF_PROG_QUERY, &mut q) < 0 {
        return Vec::new();
    }
    ids.truncate((q.prog_cnt as usize).min(64));
    ids
}

/// Compiles `rules`, attaches the program to cgroup directory `dir` (BPF_F_ALLOW_MULTI), then
/// detaches the device programs that were there before, so an update replaces the old list
/// without a moment with no filter at all.
pub(crate) fn attach(dir: &Path, rules: &[Rule]) -> Result<()> {
    let prog = load(&compile(rules)).map_err(|e| e.with_path(dir))?;
    let cg = open_dir(dir, libc::O_RDONLY)?;
    let before = attached(&cg);
    let mut a = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    if bpf(BPF_PROG_ATTACH, &mut a) < 0 {
        return Err(Error::last(
            "attach eBPF device program (bpf BPF_PROG_ATTACH)",
            Some(dir),
        ));
    }
    for id in before {
        let mut g = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let ret = bpf(BPF_PROG_GET_FD_BY_ID, &mut g);
        if ret < 0 {
            continue; // gone already
        }
        let old = fd_from(ret);
        let mut d = AttachAttr {
            target_fd: cg.as_raw_fd() as u32,
            attach_bpf_fd: old.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        if bpf(BPF_PROG_DETACH, &mut d) < 0 && crate::error::errno() != libc::ENOENT {
            return Err(Error::last(
                "detach old eBPF device program (bpf BPF_PROG_DETACH)",
                Some(dir),
            ));
        }
    }
    Ok(())
}

pub(crate) fn open_dir(dir: &Path, flags: libc::c_int) -> Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("open cgroup directory", "path contains a NUL byte"))?;
    // SAFETY: c is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::last("open cgroup directory", Some(dir)));
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
