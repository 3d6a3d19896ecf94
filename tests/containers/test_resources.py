"""Create options that end in the OCI config, checked from inside real containers: ulimits,
sysctls, devices, /dev/shm size, CPU and memory limits, oom_score_adj, seccomp profiles,
namespace modes; bad values are a 400 that creates nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")


def run(sd, *args):
    return sd.sampan("run", "--rm", *args)


def _ok(r):
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_ulimits(sd):
    out = _ok(run(sd, "--ulimit", "nofile=1024:2048", "--ulimit", "nproc=100", "busybox", "sh",
                  "-c", "ulimit -n; ulimit -Hn; ulimit -u"))
    assert out.split() == ["1024", "2048", "100"]


def test_sysctls(sd):
    out = _ok(run(sd, "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.shmmax=123456",
                  "--sysctl", "fs.mqueue.msg_max=20", "busybox", "cat",
                  "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shmmax",
                  "/proc/sys/fs/mqueue/msg_max"))
    assert out.split() == ["1", "123456", "20"]
    # the host's values did not change
    assert Path("/proc/sys/kernel/shmmax").read_text().strip() != "123456"


def test_devices(sd):
    out = _ok(run(sd, "--device", "/dev/null:/dev/mynull", "--device", "/dev/kmsg:/dev/k:r",
                  "busybox", "sh", "-c",
                  "ls -l /dev/mynull /dev/k | cut -c1; echo hi > /dev/mynull && echo w-ok; "
                  "stat -c %t:%T /dev/k"))
    assert out.split() == ["c", "c", "w-ok", "1:b"]
    # the permissions are the cgroup's: `:r` cannot open for writing (an open for write of
    # /dev/kmsg needs no capability, so only the device rule refuses it), `:rw` can
    r = run(sd, "--device", "/dev/kmsg:/dev/k:r", "busybox", "sh", "-c", ": > /dev/k")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r
    _ok(run(sd, "--device", "/dev/kmsg:/dev/k:rw", "busybox", "sh", "-c", ": > /dev/k"))
    # without --device the node is not there
    r = run(sd, "busybox", "ls", "/dev/k")
    assert r.returncode == 1


def test_shm_size(sd):
    out = _ok(run(sd, "--shm-size", "128m", "busybox", "sh", "-c",
                  "grep ' /dev/shm ' /proc/mounts"))
    assert "size=131072k" in out
    out = _ok(run(sd, "busybox", "grep", " /dev/shm ", "/proc/mounts"))
    assert "size=65536k" in out


def test_cpus_and_memory_inside(sd):
    cid = _ok(sd.sampan("run", "-d", "--cpus", "0.5", "-c", "512", "-m", "64m",
                        "--memory-reservation", "32m", "--cpuset-cpus", "0", "busybox",
                        "sleep", "1000")).strip()
    try:
        st, doc = sd.json("GET", f"/containers/{cid}/json")
        h = doc["HostConfig"]
        assert (h["NanoCpus"], h["CpuShares"], h["Memory"], h["MemoryReservation"],
                h["CpusetCpus"]) == (500_000_000, 512, 64 << 20, 32 << 20, "0")
        assert h["MemorySwap"] in (128 << 20, -1)  # docker: twice the memory, if it can
        pid = doc["State"]["Pid"]
        root = Path(f"/proc/{pid}/root/sys/fs/cgroup")
        if (root / "cpu").is_dir():  # v1 or hybrid: per-controller mounts inside
            assert (root / "cpu/cpu.cfs_quota_us").read_text().strip() == "50000"
            assert (root / "cpu/cpu.shares").read_text().strip() == "512"
            assert (root / "memory/memory.limit_in_bytes").read_text().strip() == \
                str(64 << 20)
            assert (root / "memory/memory.soft_limit_in_bytes").read_text().strip() == \
                str(32 << 20)
            assert (root / "cpuset/cpuset.cpus").read_text().strip() == "0"
        else:
            assert (root / "cpu.max").read_text().split() == ["50000", "100000"]
            assert (root / "memory.max").read_text().strip() == str(64 << 20)
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_oom_score_adj_and_oom_kill_disable(sd):
    out = _ok(run(sd, "--oom-score-adj", "500", "busybox", "cat", "/proc/self/oom_score_adj"))
    assert out.strip() == "500"
    mem = Path("/sys/fs/cgroup/memory")
    if not (mem / "memory.oom_control").exists():
        return  # cgroup v2 has no switch for the OOM killer (docker ignores the flag too)
    cid = _ok(sd.sampan("run", "-d", "--oom-kill-disable", "-m", "32m", "--memory-swappiness",
                        "10", "busybox", "sleep", "1000")).strip()
    try:
        d = mem / "sampan" / cid
        assert "oom_kill_disable 1" in (d / "memory.oom_control").read_text()
        assert (d / "memory.swappiness").read_text().strip() == "10"
        h = sd.json("GET", f"/containers/{cid}/json")[1]["HostConfig"]
        assert h["OomKillDisable"] is True and h["MemorySwappiness"] == 10
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_seccomp_profile_file(sd, tmp_path):
    """docker's profile format, read by the CLI and sent inline."""
    prof = {"defaultAction": "SCMP_ACT_ALLOW",
            "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                         "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                        {"architecture": "SCMP_ARCH_AARCH64",
                         "subArchitectures": ["SCMP_ARCH_ARM"]}],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 1},
                         {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO",
                          "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}
    p = tmp_path / "profile.json"
    p.write_text(json.dumps(prof))
    r = run(sd, "--security-opt", f"seccomp={p}", "busybox", "sh", "-c",
            "mkdir /x; echo mkdir=$?; chmod 700 /tmp; echo chmod=$?")
    assert "mkdir=1" in r.stdout and "Operation not permitted" in r.stderr
    assert "chmod=0" in r.stdout  # the rule needs CAP_SYS_ADMIN, which it does not have
    p.write_text("{not json")
    assert run(sd, "--security-opt", f"seccomp={p}", "busybox", "true").returncode == 125
    p.write_text(json.dumps({"defaultAction": "SCMP_ACT_NOPE"}))
    assert run(sd, "--security-opt", f"seccomp={p}", "busybox", "true").returncode == 125


def test_security_opt_apparmor_is_a_warning(sd):
    r = sd.sampan("create", "--security-opt", "apparmor=unconfined", "--security-opt",
                  "label=disable", "busybox", "true")
    assert r.returncode == 0 and "AppArmor" in r.stderr
    sd.request("DELETE", f"/containers/{r.stdout.strip()}")


def test_pid_uts_ipc_host(sd):
    out = _ok(run(sd, "--pid", "host", "--uts", "host", "--ipc", "host", "busybox", "sh", "-c",
                  "echo $$; hostname; readlink /proc/self/ns/ipc"))
    pid, host, ipc = out.split()
    assert int(pid) > 1
    assert host == os.uname().nodename
    assert ipc == os.readlink("/proc/self/ns/ipc")


def test_join_another_containers_namespaces(sd):
    donor = _ok(sd.sampan("run", "-d", "--ipc", "shareable", "busybox", "sleep",
                          "1000")).strip()
    try:
        pid = sd.json("GET", f"/containers/{donor}/json")[1]["State"]["Pid"]
        out = _ok(run(sd, "--network", f"container:{donor}", "--ipc", f"container:{donor}",
                      "--pid", f"container:{donor}", "busybox", "sh", "-c",
                      "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; "
                      "ps -o comm | grep -c sleep"))
        net, ipc, sleeps = out.split()
        assert net == os.readlink(f"/proc/{pid}/ns/net")
        assert ipc == os.readlink(f"/proc/{pid}/ns/ipc")
        assert sleeps == "1"  # the donor's process is visible: same pid namespace
        donor_name = sd.json("GET", f"/containers/{donor}/json")[1]["Config"]["Hostname"]
        out = _ok(run(sd, "--network", f"container:{donor}", "busybox", "sh", "-c",
                      "hostname; cat /etc/hostname; echo $HOSTNAME"))
        assert out.split() == [donor_name] * 3
        r = run(sd, "--network", f"container:{donor}", "-h", "mine", "busybox", "true")
        assert r.returncode == 125 and "Conflicting options" in r.stderr
        r = run(sd, "--uts", "host", "-h", "mine", "busybox", "true")
        assert r.returncode == 125 and "Conflicting options" in r.stderr
        # a non-shareable IPC namespace cannot be joined
        other = _ok(sd.sampan("run", "-d", "busybox", "sleep", "1000")).strip()
        r = run(sd, "--ipc", f"container:{other}", "busybox", "true")
        assert r.returncode == 125 and "non-shareable" in r.stderr
        sd.request("DELETE", f"/containers/{other}?force=1")
    finally:
        sd.request("DELETE", f"/containers/{donor}?force=1")
    r = run(sd, "--network", "container:nosuchthing", "busybox", "true")
    assert r.returncode == 125


@pytest.mark.parametrize("host,msg", [
    ({"NanoCpus": 99 * 10 ** 9}, "Range of CPUs"),
    ({"NanoCpus": 10 ** 9, "CpuPeriod": 100000}, "Conflicting options"),
    ({"CpuPeriod": 10}, "CPU cfs period"),
    ({"CpusetCpus": "0-99"}, "not available"),
    ({"CpusetCpus": "x"}, "Invalid value"),
    ({"Memory": 64 << 20, "MemoryReservation": 128 << 20}, "memory reservation"),
    ({"Memory": 64 << 20, "MemorySwap": 32 << 20}, "memoryswap"),
    ({"MemorySwappiness": 101}, "swappiness"),
    ({"OomScoreAdj": 5000}, "oom score adj"),
    ({"ShmSize": -1}, "SHM size"),
    ({"BlkioWeight": 5}, "blkio weight"),
    ({"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 5}]}, "soft limit"),
    ({"Ulimits": [{"Name": "bogus", "Soft": 1, "Hard": 1}]}, "invalid ulimit type"),
    ({"Devices": [{"PathOnHost": "/dev/nope-nothing"}]}, "error gathering device"),
    ({"Devices": [{"PathOnHost": "/etc/passwd"}]}, "not a device"),
    ({"Sysctls": {"kernel.hostname": "x"}}, "not in a separate kernel namespace"),
    ({"Sysctls": {"vm.swappiness": "1"}}, "not in a separate kernel namespace"),
    ({"Sysctls": {"net.ipv4.ip_forward": "1"}, "NetworkMode": "host"},
     "host network namespace"),
    ({"Sysctls": {"kernel.shmmax": "1"}, "IpcMode": "host"}, "host IPC namespace"),
    ({"IpcMode": "bogus"}, "invalid IPC mode"),
    ({"PidMode": "bogus"}, "invalid PID mode"),
    ({"UTSMode": "bogus"}, "invalid UTS mode"),
    ({"SecurityOpt": ["seccomp={\"defaultAction\": 1}"]}, "seccomp"),
    ({"RestartPolicy": {"Name": "always"}, "AutoRemove": True}, "--restart and --rm"),
    ({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}}, "retry count"),
    ({"RestartPolicy": {"Name": "sometimes"}}, "invalid restart policy"),
])
def test_bad_values_are_400_and_create_nothing(sd, host, msg):
    before = sd.json("GET", "/containers/json?all=1")[1]
    st, body = sd.json("POST", "/containers/create",
                       {"Image": "busybox", "Cmd": ["true"], "HostConfig": host})
    assert st == 400, body
    assert msg.lower() in body["message"].lower(), body
    assert sd.json("GET", "/containers/json?all=1")[1] == before
    assert sd.request("GET", "/_ping")[0] == 200


@docker_cli
def test_docker_cli_resource_flags(sd):
    r = sd.docker("run", "--rm", "--ulimit", "nofile=512:1024", "--shm-size", "32m",
                  "--sysctl", "kernel.msgmax=4096", "busybox", "sh", "-c",
                  "ulimit -n; grep ' /dev/shm ' /proc/mounts | grep -o 'size=[0-9]*k'; "
                  "cat /proc/sys/kernel/msgmax")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["512", "size=32768k", "4096"]
