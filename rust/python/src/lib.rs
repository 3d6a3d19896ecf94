//! `sampan._runtime`: the PyO3 face of the runtime crate. Blocking calls release the GIL;
//! every failure raises `ContainerError` with the runtime's message (step, path, errno).

use std::path::PathBuf;
use std::sync::RwLock;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use sampan_runtime::{container, ocijson, overlay, state, Container, CreateOptions, ExecOptions};

create_exception!(_runtime, ContainerError, PyException);

fn err(e: sampan_runtime::Error) -> PyErr {
    ContainerError::new_err(e.to_string())
}

fn root_or_default(root: Option<PathBuf>) -> PathBuf {
    root.unwrap_or_else(|| PathBuf::from(state::DEFAULT_ROOT))
}

/// Shared by the threads of the caller: calls that only look at the container (kill, state,
/// exec, ...) share the lock, and `wait` blocks with no lock held, so one thread can wait for
/// or exec in a container while another stops it. id, pid and bundle never change: they are
/// copied out so reading them never waits for the lock with the GIL held.
#[pyclass(module = "sampan._runtime", name = "Container")]
struct PyContainer {
    inner: RwLock<Container>,
    id: String,
    pid: i32,
    bundle: PathBuf,
}

impl PyContainer {
    fn new(c: Container) -> Self {
        PyContainer {
            id: c.id().to_string(),
            pid: c.pid(),
            bundle: c.state.bundle.clone(),
            inner: RwLock::new(c),
        }
    }

    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Container) -> sampan_runtime::Result<T> + Send,
    ) -> PyResult<T> {
        py.allow_threads(|| {
            let mut c = self.inner.write().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .map_err(err)
    }

    fn with_ref<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Container) -> sampan_runtime::Result<T> + Send,
    ) -> PyResult<T> {
        py.allow_threads(|| {
            let c = self.inner.read().unwrap_or_else(|p| p.into_inner());
            f(&c)
        })
        .map_err(err)
    }
}

#[pymethods]
impl PyContainer {
    #[staticmethod]
    #[pyo3(signature = (container_id, bundle, root=None, console_socket=None, pid_file=None, preserve_fds=0))]
    fn create(
        py: Python<'_>,
        container_id: String,
        bundle: PathBuf,
        root: Option<PathBuf>,
        console_socket: Option<PathBuf>,
        pid_file: Option<PathBuf>,
        preserve_fds: i32,
    ) -> PyResult<Self> {
        let opts = CreateOptions {
            id: container_id,
            bundle,
            root: root_or_default(root),
            console_socket,
            pid_file,
            preserve_fds,
        };
        let c = py.allow_threads(|| Container::create(&opts)).map_err(err)?;
        Ok(PyContainer::new(c))
    }

    #[staticmethod]
    #[pyo3(signature = (container_id, root=None))]
    fn load(container_id: String, root: Option<PathBuf>) -> PyResult<Self> {
        let c = Container::load(&root_or_default(root), &container_id).map_err(err)?;
        Ok(PyContainer::new(c))
    }

    #[getter]
    fn id(&self) -> String {
        self.id.clone()
    }

    #[getter]
    fn pid(&self) -> i32 {
        self.pid
    }

