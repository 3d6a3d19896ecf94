//! Compiler tests: programs for every ABI are run in the test interpreter (bpf_vm.rs).

use oci_spec::runtime::LinuxSeccomp;

use super::action::*;
use super::bpf_vm::{run, Call};
use super::profile::build;
use super::*;

const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
const ALLOW: u32 = RET_ALLOW;

fn spec(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).expect("test spec parses")
}

fn caps(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A compiled program plus the ABI it was compiled for, to run calls through.
struct Filter {
    prog: Program,
    native: Arch,
}

impl Filter {
    fn new(s: &LinuxSeccomp, native: Arch) -> Filter {
        Filter {
            prog: compile_for(s, native).expect("compiles"),
            native,
        }
    }

    fn docker(capabilities: &[&str], native: Arch) -> Filter {
        Filter::new(&build(&caps(capabilities), native, true), native)
    }

    /// The action for syscall `name` made by an `arch` process.
    fn call(&self, arch: Arch, name: &str, args: &[u64]) -> u32 {
        let nr = syscall_number(arch, name).unwrap_or_else(|| panic!("{name} on {arch:?}"));
        self.nr(arch, nr, args)
    }

    fn nr(&self, arch: Arch, nr: u32, args: &[u64]) -> u32 {
        run(
            &self.prog.filters,
            self.native.big_endian(),
            &Call::new(arch, nr, args),
        )
    }
}

#[test]
fn audit_arch_values() {
    assert_eq!(Arch::X86_64.audit_arch(), 0xc000_003e);
    assert_eq!(Arch::X32.audit_arch(), 0xc000_003e);
    assert_eq!(Arch::X86.audit_arch(), 0x4000_0003);
    assert_eq!(Arch::Aarch64.audit_arch(), 0xc000_00b7);
    assert_eq!(Arch::Arm.audit_arch(), 0x4000_0028);
    assert_eq!(Arch::Mips.audit_arch(), 0x0000_0008);
    assert_eq!(Arch::Mipsel.audit_arch(), 0x4000_0008);
    use oci_spec::runtime::Arch as O;
    assert_eq!(Arch::from_oci(&O::ScmpArchX32), Some(Arch::X32));
    assert_eq!(Arch::from_oci(&O::ScmpArchMipsel), Some(Arch::Mipsel));
    assert_eq!(Arch::from_oci(&O::ScmpArchNative), Some(Arch::native()));
    assert_eq!(Arch::from_oci(&O::ScmpArchS390x), None);
    #[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
    assert_eq!(Arch::native(), Arch::X86_64);
}

#[test]
fn syscall_numbers() {
    assert_eq!(syscall_number(Arch::X86_64, "read"), Some(0));
    assert_eq!(syscall_number(Arch::X86_64, "mount"), Some(165));
    assert_eq!(syscall_number(Arch::X32, "read"), Some(0x4000_0000));
    assert_eq!(syscall_number(Arch::X32, "rt_sigaction"), Some(0x4000_0200));
    assert_eq!(syscall_number(Arch::X86, "socketcall"), Some(102));
    assert_eq!(syscall_number(Arch::Aarch64, "openat"), Some(56));
    assert_eq!(syscall_number(Arch::Aarch64, "open"), None);
    assert_eq!(syscall_number(Arch::Arm, "set_tls"), Some(0xf0005));
    assert_eq!(syscall_number(Arch::Arm, "sync_file_range2"), Some(341));
    assert_eq!(syscall_number(Arch::Mips, "read"), Some(4003));
    assert_eq!(syscall_number(Arch::Mipsel, "mount"), Some(4021));
    assert_eq!(syscall_number(Arch::X86_64, "futex_wake"), Some(454));
    assert_eq!(syscall_number(Arch::X86_64, "no_such_call"), None);
    // The build's own libc agrees for the native ABI.
    #[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
    for (name, nr) in [
        ("uname", libc::SYS_uname),
        ("getcwd", libc::SYS_getcwd),
        ("personality", libc::SYS_personality),
        ("clone3", libc::SYS_clone3),
        ("kexec_load", libc::SYS_kexec_load),
    ] {
        assert_eq!(
            syscall_number(Arch::X86_64, name),
            Some(nr as u32),
            "{name}"
        );
    }
}

#[test]
fn docker_profile_x86_64() {
    let f = Filter::docker(&[], Arch::X86_64);
    let x = Arch::X86_64;
    assert_eq!(f.call(x, "read", &[]), ALLOW);
    assert_eq!(f.call(x, "arch_prctl", &[]), ALLOW);
    assert_eq!(f.call(x, "mount", &[]), EPERM);
    assert_eq!(f.call(x, "kexec_load", &[]), EPERM);
    assert_eq!(f.call(x, "unshare", &[libc::CLONE_NEWUSER as u64]), EPERM);
    assert_eq!(f.call(x, "open_by_handle_at", &[]), EPERM);
    // A number no table knows.
    assert_eq!(f.nr(x, 9999, &[]), EPERM);
    assert_eq!(f.nr(x, u32::MAX, &[]), EPERM);

    // personality: only the Linux personas and the query.
    for ok in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
        assert_eq!(f.call(x, "personality", &[ok]), ALLOW, "{ok:#x}");
    }
    for bad in [0x40_0000, 0x0400_0000, 0x1_0000_0000, 0xffff_ffff_ffff_ffff] {
        assert_eq!(f.call(x, "personality", &[bad]), EPERM, "{bad:#x}");
    }

    // clone: no namespace flags without CAP_SYS_ADMIN; clone3 -> ENOSYS so libc falls back.
    let sigchld = libc::SIGCHLD as u64;
    let thread = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_THREAD) as u64;
    assert_eq!(f.call(x, "clone", &[sigchld]), ALLOW);
    assert_eq!(f.call(x, "clone", &[thread]), ALLOW);
    for ns in [
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWCGROUP,
    ] {
        assert_eq!(f.call(x, "clone", &[sigchld | ns as u64]), EPERM, "{ns:#x}");
    }
    assert_eq!(f.call(x, "clone3", &[]), RET_ERRNO | libc::ENOSYS as u32);

    // socket: everything but AF_ALG (38) and AF_VSOCK (40).
    for (family, want) in [
        (1, ALLOW),
        (2, ALLOW),
        (10, ALLOW),
        (16, ALLOW),
        (37, ALLOW),
    ] {
        assert_eq!(f.call(x, "socket", &[family]), want, "{family}");
    }
    for (family, want) in [
        (38, EPERM),
        (39, ALLOW),
        (40, EPERM),
        (41, ALLOW),
        (45, ALLOW),
    ] {
        assert_eq!(f.call(x, "socket", &[family]), want, "{family}");
    }

    // i386 processes: their own numbers, 32-bit argument comparisons.
    let i = Arch::X86;
    assert_eq!(f.call(i, "read", &[]), ALLOW);
    assert_eq!(f.call(i, "socketcall", &[]), ALLOW);
    assert_eq!(f.call(i, "mount", &[]), EPERM);
    assert_eq!(f.call(i, "personality", &[8]), ALLOW);
    assert_eq!(f.call(i, "personality", &[0x40_0000]), EPERM);
    assert_eq!(
        f.call(i, "clone", &[sigchld | libc::CLONE_NEWUSER as u64]),
        EPERM
    );
    assert_eq!(f.call(i, "socket", &[40]), EPERM);

    // x32 processes: x86_64's audit arch, numbers with the x32 bit.
    let x32 = Arch::X32;
    assert_eq!(f.call(x32, "read", &[]), ALLOW);
    assert_eq!(f.call(x32, "rt_sigaction", &[]), ALLOW);
    assert_eq!(f.call(x32, "mount", &[]), EPERM);
    // x86_64's rt_sigaction number with the x32 bit is not an x32 call.
    assert_eq!(f.nr(x32, 13 | 0x4000_0000, &[]), EPERM);

    // An ABI an x86 kernel cannot run.
    assert_eq!(f.call(Arch::Aarch64, "read", &[]), RET_KILL_PROCESS);
}

