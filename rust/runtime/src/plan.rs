//! The parent builds a complete plan of everything the container's init will do — every path
//! as a CString, every flag computed, the seccomp program compiled — so that the child, made by
//! a raw clone() of a possibly multithreaded process, only has to make syscalls and never
//! allocates (another thread may have held the allocator's lock at clone time).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use libc::{c_char, c_int, c_ulong, gid_t, uid_t};
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Mount, Spec};

use crate::caps::CapSets;
use crate::error::{Error, Result};
use crate::mountopts;
use crate::seccomp;

pub fn cstr(s: impl AsRef<[u8]>, what: &str) -> Result<CString> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| Error::invalid("config", format!("{what} contains a NUL byte")))
}

pub fn cpath(p: &Path) -> Result<CString> {
    cstr(p.as_os_str().as_bytes(), &format!("path {}", p.display()))
}

/// `dest` made relative to the container root, with "." and ".." folded lexically so the
/// result can never climb above the root (symlinks are handled by RESOLVE_IN_ROOT in the child).
pub fn clean_rel(dest: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in dest.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Where an operation acts.
#[derive(Debug)]
pub enum Target {
    /// Relative to the rootfs, resolved with RESOLVE_IN_ROOT before pivot_root.
    InRoot(CString),
    /// An absolute path in the container after pivot_root.
    Abs(CString),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Nothing,
    Dir,
    File,
}

#[derive(Debug)]
pub enum Op {
    Mount {
        source: Option<CString>,
        target: Target,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
        create: Create,
    },
    /// MS_REMOUNT|MS_BIND with `flags`, keeping the flags the mount already has locked.
    Remount {
        target: Target,
        flags: c_ulong,
    },
    Propagation {
        target: Target,
        flags: c_ulong,
    },
    RecursiveAttr {
        target: Target,
        attr_set: u64,
    },
    Symlink {
        target: Target,
        content: CString,
    },
    Mknod {
        target: Target,
        mode: libc::mode_t,
        dev: libc::dev_t,
        uid: uid_t,
        gid: gid_t,
        /// In a user namespace mknod is refused: bind the host's node instead.
        bind_from: Option<CString>,
    },
    /// Masked path: tmpfs (read-only) over a directory, /dev/null over a file; absent is fine.
    Mask {
        path: CString,
    },
    /// Read-only path: bind onto itself and remount read-only; absent is fine.
    Readonly {
        path: CString,
    },
    Sysctl {
        path: CString,
        value: CString,
    },
    Chmod {
        target: Target,
        mode: libc::mode_t,
    },
}

pub struct NsJoin {
    pub fd: c_int,
    pub nstype: c_int,
    pub path: PathBuf,
}

pub struct Rlimit {
    pub resource: c_int,
    pub soft: u64,
    pub hard: u64,
}

/// Everything about the process to exec.
pub struct ProcessPlan {
    pub args: Vec<CString>,
    pub argv: Vec<*const c_char>,
    pub env: Vec<CString>,
    pub envp: Vec<*const c_char>,
    /// Absolute paths to try in order, like execvp over the container's PATH.
    pub exec_candidates: Vec<CString>,
    pub cwd: CString,
    pub uid: uid_t,
    pub gid: gid_t,
    pub groups: Vec<gid_t>,
    pub umask: libc::mode_t,
    pub caps: CapSets,
    pub no_new_privs: bool,
    pub rlimits: Vec<Rlimit>,
    pub seccomp: Option<seccomp::Program>,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
}

/// A startContainer hook, run by the container's init after `start` and before the exec.
pub struct HookPlan {
    pub path: CString,
    pub args: Vec<CString>,
    pub argv: Vec<*const c_char>,
    pub env: Vec<CString>,
    pub envp: Vec<*const c_char>,
}

unsafe impl Send for HookPlan {}
unsafe impl Sync for HookPlan {}

pub fn hook_plans(hooks: Option<&Vec<oci_spec::runtime::Hook>>) -> Result<Vec<HookPlan>> {
    let mut out = Vec::new();
    for h in hooks.into_iter().flatten() {
        let path = cpath(h.path())?;
        let mut args: Vec<CString> = h
            .args()
            .iter()
            .flatten()
            .map(|a| cstr(a, "hook argument"))
            .collect::<Result<_>>()?;
        if args.is_empty() {
            args.push(path.clone());
        }
        let env: Vec<CString> = h
            .env()
            .iter()
            .flatten()
            .map(|a| cstr(a, "hook environment"))
            .collect::<Result<_>>()?;
        out.push(HookPlan {
            path,
            argv: null_terminated(&args),
            args,
            envp: null_terminated(&env),
            env,
        });
    }
    Ok(out)
}

/// Everything the container's init does between clone and execve.
pub struct Plan {
    pub rootfs: CString,
    pub rootfs_path: PathBuf,
    pub new_mount_ns: bool,
    pub new_user_ns: bool,
    /// A new network namespace gets its loopback up, as runc does.
    pub new_net_ns: bool,
    /// With a new user namespace, the other new namespaces (but pid) are unshared from inside
    /// it once the child is uid 0 there.
    pub unshare_after_user: c_int,
    pub unshare_cgroup_ns: bool,
    pub joins: Vec<NsJoin>,
    pub root_propagation: c_ulong,
    pub pre_pivot: Vec<Op>,
    pub post_pivot: Vec<Op>,
    pub op_names: Vec<String>,
    pub readonly_root: bool,
    pub hostname: Option<CString>,
    pub domainname: Option<CString>,
    pub process: ProcessPlan,
    pub has_hooks_before_pivot: bool,
    pub start_hooks: Vec<HookPlan>,
}

fn ns_flag(t: LinuxNamespaceType) -> c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => 0x80,
    }
}

