//! The container lifecycle: create, start, state, kill, pause, resume, exec, wait, delete, run.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::c_int;
use oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxDeviceType, LinuxNamespaceType, LinuxResources, Process, Spec,
};

use crate::cgroups::Cgroup;
use crate::clone::clone_child;
use crate::error::{Error, Result};
use crate::hooks;
use crate::init::{self, ChildFds};
use crate::plan::{self, cpath, NsJoin, Plan};
use crate::state::{self, State, Status};
use crate::sync::{self, Msg, Step};
use crate::sys::close;

#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub root: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// Extra fds (from 3 up) the container process inherits, like runc's --preserve-fds.
    pub preserve_fds: i32,
}

#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: i32,
}

/// Our own child process (the container's init when created in this process, or an exec).
struct Child {
    pid: libc::pid_t,
    pidfd: c_int,
    sync: c_int,
    status: Option<i32>,
}

impl Drop for Child {
    fn drop(&mut self) {
        close(self.pidfd);
        close(self.sync);
    }
}

impl Child {
    /// Block until the process exits; 128+signal when killed, as shells report it.
    fn wait(&mut self) -> Result<i32> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let mut st: c_int = 0;
        loop {
            let r = unsafe { libc::waitpid(self.pid, &mut st, libc::__WALL) };
            if r == self.pid {
                break;
            }
            let e = crate::error::errno();
            if r < 0 && e != libc::EINTR {
                return Err(Error::sys(format!("wait for pid {}", self.pid), None, e));
            }
        }
        let code = decode_status(st);
        self.status = Some(code);
        Ok(code)
    }

    /// Wait for the child to exec (its end of the sync socket closes) or report a failure.
    fn wait_exec(&mut self, plan: &Plan) -> Result<()> {
        match sync::recv(self.sync) {
            Ok(None) => Ok(()),
            Ok(Some(m)) if m.kind == sync::ERROR => Err(translate(&m, plan)),
            Ok(Some(_)) => Ok(()),
            Err(e) => Err(Error::sys("wait for exec", None, e)),
        }
    }
}

/// See [`Container::exit_watch`].
pub struct ExitWatch(OwnedFd);

impl ExitWatch {
    /// Block until the process has exited (a pidfd polls readable then).
    pub fn block(&self) {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        while unsafe { libc::poll(&mut p, 1, -1) } < 0 && crate::error::errno() == libc::EINTR {}
    }
}

pub fn decode_status(st: c_int) -> i32 {
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else if libc::WIFSIGNALED(st) {
        128 + libc::WTERMSIG(st)
    } else {
        255
    }
}

pub struct Container {
    pub root: PathBuf,
    pub state: State,
    child: Option<Child>,
    /// Kept so exec failures after start can be reported with their paths.
    plan: Option<Box<Plan>>,
}

fn load_spec(bundle: &Path) -> Result<(Spec, Vec<u8>)> {
    let p = bundle.join("config.json");
    let data = std::fs::read(&p).map_err(|e| Error::io("read config", Some(&p), &e))?;
    let spec: Spec = serde_json::from_slice(&data)
        .map_err(|e| Error::invalid("parse config", format!("{}: {e}", p.display())))?;
    Ok((spec, data))
}

fn root_propagation(spec: &Spec) -> Result<libc::c_ulong> {
    let prop = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
        .unwrap_or_default();
    Ok(match prop.as_str() {
        "" | "slave" | "rslave" => libc::MS_SLAVE,
        "private" | "rprivate" => libc::MS_PRIVATE,
        "shared" | "rshared" => libc::MS_SHARED,
        "unbindable" | "runbindable" => libc::MS_UNBINDABLE,
        other => {
            return Err(Error::invalid(
                "config",
                format!("unknown rootfsPropagation {other:?}"),
            ))
        }
    })
}

/// Undoes a half-made container when creation fails.
struct Cleanup {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: libc::pid_t,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.pid > 0 {
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(self.pid, &mut st, libc::__WALL);
            }
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(libc::SIGKILL);
            let _ = cg.destroy();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Cleanup {
    fn disarm(mut self) {
        self.dir = None;
        self.cgroup = None;
        self.pid = 0;
    }
}

fn open_fd(path: &Path, flags: c_int, step: &str) -> Result<c_int> {
    let c = cpath(path)?;
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::last(step, Some(path)));
    }
    Ok(fd)
}

fn connect_console(path: &Path) -> Result<c_int> {
    let bytes = path.as_os_str().as_bytes();
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(Error::sys("console socket", Some(path), libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, b) in bytes.iter().enumerate() {
        addr.sun_path[i] = *b as libc::c_char;
    }
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last("console socket", Some(path)));
    }
    let r = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = Error::last("connect console socket", Some(path));
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

fn write_id_map(pid: i32, file: &str, maps: &[oci_spec::runtime::LinuxIdMapping]) -> Result<()> {
    let text: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    let p = PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::write(&p, text).map_err(|e| Error::io("write id map", Some(&p), &e))
}

