//! The container's init between clone and execve. Runs in the child of a raw clone() of a
//! possibly multithreaded process: only syscalls on data the parent prepared (see plan.rs),
//! no allocation, no locks, no return — it ends in execve or _exit.

use libc::{c_int, c_ulong, c_void};

use crate::caps;
use crate::plan::{Create, Op, Plan, ProcessPlan, Target};
use crate::sync::{self, Msg, Step};
use crate::sys::{self, close, errno, PathBuf};

/// File descriptors the child works with (inherited over clone).
pub struct ChildFds {
    pub sync: c_int,
    pub fifo: c_int,
    pub console: c_int,
    pub preserve: c_int,
}

fn fail(fds: &ChildFds, step: Step, index: usize, e: c_int) -> ! {
    let m = Msg {
        kind: sync::ERROR,
        step: step as u32,
        errno: e,
        index: index as u32,
    };
    let _ = sync::send(fds.sync, &m);
    unsafe { libc::_exit(1) }
}

fn check(fds: &ChildFds, step: Step, index: usize, r: c_int) {
    if r < 0 {
        fail(fds, step, index, errno());
    }
}

fn wait_go(fds: &ChildFds) {
    match sync::recv(fds.sync) {
        Ok(Some(m)) if m.kind == sync::GO => {}
        Ok(_) => unsafe { libc::_exit(1) },
        Err(e) => fail(fds, Step::WaitParent, 0, e),
    }
}

/// Resolve a target: (fd to close afterwards, path to hand to the syscall).
fn target_path(root: c_int, t: &Target, create: Create) -> Result<(c_int, PathBuf), c_int> {
    match t {
        Target::Abs(p) => {
            let mut b = PathBuf::new();
            b.push(p.to_bytes());
            Ok((-1, b))
        }
        Target::InRoot(rel) => {
            let fd = match create {
                Create::Nothing => sys::open_in_root(root, rel.as_ptr(), libc::O_PATH)?,
                Create::Dir => sys::ensure_in_root(root, rel.to_bytes(), false)?,
                Create::File => sys::ensure_in_root(root, rel.to_bytes(), true)?,
            };
            Ok((fd, PathBuf::fd_path(fd)))
        }
    }
}

/// ST_RELATIME from <sys/statvfs.h> (the same on every Linux arch); the libc crate's musl
/// bindings lack it.
const ST_RELATIME: c_ulong = 0x1000;

/// The flags a mount already carries that a bind-remount must repeat (the kernel refuses to
/// drop locked ones in a user namespace, and would silently clear the others).
fn current_flags(path: &PathBuf) -> c_ulong {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let f = st.f_flag;
    let mut out = 0;
    for (st_bit, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_bit != 0 {
            out |= ms;
        }
    }
    out
}

fn remount(path: &PathBuf, flags: c_ulong) -> c_int {
    let keep = current_flags(path);
    unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | flags | keep,
            std::ptr::null(),
        )
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const SYS_MOUNT_SETATTR: libc::c_long = 442; // same number on every architecture we target
const AT_RECURSIVE: c_int = 0x8000;

