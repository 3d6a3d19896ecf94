//! Unit tests of the pure translation in `plan`: an OCI spec in, the plan the container's
//! init follows out (namespaces, process, mount operations), with no container started.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};
use serde_json::{json, Value};

use crate::caps;
use crate::plan::{self, Create, MountCtx, Op, Target};

fn spec(v: Value) -> Spec {
    serde_json::from_value(v).expect("a valid spec")
}

fn process(v: Value) -> Process {
    serde_json::from_value(v).expect("a valid process")
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn strs(v: &[CString]) -> Vec<&str> {
    v.iter().map(|c| c.to_str().unwrap()).collect()
}

/// The document `runc spec` writes (runc 1.1).
fn runc_default() -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// `base` with `patch` merged in, objects key by key (arrays and scalars replaced).
fn merged(mut base: Value, patch: Value) -> Value {
    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    merge(&mut base, patch);
    base
}

fn ctx(bundle: &Path) -> MountCtx<'_> {
    MountCtx {
        bundle,
        cgroup_ns: false,
        user_ns: false,
        bind_sysfs: false,
        cgroup_dirs: Vec::new(),
    }
}

fn build(v: Value) -> crate::Result<(Vec<Op>, Vec<Op>, Vec<String>)> {
    let bundle = PathBuf::from("/nonexistent-bundle");
    plan::build_ops(&spec(v), &ctx(&bundle))
}

fn err_text(r: crate::Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn in_root(t: &Target) -> &str {
    match t {
        Target::InRoot(p) => p.to_str().unwrap(),
        Target::Abs(p) => panic!("expected a path in the root, got absolute {p:?}"),
    }
}

// --------------------------------------------------------------------------- clean_rel

#[test]
fn clean_rel_never_climbs_out_of_the_root() {
    let cases = [
        ("../../etc", "etc"),
        ("/../../etc/passwd", "etc/passwd"),
        ("/a/../../b/./c", "b/c"),
        ("/proc", "proc"),
        ("/dev//pts/", "dev/pts"),
        ("a/b/../../../../..", ""),
        ("/", ""),
        ("..", ""),
    ];
    for (input, want) in cases {
        assert_eq!(
            plan::clean_rel(Path::new(input)),
            PathBuf::from(want),
            "{input}"
        );
    }
}

// --------------------------------------------------------------------------- namespaces

#[test]
fn namespaces_new_ones_become_clone_flags() {
    let ns = plan::namespaces(&spec(runc_default())).unwrap();
    assert_eq!(
        ns.clone_flags,
        libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWNS
    );
    assert!(ns.joins.is_empty());
}

#[test]
fn namespaces_with_a_path_are_joined_user_first() {
    let s = spec(json!({
        "ociVersion": "1.0.2",
        "linux": {"namespaces": [
            {"type": "network", "path": "/proc/42/ns/net"},
            {"type": "pid"},
            {"type": "ipc", "path": "/proc/42/ns/ipc"},
            {"type": "user", "path": "/proc/42/ns/user"},
            {"type": "mount"},
            {"type": "uts", "path": ""},
            {"type": "cgroup"}
        ]}
    }));
    let ns = plan::namespaces(&s).unwrap();
    // An empty path means a new namespace, as in runc.
    assert_eq!(
        ns.clone_flags,
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWCGROUP
    );
    let joins: Vec<(i32, &str)> = ns
        .joins
        .iter()
        .map(|(f, p)| (*f, p.to_str().unwrap()))
        .collect();
    // The user namespace first (it grants the rights to join the others); the rest keep
    // the order of the spec.
    assert_eq!(
        joins,
        vec![
            (libc::CLONE_NEWUSER, "/proc/42/ns/user"),
            (libc::CLONE_NEWNET, "/proc/42/ns/net"),
            (libc::CLONE_NEWIPC, "/proc/42/ns/ipc"),
        ]
    );
}

#[test]
fn namespaces_listed_twice_are_refused() {
    for second in [
        json!({"type": "pid"}),
        json!({"type": "pid", "path": "/proc/1/ns/pid"}),
    ] {
        let s = spec(json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}, second]}
        }));
        let msg = err_text(plan::namespaces(&s));
        assert!(msg.contains("namespace pid listed twice"), "{msg}");
    }
}