pub fn ns_name(flag: c_int) -> &'static str {
    match flag {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNET => "network",
        _ => "time",
    }
}

/// Namespaces: which to create with clone, which to join by path.
pub struct Namespaces {
    pub clone_flags: c_int,
    pub joins: Vec<(c_int, PathBuf)>,
}

pub fn namespaces(spec: &Spec) -> Result<Namespaces> {
    let mut ns = Namespaces {
        clone_flags: 0,
        joins: Vec::new(),
    };
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let mut seen = 0;
    for n in &list {
        let flag = ns_flag(n.typ());
        if flag == 0x80 {
            return Err(Error::invalid(
                "namespaces",
                "time namespaces are not supported yet",
            ));
        }
        if seen & flag != 0 {
            return Err(Error::invalid(
                "namespaces",
                format!("namespace {} listed twice", ns_name(flag)),
            ));
        }
        seen |= flag;
        match n.path() {
            Some(p) if !p.as_os_str().is_empty() => ns.joins.push((flag, p.clone())),
            _ => ns.clone_flags |= flag,
        }
    }
    // Join the user namespace first: it grants the capabilities needed to join the rest.
    ns.joins
        .sort_by_key(|(f, _)| if *f == libc::CLONE_NEWUSER { 0 } else { 1 });
    Ok(ns)
}

pub fn has_ns(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|l| l.iter().any(|n| n.typ() == t))
}

struct OpsBuilder {
    ops: Vec<Op>,
    names: Vec<String>,
}

impl OpsBuilder {
    fn push(&mut self, what: String, op: Op) {
        self.ops.push(op);
        self.names.push(what);
    }
}

/// A v1 hierarchy as the host mounts it: directory name under /sys/fs/cgroup and the
/// subsystem list ("cpu", "name=systemd", "cpu,cpuacct").
#[derive(Debug, Clone)]
pub struct CgroupHierarchy {
    pub dir: String,
    pub subsystems: String,
    pub v2: bool,
}

/// The host's cgroup mounts under /sys/fs/cgroup, read from mountinfo.
pub fn host_cgroup_hierarchies() -> Vec<CgroupHierarchy> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rfields.len() < 3 {
            continue;
        }
        let mnt = fields[4];
        let fstype = rfields[0];
        let Some(dir) = mnt.strip_prefix("/sys/fs/cgroup/") else {
            continue;
        };
        if fstype == "cgroup" {
            let subs: Vec<&str> = rfields[2]
                .split(',')
                .filter(|o| {
                    !matches!(
                        *o,
                        "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime" | "clone_children"
                    ) && !o.starts_with("release_agent")
                })
                .collect();
            out.push(CgroupHierarchy {
                dir: dir.to_string(),
                subsystems: subs.join(","),
                v2: false,
            });
        } else if fstype == "cgroup2" {
            out.push(CgroupHierarchy {
                dir: dir.to_string(),
                subsystems: String::new(),
                v2: true,
            });
        }
    }
    out
}

