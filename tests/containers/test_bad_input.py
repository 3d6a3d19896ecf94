"""Bad input to the container API: wrong JSON types for every field the daemon reads, values too
big for their Go types, unknown fields (ignored, as dockerd does), invalid and duplicate names,
unknown images, traversal in names and path parameters, unsupported options and malformed HTTP.
Each bad case is a 4xx with a message, creates nothing (no record, no directory, no mount), and
the daemon answers a ping afterwards."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest
from sampan.containers import createtypes

# A value of the wrong JSON type for each kind of Go type the decoder knows.
WRONG = {"string": 7, "bool": "yes", "int": "12", "int64": "12", "uint16": "1",
         "uint32": "1", "uint64": "1", "uint": "1"}


def wrong_value(t):
    if isinstance(t, str):
        return WRONG[t]
    if t == createtypes.STRSLICE:
        return 5
    if isinstance(t, dict):
        return "not-an-object"
    if t[0] == "list":
        return {"a": 1}
    return ["not", "a", "map"]


def field_cases():
    cases = []
    for k, t in createtypes.CONFIG.items():
        if k == "Image":
            continue
        cases.append(pytest.param({k: wrong_value(t)}, k, id=f"Config.{k}"))
    for k, t in createtypes.HOST_CONFIG.items():
        cases.append(pytest.param({"HostConfig": {k: wrong_value(t)}}, k, id=f"HostConfig.{k}"))
    return cases


def overlay_mounts(root: Path) -> list[str]:
    return [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(root) in ln]


class Snapshot:
    """What exists for the daemon: records, container directories, mounts under its root."""

    def __init__(self, sd):
        self.sd = sd
        self.before = self.take()

    def take(self):
        st, lst = self.sd.json("GET", "/containers/json?all=1")
        assert st == 200
        dirs = sorted(p.name for p in (self.sd.data / "containers").iterdir())
        return sorted(c["Id"] for c in lst), dirs, overlay_mounts(self.sd.data)

    def unchanged(self):
        assert self.take() == self.before


def ping(sd):
    st, _h, body = sd.request("GET", "/_ping")
    assert (st, body) == (200, b"OK")


def create(sd, body, name=None):
    q = "?name=" + urllib.parse.quote(name, safe="") if name is not None else ""
    st, _h, data = sd.request("POST", "/containers/create" + q, json.dumps(body).encode(),
                              {"Content-Type": "application/json"})
    return st, (json.loads(data) if data.strip() else None)


def bad_create(sd, body, status=400, name=None, words=None):
    snap = Snapshot(sd)
    st, ans = create(sd, {"Image": "busybox", "Cmd": ["true"], **body}, name)
    assert st == status, (st, ans)
    assert isinstance(ans, dict) and ans.get("message"), ans
    if words:
        assert words in ans["message"], ans
    ping(sd)
    snap.unchanged()
    return ans["message"]


@pytest.mark.parametrize("body,field", field_cases())
def test_wrong_type_is_400(sd, body, field):
    msg = bad_create(sd, body)
    assert field in msg and "cannot unmarshal" in msg


@pytest.mark.parametrize("body", [
    {"Env": ["A=1", 2]},
    {"Cmd": ["echo", None, 3]},
    {"Labels": {"a": 1}},
    {"ExposedPorts": {"80/tcp": "yes"}},
    {"Healthcheck": {"Test": ["CMD", "true"], "Interval": "1s"}},
    {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": 8080}]}}},
    {"HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": "1", "Hard": 2}]}},
    {"HostConfig": {"Mounts": [{"Type": "tmpfs", "Target": "/x",
                                "TmpfsOptions": {"SizeBytes": "1k"}}]}},
    {"HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": "3"}}},
    {"HostConfig": {"LogConfig": {"Type": "json-file", "Config": {"max-size": 10}}}},
    {"HostConfig": {"Devices": [{"PathOnHost": ["/dev/null"]}]}},
    {"HostConfig": {"Sysctls": {"net.ipv4.ip_forward": 1}}},
    {"NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": "x"}}}},
    {"HostConfig": {"ConsoleSize": [1, 2, 3]}},
    {"Tty": 1}, {"Tty": "true"}, {"StopTimeout": 1.5}, {"HostConfig": {"Memory": 1e9}},
], ids=lambda b: json.dumps(b)[:60])
def test_nested_wrong_types_are_400(sd, body):
    bad_create(sd, body)


@pytest.mark.parametrize("body", [
    {"HostConfig": {"Memory": 2**70}},
    {"HostConfig": {"Memory": -(2**64)}},
    {"HostConfig": {"ShmSize": 2**63}},
    {"HostConfig": {"PidsLimit": 10**30}},
    {"HostConfig": {"CpuShares": 2**64}},
    {"HostConfig": {"BlkioWeight": 70000}},
    {"HostConfig": {"OomScoreAdj": 2**63}},
    {"StopTimeout": 2**64},
    {"HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 2**64, "Hard": 2**64}]}},
], ids=lambda b: json.dumps(b)[:60])
def test_numbers_too_big_for_their_type_are_400(sd, body):
    msg = bad_create(sd, body)
    assert "cannot unmarshal number" in msg


@pytest.mark.parametrize("body,words", [
    ({"HostConfig": {"Memory": 1}}, "Minimum memory limit"),
    ({"HostConfig": {"NetworkMode": "container:"}}, None),
    ({"HostConfig": {"LogConfig": {"Type": "syslog-nope"}}}, "no log driver named"),
    ({"HostConfig": {"LogConfig": {"Type": "json-file", "Config": {"bogus": "1"}}}},
     "unknown log opt"),
    ({"HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}, None),
    ({"HostConfig": {"RestartPolicy": {"Name": "always"}, "AutoRemove": True}}, None),
    ({"HostConfig": {"CapAdd": ["CAP_NOPE"]}}, "CAP_NOPE"),
    ({"HostConfig": {"SecurityOpt": ["bogus=1"]}}, None),
    ({"HostConfig": {"SecurityOpt": ["seccomp=/no/such/profile.json"]}}, None),
    ({"Env": ["=x"]}, "environment"),
    ({"StopSignal": "SIGNOPE"}, "Invalid signal"),
    ({"User": "nosuchuser"}, "nosuchuser"),
    ({"HostConfig": {"Binds": ["/tmp:relative"]}}, None),
    ({"HostConfig": {"Mounts": [{"Type": "nfs", "Target": "/x"}]}}, None),
    ({"HostConfig": {"Ulimits": [{"Name": "nope", "Soft": 1, "Hard": 1}]}}, None),
    ({"HostConfig": {"Sysctls": {"kernel.modprobe": "/x"}}}, None),
    ({"HostConfig": {"Devices": [{"PathOnHost": "/dev/no-such-device",
                                  "PathInContainer": "/dev/x",
                                  "CgroupPermissions": "rwm"}]}}, None),
    ({"HostConfig": {"CpusetCpus": "nonsense"}}, None),
    ({"Healthcheck": {"Test": ["BOGUS"]}}, None),
    ({"Cmd": [], "Entrypoint": []}, None),
], ids=lambda b: json.dumps(b)[:70])
def test_unsupported_options_are_4xx(sd, body, words):
    bad_create(sd, body, words=words)


def test_unknown_network_is_404(sd):
    bad_create(sd, {"HostConfig": {"NetworkMode": "no-such-network"}}, status=404)
    # dockerd's words; its status differs between versions (400 from create's checks, 404
    # from the lookup)
    snap = Snapshot(sd)
    st, ans = create(sd, {"Image": "busybox", "Cmd": ["true"],
                          "HostConfig": {"NetworkMode": "container:no-such-container"}})
    assert st in (400, 404) and "No such container" in ans["message"], (st, ans)
    ping(sd)
    snap.unchanged()


def test_unknown_image_is_404(sd):
    msg = bad_create(sd, {"Image": "no-such-image:latest"}, status=404)
    assert "No such image" in msg
    msg = bad_create(sd, {"Image": "sha256:" + "0" * 64}, status=404)
    assert "No such image" in msg
    bad_create(sd, {"Image": "UPPER/Case"}, status=400)
    bad_create(sd, {"Image": ""})


@pytest.mark.parametrize("name", ["../x", "a/b", "/../x", "x/../../y", ".hidden", "-dash",
                                  "sp ace", "new\nline", "é", "x" * 4096, "/", "a;b",
                                  "%2e%2e", "a"])  # dockerd wants two characters at least
def test_invalid_names_are_400(sd, name):
    msg = bad_create(sd, {}, name=name)
    assert "Invalid container name" in msg


def test_duplicate_name_is_409_and_unknown_fields_are_ignored(sd):
    body = {"Image": "busybox", "Cmd": ["true"], "NoSuchField": {"deep": [1, 2]},
            "Tty": False, "HostConfig": {"Frobnicate": True, "Memory": None,
                                         "Init": None}}
    st, ans = create(sd, body, "dup")
    assert st == 201, ans
    cid = ans["Id"]
    try:
        msg = bad_create(sd, {}, status=409, name="dup")
        assert "already in use" in msg and cid in msg
        msg = bad_create(sd, {}, status=409, name="/dup")  # the leading slash is the same name
        ins = sd.json("GET", "/containers/dup/json")[1]
        assert "NoSuchField" not in json.dumps(ins["Config"])
        assert ins["HostConfig"]["Memory"] == 0
    finally:
        assert sd.request("DELETE", f"/containers/{cid}")[0] == 204


@pytest.mark.parametrize("path", [
    "/containers/..%2F..%2Fetc/json", "/containers/%2e%2e/json", "/containers/..%2fimages/json",
    "/containers/%2Fetc%2Fpasswd/json", "/containers/..%252f/json",
    "/containers/x%00y/json", "/containers/" + "a" * 5000 + "/json",
])
def test_traversal_in_path_parameters_is_404(sd, path):
    snap = Snapshot(sd)
    for method, suffix in (("GET", ""), ("POST", "/start"), ("POST", "/stop"),
                           ("POST", "/kill"), ("POST", "/wait"), ("GET", "/logs?stdout=1")):
        p = path if not suffix else path[:-len("/json")] + suffix
        st, _h, body = sd.request(method, p)
        assert st in (400, 404), (method, p, st, body)
        assert json.loads(body).get("message")
    st, _h, body = sd.request("DELETE", path[:-len("/json")] + "?force=1")
    assert st in (400, 404), (path, st, body)
    ping(sd)
    snap.unchanged()
    assert Path("/etc/passwd").exists()


def test_traversal_names_do_not_escape_the_data_root(sd):
    """A name is never a path: neither '../x' nor an absolute path makes a file anywhere."""
    outside = sd.root / "escaped"
    for name in (f"../../../{outside.name}", str(outside)):
        bad_create(sd, {}, name=name)
    assert not outside.exists()
    st, ans = create(sd, {"Image": "busybox", "Cmd": ["true"]}, "okname")
    assert st == 201
    try:
        # rename to a traversal name is refused the same way
        st, _h, body = sd.request("POST", "/containers/okname/rename?name=..%2F..%2Fx")
        assert st == 400, body
        assert sd.json("GET", "/containers/okname/json")[1]["Name"] == "/okname"
    finally:
        sd.request("DELETE", f"/containers/{ans['Id']}")


def test_huge_env_string_fails_start_cleanly(sd):
    """1 MiB in one environment string: dockerd accepts the create; the kernel refuses the
    execve (MAX_ARG_STRLEN), and that is a start error naming the cause, not a hung or dead
    daemon; the container can be removed."""
    st, ans = create(sd, {"Image": "busybox", "Cmd": ["true"], "Env": ["BIG=" + "x" * 2**20]})
    assert st == 201, ans
    cid = ans["Id"]
    try:
        st, _h, body = sd.request("POST", f"/containers/{cid}/start")
        assert 400 <= st < 600 and st != 404, (st, body)
        assert "argument list too long" in json.loads(body)["message"].lower()
        ping(sd)
        ins = sd.json("GET", f"/containers/{cid}/json")[1]
        assert not ins["State"]["Running"]
    finally:
        assert sd.request("DELETE", f"/containers/{cid}?force=1")[0] == 204
    assert not (sd.data / "containers" / cid).exists()


def test_ten_thousand_env_entries_work(sd):
    env = [f"V{i}={i}" for i in range(10000)]
    st, ans = create(sd, {"Image": "busybox", "Cmd": ["sh", "-c", "env | wc -l; echo $V9999"],
                          "Env": env})
    assert st == 201, ans
    cid = ans["Id"]
    try:
        assert sd.request("POST", f"/containers/{cid}/start")[0] == 204
        st, res = sd.json("POST", f"/containers/{cid}/wait")
        assert res["StatusCode"] == 0
        _st, _h, out = sd.request("GET", f"/containers/{cid}/logs?stdout=1")
        text = b"".join(_frames(out)).decode().split()
        assert int(text[0]) >= 10000 and text[1] == "9999"
    finally:
        sd.request("DELETE", f"/containers/{cid}?force=1")


def _frames(data: bytes):
    while data:
        n = int.from_bytes(data[4:8], "big")
        yield data[8:8 + n]
        data = data[8 + n:]


# ---------------------------------------------------------------- malformed HTTP


def _status(raw: bytes) -> int:
    line = raw.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 "), raw[:200]
    return int(line.split()[1])


def _req(body: bytes, headers: str) -> bytes:
    return (b"POST /containers/create HTTP/1.1\r\nHost: x\r\n" + headers.encode()
            + b"\r\n" + body)


@pytest.mark.parametrize("raw", [
    _req(b'{"Image": "busybox", "Cmd": [', "Content-Type: application/json\r\n"
         "Content-Length: 29\r\nConnection: close\r\n"),
    _req(b"\xff\xfe\x00garbage", "Content-Type: application/json\r\nContent-Length: 10\r\n"
         "Connection: close\r\n"),
    _req(b'["Image"]', "Content-Type: application/json\r\nContent-Length: 9\r\n"
         "Connection: close\r\n"),
    _req(b'"busybox"', "Content-Type: application/json\r\nContent-Length: 9\r\n"
         "Connection: close\r\n"),
    _req(b'{"Image": "busybox"}', "Content-Type: text/plain\r\nContent-Length: 20\r\n"
         "Connection: close\r\n"),
    _req(b'{"Image": "busybox"}', "Content-Type: application/json\r\nContent-Length: abc\r\n"),
    _req(b'{"Image": "busybox"}', "Content-Type: application/json\r\nContent-Length: -5\r\n"),
    _req(b'{"Image": "busybox"}', "Content-Type: application/json\r\nContent-Length: 20\r\n"
         "Content-Length: 21\r\n"),
    _req(b'zz\r\n{}\r\n0\r\n\r\n', "Content-Type: application/json\r\n"
         "Transfer-Encoding: chunked\r\n"),
    b"POST /containers/create HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    b"NOT-HTTP\r\n\r\n",
], ids=range(11))
def test_malformed_http_is_400(sd, raw):
    snap = Snapshot(sd)
    out = sd.raw(raw)
    assert _status(out) == 400, out[:300]
    ping(sd)
    snap.unchanged()


def test_body_shorter_than_content_length(sd):
    """The client promises more than it sends and closes: nothing is created, and the daemon
    keeps serving everyone else."""
    import socket

    snap = Snapshot(sd)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sd.sock))
    s.sendall(_req(b'{"Image": "busybox", "Cmd": ["true"]}',
                   "Content-Type: application/json\r\nContent-Length: 100\r\n"))
    ping(sd)  # the half-sent request does not block others
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except OSError:
        pass
    s.close()
    assert out == b"" or _status(out) == 400, out[:300]
    ping(sd)
    snap.unchanged()


def test_body_longer_than_content_length(sd):
    """Bytes past Content-Length are the next request on the connection: garbage there is a
    400 for that request, and the first one was answered on its own merits."""
    snap = Snapshot(sd)
    first = b'{"Image": "busybox", "Cmd": ["true"], "Tty": "x"}'
    out = sd.raw(_req(first + b"GARBAGE GARBAGE\r\n\r\n",
                      f"Content-Type: application/json\r\nContent-Length: {len(first)}\r\n"))
    assert _status(out) == 400 and b"cannot unmarshal" in out, out[:300]
    assert out.count(b"HTTP/1.1 400") == 2, out
    ping(sd)
    snap.unchanged()


def test_huge_body_is_refused(sd):
    """A body beyond the daemon's JSON limit is refused without reading it all into memory."""
    snap = Snapshot(sd)
    n = 512 * 2**20
    out = sd.raw(_req(b"{" + b" " * 65536, "Content-Type: application/json\r\n"
                      f"Content-Length: {n}\r\n"), timeout=20)
    assert out and 400 <= _status(out) < 500, out[:300]
    ping(sd)
    snap.unchanged()


