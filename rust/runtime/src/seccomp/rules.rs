//! The spec's `syscalls` list, validated once and reduced to what code generation needs.

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompOperator};

use super::action::action_value;
use super::syscalls::known_anywhere;
use crate::error::{Error, Result};

/// seccomp_data.args has six slots.
const MAX_ARGS: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & mask) == value`
    MaskedEq {
        mask: u64,
    },
}

/// One argument comparison: `args[index] <op> value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Cond {
    pub index: u8,
    pub op: Op,
    pub value: u64,
}

/// What a condition reduces to before any code is written.
pub(crate) enum Folded {
    Always,
    Never,
    Test(Cond),
}

impl Cond {
    /// Narrows the condition to the width the ABI compares (32-bit ABIs: low words only, as
    /// libseccomp does) and settles the ones whose outcome does not depend on the argument.
    pub(crate) fn fold(self, wide: bool) -> Folded {
        let max = if wide { u64::MAX } else { u32::MAX as u64 };
        let value = self.value & max;
        let op = match self.op {
            Op::MaskedEq { mask } => Op::MaskedEq { mask: mask & max },
            op => op,
        };
        let always = |b: bool| if b { Folded::Always } else { Folded::Never };
        match op {
            Op::Lt if value == 0 => Folded::Never,
            Op::Ge if value == 0 => Folded::Always,
            Op::Le if value == max => Folded::Always,
            Op::Gt if value == max => Folded::Never,
            // Bits of `value` outside the mask can never be matched.
            Op::MaskedEq { mask } if value & !mask != 0 => Folded::Never,
            Op::MaskedEq { mask: 0 } => always(value == 0),
            _ => Folded::Test(Cond {
                index: self.index,
                op,
                value,
            }),
        }
    }
}

pub(crate) struct Rule {
    pub names: Vec<String>,
    /// ANDed.
    pub conds: Vec<Cond>,
    pub action: u32,
}

/// Validates every rule and keeps, in spec order, those that can change the outcome: a rule
/// whose action is the default action is a no-op (libseccomp refuses it, runc skips it).
pub(crate) fn parse(spec: &LinuxSeccomp, default: u32) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for (i, sc) in spec.syscalls().iter().flatten().enumerate() {
        let first = sc.names().first().map(String::as_str).unwrap_or("");
        let what = format!("syscalls[{i}] ({first})");
        for name in sc.names() {
            if !known_anywhere(name) {
                return Err(Error::invalid(
                    "seccomp",
                    format!("unknown syscall name \"{name}\""),
                ));
            }
        }
        let action = action_value(sc.action(), sc.errno_ret(), &what)?;
        let mut conds = Vec::new();
        for a in sc.args().iter().flatten() {
            if a.index() >= MAX_ARGS {
                return Err(Error::invalid(
                    "seccomp",
                    format!(
                        "{what}: argument index {} is out of range (0 to {})",
                        a.index(),
                        MAX_ARGS - 1
                    ),
                ));
            }
            let (op, value) = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => (Op::Ne, a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (Op::Lt, a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (Op::Le, a.value()),
                LinuxSeccompOperator::ScmpCmpEq => (Op::Eq, a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (Op::Ge, a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (Op::Gt, a.value()),
                // OCI (like libseccomp): `value` is the mask, `valueTwo` what the masked
                // argument must equal (0 when absent).
                LinuxSeccompOperator::ScmpCmpMaskedEq => {
                    (Op::MaskedEq { mask: a.value() }, a.value_two().unwrap_or(0))
                }
            };
            conds.push(Cond {
                index: a.index() as u8,
                op,
                value,
            });
        }
        if action == default || sc.names().is_empty() {
            continue;
        }
        rules.push(Rule {
            names: sc.names().clone(),
            conds,
            action,
        });
    }
    Ok(rules)
}
