//! LinuxSeccomp -> classic BPF program.
//!
//! Layout of the program (first instruction first):
//!
//! ```text
//!   ld arch; jeq ARCH_1 -> section 1; jeq ARCH_2 -> section 2; ...; ret KILL_PROCESS
//!   section: ld nr; binary search over syscall-number ranges -> ret ACTION | rule chain
//!   rule chain: rules of one syscall in spec order, the first whose argument tests all pass
//!               returns its action; none -> ret DEFAULT
//! ```
//!
//! The search compares against range boundaries only: the numbers with the same outcome are
//! mostly contiguous (allow lists), so Docker's ~370 allowed calls need about a hundred jumps per
//! ABI instead of one per call, and any call is decided in about eight comparisons.

use std::collections::{BTreeMap, HashMap};

use oci_spec::runtime::LinuxSeccomp;

use super::action::{action_value, filter_flags, RET_KILL_PROCESS};
use super::arch::Arch;
use super::bpf::{Assembler, Label, SockFilter, Target, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_MAXINSNS};
use super::rules::{self, Cond, Folded, Op, Rule};
use super::syscalls::syscall_number;
use crate::error::{Error, Result};

// Offsets in struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

/// A compiled filter, ready for [`install`](super::install).
#[derive(Clone, Debug)]
pub struct Program {
    pub filters: Vec<SockFilter>,
    /// SECCOMP_FILTER_FLAG_* bits for seccomp(2).
    pub flags: u32,
}

/// Compiles for the ABI this crate was built for (and the ABIs its kernel may also run).
pub fn compile(spec: &LinuxSeccomp) -> Result<Program> {
    compile_for(spec, Arch::native())
}

/// Compiles as if `native` were the build's ABI, e.g. a mipsel program on an x86_64 host.
pub fn compile_for(spec: &LinuxSeccomp, native: Arch) -> Result<Program> {
    let default = action_value(
        spec.default_action(),
        spec.default_errno_ret(),
        "defaultAction",
    )?;
    let flags = filter_flags(spec.flags().as_ref());
    let rules = rules::parse(spec, default)?;
    let sections = sections(spec, native);

    let mut asm = Assembler::new();
    // Emitted back to front (see bpf.rs): sections last to first, then the arch dispatch.
    let mut entries = Vec::with_capacity(sections.len());
    for s in sections.iter().rev() {
        entries.push((s.audit_arch, emit_section(&mut asm, s, &rules, default)));
    }
    let mut next = Target::Code(asm.ret(RET_KILL_PROCESS));
    for (audit_arch, entry) in entries {
        next = Target::Code(asm.jump(BPF_JEQ, audit_arch, Target::Code(entry), next));
    }
    asm.load(OFFSET_ARCH);

    let filters = asm.finish();
    if filters.len() > BPF_MAXINSNS {
        return Err(Error::invalid(
            "seccomp",
            format!(
                "the filter needs {} BPF instructions, more than the kernel's limit of {BPF_MAXINSNS}",
                filters.len()
            ),
        ));
    }
    Ok(Program { filters, flags })
}

/// The rules for one `seccomp_data.arch` value. x86_64 and x32 share AUDIT_ARCH_X86_64 (x32
/// numbers carry the 0x40000000 bit), so they share a section.
struct Section {
    audit_arch: u32,
    arches: Vec<Arch>,
    wide: bool,
    big_endian: bool,
}

/// Native first (most syscalls take the first branch), then the spec's other ABIs that a
/// `native` kernel can run, in spec order.
fn sections(spec: &LinuxSeccomp, native: Arch) -> Vec<Section> {
    let mut arches = vec![native];
    for a in spec.architectures().iter().flatten() {
        match Arch::from_oci(a) {
            // SCMP_ARCH_NATIVE means the program's target, which may not be this build's.
            _ if *a == oci_spec::runtime::Arch::ScmpArchNative => {}
            Some(a) if native.family().contains(&a) && !arches.contains(&a) => arches.push(a),
            _ => {}
        }
    }
    let mut sections: Vec<Section> = Vec::new();
    for a in arches {
        match sections.iter_mut().find(|s| s.audit_arch == a.audit_arch()) {
            Some(s) => s.arches.push(a),
            None => sections.push(Section {
                audit_arch: a.audit_arch(),
                arches: vec![a],
                wide: a.args_are_64bit(),
                big_endian: a.big_endian(),
            }),
        }
    }
    sections
}

/// A syscall's effective rules on one section: (argument tests, action), first match wins.
type Chain = Vec<(Vec<Cond>, u32)>;

fn chain_for(rule_ids: &[usize], rules: &[Rule], wide: bool) -> Chain {
    let mut chain = Vec::new();
    'rules: for &id in rule_ids {
        let mut tests = Vec::new();
        for c in &rules[id].conds {
            match c.fold(wide) {
                Folded::Always => {}
                Folded::Never => continue 'rules,
                Folded::Test(c) => tests.push(c),
            }
        }
        let unconditional = tests.is_empty();
        chain.push((tests, rules[id].action));
        if unconditional {
            break; // later rules can never be reached
        }
    }
    chain
}