    #[getter]
    fn bundle(&self) -> PathBuf {
        self.bundle.clone()
    }

    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| c.start())
    }

    fn wait(&self, py: Python<'_>) -> PyResult<i32> {
        let watch = self.with_ref(py, |c| Ok(c.exit_watch()))?;
        if let Some(w) = watch {
            py.allow_threads(|| w.block());
        }
        self.with(py, |c| c.wait())
    }

    #[pyo3(signature = (sig=15, all=false))]
    fn kill(&self, py: Python<'_>, sig: i32, all: bool) -> PyResult<()> {
        self.with_ref(py, |c| c.kill(sig, all))
    }

    fn pause(&self, py: Python<'_>) -> PyResult<()> {
        self.with_ref(py, |c| c.pause())
    }

    fn resume(&self, py: Python<'_>) -> PyResult<()> {
        self.with_ref(py, |c| c.resume())
    }

    /// runc's state JSON, as a string.
    fn state(&self, py: Python<'_>) -> PyResult<String> {
        self.with_ref(py, |c| Ok(c.state_value().to_string()))
    }

    fn status(&self, py: Python<'_>) -> PyResult<String> {
        self.with_ref(py, |c| Ok(c.status().as_str().to_string()))
    }

    fn stats(&self, py: Python<'_>) -> PyResult<String> {
        self.with_ref(py, |c| c.stats().map(|v| v.to_string()))
    }

    /// The OOM killer's kills in the container's cgroup (cheaper than stats()).
    fn oom_kills(&self, py: Python<'_>) -> PyResult<u64> {
        self.with_ref(py, |c| c.oom_kills())
    }

    /// Applies an OCI `linux.resources` object (JSON) to the running container's cgroup.
    fn update(&self, py: Python<'_>, resources_json: String) -> PyResult<()> {
        let res = ocijson::resources(resources_json.as_bytes())
            .map_err(|e| ContainerError::new_err(format!("update: invalid resources: {e}")))?;
        self.with_ref(py, |c| c.update(&res))
    }

    fn ps(&self, py: Python<'_>) -> PyResult<Vec<i32>> {
        self.with_ref(py, |c| c.pids())
    }

    #[pyo3(signature = (force=false))]
    fn delete(&self, py: Python<'_>, force: bool) -> PyResult<()> {
        if force {
            // An exec waiting in another thread holds the shared lock until its process ends:
            // end it (and thaw a paused container) before taking the lock exclusively.
            self.with_ref(py, |c| {
                let _ = c.kill(9, true); // SIGKILL
                let _ = c.resume();
                Ok(())
            })?;
        }
        self.with(py, |c| c.delete(force))
    }

    /// Run a process (an OCI `process` object as JSON) in the container.
    /// Returns (pid, exit status or None when detached).
    #[pyo3(signature = (process_json, console_socket=None, detach=false, pid_file=None, preserve_fds=0))]
    fn exec(
        &self,
        py: Python<'_>,
        process_json: String,
        console_socket: Option<PathBuf>,
        detach: bool,
        pid_file: Option<PathBuf>,
        preserve_fds: i32,
    ) -> PyResult<(i32, Option<i32>)> {
        let process = ocijson::process(process_json.as_bytes())
            .map_err(|e| ContainerError::new_err(format!("exec: invalid process: {e}")))?;
        let opts = ExecOptions {
            console_socket,
            pid_file,
            detach,
            preserve_fds,
        };
        self.with_ref(py, |c| c.exec(&process, &opts))
    }
}

/// create + start + wait + delete; returns the exit status (128+signal when killed).
#[pyfunction]
#[pyo3(signature = (container_id, bundle, root=None, console_socket=None, pid_file=None, preserve_fds=0))]
fn run(
    py: Python<'_>,
    container_id: String,
    bundle: PathBuf,
    root: Option<PathBuf>,
    console_socket: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    preserve_fds: i32,
) -> PyResult<i32> {
    let opts = CreateOptions {
        id: container_id,
        bundle,
        root: root_or_default(root),
        console_socket,
        pid_file,
        preserve_fds,
    };
    py.allow_threads(|| container::run(&opts)).map_err(err)
}

/// The state JSON of every container under `root`, as a JSON array string.
#[pyfunction]
#[pyo3(signature = (root=None))]
fn list(py: Python<'_>, root: Option<PathBuf>) -> PyResult<String> {
    let root = root_or_default(root);
    py.allow_threads(|| container::list(&root))
        .map(|v| serde_json::Value::Array(v).to_string())
        .map_err(err)
}

#[pyfunction]
#[pyo3(signature = (lower, target, upper=None, work=None, extra=Vec::new()))]
fn mount_overlay(
    py: Python<'_>,
    lower: Vec<PathBuf>,
    target: PathBuf,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    extra: Vec<String>,
) -> PyResult<()> {
    py.allow_threads(|| {
        overlay::mount(&overlay::Overlay {
            lower: &lower,
            upper: upper.as_deref(),
            work: work.as_deref(),
            target: &target,
            extra: &extra,
        })
    })
    .map_err(err)
}

#[pyfunction]
fn unmount(target: PathBuf) -> PyResult<()> {
    overlay::unmount(&target).map_err(err)
}

// Translations that touch no kernel state, for the cross-build proof (tests/cross runs them
// under qemu-user on every target) and for callers that want to check a config up front.

fn invalid(what: &str, e: impl std::fmt::Display) -> PyErr {
    ContainerError::new_err(format!("{what}: {e}"))
}

fn seccomp_arch(name: &str) -> PyResult<sampan_runtime::seccomp::Arch> {
    let a: oci_spec::runtime::Arch =
        serde_json::from_value(serde_json::Value::String(name.to_string()))
            .map_err(|e| invalid("seccomp", format!("unknown architecture {name:?}: {e}")))?;
    sampan_runtime::seccomp::Arch::from_oci(&a)
        .ok_or_else(|| invalid("seccomp", format!("no syscall table for {name}")))
}

