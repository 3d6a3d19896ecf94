"""Behaviour of a runtime, checked through each driver (runc, the Python API, the CLI).

runc shows the expectation holds for the reference; the sampan drivers must meet it.
Containers hand results back through files in a host directory mounted at /out.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import support
from sampan.bundle import runc_spec

STATE_KEYS = {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}


def out(b, name, timeout=20.0) -> str:
    return support.read_file(support.outdir(b) / name, timeout)


def no_pidns():
    return [ns for ns in runc_spec()["linux"]["namespaces"] if ns["type"] != "pid"]


def exec_process(args, **over):
    """An OCI process object for exec: the bundle's own, with other args."""
    proc = runc_spec(None, args)["process"]
    proc.update(over)
    return proc


# ---------------------------------------------------------------- lifecycle


def test_run_returns_exit_status(bundle, runtime, cid):
    assert runtime.run(cid, bundle(["sh", "-c", "exit 3"])) == 3
    assert not (runtime.root / cid).exists()


def test_lifecycle_states(bundle, runtime, cid):
    b = bundle(["sh", "-c", "echo started > /out/started; exec sleep 1000"], out=True)
    runtime.create(cid, b)
    st = runtime.state(cid)
    assert STATE_KEYS <= set(st), st
    assert st["status"] == "created"
    assert st["id"] == cid
    assert os.path.realpath(st["bundle"]) == os.path.realpath(b)
    assert os.path.realpath(st["rootfs"]) == os.path.realpath(b / "rootfs")
    assert st["pid"] > 0 and Path(f"/proc/{st['pid']}").exists()
    assert not (support.outdir(b) / "started").exists(), "the process ran before start"
    assert (runtime.root / cid).is_dir(), "no state directory under --root"
    listed = {c["id"]: c for c in runtime.list()}
    assert listed[cid]["status"] == "created"

    runtime.start(cid)
    assert out(b, "started") == "started\n"
    st = runtime.wait_status(cid, "running")
    assert {c["id"]: c for c in runtime.list()}[cid]["status"] == "running"
    pid = st["pid"]

    with pytest.raises(support.RuntimeFailure):
        runtime.start(cid)  # a running container cannot start again
    with pytest.raises(support.RuntimeFailure):
        runtime.delete(cid)  # nor be deleted without force
    assert runtime.state(cid)["status"] == "running"

    runtime.kill(cid, signal.SIGKILL)
    st = runtime.wait_status(cid, "stopped")
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    runtime.delete(cid)
    with pytest.raises(support.RuntimeFailure):
        runtime.state(cid)
    assert cid not in {c["id"] for c in runtime.list()}
    assert not (runtime.root / cid).exists()


def _is_zombie(pid) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_pid_file(bundle, runtime, cid, tmpdir755):
    pid_file = tmpdir755 / "init.pid"
    runtime.create(cid, bundle(["sleep", "1000"]), pid_file=pid_file)
    assert int(pid_file.read_text()) == runtime.state(cid)["pid"]
    runtime.delete(cid, force=True)
    assert not (runtime.root / cid).exists()


def test_delete_force_kills_a_running_container(bundle, runtime, cid):
    proc = runtime.spawn(cid, bundle(["sleep", "1000"]))
    pid = runtime.state(cid)["pid"]
    runtime.delete(cid, force=True)
    if isinstance(runtime, support.CliDriver):  # `run` in the foreground reports the kill
        assert proc.wait() == 128 + signal.SIGKILL
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def test_unknown_container(runtime):
    for call in (runtime.state, runtime.start, runtime.delete,
                 lambda c: runtime.kill(c, signal.SIGKILL)):
        with pytest.raises(support.RuntimeFailure):
            call("no-such-container")


def test_duplicate_id_refused_and_first_untouched(bundle, runtime, cid):
    b = bundle(["sleep", "1000"])
    runtime.create(cid, b)
    with pytest.raises(support.RuntimeFailure):
        runtime.create(cid, b)
    st = runtime.state(cid)
    assert st["status"] == "created" and Path(f"/proc/{st['pid']}").exists()
    runtime.delete(cid, force=True)