fn run_op(root: c_int, op: &Op) -> Result<(), c_int> {
    let opt = |c: &Option<std::ffi::CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    match op {
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
            create,
        } => {
            let (fd, path) = target_path(root, target, *create)?;
            let r = unsafe {
                libc::mount(
                    opt(source),
                    path.as_ptr(),
                    opt(fstype),
                    *flags,
                    opt(data) as *const c_void,
                )
            };
            let e = errno();
            close(fd);
            if r < 0 {
                return Err(e);
            }
        }
        Op::Remount { target, flags } => {
            let (fd, path) = target_path(root, target, Create::Nothing)?;
            let r = remount(&path, *flags);
            let e = errno();
            close(fd);
            if r < 0 {
                return Err(e);
            }
        }
        Op::Propagation { target, flags } => {
            let (fd, path) = target_path(root, target, Create::Nothing)?;
            let r = unsafe {
                libc::mount(
                    std::ptr::null(),
                    path.as_ptr(),
                    std::ptr::null(),
                    *flags,
                    std::ptr::null(),
                )
            };
            let e = errno();
            close(fd);
            if r < 0 {
                return Err(e);
            }
        }
        Op::RecursiveAttr { target, attr_set } => {
            let (fd, _) = target_path(root, target, Create::Nothing)?;
            let attr = MountAttr {
                attr_set: *attr_set,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            let r = unsafe {
                libc::syscall(
                    SYS_MOUNT_SETATTR,
                    fd,
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH | AT_RECURSIVE,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                )
            };
            let e = errno();
            close(fd);
            if r < 0 {
                return Err(e);
            }
        }
        Op::Symlink { target, content } => {
            let Target::InRoot(rel) = target else {
                return Err(libc::EINVAL);
            };
            let (dir, name) = split_parent(rel.to_bytes());
            let pfd = sys::ensure_in_root(root, dir, false)?;
            let mut n = PathBuf::new();
            n.push(name);
            let r = unsafe { libc::symlinkat(content.as_ptr(), pfd, n.as_ptr()) };
            let e = errno();
            close(pfd);
            if r < 0 && e != libc::EEXIST {
                return Err(e);
            }
        }
        Op::Mknod {
            target,
            mode,
            dev,
            uid,
            gid,
            bind_from,
        } => {
            let Target::InRoot(rel) = target else {
                return Err(libc::EINVAL);
            };
            if let Some(host) = bind_from {
                let fd = sys::ensure_in_root(root, rel.to_bytes(), true)?;
                let path = PathBuf::fd_path(fd);
                let r = unsafe {
                    libc::mount(
                        host.as_ptr(),
                        path.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                };
                let e = errno();
                close(fd);
                if r < 0 {
                    return Err(e);
                }
                return Ok(());
            }
            let (dir, name) = split_parent(rel.to_bytes());
            let pfd = sys::ensure_in_root(root, dir, false)?;
            let mut n = PathBuf::new();
            n.push(name);
            // A file left by the image (or an earlier bind) is replaced by the node.
            unsafe { libc::unlinkat(pfd, n.as_ptr(), 0) };
            let mut r = unsafe { libc::mknodat(pfd, n.as_ptr(), *mode, *dev) };
            if r == 0 {
                r = unsafe {
                    libc::fchownat(pfd, n.as_ptr(), *uid, *gid, libc::AT_SYMLINK_NOFOLLOW)
                };
            }
            let e = errno();
            close(pfd);
            if r < 0 {
                return Err(e);
            }
        }
        Op::Mask { path } => {
            let mut p = PathBuf::new();
            p.push(path.to_bytes());
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::stat(p.as_ptr(), &mut st) } < 0 {
                let e = errno();
                return if e == libc::ENOENT { Ok(()) } else { Err(e) };
            }
            let r = if (st.st_mode & libc::S_IFMT) == libc::S_IFDIR {
                unsafe {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        p.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY,
                        std::ptr::null(),
                    )
                }
            } else {
                unsafe {
                    libc::mount(
                        c"/dev/null".as_ptr(),
                        p.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                }
            };
            if r < 0 {
                return Err(errno());
            }
        }
        Op::Readonly { path } => {
            let mut p = PathBuf::new();
            p.push(path.to_bytes());
            let r = unsafe {
                libc::mount(
                    p.as_ptr(),
                    p.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            };
            if r < 0 {
                let e = errno();
                return if e == libc::ENOENT { Ok(()) } else { Err(e) };
            }
            if remount(&p, libc::MS_RDONLY | libc::MS_REC) < 0 {
                return Err(errno());
            }
        }
        Op::Chmod { target, mode } => {
            let (fd, path) = target_path(root, target, Create::Nothing)?;
            let r = unsafe { libc::chmod(path.as_ptr(), *mode) };
            let e = errno();
            close(fd);
            if r < 0 {
                return Err(e);
            }
        }
        Op::Sysctl { path, value } => {
            sys::write_file(path.as_ptr(), value.to_bytes())?;
        }
    }
    Ok(())
}

fn split_parent(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    }
}