/// Blocks every signal on this thread while cloning so no Python-level handler runs in the
/// child; the child resets dispositions and unblocks right before execve.
struct SignalBlock(libc::sigset_t);

impl SignalBlock {
    fn new() -> Self {
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            SignalBlock(old)
        }
    }
}

impl Drop for SignalBlock {
    fn drop(&mut self) {
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// Joins a pid namespace for this thread's future children only (pid_for_children), and
/// restores the original on drop: setns(CLONE_NEWPID) is per-thread and allowed in a
/// multithreaded process, unlike joining a mount or user namespace.
struct PidNsJoin(c_int);

impl PidNsJoin {
    fn enter(fd: c_int, path: &Path) -> Result<Self> {
        let own = open_fd(
            Path::new("/proc/thread-self/ns/pid"),
            libc::O_RDONLY,
            "open own pid namespace",
        )?;
        if unsafe { libc::setns(fd, libc::CLONE_NEWPID) } < 0 {
            let e = Error::last("join pid namespace", Some(path));
            close(own);
            return Err(e);
        }
        Ok(PidNsJoin(own))
    }
}

impl Drop for PidNsJoin {
    fn drop(&mut self) {
        unsafe { libc::setns(self.0, libc::CLONE_NEWPID) };
        close(self.0);
    }
}

/// Turn a child's failure report into an error naming the step and its path.
fn translate(m: &Msg, plan: &Plan) -> Error {
    let e = m.errno;
    let i = m.index as usize;
    let Some(step) = Step::from_u32(m.step) else {
        return Error::sys("container init", None, e);
    };
    match step {
        Step::PreOp | Step::PostOp => {
            let what = plan.op_names.get(i).cloned().unwrap_or_default();
            let mut err = Error::sys(what, None, e);
            if e == libc::ENODEV {
                err.detail = Some("unknown filesystem type".into());
            }
            err
        }
        Step::JoinNamespace => match plan.joins.get(i) {
            Some(j) => Error::sys(
                format!("join {} namespace", plan::ns_name(j.nstype)),
                Some(&j.path),
                e,
            ),
            None => Error::sys("join namespace", None, e),
        },
        Step::Rlimit => {
            let mut err = match plan.process.rlimits.get(i) {
                Some(r) => Error::sys(
                    format!(
                        "setrlimit {} (soft {}, hard {})",
                        rlimit_name(r.resource),
                        r.soft,
                        r.hard
                    ),
                    None,
                    e,
                ),
                None => Error::sys("setrlimit", None, e),
            };
            if e == libc::EPERM {
                err.detail = Some(
                    "raising a hard limit needs CAP_SYS_RESOURCE, which the runtime lacks".into(),
                );
            }
            err
        }
        Step::ExecLookup => {
            let arg0 = plan
                .process
                .args
                .first()
                .map(|a| a.to_string_lossy().to_string())
                .unwrap_or_default();
            // A path names the file: say why it cannot run (runc's words, docker's 126). A
            // name searched in $PATH that only matched what cannot run is not found (127).
            let why = match e {
                libc::EISDIR if arg0.contains('/') => "is a directory",
                libc::EACCES if arg0.contains('/') => "permission denied",
                _ => "executable file not found in $PATH or the container",
            };
            Error::invalid("exec", format!("{arg0:?}: {why}"))
        }
        Step::Exec => {
            let arg0 = plan
                .process
                .args
                .first()
                .map(|a| a.to_string_lossy().to_string())
                .unwrap_or_default();
            Error::sys(format!("exec {arg0}"), None, e)
        }
        Step::StartHook => {
            let path = plan
                .start_hooks
                .get(i)
                .map(|h| h.path.to_string_lossy().to_string())
                .unwrap_or_default();
            let mut err = Error::invalid(
                format!("startContainer hook #{i}"),
                format!("{path} failed"),
            );
            if e != 0 {
                err.errno = Some(e);
            }
            err
        }
        Step::Chdir => Error::sys(
            "chdir to process.cwd",
            Some(Path::new(&*plan.process.cwd.to_string_lossy())),
            e,
        ),
        Step::BindRootfs | Step::PivotRoot | Step::OpenRootfs => Error::sys(
            format!("{step:?} (step {i})").to_lowercase(),
            Some(&plan.rootfs_path),
            e,
        ),
        other => Error::sys(format!("{other:?}").to_lowercase(), None, e),
    }
}

fn rlimit_name(r: c_int) -> &'static str {
    const NAMES: [&str; 16] = [
        "RLIMIT_CPU",
        "RLIMIT_FSIZE",
        "RLIMIT_DATA",
        "RLIMIT_STACK",
        "RLIMIT_CORE",
        "RLIMIT_RSS",
        "RLIMIT_NPROC",
        "RLIMIT_NOFILE",
        "RLIMIT_MEMLOCK",
        "RLIMIT_AS",
        "RLIMIT_LOCKS",
        "RLIMIT_SIGPENDING",
        "RLIMIT_MSGQUEUE",
        "RLIMIT_NICE",
        "RLIMIT_RTPRIO",
        "RLIMIT_RTTIME",
    ];
    NAMES.get(r as usize).copied().unwrap_or("RLIMIT")
}

fn device_rule(t: LinuxDeviceType, major: Option<i64>, minor: Option<i64>) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_typ(Some(t));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some("rwm".into()));
    r
}

