"""The clone(2) fallback that qemu-user and kernels before 5.3 take when clone3 is missing.

``SAMPAN_FORCE_CLONE_FALLBACK=1`` (read at each create) makes the runtime skip clone3; a
seccomp filter that answers ENOSYS for clone3 makes it find out by itself, as it would under
qemu-user. Either way the container must come out exactly as it does through clone3: the
probe prints the same, and the process sits in fresh namespaces, not the host's.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
import support
from sampan.bundle import runc_spec

PROBE_ARGS = ["sh", "/probe.sh"]
NS_SCRIPT = (
    'for n in pid net ipc uts mnt cgroup user; do echo "ns $n $(readlink /proc/$$/ns/$n)"; done; '
    'echo "hostname $(hostname)"; echo "pid $$"'
)
NAMESPACES = ["pid", "net", "ipc", "uts", "mnt", "cgroup", "user"]
USERNS_MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]

# A seccomp filter (classic BPF) that makes clone3 fail with ENOSYS and allows the rest.
# glibc then starts threads with clone(2) too, just as on a kernel without clone3.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
NO_CLONE3 = r"""
import ctypes, os, struct, sys
arch, nr = int(sys.argv[1]), 435
ld, jeq, ret = 0x20, 0x15, 0x06
prog = [(ld, 0, 0, 4), (jeq, 0, 3, arch), (ld, 0, 0, 0), (jeq, 0, 1, nr),
        (ret, 0, 0, 0x00050000 | 38), (ret, 0, 0, 0x7FFF0000)]
raw = b"".join(struct.pack("HBBI", *i) for i in prog)
buf = ctypes.create_string_buffer(raw, len(raw))
fprog = struct.pack("HxxxxxxP", len(prog), ctypes.addressof(buf))
fbuf = ctypes.create_string_buffer(fprog, len(fprog))
libc = ctypes.CDLL(None, use_errno=True)
# PR_SET_SECCOMP, SECCOMP_MODE_FILTER
if libc.prctl(22, 2, ctypes.c_void_p(ctypes.addressof(fbuf)), 0, 0) != 0:
    sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[2], sys.argv[2:])