/// Emits one section and returns its entry (the `ld nr`).
fn emit_section(asm: &mut Assembler, s: &Section, rules: &[Rule], default: u32) -> Label {
    // Syscall number -> ids of the rules naming it, in spec order.
    let mut by_nr: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for &arch in &s.arches {
        for (id, rule) in rules.iter().enumerate() {
            for name in &rule.names {
                if let Some(nr) = syscall_number(arch, name) {
                    let ids = by_nr.entry(nr).or_default();
                    // Aliases (arm's sync_file_range2) or repeated names: one entry per rule.
                    if ids.last() != Some(&id) {
                        ids.push(id);
                    }
                }
            }
        }
    }

    // Rule chains first (they end up after the search), each distinct chain once.
    let mut chains: HashMap<Chain, Label> = HashMap::new();
    let mut outcomes: Vec<(u32, Target)> = Vec::with_capacity(by_nr.len());
    for (nr, ids) in &by_nr {
        let chain = chain_for(ids, rules, s.wide);
        let target = match chain.as_slice() {
            [] => Target::Ret(default),
            [(tests, action)] if tests.is_empty() => Target::Ret(*action),
            _ => match chains.get(&chain) {
                Some(&l) => Target::Code(l),
                None => {
                    let l = emit_chain(asm, &chain, s, default);
                    chains.insert(chain, l);
                    Target::Code(l)
                }
            },
        };
        outcomes.push((*nr, target));
    }

    let root = emit_search(asm, &ranges(&outcomes, Target::Ret(default)));
    let root = asm.resolve(root);
    asm.goto(root);
    asm.load(OFFSET_NR)
}

/// Splits the whole u32 range of syscall numbers into maximal runs with one outcome:
/// `(first number of the run, outcome)`, sorted, the first starting at 0.
fn ranges(outcomes: &[(u32, Target)], default: Target) -> Vec<(u32, Target)> {
    fn set(runs: &mut Vec<(u32, Target)>, start: u32, t: Target) {
        let n = runs.len();
        if runs[n - 1].0 == start {
            runs[n - 1].1 = t;
            if n >= 2 && runs[n - 2].1 == t {
                runs.pop();
            }
        } else if runs[n - 1].1 != t {
            runs.push((start, t));
        }
    }
    let mut runs = vec![(0, default)];
    for &(nr, t) in outcomes {
        set(&mut runs, nr, t);
        if let Some(after) = nr.checked_add(1) {
            set(&mut runs, after, default);
        }
    }
    runs
}

/// Balanced binary search over `runs` with `jge`; leaves are the runs' outcomes themselves.
fn emit_search(asm: &mut Assembler, runs: &[(u32, Target)]) -> Target {
    if runs.len() == 1 {
        return runs[0].1;
    }
    let mid = runs.len() / 2;
    // Right half first so the left half (the fall-through side) sits right after the jump.
    let high = emit_search(asm, &runs[mid..]);
    let low = emit_search(asm, &runs[..mid]);
    Target::Code(asm.jump(BPF_JGE, runs[mid].0, high, low))
}

fn emit_chain(asm: &mut Assembler, chain: &Chain, s: &Section, default: u32) -> Label {
    let mut next = Target::Ret(default);
    for (tests, action) in chain.iter().rev() {
        let mut pass = Target::Ret(*action);
        for c in tests.iter().rev() {
            pass = emit_test(asm, c, s, pass, next);
        }
        next = pass;
    }
    asm.resolve(next)
}

/// Code that goes to `pass` if the argument test holds and to `fail` otherwise. On 64-bit ABIs
/// the high word decides unless it equals the value's, then the low word does.
fn emit_test(asm: &mut Assembler, c: &Cond, s: &Section, pass: Target, fail: Target) -> Target {
    let base = OFFSET_ARGS + 8 * c.index as u32;
    // seccomp_data is in the kernel's byte order: the low word comes first on little endian.
    let (lo_off, hi_off) = if s.big_endian {
        (base + 4, base)
    } else {
        (base, base + 4)
    };
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);

    // Low word (emitted first: it comes last). Each sequence is built from its end, so the
    // instruction pushed last is its entry.
    match c.op {
        Op::Eq | Op::MaskedEq { .. } => asm.jump(BPF_JEQ, lo, pass, fail),
        Op::Ne => asm.jump(BPF_JEQ, lo, fail, pass),
        Op::Gt => asm.jump(BPF_JGT, lo, pass, fail),
        Op::Ge => asm.jump(BPF_JGE, lo, pass, fail),
        Op::Lt => asm.jump(BPF_JGE, lo, fail, pass),
        Op::Le => asm.jump(BPF_JGT, lo, fail, pass),
    };
    if let Op::MaskedEq { mask } = c.op {
        if mask as u32 != u32::MAX {
            asm.and(mask as u32);
        }
    }
    let low = Target::Code(asm.load(lo_off));
    if !s.wide {
        return low;
    }

    // High word: decides alone when it differs from the value's.
    match c.op {
        Op::Eq => {
            asm.jump(BPF_JEQ, hi, low, fail);
        }
        Op::Ne => {
            asm.jump(BPF_JEQ, hi, low, pass);
        }
        Op::Gt | Op::Ge => {
            let eq = asm.jump(BPF_JEQ, hi, low, fail);
            asm.jump(BPF_JGT, hi, pass, Target::Code(eq));
        }
        Op::Lt | Op::Le => {
            let eq = asm.jump(BPF_JEQ, hi, low, pass);
            asm.jump(BPF_JGT, hi, fail, Target::Code(eq));
        }
        Op::MaskedEq { mask } => {
            let mask_hi = (mask >> 32) as u32;
            if mask_hi == 0 {
                // fold() guarantees the value's high word is 0 too: nothing to test.
                return low;
            }
            asm.jump(BPF_JEQ, hi, low, fail);
            if mask_hi != u32::MAX {
                asm.and(mask_hi);
            }
        }
    }
    Target::Code(asm.load(hi_off))
}