#[test]
fn namespaces_time_is_refused_and_none_is_fine() {
    let s = spec(json!({"ociVersion": "1.0.2", "linux": {"namespaces": [{"type": "time"}]}}));
    assert!(err_text(plan::namespaces(&s)).contains("time"));
    let ns = plan::namespaces(&spec(json!({"ociVersion": "1.0.2"}))).unwrap();
    assert_eq!(ns.clone_flags, 0);
    assert!(ns.joins.is_empty());
}

#[test]
fn has_ns_looks_at_the_types() {
    use oci_spec::runtime::LinuxNamespaceType as T;
    let s = spec(runc_default());
    assert!(plan::has_ns(&s, T::Network) && plan::has_ns(&s, T::Mount));
    assert!(!plan::has_ns(&s, T::User) && !plan::has_ns(&s, T::Cgroup));
}

// --------------------------------------------------------------------------- process

fn base_process() -> Value {
    json!({"user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh", "-c", "true"]})
}

#[test]
fn process_exec_candidates_follow_path() {
    let p = process(merged(
        base_process(),
        json!({"env": ["PATH=/first", "HOME=/root", "PATH=/usr/bin::/bin"]}),
    ));
    let pp = plan::process_plan(&p, None).unwrap();
    // The last PATH wins (runc sets the variables in order); an empty entry is ".".
    assert_eq!(
        strs(&pp.exec_candidates),
        vec!["/usr/bin/sh", "./sh", "/bin/sh"]
    );
    assert_eq!(strs(&pp.args), vec!["sh", "-c", "true"]);
    assert_eq!(
        strs(&pp.env),
        vec!["PATH=/first", "HOME=/root", "PATH=/usr/bin::/bin"]
    );
    // argv and envp point at those strings and end with NULL.
    assert_eq!(pp.argv.len(), 4);
    assert!(pp.argv[3].is_null());
    for (ptr, s) in pp.argv.iter().zip(&pp.args) {
        assert_eq!(*ptr, s.as_ptr());
    }
    assert_eq!(pp.envp.len(), 4);
    assert!(pp.envp[3].is_null());
}

#[test]
fn process_exec_candidates_without_path_or_with_a_slash() {
    let p = process(base_process());
    let pp = plan::process_plan(&p, None).unwrap();
    assert_eq!(
        strs(&pp.exec_candidates),
        vec![
            "/usr/local/sbin/sh",
            "/usr/local/bin/sh",
            "/usr/sbin/sh",
            "/usr/bin/sh",
            "/sbin/sh",
            "/bin/sh"
        ]
    );
    for exe in ["/bin/busybox", "./run.sh", "bin/tool"] {
        let p = process(merged(
            base_process(),
            json!({"args": [exe], "env": ["PATH=/x"]}),
        ));
        let pp = plan::process_plan(&p, None).unwrap();
        assert_eq!(strs(&pp.exec_candidates), vec![exe]);
    }
}

#[test]
fn process_empty_args_are_refused() {
    for args in [json!([]), Value::Null] {
        let mut v = base_process();
        v["args"] = args;
        let msg = err_text(plan::process_plan(&process(v), None));
        assert!(msg.contains("process.args must not be empty"), "{msg}");
    }
}

#[test]
fn process_relative_cwd_is_refused() {
    let p = process(merged(base_process(), json!({"cwd": "tmp/work"})));
    let msg = err_text(plan::process_plan(&p, None));
    assert!(
        msg.contains("process.cwd tmp/work is not absolute"),
        "{msg}"
    );
}