fn setup_rootfs(p: &Plan, fds: &ChildFds) {
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            p.root_propagation | libc::MS_REC,
            std::ptr::null(),
        )
    };
    check(fds, Step::RootPropagation, 0, r);
    let r = unsafe {
        libc::mount(
            p.rootfs.as_ptr(),
            p.rootfs.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    check(fds, Step::BindRootfs, 0, r);
    let root = unsafe {
        libc::open(
            p.rootfs.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    check(fds, Step::OpenRootfs, 0, root);
    for (i, op) in p.pre_pivot.iter().enumerate() {
        if let Err(e) = run_op(root, op) {
            fail(fds, Step::PreOp, i, e);
        }
    }
    close(root);
    if p.has_hooks_before_pivot {
        if sync::send(fds.sync, &Msg::kind(sync::HOOKS)).is_err() {
            unsafe { libc::_exit(1) };
        }
        wait_go(fds);
    }
    pivot_root(p, fds);
    for (i, op) in p.post_pivot.iter().enumerate() {
        if let Err(e) = run_op(-1, op) {
            fail(fds, Step::PostOp, p.pre_pivot.len() + i, e);
        }
    }
    if p.readonly_root {
        let mut slash = PathBuf::new();
        slash.push(b"/");
        let r = remount(&slash, libc::MS_RDONLY);
        check(fds, Step::ReadonlyRoot, 0, r);
    }
}

fn pivot_root(p: &Plan, fds: &ChildFds) {
    unsafe {
        check(fds, Step::PivotRoot, 0, libc::chdir(p.rootfs.as_ptr()));
        let r = libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr());
        if r == 0 {
            // The old root is stacked on "."; make it private so the detach cannot
            // propagate to the host, then drop it.
            let r = libc::mount(
                std::ptr::null(),
                c".".as_ptr(),
                std::ptr::null(),
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            );
            check(fds, Step::PivotRoot, 1, r);
            check(
                fds,
                Step::PivotRoot,
                2,
                libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
            );
        } else {
            let e = errno();
            // pivot_root cannot leave an initramfs: move the rootfs over / and chroot.
            if e != libc::EINVAL {
                fail(fds, Step::PivotRoot, 0, e);
            }
            let r = libc::mount(
                c".".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            );
            check(fds, Step::PivotRoot, 3, r);
            check(fds, Step::PivotRoot, 4, libc::chroot(c".".as_ptr()));
        }
        check(fds, Step::PivotRoot, 5, libc::chdir(c"/".as_ptr()));
    }
}

const TIOCGPTN: c_ulong = 0x8004_5430;
const TIOCSPTLCK: c_ulong = 0x4004_5431;

/// Open a pty in the container's devpts, send the master over the console socket, make the
/// slave the controlling terminal and stdio.
fn setup_console(p: &ProcessPlan, fds: &ChildFds, mount_console: bool) {
    unsafe {
        let master = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        check(fds, Step::Console, 0, master);
        let unlock: c_int = 0;
        check(
            fds,
            Step::Console,
            1,
            libc::ioctl(master, TIOCSPTLCK as _, &unlock),
        );
        let mut n: u32 = 0;
        check(
            fds,
            Step::Console,
            2,
            libc::ioctl(master, TIOCGPTN as _, &mut n),
        );
        let mut slave_path = PathBuf::new();
        slave_path.push(b"/dev/pts/");
        slave_path.push_num(n as u64);
        let slave = libc::open(slave_path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        check(fds, Step::Console, 3, slave);
        if let Some((rows, cols)) = p.console_size {
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            libc::ioctl(slave, libc::TIOCSWINSZ as _, &ws);
        }
        if mount_console {
            let fd = libc::open(
                c"/dev/console".as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o600,
            );
            if fd >= 0 {
                close(fd);
            }
            let r = libc::mount(
                slave_path.as_ptr(),
                c"/dev/console".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            );
            check(fds, Step::Console, 4, r);
        }
        if let Err(e) = send_fd(fds.console, master, slave_path.bytes()) {
            fail(fds, Step::Console, 5, e);
        }
        close(master);
        close(fds.console);
        check(
            fds,
            Step::Console,
            6,
            libc::ioctl(slave, libc::TIOCSCTTY as _, 0),
        );
        for i in 0..3 {
            check(fds, Step::Console, 7, libc::dup2(slave, i));
        }
        if slave > 2 {
            close(slave);
        }
    }
}

fn send_fd(sock: c_int, fd: c_int, name: &[u8]) -> Result<(), c_int> {
    #[repr(C, align(8))]
    struct CmsgBuf([u8; 64]);
    let mut cbuf = CmsgBuf([0; 64]);
    let mut iov = libc::iovec {
        iov_base: name.as_ptr() as *mut c_void,
        iov_len: name.len(),
    };
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<c_int>() as u32) as usize;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_mut_ptr() as *mut c_void;
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<c_int>() as u32) as _;
        std::ptr::copy_nonoverlapping(
            &fd as *const c_int as *const u8,
            libc::CMSG_DATA(cmsg),
            std::mem::size_of::<c_int>(),
        );
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// Credentials through raw syscalls. libc's set*id wrappers (glibc's setxid broadcast, musl's
/// __synccall) apply the change to every thread they know of; after a clone of a multithreaded
/// process those threads do not exist in the child, and the wrapper can wait for one of them
/// forever (seen when another thread was starting or exiting at clone time).
mod raw_ids {
    use libc::{c_int, c_long, gid_t, uid_t};

    // 32-bit arm and x86 keep 16-bit ids in the plain syscalls.
    #[cfg(any(target_arch = "arm", target_arch = "x86"))]
    const NR: [c_long; 3] = [
        libc::SYS_setgroups32,
        libc::SYS_setresgid32,
        libc::SYS_setresuid32,
    ];
    #[cfg(not(any(target_arch = "arm", target_arch = "x86")))]
    const NR: [c_long; 3] = [
        libc::SYS_setgroups,
        libc::SYS_setresgid,
        libc::SYS_setresuid,
    ];

    pub fn setgroups(groups: &[gid_t]) -> c_int {
        unsafe { libc::syscall(NR[0], groups.len(), groups.as_ptr()) as c_int }
    }

    pub fn setresgid(g: gid_t) -> c_int {
        unsafe { libc::syscall(NR[1], g, g, g) as c_int }
    }

    pub fn setresuid(u: uid_t) -> c_int {
        unsafe { libc::syscall(NR[2], u, u, u) as c_int }
    }
}

fn is_executable(path: *const libc::c_char) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe {
        libc::stat(path, &mut st) == 0
            && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
            && st.st_mode & 0o111 != 0
    }
}

/// Why none of the candidates can be executed: EISDIR or EACCES when one exists (docker's 126,
/// "is a directory" / "permission denied"), else ENOENT (127, not found).
fn lookup_errno(candidates: &[std::ffi::CString]) -> c_int {
    for c in candidates {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::stat(c.as_ptr(), &mut st) } == 0 {
            return if (st.st_mode & libc::S_IFMT) == libc::S_IFDIR {
                libc::EISDIR
            } else {
                libc::EACCES
            };
        }
    }
    libc::ENOENT
}