/// The spec's device rules followed by what every container needs, as runc appends them:
/// the default device nodes, the ptys, /dev/console, tun, mknod of anything (a node cannot be
/// opened unless another rule allows it).
fn with_default_device_rules(linux: &oci_spec::runtime::Linux) -> LinuxResources {
    use LinuxDeviceType::{B, C};
    let mut res = linux.resources().clone().unwrap_or_default();
    let mut rules = res.devices().clone().unwrap_or_default();
    let mut mknod_c = device_rule(C, None, None);
    mknod_c.set_access(Some("m".into()));
    let mut mknod_b = device_rule(B, None, None);
    mknod_b.set_access(Some("m".into()));
    rules.push(mknod_c);
    rules.push(mknod_b);
    for d in plan::DEFAULT_DEVICES.iter() {
        rules.push(device_rule(C, Some(d.major as i64), Some(d.minor as i64)));
    }
    rules.push(device_rule(C, Some(136), None)); // /dev/pts/*
    rules.push(device_rule(C, Some(5), Some(2))); // /dev/ptmx
    rules.push(device_rule(C, Some(10), Some(200))); // /dev/net/tun

    // The nodes in linux.devices get no rule of their own: like runc, access to them is what
    // the spec's rules say (docker's `--device X:Y:r` must stay read-only).
    res.set_devices(Some(rules));
    res
}

/// The cgroup path the container uses: the spec's, or /sampan/<id> when it names none, so that
/// every process (create, delete, the daemon) finds the same directories.
fn cgroups_path(spec: &Spec, id: &str) -> String {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| format!("/sampan/{id}"))
}

/// Spawn a child running `entry`, wire the namespaces/cgroup, and let it go.
struct Spawned {
    child: Child,
}

fn spawn(
    plan: &Plan,
    clone_flags: c_int,
    cgroup: &Cgroup,
    fds: ChildFds,
    pid_join: Option<(c_int, PathBuf)>,
    entry: unsafe fn(&Plan, &ChildFds) -> !,
) -> Result<(Spawned, c_int)> {
    let (parent_end, child_end) =
        sync::socketpair().map_err(|e| Error::io("socketpair", None, &e))?;
    let fds = ChildFds {
        sync: child_end,
        ..fds
    };
    let cg_fd = cgroup.v2_dir_fd();
    // Lets tests exercise the clone(2) path that qemu-user and old kernels take.
    let force_fallback = std::env::var_os("SAMPAN_FORCE_CLONE_FALLBACK").is_some();
    let cloned = {
        let _pidns = match &pid_join {
            Some((fd, path)) => Some(PidNsJoin::enter(*fd, path)?),
            None => None,
        };
        let _sig = SignalBlock::new();
        unsafe {
            match clone_child(
                clone_flags,
                cg_fd.as_ref().map(|f| f.as_raw_fd()),
                force_fallback,
            ) {
                Ok(None) => {
                    close(parent_end);
                    entry(plan, &fds)
                }
                Ok(Some(c)) => Ok(c),
                Err(e) => Err(e),
            }
        }
    };
    close(child_end);
    let cloned = match cloned {
        Ok(c) => c,
        Err(e) => {
            close(parent_end);
            let mut names: Vec<&str> = Vec::new();
            for f in [
                libc::CLONE_NEWNS,
                libc::CLONE_NEWPID,
                libc::CLONE_NEWNET,
                libc::CLONE_NEWIPC,
                libc::CLONE_NEWUTS,
                libc::CLONE_NEWUSER,
                libc::CLONE_NEWCGROUP,
            ] {
                if clone_flags & f != 0 {
                    names.push(plan::ns_name(f));
                }
            }
            let mut err = Error::sys("clone", None, e);
            if e == libc::EINVAL || e == libc::EPERM {
                err.detail = Some(format!(
                    "the kernel refused to create namespaces ({}); namespace support is missing \
                     or restricted here (qemu-user cannot emulate it)",
                    names.join(", ")
                ));
            }
            return Err(err);
        }
    };
    let child = Child {
        pid: cloned.pid,
        pidfd: cloned.pidfd,
        sync: parent_end,
        status: None,
    };
    Ok((Spawned { child }, if cloned.into_cgroup { 1 } else { 0 }))
}

