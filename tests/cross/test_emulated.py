"""Each wheel imported by a CPython of its own architecture under qemu-user (Debian's CPython
for the glibc wheels, a musl CPython built with zig for the musl ones) and put through the
parts of the runtime that need no namespaces; then a container run, which under qemu-user must
fail cleanly: clone3 answers ENOSYS, the clone() fallback is taken and refused (qemu cannot
create namespaces), and the error says so.

Results are compared with the same smoke test run natively on x86_64 (`host_report`), so every
target is held to what the reference build computes, byte order aside.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from cross_targets import AUDIT_ARCH, BY_NAME, CLONE3
from crosslib import dist_dir, run_emulated, wheel_for

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
RET_ERRNO = 0x00050000  # SECCOMP_RET_ERRNO
ENOSYS = {"x86_64": 38, "aarch64": 38, "arm": 38, "mips": 89}
SECCOMP_DATA_ARCH = 4

EXPECTED_CGROUP_V2 = {
    "memory.max": "67108864",
    "memory.swap.max": "67108864",  # memory+swap 128 MiB - memory 64 MiB
    "memory.low": "33554432",
    "cpu.weight": "59",  # cpu.shares 512
    "cpu.max": "50000 100000",
    "cpuset.cpus": "0-1",
    "cpuset.mems": "0",
    "pids.max": "100",
    "io.weight": "4950",  # blkio.weight 500
}


def ok(section):
    assert isinstance(section, dict) and "error" not in section, section
    return section


def test_imports_from_the_wheel(target, report, unpacked):
    rep, _ = report
    imp = ok(rep["import"])
    assert Path(imp["file"]).parent == unpacked(target) / "sampan"
    for name in ("run", "Container", "seccomp_program", "parse_spec", "cgroup_values"):
        assert name in imp["names"]


def test_interpreter_is_of_the_targets_kind(target, report):
    p = ok(report[0]["platform"])
    assert p["machine"] == target.uname
    assert p["pointer_bits"] == target.bits
    assert p["byteorder"] == target.endian
    if target.glibc:
        assert p["gnu_libc"] and p["gnu_libc"].startswith("glibc ")
    else:
        assert p["gnu_libc"] is None  # musl has no _CS_GNU_LIBC_VERSION


def test_pip_on_that_system_accepts_the_wheels_tag(target, report):
    rep, _ = report
    if "pip_platforms" not in rep:
        pytest.skip("pip's packaging module is not importable here")
    accepted = set(ok_list(rep["pip_platforms"]))
    tags = set(target.platform.split("."))
    assert tags & accepted, (sorted(tags), sorted(accepted))


# The two wheels that carry the same platform tag (pip computes musllinux_1_2_mips on both).
OTHER_BYTE_ORDER = {"mips-musl": "mipsel-musl", "mipsel-musl": "mips-musl"}
TRY_IMPORT = """
import json, sys
sys.path.insert(0, sys.argv[1])
try:
    import sampan._runtime
    print(json.dumps({"imported": sampan._runtime.__file__}))
except ImportError as e:
    print(json.dumps({"ImportError": str(e), "name": e.name}))
"""


def test_the_other_byte_orders_wheel_is_refused_by_name(target, unpacked):
    """pip cannot tell the MIPS wheels apart, so the other byte order's may get installed:
    importing its extension must raise an ImportError that says so and names the wheel to
    install, not the loader's bare "Exec format error" (nor crash)."""
    other = OTHER_BYTE_ORDER.get(target.name)
    if other is None:
        pytest.skip("only the MIPS wheels share a platform tag")
    if wheel_for(BY_NAME[other]) is None:
        pytest.skip(f"no {other} wheel in {dist_dir()}: run scripts/build-wheels {other}")
    r = run_emulated(target, ["-I", "-c", TRY_IMPORT, str(unpacked(BY_NAME[other]))])
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    built = "big" if target.endian == "little" else "little"
    version = wheel_for(target).name.split("-")[1]
    build = f"-{target.build_tag}" if target.build_tag else ""
    assert got.get("name") == "sampan._runtime", got
    msg = got["ImportError"]
    assert f"built for {built}-endian MIPS" in msg, msg
    assert f"this mips machine is {target.endian}-endian" in msg, msg
    assert msg.endswith(f"install sampan-{version}{build}-cp39-abi3-musllinux_1_2_mips.whl"), msg


def ok_list(section):
    assert isinstance(section, list), section
    return section


def test_reference_parsing_matches_the_host(report, host_report):
    assert ok(report[0]["reference"]) == ok(host_report["reference"])


def test_seccomp_program_for_the_native_abi(target, report):
    s = ok(report[0]["seccomp"])
    assert s["native"] == target.seccomp_arch
    prog = s["program"]
    assert s["count"] == len(prog) and s["bytes"] == 8 * len(prog)
    assert 50 < len(prog) <= 4096
    # ld seccomp_data.arch; then the first ABI compared is this build's own.
    assert prog[0] == [BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH]
    assert prog[1][0] == BPF_JEQ_K and prog[1][3] == AUDIT_ARCH[target.seccomp_arch]
    assert prog[-1][0] == BPF_RET_K
    assert prog == s["arches"][target.seccomp_arch]["program"]
    assert "SCMP_ARCH_PPC64LE" in s["unknown_arch_error"]