#[test]
fn docker_profile_capabilities() {
    let x = Arch::X86_64;
    let sigchld = libc::SIGCHLD as u64;
    let admin = Filter::docker(&["CAP_SYS_ADMIN"], x);
    assert_eq!(admin.call(x, "mount", &[]), ALLOW);
    assert_eq!(admin.call(x, "unshare", &[]), ALLOW);
    assert_eq!(admin.call(x, "setns", &[]), ALLOW);
    assert_eq!(
        admin.call(x, "clone", &[sigchld | libc::CLONE_NEWUSER as u64]),
        ALLOW
    );
    assert_eq!(admin.call(x, "clone3", &[]), ALLOW);
    assert_eq!(admin.call(Arch::X86, "mount", &[]), ALLOW);
    assert_eq!(admin.call(x, "reboot", &[]), EPERM);
    assert_eq!(admin.call(x, "init_module", &[]), EPERM);

    // The "CAP_" prefix is optional.
    let boot = Filter::docker(&["SYS_BOOT", "CAP_SYS_MODULE", "CAP_SYS_TIME"], x);
    assert_eq!(boot.call(x, "reboot", &[]), ALLOW);
    assert_eq!(boot.call(x, "finit_module", &[]), ALLOW);
    assert_eq!(boot.call(x, "clock_settime", &[]), ALLOW);
    assert_eq!(boot.call(x, "mount", &[]), EPERM);

    // ptrace: allowed from Linux 4.8 on; before, only with CAP_SYS_PTRACE.
    let plain = Filter::docker(&[], x);
    assert_eq!(plain.call(x, "ptrace", &[]), ALLOW);
    assert_eq!(plain.call(x, "kcmp", &[]), EPERM);
    let old = Filter::new(&build(&[], x, false), x);
    assert_eq!(old.call(x, "ptrace", &[]), EPERM);
    let old_ptrace = Filter::new(&build(&caps(&["CAP_SYS_PTRACE"]), x, false), x);
    assert_eq!(old_ptrace.call(x, "ptrace", &[]), ALLOW);
    assert_eq!(old_ptrace.call(x, "kcmp", &[]), ALLOW);
}