/// Close every inherited fd except stdio, the preserved ones and those this child works with.
/// The clone copied the fd table of a possibly multithreaded process: other threads' sync
/// sockets, fifos and pipes must not stay open here until this container execs (or forever,
/// if it is never started), or their peers never see EOF and their starts hang.
fn close_inherited(p: &Plan, fds: &ChildFds) {
    let mut keep = [-1 as c_int; 16];
    let mut n = 0;
    let used = [fds.sync, fds.fifo, fds.console];
    for fd in used.into_iter().chain(p.joins.iter().map(|j| j.fd)) {
        if fd >= 0 && n < keep.len() {
            keep[n] = fd;
            n += 1;
        }
    }
    keep[..n].sort_unstable();
    let mut from = 3 + fds.preserve.max(0);
    for &k in &keep[..n] {
        if k >= from {
            close_fds(from, k - 1);
            from = k + 1;
        }
    }
    close_fds(from, c_int::MAX);
}

/// Close fds lo..=hi (nothing when hi < lo).
fn close_fds(lo: c_int, hi: c_int) {
    if hi < lo {
        return;
    }
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            lo as libc::c_uint,
            hi as libc::c_uint,
            0,
        )
    };
    if r == 0 {
        return;
    }
    // Kernels before 5.9 have no close_range.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    let max = rl.rlim_cur.min(65536) as c_int;
    for fd in lo..=hi.min(max) {
        close(fd);
    }
}

