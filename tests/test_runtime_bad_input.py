"""Bad input: a clear error, and nothing left behind (no state dir, cgroup, mount, process).

Each case is tried through every driver. runc must refuse too (it shows the case is really
bad) except where noted; the sampan drivers must also say what was wrong: the message
names the offending thing (file, path, syscall, mount type, rlimit).
"""

from __future__ import annotations

import json
import subprocess

import pytest
import support
from sampan.bundle import runc_spec


def _namespaces_with_bad_path():
    ns = [n for n in runc_spec()["linux"]["namespaces"] if n["type"] != "network"]
    return ns + [{"type": "network", "path": "/nonexistent/netns"}]


# name: (args, tweaks, raw config text or None, words one of which the message must hold,
#        whether runc refuses it too)
CASES = {
    "config-not-json": (None, {}, "{ this is not json", ["config.json", "json", "JSON"], True),
    "config-wrong-type": (None, {"process": {"args": "sh"}}, None, ["args", "config.json"],
                          True),
    "config-missing": (None, {}, "", ["config.json"], True),
    "missing-rootfs": (["true"], {"root": {"path": "no-such-rootfs"}}, None,
                       ["no-such-rootfs"], True),
    "relative-cwd": (["true"], {"process": {"cwd": "relative/dir"}}, None,
                     ["cwd", "relative/dir"], True),
    # runc (through libseccomp) skips names it does not know, with no warning.
    "unknown-syscall": (["true"], {"linux": {"seccomp": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_syscall_xyz"], "action": "SCMP_ACT_ERRNO"}]}}},
        None, ["no_such_syscall_xyz"], False),
    "unknown-seccomp-action": (["true"], {"linux": {"seccomp": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_NO_SUCH"}]}}},
        None, ["SCMP_ACT_NO_SUCH"], True),
    # "mounts" here are added to the default ones (see the bundle fixture).
    "unknown-mount-type": (["true"], {"mounts": [
        {"destination": "/mnt", "type": "nosuchfs", "source": "none"}]}, None,
        ["nosuchfs", "/mnt"], True),
    "bind-source-missing": (["true"], {"mounts": [
        {"destination": "/mnt", "type": "bind", "source": "/nonexistent/src",
         "options": ["rbind"]}]}, None, ["/nonexistent/src"], True),
    # root here lacks CAP_SYS_RESOURCE and the hard RLIMIT_NOFILE is 20000.
    "rlimit-above-hard": (["true"], {"process": {"rlimits": [
        {"type": "RLIMIT_NOFILE", "hard": 1 << 20, "soft": 1 << 20}]}}, None,
        ["RLIMIT_NOFILE", "rlimit"], True),
    "rlimit-unknown": (["true"], {"process": {"rlimits": [
        {"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}]}}, None, ["RLIMIT_BOGUS"], True),
    "namespace-path-missing": (["true"], {"hostname": None,
                                          "linux": {"namespaces": _namespaces_with_bad_path()}},
                               None, ["/nonexistent/netns"], True),
    "executable-missing": (["/no/such/program"], {}, None, ["/no/such/program"], True),
    # checked by hand-written code in rust/vendor/oci-spec (upstream used the regex crate);
    # runc 1.1 predates the field and ignores it.
    "exec-cpu-affinity-malformed": (["true"], {"process": {"execCPUAffinity": {
        "initial": "0-1,"}}}, None, ["execCPUAffinity"], False),
}


def _hard_nofile():
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def make_bad(bundle, name):
    args, tweaks, raw, _, _ = CASES[name]
    b = bundle(args or ["true"], name=name, **tweaks)
    if raw is not None:
        if raw == "":
            (b / "config.json").unlink()
        else:
            (b / "config.json").write_text(raw)
    return b


def assert_nothing_left(runtime, cid, b):
    assert not (runtime.root / cid).exists(), f"{runtime.name} left its state dir"
    assert cid not in {c.get("id") for c in runtime.list()}
    assert support.cgroup_dirs_named(cid) == [], f"{runtime.name} left a cgroup"
    assert support.processes_rooted_at(b / "rootfs") == [], f"{runtime.name} left a process"
    assert [m for m in support.host_mounts() if str(b) in m] == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_cleanly(name, bundle, runtime, cid):
    if name == "rlimit-above-hard" and _hard_nofile() >= 1 << 20:
        pytest.skip("the hard RLIMIT_NOFILE here allows the value")
    _, _, _, words, runc_refuses = CASES[name]
    if runtime.name in ("runc", "crun") and not runc_refuses:
        pytest.skip(f"{runtime.name} accepts this (see CASES)")
    b = make_bad(bundle, name)
    with pytest.raises(support.RuntimeFailure) as info:
        runtime.create(cid, b)
        # Some runtimes report an exec failure only at start.
        runtime.start(cid)
    message = info.value.message
    if runtime.name == "sampan-api":
        from sampan import runtime as rt

        assert isinstance(info.value.cause, rt.ContainerError)
    if runtime.name.startswith("sampan"):
        assert any(w in message for w in words), f"unclear message: {message!r}"
    if runtime.name == "sampan-cli":
        assert info.value.returncode not in (None, 0)
        assert "Traceback" not in message, message
    try:
        runtime.delete(cid, force=True)  # a start-time failure may leave a created container
    except support.RuntimeFailure:
        pass
    assert_nothing_left(runtime, cid, b)


@pytest.mark.parametrize("name", ["config-not-json", "missing-rootfs", "rlimit-above-hard"])
def test_bad_input_through_run(name, bundle, runtime, cid):
    """``run`` refuses as ``create`` does: an error (CLI: non-zero exit), nothing left."""
    b = make_bad(bundle, name)
    try:
        status = runtime.run(cid, b)
    except support.RuntimeFailure:
        status = None
    assert status != 0
    assert_nothing_left(runtime, cid, b)


@pytest.mark.parametrize("bad_id", ["", "../escape", "a/b", ".", ".."])
def test_invalid_container_ids(bad_id, bundle, runtime):
    b = bundle(["true"])
    before = sorted(runtime.root.iterdir())
    with pytest.raises(support.RuntimeFailure):
        runtime.create(bad_id, b)
    assert not (runtime.root.parent / "escape").exists()
    assert sorted(runtime.root.iterdir()) == before
    assert support.processes_rooted_at(b / "rootfs") == []


def test_cli_error_format(bundle, sampan_cli, cid):
    """The CLI says ``Error: ...`` on stderr, no traceback, and exits non-zero."""
    b = make_bad(bundle, "missing-rootfs")
    proc = sampan_cli.cmd("run", "-b", b, cid, check=False)
    assert proc.returncode != 0
    assert "no-such-rootfs" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_cli_state_json_matches_runc_shape(bundle, runc, sampan_cli, new_id):
    """`state` prints the same JSON keys runc prints, with the same types."""
    b = bundle(["sleep", "1000"])
    shapes = []
    for driver in (runc, sampan_cli):
        cid = new_id()
        driver.create(cid, b)
        st = json.loads(driver.cmd("state", cid).stdout)
        shapes.append({k: type(v).__name__ for k, v in st.items() if k != "annotations"})
        driver.delete(cid, force=True)
    assert shapes[0] == shapes[1]


def test_cli_spec_writes_runcs_config(tmp_path, sampan_cli):
    """`sampan runtime spec` writes what `runc spec` writes."""
    subprocess.run(["runc", "spec"], cwd=tmp_path, check=True)
    ref = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").unlink()
    sampan_cli.cmd("spec", cwd=tmp_path)
    got = json.loads((tmp_path / "config.json").read_text())
    for doc in (ref, got):
        doc.pop("ociVersion")  # the spec version each runtime was built against
    assert got == ref


@pytest.mark.parametrize("value,ok", [
    ("0", True), ("0-3,7", True), ("12-15,1,2-2", True),
    ("", False), ("0-", False), ("-1", False), ("0-1,", False), (",0", False), ("1-2-3", False),
    ("a", False), ("0 ,1", False), ("\u0663", False),  # an Arabic-Indic digit: Go's \d is ASCII
])
def test_exec_cpu_affinity_grammar(value, ok):
    """execCPUAffinity's grammar (N or N-M, comma-separated), for both of its fields."""
    from sampan import _runtime

    for field in ("initial", "final"):
        config = json.dumps(runc_spec(args=["true"], process={
            "execCPUAffinity": {field: value}}))
        if ok:
            _runtime.parse_spec(config)
        else:
            with pytest.raises(_runtime.ContainerError, match="execCPUAffinity"):
                _runtime.parse_spec(config)