def test_api_load_and_attributes(bundle, sampan_api, cid):
    from sampan import runtime as rt

    b = bundle(["sleep", "1000"])
    c = rt.Container.create(cid, str(b), root=str(sampan_api.root))
    assert c.id == cid
    assert c.pid > 0
    assert os.path.realpath(c.bundle) == os.path.realpath(b)
    again = rt.Container.load(cid, root=str(sampan_api.root))
    assert again.id == cid and again.pid == c.pid
    assert again.state() == c.state()
    assert [s["id"] for s in rt.list(root=str(sampan_api.root))] == [cid]
    c.start()
    assert again.state()["status"] == "running"
    again.kill(signal.SIGKILL)
    assert c.wait() == 128 + signal.SIGKILL
    assert again.state()["status"] == "stopped"
    again.delete()
    with pytest.raises(rt.ContainerError):
        rt.Container.load(cid, root=str(sampan_api.root))


def test_api_calls_from_threads(bundle, sampan_api, new_id):
    """The binding is safe in a process with threads and releases the GIL while it waits."""
    from sampan import runtime as rt

    b = bundle(["sh", "-c", "sleep 0.3; exit $(cat /etc/code)"],
               files={"/etc/code": "0\n"})
    codes = {}
    ticks = []

    def one(i):
        codes[i] = rt.run(new_id(), str(b), root=str(sampan_api.root))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 0.25
    while time.monotonic() < deadline:  # this thread keeps running meanwhile
        ticks.append(1)
        time.sleep(0.01)
    for t in threads:
        t.join(support.TIMEOUT)
    assert codes == {0: 0, 1: 0, 2: 0, 3: 0}
    assert len(ticks) > 5


# ---------------------------------------------------------------- signals


def test_sigkill_to_init_gives_137(bundle, runtime, cid):
    proc = runtime.spawn(cid, bundle(["sleep", "1000"]))
    runtime.kill(cid, signal.SIGKILL)
    assert proc.wait() == 137


def test_sigterm_gives_143_without_pid_namespace(bundle, runtime, cid):
    # As pid 1 of a pid namespace, sleep would ignore SIGTERM (no handler): leave it out.
    b = bundle(["sleep", "1000"], linux={"namespaces": no_pidns()})
    proc = runtime.spawn(cid, b)
    runtime.kill(cid, signal.SIGTERM)
    assert proc.wait() == 143


def test_signal_reaches_a_handler_in_init(bundle, runtime, cid):
    script = "trap 'exit 42' USR1; echo ready > /out/ready; while :; do sleep 0.05; done"
    b = bundle(["sh", "-c", script], out=True)
    proc = runtime.spawn(cid, b)
    out(b, "ready")
    runtime.kill(cid, signal.SIGUSR1)
    assert proc.wait() == 42


def test_process_killing_itself(bundle, runtime, cid):
    b = bundle(["sh", "-c", "kill -ABRT $$"], linux={"namespaces": no_pidns()})
    assert runtime.run(cid, b) == 128 + signal.SIGABRT


def test_kill_all(bundle, runtime, cid):
    b = bundle(["sh", "-c", "sleep 1000 & sleep 1000 & echo ready > /out/ready; wait"],
               out=True)
    proc = runtime.spawn(cid, b)
    out(b, "ready")
    pids = runtime.ps(cid)
    assert len(pids) == 3, pids
    runtime.kill(cid, signal.SIGKILL, all=True)
    assert proc.wait() == 137
    time.sleep(0.1)
    assert all(not Path(f"/proc/{p}").exists() or _is_zombie(p) for p in pids)


# ---------------------------------------------------------------- exec


NS_SCRIPT = ("for n in /proc/self/ns/*; do echo $(basename $n) $(readlink $n); done; "
             "grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid)' /proc/self/status; "
             "cat /proc/self/cgroup; hostname; cat /proc/self/attr/current 2>/dev/null")


def publish(name, script):
    """Shell: run ``script`` with its output going to /out/NAME whole (write, then rename)."""
    return f"({script}) > /out/{name}.tmp; mv /out/{name}.tmp /out/{name}"


