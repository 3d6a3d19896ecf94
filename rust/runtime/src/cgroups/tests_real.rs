//! Tests on the real cgroupfs of the machine, as root. They create cgroups under unique names
//! and remove them (and kill their children) even when an assertion fails. Without root, or
//! without the cgroupfs they need, they print why and pass.
//!
//! Forked children run only async-signal-safe code (the test harness is multi-threaded).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::devices::{self, Rule, ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_CHAR};
use super::{Cgroup, Host};

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn has_v1() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
}

const UNIFIED: &str = "/sys/fs/cgroup/unified";

fn has_unified() -> bool {
    Path::new(UNIFIED).join("cgroup.procs").exists()
}

fn skip(why: &str) -> bool {
    eprintln!("skipped: {why}");
    true
}

fn unique(tag: &str) -> String {
    format!("sampan-test-{}-{tag}", std::process::id())
}

fn res(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("resources json")
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("read {}: {e}", p.as_ref().display()))
        .trim()
        .to_string()
}

/// A forked child held at a pipe until released, so it can be put in a cgroup first.
struct Child {
    pid: i32,
    go: i32,
}

impl Child {
    fn spawn(body: fn() -> !) -> Child {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid 2-int array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the child only calls async-signal-safe functions before _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut b = 0u8;
            // SAFETY: reading one byte into a local.
            unsafe {
                libc::close(fds[1]);
                libc::read(fds[0], &mut b as *mut u8 as *mut libc::c_void, 1);
            }
            body();
        }
        // SAFETY: closing our copy of the read end.
        unsafe { libc::close(fds[0]) };
        Child { pid, go: fds[1] }
    }

    fn release(&mut self) {
        if self.go >= 0 {
            // SAFETY: writing one byte from a local, then closing our own fd.
            unsafe {
                libc::write(self.go, b"x".as_ptr() as *const libc::c_void, 1);
                libc::close(self.go);
            }
            self.go = -1;
        }
    }

    /// Waits for the child; returns the raw wait status.
    fn wait(&mut self) -> i32 {
        self.release();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(r, self.pid, "waitpid");
        self.pid = -1;
        status
    }

    /// utime+stime in clock ticks, from /proc/PID/stat.
    fn cpu_ticks(&self) -> u64 {
        let s = read(format!("/proc/{}/stat", self.pid));
        let after = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(self.pid, &mut st, 0);
            }
        }
        if self.go >= 0 {
            // SAFETY: closing our own fd.
            unsafe { libc::close(self.go) };
        }
    }
}

fn busy() -> ! {
    loop {
        std::hint::spin_loop();
    }
}

fn idle() -> ! {
    loop {
        // SAFETY: pause is async-signal-safe.
        unsafe { libc::pause() };
    }
}

/// Allocates and touches 64 MiB, then exits 0 (if the OOM killer lets it).
fn hog() -> ! {
    let n = 64usize << 20;
    // SAFETY: anonymous private mapping; every touched byte lies inside it.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            n,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) as *mut u8;
        if p as *mut libc::c_void == libc::MAP_FAILED {
            libc::_exit(2);
        }
        for i in (0..n).step_by(4096) {
            std::ptr::write_volatile(p.add(i), 1);
        }
        libc::_exit(0)
    }
}

/// Opens device nodes; exit code bits: 1 = /dev/null rw opened, 2 = /dev/full rw refused with
/// EPERM, 4 = /dev/zero read opened, 8 = /dev/zero write refused with EPERM.
fn open_devices() -> ! {
    let try_open = |p: &std::ffi::CStr, flags: i32| -> i32 {
        // SAFETY: p is a valid C string; open/close are async-signal-safe.
        let fd = unsafe { libc::open(p.as_ptr(), flags) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        }
    };
    let mut code = 0;
    if try_open(c"/dev/null", libc::O_RDWR) == 0 {
        code |= 1;
    }
    if try_open(c"/dev/full", libc::O_RDWR) == libc::EPERM {
        code |= 2;
    }
    if try_open(c"/dev/zero", libc::O_RDONLY) == 0 {
        code |= 4;
    }
    if try_open(c"/dev/zero", libc::O_WRONLY) == libc::EPERM {
        code |= 8;
    }
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(code) }
}