"""


def cli(root, *args) -> list:
    return support.sampan_cli_argv() + ["runtime", "--root", str(root), *map(str, args)]


def run_cli(argv, *, fallback: bool, timeout=support.TIMEOUT) -> subprocess.CompletedProcess:
    env = support.sampan_env()
    env.pop("SAMPAN_FORCE_CLONE_FALLBACK", None)
    if fallback:
        env["SAMPAN_FORCE_CLONE_FALLBACK"] = "1"
    return subprocess.run(argv, check=False, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def run_container(root, cid, bundle, *, fallback=False, no_clone3=False) -> str:
    argv = cli(root, "run", "-b", bundle, cid)
    if no_clone3:
        argv = [sys.executable, "-c", NO_CLONE3, str(AUDIT_ARCH[platform.machine()]), *argv]
    proc = run_cli(argv, fallback=fallback)
    assert proc.returncode == 0, f"run {cid}: exit {proc.returncode}: {proc.stderr}"
    assert not os.path.exists(os.path.join(root, cid)), "state left behind"
    return proc.stdout.replace(cid, "<ID>")


def host_ns() -> dict:
    return {n: os.readlink(f"/proc/self/ns/{n}") for n in NAMESPACES}


def parse_ns(out: str) -> dict:
    return dict(re.findall(r"(?m)^ns (\w+) (\S+)$", out))


def userns_tweaks() -> dict:
    namespaces = runc_spec()["linux"]["namespaces"] + [{"type": "user"}]
    return {"linux": {"namespaces": namespaces, "uidMappings": USERNS_MAP,
                      "gidMappings": USERNS_MAP}}


VARIANTS = ["default", "userns"]


def tweaks_for(variant: str) -> dict:
    return userns_tweaks() if variant == "userns" else {}


@pytest.mark.parametrize("variant", VARIANTS)
def test_fallback_gives_the_same_probe_output(variant, bundle, tmpdir755, new_id):
    b = bundle(PROBE_ARGS, **tweaks_for(variant))
    root = tmpdir755 / "state"
    ref = run_container(root, new_id("c3"), b)
    got = run_container(root, new_id("fb"), b, fallback=True)
    assert ref.rstrip().endswith("## end"), ref
    assert "hostname: runc" in ref
    assert got == ref, "\n".join(
        f"{a!r} != {c!r}" for a, c in zip(ref.splitlines(), got.splitlines()) if a != c)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fallback_makes_fresh_namespaces(variant, bundle, tmpdir755, new_id):
    b = bundle(["sh", "-c", NS_SCRIPT], hostname="fallback-box", **tweaks_for(variant))
    root = tmpdir755 / "state"
    host = host_ns()
    seen = []
    for fallback in (False, True):
        out = run_container(root, new_id(), b, fallback=fallback)
        ns = parse_ns(out)
        assert set(ns) == set(NAMESPACES), out
        assert "hostname fallback-box" in out and "pid 1" in out, out
        fresh = {"pid", "net", "ipc", "uts", "mnt"} | ({"user"} if variant == "userns" else set())
        for n in NAMESPACES:
            if n in fresh:
                assert ns[n] != host[n], f"{n} namespace is the host's ({fallback=})"
            else:
                assert ns[n] == host[n], f"{n} namespace is not the host's ({fallback=})"
        seen.append(ns)
    # Both ways make the same kinds of namespaces.
    assert {n for n in NAMESPACES if seen[0][n] != host[n]} == \
        {n for n in NAMESPACES if seen[1][n] != host[n]}


@pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed")
def test_the_variable_really_selects_clone(bundle, tmpdir755, new_id):
    """strace shows which system call made the container's init."""
    b = bundle(["true"])
    root = tmpdir755 / "state"
    calls = {}
    for fallback in (False, True):
        log = tmpdir755 / f"strace-{fallback}.log"
        argv = ["strace", "-f", "-qq", "-e", "trace=clone,clone3", "-e", "signal=none",
                "-o", str(log), *cli(root, "run", "-b", b, new_id())]
        proc = run_cli(argv, fallback=fallback)
        assert proc.returncode == 0, proc.stderr
        made = [line for line in log.read_text().splitlines() if "CLONE_NEWPID" in line]
        assert len(made) == 1, made
        calls[fallback] = made[0]
    assert re.search(r"\bclone3\(", calls[False]), calls[False]
    assert re.search(r"\bclone\(", calls[True]) and "clone3(" not in calls[True], calls[True]
    assert "CLONE_PIDFD" in calls[True]


@pytest.mark.skipif(platform.machine() not in AUDIT_ARCH, reason="no filter for this arch")
@pytest.mark.parametrize("variant", VARIANTS)
def test_clone3_missing_falls_back_by_itself(variant, bundle, tmpdir755, new_id):
    """clone3 answering ENOSYS, as under qemu-user: no variable needed."""
    b = bundle(PROBE_ARGS, **tweaks_for(variant))
    root = tmpdir755 / "state"
    ref = run_container(root, new_id("c3"), b)
    got = run_container(root, new_id("nosys"), b, no_clone3=True)
    # The filter is inherited by the container: only the seccomp lines may differ.
    assert re.search(r"(?m)^Seccomp:\s+2$", got), got
    drop = re.compile(r"(?m)^Seccomp(_filters)?:.*\n")
    assert drop.sub("", got) == drop.sub("", ref), "\n".join(
        f"{a!r} != {c!r}"
        for a, c in zip(drop.sub("", ref).splitlines(), drop.sub("", got).splitlines())
        if a != c)
    # The filter does what it says: clone3 itself answers ENOSYS under it.
    probe = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
             "print(libc.syscall(435, None, 0), ctypes.get_errno())")
    check = subprocess.run(
        [sys.executable, "-c", NO_CLONE3, str(AUDIT_ARCH[platform.machine()]),
         sys.executable, "-c", probe],
        check=False, capture_output=True, text=True, timeout=support.TIMEOUT)
    assert check.stdout.split() == ["-1", "38"], (check.stdout, check.stderr)