#[test]
fn docker_profile_arm() {
    for native in [Arch::Aarch64, Arch::Arm] {
        let f = Filter::docker(&[], native);
        let a = Arch::Arm;
        assert_eq!(f.call(a, "read", &[]), ALLOW);
        assert_eq!(f.call(a, "mount", &[]), EPERM);
        assert_eq!(f.call(a, "kexec_load", &[]), EPERM);
        assert_eq!(f.call(a, "set_tls", &[]), ALLOW);
        assert_eq!(f.call(a, "cacheflush", &[]), ALLOW);
        assert_eq!(f.call(a, "arm_fadvise64_64", &[]), ALLOW);
        assert_eq!(f.call(a, "personality", &[0x20008]), ALLOW);
        assert_eq!(f.call(a, "personality", &[0x40_0000]), EPERM);
        assert_eq!(f.call(a, "clone", &[libc::CLONE_NEWNET as u64]), EPERM);
        assert_eq!(f.call(a, "clone", &[libc::SIGCHLD as u64]), ALLOW);
        assert_eq!(f.call(Arch::X86_64, "read", &[]), RET_KILL_PROCESS);
    }
    let f = Filter::docker(&[], Arch::Aarch64);
    let a = Arch::Aarch64;
    assert_eq!(f.call(a, "read", &[]), ALLOW);
    assert_eq!(f.call(a, "openat", &[]), ALLOW);
    assert_eq!(f.call(a, "mount", &[]), EPERM);
    assert_eq!(f.call(a, "kexec_load", &[]), EPERM);
    assert_eq!(f.call(a, "personality", &[0x1_0000_0000]), EPERM);
    assert_eq!(f.call(a, "socket", &[40]), EPERM);
    assert_eq!(f.call(a, "socket", &[2]), ALLOW);
    let admin = Filter::docker(&["CAP_SYS_ADMIN"], Arch::Aarch64);
    assert_eq!(admin.call(a, "mount", &[]), ALLOW);
    assert_eq!(admin.call(Arch::Arm, "mount", &[]), ALLOW);
    // A 32-bit arm runtime lists only arm, like Docker: aarch64 processes are a bad arch.
    let arm = Filter::docker(&[], Arch::Arm);
    assert_eq!(arm.call(Arch::Aarch64, "read", &[]), RET_KILL_PROCESS);
}