#[test]
fn process_rlimits_soft_above_hard_is_refused() {
    let p = process(merged(
        base_process(),
        json!({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 4096, "hard": 1024}]}),
    ));
    let msg = err_text(plan::process_plan(&p, None));
    assert!(
        msg.contains("soft limit 4096 is above hard limit 1024"),
        "{msg}"
    );
    assert!(msg.contains("Nofile") || msg.contains("NOFILE"), "{msg}");
}

#[test]
fn process_rlimits_user_and_flags() {
    let p = process(merged(
        base_process(),
        json!({
            "cwd": "/tmp",
            "user": {"uid": 1000, "gid": 100, "umask": 63, "additionalGids": [5, 65534]},
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
            ],
            "noNewPrivileges": true,
            "terminal": true,
            "consoleSize": {"height": 40, "width": 120}
        }),
    ));
    let pp = plan::process_plan(&p, None).unwrap();
    assert_eq!(pp.cwd.to_str().unwrap(), "/tmp");
    assert_eq!((pp.uid, pp.gid), (1000, 100));
    assert_eq!(pp.groups, vec![5, 65534]);
    assert_eq!(pp.umask, 0o77);
    assert!(pp.no_new_privs && pp.terminal);
    assert_eq!(pp.console_size, Some((40, 120)));
    let limits: Vec<(i32, u64, u64)> = pp
        .rlimits
        .iter()
        .map(|r| (r.resource, r.soft, r.hard))
        .collect();
    assert_eq!(
        limits,
        vec![
            (libc::RLIMIT_NOFILE as i32, 512, 1024),
            (libc::RLIMIT_CORE as i32, 0, 0)
        ]
    );
    assert!(pp.seccomp.is_none());
    // Defaults: umask 022, no capabilities, no new privileges allowed unless asked.
    let pp = plan::process_plan(&process(base_process()), None).unwrap();
    assert_eq!(pp.umask, 0o22);
    assert!(!pp.no_new_privs && !pp.terminal);
    assert_eq!(pp.caps.bounding | pp.caps.effective | pp.caps.ambient, 0);
}

#[test]
fn process_capability_masks() {
    let p = process(merged(
        base_process(),
        json!({"capabilities": {
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SYS_ADMIN"],
            "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL", "CAP_NET_RAW"],
            "inheritable": ["CAP_NET_RAW"],
            "ambient": []
        }}),
    ));
    let pp = plan::process_plan(&p, None).unwrap();
    let bit = |name: &str| 1u64 << caps::number(name).unwrap();
    assert_eq!(
        pp.caps.bounding,
        bit("CAP_CHOWN") | bit("CAP_KILL") | bit("CAP_NET_RAW") | bit("CAP_SYS_ADMIN")
    );
    assert_eq!(
        pp.caps.bounding,
        (1 << 0) | (1 << 5) | (1 << 13) | (1 << 21)
    );
    assert_eq!(pp.caps.effective, 1 << 5);
    assert_eq!(pp.caps.permitted, (1 << 5) | (1 << 13));
    assert_eq!(pp.caps.inheritable, 1 << 13);
    assert_eq!(pp.caps.ambient, 0);
    assert_eq!(pp.caps.last, caps::last_cap());
}

#[test]
fn process_nul_bytes_are_refused() {
    let p = process(merged(base_process(), json!({"env": ["A=b\u{0}c"]})));
    assert!(err_text(plan::process_plan(&p, None)).contains("NUL"));
}

// --------------------------------------------------------------------------- mounts

/// The cgroup part of the plan for the runc default mount on this host (hybrid, v1 or v2).
fn expected_cgroup_names() -> Vec<String> {
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let pure_v2 = unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), &mut st) } == 0
        && st.f_type as i64 == 0x6367_7270;
    if pure_v2 {
        return vec!["bind cgroup /sys/fs/cgroup on /sys/fs/cgroup".into()];
    }
    let mut names = vec!["mount tmpfs for cgroups on /sys/fs/cgroup".to_string()];
    for h in plan::host_cgroup_hierarchies() {
        if h.v2 {
            continue;
        }
        names.push(format!(
            "mount cgroup {} on sys/fs/cgroup/{}",
            h.subsystems, h.dir
        ));
        if h.dir.contains(',') {
            for s in h.dir.split(',') {
                names.push(format!("symlink sys/fs/cgroup/{s}"));
            }
        }
    }
    // runc's spec mounts cgroups "ro": the tmpfs root turns r-x after the hierarchies.
    names.push("chmod /sys/fs/cgroup".into());
    names
}

