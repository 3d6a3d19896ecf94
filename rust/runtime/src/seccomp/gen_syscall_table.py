#!/usr/bin/env python3
"""Regenerates syscall_table.rs: syscall name -> number for every architecture Sampan can filter.

Why generated: the numbers are kernel ABI facts that must not be typed by hand. Sources, read at
generation time only (nothing here runs at build time, so the crate still cross-compiles):

  * the kernel UAPI headers shipped by Debian's linux-libc-dev (host, x86_64/x86/x32) and
    linux-libc-dev-{arm64,armhf,mips}-cross packages (`apt-get install ...`), expanded with `cpp -dM`
    so that aliases such as arm's `sync_file_range2` and arm's private `__ARM_NR_*` calls come along;
  * the `syscalls` crate's per-arch tables (`cargo fetch` puts it in ~/.cargo/registry), which track
    newer kernels than Debian's headers: numbers present in both must agree, newer ones are added;
  * the same crate's tables for architectures Sampan does not model, for names only, so that a
    profile written for every arch (Docker's lists riscv/s390/ppc calls) is not rejected.

Usage: python3 gen_syscall_table.py > syscall_table.rs
"""

import glob
import os
import re
import subprocess
import sys

COLUMNS = ["x86_64", "x86", "x32", "aarch64", "arm", "mips"]

HEADERS = {
    "x86_64": (["/usr/include/x86_64-linux-gnu"], "asm/unistd_64.h", []),
    "x86": (["/usr/include/x86_64-linux-gnu"], "asm/unistd_32.h", []),
    "x32": (["/usr/include/x86_64-linux-gnu"], "asm/unistd_x32.h", ["-D__X32_SYSCALL_BIT=0"]),
    "aarch64": (["/usr/aarch64-linux-gnu/include"], "asm/unistd.h", []),
    "arm": (["/usr/arm-linux-gnueabihf/include"], "asm/unistd.h", ["-D__ARM_EABI__"]),
    "mips": (["/usr/mips-linux-gnu/include"], "asm/unistd.h", ["-D_MIPS_SIM=1"]),
}

SYSCALLS_CRATE_ARCH = {"x86_64": "x86_64", "x86": "x86", "aarch64": "aarch64", "arm": "arm", "mips": "mips"}


def cpp_numbers(includes, header, defines):
    path = None
    for inc in includes:
        if os.path.exists(os.path.join(inc, header)):
            path = os.path.join(inc, header)
    if path is None:
        sys.exit(f"missing header {header} in {includes}")
    args = ["cpp", "-dM", "-nostdinc"] + [f"-I{i}" for i in includes] + defines + [path]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    macros = {}
    for line in out.splitlines():
        m = re.match(r"#define (\w+) (.*)$", line)
        if m:
            macros[m.group(1)] = m.group(2).strip()

    def value(name, depth=0):
        expr = macros[name]
        expr = re.sub(r"\b(__\w+)\b", lambda m: f"({value(m.group(1), depth + 1)})", expr)
        return int(eval(expr, {"__builtins__": {}}))  # expressions are integer arithmetic only

    table = {}
    for name in macros:
        m = re.match(r"^(__NR_|__ARM_NR_)(\w+)$", name)
        if not m:
            continue
        short = m.group(2)
        if m.group(1) == "__NR_" and (short in ("syscalls", "Linux", "Linux_syscalls", "SYSCALL_BASE",
                                                 "OABI_SYSCALL_BASE", "SYSCALL_MASK")
                                      or short.startswith("3264")):
            continue
        if m.group(1) == "__ARM_NR_" and short == "BASE":
            continue
        try:
            table[short] = value(name)
        except KeyError:
            continue
    return table


def crate_tables():
    roots = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/syscalls-0.8.*/src/arch"))
    if not roots:
        sys.exit("syscalls crate source not found: run `cargo fetch` in a crate depending on syscalls 0.8")
    root = sorted(roots)[-1]
    tables = {}
    for path in glob.glob(os.path.join(root, "*.rs")):
        arch = os.path.basename(path)[:-3]
        if arch in ("mod", "macros"):
            continue
        entries = {}
        for m in re.finditer(r"^\s+(\w+) = (\d+),$", open(path).read(), re.M):
            entries[m.group(1)] = int(m.group(2))
        tables[arch] = entries
    return root, tables


def main():
    numbers = {col: cpp_numbers(*HEADERS[col]) for col in COLUMNS}
    root, crate = crate_tables()
    for col, arch in SYSCALLS_CRATE_ARCH.items():
        for name, nr in crate[arch].items():
            have = numbers[col].get(name)
            if have is not None and have != nr:
                sys.exit(f"{col}: {name} is {have} in the headers but {nr} in {root}")
            numbers[col].setdefault(name, nr)
    # x32 has no table in the crate. Since 5.x every new syscall (424 and up) has one number on all
    # arches, and x32 shares x86_64's numbering (plus the x32 bit), so copy those from x86_64.
    for name, nr in numbers["x86_64"].items():
        if nr >= 424:
            numbers["x32"].setdefault(name, nr)
    # ... except the one the kernel's syscall_64.tbl marks "64" (x86_64 only, not x32).
    numbers["x32"].pop("map_shadow_stack", None)

    names = sorted(set().union(*[numbers[c].keys() for c in COLUMNS]))
    modeled = set(names)
    other = sorted(set().union(*[set(t) for a, t in crate.items() if a not in SYSCALLS_CRATE_ARCH.values()]) - modeled)

    out = []
    out.append("// @generated by gen_syscall_table.py from the kernel UAPI headers (Debian linux-libc-dev")
    out.append("// 6.1, host and -cross packages) and the `syscalls` 0.8 crate's tables for newer calls.")
    out.append("// Do not edit by hand: rerun the script. Numbers are kernel ABI facts.")
    out.append("")
    out.append("/// Marks a syscall that does not exist on that architecture.")
    out.append("pub(super) const N: u32 = u32::MAX;")
    out.append("")
    out.append("/// Column order of [`SYSCALLS`]: x86_64, x86 (i386), x32 (without the 0x4000_0000 bit),")
    out.append("/// aarch64, arm (EABI; private calls at 0xf0000+), mips o32 (already 4000-based).")
    out.append("pub(super) const COLUMNS: usize = 6;")
    out.append("")
    out.append("/// Sorted by name (byte order) for binary search.")
    out.append("#[rustfmt::skip]")
    out.append("pub(super) static SYSCALLS: &[(&str, [u32; COLUMNS])] = &[")
    for name in sorted(names, key=lambda s: s.encode()):
        cells = []
        for c in COLUMNS:
            v = numbers[c].get(name)
            cells.append("N" if v is None else (hex(v) if v >= 0xf0000 else str(v)))
        out.append(f'    ("{name}", [{", ".join(cells)}]),')
    out.append("];")
    out.append("")
    out.append("/// Names that exist only on architectures Sampan does not model (riscv, s390, powerpc,")
    out.append("/// sparc, loongarch, mips64...). Known, so a profile naming them is valid; never emitted.")
    out.append("#[rustfmt::skip]")
    out.append("pub(super) static OTHER_ARCH_NAMES: &[&str] = &[")
    line = "   "
    for name in sorted(other, key=lambda s: s.encode()):
        item = f' "{name}",'
        if len(line) + len(item) > 100:
            out.append(line)
            line = "   "
        line += item
    if line.strip():
        out.append(line)
    out.append("];")
    print("\n".join(out))


if __name__ == "__main__":
    main()