#[test]
fn docker_profile_mips() {
    for native in [Arch::Mips, Arch::Mipsel] {
        let f = Filter::docker(&[], native);
        assert_eq!(f.call(native, "read", &[]), ALLOW);
        assert_eq!(f.nr(native, 4003, &[]), ALLOW);
        assert_eq!(f.call(native, "_llseek", &[]), ALLOW);
        assert_eq!(f.call(native, "mount", &[]), EPERM);
        assert_eq!(f.call(native, "kexec_load", &[]), EPERM);
        // o32 numbers start at 4000: low numbers are nothing.
        assert_eq!(f.nr(native, 3, &[]), EPERM);
        // Argument words in the right order for the byte order.
        assert_eq!(f.call(native, "personality", &[8]), ALLOW);
        assert_eq!(f.call(native, "personality", &[0xffff_ffff]), ALLOW);
        assert_eq!(f.call(native, "personality", &[0x40_0000]), EPERM);
        assert_eq!(f.call(native, "clone", &[libc::SIGCHLD as u64]), ALLOW);
        assert_eq!(f.call(native, "clone", &[0x7E02_0000]), EPERM);
        assert_eq!(f.call(native, "socket", &[40]), EPERM);
        assert_eq!(f.call(native, "socket", &[1]), ALLOW);
        assert_eq!(
            f.call(native, "clone3", &[]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        let other = if native == Arch::Mips {
            Arch::Mipsel
        } else {
            Arch::Mips
        };
        assert_eq!(f.call(other, "read", &[]), RET_KILL_PROCESS);
        let admin = Filter::docker(&["CAP_SYS_ADMIN"], native);
        assert_eq!(admin.call(native, "mount", &[]), ALLOW);
    }
}

/// Instruction counts of Docker's profile, printed for the record (`--nocapture`).
#[test]
fn docker_profile_sizes() {
    for native in [
        Arch::X86_64,
        Arch::X86,
        Arch::X32,
        Arch::Aarch64,
        Arch::Arm,
        Arch::Mips,
        Arch::Mipsel,
    ] {
        let none = compile_for(&build(&[], native, true), native).unwrap();
        let all = build(
            &caps(&[
                "CAP_SYS_ADMIN",
                "CAP_SYS_PTRACE",
                "CAP_SYS_BOOT",
                "CAP_SYS_MODULE",
                "CAP_SYS_TIME",
                "CAP_SYS_NICE",
                "CAP_BPF",
                "CAP_PERFMON",
                "CAP_SYSLOG",
                "CAP_DAC_READ_SEARCH",
                "CAP_SYS_RAWIO",
                "CAP_SYS_PACCT",
                "CAP_SYS_CHROOT",
                "CAP_SYS_TTY_CONFIG",
            ]),
            native,
            true,
        );
        let all = compile_for(&all, native).unwrap();
        eprintln!(
            "docker profile {native:?}: {} instructions (no caps), {} (all caps)",
            none.filters.len(),
            all.filters.len()
        );
        assert!(
            none.filters.len() < 1024,
            "{native:?}: {}",
            none.filters.len()
        );
    }
}

#[test]
fn x32_only_when_listed() {
    let only64 = spec(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["read","getcwd"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let f = Filter::new(&only64, Arch::X86_64);
    assert_eq!(f.call(Arch::X86_64, "read", &[]), ALLOW);
    assert_eq!(f.call(Arch::X32, "read", &[]), EPERM);
    assert_eq!(f.call(Arch::X32, "getcwd", &[]), EPERM);
    assert_eq!(f.call(Arch::X86, "read", &[]), RET_KILL_PROCESS);

    let with32 = spec(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X32"],
            "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let f = Filter::new(&with32, Arch::X86_64);
    assert_eq!(f.call(Arch::X32, "read", &[]), ALLOW);
    assert_eq!(f.call(Arch::X86_64, "read", &[]), ALLOW);
    assert_eq!(f.call(Arch::X32, "write", &[]), EPERM);

    // No list at all: the native ABI only. Foreign ABIs in the list are ignored.
    let bare = spec(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_AARCH64","SCMP_ARCH_PPC64LE"],
            "syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    let f = Filter::new(&bare, Arch::X86_64);
    assert_eq!(f.call(Arch::X86_64, "mount", &[]), EPERM);
    assert_eq!(f.call(Arch::X86_64, "read", &[]), ALLOW);
    assert_eq!(
        f.call(Arch::X32, "read", &[]),
        ALLOW,
        "default action for x32"
    );
    assert_eq!(f.call(Arch::Aarch64, "read", &[]), RET_KILL_PROCESS);
}

#[test]
fn actions_and_errno() {
    let s = spec(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW"},
            {"names":["write"],"action":"SCMP_ACT_LOG"},
            {"names":["open"],"action":"SCMP_ACT_KILL"},
            {"names":["close"],"action":"SCMP_ACT_KILL_PROCESS"},
            {"names":["stat"],"action":"SCMP_ACT_KILL_THREAD"},
            {"names":["fstat"],"action":"SCMP_ACT_TRAP"},
            {"names":["lstat"],"action":"SCMP_ACT_TRACE","errnoRet":7},
            {"names":["poll"],"action":"SCMP_ACT_TRACE"},
            {"names":["lseek"],"action":"SCMP_ACT_ERRNO","errnoRet":42},
            {"names":["mmap"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    let f = Filter::new(&s, Arch::X86_64);
    let x = Arch::X86_64;
    assert_eq!(f.call(x, "read", &[]), RET_ALLOW);
    assert_eq!(f.call(x, "write", &[]), RET_LOG);
    assert_eq!(f.call(x, "open", &[]), RET_KILL_THREAD);
    assert_eq!(f.call(x, "close", &[]), RET_KILL_PROCESS);
    assert_eq!(f.call(x, "stat", &[]), RET_KILL_THREAD);
    assert_eq!(f.call(x, "fstat", &[]), RET_TRAP);
    assert_eq!(f.call(x, "lstat", &[]), RET_TRACE | 7);
    assert_eq!(f.call(x, "poll", &[]), RET_TRACE | 1);
    assert_eq!(f.call(x, "lseek", &[]), RET_ERRNO | 42);
    assert_eq!(f.call(x, "mmap", &[]), RET_ERRNO | 1);
    assert_eq!(f.call(x, "munmap", &[]), RET_ERRNO | 38);

    let flags = spec(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC",
            "SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#,
    );
    assert_eq!(compile_for(&flags, Arch::X86_64).unwrap().flags, 7);
    let no_flags = spec(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
    assert_eq!(compile_for(&no_flags, Arch::X86_64).unwrap().flags, 0);
}

#[test]
fn rules_with_the_default_action_are_dropped() {
    let base = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
        {"names":["read"],"action":"SCMP_ACT_ALLOW"}"#;
    let plain = compile_for(&spec(&format!("{base}]}}")), Arch::X86_64).unwrap();
    let noop = compile_for(
        &spec(&format!(
            r#"{base},{{"names":["uname"],"action":"SCMP_ACT_ERRNO"}}]}}"#
        )),
        Arch::X86_64,
    )
    .unwrap();
    assert_eq!(plain.filters, noop.filters);
}

#[test]
fn rule_order_and_conjunction() {
    let s = spec(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["kill"],"action":"SCMP_ACT_ERRNO","errnoRet":10,
             "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":9,"op":"SCMP_CMP_EQ"}]},
            {"names":["getpriority","kill"],"action":"SCMP_ACT_ERRNO","errnoRet":63,
             "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
            {"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":64,
             "args":[{"index":0,"value":1,"op":"SCMP_CMP_GE"}]},
            {"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":65,
             "args":[{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    for native in [Arch::X86_64, Arch::Mips, Arch::Arm] {
        let f = Filter::new(&s, native);
        let k = |args: &[u64]| f.call(native, "kill", args);
        assert_eq!(k(&[1, 9]), RET_ERRNO | 10);
        assert_eq!(k(&[1, 15]), RET_ERRNO | 63);
        assert_eq!(k(&[2, 9]), ALLOW);
        let g = |args: &[u64]| f.call(native, "getpriority", args);
        assert_eq!(g(&[0]), ALLOW);
        assert_eq!(g(&[1]), RET_ERRNO | 63);
        // First match in spec order: the GE rule shadows the later EQ 2 rule.
        assert_eq!(g(&[2]), RET_ERRNO | 64);
        assert_eq!(g(&[7]), RET_ERRNO | 64);
    }
}

/// Every operator against a reference, on a 64-bit little-endian ABI and on 32-bit ABIs of both
/// byte orders (low words only).
#[test]
fn argument_operators() {
    let values: [u64; 10] = [
        0,
        1,
        5,
        0x7fff_ffff,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0005,
        0x8000_0000_0000_0000,
        0xffff_ffff_0000_0005,
        u64::MAX,
    ];
    let ops = [
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
    ];
    let reference = |op: &str, arg: u64, v: u64| match op {
        "SCMP_CMP_NE" => arg != v,
        "SCMP_CMP_LT" => arg < v,
        "SCMP_CMP_LE" => arg <= v,
        "SCMP_CMP_EQ" => arg == v,
        "SCMP_CMP_GE" => arg >= v,
        "SCMP_CMP_GT" => arg > v,
        _ => unreachable!(),
    };
    for native in [Arch::X86_64, Arch::Arm, Arch::Mips] {
        let narrow = |x: u64| {
            if native == Arch::X86_64 {
                x
            } else {
                x & 0xffff_ffff
            }
        };
        for op in ops {
            for v in values {
                let s = spec(&format!(
                    r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["getpriority"],
                       "action":"SCMP_ACT_ERRNO","errnoRet":99,
                       "args":[{{"index":3,"value":{v},"op":"{op}"}}]}}]}}"#
                ));
                let f = Filter::new(&s, native);
                for arg in values {
                    let want = if reference(op, narrow(arg), narrow(v)) {
                        RET_ERRNO | 99
                    } else {
                        ALLOW
                    };
                    // Other arguments must not matter.
                    let args = [u64::MAX, 0, 0x1234_5678_9abc_def0, arg, 0, u64::MAX];
                    assert_eq!(
                        f.call(native, "getpriority", &args),
                        want,
                        "{native:?}: arg {arg:#x} {op} {v:#x}"
                    );
                }
            }
        }
        let masks = [
            0u64,
            0xff,
            0x7E02_0000,
            0xffff_ffff,
            0xf_0000_0000,
            u64::MAX,
        ];
        for mask in masks {
            for datum in values {
                let s = spec(&format!(
                    r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["getpriority"],
                       "action":"SCMP_ACT_ERRNO","errnoRet":99,
                       "args":[{{"index":5,"value":{mask},"valueTwo":{datum},
                                 "op":"SCMP_CMP_MASKED_EQ"}}]}}]}}"#
                ));
                let f = Filter::new(&s, native);
                for arg in values {
                    let hit = narrow(arg) & narrow(mask) == narrow(datum);
                    let want = if hit { RET_ERRNO | 99 } else { ALLOW };
                    let args = [0, 0, 0, 0, 0, arg];
                    assert_eq!(
                        f.call(native, "getpriority", &args),
                        want,
                        "{native:?}: arg {arg:#x} & {mask:#x} == {datum:#x}"
                    );
                }
            }
        }
    }
}

/// Enough distinct argument tests that jumps from the search to the rule chains exceed the
/// 255-instruction reach of conditional jumps, and a spec too big for the kernel.
#[test]
fn long_programs() {
    let names: Vec<&str> = super::syscall_table::SYSCALLS
        .iter()
        .filter(|(_, nrs)| nrs[0] != super::syscall_table::N)
        .map(|(n, _)| *n)
        .take(250)
        .collect();
    let rules: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                r#"{{"names":["{n}"],"action":"SCMP_ACT_ERRNO","errnoRet":{},
                   "args":[{{"index":1,"value":{},"op":"SCMP_CMP_EQ"}}]}}"#,
                i + 1,
                1000 + i
            )
        })
        .collect();
    let s = spec(&format!(
        r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{}]}}"#,
        rules.join(",")
    ));
    let f = Filter::new(&s, Arch::X86_64);
    assert!(f.prog.filters.len() > 1000, "{}", f.prog.filters.len());
    for (i, n) in names.iter().enumerate() {
        let hit = f.call(Arch::X86_64, n, &[0, 1000 + i as u64]);
        assert_eq!(hit, RET_ERRNO | (i as u32 + 1), "{n}");
        assert_eq!(f.call(Arch::X86_64, n, &[0, 999 + i as u64]), ALLOW, "{n}");
    }

    // Too big: four tests on each of 250 calls, for three ABIs.
    // (Distinct values, so no two calls share a rule chain.)
    let big: Vec<String> = names
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            (0..4).map(move |j| {
                format!(
                    r#"{{"names":["{n}"],"action":"SCMP_ACT_ERRNO",
                       "args":[{{"index":{j},"value":{},"op":"SCMP_CMP_EQ"}}]}}"#,
                    i * 4 + j
                )
            })
        })
        .collect();
    let s = spec(&format!(
        r#"{{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "syscalls":[{}]}}"#,
        big.join(",")
    ));
    let err = match compile_for(&s, Arch::X86_64) {
        Ok(p) => panic!("compiled to {} instructions", p.filters.len()),
        Err(e) => e,
    };
    assert!(
        err.to_string()
            .contains("more than the kernel's limit of 4096"),
        "{err}"
    );
}