# ---------------------------------------------------------------- query parameters


@pytest.fixture(scope="module")
def running(sd):
    st, ans = create(sd, {"Image": "busybox", "Cmd": ["sleep", "1000"]}, "qrun")
    assert st == 201, ans
    assert sd.request("POST", "/containers/qrun/start")[0] == 204
    yield "qrun"
    sd.request("DELETE", "/containers/qrun?force=1")


@pytest.mark.parametrize("method,path", [
    ("POST", "/containers/qrun/stop?t=abc"),
    ("POST", "/containers/qrun/stop?t=1.5"),
    ("POST", "/containers/qrun/stop?t=-5"),
    ("POST", "/containers/qrun/stop?signal=NOPE"),
    ("POST", "/containers/qrun/restart?t=x"),
    ("POST", "/containers/qrun/kill?signal=NOPE"),
    ("POST", "/containers/qrun/kill?signal=0"),
    ("POST", "/containers/qrun/kill?signal=65"),
    ("POST", "/containers/qrun/kill?signal=-9"),
    ("GET", "/containers/qrun/logs?stdout=1&since=abc"),
    ("GET", "/containers/qrun/logs?stdout=1&until=yesterday"),
    ("GET", "/containers/qrun/logs"),
    ("POST", "/containers/qrun/wait?condition=bad"),
    ("GET", "/containers/json?limit=x"),
    ("GET", "/containers/json?filters=notjson"),
    ("GET", "/containers/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D"),
    ("GET", "/containers/json?filters=%7B%22status%22%3A%5B%22x%22%5D%7D"),
    ("POST", "/containers/prune?filters=%7B%22until%22%3A%5B%22abc%22%5D%7D"),
    ("POST", "/containers/prune?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D"),
    ("POST", "/containers/qrun/rename?name="),
    ("POST", "/containers/qrun/rename?name=a%2Fb"),
], ids=lambda v: v if v in ("GET", "POST") else v.split("/containers/")[1][:50])
def test_bad_query_parameters_are_400(sd, running, method, path):
    snap = Snapshot(sd)
    st, _h, body = sd.request(method, path)
    assert st == 400, (st, body)
    assert json.loads(body)["message"]
    ping(sd)
    snap.unchanged()
    ins = sd.json("GET", "/containers/qrun/json")[1]
    assert ins["State"]["Running"] and ins["Name"] == "/qrun"