fn is_pure_v2() -> bool {
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == 0x6367_7270 // CGROUP2_SUPER_MAGIC
}

pub struct MountCtx<'a> {
    pub bundle: &'a Path,
    pub cgroup_ns: bool,
    pub user_ns: bool,
    /// sysfs cannot be mounted in a user namespace that shares the host's network namespace:
    /// bind the host's /sys instead, as runc does.
    pub bind_sysfs: bool,
    /// Host directories of the container's own cgroup, for bind mounts without a cgroup ns.
    pub cgroup_dirs: Vec<(String, PathBuf)>,
}

fn build_cgroup_mount(
    b: &mut OpsBuilder,
    m: &Mount,
    ctx: &MountCtx,
    o: &mountopts::MountOptions,
) -> Result<()> {
    let dest = clean_rel(m.destination());
    // runc's layout: a writable tmpfs, each hierarchy mounted with the spec's flags (ro).
    let flags = o.flags;
    if is_pure_v2() {
        let target = Target::InRoot(cpath(&dest)?);
        if ctx.cgroup_ns {
            b.push(
                format!("mount cgroup2 on {}", m.destination().display()),
                Op::Mount {
                    source: Some(cstr("cgroup2", "")?),
                    target,
                    fstype: Some(cstr("cgroup2", "")?),
                    flags: o.flags,
                    data: None,
                    create: Create::Dir,
                },
            );
        } else {
            let src = ctx
                .cgroup_dirs
                .iter()
                .find(|(c, _)| c == "unified")
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
            b.push(
                format!(
                    "bind cgroup {} on {}",
                    src.display(),
                    m.destination().display()
                ),
                Op::Mount {
                    source: Some(cpath(&src)?),
                    target,
                    fstype: None,
                    flags: libc::MS_BIND | libc::MS_REC,
                    data: None,
                    create: Create::Dir,
                },
            );
            b.push(
                format!("remount cgroup {}", m.destination().display()),
                Op::Remount {
                    target: Target::InRoot(cpath(&dest)?),
                    flags: o.flags,
                },
            );
        }
        return Ok(());
    }
    // v1: a tmpfs holding one mount per hierarchy, as runc lays it out.
    b.push(
        format!("mount tmpfs for cgroups on {}", m.destination().display()),
        Op::Mount {
            source: Some(cstr("tmpfs", "")?),
            target: Target::InRoot(cpath(&dest)?),
            fstype: Some(cstr("tmpfs", "")?),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: Some(cstr("mode=755", "")?),
            create: Create::Dir,
        },
    );
    for h in host_cgroup_hierarchies() {
        if h.v2 {
            continue;
        }
        let sub = dest.join(&h.dir);
        let host_dir = ctx
            .cgroup_dirs
            .iter()
            .find(|(c, _)| h.subsystems.split(',').any(|s| s == c) || *c == h.dir)
            .map(|(_, p)| p.clone());
        if let (false, Some(src)) = (ctx.cgroup_ns, host_dir) {
            b.push(
                format!("bind cgroup {} on {}", src.display(), sub.display()),
                Op::Mount {
                    source: Some(cpath(&src)?),
                    target: Target::InRoot(cpath(&sub)?),
                    fstype: None,
                    flags: libc::MS_BIND | libc::MS_REC,
                    data: None,
                    create: Create::Dir,
                },
            );
            b.push(
                format!("remount cgroup {}", sub.display()),
                Op::Remount {
                    target: Target::InRoot(cpath(&sub)?),
                    flags: o.flags,
                },
            );
        } else {
            let data = if h.subsystems.split(',').all(|s| s.starts_with("name=")) {
                format!("none,{}", h.subsystems)
            } else {
                h.subsystems.clone()
            };
            b.push(
                format!("mount cgroup {} on {}", h.subsystems, sub.display()),
                Op::Mount {
                    source: Some(cstr("cgroup", "")?),
                    target: Target::InRoot(cpath(&sub)?),
                    fstype: Some(cstr("cgroup", "")?),
                    flags,
                    data: Some(cstr(data, "cgroup options")?),
                    create: Create::Dir,
                },
            );
        }
        // Co-mounted controllers ("cpu,cpuacct") get a symlink per controller.
        if h.dir.contains(',') {
            for s in h.dir.split(',') {
                b.push(
                    format!("symlink {}", dest.join(s).display()),
                    Op::Symlink {
                        target: Target::InRoot(cpath(&dest.join(s))?),
                        content: cstr(&h.dir, "")?,
                    },
                );
            }
        }
    }
    if o.flags & libc::MS_RDONLY != 0 {
        // The tmpfs stays writable for the mounts above; its root becomes r-x like runc's.
        b.push(
            format!("chmod {}", m.destination().display()),
            Op::Chmod {
                target: Target::InRoot(cpath(&dest)?),
                mode: 0o555,
            },
        );
    }
    Ok(())
}