#[test]
fn build_ops_of_the_runc_default_spec() {
    let (pre, post, names) = build(runc_default()).unwrap();
    assert_eq!(names.len(), pre.len() + post.len());

    let mut want: Vec<String> = [
        "mount proc on /proc",
        "mount tmpfs on /dev",
        "mount devpts on /dev/pts",
        "mount tmpfs on /dev/shm",
        "mount mqueue on /dev/mqueue",
        "mount sysfs on /sys",
    ]
    .map(String::from)
    .to_vec();
    want.extend(expected_cgroup_names());
    for d in ["null", "zero", "full", "tty", "urandom", "random"] {
        want.push(format!("create device /dev/{d}"));
    }
    for l in ["fd", "stdin", "stdout", "stderr"] {
        want.push(format!("symlink /dev/{l}"));
    }
    if Path::new("/proc/kcore").exists() {
        want.push("symlink /dev/core".into());
    }
    want.push("symlink /dev/ptmx".into());
    assert_eq!(&names[..pre.len()], &want[..]);

    // After pivot_root: read-only paths first, then masked paths, as runc does.
    let mut want_post: Vec<String> = ["bus", "fs", "irq", "sys", "sysrq-trigger"]
        .iter()
        .map(|p| format!("make /proc/{p} read-only"))
        .collect();
    for p in [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/sys/firmware",
        "/proc/scsi",
    ] {
        want_post.push(format!("mask {p}"));
    }
    assert_eq!(&names[pre.len()..], &want_post[..]);
    assert!(post[..5].iter().all(
        |o| matches!(o, Op::Readonly { path } if path.to_str().unwrap().starts_with("/proc/"))
    ));
    assert!(post[5..].iter().all(|o| matches!(o, Op::Mask { .. })));
}