impl Container {
    pub fn create(opts: &CreateOptions) -> Result<Container> {
        state::validate_id(&opts.id)?;
        let bundle = std::fs::canonicalize(&opts.bundle)
            .map_err(|e| Error::io("bundle", Some(&opts.bundle), &e))?;
        let (spec, raw) = load_spec(&bundle)?;
        let rootfs = plan::rootfs_path(&spec, &bundle)?;
        std::fs::create_dir_all(&opts.root)
            .map_err(|e| Error::io("create state root", Some(&opts.root), &e))?;
        let dir = state::dir(&opts.root, &opts.id);
        if let Err(e) = std::fs::create_dir(&dir) {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(Error::invalid(
                    "create",
                    format!("container with id {:?} already exists", opts.id),
                ));
            }
            return Err(Error::io("create state dir", Some(&dir), &e));
        }
        let mut cleanup = Cleanup {
            dir: Some(dir.clone()),
            cgroup: None,
            pid: 0,
        };
        state::write_atomic(&dir.join("config.json"), &raw)?;

        let ns = plan::namespaces(&spec)?;
        let has_mount_ns = ns.clone_flags & libc::CLONE_NEWNS != 0
            || ns.joins.iter().any(|(f, _)| *f == libc::CLONE_NEWNS);
        if !has_mount_ns {
            return Err(Error::invalid(
                "config",
                "a mount namespace is required to set up the rootfs",
            ));
        }
        let linux = spec.linux().clone().unwrap_or_default();
        let cg_path = cgroups_path(&spec, &opts.id);
        let cgroup = Cgroup::open(Some(&cg_path), &opts.id)?;
        let resources = with_default_device_rules(&linux);
        cgroup.create(Some(&resources))?;
        let cgroup_paths = cgroup.paths();
        cleanup.cgroup = Some(Cgroup::open(Some(&cg_path), &opts.id)?);

