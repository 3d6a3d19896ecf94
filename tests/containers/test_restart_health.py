"""Restart policies and healthchecks for real: on-failure retries with docker's backoff,
always/unless-stopped across a daemon killed with SIGKILL and started again, stop cancelling
a pending restart; healthchecks going starting → healthy, failing to unhealthy with their log,
timing out; their events and ps's view."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from daemonlib import inspect_container, run_detached, start_daemon

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")


def _until(fn, timeout=20.0, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(step)


def _events(sd, since, **filters):
    from urllib.parse import quote

    q = f"/events?since={since:.6f}&until={time.time():.6f}"
    if filters:
        q += "&filters=" + quote(json.dumps({k: [v] for k, v in filters.items()}))
    return [json.loads(ln) for ln in sd.request("GET", q)[2].splitlines()]


# --------------------------------------------------------------------------- restart policies


def test_on_failure_retries_then_stops(sd):
    t0 = time.time()
    cid = run_detached(sd, "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 3")
    try:
        def done():
            d = inspect_container(sd, cid)
            st = d["State"]
            return d if st["Status"] == "exited" and d["RestartCount"] == 2 else None

        doc = _until(done)
        time.sleep(1)  # and it stays that way
        doc = inspect_container(sd, cid)
        assert doc["RestartCount"] == 2 and doc["State"]["Status"] == "exited"
        assert doc["State"]["ExitCode"] == 3 and not doc["State"]["Restarting"]
        assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                      "MaximumRetryCount": 2}
        acts = [e["Action"] for e in _events(sd, t0, container=cid)]
        assert acts.count("die") == 3 and acts.count("start") == 3
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_on_failure_does_not_restart_a_success(sd):
    cid = run_detached(sd, "--restart", "on-failure", "busybox", "true")
    try:
        _until(lambda: inspect_container(sd, cid)["State"]["Status"] == "exited")
        time.sleep(0.5)
        doc = inspect_container(sd, cid)
        assert doc["RestartCount"] == 0 and doc["State"]["Status"] == "exited"
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_backoff_and_stop_cancels_a_pending_restart(sd):
    cid = run_detached(sd, "--restart", "always", "busybox", "sh", "-c", "exit 1")
    try:
        # 100 ms, 200, 400, 800, 1.6 s…: it is soon seen waiting to restart
        _until(lambda: inspect_container(sd, cid)["RestartCount"] >= 4)
        doc = _until(lambda: (lambda d: d if d["State"]["Restarting"] else None)(
            inspect_container(sd, cid)), step=0.05)
        assert doc["State"]["Status"] == "restarting"
        r = sd.sampan("ps", "--filter", "status=restarting", "--format", "{{.Status}}")
        assert r.stdout.startswith("Restarting (1)")
        # running or waiting to restart, never removable without force
        st, body = sd.json("DELETE", f"/containers/{cid}")
        assert st == 409, body
        assert sd.sampan("stop", cid).returncode == 0
        n = inspect_container(sd, cid)["RestartCount"]
        time.sleep(3.5)  # longer than the next delays
        doc = inspect_container(sd, cid)
        assert doc["State"]["Status"] == "exited" and not doc["State"]["Restarting"]
        assert doc["RestartCount"] == n
        # a start by the user gives the policy back
        assert sd.sampan("start", cid).returncode == 0
        _until(lambda: inspect_container(sd, cid)["RestartCount"] > n)
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_kill_and_unless_stopped(sd):
    """docker: kill marks the container stopped by the user: unless-stopped does not restart
    it, always does."""
    a = run_detached(sd, "--restart", "unless-stopped", "busybox", "sleep", "1000")
    b = run_detached(sd, "--restart", "always", "busybox", "sleep", "1000")
    try:
        assert sd.sampan("kill", a, b).returncode == 0
        _until(lambda: inspect_container(sd, b)["RestartCount"] == 1 and
                        inspect_container(sd, b)["State"]["Running"])
        time.sleep(0.5)
        doc = inspect_container(sd, a)
        assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == 0
    finally:
        for c in (a, b):
            sd.request("DELETE", f"/containers/{c}?force=1")


def test_bad_policies(sd):
    r = sd.sampan("run", "--rm", "--restart", "always", "busybox", "true")
    assert r.returncode == 125 and "--restart and --rm" in r.stderr
    r = sd.sampan("run", "--restart", "sometimes", "busybox", "true")
    assert r.returncode == 125 and "invalid restart policy" in r.stderr
    st, body = sd.json("POST", "/containers/create", {
        "Image": "busybox", "HostConfig": {"RestartPolicy": {"Name": "on-failure",
                                                             "MaximumRetryCount": -1}}})
    assert st == 400


def _exit_recorded(root: Path, cid: str) -> bool:
    return (root / "data" / "containers" / cid / "exit.json").exists()


def test_policies_across_a_daemon_killed_and_restarted(croot, busybox_archive):
    root = croot / "restart-daemon"
    d = start_daemon(root, busybox_archive)
    try:
        always = run_detached(d, "--restart", "always", "busybox", "sleep", "1000")
        unless = run_detached(d, "--restart", "unless-stopped", "busybox", "sleep", "1000")
        stopped_unless = run_detached(d, "--restart", "unless-stopped", "busybox", "sleep", "1000")
        stopped_always = run_detached(d, "--restart", "always", "busybox", "sleep", "1000")
        plain = run_detached(d, "busybox", "sleep", "1000")
        healthy = run_detached(d, "--health-cmd", "true", "--health-interval", "200ms", "busybox",
                               "sleep", "1000")
        _until(lambda: inspect_container(d, healthy)["State"]["Health"]["Status"] == "healthy")
        assert d.sampan("stop", "-t", "0", stopped_unless, stopped_always).returncode == 0
        pids = {c: inspect_container(d, c)["State"]["Pid"] for c in (always, unless, plain)}
        d.stop(signal.SIGKILL)
        # the containers die while there is no daemon
        for p in pids.values():
            os.kill(p, signal.SIGKILL)
        _until(lambda: all(_exit_recorded(root, c) for c in pids))
        d.start()
        for c in (always, unless):
            doc = _until(lambda c=c: (lambda x: x if x["State"]["Running"] else None)(
                inspect_container(d, c)))
            assert doc["State"]["Pid"] != pids[c] and doc["RestartCount"] == 1
        # docker: always comes back even after a stop, when the daemon starts
        _until(lambda: inspect_container(d, stopped_always)["State"]["Running"])
        time.sleep(0.5)
        assert inspect_container(d, stopped_unless)["State"]["Status"] == "exited"
        doc = inspect_container(d, plain)
        assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 137
        # a container that kept running keeps its health, and its probes go on
        doc = inspect_container(d, healthy)
        assert doc["State"]["Running"] and doc["State"]["Health"]["Status"] == "healthy"
        last = doc["State"]["Health"]["Log"][-1]["End"]
        _until(lambda: inspect_container(d, healthy)["State"]["Health"]["Log"][-1]["End"] > last)
    finally:
        for c in d.json("GET", "/containers/json?all=1")[1] or []:
            d.request("DELETE", f"/containers/{c['Id']}?force=1")
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- healthchecks


def test_healthcheck_starting_then_healthy(sd):
    t0 = time.time()
    cid = run_detached(sd, "--health-cmd", "test -e /tmp/ok", "--health-interval", "200ms",
                       "--health-retries", "50", "busybox", "sh", "-c",
                       "sleep 1; touch /tmp/ok; sleep 1000")
    try:
        assert inspect_container(sd, cid)["State"]["Health"]["Status"] == "starting"
        r = sd.sampan("ps", "--format", "{{.Status}}", "--filter", f"id={cid}")
        assert r.stdout.strip().endswith("(health: starting)")
        doc = _until(lambda: (lambda x: x if x["State"]["Health"]["Status"] == "healthy"
                              else None)(inspect_container(sd, cid)))
        h = doc["State"]["Health"]
        assert h["FailingStreak"] == 0 and h["Log"][-1]["ExitCode"] == 0
        assert len(h["Log"]) <= 5
        cfg = doc["Config"]["Healthcheck"]
        assert cfg["Test"] == ["CMD-SHELL", "test -e /tmp/ok"]
        assert cfg["Interval"] == 200_000_000
        r = sd.sampan("ps", "--format", "{{.Status}}", "--filter", "health=healthy")
        assert r.stdout.strip().endswith("(healthy)")
        acts = [e["Action"] for e in _events(sd, t0, container=cid, event="health_status")]
        assert acts == ["health_status: healthy"]
        # each probe is an exec in docker's event stream
        evs = _events(sd, t0, container=cid, event="exec_start")
        assert evs and evs[0]["Action"] == "exec_start: /bin/sh -c test -e /tmp/ok"
        ex = evs[0]["Actor"]["Attributes"]["execID"]
        dies = [e for e in _events(sd, t0, container=cid, event="exec_die")
                if e["Actor"]["Attributes"]["execID"] == ex]
        assert len(dies) == 1 and dies[0]["Actor"]["Attributes"]["exitCode"] in ("0", "1")
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_failing_healthcheck_becomes_unhealthy_with_its_log(sd):
    cid = run_detached(sd, "--health-cmd", "echo bad; exit 1", "--health-interval", "200ms",
                       "--health-retries", "2", "busybox", "sleep", "1000")
    try:
        doc = _until(lambda: (lambda x: x if x["State"]["Health"]["Status"] == "unhealthy"
                              else None)(inspect_container(sd, cid)))
        h = doc["State"]["Health"]
        assert h["FailingStreak"] >= 2
        assert h["Log"][-1]["ExitCode"] == 1 and h["Log"][-1]["Output"] == "bad\n"
        assert h["Log"][-1]["Start"] <= h["Log"][-1]["End"]
        r = sd.sampan("ps", "--filter", "health=unhealthy", "-q")
        assert r.stdout.strip() == cid[:12]
        assert sd.sampan("ps", "--filter", "health=healthy", "-q").stdout.strip() == ""
        time.sleep(1.5)
        assert len(inspect_container(sd, cid)["State"]["Health"]["Log"]) == 5
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_healthcheck_start_period(sd):
    """Failures in the start period do not count; probes run every start interval then."""
    cid = run_detached(sd, "--health-cmd", "exit 1", "--health-interval", "300ms",
                       "--health-start-period", "2s", "--health-start-interval", "100ms",
                       "--health-retries", "1", "busybox", "sleep", "1000")
    try:
        doc = _until(lambda: (lambda x: x if len(x["State"]["Health"]["Log"]) >= 2 else None)(
            inspect_container(sd, cid)), step=0.05)
        h = doc["State"]["Health"]
        started = doc["State"]["StartedAt"]
        if h["Log"][-1]["End"] <= _plus(started, 1.8):
            assert h["Status"] == "starting" and h["FailingStreak"] == 0
        doc = _until(lambda: (lambda x: x if x["State"]["Health"]["Status"] == "unhealthy"
                              else None)(inspect_container(sd, cid)))
        # with one retry and no start period the first probe (0.3 s) would have done it
        first_fail = doc["State"]["Health"]["Log"][-1]["End"]
        assert first_fail >= _plus(started, 2.0)
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def _plus(rfc3339: str, seconds: float) -> str:
    from sampan.containers.store import parse_rfc3339

    t = parse_rfc3339(rfc3339) + seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def test_healthcheck_timeout_and_output_cap(sd):
    cid = run_detached(sd, "--health-cmd", "head -c 10000 /dev/zero | tr '\\0' x; sleep 5",
                       "--health-interval", "200ms", "--health-timeout", "500ms",
                       "--health-retries", "1", "busybox", "sleep", "1000")
    try:
        doc = _until(lambda: (lambda x: x if x["State"]["Health"]["Log"] else None)(
            inspect_container(sd, cid)))
        entry = doc["State"]["Health"]["Log"][0]
        assert entry["ExitCode"] == -1
        assert "Health check exceeded timeout" in entry["Output"]
        _until(lambda: inspect_container(sd, cid)["State"]["Health"]["Status"] == "unhealthy")
        # each timed-out probe was killed inside the container: they do not pile up (a new
        # one may be running now)
        _until(lambda: len(inspect_container(sd, cid)["State"]["Health"]["Log"]) >= 3)
        st, top = sd.json("GET", f"/containers/{cid}/top")
        assert sum("sleep 5" in " ".join(p) for p in top["Processes"]) <= 1
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")
    cid = run_detached(sd, "--health-cmd", "head -c 10000 /dev/zero | tr '\\0' x",
                       "--health-interval", "200ms", "busybox", "sleep", "1000")
    try:
        doc = _until(lambda: (lambda x: x if x["State"]["Health"]["Log"] else None)(
            inspect_container(sd, cid)))
        assert len(doc["State"]["Health"]["Log"][0]["Output"]) == 4096
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_healthcheck_api_and_bad_values(sd):
    st, out = sd.json("POST", "/containers/create", {
        "Image": "busybox", "Cmd": ["sleep", "1000"],
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 100_000_000, "Retries": 1}})
    assert st == 201, out
    cid = out["Id"]
    try:
        assert sd.request("POST", f"/containers/{cid}/start")[0] == 204
        _until(lambda: inspect_container(sd, cid)["State"]["Health"]["Status"] == "healthy")
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")
    for hc in ({"Test": ["CMD", "true"], "Interval": 10}, {"Test": ["CMD", "true"],
                                                           "Retries": -1},
               {"Test": ["WHAT", "x"]}, {"Test": "true"}):
        st, out = sd.json("POST", "/containers/create", {"Image": "busybox", "Healthcheck": hc})
        assert st == 400, (hc, out)
    r = sd.sampan("run", "--rm", "--no-healthcheck", "--health-cmd", "true", "busybox", "true")
    assert r.returncode != 0
    cid = run_detached(sd, "--no-healthcheck", "busybox", "sleep", "1000")
    try:
        assert "Health" not in inspect_container(sd, cid)["State"]
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def _image_with_healthcheck(archive: bytes, tag: str, hc: dict) -> bytes:
    """The busybox archive with a HEALTHCHECK in its config, under another tag."""
    import hashlib
    import io
    import tarfile

    src = tarfile.open(fileobj=io.BytesIO(archive))
    files = {m.name: src.extractfile(m).read() for m in src.getmembers() if m.isfile()}
    manifest = json.loads(files.pop("manifest.json"))
    cfg = json.loads(files.pop(manifest[0]["Config"]))
    cfg["config"]["Healthcheck"] = hc
    data = json.dumps(cfg).encode()
    name = hashlib.sha256(data).hexdigest() + ".json"
    files[name] = data
    manifest[0].update({"Config": name, "RepoTags": [tag]})
    files["manifest.json"] = json.dumps(manifest).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for n, b in files.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(b)
            tar.addfile(ti, io.BytesIO(b))
    return out.getvalue()


def test_image_healthcheck_and_no_healthcheck(sd, busybox_archive):
    arc = _image_with_healthcheck(busybox_archive, "healthy:img", {
        "Test": ["CMD-SHELL", "echo from-image"], "Interval": 200_000_000, "Retries": 2})
    st, _h, body = sd.request("POST", "/images/load?quiet=1", arc,
                              {"Content-Type": "application/x-tar"})
    assert st == 200, body
    cid = run_detached(sd, "healthy:img", "sleep", "1000")
    try:
        doc = _until(lambda: (lambda x: x if x["State"]["Health"]["Status"] == "healthy"
                              else None)(inspect_container(sd, cid)))
        assert doc["State"]["Health"]["Log"][-1]["Output"] == "from-image\n"
        assert doc["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "echo from-image"]
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")
    # the container's own settings win over the image's
    cid = run_detached(sd, "--health-cmd", "echo mine", "healthy:img", "sleep", "1000")
    try:
        doc = _until(lambda: (lambda x: x if x["State"]["Health"]["Log"] else None)(
            inspect_container(sd, cid)))
        assert doc["State"]["Health"]["Log"][-1]["Output"] == "mine\n"
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")
    cid = run_detached(sd, "--no-healthcheck", "healthy:img", "sleep", "1000")
    try:
        time.sleep(0.6)
        assert "Health" not in inspect_container(sd, cid)["State"]
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


@docker_cli
def test_docker_cli_healthcheck_and_restart(sd):
    r = sd.docker("run", "-d", "--health-cmd", "true", "--health-interval", "200ms",
                  "--restart", "unless-stopped", "busybox", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        _until(lambda: "(healthy)" in sd.docker("ps", "--filter", f"id={cid}",
                                                "--format", "{{.Status}}").stdout)
        r = sd.docker("inspect", "-f",
                      "{{.State.Health.Status}} {{.HostConfig.RestartPolicy.Name}}", cid)
        assert r.stdout.strip() == "healthy unless-stopped"
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")