/// Mark every fd above the preserved ones close-on-exec.
fn cloexec_from(first: c_int) {
    const CLOSE_RANGE_CLOEXEC: c_int = 1 << 2;
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            !0u32,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    let max = rl.rlim_cur.min(65536) as c_int;
    for fd in first..max {
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Credentials, capabilities, NNP, rlimits, seccomp (when it can come early), cwd, umask.
fn finalize_process(p: &ProcessPlan, fds: &ChildFds) {
    unsafe {
        for (i, r) in p.rlimits.iter().enumerate() {
            let rl = libc::rlimit {
                rlim_cur: r.soft as libc::rlim_t,
                rlim_max: r.hard as libc::rlim_t,
            };
            check(fds, Step::Rlimit, i, libc::setrlimit(r.resource as _, &rl));
        }
        if p.no_new_privs {
            check(
                fds,
                Step::NoNewPrivs,
                0,
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            );
        }
        // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it while we have it.
        if let (Some(prog), false) = (&p.seccomp, p.no_new_privs) {
            let e = crate::seccomp::install(prog);
            if e != 0 {
                fail(fds, Step::Seccomp, 0, e);
            }
        }
        if !p.exec_candidates.iter().any(|c| is_executable(c.as_ptr())) {
            fail(fds, Step::ExecLookup, 0, lookup_errno(&p.exec_candidates));
        }
        cloexec_from(3 + fds.preserve);
        let e = caps::apply_bounding(&p.caps);
        if e != 0 {
            fail(fds, Step::CapBounding, 0, e);
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
        let chdir_early = libc::chdir(p.cwd.as_ptr()) == 0;
        check(fds, Step::SetGroups, 0, raw_ids::setgroups(&p.groups));
        check(fds, Step::SetGid, 0, raw_ids::setresgid(p.gid));
        check(fds, Step::SetUid, 0, raw_ids::setresuid(p.uid));
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
        if !chdir_early {
            check(fds, Step::Chdir, 0, libc::chdir(p.cwd.as_ptr()));
        }
        let e = caps::apply_sets(&p.caps);
        if e != 0 {
            fail(fds, Step::Capabilities, 0, e);
        }
        libc::umask(p.umask);
    }
}

fn reset_signals() {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

fn exec(p: &ProcessPlan, fds: &ChildFds) -> ! {
    if let (Some(prog), true) = (&p.seccomp, p.no_new_privs) {
        let e = unsafe { crate::seccomp::install(prog) };
        if e != 0 {
            fail(fds, Step::Seccomp, 0, e);
        }
    }
    reset_signals();
    let mut last = libc::ENOENT;
    for c in &p.exec_candidates {
        unsafe { libc::execve(c.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr()) };
        let e = errno();
        if e != libc::ENOENT && e != libc::ENOTDIR {
            last = e;
            break;
        }
    }
    let _ = sync::send(
        fds.sync,
        &Msg {
            kind: sync::ERROR,
            step: Step::Exec as u32,
            errno: last,
            index: 0,
        },
    );
    let msg = b"sampan: exec of the container process failed\n";
    unsafe {
        libc::write(2, msg.as_ptr() as *const c_void, msg.len());
        libc::_exit(if last == libc::ENOENT { 127 } else { 126 })
    }
}

/// The container's init: namespaces, rootfs, console, process setup, wait for start, exec.
///
/// # Safety
/// Must only be called in the child right after clone, with `p` and `fds` prepared by the
/// parent.
pub unsafe fn container_init(p: &Plan, fds: &ChildFds) -> ! {
    // Die with the creating thread until the container is created; cleared below.
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    close_inherited(p, fds);
    libc::umask(0);
    wait_go(fds);
    let mut hook_state = [0u8; sync::HOOK_STATE_MAX];
    let mut hook_state_len = 0;
    if !p.start_hooks.is_empty() {
        let r = libc::recv(
            fds.sync,
            hook_state.as_mut_ptr() as *mut c_void,
            hook_state.len(),
            0,
        );
        if r < 0 {
            fail(fds, Step::WaitParent, 1, errno());
        }
        hook_state_len = r as usize;
    }
    enter_namespaces(p, fds);
    check(fds, Step::Setsid, 0, libc::setsid());
    if let Some(h) = &p.hostname {
        check(
            fds,
            Step::Hostname,
            0,
            libc::sethostname(h.as_ptr(), h.as_bytes().len()),
        );
    }
    if let Some(d) = &p.domainname {
        check(
            fds,
            Step::Domainname,
            0,
            libc::setdomainname(d.as_ptr(), d.as_bytes().len()),
        );
    }
    if p.new_mount_ns {
        setup_rootfs(p, fds);
    }
    if p.process.terminal {
        setup_console(&p.process, fds, true);
    }
    finalize_process(&p.process, fds);
    libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
    if sync::send(fds.sync, &Msg::kind(sync::CREATED)).is_err() {
        libc::_exit(1);
    }
    // Block until `start` writes to the exec fifo.
    let mut b = 0u8;
    loop {
        let r = libc::read(fds.fifo, &mut b as *mut u8 as *mut c_void, 1);
        if r == 1 {
            break;
        }
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        fail(
            fds,
            Step::WaitStart,
            0,
            if r < 0 { errno() } else { libc::EPIPE },
        );
    }
    close(fds.fifo);
    run_start_hooks(p, fds, &hook_state[..hook_state_len]);
    exec(&p.process, fds)
}

/// startContainer hooks: fork, feed the state on stdin, exec the hook, wait; any failure
/// stops the container before its process runs.
unsafe fn run_start_hooks(p: &Plan, fds: &ChildFds, state: &[u8]) {
    for (i, h) in p.start_hooks.iter().enumerate() {
        let mut pipe = [0 as c_int; 2];
        check(
            fds,
            Step::StartHook,
            i,
            libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC),
        );
        // The state is small enough for the pipe buffer, so writing cannot block.
        let _ = sys::write_all(pipe[1], state);
        close(pipe[1]);
        let pid = libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
        if pid == 0 {
            libc::dup2(pipe[0], 0);
            libc::execve(h.path.as_ptr(), h.argv.as_ptr(), h.envp.as_ptr());
            libc::_exit(127);
        }
        close(pipe[0]);
        if pid < 0 {
            fail(fds, Step::StartHook, i, errno());
        }
        let mut st: c_int = 0;
        while libc::waitpid(pid as libc::pid_t, &mut st, 0) < 0 && errno() == libc::EINTR {}
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            fail(fds, Step::StartHook, i, 0);
        }
    }
}

/// A process exec'd into a running container: join its namespaces, set up stdio, exec.
///
/// # Safety
/// As for `container_init`.
pub unsafe fn exec_init(p: &Plan, fds: &ChildFds) -> ! {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    close_inherited(p, fds);
    wait_go(fds);
    enter_namespaces(p, fds);
    check(fds, Step::Setsid, 0, libc::setsid());
    check(fds, Step::Chdir, 0, libc::chdir(c"/".as_ptr()));
    if p.process.terminal {
        setup_console(&p.process, fds, false);
    }
    finalize_process(&p.process, fds);
    libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
    exec(&p.process, fds)
}

unsafe fn enter_namespaces(p: &Plan, fds: &ChildFds) {
    if p.new_user_ns {
        // Become root of the new user namespace now that the parent wrote the maps, then make
        // the other namespaces from inside it, as runc does: what they create at birth (the
        // mqueue root, for one) belongs to uid 0 of the container.
        check(fds, Step::BecomeRoot, 1, raw_ids::setresuid(0));
        if p.unshare_after_user != 0 {
            check(
                fds,
                Step::BecomeRoot,
                2,
                libc::unshare(p.unshare_after_user),
            );
        }
        check(fds, Step::BecomeRoot, 0, raw_ids::setresgid(0));
    }
    for (i, j) in p.joins.iter().enumerate() {
        if j.nstype == libc::CLONE_NEWPID {
            continue; // joined by the parent before clone
        }
        check(fds, Step::JoinNamespace, i, libc::setns(j.fd, j.nstype));
        close(j.fd);
    }
    if p.new_net_ns {
        loopback_up();
    }
    if p.unshare_cgroup_ns {
        check(
            fds,
            Step::UnshareCgroupNs,
            0,
            libc::unshare(libc::CLONE_NEWCGROUP),
        );
    }
}

/// Bring `lo` up in a fresh network namespace (ioctl, no netlink: nothing to allocate).
unsafe fn loopback_up() {
    let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if s < 0 {
        return;
    }
    let mut req: libc::ifreq = std::mem::zeroed();
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    if libc::ioctl(s, libc::SIOCGIFFLAGS as _, &mut req) == 0 {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        libc::ioctl(s, libc::SIOCSIFFLAGS as _, &req);
    }
    close(s);
}