        let new_user = ns.clone_flags & libc::CLONE_NEWUSER != 0;
        let user_ns = new_user || ns.joins.iter().any(|(f, _)| *f == libc::CLONE_NEWUSER);
        let new_net = ns.clone_flags & libc::CLONE_NEWNET != 0
            || ns.joins.iter().any(|(f, _)| *f == libc::CLONE_NEWNET);
        let cgroup_ns = plan::has_ns(&spec, LinuxNamespaceType::Cgroup);
        let ctx = plan::MountCtx {
            bundle: &bundle,
            cgroup_ns,
            user_ns,
            bind_sysfs: user_ns && !new_net,
            cgroup_dirs: cgroup_paths.clone(),
        };
        let (pre, post, op_names) = plan::build_ops(&spec, &ctx)?;
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::invalid("config", "process is missing"))?;
        let process_home = plan::with_home(process, &rootfs);
        let pplan = plan::process_plan(&process_home, linux.seccomp().as_ref())?;
        let has_uts = plan::has_ns(&spec, LinuxNamespaceType::Uts);
        let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        let domainname = spec.domainname().clone().filter(|h| !h.is_empty());
        if (hostname.is_some() || domainname.is_some()) && !has_uts {
            return Err(Error::invalid(
                "config",
                "setting a hostname or domainname needs a uts namespace",
            ));
        }
        let hooks = spec.hooks().clone().unwrap_or_default();
        #[allow(deprecated)]
        let before_pivot = hooks.prestart().as_ref().is_some_and(|h| !h.is_empty())
            || hooks
                .create_runtime()
                .as_ref()
                .is_some_and(|h| !h.is_empty())
            || hooks
                .create_container()
                .as_ref()
                .is_some_and(|h| !h.is_empty());

        let mut joins = Vec::new();
        for (flag, path) in &ns.joins {
            joins.push(NsJoin {
                fd: open_fd(path, libc::O_RDONLY, "open namespace")?,
                nstype: *flag,
                path: path.clone(),
            });
        }
        let pid_join = joins
            .iter()
            .find(|j| j.nstype == libc::CLONE_NEWPID)
            .map(|j| (j.fd, j.path.clone()));
        let mut plan = Plan {
            rootfs: cpath(&rootfs)?,
            rootfs_path: rootfs.clone(),
            new_mount_ns: true,
            new_user_ns: new_user,
            new_net_ns: ns.clone_flags & libc::CLONE_NEWNET != 0,
            unshare_after_user: 0,
            unshare_cgroup_ns: ns.clone_flags & libc::CLONE_NEWCGROUP != 0,
            joins,
            root_propagation: root_propagation(&spec)?,
            pre_pivot: pre,
            post_pivot: post,
            op_names,
            readonly_root: spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            hostname: hostname.map(|h| plan::cstr(h, "hostname")).transpose()?,
            domainname: domainname
                .map(|h| plan::cstr(h, "domainname"))
                .transpose()?,
            process: pplan,
            has_hooks_before_pivot: before_pivot,
            start_hooks: plan::hook_plans(hooks.start_container().as_ref())?,
        };

        let console = match (&opts.console_socket, plan.process.terminal) {
            (Some(p), true) => connect_console(p)?,
            (None, true) => {
                return Err(Error::invalid(
                    "console",
                    "process.terminal is true but no console socket was given",
                ))
            }
            (Some(_), false) => {
                return Err(Error::invalid(
                    "console",
                    "a console socket was given but process.terminal is false",
                ))
            }
            (None, false) => -1,
        };
        let fifo_path = dir.join("exec.fifo");
        let fifo_c = cpath(&fifo_path)?;
        if unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o622) } < 0 {
            close(console);
            return Err(Error::last("mkfifo", Some(&fifo_path)));
        }
        let fifo = open_fd(&fifo_path, libc::O_RDWR, "open exec fifo")?;

        // The cgroup namespace is entered after the parent placed the child in its cgroup.
        let mut clone_flags = ns.clone_flags & !libc::CLONE_NEWCGROUP;
        if new_user {
            plan.unshare_after_user = clone_flags & !(libc::CLONE_NEWUSER | libc::CLONE_NEWPID);
            clone_flags &= libc::CLONE_NEWUSER | libc::CLONE_NEWPID;
        }
        let spawned = spawn(
            &plan,
            clone_flags,
            &cgroup,
            ChildFds {
                sync: -1,
                fifo,
                console,
                preserve: opts.preserve_fds,
            },
            pid_join,
            init::container_init,
        );
        close(fifo);
        close(console);
        for j in &plan.joins {
            close(j.fd);
        }
        // The child closed its copies; keep ours from being closed twice.
        for j in plan.joins.iter_mut() {
            j.fd = -1;
        }
        let (spawned, into_cgroup) = spawned?;
        let mut child = spawned.child;
        cleanup.pid = child.pid;

        if new_user {
            write_id_map(
                child.pid,
                "uid_map",
                linux.uid_mappings().as_deref().unwrap_or(&[]),
            )?;
            write_id_map(
                child.pid,
                "gid_map",
                linux.gid_mappings().as_deref().unwrap_or(&[]),
            )?;
        }
        if into_cgroup == 0 {
            cgroup.add_task(child.pid)?;
        }
        if let Some(adj) = process.oom_score_adj() {
            let p = PathBuf::from(format!("/proc/{}/oom_score_adj", child.pid));
            std::fs::write(&p, adj.to_string())
                .map_err(|e| Error::io("write oom_score_adj", Some(&p), &e))?;
        }
        let go = Msg::kind(sync::GO);
        sync::send(child.sync, &go).map_err(|e| Error::sys("signal container init", None, e))?;

        let mut st = State {
            id: opts.id.clone(),
            pid: child.pid,
            pid_start: state::proc_start(child.pid).map(|s| s.0).unwrap_or(0),
            bundle: bundle.clone(),
            rootfs,
            created: state::now_rfc3339(),
            owner: String::new(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            cgroup_paths,
            cgroups_path: Some(cg_path),
        };
        if !plan.start_hooks.is_empty() {
            let json = state_json(&st, Status::Created);
            if json.len() > sync::HOOK_STATE_MAX {
                return Err(Error::invalid(
                    "startContainer hooks",
                    "state JSON too large",
                ));
            }
            let r = unsafe {
                libc::send(
                    child.sync,
                    json.as_ptr() as *const libc::c_void,
                    json.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if r < 0 {
                return Err(Error::last("send state to container init", None));
            }
        }
        loop {
            match sync::recv(child.sync) {
                Ok(Some(m)) if m.kind == sync::HOOKS => {
                    let json = state_json(&st, Status::Creating);
                    #[allow(deprecated)]
                    hooks::run_all("prestart", hooks.prestart().as_ref(), &json)?;
                    hooks::run_all("createRuntime", hooks.create_runtime().as_ref(), &json)?;
                    hooks::run_all("createContainer", hooks.create_container().as_ref(), &json)?;
                    sync::send(child.sync, &go)
                        .map_err(|e| Error::sys("signal container init", None, e))?;
                }
                Ok(Some(m)) if m.kind == sync::CREATED => break,
                Ok(Some(m)) if m.kind == sync::ERROR => return Err(translate(&m, &plan)),
                Ok(_) => {
                    let code = child.wait()?;
                    cleanup.pid = 0;
                    return Err(Error::invalid(
                        "create",
                        format!("container init exited during setup with status {code}"),
                    ));
                }
                Err(e) => return Err(Error::sys("read from container init", None, e)),
            }
        }
        st.pid_start = state::proc_start(child.pid).map(|s| s.0).unwrap_or(0);
        st.save(&opts.root)?;
        if let Some(pf) = &opts.pid_file {
            write_pid_file(pf, child.pid)?;
        }
        cleanup.disarm();
        Ok(Container {
            root: opts.root.clone(),
            state: st,
            child: Some(child),
            plan: Some(Box::new(plan)),
        })
    }

    pub fn load(root: &Path, id: &str) -> Result<Container> {
        Ok(Container {
            root: root.to_path_buf(),
            state: State::load(root, id)?,
            child: None,
            plan: None,
        })
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn pid(&self) -> i32 {
        self.state.pid
    }

    fn dir(&self) -> PathBuf {
        state::dir(&self.root, &self.state.id)
    }

    fn cgroup(&self) -> Result<Cgroup> {
        Cgroup::open(self.state.cgroups_path.as_deref(), &self.state.id)
    }

    fn config(&self) -> Result<Spec> {
        let p = self.dir().join("config.json");
        let data = std::fs::read(&p).map_err(|e| Error::io("read config", Some(&p), &e))?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::invalid("parse config", format!("{}: {e}", p.display())))
    }

    fn init_alive(&self) -> bool {
        if let Some(c) = &self.child {
            if c.status.is_some() {
                return false;
            }
        }
        match state::proc_start(self.state.pid) {
            Some((start, st)) => start == self.state.pid_start && st != 'Z' && st != 'X',
            None => false,
        }
    }

    pub fn status(&self) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if let Ok(cg) = self.cgroup() {
            if cg.frozen().unwrap_or(false) {
                return Status::Paused;
            }
        }
        if self.dir().join("exec.fifo").exists() {
            return Status::Created;
        }
        Status::Running
    }

    /// runc's `state` JSON.
    pub fn state_value(&self) -> serde_json::Value {
        let status = self.status();
        let mut v = serde_json::json!({
            "ociVersion": state::OCI_VERSION,
            "id": self.state.id,
            "pid": if status == Status::Stopped { 0 } else { self.state.pid },
            "status": status.as_str(),
            "bundle": self.state.bundle,
            "rootfs": self.state.rootfs,
            "created": self.state.created,
            "owner": self.state.owner,
        });
        if !self.state.annotations.is_empty() {
            v["annotations"] = serde_json::json!(self.state.annotations);
        }
        v
    }

    pub fn start(&mut self) -> Result<()> {
        let status = self.status();
        if status != Status::Created {
            return Err(Error::invalid(
                "start",
                format!(
                    "cannot start container {:?}: it is {}, not created",
                    self.state.id,
                    status.as_str()
                ),
            ));
        }
        let fifo = self.dir().join("exec.fifo");
        let fd = open_fd(&fifo, libc::O_WRONLY | libc::O_NONBLOCK, "open exec fifo")?;
        let b = [0u8];
        let r = unsafe { libc::write(fd, b.as_ptr() as *const libc::c_void, 1) };
        let err = crate::error::errno();
        close(fd);
        if r != 1 {
            return Err(Error::sys("write exec fifo", Some(&fifo), err));
        }
        let _ = std::fs::remove_file(&fifo);
        if let (Some(child), Some(plan)) = (self.child.as_mut(), self.plan.as_ref()) {
            child.wait_exec(plan)?;
        }
        let spec = self.config()?;
        if let Some(h) = spec.hooks().as_ref().and_then(|h| h.poststart().clone()) {
            let json = state_json(&self.state, Status::Running);
            if let Err(e) = hooks::run_all("poststart", Some(&h), &json) {
                eprintln!("sampan: warning: {e}");
            }
        }
        Ok(())
    }

    /// The exit status of the container's init; only for a container created by this process.
    pub fn wait(&mut self) -> Result<i32> {
        match self.child.as_mut() {
            Some(c) => c.wait(),
            None => wait_foreign(self.state.pid, self.state.pid_start),
        }
    }

    /// A handle to block on until the init exits, without reaping it and without `&mut self`:
    /// a caller sharing the Container between threads blocks on it with no lock held (so other
    /// threads can kill or inspect the container meanwhile), then calls `wait`. None when the
    /// init is already gone.
    pub fn exit_watch(&self) -> Option<ExitWatch> {
        if !self.init_alive() {
            return None;
        }
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.state.pid, 0) } as c_int;
        (fd >= 0).then(|| ExitWatch(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn kill(&self, sig: i32, all: bool) -> Result<()> {
        if all {
            return self.cgroup()?.kill_all(sig);
        }
        if !self.init_alive() {
            return Err(Error::invalid(
                "kill",
                format!("container {:?} is not running", self.state.id),
            ));
        }
        let fd = match &self.child {
            Some(c) if c.pidfd >= 0 => c.pidfd,
            _ => -1,
        };
        let r = if fd >= 0 {
            unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, sig, 0usize, 0u32) }
        } else {
            unsafe { libc::kill(self.state.pid, sig) as libc::c_long }
        };
        if r < 0 {
            return Err(Error::last(
                format!("kill pid {} with signal {sig}", self.state.pid),
                None,
            ));
        }
        Ok(())
    }

    pub fn pause(&self) -> Result<()> {
        match self.status() {
            Status::Running => self.cgroup()?.freeze(),
            s => Err(Error::invalid(
                "pause",
                format!(
                    "container {:?} is {}, not running",
                    self.state.id,
                    s.as_str()
                ),
            )),
        }
    }

    pub fn resume(&self) -> Result<()> {
        match self.status() {
            Status::Paused => self.cgroup()?.thaw(),
            s => Err(Error::invalid(
                "resume",
                format!(
                    "container {:?} is {}, not paused",
                    self.state.id,
                    s.as_str()
                ),
            )),
        }
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        self.cgroup()?.pids()
    }

    /// Applies new resource limits to the running container's cgroup (runc's `update`).
    pub fn update(&self, res: &oci_spec::runtime::LinuxResources) -> Result<()> {
        self.cgroup()?.update(res)
    }

    pub fn stats(&self) -> Result<serde_json::Value> {
        let cg = self.cgroup()?;
        let stats = cg.stats()?;
        let mut v =
            serde_json::to_value(&stats).map_err(|e| Error::invalid("stats", e.to_string()))?;
        v["oom_kills"] = serde_json::json!(cg.oom_kills().unwrap_or(0));
        Ok(v)
    }

    /// How many times the kernel's OOM killer struck in the container's cgroup: all a monitor
    /// needs at the exit, without reading every stats file (blkio's recursive counters can
    /// take tens of milliseconds).
    pub fn oom_kills(&self) -> Result<u64> {
        self.cgroup()?.oom_kills()
    }

    pub fn delete(&mut self, force: bool) -> Result<()> {
        let status = self.status();
        let cg = self.cgroup()?;
        match status {
            Status::Running | Status::Paused if !force => {
                return Err(Error::invalid(
                    "delete",
                    format!(
                        "cannot delete container {:?}: it is {} (stop it first or use force)",
                        self.state.id,
                        status.as_str()
                    ),
                ))
            }
            Status::Stopped => {}
            _ => {
                let _ = cg.kill_all(libc::SIGKILL);
                if status == Status::Paused {
                    let _ = cg.thaw();
                }
                if self.init_alive() {
                    unsafe { libc::kill(self.state.pid, libc::SIGKILL) };
                }
            }
        }
        if let Some(c) = self.child.as_mut() {
            c.wait()?;
        } else {
            let _ = wait_foreign(self.state.pid, self.state.pid_start);
        }
        // Processes outside a pid namespace outlive the init: the cgroup holds them all.
        for _ in 0..500 {
            match cg.pids() {
                Ok(p) if !p.is_empty() => {
                    let _ = cg.kill_all(libc::SIGKILL);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                _ => break,
            }
        }
        cg.destroy()?;
        if let Ok(spec) = self.config() {
            if let Some(h) = spec.hooks().as_ref().and_then(|h| h.poststop().clone()) {
                let json = state_json(&self.state, Status::Stopped);
                if let Err(e) = hooks::run_all("poststop", Some(&h), &json) {
                    eprintln!("sampan: warning: {e}");
                }
            }
        }
        let dir = self.dir();
        match std::fs::remove_dir_all(&dir) {
            // Another delete of the same container got there first: the outcome is the same.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove state", Some(&dir), &e))
            }
            _ => {}
        }
        Ok(())
    }

    /// Run another process in the running container; returns (pid, exit status unless detached).
    pub fn exec(&self, process: &Process, opts: &ExecOptions) -> Result<(i32, Option<i32>)> {
        self.exec_inner(process, opts, false)
    }

    /// Like a detached `exec`, but the process stays this process's child, unreaped: for a
    /// caller with its own event loop (the monitor) that waits for it through a pidfd and
    /// needs its exit status.
    pub fn exec_spawn(&self, process: &Process, opts: &ExecOptions) -> Result<i32> {
        self.exec_inner(process, opts, true).map(|(pid, _)| pid)
    }

    fn exec_inner(
        &self,
        process: &Process,
        opts: &ExecOptions,
        unreaped: bool,
    ) -> Result<(i32, Option<i32>)> {
        let status = self.status();
        if status != Status::Running && status != Status::Created {
            return Err(Error::invalid(
                "exec",
                format!(
                    "cannot exec in container {:?}: it is {}",
                    self.state.id,
                    status.as_str()
                ),
            ));
        }
        let spec = self.config()?;
        let linux = spec.linux().clone().unwrap_or_default();
        let process = plan::with_home(process, &self.state.rootfs);
        let pplan = plan::process_plan(&process, linux.seccomp().as_ref())?;
        let pid = self.state.pid;
        let mut joins = Vec::new();
        let order = [
            (LinuxNamespaceType::User, libc::CLONE_NEWUSER, "user"),
            (LinuxNamespaceType::Ipc, libc::CLONE_NEWIPC, "ipc"),
            (LinuxNamespaceType::Uts, libc::CLONE_NEWUTS, "uts"),
            (LinuxNamespaceType::Network, libc::CLONE_NEWNET, "net"),
            (LinuxNamespaceType::Pid, libc::CLONE_NEWPID, "pid"),
            (LinuxNamespaceType::Cgroup, libc::CLONE_NEWCGROUP, "cgroup"),
            (LinuxNamespaceType::Mount, libc::CLONE_NEWNS, "mnt"),
        ];
        let result = (|| {
            for (t, flag, name) in order {
                if plan::has_ns(&spec, t) {
                    let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
                    joins.push(NsJoin {
                        fd: open_fd(&path, libc::O_RDONLY, "open namespace")?,
                        nstype: flag,
                        path,
                    });
                }
            }
            let pid_join = joins
                .iter()
                .find(|j| j.nstype == libc::CLONE_NEWPID)
                .map(|j| (j.fd, j.path.clone()));
            let console = match (&opts.console_socket, pplan.terminal) {
                (Some(p), true) => connect_console(p)?,
                (None, true) => {
                    return Err(Error::invalid(
                        "console",
                        "process.terminal is true but no console socket was given",
                    ))
                }
                _ => -1,
            };
            let plan = Plan {
                rootfs: CString::default(),
                rootfs_path: self.state.rootfs.clone(),
                new_mount_ns: false,
                new_user_ns: false,
                new_net_ns: false,
                unshare_after_user: 0,
                unshare_cgroup_ns: false,
                joins: std::mem::take(&mut joins),
                root_propagation: 0,
                pre_pivot: Vec::new(),
                post_pivot: Vec::new(),
                op_names: Vec::new(),
                readonly_root: false,
                hostname: None,
                domainname: None,
                process: pplan,
                has_hooks_before_pivot: false,
                start_hooks: Vec::new(),
            };
            let cgroup = self.cgroup()?;
            let spawned = spawn(
                &plan,
                0,
                &cgroup,
                ChildFds {
                    sync: -1,
                    fifo: -1,
                    console,
                    preserve: opts.preserve_fds,
                },
                pid_join,
                init::exec_init,
            );
            close(console);
            for j in &plan.joins {
                close(j.fd);
            }
            let (spawned, into_cgroup) = spawned?;
            let mut child = spawned.child;
            let mut guard = Cleanup {
                dir: None,
                cgroup: None,
                pid: child.pid,
            };
            if into_cgroup == 0 {
                cgroup.add_task(child.pid)?;
            }
            sync::send(child.sync, &Msg::kind(sync::GO))
                .map_err(|e| Error::sys("signal exec process", None, e))?;
            child.wait_exec(&plan)?;
            guard.pid = 0;
            guard.disarm();
            if let Some(pf) = &opts.pid_file {
                write_pid_file(pf, child.pid)?;
            }
            if unreaped {
                return Ok((child.pid, None));
            }
            if opts.detach {
                // Still our child: unreaped, it would stay a zombie in the container's pid
                // namespace, and the container's init could then never finish exiting (its
                // waiters hang). Reap it from a thread (init does, should this process exit).
                let pid = child.pid;
                std::thread::spawn(move || {
                    let mut child = child;
                    let _ = child.wait();
                });
                return Ok((pid, None));
            }
            let code = child.wait()?;
            Ok((child.pid, Some(code)))
        })();
        for j in &joins {
            close(j.fd);
        }
        result
    }
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    state::write_atomic(path, pid.to_string().as_bytes())
}

