//! Translating OCI mount options ("ro", "rbind", "rslave", "size=64k", ...) into mount(2)
//! flags, propagation changes, recursive attributes and the filesystem data string.

use libc::c_ulong;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount call itself (or the bind-remount).
    pub flags: c_ulong,
    /// Flags cleared explicitly ("rw", "suid", ...) — relevant for remounts.
    pub cleared: c_ulong,
    pub bind: bool,
    pub recursive_bind: bool,
    /// MS_SHARED / MS_SLAVE / MS_PRIVATE / MS_UNBINDABLE, possibly with MS_REC, in order.
    pub propagation: Vec<c_ulong>,
    /// MOUNT_ATTR_* bits to set recursively with mount_setattr (rro, rnosuid, ...).
    pub recursive_attr_set: u64,
    pub data: Vec<String>,
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

pub fn parse(options: &[String]) -> Result<MountOptions, String> {
    let mut o = MountOptions::default();
    for opt in options {
        let set = |o: &mut MountOptions, f: c_ulong| {
            o.flags |= f;
            o.cleared &= !f;
        };
        let clear = |o: &mut MountOptions, f: c_ulong| {
            o.flags &= !f;
            o.cleared |= f;
        };
        match opt.as_str() {
            "defaults" => {}
            "ro" => set(&mut o, libc::MS_RDONLY),
            "rw" => clear(&mut o, libc::MS_RDONLY),
            "nosuid" => set(&mut o, libc::MS_NOSUID),
            "suid" => clear(&mut o, libc::MS_NOSUID),
            "nodev" => set(&mut o, libc::MS_NODEV),
            "dev" => clear(&mut o, libc::MS_NODEV),
            "noexec" => set(&mut o, libc::MS_NOEXEC),
            "exec" => clear(&mut o, libc::MS_NOEXEC),
            "sync" => set(&mut o, libc::MS_SYNCHRONOUS),
            "async" => clear(&mut o, libc::MS_SYNCHRONOUS),
            "dirsync" => set(&mut o, libc::MS_DIRSYNC),
            "remount" => set(&mut o, libc::MS_REMOUNT),
            "mand" => set(&mut o, libc::MS_MANDLOCK),
            "nomand" => clear(&mut o, libc::MS_MANDLOCK),
            "atime" => clear(&mut o, libc::MS_NOATIME),
            "noatime" => set(&mut o, libc::MS_NOATIME),
            "diratime" => clear(&mut o, libc::MS_NODIRATIME),
            "nodiratime" => set(&mut o, libc::MS_NODIRATIME),
            "relatime" => set(&mut o, libc::MS_RELATIME),
            "norelatime" => clear(&mut o, libc::MS_RELATIME),
            "strictatime" => set(&mut o, libc::MS_STRICTATIME),
            "nostrictatime" => clear(&mut o, libc::MS_STRICTATIME),
            "lazytime" => set(&mut o, libc::MS_LAZYTIME),
            "nolazytime" => clear(&mut o, libc::MS_LAZYTIME),
            "silent" => set(&mut o, libc::MS_SILENT),
            "loud" => clear(&mut o, libc::MS_SILENT),
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.recursive_bind = true;
            }
            "private" => o.propagation.push(libc::MS_PRIVATE),
            "rprivate" => o.propagation.push(libc::MS_PRIVATE | libc::MS_REC),
            "shared" => o.propagation.push(libc::MS_SHARED),
            "rshared" => o.propagation.push(libc::MS_SHARED | libc::MS_REC),
            "slave" => o.propagation.push(libc::MS_SLAVE),
            "rslave" => o.propagation.push(libc::MS_SLAVE | libc::MS_REC),
            "unbindable" => o.propagation.push(libc::MS_UNBINDABLE),
            "runbindable" => o.propagation.push(libc::MS_UNBINDABLE | libc::MS_REC),
            "rro" => o.recursive_attr_set |= MOUNT_ATTR_RDONLY,
            "rnosuid" => o.recursive_attr_set |= MOUNT_ATTR_NOSUID,
            "rnodev" => o.recursive_attr_set |= MOUNT_ATTR_NODEV,
            "rnoexec" => o.recursive_attr_set |= MOUNT_ATTR_NOEXEC,
            "rnoatime" => o.recursive_attr_set |= MOUNT_ATTR_NOATIME,
            "rstrictatime" => o.recursive_attr_set |= MOUNT_ATTR_STRICTATIME,
            "rnodiratime" => o.recursive_attr_set |= MOUNT_ATTR_NODIRATIME,
            // runc extension that copies image content up into a fresh tmpfs; the engine
            // does copy-up itself, so accepting it as a no-op keeps runc bundles working.
            "tmpcopyup" => {}
            "idmap" | "ridmap" => {
                return Err(format!(
                    "mount option {opt:?} (idmapped mounts) is not supported"
                ))
            }
            "rrw" | "rsuid" | "rdev" | "rexec" | "rrelatime" | "ratime" | "rdiratime" => {
                // Clearing recursive attributes: nothing was set by us, so nothing to do.
            }
            other => o.data.push(other.to_string()),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_and_data() {
        let o = parse(&v(&["nosuid", "strictatime", "mode=755", "size=65536k"])).unwrap();
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.data, v(&["mode=755", "size=65536k"]));
        assert!(!o.bind);
    }

    #[test]
    fn bind_and_propagation() {
        let o = parse(&v(&["rbind", "ro", "rslave", "rro"])).unwrap();
        assert!(o.bind && o.recursive_bind);
        assert_eq!(o.flags, libc::MS_RDONLY);
        assert_eq!(o.propagation, vec![libc::MS_SLAVE | libc::MS_REC]);
        assert_eq!(o.recursive_attr_set, MOUNT_ATTR_RDONLY);
    }

    #[test]
    fn rw_clears_ro() {
        let o = parse(&v(&["ro", "rw"])).unwrap();
        assert_eq!(o.flags & libc::MS_RDONLY, 0);
        assert_ne!(o.cleared & libc::MS_RDONLY, 0);
    }

    #[test]
    fn idmap_refused() {
        assert!(parse(&v(&["idmap"])).is_err());
    }
}