def test_exec_joins_the_container(bundle, runtime, cid):
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO"}]}
    b = bundle(["sh", "-c", f"{publish('init', NS_SCRIPT)}; exec sleep 1000"], out=True,
               hostname="exec-box", linux={"seccomp": seccomp})
    proc = runtime.spawn(cid, b)
    init = out(b, "init")
    status = runtime.exec(cid, exec_process(["sh", "-c",
                                             f"{publish('exec', NS_SCRIPT)}; exit 7"]))
    assert status == 7
    assert out(b, "exec") == init
    assert "Seccomp:\t2" in init and "exec-box" in init
    runtime.kill(cid, signal.SIGKILL)
    proc.wait()


def test_exec_process_settings(bundle, runtime, cid):
    b = bundle(["sleep", "1000"], out=True)
    proc = runtime.spawn(cid, b)
    p = exec_process(["sh", "-c", "echo $(id -u):$(id -g):$(pwd):$(umask):$FOO > /out/who"],
                     cwd="/tmp", env=["PATH=/bin", "FOO=bar"],
                     user={"uid": 65534, "gid": 65534, "umask": 0o027})
    assert runtime.exec(cid, p) == 0
    who = out(b, "who")
    if runtime.name == "runc":  # runc 1.1 ignores user.umask for exec
        who = who.replace(":0022:", ":0027:")
    assert who == "65534:65534:/tmp:0027:bar\n"
    runtime.kill(cid, signal.SIGKILL)
    proc.wait()


def test_exec_detached(bundle, runtime, cid, tmpdir755):
    b = bundle(["sleep", "1000"], out=True)
    proc = runtime.spawn(cid, b)
    pid_file = tmpdir755 / "exec.pid"
    pid = runtime.exec(cid, exec_process(["sh", "-c", "echo $$ > /out/pid; exec sleep 1000"]),
                       detach=True, pid_file=pid_file)
    out(b, "pid")
    assert int(pid_file.read_text()) == pid
    assert pid in runtime.ps(cid)
    assert runtime.state(cid)["pid"] in runtime.ps(cid)
    runtime.kill(cid, signal.SIGKILL, all=True)
    proc.wait()


def test_exec_into_stopped_container_fails(bundle, runtime, cid):
    runtime.create(cid, bundle(["true"]))
    runtime.start(cid)
    runtime.wait_status(cid, "stopped")
    with pytest.raises(support.RuntimeFailure):
        status = runtime.exec(cid, exec_process(["true"]))
        if status != 0:  # a CLI reports the failure as a non-zero exit
            raise support.RuntimeFailure(f"exit {status}")
    runtime.delete(cid)


# ---------------------------------------------------------------- pause


def _frozen(pid) -> bool:
    paths = support.cgroup_paths_of(pid)
    if "freezer" in paths:
        frozen = (paths["freezer"] / "freezer.state").read_text().strip() == "FROZEN"
        if frozen:
            # The v1 freezer parks every task in uninterruptible sleep.
            for task in (paths["freezer"] / "tasks").read_text().split():
                status = Path(f"/proc/{task}/status").read_text()
                assert "State:\tD" in status, status
        return frozen
    events = (paths[""] / "cgroup.events").read_text()
    return "frozen 1" in events


def test_pause_freezes_and_resume_thaws(bundle, runtime, cid):
    script = ("i=0; while :; do i=$((i+1)); echo $i > /out/n.tmp; "
              "mv /out/n.tmp /out/n; sleep 0.02; done")
    b = bundle(["sh", "-c", script], out=True)
    proc = runtime.spawn(cid, b)
    out(b, "n")
    pid = runtime.state(cid)["pid"]
    runtime.pause(cid)
    assert runtime.state(cid)["status"] == "paused"
    assert _frozen(pid)
    first = out(b, "n")
    time.sleep(0.3)
    assert out(b, "n") == first, "the container ran while paused"
    runtime.resume(cid)
    assert runtime.state(cid)["status"] == "running"
    assert not _frozen(pid)
    deadline = time.monotonic() + 10
    while out(b, "n") == first:
        assert time.monotonic() < deadline, "the container did not run after resume"
        time.sleep(0.02)
    runtime.kill(cid, signal.SIGKILL)
    assert proc.wait() == 137


# ---------------------------------------------------------------- resources


MEMORY_32M = {"limit": 32 << 20, "swap": 32 << 20}  # swap = memory+swap in OCI: none


