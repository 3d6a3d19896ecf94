//! The parent/child protocol on a SOCK_SEQPACKET pair: fixed-size messages, so the child can
//! send and receive them without allocating.

use libc::c_int;

pub const GO: u32 = 1;
pub const HOOKS: u32 = 2;
pub const CREATED: u32 = 3;
pub const ERROR: u32 = 4;
/// The state JSON for startContainer hooks travels as one datagram right after GO.
pub const HOOK_STATE_MAX: usize = 16384;

/// One list makes both the enum and its decoder, so a new step cannot be left out of either.
macro_rules! steps {
    ($first:ident, $($name:ident),* $(,)?) => {
        /// Steps the child reports failures for; `index` says which op/rlimit/namespace.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Step {
            $first = 1,
            $($name),*
        }

        impl Step {
            pub fn from_u32(n: u32) -> Option<Step> {
                [Step::$first, $(Step::$name),*]
                    .into_iter()
                    .find(|s| *s as u32 == n)
            }
        }
    };
}

steps!(
    WaitParent,
    BecomeRoot,
    JoinNamespace,
    UnshareCgroupNs,
    Setsid,
    Hostname,
    Domainname,
    RootPropagation,
    BindRootfs,
    OpenRootfs,
    PreOp,
    PivotRoot,
    PostOp,
    ReadonlyRoot,
    Console,
    Rlimit,
    NoNewPrivs,
    Seccomp,
    ExecLookup,
    CapBounding,
    SetGroups,
    SetGid,
    SetUid,
    Capabilities,
    Chdir,
    WaitStart,
    Exec,
    StartHook,
);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msg {
    pub kind: u32,
    pub step: u32,
    pub errno: i32,
    pub index: u32,
}

impl Msg {
    pub fn kind(kind: u32) -> Msg {
        Msg {
            kind,
            ..Default::default()
        }
    }
}

/// Returns the bytes sent or -errno; never allocates.
pub fn send(fd: c_int, m: &Msg) -> Result<(), c_int> {
    loop {
        let r = unsafe {
            libc::send(
                fd,
                m as *const Msg as *const libc::c_void,
                std::mem::size_of::<Msg>(),
                libc::MSG_NOSIGNAL,
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = crate::sys::errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Ok(None) on EOF (the other side closed or exec'd).
pub fn recv(fd: c_int) -> Result<Option<Msg>, c_int> {
    let mut m = Msg::default();
    loop {
        let r = unsafe {
            libc::recv(
                fd,
                &mut m as *mut Msg as *mut libc::c_void,
                std::mem::size_of::<Msg>(),
                0,
            )
        };
        if r == 0 {
            return Ok(None);
        }
        if r > 0 {
            return Ok(Some(m));
        }
        let e = crate::sys::errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

pub fn socketpair() -> std::io::Result<(c_int, c_int)> {
    let mut fds = [0 as c_int; 2];
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}
