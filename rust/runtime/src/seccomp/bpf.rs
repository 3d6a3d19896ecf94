//! Classic BPF instructions and a back-to-front assembler for them.
//!
//! Classic BPF only jumps forward, and a conditional jump reaches at most 255 instructions. Emitting
//! the program from its last instruction to its first means every jump target is already placed
//! when the jump is written, so its distance is known; a target out of reach gets an unconditional
//! `ja` (32-bit offset) placed right after the jump as a trampoline. Nothing is ever patched.

/// One instruction, laid out like the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Opcode pieces from <linux/filter.h>; only what seccomp filters need.
pub(crate) const BPF_LD: u16 = 0x00;
pub(crate) const BPF_ALU: u16 = 0x04;
pub(crate) const BPF_JMP: u16 = 0x05;
pub(crate) const BPF_RET: u16 = 0x06;
pub(crate) const BPF_W: u16 = 0x00;
pub(crate) const BPF_ABS: u16 = 0x20;
pub(crate) const BPF_AND: u16 = 0x50;
pub(crate) const BPF_JA: u16 = 0x00;
pub(crate) const BPF_JEQ: u16 = 0x10;
pub(crate) const BPF_JGT: u16 = 0x20;
pub(crate) const BPF_JGE: u16 = 0x30;
pub(crate) const BPF_K: u16 = 0x00;

/// The kernel refuses longer programs (BPF_MAXINSNS).
pub const BPF_MAXINSNS: usize = 4096;

/// A place in the program being built: counted from the program's end (0 = last instruction),
/// which stays valid while instructions are added in front.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Label(usize);

/// Where a jump goes: code already emitted, or "return this action", for which the assembler
/// finds or adds a nearby `ret`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Code(Label),
    Ret(u32),
}

pub(crate) struct Assembler {
    /// Instructions in reverse order: `rev[0]` is the program's last instruction.
    rev: Vec<SockFilter>,
    /// The most recent `ret` emitted for each action, reused while it is within reach.
    rets: Vec<(u32, Label)>,
}

/// Reuse an existing `ret` only if a jump from here reaches it comfortably; otherwise emitting a
/// fresh one costs the same single instruction as a trampoline and is reusable in turn.
const RET_REUSE_REACH: usize = 200;

impl Assembler {
    pub(crate) fn new() -> Self {
        Assembler {
            rev: Vec::new(),
            rets: Vec::new(),
        }
    }

    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) -> Label {
        self.rev.push(SockFilter { code, jt, jf, k });
        Label(self.rev.len() - 1)
    }

    /// Distance a jump placed next (in front of everything so far) needs to reach `to`.
    fn distance(&self, to: Label) -> usize {
        self.rev.len() - to.0 - 1
    }

    /// A `ret` for `action` that a jump emitted next can reach.
    pub(crate) fn ret(&mut self, action: u32) -> Label {
        if let Some(&(_, l)) = self.rets.iter().find(|(a, _)| *a == action) {
            if self.distance(l) <= RET_REUSE_REACH {
                return l;
            }
        }
        let l = self.push(BPF_RET | BPF_K, 0, 0, action);
        match self.rets.iter_mut().find(|(a, _)| *a == action) {
            Some(slot) => slot.1 = l,
            None => self.rets.push((action, l)),
        }
        l
    }

    pub(crate) fn resolve(&mut self, t: Target) -> Label {
        match t {
            Target::Code(l) => l,
            Target::Ret(action) => self.ret(action),
        }
    }

    /// `A = *(u32 *)(seccomp_data + offset)`.
    pub(crate) fn load(&mut self, offset: u32) -> Label {
        self.push(BPF_LD | BPF_W | BPF_ABS, 0, 0, offset)
    }

    /// `A &= k`.
    pub(crate) fn and(&mut self, k: u32) -> Label {
        self.push(BPF_ALU | BPF_AND | BPF_K, 0, 0, k)
    }

    /// Conditional jump `op` (BPF_JEQ/JGT/JGE) comparing A with `k`.
    pub(crate) fn jump(&mut self, op: u16, k: u32, jt: Target, jf: Target) -> Label {
        let jt = self.resolve(jt);
        let jf = self.resolve(jf);
        if jt == jf {
            return self.goto(jt);
        }
        let jt = self.within_reach(jt);
        let jf = self.within_reach(jf);
        let (dt, df) = (self.distance(jt), self.distance(jf));
        self.push(BPF_JMP | op | BPF_K, dt as u8, df as u8, k)
    }

    /// Unconditional jump; nothing at all when the target is next anyway.
    pub(crate) fn goto(&mut self, to: Label) -> Label {
        if self.distance(to) == 0 {
            return to;
        }
        let d = self.distance(to) as u32;
        self.push(BPF_JMP | BPF_JA, 0, 0, d)
    }

    /// `to` if a conditional jump can reach it, else a trampoline `ja` placed in front that can.
    /// Called for jt then jf: a trampoline for jf lands before jt's and only adds one to its
    /// distance, which stays within reach.
    fn within_reach(&mut self, to: Label) -> Label {
        if self.distance(to) <= 254 {
            to
        } else {
            let d = self.distance(to) as u32;
            self.push(BPF_JMP | BPF_JA, 0, 0, d)
        }
    }

    /// The finished program, first instruction first.
    pub(crate) fn finish(mut self) -> Vec<SockFilter> {
        self.rev.reverse();
        self.rev
    }
}