def test_prune_honours_its_filters(sd):
    """A filter narrows what prune removes (ignoring it would remove containers kept on
    purpose); the ones it does not select stay."""
    ids = {}
    for name, labels in (("pk", {"keep": "1"}), ("pd", {"drop": "1"}), ("pn", {})):
        st, ans = create(sd, {"Image": "busybox", "Cmd": ["true"], "Labels": labels}, name)
        assert st == 201
        ids[name] = ans["Id"]
    try:
        flt = urllib.parse.quote(json.dumps({"label": ["drop"]}))
        st, res = sd.json("POST", f"/containers/prune?filters={flt}")
        assert st == 200 and res["ContainersDeleted"] == [ids["pd"]], res
        flt = urllib.parse.quote(json.dumps({"label!": ["keep=1"], "until": ["2000-01-01"]}))
        st, res = sd.json("POST", f"/containers/prune?filters={flt}")
        assert st == 200 and res["ContainersDeleted"] is None, res
        flt = urllib.parse.quote(json.dumps({"label!": ["keep=1"]}))
        st, res = sd.json("POST", f"/containers/prune?filters={flt}")
        assert res["ContainersDeleted"] == [ids["pn"]], res
        assert sd.json("GET", "/containers/pk/json")[0] == 200
    finally:
        for cid in ids.values():
            sd.request("DELETE", f"/containers/{cid}?force=1")


