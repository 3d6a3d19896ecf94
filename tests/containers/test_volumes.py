"""Volumes and container mounts for real through sampand: the Engine API, the sampan CLI, the
docker CLI and docker-py — named and anonymous volumes, copy-up from the image, binds, tmpfs,
references (in use → 409), `rm -v`, prune, and bad input that must change nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.parse

import pytest

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def volume_names(sd) -> set[str]:
    st, body = sd.json("GET", "/volumes")
    assert st == 200
    return {v["Name"] for v in body["Volumes"] or []}


def create_container(sd, body: dict, name: str | None = None):
    path = "/containers/create" + (f"?name={name}" if name else "")
    return sd.json("POST", path, {"Image": "busybox", **body})


def run(sd, *args):
    return sd.sampan("run", "--rm", *args)


# ------------------------------------------------------------------ an image with a VOLUME


def _volume_image_archive(tag: str) -> bytes:
    """busybox plus a layer with /data (uid 1000, gid 2000, mode 0750) holding data/seed and
    data/sub/deep, and VOLUME /data in the config."""
    from sampan.demoimage import CREATED, MTIME, layer_tar

    base = layer_tar()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in (("data", 0o750), ("data/sub", 0o700)):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.DIRTYPE, mode, 1000, 2000, MTIME
            tar.addfile(ti)
        for name, text in (("data/seed", b"seed\n"), ("data/sub/deep", b"deep\n")):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.uid, ti.gid, ti.mtime = len(text), 0o640, 1000, 2000, MTIME
            tar.addfile(ti, io.BytesIO(text))
    top = buf.getvalue()
    layers = [base, top]
    diff_ids = ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    config = {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine,
                                                                     os.uname().machine),
        "os": "linux", "created": CREATED,
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"],
                   "Volumes": {"/data": {}}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED}, {"created": CREATED}],
    }
    cfg = json.dumps(config).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    manifest = [{"Config": cfg_name, "RepoTags": [tag],
                 "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids]}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        files = [(cfg_name, cfg)] + [(f"{d[7:]}/layer.tar", x) for d, x in zip(diff_ids, layers)]
        files.append(("manifest.json", json.dumps(manifest).encode()))
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def volimage(sd):
    st, _h, body = sd.request("POST", "/images/load?quiet=1", _volume_image_archive("volimg"),
                              {"Content-Type": "application/x-tar"})
    assert st == 200, body
    return "volimg"


# ------------------------------------------------------------------ the volume API


def test_create_inspect_list_remove(sd):
    st, v = sd.json("POST", "/volumes/create", {"Name": "apivol", "Labels": {"k": "v"}})
    assert st == 201
    assert v["Name"] == "apivol" and v["Driver"] == "local" and v["Scope"] == "local"
    assert v["Labels"] == {"k": "v"} and v["Options"] is None
    assert v["Mountpoint"] == str(sd.data / "volumes" / "apivol" / "_data")
    assert os.path.isdir(v["Mountpoint"])
    assert v["CreatedAt"].endswith("Z") or v["CreatedAt"][-6] in "+-"
    meta = json.loads((sd.data / "volumes" / "apivol" / "volume.json").read_text())
    assert meta["Name"] == "apivol"
    # the same name again: the existing volume, unchanged
    st, again = sd.json("POST", "/volumes/create", {"Name": "apivol"})
    assert st == 201 and again == v
    assert sd.json("GET", "/volumes/apivol") == (200, v)
    st, body = sd.json("GET", "/volumes?filters=" + q(json.dumps({"label": ["k=v"]})))
    assert [x["Name"] for x in body["Volumes"]] == ["apivol"]
    st, body = sd.json("GET", "/volumes?filters=" + q(json.dumps({"label": ["k=other"]})))
    assert body["Volumes"] == []
    st, body = sd.json("GET", "/volumes?filters=" + q(json.dumps({"name": ["apiv"]})))
    assert [x["Name"] for x in body["Volumes"]] == ["apivol"]
    st, body = sd.json("GET", "/volumes?filters=" + q(json.dumps({"driver": ["local"],
                                                                   "dangling": ["true"]})))
    assert "apivol" in {x["Name"] for x in body["Volumes"]}
    assert sd.json("GET", "/volumes?filters=" + q(json.dumps({"bogus": ["1"]})))[0] == 400
    # an anonymous create: 64 hex, labelled
    st, anon = sd.json("POST", "/volumes/create", {})
    assert st == 201 and len(anon["Name"]) == 64
    assert anon["Labels"] == {"com.docker.volume.anonymous": ""}
    assert sd.request("DELETE", f"/volumes/{anon['Name']}")[0] == 204
    assert sd.request("DELETE", "/volumes/apivol")[0] == 204
    assert not (sd.data / "volumes" / "apivol").exists()
    st, err = sd.json("GET", "/volumes/apivol")
    assert st == 404 and err["message"] == "get apivol: no such volume"
    assert sd.json("DELETE", "/volumes/apivol")[0] == 404
    assert sd.request("DELETE", "/volumes/apivol?force=1")[0] == 204


@pytest.mark.parametrize("name", ["a/b", "../x", "..", ".hidden", "x", "-x", "a b", "a:b",
                                  "/abs/path", "x" * 300])
def test_bad_volume_names_change_nothing(sd, name):
    before = sorted(os.listdir(sd.data / "volumes"))
    st, err = sd.json("POST", "/volumes/create", {"Name": name})
    assert st == 400, err
    assert "invalid characters for a local volume name" in err["message"]
    assert sorted(os.listdir(sd.data / "volumes")) == before
    assert not os.path.exists(os.path.join(sd.data, "x"))


def test_bad_driver_and_options(sd):
    before = volume_names(sd)
    st, err = sd.json("POST", "/volumes/create", {"Name": "dv", "Driver": "nfsplugin"})
    assert st == 404 and 'plugin "nfsplugin" not found' in err["message"]
    st, err = sd.json("POST", "/volumes/create", {"Name": "dv", "DriverOpts": {"bad": "1"}})
    assert st == 400 and 'invalid option key: "bad"' in err["message"]
    st, err = sd.json("POST", "/volumes/create", {"Name": "dv", "DriverOpts": {"o": "size=1m"}})
    assert st == 400 and 'missing required option: "type"' in err["message"]
    st, err = sd.json("POST", "/volumes/create", {"Name": "dv", "Labels": ["x"]})
    assert st == 400
    assert sd.json("POST", "/volumes/create", "not an object")[0] == 400
    assert volume_names(sd) == before


def test_tmpfs_volume(sd):
    """docker's local driver with type=tmpfs: mounted while a container using it runs (shared
    by those containers), unmounted — its content gone — when the last one stops."""
    st, v = sd.json("POST", "/volumes/create", {
        "Name": "tmpvol", "DriverOpts": {"type": "tmpfs", "device": "tmpfs", "o": "size=4m"}})
    assert st == 201 and v["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=4m"}
    data = str(sd.data / "volumes/tmpvol/_data")
    st, c = create_container(sd, {"Cmd": ["sh", "-c", "echo shared > /t/f; sleep 60"],
                                  "HostConfig": {"Binds": ["tmpvol:/t"]}}, "tmpholder")
    assert st == 201
    assert f" {data} " not in open("/proc/self/mounts").read()  # not before a start
    assert sd.request("POST", "/containers/tmpholder/start")[0] == 204
    assert f" {data} tmpfs " in open("/proc/self/mounts").read()
    r = run(sd, "-v", "tmpvol:/t", "busybox", "sh", "-c",
            "grep ' /t ' /proc/mounts; sleep 0.5; cat /t/f")
    assert r.returncode == 0 and " /t tmpfs " in r.stdout and "size=4096k" in r.stdout, r.stderr
    assert r.stdout.endswith("shared\n")
    assert f" {data} tmpfs " in open("/proc/self/mounts").read()  # the holder still runs
    assert sd.request("POST", "/containers/tmpholder/stop?t=0")[0] == 204
    assert f" {data} " not in open("/proc/self/mounts").read()
    assert sd.request("DELETE", "/containers/tmpholder")[0] == 204
    assert run(sd, "-v", "tmpvol:/t", "busybox", "ls", "-A", "/t").stdout == ""
    assert sd.request("DELETE", "/volumes/tmpvol")[0] == 204
    assert str(sd.data / "volumes") not in open("/proc/self/mounts").read()


# ------------------------------------------------------------------ containers and volumes


def test_named_volume_persists_and_is_referenced(sd):
    r = run(sd, "-v", "keep:/data", "busybox", "sh", "-c", "echo persisted > /data/f")
    assert r.returncode == 0, r.stderr
    assert "keep" in volume_names(sd)  # created on first use
    r = run(sd, "-v", "keep:/data:ro", "busybox", "sh", "-c", "cat /data/f; touch /data/g")
    assert r.stdout == "persisted\n" and "Read-only file system" in r.stderr
    st, c = create_container(sd, {"Cmd": ["true"], "HostConfig": {"Binds": ["keep:/data"]}})
    assert st == 201
    st, err = sd.json("DELETE", "/volumes/keep")
    assert st == 409
    assert err["message"] == f"remove keep: volume is in use - [{c['Id']}]"
    assert sd.json("DELETE", "/volumes/keep?force=1")[0] == 409  # force is no way round
    st, body = sd.json("GET", "/volumes?filters=" + q(json.dumps({"dangling": ["true"]})))
    assert "keep" not in {v["Name"] for v in body["Volumes"]}
    st, info = sd.json("GET", f"/containers/{c['Id']}/json")
    assert info["Mounts"] == [{
        "Type": "volume", "Name": "keep", "Source": str(sd.data / "volumes/keep/_data"),
        "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True,
        "Propagation": ""}]
    # `rm -v` keeps named volumes
    assert sd.request("DELETE", f"/containers/{c['Id']}?v=1")[0] == 204
    assert "keep" in volume_names(sd)
    assert sd.request("DELETE", "/volumes/keep")[0] == 204


def test_references_survive_a_daemon_restart(sd):
    st, c = create_container(sd, {"Cmd": ["true"], "HostConfig": {"Binds": ["rvol:/d"]}})
    assert st == 201
    sd.stop()
    sd.start()
    assert sd.json("DELETE", "/volumes/rvol")[0] == 409
    assert sd.request("DELETE", f"/containers/{c['Id']}")[0] == 204
    assert sd.request("DELETE", "/volumes/rvol")[0] == 204


def test_anonymous_volumes_and_rm_v(sd):
    before = volume_names(sd)
    r = sd.sampan("create", "--name", "anon1", "-v", "/scratch", "busybox", "true")
    assert r.returncode == 0, r.stderr
    st, info = sd.json("GET", "/containers/anon1/json")
    (m,) = info["Mounts"]
    assert m["Type"] == "volume" and m["Destination"] == "/scratch" and len(m["Name"]) == 64
    assert m["Mode"] == "" and m["RW"] is True
    assert info["Config"]["Volumes"] == {"/scratch": {}}
    st, v = sd.json("GET", f"/volumes/{m['Name']}")
    assert v["Labels"] == {"com.docker.volume.anonymous": ""}
    # rm without -v keeps it (dangling now); rm -v of another container removes its own
    assert sd.sampan("rm", "anon1").returncode == 0
    assert m["Name"] in volume_names(sd)
    assert sd.request("DELETE", f"/volumes/{m['Name']}")[0] == 204
    assert sd.sampan("create", "--name", "anon2", "-v", "/scratch", "busybox", "true"
                     ).returncode == 0
    name2 = sd.json("GET", "/containers/anon2/json")[1]["Mounts"][0]["Name"]
    r = sd.sampan("rm", "-v", "anon2")
    assert r.returncode == 0, r.stderr
    assert name2 not in volume_names(sd)
    assert not (sd.data / "volumes" / name2).exists()
    # --rm takes the anonymous volumes too
    assert run(sd, "-v", "/x", "busybox", "true").returncode == 0
    assert volume_names(sd) == before


def test_copy_up_from_the_image(sd, volimage):
    """The image's /data goes into a new anonymous volume and into a new named one, with its
    ownership and modes; a volume with content, nocopy and binds get no copy."""
    script = ("stat -c '%u:%g %a' /data /data/seed /data/sub /data/sub/deep; cat /data/seed "
              "/data/sub/deep")
    expect = "1000:2000 750\n1000:2000 640\n1000:2000 700\n1000:2000 640\nseed\ndeep\n"
    r = run(sd, volimage, "sh", "-c", script)  # the image's anonymous volume
    assert (r.returncode, r.stdout) == (0, expect), r.stderr
    st, c = create_container(sd, {"Image": volimage, "Volumes": {"/more": {}}})
    info = sd.json("GET", f"/containers/{c['Id']}/json")[1]
    assert info["Config"]["Volumes"] == {"/data": {}, "/more": {}}
    assert sorted(m["Destination"] for m in info["Mounts"]) == ["/data", "/more"]
    assert sd.request("DELETE", f"/containers/{c['Id']}?v=1")[0] == 204
    r = run(sd, "-v", "seeded:/data", volimage, "sh", "-c", script)
    assert r.stdout == expect, r.stderr
    src = sd.data / "volumes/seeded/_data"
    st = os.stat(src / "sub/deep")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 2000, 0o640)
    # not empty any more: no second copy over what a container wrote
    assert run(sd, "-v", "seeded:/data", volimage, "sh", "-c",
               "echo changed > /data/seed; rm /data/sub/deep").returncode == 0
    r = run(sd, "-v", "seeded:/data", volimage, "sh", "-c", "cat /data/seed; ls /data/sub")
    assert r.stdout == "changed\n"
    # nocopy: the new volume stays empty
    r = run(sd, "-v", "nocopied:/data:nocopy", volimage, "ls", "-A", "/data")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    r = run(sd, "--mount", "type=volume,source=nocopied2,target=/data,volume-nocopy",
            volimage, "ls", "-A", "/data")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    # a bind shows the host directory, never the image's content
    host = sd.root / "bindsrc"
    host.mkdir()
    r = run(sd, "-v", f"{host}:/data", volimage, "ls", "-A", "/data")
    assert (r.returncode, r.stdout) == (0, "")
    assert list(host.iterdir()) == []
    for v in ("seeded", "nocopied", "nocopied2"):
        assert sd.request("DELETE", f"/volumes/{v}")[0] == 204


def test_binds_tmpfs_and_inspect(sd, tmp_path):
    src = tmp_path / "hostdir"
    src.mkdir()
    (src / "in").write_text("from host\n")
    missing = tmp_path / "created" / "by-v"
    st, c = create_container(sd, {
        "Cmd": ["sh", "-c", "cat /h/in; echo out > /h/out; touch /ro/x; "
                "grep -E ' /(t1|t2) ' /proc/mounts; echo made > /made/f"],
        "HostConfig": {
            "Binds": [f"{src}:/h", f"{src}:/ro:ro", f"{missing}:/made"],
            "Mounts": [{"Type": "tmpfs", "Target": "/t1",
                        "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o700}}],
            "Tmpfs": {"/t2": "size=2m"}}})
    assert st == 201, c
    assert missing.is_dir()  # -v creates a missing bind source, like docker
    cid = c["Id"]
    assert sd.request("POST", f"/containers/{cid}/start")[0] == 204
    assert sd.json("POST", f"/containers/{cid}/wait")[1]["StatusCode"] == 0
    st, _h, logs = sd.request("GET", f"/containers/{cid}/logs?stdout=1&stderr=1")
    assert b"from host" in logs and b"Read-only file system" in logs
    assert b"/t1 tmpfs rw,nosuid,nodev,noexec,relatime,size=1024k,mode=700" in logs
    assert b"/t2 tmpfs rw,nosuid,nodev,noexec,relatime,size=2048k" in logs
    assert (src / "out").read_text() == "out\n" and (missing / "f").read_text() == "made\n"
    mounts = sd.json("GET", f"/containers/{cid}/json")[1]["Mounts"]
    assert {"Type": "bind", "Source": str(src), "Destination": "/ro", "Mode": "ro",
            "RW": False, "Propagation": "rprivate"} in mounts
    assert {"Type": "bind", "Source": str(src), "Destination": "/h", "Mode": "",
            "RW": True, "Propagation": "rprivate"} in mounts
    assert {"Type": "tmpfs", "Source": "", "Destination": "/t1", "Mode": "", "RW": True,
            "Propagation": ""} in mounts
    assert not any(m["Destination"] == "/t2" for m in mounts)  # --tmpfs: HostConfig only
    assert sd.request("DELETE", f"/containers/{cid}")[0] == 204


@pytest.mark.parametrize("host,msg", [
    ({"Binds": ["v1:relative"]}, "mount path must be absolute"),
    ({"Binds": ["v1:/"]}, "destination can't be '/'"),
    ({"Binds": ["v1:/a", "v2:/a"]}, "Duplicate mount point: /a"),
    ({"Binds": ["v1:/a", "/tmp:/a/"]}, "Duplicate mount point: /a"),
    ({"Binds": ["bad/name:/a"]}, "invalid characters for a local volume name"),
    ({"Binds": ["v1:/a:bogus"]}, "invalid mode: bogus"),
    ({"Binds": ["v1:/a:ro,rw"]}, "invalid mode"),
    ({"Binds": ["/tmp:/a:nocopy"]}, "invalid mode"),
    ({"Binds": ["a:b:c:d"]}, "invalid volume specification"),
    ({"Mounts": [{"Type": "bind", "Source": "/no/such/dir", "Target": "/a"}]},
     "bind source path does not exist: /no/such/dir"),
    ({"Mounts": [{"Type": "bind", "Target": "/a"}]}, "field Source must not be empty"),
    ({"Mounts": [{"Type": "volume", "Source": "v1"}]}, "field Target must not be empty"),
    ({"Mounts": [{"Type": "tmpfs", "Source": "x", "Target": "/a"}]},
     "field Source must not be specified"),
    ({"Mounts": [{"Type": "nfs", "Target": "/a"}]}, "mount type unknown"),
    ({"Mounts": [{"Type": "volume", "Target": "/a", "BindOptions": {}}, ]}, None),
    ({"Mounts": [{"Type": "volume", "Target": "/a",
                  "BindOptions": {"Propagation": "shared"}}]},
     "field BindOptions must not be specified"),
    ({"Mounts": [{"Type": "volume", "Source": "v1", "Target": "/a",
                  "VolumeOptions": {"DriverConfig": {"Name": "flocker"}}}]},
     'plugin "flocker" not found'),
    ({"Tmpfs": {"/t": "size=1m,evil=$(x)"}}, "invalid tmpfs option"),
    ({"Tmpfs": {"rel": ""}}, "mount path must be absolute"),
    ({"Binds": "v1:/a"}, "Binds"),
])
def test_bad_mounts_change_nothing(sd, host, msg):
    vols = volume_names(sd)
    ctrs = sd.json("GET", "/containers/json?all=1")[1]
    st, err = create_container(sd, {"Cmd": ["true"], "HostConfig": host})
    if msg is None:  # an empty BindOptions object is accepted by docker too
        assert st == 201, err
        assert sd.request("DELETE", f"/containers/{err['Id']}?v=1")[0] == 204
        return
    assert st in (400, 404), err
    assert msg in err["message"]
    assert volume_names(sd) == vols
    assert sd.json("GET", "/containers/json?all=1")[1] == ctrs
    assert not os.path.exists("/no/such/dir")


def test_prune(sd):
    for name in ("prn-named", "prn-used"):
        assert sd.json("POST", "/volumes/create", {"Name": name, "Labels": {"p": name}})[0] \
            == 201
    st, anon = sd.json("POST", "/volumes/create", {"Labels": {"p": "anon"}})
    (sd.data / "volumes" / anon["Name"] / "_data" / "blob").write_bytes(b"x" * 5000)
    st, c = create_container(sd, {"Cmd": ["true"], "HostConfig": {"Binds": ["prn-used:/u"]}})
    # docker 23+: only anonymous volumes unless all=true
    st, res = sd.json("POST", "/volumes/prune")
    assert st == 200 and anon["Name"] in res["VolumesDeleted"]
    assert res["SpaceReclaimed"] >= 5000
    left = volume_names(sd)
    assert {"prn-named", "prn-used"} <= left and anon["Name"] not in left
    st, res = sd.json("POST", "/volumes/prune?filters=" + q(json.dumps(
        {"all": ["true"], "label": ["p=nomatch"]})))
    assert res["VolumesDeleted"] is None
    st, res = sd.json("POST", "/volumes/prune?filters=" + q(json.dumps({"all": ["true"]})))
    assert "prn-named" in res["VolumesDeleted"] and "prn-used" not in res["VolumesDeleted"]
    assert sd.json("POST", "/volumes/prune?filters=" + q(json.dumps({"name": ["x"]})))[0] == 400
    assert sd.request("DELETE", f"/containers/{c['Id']}")[0] == 204
    assert sd.request("DELETE", "/volumes/prn-used")[0] == 204


def test_system_df_volumes(sd):
    assert sd.json("POST", "/volumes/create", {"Name": "dfvol"})[0] == 201
    (sd.data / "volumes/dfvol/_data/f").write_bytes(b"y" * 3000)
    st, df = sd.json("GET", "/system/df")
    (v,) = [x for x in df["Volumes"] if x["Name"] == "dfvol"]
    assert v["UsageData"] == {"Size": 3000, "RefCount": 0}
    assert sd.request("DELETE", "/volumes/dfvol")[0] == 204


def test_crash_leftovers_are_cleared(sd):
    """A create or remove that died half-way (a dot-directory) is gone after a restart; an
    orphaned empty volume directory without metadata too."""
    root = sd.data / "volumes"
    (root / ".new-half-0000" / "_data").mkdir(parents=True)
    (root / "nometa" / "_data").mkdir(parents=True)
    sd.stop()
    sd.start()
    assert "nometa" not in volume_names(sd)  # the store opens at its first use
    assert not (root / ".new-half-0000").exists() and not (root / "nometa").exists()


# ------------------------------------------------------------------ the CLIs


def test_sampan_volume_cli(sd):
    r = sd.sampan("volume", "create", "--label", "team=a", "clivol")
    assert (r.returncode, r.stdout) == (0, "clivol\n"), r.stderr
    r = sd.sampan("volume", "ls")
    assert r.stdout.splitlines()[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert "local     clivol" in r.stdout
    assert sd.sampan("volume", "ls", "-q", "--filter", "label=team=a").stdout == "clivol\n"
    r = sd.sampan("volume", "ls", "--format", "{{.Name}}:{{.Driver}}:{{.Labels}}", "-f",
                  "name=clivol")
    assert r.stdout == "clivol:local:team=a\n"
    r = sd.sampan("volume", "inspect", "-f", "{{.Mountpoint}}", "clivol")
    assert r.stdout.strip() == str(sd.data / "volumes/clivol/_data")
    r = sd.sampan("volume", "inspect", "clivol", "nope-vol")
    assert r.returncode == 1 and json.loads(r.stdout)[0]["Name"] == "clivol"
    assert "no such volume" in r.stderr
    r = sd.sampan("volume", "create", "bad/name")
    assert r.returncode == 1 and "invalid characters" in r.stderr
    r = sd.sampan("volume", "prune", "-f", "-a", "--filter", "label=team=a")
    assert r.returncode == 0 and "Deleted Volumes:\nclivol\n" in r.stdout, r.stderr
    assert "Total reclaimed space:" in r.stdout
    assert sd.sampan("volume", "create", "clivol2").returncode == 0
    r = sd.sampan("volume", "prune", input="n\n")
    assert "WARNING! This will remove anonymous local volumes" in r.stdout
    assert "clivol2" in volume_names(sd)
    r = sd.sampan("volume", "rm", "clivol2", "nope-vol")
    assert r.returncode == 1 and r.stdout == "clivol2\n"
    assert "get nope-vol: no such volume" in r.stderr


@docker_cli
def test_docker_cli_volumes(sd):
    r = sd.docker("volume", "create", "dkvol")
    assert (r.returncode, r.stdout) == (0, "dkvol\n"), r.stderr
    r = sd.docker("volume", "ls")
    assert "dkvol" in r.stdout, r.stderr
    r = sd.docker("volume", "inspect", "--format", "{{.Driver}} {{.Mountpoint}}", "dkvol")
    assert r.stdout.strip() == f"local {sd.data / 'volumes/dkvol/_data'}"
    r = sd.docker("run", "--rm", "-v", "dkvol:/data", "busybox", "sh", "-c",
                  "echo across > /data/f")
    assert r.returncode == 0, r.stderr
    r = sd.docker("run", "--rm", "--mount", "source=dkvol,target=/other", "busybox",
                  "cat", "/other/f")
    assert (r.returncode, r.stdout) == (0, "across\n"), r.stderr
    r = sd.docker("run", "-d", "--name", "dkuser", "-v", "dkvol:/data", "busybox", "sleep", "30")
    assert r.returncode == 0, r.stderr
    r = sd.docker("volume", "rm", "dkvol")
    assert r.returncode == 1 and "volume is in use" in r.stderr
    assert sd.docker("rm", "-f", "dkuser").returncode == 0
    r = sd.docker("volume", "rm", "dkvol")
    assert (r.returncode, r.stdout) == (0, "dkvol\n"), r.stderr
    r = sd.docker("run", "--rm", "-v", "/anon", "busybox", "true")
    assert r.returncode == 0
    r = sd.docker("volume", "prune", "-f")
    assert r.returncode == 0, r.stderr


def test_docker_py_volumes(sd, volimage):
    docker = pytest.importorskip("docker")
    cl = docker.DockerClient(base_url=sd.host)
    try:
        v = cl.volumes.create("pyvol", labels={"from": "py"})
        assert v.name == "pyvol" and v.attrs["Labels"] == {"from": "py"}
        assert "pyvol" in [x.name for x in cl.volumes.list()]
        out = cl.containers.run(volimage, ["sh", "-c", "cat /data/seed; echo w > /data/w"],
                                volumes={"pyvol": {"bind": "/data", "mode": "rw"}},
                                remove=True)
        assert out == b"seed\n"
        out = cl.containers.run("busybox", ["cat", "/v/w"],
                                volumes=["pyvol:/v:ro"], remove=True)
        assert out == b"w\n"
        cl.volumes.get("pyvol").remove()
        with pytest.raises(docker.errors.NotFound):
            cl.volumes.get("pyvol")
    finally:
        cl.close()


def test_volume_events(sd):
    import time

    t0 = time.time() - 1
    assert sd.json("POST", "/volumes/create", {"Name": "evvol"})[0] == 201
    r = run(sd, "--name", "evc", "-v", "evvol:/ev:ro", "busybox", "true")
    assert r.returncode == 0, r.stderr
    assert sd.request("DELETE", "/volumes/evvol")[0] == 204
    flt = q(json.dumps({"type": ["volume"], "volume": ["evvol"]}))
    st, _h, body = sd.request("GET", f"/events?since={t0}&until={time.time() + 1}&filters={flt}")
    evs = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert [(e["Type"], e["Action"], e["Actor"]["ID"]) for e in evs] == [
        ("volume", "create", "evvol"), ("volume", "mount", "evvol"),
        ("volume", "unmount", "evvol"), ("volume", "destroy", "evvol")]
    assert evs[0]["Actor"]["Attributes"] == {"driver": "local"}
    cid = evs[1]["Actor"]["Attributes"]["container"]
    assert len(cid) == 64
    assert evs[1]["Actor"]["Attributes"] == {"driver": "local", "container": cid,
                                             "destination": "/ev", "propagation": "",
                                             "read/write": "false"}
    assert evs[2]["Actor"]["Attributes"] == {"driver": "local", "container": cid}


def test_mount_flag_options(sd, tmp_path):
    """--mount as the sampan CLI sends it: readonly volumes, bind propagation, volume labels
    and driver options for a volume made on first use."""
    (tmp_path / "f").write_text("f\n")
    r = sd.sampan("create", "--name", "mflags",
                  "--mount", f"type=bind,src={tmp_path},dst=/b,bind-propagation=rslave",
                  "--mount", "type=volume,source=mvol,target=/v,readonly,volume-label=x=y",
                  "--mount", "type=volume,source=mtmp,target=/t,volume-opt=type=tmpfs,"
                             "volume-opt=device=tmpfs,volume-opt=o=size=1m",
                  "busybox", "sh", "-c", "cat /b/f; touch /v/no; grep ' /t ' /proc/mounts")
    assert r.returncode == 0, r.stderr
    info = sd.json("GET", "/containers/mflags/json")[1]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/b"]["Propagation"] == "rslave" and mounts["/b"]["RW"] is True
    assert mounts["/v"]["RW"] is False and mounts["/v"]["Name"] == "mvol"
    assert sd.json("GET", "/volumes/mvol")[1]["Labels"] == {"x": "y"}
    assert sd.json("GET", "/volumes/mtmp")[1]["Options"] == {
        "type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    r = sd.sampan("start", "-a", "mflags")
    assert "f\n" in r.stdout and "Read-only file system" in r.stderr
    assert "/t tmpfs rw,relatime,size=1024k" in r.stdout  # the volume's own tmpfs
    assert sd.sampan("rm", "-v", "mflags").returncode == 0
    assert {"mvol", "mtmp"} <= volume_names(sd)  # named: kept by rm -v
    for v in ("mvol", "mtmp"):
        assert sd.request("DELETE", f"/volumes/{v}")[0] == 204
    r = sd.sampan("run", "--rm", "--mount", "type=bind,target=/x", "busybox", "true")
    assert r.returncode == 125 and "field Source must not be empty" in r.stderr
    r = sd.sampan("run", "--rm", "--mount", "type=volume,src=v,dst=/x,bogus=1", "busybox",
                  "true")
    assert r.returncode != 0 and "unexpected key 'bogus'" in r.stderr


def test_volumes_from(sd, tmp_path):
    r = sd.sampan("create", "--name", "vfsrc", "-v", "vfvol:/data", "-v", f"{tmp_path}:/b:ro",
                  "-v", "/anon", "busybox", "true")
    assert r.returncode == 0, r.stderr
    r = run(sd, "--volumes-from", "vfsrc", "busybox", "sh", "-c",
            "echo hi > /data/f && ls -d /anon && touch /b/x")
    assert r.returncode == 1 and "Read-only file system" in r.stderr  # the bind stays ro
    assert (sd.data / "volumes/vfvol/_data/f").read_text() == "hi\n"
    r = run(sd, "--volumes-from", "vfsrc:ro", "busybox", "sh", "-c", "touch /data/g")
    assert r.returncode == 1 and "Read-only file system" in r.stderr
    st, c = create_container(sd, {"Cmd": ["true"], "HostConfig": {
        "VolumesFrom": ["vfsrc"], "Binds": ["other:/data"]}})
    info = sd.json("GET", f"/containers/{c['Id']}/json")[1]
    by_dst = {m["Destination"]: m for m in info["Mounts"]}
    assert by_dst["/data"]["Name"] == "other"  # an explicit bind wins
    assert by_dst["/b"]["Source"] == str(tmp_path) and by_dst["/b"]["RW"] is False
    assert sd.request("DELETE", f"/containers/{c['Id']}")[0] == 204
    st, err = create_container(sd, {"Cmd": ["true"], "HostConfig": {"VolumesFrom": ["nope"]}})
    assert st == 404 and "No such container: nope" in err["message"]
    st, err = create_container(sd, {"Cmd": ["true"], "HostConfig": {"VolumesFrom": ["vfsrc:x"]}})
    assert st == 400
    st, err = create_container(sd, {"Cmd": ["true"], "HostConfig": {"VolumeDriver": "convoy",
                                                                     "Binds": ["x1:/x"]}})
    assert st == 404 and 'plugin "convoy" not found' in err["message"]
    assert sd.sampan("rm", "-v", "vfsrc").returncode == 0
    for v in ("vfvol", "other"):
        assert sd.request("DELETE", f"/volumes/{v}")[0] == 204


def test_ps_volume_filter(sd):
    st, c = create_container(sd, {"Cmd": ["true"], "HostConfig": {"Binds": ["psvol:/pv"]}})
    assert st == 201
    for value in ("psvol", "/pv"):
        r = sd.sampan("ps", "-a", "-q", "--no-trunc", "--filter", f"volume={value}")
        assert r.stdout.split() == [c["Id"]], r.stderr
    assert sd.sampan("ps", "-a", "-q", "--filter", "volume=other").stdout == ""
    r = sd.sampan("ps", "-a", "--filter", "volume=psvol", "--format", "{{.Mounts}}")
    assert r.stdout == "psvol\n", r.stderr
    assert sd.request("DELETE", f"/containers/{c['Id']}")[0] == 204
    assert sd.request("DELETE", "/volumes/psvol")[0] == 204


def test_bind_nonrecursive(sd, tmp_path):
    """bind-nonrecursive: a mount below the bind source is not carried into the container."""
    import subprocess

    sub = tmp_path / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(sub)], check=True)
    try:
        (sub / "onsub").write_text("x")
        r = run(sd, "--mount", f"type=bind,src={tmp_path},dst=/r", "busybox", "ls", "/r/sub")
        assert r.stdout == "onsub\n", r.stderr
        r = run(sd, "--mount", f"type=bind,src={tmp_path},dst=/r,bind-nonrecursive", "busybox",
                "ls", "/r/sub")
        assert (r.returncode, r.stdout) == (0, ""), r.stderr
    finally:
        subprocess.run(["umount", str(sub)], check=False)


def test_bind_type_volume(sd, tmp_path):
    """The local driver's type=none,o=bind: the volume is the host directory."""
    (tmp_path / "host.txt").write_text("h\n")
    st, v = sd.json("POST", "/volumes/create", {"Name": "bindvol", "DriverOpts": {
        "type": "none", "o": "bind", "device": str(tmp_path)}})
    assert st == 201
    r = run(sd, "-v", "bindvol:/b", "busybox", "sh", "-c", "cat /b/host.txt; echo c > /b/c")
    assert (r.returncode, r.stdout) == (0, "h\n"), r.stderr
    assert (tmp_path / "c").read_text() == "c\n"
    assert str(sd.data / "volumes/bindvol") not in open("/proc/self/mounts").read()
    assert sd.request("DELETE", "/volumes/bindvol")[0] == 204
    assert sorted(os.listdir(tmp_path)) == ["c", "host.txt"]  # rm never touches the source
