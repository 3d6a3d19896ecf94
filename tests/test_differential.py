"""Differential tests: one bundle, run by runc and by the candidate, must look the same.

The probe (probe.sh) prints what the container's process sees: capabilities, ids,
seccomp mode, namespaces' names, mounts, /dev, cgroup limits, writable and masked
paths, rlimits, umask, cwd, env, signal masks. The outputs are compared line by line
after the normalisation in :func:`normalise`, which names every difference it forgives.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import time

import pytest
import support

PROBE_ARGS = ["sh", "/probe.sh"]

# ---------------------------------------------------------------- the variants

SECCOMP = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [
        # errnoRet given: uname(2) fails with ENOSYS (busybox's uname and hostname then
        # print nothing or "?").
        {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        # errnoRet absent: EPERM.
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
        # An argument condition: only personality(PER_LINUX32) is refused, with EINVAL.
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        # The caller is killed by SIGSYS.
        {"names": ["sethostname"], "action": "SCMP_ACT_KILL"},
        {"names": ["chroot"], "action": "SCMP_ACT_TRAP"},
        # Masked-equality condition: mknod of a character device (S_IFCHR) is refused.
        {"names": ["mknod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
         "args": [{"index": 1, "value": 0o170000, "valueTwo": 0o020000,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["mknodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
         "args": [{"index": 2, "value": 0o170000, "valueTwo": 0o020000,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
    ],
}

RESOURCES = {
    "devices": [
        {"allow": False, "access": "rwm"},
        # Beyond the defaults: read access to c 10:237 (loop-control).
        {"allow": True, "type": "c", "major": 10, "minor": 237, "access": "r"},
    ],
    "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
    "pids": {"limit": 64},
}


def variant(name, tmp, host_mount):
    """(runc_spec tweaks, bundle extras) for each variant."""
    if name == "default":
        return {}, {}
    if name == "seccomp":
        return {"linux": {"seccomp": SECCOMP}}, {}
    if name == "resources":
        return {"linux": {"resources": RESOURCES,
                          "cgroupsPath": "/sampan-tests/differential"}}, {}
    if name == "process":
        # Everything in "process" other than the defaults, plus hostname and sysctl.
        # (No domainname: runc 1.1 ignores it; a behaviour test covers it.)
        return {
            "hostname": "probe-box",
            "process": {
                "user": {"uid": 1000, "gid": 1000, "umask": 0o077,
                         "additionalGids": [5, 100, 65534]},
                "cwd": "/tmp",
                "env": ["PATH=/bin", "GREETING=hello world", "EMPTY="],
                "capabilities": {
                    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"],
                    "effective": ["CAP_KILL", "CAP_NET_RAW"],
                    "permitted": ["CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"],
                    "inheritable": ["CAP_NET_RAW"],
                    "ambient": ["CAP_NET_RAW"],
                },
                "rlimits": [
                    {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 512},
                    {"type": "RLIMIT_CORE", "hard": 1 << 20, "soft": 0},
                    {"type": "RLIMIT_NPROC", "hard": 4000, "soft": 3000},
                    {"type": "RLIMIT_STACK", "hard": 16 << 20, "soft": 4 << 20},
                ],
                "noNewPrivileges": False,
                "oomScoreAdj": 500,
            },
            "linux": {"sysctl": {"net.ipv4.ip_forward": "1", "kernel.msgmax": "4096"}},
        }, {}
    if name == "userns":
        mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        from sampan.bundle import runc_spec

        namespaces = runc_spec()["linux"]["namespaces"] + [{"type": "user"}]
        return {"linux": {"namespaces": namespaces, "uidMappings": mapping,
                          "gidMappings": mapping}}, {}
    if name == "mounts":
        ro = tmp / "host-ro"
        ro.mkdir()
        (ro / "a").write_text("a\n")
        rb = tmp / "host-rbind"
        (rb / "sub").mkdir(parents=True)
        (rb / "b").write_text("b\n")
        host_mount("-t", "tmpfs", "-o", "size=1m,mode=0755", "hostsub", rb / "sub")
        (rb / "sub" / "c").write_text("c\n")
        rw = tmp / "host-rw"
        rw.mkdir()
        os.chmod(rw, 0o777)
        f = tmp / "host-file"
        f.write_text("f\n")
        mounts = [
            {"destination": "/mnt/ro", "type": "bind", "source": str(ro),
             "options": ["bind", "ro"]},
            {"destination": "/mnt/rbind", "type": "bind", "source": str(rb),
             "options": ["rbind", "nosuid", "nodev", "noexec"]},
            # Non-recursive: the tmpfs under host-rbind/sub must not show here.
            {"destination": "/mnt/bind", "type": "bind", "source": str(rb),
             "options": ["bind", "ro"]},
            {"destination": "/mnt/rw", "type": "none", "source": str(rw),
             "options": ["rbind", "rw", "nosuid"]},
            {"destination": "/mnt/file", "type": "bind", "source": str(f),
             "options": ["bind", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777", "size=1m"]},
            # runc 1.1 gives a tmpfs the mode of the directory it covers, whatever
            # mode= says; a mode equal to that one keeps the comparison about the rest.
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["noexec", "mode=0755", "size=512k"]},
        ]
        # Mount points made beforehand: the first runtime must not change the rootfs the
        # second sees. (Creating missing mount points is a behaviour test.)
        return {"root": {"readonly": False}}, {
            "mounts": mounts, "dirs": ["mnt/ro", "mnt/rbind", "mnt/bind", "mnt/rw"],
            "files": {"/mnt/file": ""},
        }
    raise ValueError(name)


VARIANTS = ["default", "seccomp", "resources", "process", "userns", "mounts"]

# ---------------------------------------------------------------- comparing


def normalise(out: str, cid: str, default_cgroup: bool = True) -> str:
    # The container id is chosen per run; it shows in cgroup paths.
    out = out.replace(cid, "<ID>")
    # What stdio is when there is no terminal: `runc run` in the foreground puts pipes in
    # between and copies; a runtime may as well hand its own stdio over, and the Python API
    # hands over the caller's (here pytest's capture files). A pty is compared as is.
    out = re.sub(r"(?m)^fd ([012]): (?!/dev/pts/|/dev/console).*$", r"fd \1: <stdio>", out)
    if default_cgroup:
        # Without linux.cgroupsPath the place of the container's cgroup is the runtime's
        # choice (runc: <its own cgroup>/<id> in each hierarchy; sampan: /sampan/<id>).
        # Only the part before the id is forgiven; the "resources" variant sets
        # cgroupsPath and compares the paths exactly.
        out = re.sub(r"(?<=[:=])(/[^\s:]*)?/<ID>(?=[\s/])", "<CGROUP-PARENT>/<ID>", out)
    return out


def diff(a: str, b: str, name_a: str, name_b: str) -> str:
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), name_a, name_b))


def assert_same(ref: str, got: str, ref_name: str, got_name: str):
    assert ref.rstrip().endswith("## end"), f"the probe did not finish under {ref_name}:\n{ref}"
    if ref != got:
        pytest.fail(f"{got_name} differs from {ref_name}:\n{diff(ref, got, ref_name, got_name)}",
                    pytrace=False)


def run_probe(driver, cid, b, capfd) -> tuple:
    """(exit status, stdout+stderr) of one foreground run."""
    # The probe sends its stderr to stdout itself, so only the runtime's own messages are
    # on stderr; they are shown when the run fails but not compared.
    if isinstance(driver, support.CliDriver):
        proc = driver.run_capture(cid, b)
        assert proc.returncode == 0, f"{driver.name} run: {proc.returncode}: {proc.stderr}"
        return proc.returncode, proc.stdout
    capfd.readouterr()
    status = driver.run(cid, b)
    captured = capfd.readouterr()
    assert status == 0, f"{driver.name} run: {status}: {captured.err}"
    return status, captured.out


@pytest.mark.parametrize("name", VARIANTS)
def test_probe_matches_runc(name, bundle, runc, candidate, new_id, tmpdir755, host_mount, capfd):
    tweaks, extras = variant(name, tmpdir755, host_mount)
    b = bundle(PROBE_ARGS, **extras, **tweaks)
    ref_id, got_id = new_id("ref"), new_id("got")
    ref_status, ref = run_probe(runc, ref_id, b, capfd)
    assert ref_status == 0, ref
    got_status, got = run_probe(candidate, got_id, b, capfd)
    default_cgroup = "cgroupsPath" not in tweaks.get("linux", {})
    assert_same(normalise(ref, ref_id, default_cgroup), normalise(got, got_id, default_cgroup),
                "runc", candidate.name)
    assert got_status == ref_status


def test_probe_is_deterministic(bundle, runc, new_id, capfd):
    """Two runc runs agree with each other, so any difference is the candidate's."""
    b = bundle(PROBE_ARGS)
    a_id, b_id = new_id(), new_id()
    _, a = run_probe(runc, a_id, b, capfd)
    _, b_out = run_probe(runc, b_id, b, capfd)
    assert_same(normalise(a, a_id), normalise(b_out, b_id), "runc#1", "runc#2")