# ---------------------------------------------------------------- through the CLIs


@pytest.mark.parametrize("cli", ["docker", "sampan"])
@pytest.mark.parametrize("args,words", [
    (["--name", "../x"], "Invalid container name"),
    (["--name", "a/b"], "Invalid container name"),
    (["--network", "no-such-net"], "not found"),
    (["--log-driver", "nope"], "no log driver named"),
    (["--stop-signal", "SIGNOPE"], "Invalid signal"),
    (["--cap-add", "NOPE"], "NOPE"),
    (["--security-opt", "bogus=1"], "security-opt"),
])
def test_cli_bad_options_exit_125(sd, cli, args, words):
    import shutil

    if cli == "docker" and shutil.which("docker") is None:
        pytest.skip("no docker CLI")
    snap = Snapshot(sd)
    run = sd.docker if cli == "docker" else sd.sampan
    r = run("run", "--rm", *args, "busybox", "true")
    assert r.returncode == 125, (r.returncode, r.stderr)
    if "--network" in args and cli == "docker":
        # dockerd answers a missing network with a 404 too, which docker's CLI takes for a
        # missing image: it tries a pull (no network here) before it gives up
        words = "Unable to find image" if "Unable to find image" in r.stderr else words
    assert words in r.stderr, r.stderr
    ping(sd)
    snap.unchanged()


