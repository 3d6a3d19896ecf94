//! OCI actions and flags to the values the kernel's seccomp understands.

use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompFilterFlag};

use crate::error::{Error, Result};

// SECCOMP_RET_* from <linux/seccomp.h>. The low 16 bits (SECCOMP_RET_DATA) carry the errno for
// ERRNO and the message for TRACE.
pub(crate) const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub(crate) const RET_KILL_THREAD: u32 = 0x0000_0000;
pub(crate) const RET_TRAP: u32 = 0x0003_0000;
pub(crate) const RET_ERRNO: u32 = 0x0005_0000;
pub(crate) const RET_TRACE: u32 = 0x7ff0_0000;
pub(crate) const RET_LOG: u32 = 0x7ffc_0000;
pub(crate) const RET_ALLOW: u32 = 0x7fff_0000;
const RET_DATA: u32 = 0x0000_ffff;

// SECCOMP_FILTER_FLAG_* for seccomp(SECCOMP_SET_MODE_FILTER, flags, ...).
pub const FILTER_FLAG_TSYNC: u32 = 1 << 0;
pub const FILTER_FLAG_LOG: u32 = 1 << 1;
pub const FILTER_FLAG_SPEC_ALLOW: u32 = 1 << 2;

/// The filter return value for an action. `errno_ret` is used by ERRNO and TRACE and defaults to
/// EPERM, as runc does, so a bare SCMP_ACT_ERRNO means "Operation not permitted". `what` names the
/// rule in error messages.
pub(crate) fn action_value(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    what: &str,
) -> Result<u32> {
    let data = || -> Result<u32> {
        let n = errno_ret.unwrap_or(libc::EPERM as u32);
        if n > RET_DATA {
            return Err(Error::invalid(
                "seccomp",
                format!("{what}: errnoRet {n} does not fit in 16 bits"),
            ));
        }
        Ok(n)
    };
    Ok(match action {
        // SCMP_ACT_KILL has always meant the thread (SECCOMP_RET_KILL), kept for old profiles.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | data()?,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | data()?,
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::invalid(
                "seccomp",
                format!("{what}: SCMP_ACT_NOTIFY is not supported (no seccomp agent support yet)"),
            ))
        }
    })
}

/// OR of the SECCOMP_FILTER_FLAG_* bits the spec asks for.
pub(crate) fn filter_flags(flags: Option<&Vec<LinuxSeccompFilterFlag>>) -> u32 {
    let mut bits = 0;
    for f in flags.into_iter().flatten() {
        bits |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FILTER_FLAG_SPEC_ALLOW,
            // Only changes how a notify listener waits; without NEW_LISTENER the kernel would
            // reject it with EINVAL, and there is no listener since NOTIFY is refused above.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    bits
}