def test_memory_limit_oom_kills_init(bundle, runtime, cid):
    b = bundle(["tail", "/dev/zero"], linux={"resources": {"memory": MEMORY_32M}})
    assert runtime.run(cid, b) == 137


def _host_oom_kills(pid) -> int:
    """The OOM-kill counter of the memory cgroup of ``pid``, read on the host."""
    paths = support.cgroup_paths_of(pid)
    if "memory" in paths:
        text = (paths["memory"] / "memory.oom_control").read_text()
    else:
        text = (paths[""] / "memory.events").read_text()
    return int(dict(line.split() for line in text.splitlines())["oom_kill"])


def _oom_reported(stats) -> bool:
    hits = support.find_key(stats, r"oom")
    return any(v is True or (isinstance(v, int) and not isinstance(v, bool) and v > 0)
               for _, v in hits)


def test_memory_limit_oom_is_reported(bundle, runtime, cid):
    if not runtime.has_stats:
        pytest.skip(f"{runtime.name} has no stats command")
    b = bundle(["sh", "-c", "tail /dev/zero; echo $? > /out/rc; exec sleep 1000"], out=True,
               linux={"resources": {"memory": MEMORY_32M}})
    proc = runtime.spawn(cid, b)
    assert out(b, "rc") == "137\n"
    assert _host_oom_kills(runtime.state(cid)["pid"]) >= 1
    stats = runtime.stats(cid)
    if runtime.name not in ("runc", "crun"):  # runc's stats have no OOM counter
        assert _oom_reported(stats), f"no OOM in stats: {json.dumps(stats)}"
    runtime.kill(cid, signal.SIGKILL)
    proc.wait()


BOMB = """
i=0
while [ $i -lt 200 ]; do
    i=$((i+1))
    sleep 30 &
    echo $i >> /out/forked
done
"""
AFTER_BOMB = """
sh /bomb.sh 2> /out/err
for f in /sys/fs/cgroup/pids/pids.current /sys/fs/cgroup/pids.current; do
    [ -e $f ] && read cur < $f && echo $cur > /out/current
done
exit 0
"""


def test_pids_limit_stops_a_fork_bomb(bundle, runtime, cid):
    # A bounded bomb (200 sleeps) so that a broken limit cannot take the host down.
    b = bundle(["sh", "-c", AFTER_BOMB], out=True, files={"/bomb.sh": BOMB},
               linux={"resources": {"pids": {"limit": 16}}})
    assert runtime.run(cid, b) == 0
    forked = out(b, "forked").split()
    assert 0 < len(forked) < 16, f"{len(forked)} forks went through a limit of 16"
    assert "fork" in out(b, "err")
    assert int(out(b, "current")) <= 16


def test_seccomp_errno_rules_hold(bundle, runtime, cid):
    seccomp = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["fchmodat", "chmod"], "action": "SCMP_ACT_ERRNO"},
        ],
    }
    script = ("hostname > /out/hostname 2>&1; "
              "mkdir /tmp/x > /out/mkdir 2>&1; echo $? >> /out/mkdir; "
              "touch /tmp/f; chmod 600 /tmp/f > /out/chmod 2>&1; echo $? >> /out/chmod; "
              "grep Seccomp: /proc/self/status > /out/mode")
    b = bundle(["sh", "-c", script], out=True, linux={"seccomp": seccomp},
               mounts=[{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}])
    assert runtime.run(cid, b) == 0
    # busybox hostname prints "?" when uname(2) fails.
    assert out(b, "hostname") == "?\n"
    # errnoRet 38 is ENOSYS; without errnoRet the errno is EPERM.
    assert out(b, "mkdir") == ("mkdir: can't create directory '/tmp/x': "
                               "Function not implemented\n1\n")
    assert out(b, "chmod") == "chmod: /tmp/f: Operation not permitted\n1\n"
    assert out(b, "mode") == "Seccomp:\t2\n"


def test_hostname_and_domainname(bundle, runtime, cid):
    b = bundle(["sh", "-c", "hostname > /out/h; cat /proc/sys/kernel/domainname > /out/d"],
               out=True, hostname="box-1", domainname="example.test")
    assert runtime.run(cid, b) == 0
    assert out(b, "h") == "box-1\n"
    if runtime.name == "runc":
        return  # runc 1.1 ignores "domainname"; runc 1.2 sets it
    assert out(b, "d") == "example.test\n"