/// Wait for a process that is not our child: poll its pidfd. Its exit status is not ours to
/// read, so a stopped container reports the error instead of inventing a status.
fn wait_foreign(pid: i32, start: u64) -> Result<i32> {
    // Still the container's process (possibly a zombie), not a recycled pid?
    let ours = state::proc_start(pid).is_some_and(|(s, _)| s == start);
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as c_int;
    if fd >= 0 {
        let still = state::proc_start(pid).is_some_and(|(s, st)| s == start && st != 'Z');
        if still {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            loop {
                let r = unsafe { libc::poll(&mut p, 1, -1) };
                if r >= 0 || crate::error::errno() != libc::EINTR {
                    break;
                }
            }
        }
        close(fd);
    } else {
        while state::proc_start(pid).is_some_and(|(s, st)| s == start && st != 'Z') {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    // It may still be our own child, created through another handle: reap it so no zombie
    // stays behind, and report its status.
    let mut st: c_int = 0;
    if ours && unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG | libc::__WALL) } == pid {
        return Ok(decode_status(st));
    }
    Err(Error::invalid(
        "wait",
        format!("pid {pid} is not a child of this process; its exit status is unknown"),
    ))
}

fn state_json(st: &State, status: Status) -> Vec<u8> {
    let v = serde_json::json!({
        "ociVersion": state::OCI_VERSION,
        "id": st.id,
        "pid": st.pid,
        "status": status.as_str(),
        "bundle": st.bundle,
        "annotations": st.annotations,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// All containers under a state root.
pub fn list(root: &Path) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list", Some(root), &e)),
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    for id in names {
        if let Ok(c) = Container::load(root, &id) {
            out.push(c.state_value());
        }
    }
    Ok(out)
}

/// create + start + wait + delete, in this process. Returns the exit status.
pub fn run(opts: &CreateOptions) -> Result<i32> {
    let mut c = Container::create(opts)?;
    let result = c.start().and_then(|_| c.wait());
    let del = c.delete(true);
    let code = result?;
    del?;
    Ok(code)
}