/// The OCI name of the syscall ABI this build was compiled for ("SCMP_ARCH_MIPSEL", ...).
#[pyfunction]
fn seccomp_native_arch() -> PyResult<String> {
    let a = sampan_runtime::seccomp::Arch::native().to_oci();
    match serde_json::to_value(a) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        other => Err(invalid("seccomp", format!("architecture name: {other:?}"))),
    }
}

/// Compiles a seccomp profile to classic BPF. `profile_json`: an OCI `linux.seccomp` object, or
/// None for Docker's default profile (for `capabilities`); `arch`: an OCI architecture name
/// ("SCMP_ARCH_MIPSEL"), None for this build's. Returns (instruction count, the instructions as
/// `struct sock_filter`s in this build's byte order, 8 bytes each).
#[pyfunction]
#[pyo3(signature = (profile_json=None, arch=None, capabilities=Vec::new()))]
fn seccomp_program<'py>(
    py: Python<'py>,
    profile_json: Option<String>,
    arch: Option<String>,
    capabilities: Vec<String>,
) -> PyResult<(usize, Bound<'py, pyo3::types::PyBytes>)> {
    use sampan_runtime::seccomp;
    let native = match arch.as_deref() {
        Some(a) => seccomp_arch(a)?,
        None => seccomp::Arch::native(),
    };
    let spec: oci_spec::runtime::LinuxSeccomp = match profile_json {
        Some(j) => {
            ocijson::seccomp(j.as_bytes()).map_err(|e| invalid("seccomp: invalid profile", e))?
        }
        None => seccomp::default_profile_for(&capabilities, native),
    };
    let prog = seccomp::compile_for(&spec, native).map_err(err)?;
    let mut bytes = Vec::with_capacity(prog.filters.len() * 8);
    for f in &prog.filters {
        bytes.extend_from_slice(&f.code.to_ne_bytes());
        bytes.push(f.jt);
        bytes.push(f.jf);
        bytes.extend_from_slice(&f.k.to_ne_bytes());
    }
    Ok((prog.filters.len(), pyo3::types::PyBytes::new(py, &bytes)))
}

/// Docker's default seccomp profile for `capabilities` as an OCI `linux.seccomp` JSON object.
#[pyfunction]
#[pyo3(signature = (caps=Vec::new()))]
fn seccomp_default_profile(caps: Vec<String>) -> PyResult<String> {
    serde_json::to_string(&sampan_runtime::seccomp::default_profile(&caps))
        .map_err(|e| invalid("seccomp: cannot serialise the default profile", e))
}

/// Translates an OCI config.json as `create` does, creating nothing. Returns a JSON summary:
/// namespaces to create (clone flags and names) and to join, the process (argv, executable
/// candidates, cwd, ids, rlimits as this build's RLIMIT_* numbers, capability names per set,
/// no_new_privs, terminal), hostname, root, mount destinations and the seccomp program size.
#[pyfunction]
fn parse_spec(config_json: String) -> PyResult<String> {
    use sampan_runtime::{caps, plan};
    let spec = ocijson::spec(config_json.as_bytes())
        .map_err(|e| invalid("config: invalid config.json", e))?;
    let ns = plan::namespaces(&spec).map_err(err)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("config", "process is missing"))?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let p = plan::process_plan(process, seccomp).map_err(err)?;
    let lossy = |c: &std::ffi::CString| c.to_string_lossy().into_owned();
    let ns_flags: Vec<i32> = (0..31).map(|b| 1i32 << b).collect();
    let cap_names = |mask: u64| -> Vec<&'static str> {
        (0..=p.caps.last.min(63))
            .filter(|b| mask & (1u64 << b) != 0)
            .filter_map(caps::name)
            .collect()
    };
    let summary = serde_json::json!({
        "clone_flags": ns.clone_flags,
        "namespaces": ns_flags.iter().filter(|f| ns.clone_flags & **f != 0)
            .map(|f| plan::ns_name(*f)).collect::<Vec<_>>(),
        "join": ns.joins.iter().map(|(f, path)| (plan::ns_name(*f), path.clone()))
            .collect::<Vec<_>>(),
        "process": {
            "args": p.args.iter().map(lossy).collect::<Vec<_>>(),
            "exec_candidates": p.exec_candidates.iter().map(lossy).collect::<Vec<_>>(),
            "env": p.env.iter().map(lossy).collect::<Vec<_>>(),
            "cwd": lossy(&p.cwd),
            "uid": p.uid,
            "gid": p.gid,
            "groups": p.groups,
            "umask": p.umask,
            "rlimits": p.rlimits.iter()
                .map(|r| serde_json::json!({"resource": r.resource, "soft": r.soft, "hard": r.hard}))
                .collect::<Vec<_>>(),
            "capabilities": {
                "bounding": cap_names(p.caps.bounding),
                "effective": cap_names(p.caps.effective),
                "permitted": cap_names(p.caps.permitted),
                "inheritable": cap_names(p.caps.inheritable),
                "ambient": cap_names(p.caps.ambient),
            },
            "no_new_privs": p.no_new_privs,
            "terminal": p.terminal,
            "seccomp_instructions": p.seccomp.as_ref().map(|s| s.filters.len()),
        },
        "hostname": spec.hostname(),
        "root": spec.root().as_ref().map(|r| serde_json::json!({
            "path": r.path(), "readonly": r.readonly().unwrap_or(false)})),
        "mounts": spec.mounts().iter().flatten().map(|m| m.destination().clone())
            .collect::<Vec<_>>(),
    });
    Ok(summary.to_string())
}