# ---------------------------------------------------------------- terminal: true


def run_probe_on_console(driver, cid, b, sock_path) -> str:
    console = support.ConsoleSocket(sock_path).start()
    try:
        if isinstance(driver, support.CliDriver):
            # runc refuses --console-socket unless it detaches; so does a runc look-alike.
            status = driver.run(cid, b, console_socket=sock_path, detach=True)
            assert status == 0, f"{driver.name} run -d --console-socket failed"
            out = console.output()
            driver.wait_status(cid, "stopped")
            driver.delete(cid)
        else:
            box = {}
            import threading

            t = threading.Thread(target=lambda: box.update(
                status=driver.run(cid, b, console_socket=sock_path)))
            t.start()
            out = console.output()
            t.join(support.TIMEOUT)
            assert box.get("status") == 0, box
        return out
    finally:
        console.close()


def test_terminal_probe_matches_runc(bundle, runc, candidate, new_id, tmpdir755):
    b = bundle(PROBE_ARGS, terminal=True)
    ref_id, got_id = new_id("ref"), new_id("got")
    ref = run_probe_on_console(runc, ref_id, b, tmpdir755 / "ref.sock")
    assert "tty: /dev/pts/0" in ref
    got = run_probe_on_console(candidate, got_id, b, tmpdir755 / "got.sock")
    assert_same(normalise(ref, ref_id), normalise(got, got_id), "runc", candidate.name)


def test_console_socket_carries_a_pty(bundle, runtime, cid, tmpdir755):
    """The fd received over the console socket is a pty master; input reaches the process."""
    b = bundle(["sh", "-c", "read line; echo got:$line; stty -a | head -n 1"], terminal=True)
    sock = tmpdir755 / "c.sock"
    console = support.ConsoleSocket(sock).start()
    try:
        runtime.create(cid, b, console_socket=sock)
        deadline = time.monotonic() + 10
        while console.master is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert console.master is not None, "no pty master received"
        st = os.fstat(console.master)
        assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (5, 2)
        assert os.readlink(f"/proc/self/fd/{console.master}").endswith("ptmx")
        runtime.start(cid)
        os.write(console.master, b"ping\n")
        out = console.output()
        assert "got:ping" in out
        assert re.search(r"speed \d+ baud", out), out
        runtime.wait_status(cid, "stopped")
        runtime.delete(cid)
    finally:
        console.close()
