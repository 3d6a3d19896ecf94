"""Events for real: container and image events through GET /events, `docker events` (filters,
--since/--until, --format) and docker-py's events(decode=True), and `sampan events`."""

from __future__ import annotations

import json
import shutil
import threading
import time
from urllib.parse import quote

import pytest

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")


def _run_rm(sd, *args):
    r = sd.sampan("run", *args)
    assert r.returncode == 0, r.stderr
    return r


def _events(sd, since, until, **filters):
    q = f"/events?since={since}&until={until}"
    if filters:
        q += "&filters=" + quote(json.dumps({k: [v] if isinstance(v, str) else v
                                             for k, v in filters.items()}))
    st, _h, body = sd.request("GET", q)
    assert st == 200, body
    return [json.loads(ln) for ln in body.splitlines() if ln.strip()]


def test_container_lifecycle_events_shape(sd):
    t0 = time.time()
    r = sd.sampan("run", "--name", "ev1", "-l", "team=blue", "busybox", "sh", "-c", "exit 3")
    assert r.returncode == 3
    assert sd.sampan("rm", "ev1").returncode == 0
    evs = _events(sd, f"{t0:.9f}", f"{time.time() + 0.5:.9f}", container="ev1")
    actions = [e["Action"] for e in evs]
    # an attached run: docker emits attach before the start
    assert actions == ["create", "attach", "start", "die", "destroy"], actions
    die = evs[3]
    cid = die["Actor"]["ID"]
    assert len(cid) == 64 and die["id"] == cid and die["status"] == "die"
    assert die["Type"] == "container" and die["scope"] == "local"
    assert die["from"] == "busybox"
    attrs = die["Actor"]["Attributes"]
    assert attrs["exitCode"] == "3" and attrs["name"] == "ev1" and attrs["image"] == "busybox"
    assert attrs["team"] == "blue"
    assert isinstance(die["time"], int) and die["timeNano"] // 10**9 == die["time"]
    # other filters: by label, by event, by type
    assert [e["Action"] for e in _events(sd, f"{t0:.9f}", f"{time.time():.9f}",
                                         label="team=blue", event="die")] == ["die"]
    assert _events(sd, f"{t0:.9f}", f"{time.time():.9f}", label="team=red") == []
    assert _events(sd, f"{t0:.9f}", f"{time.time():.9f}", type="image",
                   container="ev1") == []


def test_stop_and_kill_events(sd):
    t0 = time.time()
    r = sd.sampan("run", "-d", "--name", "ev2", "busybox", "sleep", "100")
    assert r.returncode == 0, r.stderr
    assert sd.sampan("stop", "-t", "1", "ev2").returncode == 0
    sd.sampan("start", "ev2")
    assert sd.sampan("kill", "-s", "USR1", "ev2").returncode == 0
    sd.sampan("rm", "-f", "ev2")
    evs = _events(sd, f"{t0:.9f}", f"{time.time() + 0.5:.9f}", container="ev2")
    seq = [(e["Action"], e["Actor"]["Attributes"].get("signal")) for e in evs]
    # sleep as pid 1 ignores SIGTERM: the stop ends with SIGKILL, as docker's does
    assert seq[:6] == [("create", None), ("start", None), ("kill", "15"), ("kill", "9"),
                       ("die", None), ("stop", None)], seq
    assert ("kill", "10") in seq
    assert seq[-1] == ("destroy", None)


def test_image_events(sd):
    t0 = time.time()
    assert sd.sampan("tag", "busybox", "evtag:one").returncode == 0
    assert sd.sampan("rmi", "evtag:one").returncode == 0
    evs = _events(sd, f"{t0:.9f}", f"{time.time() + 0.5:.9f}", type="image")
    acts = [(e["Action"], e["Actor"]["Attributes"].get("name")) for e in evs]
    assert acts[0] == ("tag", "evtag:one"), acts
    assert acts[1][0] == "untag"
    assert evs[0]["Actor"]["ID"].startswith("sha256:") and evs[0]["status"] == "tag"
    # the image filter matches the tag's name
    assert [e["Action"] for e in _events(sd, f"{t0:.9f}", f"{time.time():.9f}",
                                         image="evtag:one")] == ["tag"]


def test_streaming_and_until(sd):
    """A live listener sees events as they happen; `until` ends the stream."""
    until = time.time() + 8  # room for a slow run on a loaded machine
    out: list[bytes] = []

    def listen():
        st, _h, body = sd.request("GET", f"/events?until={until:.3f}", timeout=20)
        out.append(body)

    t = threading.Thread(target=listen)
    t.start()
    time.sleep(0.5)
    _run_rm(sd, "--rm", "--name", "ev3", "busybox", "true")
    t.join(20)
    assert not t.is_alive()
    acts = [json.loads(ln)["Action"] for ln in out[0].splitlines()
            if json.loads(ln).get("Actor", {}).get("Attributes", {}).get("name") == "ev3"]
    assert acts == ["create", "attach", "start", "die", "destroy"], acts


def test_bad_filters_are_400(sd):
    st, _h, body = sd.request("GET", "/events?filters=" + quote(json.dumps({"nope": ["x"]})))
    assert st == 400 and b"invalid filter" in body
    st, _h, body = sd.request("GET", "/events?since=yesterday-ish")
    assert st == 400
    st, _h, body = sd.request("GET", "/events?since=20&until=10")
    assert st == 400
    assert sd.request("GET", "/_ping")[0] == 200