/// The cgroup v2 files `create` writes for an OCI `linux.resources` object and their values
/// (converted from the spec's v1-shaped numbers: shares to cpu.weight, memory+swap to
/// memory.swap.max, blkio weights to io.weight, ...), worked out on a scratch directory that
/// stands in for a pure cgroup v2 host. Device rules are left out (they become a BPF program
/// attached to the cgroup, which needs the kernel).
#[pyfunction]
fn cgroup_values(
    py: Python<'_>,
    resources_json: String,
) -> PyResult<std::collections::BTreeMap<String, String>> {
    use sampan_runtime::cgroups::{Cgroup, Host};
    let mut res = ocijson::resources(resources_json.as_bytes())
        .map_err(|e| invalid("cgroup: invalid linux.resources", e))?;
    res.set_devices(None);
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let root = std::env::temp_dir().join(format!(
        "sampan-cgroup-values-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let work = || -> PyResult<std::collections::BTreeMap<String, String>> {
        let io = |e: std::io::Error| invalid("cgroup: scratch directory", e);
        let all = "cpuset cpu io memory hugetlb pids\n";
        let mount = root.join("sys/fs/cgroup");
        let dir = mount.join("sampan/c");
        std::fs::create_dir_all(&dir).map_err(io)?;
        for d in [&mount, &mount.join("sampan")] {
            std::fs::write(d.join("cgroup.controllers"), all).map_err(io)?;
            std::fs::write(d.join("cgroup.subtree_control"), all).map_err(io)?;
        }
        let mut files: Vec<String> = [
            "cgroup.procs",
            "memory.max",
            "memory.swap.max",
            "memory.low",
            "memory.high",
            "cpu.weight",
            "cpuset.cpus",
            "cpuset.mems",
            "pids.max",
            "io.weight",
            "io.max",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for h in res.hugepage_limits().iter().flatten() {
            files.push(format!("hugetlb.{}.max", h.page_size()));
        }
        files.extend(res.unified().iter().flat_map(|m| m.keys().cloned()));
        for f in &files {
            std::fs::write(dir.join(f), "").map_err(io)?;
        }
        std::fs::write(dir.join("cpu.max"), "max 100000\n").map_err(io)?;
        let mountinfo = "30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 \
                         cgroup2 rw,nsdelegate\n";
        let host = Host::fake(&root, mountinfo, "0::/\n");
        let cg = Cgroup::open_with(&host, Some("/sampan/c"), "c").map_err(err)?;
        py.allow_threads(|| cg.create(Some(&res))).map_err(err)?;
        let mut out = std::collections::BTreeMap::new();
        for e in std::fs::read_dir(&dir).map_err(io)? {
            let e = e.map_err(io)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let value = std::fs::read_to_string(e.path()).map_err(io)?;
            let untouched = value.is_empty() || (name == "cpu.max" && value == "max 100000\n");
            if !untouched {
                out.insert(name, value.trim_end().to_string());
            }
        }
        Ok(out)
    };
    let out = work();
    let _ = std::fs::remove_dir_all(&root);
    out
}

#[pymodule]
fn _runtime(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ContainerError", m.py().get_type::<ContainerError>())?;
    m.add("DEFAULT_ROOT", state::DEFAULT_ROOT)?;
    m.add_class::<PyContainer>()?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(list, m)?)?;
    m.add_function(wrap_pyfunction!(mount_overlay, m)?)?;
    m.add_function(wrap_pyfunction!(unmount, m)?)?;
    m.add_function(wrap_pyfunction!(seccomp_native_arch, m)?)?;
    m.add_function(wrap_pyfunction!(seccomp_program, m)?)?;
    m.add_function(wrap_pyfunction!(parse_spec, m)?)?;
    m.add_function(wrap_pyfunction!(seccomp_default_profile, m)?)?;
    m.add_function(wrap_pyfunction!(cgroup_values, m)?)?;
    Ok(())
}