fn build_mount(b: &mut OpsBuilder, m: &Mount, ctx: &MountCtx) -> Result<()> {
    let options = m.options().clone().unwrap_or_default();
    let o = mountopts::parse(&options).map_err(|e| {
        Error::invalid(
            "config",
            format!("mount {}: {e}", m.destination().display()),
        )
    })?;
    if !m.destination().is_absolute() {
        return Err(Error::invalid(
            "config",
            format!(
                "mount destination {} is not absolute",
                m.destination().display()
            ),
        ));
    }
    let typ = m.typ().clone().unwrap_or_default();
    let dest_rel = clean_rel(m.destination());
    if dest_rel.as_os_str().is_empty() {
        return Err(Error::invalid(
            "config",
            "a mount cannot replace the container's root (\"/\")",
        ));
    }
    let dest = Target::InRoot(cpath(&dest_rel)?);
    let shown = m.destination().display().to_string();
    if typ == "cgroup" || typ == "cgroup2" && !o.bind {
        return build_cgroup_mount(b, m, ctx, &o);
    }
    if o.bind || typ == "bind" {
        let src = m
            .source()
            .clone()
            .ok_or_else(|| Error::invalid("config", format!("bind mount {shown} has no source")))?;
        let src = if src.is_absolute() {
            src
        } else {
            ctx.bundle.join(src)
        };
        let meta =
            std::fs::metadata(&src).map_err(|e| Error::io("bind mount source", Some(&src), &e))?;
        let mut flags = libc::MS_BIND;
        if o.recursive_bind {
            flags |= libc::MS_REC;
        }
        b.push(
            format!("bind mount {} on {shown}", src.display()),
            Op::Mount {
                source: Some(cpath(&src)?),
                target: dest,
                fstype: None,
                flags,
                data: None,
                create: if meta.is_dir() {
                    Create::Dir
                } else {
                    Create::File
                },
            },
        );
        // A bind mount ignores every flag but MS_REC on the first call: remount for the rest.
        let extra = o.flags & !(libc::MS_REMOUNT);
        if extra != 0 {
            b.push(
                format!("remount {shown}"),
                Op::Remount {
                    target: Target::InRoot(cpath(&dest_rel)?),
                    flags: extra,
                },
            );
        }
    } else {
        if typ.is_empty() {
            return Err(Error::invalid(
                "config",
                format!("mount {shown} has no type"),
            ));
        }
        let data = if o.data.is_empty() {
            None
        } else {
            Some(cstr(o.data.join(","), "mount data")?)
        };
        let source = m
            .source()
            .as_ref()
            .map(|s| cpath(s))
            .transpose()?
            .or(Some(cstr(&typ, "")?));
        let mut flags = o.flags;
        let (source, fstype, create) = if typ == "sysfs" && ctx.bind_sysfs {
            flags |= libc::MS_BIND | libc::MS_REC;
            (Some(cstr("/sys", "")?), None, Create::Dir)
        } else {
            (source, Some(cstr(&typ, "mount type")?), Create::Dir)
        };
        b.push(
            format!("mount {typ} on {shown}"),
            Op::Mount {
                source,
                target: dest,
                fstype,
                flags,
                data,
                create,
            },
        );
    }
    for p in &o.propagation {
        b.push(
            format!("set propagation of {shown}"),
            Op::Propagation {
                target: Target::InRoot(cpath(&dest_rel)?),
                flags: *p,
            },
        );
    }
    if o.recursive_attr_set != 0 {
        b.push(
            format!("set recursive attributes of {shown}"),
            Op::RecursiveAttr {
                target: Target::InRoot(cpath(&dest_rel)?),
                attr_set: o.recursive_attr_set,
            },
        );
    }
    Ok(())
}

