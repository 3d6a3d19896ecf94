//! Test-only classic BPF interpreter: runs a program against a fake `seccomp_data` the way the
//! kernel would, so programs for any ABI (mips on an x86 host) can be checked, and refuses what
//! the kernel's checker refuses (backward or out-of-range jumps, unaligned or out-of-bounds loads,
//! falling off the end).

use super::bpf::*;
use super::Arch;

/// One syscall as the filter sees it.
pub(crate) struct Call {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

impl Call {
    pub(crate) fn new(arch: Arch, nr: u32, args: &[u64]) -> Call {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        Call {
            nr,
            arch: arch.audit_arch(),
            args: a,
        }
    }

    /// struct seccomp_data in the byte order of a kernel for `big_endian`.
    fn bytes(&self, big_endian: bool) -> [u8; 64] {
        let mut b = [0u8; 64];
        let (nr, arch) = if big_endian {
            (self.nr.to_be_bytes(), self.arch.to_be_bytes())
        } else {
            (self.nr.to_le_bytes(), self.arch.to_le_bytes())
        };
        b[0..4].copy_from_slice(&nr);
        b[4..8].copy_from_slice(&arch);
        // instruction_pointer at 8..16 stays 0.
        for (i, a) in self.args.iter().enumerate() {
            let v = if big_endian {
                a.to_be_bytes()
            } else {
                a.to_le_bytes()
            };
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v);
        }
        b
    }
}

/// Runs `prog` on `call` and returns the filter's return value.
pub(crate) fn run(prog: &[SockFilter], big_endian: bool, call: &Call) -> u32 {
    assert!(
        !prog.is_empty() && prog.len() <= BPF_MAXINSNS,
        "program length {}",
        prog.len()
    );
    let data = call.bytes(big_endian);
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let ins = *prog
            .get(pc)
            .unwrap_or_else(|| panic!("fell off the end at {pc}"));
        let jump = |off: usize| -> usize {
            let to = pc + 1 + off;
            assert!(to < prog.len(), "jump from {pc} past the end");
            to
        };
        match ins.code {
            c if c == BPF_LD | BPF_W | BPF_ABS => {
                let k = ins.k as usize;
                assert!(
                    k.is_multiple_of(4) && k + 4 <= data.len(),
                    "bad load offset {k} at {pc}"
                );
                let w = [data[k], data[k + 1], data[k + 2], data[k + 3]];
                a = if big_endian {
                    u32::from_be_bytes(w)
                } else {
                    u32::from_le_bytes(w)
                };
                pc += 1;
            }
            c if c == BPF_ALU | BPF_AND | BPF_K => {
                a &= ins.k;
                pc += 1;
            }
            c if c == BPF_JMP | BPF_JA => pc = jump(ins.k as usize),
            c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                pc = jump(if a == ins.k { ins.jt } else { ins.jf } as usize)
            }
            c if c == BPF_JMP | BPF_JGT | BPF_K => {
                pc = jump(if a > ins.k { ins.jt } else { ins.jf } as usize)
            }
            c if c == BPF_JMP | BPF_JGE | BPF_K => {
                pc = jump(if a >= ins.k { ins.jt } else { ins.jf } as usize)
            }
            c if c == BPF_RET | BPF_K => return ins.k,
            c => panic!("unexpected opcode {c:#x} at {pc}"),
        }
    }
}