def test_missing_mount_points_are_created(bundle, runtime, cid, tmpdir755):
    src = tmpdir755 / "src"
    src.mkdir()
    (src / "hello").write_text("hi\n")
    mounts = [
        {"destination": "/new/deep/dir", "type": "bind", "source": str(src),
         "options": ["rbind", "ro"]},
        {"destination": "/new/file", "type": "bind", "source": str(src / "hello"),
         "options": ["bind", "ro"]},
        {"destination": "/new/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
    ]
    script = "cat /new/deep/dir/hello /new/file > /out/r; touch /new/tmp/x && echo ok >> /out/r"
    b = bundle(["sh", "-c", script], out=True, mounts=mounts)
    assert runtime.run(cid, b) == 0
    assert out(b, "r") == "hi\nhi\nok\n"


# ---------------------------------------------------------------- nothing left behind


def test_delete_leaves_nothing_behind(bundle, runtime, cid):
    b = bundle(["sleep", "1000"], linux={"cgroupsPath": f"/sampan-tests/{cid}"})
    proc = runtime.spawn(cid, b)
    pid = runtime.state(cid)["pid"]
    cgroups = support.cgroup_paths_of(pid)
    assert cgroups and all(p.is_dir() for p in cgroups.values())
    assert any(str(p).endswith(f"/sampan-tests/{cid}") for p in cgroups.values()), cgroups
    assert (runtime.root / cid).exists()
    runtime.kill(cid, signal.SIGKILL)
    assert proc.wait() == 137
    try:
        runtime.delete(cid)
    except support.RuntimeFailure:
        pass  # `run` in the foreground deletes by itself
    assert [p for p in cgroups.values() if p.exists()] == []
    assert not (runtime.root / cid).exists()
    assert support.processes_rooted_at(b / "rootfs") == []
    assert [m for m in support.host_mounts() if str(b) in m] == []
    assert support.cgroup_dirs_named(cid) == []


# ---------------------------------------------------------------- hooks


def test_hooks_run_in_order_with_the_state(bundle, runtime, cid, tmpdir755):
    """Every kind of hook runs, in the order of the runtime spec, and gets the state on stdin.

    Host-side hooks append to the bundle's out dir on the host; startContainer runs in the
    container (its path resolves in the rootfs) and appends to the same file as /out.
    """
    log = tmpdir755 / "hooks.log"
    log.touch(mode=0o666)

    def host_hook(name):
        return {"path": "/bin/sh", "args": ["sh", "-c", f"s=$(cat); echo {name} $s >> {log}"],
                "env": ["PATH=/bin:/usr/bin"]}

    hooks = {kind: [host_hook(kind)] for kind in
             ("prestart", "createRuntime", "createContainer", "poststart", "poststop")}
    hooks["startContainer"] = [{"path": "/bin/sh", "args": [
        "sh", "-c", "s=$(cat); echo startContainer $s >> /hooks/hooks.log"]}]
    mounts = [{"destination": "/hooks", "type": "bind", "source": str(tmpdir755),
               "options": ["rbind", "rw"]}]
    b = bundle(["sh", "-c", "echo process >> /hooks/hooks.log"], hooks=hooks, mounts=mounts,
               dirs=["hooks"])
    assert runtime.run(cid, b) == 0
    lines = [line.split(" ", 1) for line in log.read_text().splitlines()]
    names = [n for n, *_ in lines]
    assert sorted(names) == sorted(["prestart", "createRuntime", "createContainer",
                                    "startContainer", "process", "poststart", "poststop"]), names
    # poststart runs once start has been asked for, racing with what the container does
    # between then and its exec (startContainer, the process): only its bounds are fixed.
    without_poststart = [n for n in names if n != "poststart"]
    assert without_poststart == ["prestart", "createRuntime", "createContainer",
                                 "startContainer", "process", "poststop"], names
    assert names.index("createContainer") < names.index("poststart") < names.index("poststop")
    for name, *rest in lines:
        if name == "process":
            continue
        state = json.loads(rest[0])
        assert state["id"] == cid, (name, state)
        assert os.path.realpath(state["bundle"]) == os.path.realpath(b), (name, state)