pub struct DefaultDevice {
    pub path: &'static str,
    pub major: u32,
    pub minor: u32,
}

pub const DEFAULT_DEVICES: [DefaultDevice; 6] = [
    DefaultDevice {
        path: "dev/null",
        major: 1,
        minor: 3,
    },
    DefaultDevice {
        path: "dev/zero",
        major: 1,
        minor: 5,
    },
    DefaultDevice {
        path: "dev/full",
        major: 1,
        minor: 7,
    },
    DefaultDevice {
        path: "dev/tty",
        major: 5,
        minor: 0,
    },
    DefaultDevice {
        path: "dev/urandom",
        major: 1,
        minor: 9,
    },
    DefaultDevice {
        path: "dev/random",
        major: 1,
        minor: 8,
    },
];

fn dev_type_bits(t: LinuxDeviceType) -> Result<libc::mode_t> {
    Ok(match t {
        LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::P => libc::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::invalid(
                "config",
                "device type \"a\" is only valid in cgroup rules",
            ))
        }
    })
}

fn build_devices(b: &mut OpsBuilder, spec: &Spec, user_ns: bool) -> Result<()> {
    let mut devs: Vec<(String, libc::mode_t, u32, u32, uid_t, gid_t)> = DEFAULT_DEVICES
        .iter()
        .map(|d| {
            (
                d.path.to_string(),
                libc::S_IFCHR | 0o666,
                d.major,
                d.minor,
                0,
                0,
            )
        })
        .collect();
    if let Some(list) = spec.linux().as_ref().and_then(|l| l.devices().as_ref()) {
        for d in list {
            let rel = clean_rel(d.path());
            let name = rel.to_string_lossy().to_string();
            let mode = dev_type_bits(d.typ())? | (d.file_mode().unwrap_or(0o666) & 0o7777);
            let entry = (
                name.clone(),
                mode,
                d.major() as u32,
                d.minor() as u32,
                d.uid().unwrap_or(0),
                d.gid().unwrap_or(0),
            );
            match devs.iter_mut().find(|e| e.0 == name) {
                Some(e) => *e = entry,
                None => devs.push(entry),
            }
        }
    }
    for (path, mode, major, minor, uid, gid) in devs {
        let host = format!("/{path}");
        b.push(
            format!("create device /{path}"),
            Op::Mknod {
                target: Target::InRoot(cstr(&path, "device path")?),
                mode,
                dev: libc::makedev(major, minor),
                uid,
                gid,
                bind_from: if user_ns { Some(cstr(host, "")?) } else { None },
            },
        );
    }
    let mut links: Vec<(&str, &str)> = vec![
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("dev/core", "/proc/kcore"));
    }
    links.push(("dev/ptmx", "pts/ptmx"));
    for (l, to) in links {
        b.push(
            format!("symlink /{l}"),
            Op::Symlink {
                target: Target::InRoot(cstr(l, "")?),
                content: cstr(to, "")?,
            },
        );
    }
    Ok(())
}