#[test]
fn names_known_elsewhere_are_skipped() {
    // x86-only, arm-only and riscv-only names in an x86_64 / mips profile.
    let s = spec(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[
            {"names":["socketcall","set_tls","riscv_hwprobe","_llseek","read"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let f = Filter::new(&s, Arch::X86_64);
    assert_eq!(f.call(Arch::X86_64, "read", &[]), ALLOW);
    let f = Filter::new(&s, Arch::Mips);
    assert_eq!(f.call(Arch::Mips, "_llseek", &[]), ALLOW);
    assert_eq!(f.call(Arch::Mips, "socketcall", &[]), ALLOW);
}

#[test]
fn errors_name_the_problem() {
    let detail = |json: &str| {
        let e = compile_for(&spec(json), Arch::X86_64).unwrap_err();
        assert_eq!(e.step, "seccomp");
        e.detail.unwrap()
    };
    let d = detail(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read","foo"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    assert_eq!(d, "unknown syscall name \"foo\"");
    let d = detail(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    );
    assert!(d.contains("SCMP_ACT_NOTIFY") && d.contains("read"), "{d}");
    let d = detail(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
    assert!(
        d.contains("SCMP_ACT_NOTIFY") && d.contains("defaultAction"),
        "{d}"
    );
    let d = detail(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO",
            "args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    assert!(d.contains("argument index 6") && d.contains("read"), "{d}");
    let d = detail(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoRet":70000}]}"#,
    );
    assert!(d.contains("errnoRet 70000"), "{d}");
    // A bad operator never reaches the compiler: the spec does not parse.
    let bad_op = serde_json::from_str::<LinuxSeccomp>(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO",
            "args":[{"index":0,"value":1,"op":"SCMP_CMP_BOGUS"}]}]}"#,
    );
    assert!(bad_op.is_err());
}