def with_errno(prog, old, new):
    """The program with every `ret ERRNO|old` made `ret ERRNO|new`."""
    return [[c, jt, jf, RET_ERRNO | new if c == BPF_RET_K and k == RET_ERRNO | old else k]
            for c, jt, jf, k in prog]


def test_seccomp_returns_enosys_in_the_targets_numbering(target, report):
    # Docker's profile answers clone3 (without CAP_SYS_ADMIN) with ENOSYS so that libcs fall
    # back to clone; MIPS numbers ENOSYS 89, the others 38.
    prog = ok(report[0]["seccomp"])["program"]
    rets = {k for c, _, _, k in prog if c == BPF_RET_K}
    assert RET_ERRNO | ENOSYS[target.kernel_arch] in rets
    other = {v for a, v in ENOSYS.items() if a != target.kernel_arch} - {ENOSYS[target.kernel_arch]}
    assert not {RET_ERRNO | v for v in other} & rets


def test_seccomp_programs_match_the_host_for_every_abi(target, report, host_report):
    mine, host = ok(report[0]["seccomp"]), ok(host_report["seccomp"])
    assert set(mine["arches"]) == set(host["arches"])
    for arch, theirs in host["arches"].items():
        # A build writes errno values as its own libc numbers them (the kernel families it can
        # run on share them); only ENOSYS differs between MIPS and the x86 host.
        got = mine["arches"][arch]
        prog = with_errno(got["program"], ENOSYS[target.kernel_arch], ENOSYS["x86_64"])
        assert (got["count"], prog) == (theirs["count"], theirs["program"]), arch


def test_spec_translation(target, report, host_report):
    mine, host = copy.deepcopy(ok(report[0]["spec"])), copy.deepcopy(ok(host_report["spec"]))
    assert sorted(mine["namespaces"]) == ["ipc", "mount", "network", "pid", "uts"]
    assert mine["hostname"] == "cross"
    proc = mine["process"]
    assert proc["args"] == ["sh", "-c", "true"]
    assert proc["exec_candidates"][0] == "/usr/local/sbin/sh"
    assert proc["no_new_privs"] is True
    assert "CAP_KILL" in proc["capabilities"]["bounding"]
    # RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_AS as this architecture's libc numbers them.
    assert [r["resource"] for r in proc["rlimits"]] == list(target.rlimits)
    assert [(r["soft"], r["hard"]) for r in proc["rlimits"]] == [
        (1024, 4096), (100, 200), (1 << 30, 1 << 30)]
    # The small profile in the config, compiled for this build's ABI(s).
    assert proc["seccomp_instructions"] == mine_small(report)
    # Apart from the numbers that depend on the architecture, the host agrees.
    for side in (mine, host):
        side["process"].pop("rlimits")
        side["process"].pop("seccomp_instructions")
    assert mine == host


def mine_small(report):
    return ok(report[0]["seccomp"])["small"]["count"]


def test_cgroup_value_translation(report, host_report):
    mine = ok(report[0]["cgroup"])
    assert mine["values"] == EXPECTED_CGROUP_V2
    assert mine == ok(host_report["cgroup"])
    assert "swap" in mine["bad_swap_error"]


def test_clone_fallback_and_a_clear_namespace_error_under_qemu(target, report):
    rep, strace = report
    run = ok(rep["run"])
    err = run.get("container_error")
    assert err is not None, f"the container ran under qemu-user: {run}"
    assert "namespace" in err and "qemu" in err, err
    assert "clone" in err and "EINVAL" in err, err
    # qemu's strace: clone3 unknown (ENOSYS), then clone(2) with the namespace flags, refused.
    clone3 = [m.start() for m in re.finditer(
        rf"(Unknown|Unsupported) syscall:? {CLONE3[target.kernel_arch]}\b", strace)]
    clones = [m for m in re.finditer(r"^\d+ clone\((.*)\) = -1 errno=22", strace, re.MULTILINE)]
    assert clone3, "no clone3 attempt in qemu's strace"
    assert clones, "no refused clone() in qemu's strace"
    assert clone3[-1] < clones[0].start(), "clone() came before clone3"
    assert all("CLONE_NEWNS" in c.group(1) and "CLONE_NEWPID" in c.group(1) for c in clones)


def test_a_failed_create_leaves_nothing_behind(target, report, tmp_path_factory):
    rep, _ = report
    ok(rep["run"])
    state = [p for p in tmp_path_factory.getbasetemp().glob(f"run-{target.name}[0-9]*/state/*")]
    assert state == [], state
    assert not list(Path("/sys/fs/cgroup/sampan").glob(f"cross-{target.name}-*")), \
        "a cgroup was left behind"


def test_every_wheel_in_dist_has_a_target():
    from cross_targets import TARGETS

    known = {wheel_for(t) for t in TARGETS}
    extra = [w.name for w in dist_dir().glob("sampan-*.whl") if w not in known]
    assert extra == [], f"wheels no test knows about: {extra}"