pub fn build_ops(spec: &Spec, ctx: &MountCtx) -> Result<(Vec<Op>, Vec<Op>, Vec<String>)> {
    let mut b = OpsBuilder {
        ops: Vec::new(),
        names: Vec::new(),
    };
    let mounts = spec.mounts().clone().unwrap_or_default();
    let mut dev_is_tmpfs = false;
    for m in &mounts {
        build_mount(&mut b, m, ctx)?;
        if clean_rel(m.destination()) == Path::new("dev") {
            let opts = m.options().clone().unwrap_or_default();
            dev_is_tmpfs = !opts.iter().any(|o| o == "bind" || o == "rbind")
                && m.typ().as_deref() != Some("bind");
        }
    }
    if dev_is_tmpfs {
        build_devices(&mut b, spec, ctx.user_ns)?;
    } else if let Some(list) = spec.linux().as_ref().and_then(|l| l.devices().as_ref()) {
        if !list.is_empty() {
            let mut sub = OpsBuilder {
                ops: Vec::new(),
                names: Vec::new(),
            };
            build_devices(&mut sub, spec, ctx.user_ns)?;
            // Only the spec's own devices when /dev comes from elsewhere.
            let skip = DEFAULT_DEVICES.len();
            for (op, name) in sub
                .ops
                .into_iter()
                .zip(sub.names)
                .skip(skip)
                .take(list.len())
            {
                b.push(name, op);
            }
        }
    }
    let pre = std::mem::take(&mut b.ops);
    let mut names = std::mem::take(&mut b.names);

    let mut post = OpsBuilder {
        ops: Vec::new(),
        names: Vec::new(),
    };
    if let Some(linux) = spec.linux() {
        if let Some(sysctls) = linux.sysctl() {
            let mut keys: Vec<&String> = sysctls.keys().collect();
            keys.sort();
            for k in keys {
                validate_sysctl(k, spec)?;
                let path = format!("/proc/sys/{}", k.replace('.', "/"));
                post.push(
                    format!("sysctl {k}"),
                    Op::Sysctl {
                        path: cstr(path, "sysctl")?,
                        value: cstr(&sysctls[k], "sysctl value")?,
                    },
                );
            }
        }
        for p in linux.readonly_paths().iter().flatten() {
            post.push(
                format!("make {p} read-only"),
                Op::Readonly {
                    path: cstr(p, "read-only path")?,
                },
            );
        }
        for p in linux.masked_paths().iter().flatten() {
            post.push(
                format!("mask {p}"),
                Op::Mask {
                    path: cstr(p, "masked path")?,
                },
            );
        }
    }
    names.extend(post.names);
    Ok((pre, post.ops, names))
}

/// Only namespaced sysctls may be set, and only when the container has that namespace — the
/// rule runc applies, so a container cannot change the host's kernel.
fn validate_sysctl(key: &str, spec: &Spec) -> Result<()> {
    let ipc = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if ipc.contains(&key) || key.starts_with("fs.mqueue.") {
        if has_ns(spec, LinuxNamespaceType::Ipc) {
            return Ok(());
        }
        return Err(Error::invalid(
            "sysctl",
            format!("{key} needs an ipc namespace"),
        ));
    }
    if key.starts_with("net.") {
        if has_ns(spec, LinuxNamespaceType::Network) {
            return Ok(());
        }
        return Err(Error::invalid(
            "sysctl",
            format!("{key} needs a network namespace"),
        ));
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        if has_ns(spec, LinuxNamespaceType::Uts) {
            return Ok(());
        }
        return Err(Error::invalid(
            "sysctl",
            format!("{key} needs a uts namespace"),
        ));
    }
    Err(Error::invalid(
        "sysctl",
        format!("{key} is not namespaced and cannot be set in a container"),
    ))
}