#[test]
fn build_ops_mount_details() {
    let (pre, _, _) = build(runc_default()).unwrap();
    let mount = |i: usize| match &pre[i] {
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
            create,
        } => (
            source.as_ref().map(|s| s.to_str().unwrap().to_string()),
            in_root(target).to_string(),
            fstype.as_ref().map(|s| s.to_str().unwrap().to_string()),
            *flags,
            data.as_ref().map(|s| s.to_str().unwrap().to_string()),
            *create,
        ),
        other => panic!("op {i} is not a mount: {other:?}"),
    };
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        mount(0),
        (s("proc"), "proc".into(), s("proc"), 0, None, Create::Dir)
    );
    assert_eq!(
        mount(1),
        (
            s("tmpfs"),
            "dev".into(),
            s("tmpfs"),
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            s("mode=755,size=65536k"),
            Create::Dir
        )
    );
    assert_eq!(
        mount(2),
        (
            s("devpts"),
            "dev/pts".into(),
            s("devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            s("newinstance,ptmxmode=0666,mode=0620,gid=5"),
            Create::Dir
        )
    );
    assert_eq!(
        mount(5),
        (
            s("sysfs"),
            "sys".into(),
            s("sysfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV | libc::MS_RDONLY,
            None,
            Create::Dir
        )
    );
    let first_dev = pre
        .iter()
        .position(|o| matches!(o, Op::Mknod { .. }))
        .unwrap();
    match &pre[first_dev] {
        Op::Mknod {
            target,
            mode,
            dev,
            uid,
            gid,
            bind_from,
        } => {
            assert_eq!(in_root(target), "dev/null");
            assert_eq!(*mode, libc::S_IFCHR | 0o666);
            assert_eq!(*dev, libc::makedev(1, 3));
            assert_eq!((*uid, *gid), (0, 0));
            assert!(bind_from.is_none());
        }
        _ => unreachable!(),
    }
    let ptmx = pre.last().unwrap();
    match ptmx {
        Op::Symlink { target, content } => {
            assert_eq!(in_root(target), "dev/ptmx");
            assert_eq!(content.as_c_str(), c("pts/ptmx").as_c_str());
        }
        other => panic!("last op is not the ptmx symlink: {other:?}"),
    }
}

#[test]
fn build_ops_in_a_user_namespace_binds_devices_and_sysfs() {
    let bundle = PathBuf::from("/nonexistent-bundle");
    let ctx = MountCtx {
        user_ns: true,
        bind_sysfs: true,
        ..ctx(&bundle)
    };
    let (pre, _, names) = plan::build_ops(&spec(runc_default()), &ctx).unwrap();
    let sys = names
        .iter()
        .position(|n| n == "mount sysfs on /sys")
        .unwrap();
    match &pre[sys] {
        Op::Mount {
            source,
            fstype,
            flags,
            ..
        } => {
            assert_eq!(source.as_deref(), Some(c("/sys").as_c_str()));
            assert!(fstype.is_none());
            assert_eq!(
                *flags & (libc::MS_BIND | libc::MS_REC),
                libc::MS_BIND | libc::MS_REC
            );
        }
        other => panic!("{other:?}"),
    }
    let devs: Vec<&str> = pre
        .iter()
        .filter_map(|o| match o {
            Op::Mknod { bind_from, .. } => bind_from.as_ref().map(|b| b.to_str().unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(
        devs,
        vec![
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/tty",
            "/dev/urandom",
            "/dev/random"
        ]
    );
}

#[test]
fn build_ops_spec_devices_replace_or_extend_the_defaults() {
    let v = merged(
        runc_default(),
        json!({"linux": {"devices": [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438,
             "uid": 0, "gid": 0},
            {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 384,
             "uid": 7, "gid": 8}
        ]}}),
    );
    let (pre, _, names) = build(v).unwrap();
    let devs: Vec<(&str, libc::mode_t, u32, u32)> = pre
        .iter()
        .filter_map(|o| match o {
            Op::Mknod {
                target,
                mode,
                uid,
                gid,
                ..
            } => Some((in_root(target), *mode, *uid, *gid)),
            _ => None,
        })
        .collect();
    assert_eq!(devs.len(), 7);
    assert_eq!(devs[0], ("dev/null", libc::S_IFCHR | 0o600, 7, 8));
    assert_eq!(devs[6], ("dev/fuse", libc::S_IFCHR | 0o666, 0, 0));
    assert!(names.contains(&"create device /dev/fuse".to_string()));

    // When /dev is not a tmpfs of ours, only the spec's own devices are made.
    let mut v = merged(
        runc_default(),
        json!({"linux": {"devices": [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}
        ]}}),
    );
    v["mounts"][1] = json!({"destination": "/dev", "type": "bind", "source": "/dev",
                            "options": ["rbind"]});
    let (_, _, names) = build(v).unwrap();
    let made: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("create device"))
        .collect();
    assert_eq!(made, vec!["create device /dev/fuse"]);
    assert!(!names.iter().any(|n| n == "symlink /dev/ptmx"));
}

#[test]
fn build_ops_refuses_idmapped_mounts() {
    for opt in ["idmap", "ridmap"] {
        let mut v = runc_default();
        v["mounts"][3]["options"] = json!(["nosuid", opt]);
        let msg = err_text(build(v));
        assert!(msg.contains("mount /dev/shm"), "{msg}");
        assert!(msg.contains(opt) && msg.contains("not supported"), "{msg}");
    }
}

#[test]
fn build_ops_refuses_relative_destinations_and_the_root() {
    let mut v = runc_default();
    v["mounts"][0]["destination"] = json!("proc");
    let msg = err_text(build(v));
    assert!(
        msg.contains("mount destination proc is not absolute"),
        "{msg}"
    );

    for dest in ["/", "/..", "/proc/.."] {
        let mut v = runc_default();
        v["mounts"][0]["destination"] = json!(dest);
        let msg = err_text(build(v));
        assert!(
            msg.contains("cannot replace the container's root"),
            "{dest}: {msg}"
        );
    }
}

#[test]
fn build_ops_refuses_mounts_without_type_or_source() {
    let mut v = runc_default();
    v["mounts"][0] = json!({"destination": "/data", "source": "whatever"});
    assert!(err_text(build(v)).contains("mount /data has no type"));

    let mut v = runc_default();
    v["mounts"][0] = json!({"destination": "/data", "type": "bind", "options": ["rbind"]});
    assert!(err_text(build(v)).contains("bind mount /data has no source"));

    let mut v = runc_default();
    v["mounts"][0] = json!({"destination": "/data", "type": "bind",
                            "source": "/nonexistent/bind/source", "options": ["bind"]});
    let msg = err_text(build(v));
    assert!(
        msg.contains("/nonexistent/bind/source") && msg.contains("ENOENT"),
        "{msg}"
    );
}

#[test]
fn build_ops_bind_mount_remounts_for_its_flags() {
    let dir = std::env::temp_dir();
    let mut v = runc_default();
    v["mounts"] = json!([
        {"destination": "/../../host", "type": "bind", "source": dir,
         "options": ["rbind", "ro", "nosuid", "rslave"]}
    ]);
    let (pre, _, names) = build(v).unwrap();
    assert_eq!(
        names[..3],
        [
            format!("bind mount {} on /../../host", dir.display()),
            "remount /../../host".to_string(),
            "set propagation of /../../host".to_string()
        ]
    );
    match (&pre[0], &pre[1], &pre[2]) {
        (
            Op::Mount {
                target,
                flags,
                create,
                ..
            },
            Op::Remount {
                target: t2,
                flags: f2,
            },
            Op::Propagation {
                target: t3,
                flags: f3,
            },
        ) => {
            // ".." cannot climb out: the mount lands on <rootfs>/host.
            assert_eq!(in_root(target), "host");
            assert_eq!((in_root(t2), in_root(t3)), ("host", "host"));
            assert_eq!(*flags, libc::MS_BIND | libc::MS_REC);
            assert_eq!(*create, Create::Dir);
            assert_eq!(*f2, libc::MS_RDONLY | libc::MS_NOSUID);
            assert_eq!(*f3, libc::MS_SLAVE | libc::MS_REC);
        }
        other => panic!("{other:?}"),
    }
}

// --------------------------------------------------------------------------- sysctl

fn with_sysctl(namespaces: &[&str], sysctl: Value) -> Value {
    let ns: Vec<Value> = namespaces.iter().map(|t| json!({"type": t})).collect();
    merged(
        runc_default(),
        json!({"linux": {"namespaces": ns, "sysctl": sysctl}}),
    )
}

#[test]
fn sysctl_net_needs_a_network_namespace() {
    let v = with_sysctl(
        &["pid", "ipc", "uts", "mount"],
        json!({"net.ipv4.ip_forward": "1"}),
    );
    let msg = err_text(build(v));
    assert!(
        msg.contains("net.ipv4.ip_forward needs a network namespace"),
        "{msg}"
    );

    let v = with_sysctl(
        &["pid", "network", "mount"],
        json!({"net.ipv4.ip_forward": "1"}),
    );
    let (pre, post, names) = build(v).unwrap();
    // Sysctls are the first thing after pivot_root, before /proc/sys turns read-only.
    assert_eq!(names[pre.len()], "sysctl net.ipv4.ip_forward");
    match post.first().unwrap() {
        Op::Sysctl { path, value } => {
            assert_eq!(path.to_str().unwrap(), "/proc/sys/net/ipv4/ip_forward");
            assert_eq!(value.to_str().unwrap(), "1");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sysctl_ipc_ones_need_an_ipc_namespace() {
    for key in ["kernel.shmmax", "kernel.msgmax", "fs.mqueue.msg_max"] {
        let ok = with_sysctl(&["ipc", "mount"], json!({key: "4096"}));
        assert!(build(ok).is_ok(), "{key}");
        let bad = with_sysctl(&["network", "mount"], json!({key: "4096"}));
        let msg = err_text(build(bad));
        assert!(
            msg.contains(&format!("{key} needs an ipc namespace")),
            "{msg}"
        );
    }
}

#[test]
fn sysctl_not_namespaced_is_refused_whatever_the_namespaces() {
    let all = ["pid", "network", "ipc", "uts", "mount", "cgroup"];
    for key in ["kernel.panic", "vm.swappiness", "kernel.pid_max"] {
        let msg = err_text(build(with_sysctl(&all, json!({key: "1"}))));
        assert!(msg.contains(&format!("{key} is not namespaced")), "{msg}");
    }
    let ok = with_sysctl(&["uts", "mount"], json!({"kernel.hostname": "box"}));
    assert!(build(ok).is_ok());
    let bad = with_sysctl(&["mount"], json!({"kernel.domainname": "x"}));
    assert!(err_text(build(bad)).contains("needs a uts namespace"));
}

#[test]
fn sysctl_ops_come_first_after_pivot_sorted_by_key() {
    let v = with_sysctl(
        &["network", "ipc", "mount"],
        json!({"net.core.somaxconn": "512", "kernel.shmmni": "8", "net.ipv4.ip_forward": "1"}),
    );
    let (pre, post, names) = build(v).unwrap();
    let tail: Vec<&str> = names[pre.len()..pre.len() + 3]
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        tail,
        vec![
            "sysctl kernel.shmmni",
            "sysctl net.core.somaxconn",
            "sysctl net.ipv4.ip_forward"
        ]
    );
    assert!(post[..3].iter().all(|o| matches!(o, Op::Sysctl { .. })));
}

// --------------------------------------------------------------------------- the rest

#[test]
fn hook_plans_default_argv_to_the_path() {
    let hooks: Vec<oci_spec::runtime::Hook> = serde_json::from_value(json!([
        {"path": "/bin/hook"},
        {"path": "/bin/other", "args": ["other", "--flag"], "env": ["A=1"]}
    ]))
    .unwrap();
    let plans = plan::hook_plans(Some(&hooks)).unwrap();
    assert_eq!(strs(&plans[0].args), vec!["/bin/hook"]);
    assert!(plans[0].env.is_empty() && plans[0].envp == vec![std::ptr::null()]);
    assert_eq!(strs(&plans[1].args), vec!["other", "--flag"]);
    assert_eq!(strs(&plans[1].env), vec!["A=1"]);
    assert_eq!(plans[1].argv.len(), 3);
    assert!(plan::hook_plans(None).unwrap().is_empty());
}

#[test]
fn rootfs_path_resolves_against_the_bundle() {
    let bundle = std::env::temp_dir().join(format!("sampan-plan-tests-{}", std::process::id()));
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::write(bundle.join("file"), "").unwrap();
    let found = plan::rootfs_path(&spec(runc_default()), &bundle);
    let missing = plan::rootfs_path(
        &spec(merged(runc_default(), json!({"root": {"path": "nope"}}))),
        &bundle,
    );
    let not_dir = plan::rootfs_path(
        &spec(merged(runc_default(), json!({"root": {"path": "file"}}))),
        &bundle,
    );
    let no_root = plan::rootfs_path(&spec(json!({"ociVersion": "1.0.2"})), &bundle);
    std::fs::remove_dir_all(&bundle).unwrap();
    assert_eq!(
        found.unwrap(),
        std::fs::canonicalize(std::env::temp_dir())
            .unwrap()
            .join(bundle.file_name().unwrap())
            .join("rootfs")
    );
    let msg = err_text(missing);
    assert!(msg.contains("nope") && msg.contains("ENOENT"), "{msg}");
    assert!(err_text(not_dir).contains("ENOTDIR"));
    assert!(err_text(no_root).contains("root.path is missing"));
}
