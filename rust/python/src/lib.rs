//! `sampan._runtime`: the PyO3 face of the runtime crate. Blocking calls release the GIL;
//! every failure raises `ContainerError` with the runtime's message (step, path, errno).

use std::path::PathBuf;
use std::sync::RwLock;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use sampan_runtime::{container, overlay, state, Container, CreateOptions, ExecOptions};

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
        let process: oci_spec::runtime::Process = serde_json::from_str(&process_json)
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

#[pymodule]
fn _runtime(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ContainerError", m.py().get_type::<ContainerError>())?;
    m.add("DEFAULT_ROOT", state::DEFAULT_ROOT)?;
    m.add_class::<PyContainer>()?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(list, m)?)?;
    m.add_function(wrap_pyfunction!(mount_overlay, m)?)?;
    m.add_function(wrap_pyfunction!(unmount, m)?)?;
    Ok(())
}