pub fn rlimit_resource(t: oci_spec::runtime::PosixRlimitType) -> c_int {
    use oci_spec::runtime::PosixRlimitType as R;
    (match t {
        R::RlimitCpu => libc::RLIMIT_CPU,
        R::RlimitFsize => libc::RLIMIT_FSIZE,
        R::RlimitData => libc::RLIMIT_DATA,
        R::RlimitStack => libc::RLIMIT_STACK,
        R::RlimitCore => libc::RLIMIT_CORE,
        R::RlimitRss => libc::RLIMIT_RSS,
        R::RlimitNproc => libc::RLIMIT_NPROC,
        R::RlimitNofile => libc::RLIMIT_NOFILE,
        R::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        R::RlimitAs => libc::RLIMIT_AS,
        R::RlimitLocks => libc::RLIMIT_LOCKS,
        R::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        R::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        R::RlimitNice => libc::RLIMIT_NICE,
        R::RlimitRtprio => libc::RLIMIT_RTPRIO,
        R::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as c_int
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn null_terminated(v: &[CString]) -> Vec<*const c_char> {
    let mut p: Vec<*const c_char> = v.iter().map(|c| c.as_ptr()).collect();
    p.push(std::ptr::null());
    p
}

/// Build the process part of the plan from an OCI `process` object (used by create and exec).
pub fn process_plan(
    p: &oci_spec::runtime::Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> Result<ProcessPlan> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::invalid("config", "process.args must not be empty"));
    }
    let env = p.env().clone().unwrap_or_default();
    let args_c: Vec<CString> = args
        .iter()
        .map(|a| cstr(a, "process argument"))
        .collect::<Result<_>>()?;
    let env_c: Vec<CString> = env
        .iter()
        .map(|a| cstr(a, "environment variable"))
        .collect::<Result<_>>()?;
    let exe = &args[0];
    let exec_candidates = if exe.contains('/') {
        vec![cstr(exe, "executable")?]
    } else {
        let path = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| cstr(format!("{d}/{exe}"), "executable"))
            .collect::<Result<_>>()?
    };
    let cwd = p.cwd();
    if !cwd.is_absolute() {
        return Err(Error::invalid(
            "config",
            format!("process.cwd {} is not absolute", cwd.display()),
        ));
    }
    let mut rlimits = Vec::new();
    for r in p.rlimits().iter().flatten() {
        if r.soft() > r.hard() {
            return Err(Error::invalid(
                "config",
                format!(
                    "rlimit {:?}: soft limit {} is above hard limit {}",
                    r.typ(),
                    r.soft(),
                    r.hard()
                ),
            ));
        }
        rlimits.push(Rlimit {
            resource: rlimit_resource(r.typ()),
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    let seccomp = match seccomp {
        Some(s) => Some(seccomp::compile(s)?),
        None => None,
    };
    let user = p.user();
    let console_size = p
        .console_size()
        .map(|b| (b.height() as u16, b.width() as u16));
    Ok(ProcessPlan {
        argv: null_terminated(&args_c),
        args: args_c,
        envp: null_terminated(&env_c),
        env: env_c,
        exec_candidates,
        cwd: cpath(cwd)?,
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask().unwrap_or(0o022) as libc::mode_t,
        caps: CapSets::from_spec(p.capabilities().as_ref()),
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        rlimits,
        seccomp,
        terminal: p.terminal().unwrap_or(false),
        console_size,
    })
}

/// The rootfs directory named by the spec, resolved against the bundle.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::invalid("config", "root.path is missing"))?;
    let p = root.path();
    let full = if p.is_absolute() {
        p.clone()
    } else {
        bundle.join(p)
    };
    let meta = std::fs::metadata(&full).map_err(|e| Error::io("rootfs", Some(&full), &e))?;
    if !meta.is_dir() {
        return Err(Error::sys("rootfs", Some(&full), libc::ENOTDIR));
    }
    std::fs::canonicalize(&full).map_err(|e| Error::io("rootfs", Some(&full), &e))
}

// The raw pointers in a plan point into CStrings the plan itself owns, so moving it to
// another thread (a daemon thread pool) is sound.
unsafe impl Send for ProcessPlan {}
unsafe impl Sync for ProcessPlan {}

/// runc's rule: a process without HOME gets the home directory of its uid from the
/// container's /etc/passwd (read without following links out of the rootfs), else "/".
pub fn with_home(p: &oci_spec::runtime::Process, rootfs: &Path) -> oci_spec::runtime::Process {
    let mut env = p.env().clone().unwrap_or_default();
    if env.iter().any(|e| e.starts_with("HOME=")) {
        return p.clone();
    }
    let uid = p.user().uid();
    let home = read_in_root(rootfs, "etc/passwd")
        .and_then(|text| {
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
            })
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_string());
    env.push(format!("HOME={home}"));
    let mut out = p.clone();
    out.set_env(Some(env));
    out
}

fn read_in_root(rootfs: &Path, rel: &str) -> Option<String> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let root = cpath(rootfs).ok()?;
    let rfd = unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if rfd < 0 {
        return None;
    }
    let relc = CString::new(rel).ok()?;
    let fd = crate::sys::open_in_root(rfd, relc.as_ptr(), libc::O_RDONLY);
    unsafe { libc::close(rfd) };
    let fd = fd.ok()?;
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut s = String::new();
    f.by_ref().take(1 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}