@docker_cli
def test_docker_events_cli(sd):
    t0 = time.time()
    _run_rm(sd, "--rm", "--name", "ev4", "busybox", "true")
    r = sd.docker("events", "--since", f"{t0:.3f}", "--until", f"{time.time() + 0.5:.3f}",
                  "--filter", "container=ev4", "--filter", "event=die", "--format",
                  "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} "
                  "{{.Actor.Attributes.exitCode}}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "container die ev4 0\n"
    r = sd.docker("events", "--since", f"{t0:.3f}", "--until", f"{time.time() + 0.5:.3f}",
                  "--filter", "container=ev4", "--format", "{{json .}}")
    lines = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [e["Action"] for e in lines] == ["create", "attach", "start", "die", "destroy"]
    # docker's default line: time type action id (attributes)
    r = sd.docker("events", "--since", f"{t0:.3f}", "--until", f"{time.time() + 0.5:.3f}",
                  "--filter", "container=ev4", "--filter", "event=destroy")
    assert " container destroy " in r.stdout and "name=ev4" in r.stdout


def test_sampan_events_cli(sd):
    t0 = time.time()
    _run_rm(sd, "--rm", "--name", "ev5", "busybox", "true")
    until = f"{time.time() + 0.5:.3f}"
    r = sd.sampan("events", "--since", f"{t0:.3f}", "--until", until, "--filter",
                  "container=ev5", "--filter", "event=start")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and " container start " in lines[0] and "name=ev5" in lines[0]
    r = sd.sampan("events", "--since", f"{t0:.3f}", "--until", until, "--filter",
                  "container=ev5", "--format", "{{json .}}")
    assert [json.loads(ln)["Action"] for ln in r.stdout.splitlines()] == \
        ["create", "attach", "start", "die", "destroy"]


def test_docker_py_events(sd):
    docker = pytest.importorskip("docker")
    cl = docker.DockerClient(base_url=sd.host, version="1.45")
    try:
        t0 = time.time()
        stream = cl.events(decode=True, filters={"container": "ev6"},
                           until=int(time.time()) + 30)
        got: list[dict] = []

        def read():
            for ev in stream:
                got.append(ev)
                if ev["Action"] == "destroy":
                    stream.close()
                    return

        t = threading.Thread(target=read)
        t.start()
        time.sleep(0.3)
        cl.containers.run("busybox", ["true"], name="ev6", remove=True)
        t.join(15)
        assert [e["Action"] for e in got] == ["create", "start", "die", "destroy"]
        assert got[0]["Actor"]["Attributes"]["name"] == "ev6"
        assert got[0]["time"] >= int(t0)
    finally:
        cl.close()





def test_oom_event(sd):
    t0 = time.time()
    r = sd.sampan("run", "--name", "evoom", "-m", "8m", "--memory-swap", "8m", "busybox", "sh",
                  "-c", "head -c 100m /dev/zero | tail")
    assert r.returncode == 137
    try:
        st, doc = sd.json("GET", "/containers/evoom/json")
        assert doc["State"]["OOMKilled"]
        acts = [e["Action"] for e in _events(sd, f"{t0:.9f}", f"{time.time() + 0.3:.9f}",
                                             container="evoom")]
        assert acts[-2:] == ["oom", "die"], acts
    finally:
        sd.request("DELETE", "/containers/evoom?force=1")


def test_pause_unpause_update_events(sd):
    t0 = time.time()
    cid = sd.sampan("run", "-d", "--name", "evops", "busybox", "sleep", "1000").stdout.strip()
    try:
        for verb in ("pause", "unpause"):
            assert sd.sampan(verb, cid).returncode == 0
        assert sd.sampan("update", "--cpu-shares", "512", cid).returncode == 0
        acts = [e["Action"] for e in _events(sd, f"{t0:.9f}", f"{time.time() + 0.3:.9f}",
                                             container="evops")]
        assert acts == ["create", "start", "pause", "unpause", "update"], acts
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def test_network_events(sd):
    t0 = time.time()
    st, net = sd.json("POST", "/networks/create", {"Name": "evnet", "Driver": "bridge"})
    assert st == 201, net
    cid = sd.sampan("run", "-d", "busybox", "sleep", "1000").stdout.strip()
    try:
        st, body = sd.json("POST", "/networks/evnet/connect", {"Container": cid})
        assert st == 200, body
        st, body = sd.json("POST", "/networks/evnet/disconnect", {"Container": cid})
        assert st == 200, body
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")
        assert sd.request("DELETE", "/networks/evnet")[0] == 204
    evs = _events(sd, f"{t0:.9f}", f"{time.time() + 0.3:.9f}", type="network",
                  network="evnet")
    assert [e["Action"] for e in evs] == ["create", "connect", "disconnect", "destroy"]
    assert all(e["Actor"]["ID"] == net["Id"] for e in evs)
    assert evs[0]["Actor"]["Attributes"] == {"name": "evnet", "type": "bridge"}
    assert evs[1]["Actor"]["Attributes"]["container"] == cid
    assert "status" not in evs[0]  # the legacy fields are for containers and images only


def test_prune_events(sd):
    t0 = time.time()
    cid = sd.sampan("create", "--name", "evprune", "-l", "evprune=1", "busybox",
                    "true").stdout.strip()
    st, out = sd.json("POST", "/containers/prune?filters=" + quote(json.dumps(
        {"label": ["evprune=1"]})))
    assert st == 200 and out["ContainersDeleted"] == [cid]
    evs = _events(sd, f"{t0:.9f}", f"{time.time() + 0.3:.9f}", type="container")
    acts = [(e["Action"], e["Actor"]["ID"]) for e in evs]
    assert acts[-2:] == [("destroy", cid), ("prune", "")], acts
    assert evs[-1]["Actor"]["Attributes"] == {"reclaimed": "0"}