fn exited(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

fn signaled(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

/// Destroys the cgroup (and optional extra directories) when dropped, after the children.
struct Cleanup {
    cg: Cgroup,
    extra: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.cg.thaw();
        let _ = self.cg.kill_all(libc::SIGKILL);
        let _ = self.cg.destroy();
        for d in &self.extra {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Major:minor of some block device, for throttle rules.
fn a_block_device() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort_by_key(|n| n.starts_with("loop") || n.starts_with("zram"));
    names.first().map(|n| read(format!("/sys/block/{n}/dev")))
}

fn own_cgroup(ctrl: &str) -> String {
    read("/proc/self/cgroup")
        .lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, c, p) = (it.next()?, it.next()?, it.next()?);
            c.split(',').any(|x| x == ctrl).then(|| p.to_string())
        })
        .unwrap_or_else(|| "/".to_string())
}

#[test]
fn real_hybrid_lifecycle() {
    if !root() && skip("needs root") || !has_v1() && skip("no cgroup v1 memory hierarchy") {
        return;
    }
    let id = unique("life");
    let cg = Cgroup::open(None, &id).unwrap();
    assert!(!cg.is_v2());
    let paths = cg.paths();
    let dir = |n: &str| paths.iter().find(|(x, _)| x == n).map(|(_, d)| d.clone());
    let mem = dir("memory").unwrap();
    // Relative (None): under our own memory cgroup.
    assert_eq!(
        mem,
        PathBuf::from(format!("/sys/fs/cgroup/memory{}", own_cgroup("memory")).replace("//", "/"))
            .join(&id)
    );
    let guard = Cleanup {
        cg: cg.clone(),
        extra: vec![],
    };
    let dev = a_block_device().unwrap_or_else(|| "7:0".to_string());
    let (major, minor) = dev.split_once(':').unwrap();
    let hugetlb_on_unified = dir("unified").is_some()
        && read(format!("{UNIFIED}/cgroup.controllers")).contains("hugetlb");
    // Without an I/O scheduler that weighs (none on virtio disks here) the kernel has no weight
    // file: the engine drops the weight as dockerd does (resources.blkio_weight_supported).
    let blkio_root = dir("blkio").unwrap();
    let weight_file = ["blkio.weight", "blkio.bfq.weight"]
        .into_iter()
        .find(|f| blkio_root.parent().unwrap().join(f).exists());
    let weight = if weight_file.is_some() {
        r#""weight": 300,"#
    } else {
        ""
    };
    let mut spec = format!(
        r#"{{
        "memory": {{"limit": 67108864, "reservation": 33554432, "swap": 100663296, "swappiness": 10}},
        "cpu": {{"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}},
        "pids": {{"limit": 32}},
        "blockIO": {{{weight}
                    "throttleReadBpsDevice": [{{"major": {major}, "minor": {minor}, "rate": 10485760}}]}},
        "devices": [{{"allow": false, "access": "rwm"}},
                    {{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}},
                    {{"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}}]"#
    );
    if hugetlb_on_unified {
        spec.push_str(r#", "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]"#);
    }
    spec.push('}');
    cg.create(Some(&res(&spec))).unwrap();

    // Read every value back from the kernel.
    assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read(mem.join("memory.soft_limit_in_bytes")), "33554432");
    if mem.join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(read(mem.join("memory.memsw.limit_in_bytes")), "100663296");
    }
    assert_eq!(read(mem.join("memory.swappiness")), "10");
    let cpu = dir("cpu").or_else(|| dir("cpu,cpuacct")).unwrap();
    assert_eq!(read(cpu.join("cpu.shares")), "512");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
    let cpuset = dir("cpuset").unwrap();
    assert_eq!(read(cpuset.join("cpuset.cpus")), "0");
    assert_eq!(read(cpuset.join("cpuset.mems")), "0");
    assert_eq!(read(dir("pids").unwrap().join("pids.max")), "32");
    let blkio = dir("blkio").unwrap();
    if let Some(f) = weight_file {
        assert!(read(blkio.join(f)).contains("300"));
    }
    assert_eq!(
        read(blkio.join("blkio.throttle.read_bps_device")),
        format!("{dev} 10485760")
    );
    assert_eq!(
        read(dir("devices").unwrap().join("devices.list")),
        "c 1:3 rwm\nc 1:5 r"
    );
    if hugetlb_on_unified {
        let u = dir("unified").unwrap();
        assert_eq!(read(u.join("hugetlb.2MB.max")), "4194304");
    }

    // Devices are enforced: /dev/null yes, /dev/full no, /dev/zero read-only.
    let mut c = Child::spawn(open_devices);
    cg.add_task(c.pid).unwrap();
    assert_eq!(exited(c.wait()), Some(1 | 2 | 4 | 8));

    // A process joins every hierarchy (the unified one too), shows in pids() and the stats.
    let mut c = Child::spawn(busy);
    cg.add_task(c.pid).unwrap();
    c.release();
    let own = read(format!("/proc/{}/cgroup", c.pid));
    for line in own.lines() {
        assert!(line.ends_with(&id), "{line} not in {id}");
    }
    assert_eq!(cg.pids().unwrap(), vec![c.pid]);
    std::thread::sleep(Duration::from_millis(300));
    let s = cg.stats().unwrap();
    assert_eq!(s.pids.current, 1);
    assert_eq!(s.pids.limit, Some(32));
    assert_eq!(s.memory.limit, Some(67108864));
    assert!(s.memory.usage > 0, "{s:?}");
    assert!(s.cpu.usage_total_ns > 0, "{s:?}");
    assert!(s.cpu.nr_periods > 0, "{s:?}");
    eprintln!("stats: {}", serde_json::to_string(&s).unwrap());

    // Update: lower cpu shares and pids; memory untouched.
    cg.update(&res(r#"{"cpu": {"shares": 256}, "pids": {"limit": 0}}"#))
        .unwrap();
    assert_eq!(read(cpu.join("cpu.shares")), "256");
    assert_eq!(read(dir("pids").unwrap().join("pids.max")), "max");
    assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");

    cg.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(signaled(c.wait()), Some(libc::SIGKILL));
    assert!(cg.pids().unwrap().is_empty());

    cg.destroy().unwrap();
    for (n, d) in cg.paths() {
        assert!(!d.exists(), "{n}: {} still there", d.display());
    }
    drop(guard);
}

#[test]
fn real_freeze_thaw() {
    if !root() && skip("needs root") || !has_v1() && skip("no cgroup v1") {
        return;
    }
    let id = unique("freeze");
    let cg = Cgroup::open(Some(&format!("/sampan-test/{id}")), &id).unwrap();
    let _guard = Cleanup {
        cg: cg.clone(),
        extra: cg
            .paths()
            .iter()
            .filter_map(|(_, d)| d.parent().map(Path::to_path_buf))
            .collect(),
    };
    // Absolute: from each hierarchy's root.
    assert!(cg.paths().iter().any(|(n, d)| n == "memory"
        && d == Path::new(&format!("/sys/fs/cgroup/memory/sampan-test/{id}"))));
    cg.create(None).unwrap();
    let mut c = Child::spawn(busy);
    cg.add_task(c.pid).unwrap();
    c.release();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!cg.frozen().unwrap());
    cg.freeze().unwrap();
    assert!(cg.frozen().unwrap());
    let freezer = cg
        .paths()
        .into_iter()
        .find(|(n, _)| n == "freezer")
        .unwrap()
        .1;
    assert_eq!(read(freezer.join("freezer.state")), "FROZEN");
    let state = read(format!("/proc/{}/status", c.pid))
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or("")
        .to_string();
    eprintln!("frozen child {state}");
    let t0 = c.cpu_ticks();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.cpu_ticks(), t0, "a frozen child used cpu");
    cg.thaw().unwrap();
    assert!(!cg.frozen().unwrap());
    let t1 = c.cpu_ticks();
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.cpu_ticks() == t1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.cpu_ticks() > t1, "a thawed child did not run");
    // kill_all on a frozen cgroup still kills (it thaws after signalling).
    cg.freeze().unwrap();
    cg.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(signaled(c.wait()), Some(libc::SIGKILL));
    cg.destroy().unwrap();
}

#[test]
fn real_oom_kill() {
    if !root() && skip("needs root") || !has_v1() && skip("no cgroup v1") {
        return;
    }
    let id = unique("oom");
    let cg = Cgroup::open(None, &id).unwrap();
    let _guard = Cleanup {
        cg: cg.clone(),
        extra: vec![],
    };
    // With swap accounting, memory+swap = memory: the hog cannot escape into swap.
    let mem = cg
        .paths()
        .into_iter()
        .find(|(n, _)| n == "memory")
        .unwrap()
        .1;
    let spec = if mem
        .parent()
        .unwrap()
        .join("memory.memsw.limit_in_bytes")
        .exists()
    {
        r#"{"memory": {"limit": 16777216, "swap": 16777216}}"#
    } else {
        r#"{"memory": {"limit": 16777216}}"#
    };
    cg.create(Some(&res(spec))).unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 0);
    let mut c = Child::spawn(hog);
    cg.add_task(c.pid).unwrap();
    let status = c.wait();
    assert_eq!(signaled(status), Some(libc::SIGKILL), "status {status:#x}");
    assert!(cg.oom_kills().unwrap() >= 1);
    let s = cg.stats().unwrap();
    assert!(s.memory.oom_kill >= 1);
    assert!(s.memory.max_usage >= 15 << 20, "{s:?}");
    cg.destroy().unwrap();
}

#[test]
fn real_v1_memory_swap_ordering() {
    if !root() && skip("needs root") || !has_v1() && skip("no cgroup v1") {
        return;
    }
    let id = unique("memsw");
    let cg = Cgroup::open(None, &id).unwrap();
    let _guard = Cleanup {
        cg: cg.clone(),
        extra: vec![],
    };
    let mem = cg
        .paths()
        .into_iter()
        .find(|(n, _)| n == "memory")
        .unwrap()
        .1;
    if !mem
        .parent()
        .unwrap()
        .join("memory.memsw.limit_in_bytes")
        .exists()
    {
        skip("no swap accounting");
        return;
    }
    let get = |f: &str| read(mem.join(f));
    cg.create(Some(&res(
        r#"{"memory": {"limit": 33554432, "swap": 67108864}}"#,
    )))
    .unwrap();
    assert_eq!(get("memory.limit_in_bytes"), "33554432");
    assert_eq!(get("memory.memsw.limit_in_bytes"), "67108864");
    // Raise both above the current memsw: memsw must go first.
    cg.update(&res(
        r#"{"memory": {"limit": 134217728, "swap": 268435456}}"#,
    ))
    .unwrap();
    assert_eq!(get("memory.limit_in_bytes"), "134217728");
    assert_eq!(get("memory.memsw.limit_in_bytes"), "268435456");
    // Lower both below the current limit: the limit must go first.
    cg.update(&res(r#"{"memory": {"limit": 16777216, "swap": 16777216}}"#))
        .unwrap();
    assert_eq!(get("memory.limit_in_bytes"), "16777216");
    assert_eq!(get("memory.memsw.limit_in_bytes"), "16777216");
    // Unlimited memory with swap unset lifts memsw as well.
    cg.update(&res(r#"{"memory": {"limit": -1}}"#)).unwrap();
    assert!(get("memory.limit_in_bytes").parse::<u64>().unwrap() > 1 << 60);
    assert!(get("memory.memsw.limit_in_bytes").parse::<u64>().unwrap() > 1 << 60);
    // A kernel refusal names file, value and errno.
    let e = cg
        .update(&res(r#"{"cpu": {"shares": 1}}"#))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cpu.shares"), "{e}");
    cg.destroy().unwrap();
}

#[test]
fn real_pids_recursive_and_destroy_children_first() {
    if !root() && skip("needs root") || !has_v1() && skip("no cgroup v1") {
        return;
    }
    let id = unique("nest");
    let cg = Cgroup::open(None, &id).unwrap();
    let _guard = Cleanup {
        cg: cg.clone(),
        extra: vec![],
    };
    cg.create(None).unwrap();
    let mut a = Child::spawn(idle);
    let mut b = Child::spawn(idle);
    cg.add_task(a.pid).unwrap();
    // b goes into a nested cgroup of its own (as a container's own sub-cgroups would).
    let sub = Cgroup::open(None, &format!("{id}/sub/deeper")).unwrap();
    sub.create(None).unwrap();
    sub.add_task(b.pid).unwrap();
    let mut want = vec![a.pid, b.pid];
    want.sort_unstable();
    assert_eq!(cg.pids().unwrap(), want);
    cg.kill_all(libc::SIGTERM).unwrap();
    assert_eq!(signaled(a.wait()), Some(libc::SIGTERM));
    assert_eq!(signaled(b.wait()), Some(libc::SIGTERM));
    cg.destroy().unwrap();
    for (_, d) in cg.paths() {
        assert!(!d.exists());
    }
}

/// The cgroup2 mount of this hybrid host seen as a pure v2 host: the v2 code paths (subtree
/// control, cgroup.freeze, cgroup.kill, eBPF devices, CLONE_INTO_CGROUP) for real.
#[test]
fn real_v2_on_unified_mount() {
    if !root() && skip("needs root")
        || !has_unified() && skip("no cgroup2 mount at /sys/fs/cgroup/unified")
    {
        return;
    }
    let host = Host::fake(
        "/",
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
        "0::/\n",
    );
    let id = unique("v2");
    let parent = PathBuf::from(UNIFIED).join(&id);
    let cg = Cgroup::open_with(&host, Some(&format!("/{id}/ctr")), "ctr").unwrap();
    assert!(cg.is_v2());
    let _guard = Cleanup {
        cg: cg.clone(),
        extra: vec![parent.clone()],
    };
    let dir = cg.paths()[0].1.clone();
    assert_eq!(dir, parent.join("ctr"));
    let hugetlb = read(format!("{UNIFIED}/cgroup.controllers")).contains("hugetlb");
    let mut spec = String::from(
        r#"{"devices": [{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}]"#,
    );
    if hugetlb {
        spec.push_str(r#", "hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}]"#);
    }
    spec.push('}');
    match cg.create(Some(&res(&spec))) {
        Ok(()) => {}
        Err(e) if matches!(e.errno, Some(libc::EPERM | libc::ENOSYS | libc::EOPNOTSUPP)) => {
            skip(&format!(
                "the kernel refuses eBPF device programs here: {e}"
            ));
            return;
        }
        Err(e) => panic!("{e}"),
    }
    if hugetlb {
        assert!(read(parent.join("cgroup.subtree_control")).contains("hugetlb"));
        assert_eq!(read(dir.join("hugetlb.2MB.max")), "2097152");
    }
    // The eBPF program enforces the list.
    let mut c = Child::spawn(open_devices);
    cg.add_task(c.pid).unwrap();
    assert_eq!(exited(c.wait()), Some(1 | 2 | 4 | 8));
    // Update replaces the program: /dev/full allowed now, /dev/null not. (Were the old program
    // still attached, /dev/full would stay denied.)
    cg.update(&res(
        r#"{"devices": [{"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rw"},
                        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rw"}]}"#,
    ))
    .unwrap();
    let mut c = Child::spawn(open_devices);
    cg.add_task(c.pid).unwrap();
    // null refused (bit 1 clear), full allowed (bit 2 clear), zero read (4), zero write ok (8 clear)
    assert_eq!(exited(c.wait()), Some(4));

    // CLONE_INTO_CGROUP with the descriptor from v2_dir_fd.
    let fd = cg.v2_dir_fd().expect("v2 dir fd");
    let mut c = match clone_into(&fd) {
        Some(c) => c,
        None => {
            skip("clone3 not available");
            Child::spawn(busy)
        }
    };
    cg.add_task(c.pid).unwrap(); // a no-op for the clone3 child, needed for the fallback
    c.release();
    let line = format!("0::/{id}/ctr");
    assert!(read(format!("/proc/{}/cgroup", c.pid))
        .lines()
        .any(|l| l == line));
    assert_eq!(cg.pids().unwrap(), vec![c.pid]);
    cg.freeze().unwrap();
    assert!(cg.frozen().unwrap());
    assert_eq!(read(dir.join("cgroup.freeze")), "1");
    let t0 = c.cpu_ticks();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.cpu_ticks(), t0);
    cg.thaw().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cg.frozen().unwrap() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!cg.frozen().unwrap());
    cg.kill_all(libc::SIGKILL).unwrap(); // via cgroup.kill
    assert_eq!(signaled(c.wait()), Some(libc::SIGKILL));
    cg.destroy().unwrap();
    assert!(!dir.exists());
}

/// clone3(CLONE_INTO_CGROUP) a child that waits for release then spins.
fn clone_into(fd: &std::os::fd::OwnedFd) -> Option<Child> {
    use crate::clone::{CloneArgs, CLONE_INTO_CGROUP};
    use std::os::fd::AsRawFd;
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-int array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: fd.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without a new stack behaves like fork; the child only makes
    // async-signal-safe calls.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        let mut b = 0u8;
        // SAFETY: as in Child::spawn.
        unsafe {
            libc::close(fds[1]);
            libc::read(fds[0], &mut b as *mut u8 as *mut libc::c_void, 1);
        }
        busy();
    }
    // SAFETY: closing our copy of the read end.
    unsafe { libc::close(fds[0]) };
    if pid < 0 {
        // SAFETY: closing our own fd.
        unsafe { libc::close(fds[1]) };
        return None;
    }
    Some(Child {
        pid: pid as i32,
        go: fds[1],
    })
}

/// Load and attach by hand on a bare unified subgroup, with a rule list the Cgroup API would
/// not produce (allow-all default with denials), checked by a child.
#[test]
fn real_bpf_default_allow_program() {
    if !root() && skip("needs root") || !has_unified() && skip("no cgroup2 mount") {
        return;
    }
    let dir = PathBuf::from(UNIFIED).join(unique("bpf"));
    std::fs::create_dir_all(&dir).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let rules = [
        Rule {
            allow: true,
            typ: None,
            major: None,
            minor: None,
            access: ACC_READ | ACC_WRITE | ACC_MKNOD,
        },
        Rule {
            allow: false,
            typ: Some(DEV_CHAR),
            major: Some(1),
            minor: Some(7),
            access: ACC_WRITE,
        },
        Rule {
            allow: false,
            typ: Some(DEV_CHAR),
            major: Some(1),
            minor: Some(5),
            access: ACC_WRITE,
        },
    ];
    match devices::attach(&dir, &rules) {
        Ok(()) => {}
        Err(e) if matches!(e.errno, Some(libc::EPERM | libc::ENOSYS | libc::EOPNOTSUPP)) => {
            skip(&format!(
                "the kernel refuses eBPF device programs here: {e}"
            ));
            return;
        }
        Err(e) => panic!("{e}"),
    }
    let mut c = Child::spawn(open_devices);
    std::fs::write(dir.join("cgroup.procs"), c.pid.to_string()).unwrap();
    // null rw ok (1), full rw EPERM (2), zero read ok (4), zero write EPERM (8)
    assert_eq!(exited(c.wait()), Some(1 | 2 | 4 | 8));
}