def test_deeply_nested_json_is_400(sd):
    """JSON nested beyond the decoder's recursion limit, in a body, a filter and a registry
    auth header: a 400, not a 500 from a RecursionError."""
    import base64

    snap = Snapshot(sd)
    deep = b"[" * 100000 + b"]" * 100000
    st, _h, body = sd.request("POST", "/containers/create", deep,
                              {"Content-Type": "application/json"})
    assert st == 400, body
    nested = b'{"Image":"busybox","HostConfig":' + b'{"a":' * 50000 + b"1" + b"}" * 50001
    st, _h, body = sd.request("POST", "/containers/create", nested,
                              {"Content-Type": "application/json"})
    assert st == 400, body
    flt = urllib.parse.quote("[" * 20000)
    st, _h, body = sd.request("GET", f"/containers/json?filters={flt}")
    assert st == 400, body
    auth = base64.urlsafe_b64encode(b"[" * 30000).decode()
    st, _h, body = sd.request("POST", "/images/create?fromImage=busybox&tag=latest",
                              headers={"X-Registry-Auth": auth})
    assert st == 400, body
    ping(sd)
    snap.unchanged()


def test_huge_request_line_is_4xx(sd):
    out = sd.raw(b"GET /" + b"a" * 200000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert 400 <= _status(out) < 500, out[:200]
    ping(sd)
