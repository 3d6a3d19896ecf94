//! Tests against fake cgroupfs trees (a temporary directory standing for "/" plus mountinfo and
//! /proc/self/cgroup texts): pure v2, pure v1 and hybrid layouts, path rules, conversions and
//! the device program.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use oci_spec::runtime::LinuxResources;

use super::devices::{self, Insn, Rule, ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_BLOCK, DEV_CHAR};
use super::layout::{self, Host};
use super::{v1, v2, Cgroup, Place};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A temporary directory standing for "/", removed on drop.
struct Fake(PathBuf);

impl Fake {
    fn new(tag: &str) -> Fake {
        let p = std::env::temp_dir().join(format!(
            "sampan-cg-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Fake(p)
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.0.join(rel.trim_start_matches('/'))
    }
    fn put(&self, rel: &str, content: &str) {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    /// Creates empty files `names` in directory `dir`.
    fn files(&self, dir: &str, names: &[&str]) {
        for n in names {
            self.put(&format!("{dir}/{n}"), "");
        }
    }
    fn get(&self, rel: &str) -> String {
        std::fs::read_to_string(self.p(rel))
            .unwrap_or_else(|e| panic!("read {rel}: {e}"))
            .trim()
            .to_string()
    }
    fn host(&self, mountinfo: &str, cgroup: &str) -> Host {
        Host::fake(&self.0, mountinfo, cgroup)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn res(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("resources json")
}

const V2_MOUNTINFO: &str = "\
21 26 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
22 26 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
26 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
";
const V2_CGROUP: &str = "0::/user.slice/session-1.scope\n";

const V2_FILES: &[&str] = &[
    "cgroup.procs",
    "cgroup.freeze",
    "cgroup.kill",
    "memory.max",
    "memory.swap.max",
    "memory.low",
    "memory.high",
    "cpu.weight",
    "cpu.max",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "io.weight",
    "io.max",
    "hugetlb.2MB.max",
];

fn v2_tree(f: &Fake) {
    f.put(
        "sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory hugetlb pids\n",
    );
    f.put("sys/fs/cgroup/cgroup.subtree_control", "memory pids\n");
    f.put(
        "sys/fs/cgroup/sampan/cgroup.controllers",
        "cpuset cpu io memory hugetlb pids\n",
    );
    f.put("sys/fs/cgroup/sampan/cgroup.subtree_control", "");
    f.files("sys/fs/cgroup/sampan/c1", V2_FILES);
    f.put("sys/fs/cgroup/sampan/c1/cpu.max", "max 100000\n");
}

const FULL: &str = r#"{
    "memory": {"limit": 67108864, "swap": 134217728, "reservation": 33554432, "swappiness": 10},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
    "pids": {"limit": 100},
    "blockIO": {"weight": 500,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
    "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]
}"#;

#[test]
fn pure_v2_create_writes_converted_values() {
    let f = Fake::new("v2");
    v2_tree(&f);
    let cg = Cgroup::open_with(&f.host(V2_MOUNTINFO, V2_CGROUP), Some("/sampan/c1"), "c1").unwrap();
    assert!(cg.is_v2());
    assert_eq!(
        cg.paths(),
        vec![("unified".to_string(), f.p("sys/fs/cgroup/sampan/c1"))]
    );
    let mut r = res(FULL);
    r.set_unified(Some(
        [("memory.high".to_string(), "60000000".to_string())].into(),
    ));
    cg.create(Some(&r)).unwrap();
    let c = "sys/fs/cgroup/sampan/c1";
    assert_eq!(f.get(&format!("{c}/memory.max")), "67108864");
    assert_eq!(f.get(&format!("{c}/memory.swap.max")), "67108864"); // 128 MiB total - 64 MiB
    assert_eq!(f.get(&format!("{c}/memory.low")), "33554432");
    assert_eq!(f.get(&format!("{c}/memory.high")), "60000000");
    assert_eq!(f.get(&format!("{c}/cpu.weight")), "59"); // shares 512
    assert_eq!(f.get(&format!("{c}/cpu.max")), "50000 100000");
    assert_eq!(f.get(&format!("{c}/cpuset.cpus")), "0-1");
    assert_eq!(f.get(&format!("{c}/cpuset.mems")), "0");
    assert_eq!(f.get(&format!("{c}/pids.max")), "100");
    // io.weight: the last write was the per-device one (200 → 1+190*9999/990 = 1920).
    assert_eq!(f.get(&format!("{c}/io.weight")), "8:0 1920");
    assert_eq!(f.get(&format!("{c}/io.max")), "8:0 rbps=1048576");
    assert_eq!(f.get(&format!("{c}/hugetlb.2MB.max")), "4194304");
    // Controllers: the root had memory and pids on already; the rest is added. The parent
    // gets everything it has available.
    assert_eq!(
        f.get("sys/fs/cgroup/cgroup.subtree_control"),
        "+cpuset +cpu +io +hugetlb"
    );
    assert_eq!(
        f.get("sys/fs/cgroup/sampan/cgroup.subtree_control"),
        "+cpuset +cpu +io +memory +hugetlb +pids"
    );
    // The io.weight value itself (no device): 500 → 4950.
    let only_weight = res(r#"{"blockIO": {"weight": 500}}"#);
    cg.update(&only_weight).unwrap();
    assert_eq!(f.get(&format!("{c}/io.weight")), "4950");
}

#[test]
fn pure_v2_untouched_when_not_asked_and_update_keeps_quota() {
    let f = Fake::new("v2u");
    v2_tree(&f);
    let c = "sys/fs/cgroup/sampan/c1";
    f.put(&format!("{c}/cpu.max"), "20000 100000\n");
    f.put(&format!("{c}/memory.max"), "untouched");
    let cg = Cgroup::open_with(&f.host(V2_MOUNTINFO, V2_CGROUP), Some("/sampan/c1"), "x").unwrap();
    // Only a period: the quota already there is kept, memory is not touched.
    cg.update(&res(r#"{"cpu": {"period": 50000}}"#)).unwrap();
    assert_eq!(f.get(&format!("{c}/cpu.max")), "20000 50000");
    assert_eq!(f.get(&format!("{c}/memory.max")), "untouched");
    // Negative quota: max; limit -1: max and swap max too; pids 0: max.
    cg.update(&res(
        r#"{"cpu": {"quota": -1}, "memory": {"limit": -1}, "pids": {"limit": 0}}"#,
    ))
    .unwrap();
    assert_eq!(f.get(&format!("{c}/cpu.max")), "max");
    assert_eq!(f.get(&format!("{c}/memory.max")), "max");
    assert_eq!(f.get(&format!("{c}/memory.swap.max")), "max");
    assert_eq!(f.get(&format!("{c}/pids.max")), "max");
}

#[test]
fn pure_v2_bfq_weight_is_not_converted() {
    let f = Fake::new("v2bfq");
    v2_tree(&f);
    let c = "sys/fs/cgroup/sampan/c1";
    f.put(&format!("{c}/io.bfq.weight"), "100");
    let cg = Cgroup::open_with(&f.host(V2_MOUNTINFO, V2_CGROUP), Some("/sampan/c1"), "x").unwrap();
    cg.update(&res(r#"{"blockIO": {"weight": 500}}"#)).unwrap();
    assert_eq!(f.get(&format!("{c}/io.bfq.weight")), "500");
    assert_eq!(f.get(&format!("{c}/io.weight")), "");
}

#[test]
fn pure_v2_missing_files_are_errors_naming_them() {
    let f = Fake::new("v2miss");
    v2_tree(&f);
    let c = "sys/fs/cgroup/sampan/c1";
    std::fs::remove_file(f.p(&format!("{c}/pids.max"))).unwrap();
    std::fs::remove_file(f.p(&format!("{c}/memory.swap.max"))).unwrap();
    let cg = Cgroup::open_with(&f.host(V2_MOUNTINFO, V2_CGROUP), Some("/sampan/c1"), "x").unwrap();
    let e = cg.update(&res(r#"{"pids": {"limit": 5}}"#)).unwrap_err();
    assert_eq!(
        e.path.as_deref(),
        Some(f.p(&format!("{c}/pids.max")).as_path())
    );
    assert_eq!(e.errno, Some(libc::ENOENT));
    assert!(e.to_string().contains("pids.max"), "{e}");
    // No swap accounting: a real swap limit is an error naming memory.swap.max ...
    let e = cg
        .update(&res(r#"{"memory": {"limit": 1000000, "swap": 3000000}}"#))
        .unwrap_err();
    assert!(e.to_string().contains("memory.swap.max"), "{e}");
    // ... while swap == limit (no swap) and -1 (unlimited) are skipped, as Docker does.
    cg.update(&res(r#"{"memory": {"limit": 1000000, "swap": 1000000}}"#))
        .unwrap();
    cg.update(&res(r#"{"memory": {"limit": 2000000, "swap": -1}}"#))
        .unwrap();
    assert_eq!(f.get(&format!("{c}/memory.max")), "2000000");
    // Realtime has no v2 controller.
    assert!(cg
        .update(&res(r#"{"cpu": {"realtimeRuntime": 1000}}"#))
        .is_err());
}

#[test]
fn pure_v2_needed_controller_unavailable_is_an_error() {
    let f = Fake::new("v2ctl");
    v2_tree(&f);
    f.put(
        "sys/fs/cgroup/sampan/cgroup.controllers",
        "cpu memory pids\n",
    );
    let cg = Cgroup::open_with(&f.host(V2_MOUNTINFO, V2_CGROUP), Some("/sampan/c1"), "x").unwrap();
    let e = cg
        .create(Some(&res(r#"{"blockIO": {"weight": 100}}"#)))
        .unwrap_err();
    assert!(e.to_string().contains("io"), "{e}");
    assert!(e.to_string().contains("subtree_control"), "{e}");
    // Nothing needed from io: fine.
    cg.create(Some(&res(r#"{"pids": {"limit": 10}}"#))).unwrap();
}

#[test]
fn pure_v2_path_rules() {
    let f = Fake::new("v2path");
    v2_tree(&f);
    let h = f.host(V2_MOUNTINFO, V2_CGROUP);
    let dir =
        |p: Option<&str>, id: &str| Cgroup::open_with(&h, p, id).unwrap().paths()[0].1.clone();
    // Absolute: from the hierarchy root.
    assert_eq!(dir(Some("/a/b"), "id"), f.p("sys/fs/cgroup/a/b"));
    // Relative: under our own cgroup.
    assert_eq!(
        dir(Some("a/b"), "id"),
        f.p("sys/fs/cgroup/user.slice/session-1.scope/a/b")
    );
    // None (or empty): the id, relative.
    assert_eq!(
        dir(None, "ctr"),
        f.p("sys/fs/cgroup/user.slice/session-1.scope/ctr")
    );
    assert_eq!(
        dir(Some(""), "ctr"),
        f.p("sys/fs/cgroup/user.slice/session-1.scope/ctr")
    );
    // Cleaning, and refusing escapes and the root itself.
    assert_eq!(dir(Some("//a/./b/"), "id"), f.p("sys/fs/cgroup/a/b"));
    assert!(Cgroup::open_with(&h, Some("/a/../../etc"), "id").is_err());
    assert!(Cgroup::open_with(&h, Some("/"), "id").is_err());
    assert!(Cgroup::open_with(&h, None, "").is_err());
}

#[test]
fn pure_v2_freeze_kill_stats() {
    let f = Fake::new("v2frz");
    v2_tree(&f);
    let c = "sys/fs/cgroup/sampan/c1";
    f.put(&format!("{c}/cgroup.events"), "populated 1\nfrozen 1\n");
    f.put(
        &format!("{c}/memory.events"),
        "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n",
    );
    f.put(&format!("{c}/memory.current"), "1234\n");
    f.put(&format!("{c}/memory.peak"), "5678\n");
    f.put(&format!("{c}/memory.max"), "max\n");
    f.put(
        &format!("{c}/memory.stat"),
        "anon 100\nfile 200\nkernel 5\n",
    );
    f.put(
        &format!("{c}/cpu.stat"),
        "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 3\nnr_throttled 2\nthrottled_usec 7\n",
    );
    f.put(&format!("{c}/pids.current"), "3\n");
    f.put(&format!("{c}/pids.max"), "64\n");
    f.put(
        &format!("{c}/io.stat"),
        "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=5 wbytes=5 rios=1 wios=1\n",
    );
    f.put(&format!("{c}/cgroup.procs"), "10\n11\n");
    f.put(&format!("{c}/sub/cgroup.procs"), "12\n");
    let cg = Cgroup::open_with(&f.host(V2_MOUNTINFO, V2_CGROUP), Some("/sampan/c1"), "x").unwrap();
    cg.freeze().unwrap();
    assert_eq!(f.get(&format!("{c}/cgroup.freeze")), "1");
    assert!(cg.frozen().unwrap());
    cg.thaw().unwrap();
    assert_eq!(f.get(&format!("{c}/cgroup.freeze")), "0");
    assert_eq!(cg.oom_kills().unwrap(), 1);
    assert_eq!(cg.pids().unwrap(), vec![10, 11, 12]);
    cg.kill_all(libc::SIGKILL).unwrap(); // cgroup.kill exists: written, no signals sent
    assert_eq!(f.get(&format!("{c}/cgroup.kill")), "1");
    let s = cg.stats().unwrap();
    assert_eq!(s.memory.usage, 1234);
    assert_eq!(s.memory.max_usage, 5678);
    assert_eq!(s.memory.limit, None);
    assert_eq!(
        (s.memory.rss, s.memory.cache, s.memory.oom_kill),
        (100, 200, 1)
    );
    assert_eq!(s.cpu.usage_total_ns, 10_000);
    assert_eq!((s.cpu.user_ns, s.cpu.system_ns), (6_000, 4_000));
    assert_eq!(
        (
            s.cpu.nr_periods,
            s.cpu.nr_throttled,
            s.cpu.throttled_time_ns
        ),
        (3, 2, 7_000)
    );
    assert_eq!((s.pids.current, s.pids.limit), (3, Some(64)));
    assert_eq!(
        (
            s.blkio.read_bytes,
            s.blkio.write_bytes,
            s.blkio.read_ios,
            s.blkio.write_ios
        ),
        (15, 25, 2, 3)
    );
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"oom_kill\":1"), "{json}");
}

#[test]
fn pure_v2_destroy_removes_children_first() {
    let f = Fake::new("v2rm");
    v2_tree(&f);
    std::fs::create_dir_all(f.p("sys/fs/cgroup/sampan/c2/a/b")).unwrap();
    std::fs::create_dir_all(f.p("sys/fs/cgroup/sampan/c2/c")).unwrap();
    let cg = Cgroup::open_with(&f.host(V2_MOUNTINFO, V2_CGROUP), Some("/sampan/c2"), "x").unwrap();
    cg.destroy().unwrap();
    assert!(!f.p("sys/fs/cgroup/sampan/c2").exists());
    cg.destroy().unwrap(); // already gone: fine
    assert!(f.p("sys/fs/cgroup/sampan").exists());
}

#[test]
fn conversions() {
    assert_eq!(v2::shares_to_weight(0), 0);
    assert_eq!(v2::shares_to_weight(2), 1);
    assert_eq!(v2::shares_to_weight(1024), 100);
    assert_eq!(v2::shares_to_weight(262_144), 10_000);
    assert_eq!(v2::shares_to_weight(1_000_000), 10_000);
    assert_eq!(v2::shares_to_weight(512), 59);
    assert_eq!(v2::shares_to_weight(2048), 174);
    // Monotonic over the whole range.
    let mut last = 0;
    for s in 2..=262_144u64 {
        let w = v2::shares_to_weight(s);
        assert!(w >= last && (1..=10_000).contains(&w), "{s} -> {w}");
        last = w;
    }
    assert_eq!(v2::blkio_to_io_weight(0), 0);
    assert_eq!(v2::blkio_to_io_weight(10), 1);
    assert_eq!(v2::blkio_to_io_weight(1000), 10_000);
    assert_eq!(v2::blkio_to_io_weight(500), 4950);
    assert_eq!(v2::swap_to_v2(0, 100).unwrap(), None);
    assert_eq!(v2::swap_to_v2(0, -1).unwrap(), Some(-1));
    assert_eq!(v2::swap_to_v2(-1, 100).unwrap(), Some(-1));
    assert_eq!(v2::swap_to_v2(300, 100).unwrap(), Some(200));
    assert_eq!(v2::swap_to_v2(100, 100).unwrap(), Some(0));
    assert!(v2::swap_to_v2(50, 100).is_err());
    assert!(v2::swap_to_v2(300, 0).is_err());
    // v1 memsw ordering: raise memsw first when it stays above the current limit.
    assert!(v1::memsw_first(100, 200));
    assert!(v1::memsw_first(100, -1));
    assert!(!v1::memsw_first(300, 200));
}

// ---------------------------------------------------------------------------------------------
// Pure v1

const V1_MOUNTINFO: &str = "\
25 20 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
27 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
28 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
29 25 0:27 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpuset
30 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,pids
31 25 0:29 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,devices
32 25 0:30 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,freezer
33 25 0:31 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,blkio
34 25 0:32 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,net_cls,net_prio
";
const V1_CGROUP: &str = "\
10:net_cls,net_prio:/
9:blkio:/system.slice/engine.service
8:freezer:/
7:devices:/system.slice/engine.service
6:pids:/system.slice/engine.service
5:cpuset:/
4:memory:/system.slice/engine.service
3:cpu,cpuacct:/system.slice/engine.service
2:perf_event:/
1:name=systemd:/system.slice/engine.service
";

#[test]
fn pure_v1_layout_and_path_rules() {
    let f = Fake::new("v1path");
    let h = f.host(V1_MOUNTINFO, V1_CGROUP);
    let cg = Cgroup::open_with(&h, None, "c1").unwrap();
    assert!(!cg.is_v2());
    let paths: Vec<(String, PathBuf)> = cg.paths();
    let expect = |name: &str, rel: &str| (name.to_string(), f.p(rel));
    assert_eq!(
        paths,
        vec![
            expect("net_cls,net_prio", "sys/fs/cgroup/net_cls,net_prio/c1"),
            expect(
                "blkio",
                "sys/fs/cgroup/blkio/system.slice/engine.service/c1"
            ),
            expect("freezer", "sys/fs/cgroup/freezer/c1"),
            expect(
                "devices",
                "sys/fs/cgroup/devices/system.slice/engine.service/c1"
            ),
            expect("pids", "sys/fs/cgroup/pids/system.slice/engine.service/c1"),
            expect("cpuset", "sys/fs/cgroup/cpuset/c1"),
            expect(
                "memory",
                "sys/fs/cgroup/memory/system.slice/engine.service/c1"
            ),
            expect(
                "cpu,cpuacct",
                "sys/fs/cgroup/cpu,cpuacct/system.slice/engine.service/c1"
            ),
            // perf_event is in /proc/self/cgroup but not mounted: skipped.
            expect(
                "name=systemd",
                "sys/fs/cgroup/systemd/system.slice/engine.service/c1"
            ),
        ]
    );
    let abs = Cgroup::open_with(&h, Some("/sampan/c1"), "c1").unwrap();
    assert!(abs
        .paths()
        .iter()
        .all(|(_, p)| p.ends_with("sampan/c1") && !p.to_string_lossy().contains("engine")));
}

#[test]
fn pure_v1_create_and_apply() {
    let f = Fake::new("v1");
    let h = f.host(V1_MOUNTINFO, V1_CGROUP);
    let m = "sys/fs/cgroup/memory/sampan/c1";
    f.files(
        m,
        &[
            "memory.memsw.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.swappiness",
            "memory.oom_control",
        ],
    );
    f.put(
        &format!("{m}/memory.limit_in_bytes"),
        "9223372036854771712\n",
    );
    let cpu = "sys/fs/cgroup/cpu,cpuacct/sampan/c1";
    f.files(cpu, &["cpu.cfs_quota_us", "cpu.cfs_period_us"]);
    f.put(&format!("{cpu}/cpu.shares"), "1024");
    // The kernel would read back what was written; the fake does the same.
    f.put("sys/fs/cgroup/cpuset/cpuset.cpus", "0-3\n");
    f.put("sys/fs/cgroup/cpuset/cpuset.mems", "0\n");
    f.files(
        "sys/fs/cgroup/cpuset/sampan",
        &["cpuset.cpus", "cpuset.mems"],
    );
    f.files(
        "sys/fs/cgroup/cpuset/sampan/c1",
        &["cpuset.cpus", "cpuset.mems"],
    );
    f.files("sys/fs/cgroup/pids/sampan/c1", &["pids.max"]);
    f.files(
        "sys/fs/cgroup/blkio/sampan/c1",
        &[
            "blkio.bfq.weight",
            "blkio.bfq.weight_device",
            "blkio.throttle.read_bps_device",
        ],
    );
    f.files(
        "sys/fs/cgroup/devices/sampan/c1",
        &["devices.allow", "devices.deny"],
    );
    let cg = Cgroup::open_with(&h, Some("/sampan/c1"), "c1").unwrap();
    let r = res(r#"{
        "memory": {"limit": 67108864, "swap": 134217728, "reservation": 33554432,
                   "swappiness": 10, "disableOOMKiller": true, "kernel": 1000},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "1", "mems": "0"},
        "pids": {"limit": -1},
        "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
        "devices": [{"allow": false, "access": "rwm"},
                    {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "m"}]
    }"#);
    cg.create(Some(&r)).unwrap();
    for (_, dir) in cg.paths() {
        assert!(dir.is_dir(), "{dir:?}");
    }
    assert_eq!(f.get(&format!("{m}/memory.limit_in_bytes")), "67108864");
    assert_eq!(
        f.get(&format!("{m}/memory.memsw.limit_in_bytes")),
        "134217728"
    );
    assert_eq!(
        f.get(&format!("{m}/memory.soft_limit_in_bytes")),
        "33554432"
    );
    assert_eq!(f.get(&format!("{m}/memory.swappiness")), "10");
    assert_eq!(f.get(&format!("{m}/memory.oom_control")), "1");
    assert_eq!(f.get(&format!("{cpu}/cpu.shares")), "512");
    assert_eq!(f.get(&format!("{cpu}/cpu.cfs_quota_us")), "50000");
    assert_eq!(f.get(&format!("{cpu}/cpu.cfs_period_us")), "100000");
    // cpuset: the intermediate directory got the parent's sets, the container the spec's.
    assert_eq!(f.get("sys/fs/cgroup/cpuset/sampan/cpuset.cpus"), "0-3");
    assert_eq!(f.get("sys/fs/cgroup/cpuset/sampan/cpuset.mems"), "0");
    assert_eq!(f.get("sys/fs/cgroup/cpuset/sampan/c1/cpuset.cpus"), "1");
    assert_eq!(f.get("sys/fs/cgroup/pids/sampan/c1/pids.max"), "max");
    let b = "sys/fs/cgroup/blkio/sampan/c1";
    assert_eq!(f.get(&format!("{b}/blkio.bfq.weight")), "500");
    assert_eq!(f.get(&format!("{b}/blkio.bfq.weight_device")), "8:0 200");
    assert_eq!(
        f.get(&format!("{b}/blkio.throttle.read_bps_device")),
        "8:0 1048576"
    );
    let d = "sys/fs/cgroup/devices/sampan/c1";
    assert_eq!(f.get(&format!("{d}/devices.allow")), "c 1:3 rwm");
    assert_eq!(f.get(&format!("{d}/devices.deny")), "c 1:3 m");
    // unified is v2 only.
    let mut u = LinuxResources::default();
    u.set_unified(Some([("memory.high".to_string(), "1".to_string())].into()));
    assert!(cg.update(&u).is_err());
    // Lowering below the current limit: limit first, then memsw.
    cg.update(&res(r#"{"memory": {"limit": 1048576, "swap": 2097152}}"#))
        .unwrap();
    assert_eq!(
        f.get(&format!("{m}/memory.memsw.limit_in_bytes")),
        "2097152"
    );
    // Swap below limit is refused before anything is written.
    assert!(cg
        .update(&res(r#"{"memory": {"limit": 4194304, "swap": 2097152}}"#))
        .is_err());
    assert_eq!(f.get(&format!("{m}/memory.limit_in_bytes")), "1048576");
    // No memsw files: swap == limit and -1 are skipped, anything else is an error.
    std::fs::remove_file(f.p(&format!("{m}/memory.memsw.limit_in_bytes"))).unwrap();
    cg.update(&res(r#"{"memory": {"limit": 4194304, "swap": 4194304}}"#))
        .unwrap();
    cg.update(&res(r#"{"memory": {"limit": 4194304, "swap": -1}}"#))
        .unwrap();
    let e = cg
        .update(&res(r#"{"memory": {"limit": 4194304, "swap": 8388608}}"#))
        .unwrap_err();
    assert!(e.to_string().contains("memory.memsw.limit_in_bytes"), "{e}");
    // A missing v1 file for a resource asked for names the file.
    let e = cg
        .update(&res(r#"{"cpu": {"realtimeRuntime": 5}}"#))
        .unwrap_err();
    assert!(e.to_string().contains("cpu.rt_runtime_us"), "{e}");
    // Hugetlb is not mounted in this layout: a clear error.
    let e = cg
        .update(&res(
            r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}"#,
        ))
        .unwrap_err();
    assert!(e.to_string().contains("hugetlb"), "{e}");
}

#[test]
fn v1_device_writes_in_order() {
    let list: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_str(
        r#"[{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "b", "major": 8, "access": "r"},
            {"allow": false, "type": "c", "major": 136, "access": "mw"},
            {"allow": true, "type": "u", "major": 5, "minor": 0},
            {"allow": true, "type": "p", "major": 0, "minor": 0, "access": "rwm"},
            {"allow": true, "access": "rw"}]"#,
    )
    .unwrap();
    let w = devices::v1_writes(&list).unwrap();
    let w: Vec<(&str, &str)> = w.iter().map(|(f, l)| (*f, l.as_str())).collect();
    assert_eq!(
        w,
        vec![
            ("devices.deny", "a"),
            ("devices.allow", "c 1:3 rwm"),
            ("devices.allow", "b 8:* r"),
            ("devices.deny", "c 136:* wm"),
            ("devices.allow", "c 5:0 rwm"),
            ("devices.allow", "a *:* rw"),
        ]
    );
    let bad: Vec<oci_spec::runtime::LinuxDeviceCgroup> =
        serde_json::from_str(r#"[{"allow": true, "access": "rx"}]"#).unwrap();
    assert!(devices::v1_writes(&bad).is_err());
}

// ---------------------------------------------------------------------------------------------
// Hybrid (this VM's layout)

const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/1e43a88bcf1d66743f573a6c88c2b2ea
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

#[test]
fn hybrid_detection_and_placement() {
    let f = Fake::new("hyb");
    f.put("sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
    f.put("sys/fs/cgroup/unified/cgroup.subtree_control", "");
    f.files(
        "sys/fs/cgroup/unified/c1",
        &["hugetlb.2MB.max", "cgroup.procs"],
    );
    f.put("sys/fs/cgroup/cpuset/cpuset.cpus", "0-1\n");
    f.put("sys/fs/cgroup/cpuset/cpuset.mems", "0\n");
    f.files("sys/fs/cgroup/cpuset/c1", &["cpuset.cpus", "cpuset.mems"]);
    let h = f.host(HYBRID_MOUNTINFO, HYBRID_CGROUP);
    let cg = Cgroup::open_with(&h, None, "c1").unwrap();
    assert!(!cg.is_v2());
    let names: Vec<String> = cg.paths().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "name=systemd",
            "pids",
            "blkio",
            "freezer",
            "devices",
            "memory",
            "cpuset",
            "cpuacct",
            "cpu",
            "unified"
        ]
    );
    let dir = |n: &str| cg.paths().into_iter().find(|(x, _)| x == n).unwrap().1;
    assert_eq!(
        dir("memory"),
        f.p("sys/fs/cgroup/memory/process_api/1e43a88bcf1d66743f573a6c88c2b2ea/c1")
    );
    assert_eq!(dir("cpu"), f.p("sys/fs/cgroup/cpu/c1"));
    assert_eq!(dir("unified"), f.p("sys/fs/cgroup/unified/c1"));
    assert!(matches!(cg.place("hugetlb"), Some(Place::V2(_))));
    assert!(matches!(cg.place("memory"), Some(Place::V1(_))));
    assert!(cg.place("io").is_none());
    assert!(cg.v2_dir_fd().is_none()); // not pure v2
    cg.create(Some(&res(
        r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}]}"#,
    )))
    .unwrap();
    assert_eq!(
        f.get("sys/fs/cgroup/unified/cgroup.subtree_control"),
        "+hugetlb"
    );
    assert_eq!(f.get("sys/fs/cgroup/unified/c1/hugetlb.2MB.max"), "2097152");
    assert_eq!(f.get("sys/fs/cgroup/cpuset/c1/cpuset.cpus"), "0-1");
    assert_eq!(f.get("sys/fs/cgroup/cpuset/c1/cpuset.mems"), "0");
}

#[test]
fn mountinfo_and_proc_cgroup_parsing() {
    let mi = "50 31 0:40 /sub /mnt/cg\\040x rw - cgroup2 cgroup2 rw\n\
              51 31 0:41 / /other rw shared:1 master:2 - cgroup cgroup rw,memory\n\
              52 31 0:42 / /x rw - ext4 /dev/sda rw\n";
    let m = layout::parse_mountinfo(mi);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].point, "/mnt/cg x");
    assert_eq!(m[0].root, "/sub");
    assert!(m[0].v2);
    assert_eq!(m[1].superopts, vec!["rw", "memory"]);
    let c = layout::parse_proc_cgroup("3:cpu,cpuacct:/a:b\n0::/\n");
    assert_eq!(c[0].controllers, vec!["cpu", "cpuacct"]);
    assert_eq!(c[0].path, "/a:b");
    assert!(c[1].controllers.is_empty());
    assert_eq!(layout::under("/", "/a/b"), Some("a/b"));
    assert_eq!(layout::under("/a", "/a/b"), Some("b"));
    assert_eq!(layout::under("/a", "/a"), Some(""));
    assert_eq!(layout::under("/a", "/ab"), None);
}

#[test]
fn v2_mount_root_inside_a_namespace() {
    // A cgroup2 mount showing only /ctr of the hierarchy (cgroup namespace / bind mount).
    let f = Fake::new("nsroot");
    f.put("sys/fs/cgroup/cgroup.controllers", "memory pids\n");
    let h = f.host(
        "30 1 0:26 /ctr /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        "0::/ctr/init\n",
    );
    let cg = Cgroup::open_with(&h, None, "c9").unwrap();
    assert_eq!(cg.paths()[0].1, f.p("sys/fs/cgroup/init/c9"));
    let cg = Cgroup::open_with(&h, Some("/ctr/x"), "c9").unwrap();
    assert_eq!(cg.paths()[0].1, f.p("sys/fs/cgroup/x"));
    assert!(Cgroup::open_with(&h, Some("/elsewhere"), "c9").is_err());
    // No cgroup filesystem at all.
    let none = f.host("26 1 254:1 / / rw - ext4 /dev/vda1 rw\n", "0::/\n");
    assert!(Cgroup::open_with(&none, None, "c").is_err());
}

// ---------------------------------------------------------------------------------------------
// Device eBPF program

fn rule(
    allow: bool,
    typ: Option<u32>,
    major: Option<u32>,
    minor: Option<u32>,
    access: u32,
) -> Rule {
    Rule {
        allow,
        typ,
        major,
        minor,
        access,
    }
}

/// Runs a device program the way the kernel would, for ctx (type, access, major, minor).
/// Also checks every jump stays inside the program.
fn run(prog: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
    let ctx = [(access << 16) | typ, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    let regs = |i: &Insn| {
        if cfg!(target_endian = "little") {
            ((i.regs & 0xf) as usize, (i.regs >> 4) as usize)
        } else {
            ((i.regs >> 4) as usize, (i.regs & 0xf) as usize)
        }
    };
    for _ in 0..10_000 {
        let i = prog[pc];
        let (dst, src) = regs(&i);
        let imm = i.imm as i64 as u64;
        let jump = |cond: bool| if cond { i.off as isize } else { 0 };
        let mut next = 1isize;
        match i.code {
            0x61 => {
                assert_eq!(src, 1);
                r[dst] = ctx[i.off as usize / 4] as u64;
            }
            0x57 => r[dst] &= imm,
            0x77 => r[dst] >>= imm,
            0xb7 => r[dst] = imm,
            0x05 => next += i.off as isize,
            0x15 => next += jump(r[dst] == imm),
            0x45 => next += jump(r[dst] & imm != 0),
            0x55 => next += jump(r[dst] != imm),
            0x95 => return r[0],
            c => panic!("unexpected opcode {c:#x}"),
        }
        pc = (pc as isize + next) as usize;
        assert!(pc < prog.len(), "jump out of the program");
    }
    panic!("program did not terminate");
}

/// The intended semantics, straight from the rule list.
fn reference(rules: &[Rule], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
    let ok = [ACC_MKNOD, ACC_READ, ACC_WRITE]
        .into_iter()
        .filter(|b| access & b != 0)
        .all(|b| {
            rules
                .iter()
                .rev()
                .find(|r| r.covers(typ, major, minor, b))
                .is_some_and(|r| r.allow)
        });
    ok as u64
}

/// Every instruction must be reachable (the verifier refuses dead code) and end in exit.
fn all_reachable(prog: &[Insn]) -> bool {
    let mut seen = vec![false; prog.len()];
    let mut stack = vec![0usize];
    while let Some(pc) = stack.pop() {
        if pc >= prog.len() || seen[pc] {
            continue;
        }
        seen[pc] = true;
        let i = prog[pc];
        match i.code {
            0x95 => {}
            0x05 => stack.push((pc as isize + 1 + i.off as isize) as usize),
            0x15 | 0x45 | 0x55 => {
                stack.push(pc + 1);
                stack.push((pc as isize + 1 + i.off as isize) as usize);
            }
            _ => stack.push(pc + 1),
        }
    }
    seen.iter().all(|s| *s)
}

fn check_semantics(rules: &[Rule]) {
    let prog = devices::compile(rules);
    assert!(
        all_reachable(&prog),
        "unreachable code for {rules:?}: {prog:?}"
    );
    for typ in [DEV_BLOCK, DEV_CHAR] {
        for major in [1, 5, 8, 136] {
            for minor in [0, 3, 5, 9] {
                for access in 1..=7 {
                    assert_eq!(
                        run(&prog, typ, access, major, minor),
                        reference(rules, typ, access, major, minor),
                        "rules {rules:?} request type {typ} {major}:{minor} access {access}"
                    );
                }
            }
        }
    }
}

#[test]
fn device_program_bytes_for_sample_rules() {
    // deny all; allow c 1:3 rwm; allow c *:* m; deny c 1:5 w; allow b 8:* r
    let rules = [
        rule(false, None, None, None, 7),
        rule(true, Some(DEV_CHAR), Some(1), Some(3), 7),
        rule(true, Some(DEV_CHAR), None, None, ACC_MKNOD),
        rule(false, Some(DEV_CHAR), Some(1), Some(5), ACC_WRITE),
        rule(true, Some(DEV_BLOCK), Some(8), None, ACC_READ),
    ];
    let prog = devices::compile(&rules);
    // (code, dst, src, off, imm), worked out by hand from the layout described in compile().
    let expect: [(u8, u8, u8, i16, i32); 25] = [
        (0x61, 2, 1, 0, 0),      // r2 = ctx->access_type
        (0x57, 2, 0, 0, 0xffff), // r2 &= 0xffff (type)
        (0x61, 3, 1, 0, 0),      // r3 = ctx->access_type
        (0x77, 3, 0, 0, 16),     // r3 >>= 16 (access)
        (0x61, 4, 1, 4, 0),      // r4 = major
        (0x61, 5, 1, 8, 0),      // r5 = minor
        // allow b 8:* r
        (0x55, 2, 0, 3, 1),
        (0x55, 4, 0, 2, 8),
        (0x57, 3, 0, 0, 5),
        (0x15, 3, 0, 13, 0),
        // deny c 1:5 w
        (0x55, 2, 0, 3, 2),
        (0x55, 4, 0, 2, 1),
        (0x55, 5, 0, 1, 5),
        (0x45, 3, 0, 7, 4),
        // allow c *:* m
        (0x55, 2, 0, 2, 2),
        (0x57, 3, 0, 0, 6),
        (0x15, 3, 0, 6, 0),
        // allow c 1:3 rwm
        (0x55, 2, 0, 3, 2),
        (0x55, 4, 0, 2, 1),
        (0x55, 5, 0, 1, 3),
        (0x05, 0, 0, 2, 0),
        // default: deny
        (0xb7, 0, 0, 0, 0),
        (0x95, 0, 0, 0, 0),
        // allow
        (0xb7, 0, 0, 0, 1),
        (0x95, 0, 0, 0, 0),
    ];
    let mut want = Vec::new();
    for (code, dst, src, off, imm) in expect {
        want.push(code);
        want.push(if cfg!(target_endian = "little") {
            dst | (src << 4)
        } else {
            (dst << 4) | src
        });
        want.extend_from_slice(&off.to_ne_bytes());
        want.extend_from_slice(&imm.to_ne_bytes());
    }
    let got = devices::program_bytes(&prog);
    assert_eq!(got.len(), 25 * 8);
    if cfg!(target_endian = "little") {
        // Spot-check the raw encoding of two instructions.
        assert_eq!(&got[0..8], &[0x61, 0x12, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&got[9 * 8..10 * 8], &[0x15, 0x03, 13, 0, 0, 0, 0, 0]);
    }
    assert_eq!(got, want);
    check_semantics(&rules);
    assert_eq!(run(&prog, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), 1);
    assert_eq!(run(&prog, DEV_CHAR, ACC_WRITE, 1, 5), 0);
    assert_eq!(run(&prog, DEV_CHAR, ACC_MKNOD, 1, 5), 1);
    assert_eq!(run(&prog, DEV_BLOCK, ACC_READ, 8, 1), 1);
    assert_eq!(run(&prog, DEV_BLOCK, ACC_WRITE, 8, 1), 0);
}

#[test]
fn device_program_edge_cases() {
    // Nothing: deny all, two instructions.
    let p = devices::compile(&[]);
    assert_eq!(p.len(), 2);
    assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 0);
    // Allow all last: everything before it is dropped.
    let p = devices::compile(&[
        rule(false, Some(DEV_CHAR), Some(1), Some(3), 7),
        rule(true, None, None, None, 7),
    ]);
    assert_eq!(p.len(), 2);
    assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 1);
    // Allow all then deny some: default allow, deny block present.
    check_semantics(&[
        rule(true, None, None, None, 7),
        rule(false, Some(DEV_CHAR), Some(1), None, ACC_WRITE),
    ]);
    // Access granted piecewise by two rules adds up.
    let split = [
        rule(true, Some(DEV_CHAR), Some(1), Some(3), ACC_READ),
        rule(true, Some(DEV_CHAR), Some(1), Some(3), ACC_WRITE),
    ];
    check_semantics(&split);
    assert_eq!(
        run(
            &devices::compile(&split),
            DEV_CHAR,
            ACC_READ | ACC_WRITE,
            1,
            3
        ),
        1
    );
    // Pseudo-random lists against the reference.
    let mut seed = 0x2545_f491_u32;
    let mut next = |n: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed % n
    };
    for _ in 0..300 {
        let len = next(7) as usize;
        let rules: Vec<Rule> = (0..len)
            .map(|_| {
                let opt = |v: u32, pick: u32| (pick != 0).then_some(v);
                rule(
                    next(2) == 1,
                    opt([DEV_BLOCK, DEV_CHAR][next(2) as usize], next(3)),
                    opt([1, 5, 8][next(3) as usize], next(3)),
                    opt([0, 3, 5][next(3) as usize], next(2)),
                    1 + next(7),
                )
            })
            .collect();
        check_semantics(&rules);
    }
}

#[test]
fn device_rules_from_spec() {
    let list: Vec<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_str(
        r#"[{"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
            {"allow": true, "type": "p", "access": "rwm"},
            {"allow": true, "type": "b", "major": -1, "minor": 2}]"#,
    )
    .unwrap();
    let r = devices::rules_from_spec(&list).unwrap();
    assert_eq!(
        r,
        vec![
            rule(false, None, None, None, 7),
            rule(true, Some(DEV_CHAR), Some(1), Some(3), ACC_READ | ACC_WRITE),
            rule(true, Some(DEV_BLOCK), None, Some(2), 7),
        ]
    );
}
