"""Container file systems for real: archive GET/HEAD/PUT (what `cp` calls), export and changes,
through the Engine API, the sampan CLI, the docker CLI and docker-py — on running and stopped
containers, across volumes and binds, and against hostile paths, symlinks and tar members that
must never reach the host."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tarfile
import urllib.parse

import pytest

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")

HOST_MARK = "sampan-cp-test-must-not-exist"


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def make_tar(members: list[tuple]) -> bytes:
    """(name, kind, data/linkname) → a tar; kind: f(ile), d(ir), l(symlink), h(ardlink)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            if kind == "f":
                ti.size, ti.mode = len(extra), 0o644
                tar.addfile(ti, io.BytesIO(extra))
                continue
            if kind == "d":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, extra
            elif kind == "h":
                ti.type, ti.linkname = tarfile.LNKTYPE, extra
            tar.addfile(ti)
    return buf.getvalue()


def untar(data: bytes) -> dict[str, tuple[str, bytes | str]]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            if m.isreg():
                out[m.name] = ("f", tar.extractfile(m).read())
            elif m.isdir():
                out[m.name] = ("d", b"")
            elif m.issym():
                out[m.name] = ("l", m.linkname)
            elif m.islnk():
                out[m.name] = ("h", m.linkname)
    return out


def path_stat(headers) -> dict:
    return json.loads(base64.b64decode(headers["X-Docker-Container-Path-Stat"]))


@pytest.fixture(scope="module")
def box(sd, tmp_path_factory):
    """A running container with a named volume at /vol, a bind at /bind, and hostile symlinks
    planted inside: /rootlink → /, /pw → /etc/passwd, /up → ../../../../../etc, /dir/file."""
    bind = tmp_path_factory.mktemp("bind")
    (bind / "b.txt").write_text("bound\n")
    st, c = sd.json("POST", "/containers/create?name=cpbox", {
        "Image": "busybox", "Cmd": ["sleep", "1000"],
        "HostConfig": {"Binds": ["cpvol:/vol", f"{bind}:/bind"]}})
    assert st == 201, c
    assert sd.request("POST", "/containers/cpbox/start")[0] == 204
    r = sd.sampan("exec", "cpbox", "sh", "-c",
                  "mkdir -p /dir/sub && echo inside > /dir/file && echo deep > /dir/sub/d && "
                  "ln -s / /rootlink && ln -s /etc/passwd /pw && "
                  "ln -s ../../../../../etc /up && echo container-passwd-marker >> /etc/passwd "
                  "&& echo v > /vol/v.txt")
    assert r.returncode == 0, r.stderr
    yield {"id": c["Id"], "bind": bind}
    sd.request("DELETE", "/containers/cpbox?force=1&v=1")
    sd.request("DELETE", "/volumes/cpvol")


def get_archive(sd, ctr: str, path: str):
    return sd.request("GET", f"/containers/{ctr}/archive?path={q(path)}")


def put_archive(sd, ctr: str, path: str, data: bytes, extra: str = ""):
    return sd.request("PUT", f"/containers/{ctr}/archive?path={q(path)}{extra}", data,
                      {"Content-Type": "application/x-tar"})


def in_container(sd, *cmd: str) -> str:
    r = sd.sampan("exec", "cpbox", *cmd)
    return r.stdout


# ------------------------------------------------------------------ the archive API


def test_head_and_get(sd, box):
    st, h, body = sd.request("HEAD", "/containers/cpbox/archive?path=/dir")
    assert st == 200 and body == b""
    s = path_stat(h)
    assert s["name"] == "dir" and s["mode"] & (1 << 31) and s["linkTarget"] == ""
    assert s["mode"] & 0o777 == 0o755
    st, h, body = get_archive(sd, "cpbox", "/dir")
    assert st == 200 and h["Content-Type"] == "application/x-tar"
    assert path_stat(h)["name"] == "dir"
    files = untar(body)
    assert files["dir/file"] == ("f", b"inside\n") and files["dir/sub/d"] == ("f", b"deep\n")
    assert files["dir"][0] == "d"
    # a symlink is archived as itself; its stat names its target inside the container
    st, h, body = get_archive(sd, "cpbox", "/pw")
    assert path_stat(h)["linkTarget"] == "/etc/passwd"
    assert path_stat(h)["mode"] & (1 << 27)
    assert untar(body) == {"pw": ("l", "/etc/passwd")}
    # trailing "/.": the contents, named from "."
    st, h, body = get_archive(sd, "cpbox", "/dir/.")
    assert set(untar(body)) >= {".", "./file", "./sub/d"}
    # missing
    st, _h, body = get_archive(sd, "cpbox", "/no/such")
    assert st == 404
    assert json.loads(body)["message"] == "Could not find the file /no/such in container cpbox"
    assert sd.request("HEAD", "/containers/cpbox/archive?path=/nope")[0] == 404
    assert sd.request("GET", "/containers/nosuchctr/archive?path=/")[0] == 404
    assert sd.request("GET", "/containers/cpbox/archive")[0] == 400


def test_mounts_are_seen_running_and_stopped(sd, box):
    for _ in ("running", "stopped"):
        st, _h, body = get_archive(sd, "cpbox", "/vol/v.txt")
        assert untar(body) == {"v.txt": ("f", b"v\n")}
        st, _h, body = get_archive(sd, "cpbox", "/bind/b.txt")
        assert untar(body) == {"b.txt": ("f", b"bound\n")}
        st, _h, body = get_archive(sd, "cpbox", "/etc/hostname")
        assert untar(body)["hostname"][1].strip() == box["id"][:12].encode()
        assert put_archive(sd, "cpbox", "/vol", make_tar([(f"in-{_}", "f", b"x")]))[0] == 200
        assert (sd.data / "volumes/cpvol/_data" / f"in-{_}").read_bytes() == b"x"
        assert put_archive(sd, "cpbox", "/bind", make_tar([(f"b-{_}", "f", b"y")]))[0] == 200
        assert (box["bind"] / f"b-{_}").read_bytes() == b"y"
        sd.request("POST", "/containers/cpbox/stop?t=0")
    st, info = sd.json("GET", "/containers/cpbox/json")
    assert not info["State"]["Running"]
    # what was put while stopped is in the rootfs the container sees when started again
    assert put_archive(sd, "cpbox", "/dir", make_tar([("stopped.txt", "f", b"s\n")]))[0] == 200
    assert sd.request("POST", "/containers/cpbox/start")[0] == 204
    assert in_container(sd, "cat", "/dir/stopped.txt") == "s\n"


def test_put_rules(sd, box):
    data = make_tar([("newdir", "d", None), ("newdir/a", "f", b"a\n"),
                     ("newdir/link", "l", "a"), ("newdir/hard", "h", "newdir/a")])
    st, _h, body = put_archive(sd, "cpbox", "/tmp", data)
    assert st == 200, body
    assert in_container(sd, "sh", "-c", "cat /tmp/newdir/a /tmp/newdir/link /tmp/newdir/hard;"
                        " stat -c %h /tmp/newdir/a") == "a\na\na\n2\n"
    # not a directory / missing
    st, _h, body = put_archive(sd, "cpbox", "/dir/file", data)
    assert st == 400 and b"extraction point is not a directory" in body
    st, _h, body = put_archive(sd, "cpbox", "/nowhere", data)
    assert st == 404
    st, _h, body = put_archive(sd, "cpbox", "/no/where", data)
    assert st == 404
    for through_a_file in ("/dir/file/x", "/etc/hostname/x"):
        assert get_archive(sd, "cpbox", through_a_file)[0] == 400
        assert put_archive(sd, "cpbox", through_a_file, data)[0] == 400
    assert json.loads(body)["message"] == "Could not find the file /no/where in container cpbox"
    # noOverwriteDirNonDir
    st, _h, body = put_archive(sd, "cpbox", "/", make_tar([("dir", "f", b"x")]),
                               "&noOverwriteDirNonDir=1")
    assert st == 400 and b"cannot overwrite directory" in body
    assert in_container(sd, "cat", "/dir/file") == "inside\n"
    # copyUIDGID keeps the tar's owner without a Config.User
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo("owned")
        ti.uid, ti.gid, ti.size = 4321, 8765, 1
        tar.addfile(ti, io.BytesIO(b"o"))
    assert put_archive(sd, "cpbox", "/tmp", buf.getvalue(), "&copyUIDGID=1")[0] == 200
    assert in_container(sd, "stat", "-c", "%u:%g", "/tmp/owned") == "4321:8765\n"


@pytest.mark.parametrize("members,why", [
    ([("/etc/" + HOST_MARK, "f", b"x")], "absolute path refused"),
    ([("../../../../../../etc/" + HOST_MARK, "f", b"x")], "'..' in the path refused"),
    ([("ok", "f", b"x"), ("a/../../" + HOST_MARK, "f", b"x")], "'..' in the path refused"),
    ([(HOST_MARK, "h", "../../../../etc/passwd")], "'..' in the path refused"),
    ([(HOST_MARK, "h", "/etc/passwd")], "absolute path refused"),
])
def test_hostile_tar_members(sd, box, members, why):
    st, _h, body = put_archive(sd, "cpbox", "/tmp", make_tar(members))
    assert st == 400, body
    assert why in json.loads(body)["message"]
    # nothing written anywhere: not in the container (not even the good first member)…
    assert in_container(sd, "sh", "-c", f"ls /tmp/ok /etc/{HOST_MARK} /tmp/{HOST_MARK} "
                        "2>/dev/null") == ""
    # …and never on the host
    assert not os.path.exists("/etc/" + HOST_MARK)


def test_symlinks_resolve_inside_the_container(sd, box):
    host_passwd = open("/etc/passwd").read()
    # the container's /pw → /etc/passwd is the container's file, read through any path form
    for path in ("/rootlink/etc/passwd", "/up/passwd", "/../../../../etc/passwd",
                 "/dir/../../etc/passwd", "/rootlink/rootlink/../etc/passwd"):
        st, h, body = get_archive(sd, "cpbox", path)
        assert st == 200, (path, body)
        (content,) = [v[1] for v in untar(body).values()]
        assert b"container-passwd-marker" in content, path
        assert content.decode() != host_passwd
    # writes through the same links land in the container, never on the host
    for i, path in enumerate(("/rootlink/etc", "/up", "/../../etc", "/rootlink/../../etc")):
        name = f"{HOST_MARK}-{i}"
        st, _h, body = put_archive(sd, "cpbox", path, make_tar([(name, "f", b"evil")]))
        assert st == 200, (path, body)
        assert not os.path.exists(f"/etc/{name}")
        assert in_container(sd, "cat", f"/etc/{name}") == "evil"
    # a member whose parent is a symlink to / inside the container stays inside too
    st, _h, body = put_archive(sd, "cpbox", "/", make_tar([(f"rootlink/etc/{HOST_MARK}-m", "f",
                                                           b"m")]))
    assert st == 200, body
    assert not os.path.exists(f"/etc/{HOST_MARK}-m")
    assert in_container(sd, "cat", f"/etc/{HOST_MARK}-m") == "m"
    # stopped: the same, through the rootfs on the host
    sd.request("POST", "/containers/cpbox/stop?t=0")
    st, h, body = get_archive(sd, "cpbox", "/up/passwd")
    assert b"container-passwd-marker" in list(untar(body).values())[0][1]
    st, _h, body = put_archive(sd, "cpbox", "/rootlink/etc", make_tar([(f"{HOST_MARK}-s", "f",
                                                                        b"s")]))
    assert st == 200, body
    assert not os.path.exists(f"/etc/{HOST_MARK}-s")
    assert sd.request("POST", "/containers/cpbox/start")[0] == 204
    assert in_container(sd, "cat", f"/etc/{HOST_MARK}-s") == "s"


def test_read_only(sd, tmp_path):
    st, c = sd.json("POST", "/containers/create?name=rocp", {
        "Image": "busybox", "Cmd": ["true"],
        "HostConfig": {"ReadonlyRootfs": True, "Binds": [f"{tmp_path}:/rw",
                                                         f"{tmp_path}:/ro:ro"]}})
    assert st == 201
    data = make_tar([("f", "f", b"x")])
    st, _h, body = put_archive(sd, "rocp", "/tmp", data)
    assert st == 403 and json.loads(body)["message"] == "container rootfs is marked read-only"
    st, _h, body = put_archive(sd, "rocp", "/ro", data)
    assert st == 403 and json.loads(body)["message"] == "mounted volume is marked read-only"
    assert put_archive(sd, "rocp", "/rw", data)[0] == 200
    assert (tmp_path / "f").read_bytes() == b"x"
    assert sd.request("DELETE", "/containers/rocp")[0] == 204


def test_export_and_changes(sd):
    st, c = sd.json("POST", "/containers/create?name=chg", {
        "Image": "busybox", "Cmd": ["sh", "-c", "echo new > /tmp/added; rm /etc/group; "
                                    "echo more >> /etc/passwd; mkdir -p /var/x/y"]})
    assert st == 201
    assert sd.json("GET", "/containers/chg/changes") == (200, None)  # nothing yet
    assert sd.request("POST", "/containers/chg/start")[0] == 204
    sd.json("POST", "/containers/chg/wait")
    st, ch = sd.json("GET", "/containers/chg/changes")
    assert ch == [
        {"Path": "/etc", "Kind": 0}, {"Path": "/etc/group", "Kind": 2},
        {"Path": "/etc/passwd", "Kind": 0}, {"Path": "/tmp", "Kind": 0},
        {"Path": "/tmp/added", "Kind": 1}, {"Path": "/var", "Kind": 0},
        {"Path": "/var/x", "Kind": 1}, {"Path": "/var/x/y", "Kind": 1}]
    st, h, body = sd.request("GET", "/containers/chg/export")
    assert st == 200 and h["Content-Type"] == "application/x-tar"
    files = untar(body)
    assert files["tmp/added"] == ("f", b"new\n")
    assert "etc/group" not in files and files["bin/busybox"][0] in ("f", "h")
    assert files["etc/passwd"][1].endswith(b"more\n")
    assert not any(n.startswith("/") or n.startswith("..") for n in files)
    assert sd.request("GET", "/containers/nope/export")[0] == 404
    assert sd.request("DELETE", "/containers/chg")[0] == 204


# ------------------------------------------------------------------ the CLIs


def test_sampan_cp(sd, box, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # container → local: a file into a dir, onto a new name, a dir into a dir, contents only
    assert sd.sampan("cp", "cpbox:/dir/file", str(out)).returncode == 0
    assert (out / "file").read_text() == "inside\n"
    assert sd.sampan("cp", "cpbox:/dir/file", str(out / "renamed")).returncode == 0
    assert (out / "renamed").read_text() == "inside\n"
    assert sd.sampan("cp", "cpbox:/dir", str(out)).returncode == 0
    assert (out / "dir/sub/d").read_text() == "deep\n"
    assert sd.sampan("cp", "cpbox:/dir/.", str(out / "flat")).returncode == 0
    assert (out / "flat/sub/d").read_text() == "deep\n"
    assert sd.sampan("cp", "cpbox:/dir", str(out / "newname")).returncode == 0
    assert (out / "newname/file").read_text() == "inside\n"
    # -L follows the container's symlink (inside the container), without -L the link itself
    assert sd.sampan("cp", "cpbox:/pw", str(out / "pwlink")).returncode == 0
    assert os.readlink(out / "pwlink") == "/etc/passwd"
    assert sd.sampan("cp", "-L", "cpbox:/pw", str(out / "pwfile")).returncode == 0
    assert "container-passwd-marker" in (out / "pwfile").read_text()
    # to stdout as a tar
    r = sd.sampan("cp", "cpbox:/dir/file", "-", input=b"")
    assert untar(r.stdout) == {"file": ("f", b"inside\n")}
    # local → container
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    (src / "inner/x").write_text("x\n")
    (src / "top").write_text("top\n")
    assert sd.sampan("cp", str(src), "cpbox:/tmp/").returncode == 0
    assert in_container(sd, "cat", "/tmp/src/inner/x", "/tmp/src/top") == "x\ntop\n"
    assert sd.sampan("cp", str(src) + "/.", "cpbox:/dir").returncode == 0
    assert in_container(sd, "cat", "/dir/top") == "top\n"
    assert sd.sampan("cp", str(src / "top"), "cpbox:/tmp/renamed-top").returncode == 0
    assert in_container(sd, "cat", "/tmp/renamed-top") == "top\n"
    assert sd.sampan("cp", str(src / "top"), "cpbox:/vol").returncode == 0
    assert (sd.data / "volumes/cpvol/_data/top").read_text() == "top\n"
    r = sd.sampan("cp", "-", "cpbox:/tmp", input=make_tar([("fromstdin", "f", b"s")]))
    assert r.returncode == 0, r.stderr
    assert in_container(sd, "cat", "/tmp/fromstdin") == "s"
    # ".." never climbs out of the container, in either direction
    r = sd.sampan("cp", "-L", "cpbox:/../../../../../pw", str(out / "dotdot"))
    assert r.returncode == 0, r.stderr
    assert "container-passwd-marker" in (out / "dotdot").read_text()
    r = sd.sampan("cp", str(src / "top"), f"cpbox:/../../../../etc/{HOST_MARK}-cli")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(f"/etc/{HOST_MARK}-cli")
    assert in_container(sd, "cat", f"/etc/{HOST_MARK}-cli") == "top\n"
    # errors, docker's way
    r = sd.sampan("cp", "cpbox:/no/such", str(out))
    assert r.returncode == 1 and "Could not find the file /no/such in container cpbox" in r.stderr
    r = sd.sampan("cp", str(tmp_path / "missing"), "cpbox:/tmp")
    assert r.returncode == 1 and "no such file or directory" in r.stderr
    r = sd.sampan("cp", str(src), "cpbox:/dir/file")
    assert r.returncode == 1 and "cannot copy a directory to a file" in r.stderr
    r = sd.sampan("cp", str(src / "top"), "cpbox:/nodir/")
    assert r.returncode == 1
    r = sd.sampan("cp", "nosuchctr:/x", str(out))
    assert r.returncode == 1 and "No such container: nosuchctr" in r.stderr
    r = sd.sampan("cp", "a", "b")
    assert r.returncode == 1 and "must specify at least one container source" in r.stderr


def test_sampan_export_and_diff(sd, tmp_path):
    r = sd.sampan("run", "--name", "exp", "busybox", "sh", "-c", "echo e > /tmp/e; rm /etc/group")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "x.tar"
    r = sd.sampan("export", "-o", str(out), "exp")
    assert r.returncode == 0, r.stderr
    assert untar(out.read_bytes())["tmp/e"] == ("f", b"e\n")
    r = sd.sampan("diff", "exp")
    assert r.stdout == "C /etc\nD /etc/group\nC /tmp\nA /tmp/e\n", r.stderr
    assert sd.sampan("rm", "exp").returncode == 0


@docker_cli
def test_docker_cp_export_diff(sd, box, tmp_path):
    src = tmp_path / "dk.txt"
    src.write_text("from docker cp\n")
    r = sd.docker("cp", str(src), "cpbox:/tmp/")
    assert r.returncode == 0, r.stderr
    assert in_container(sd, "cat", "/tmp/dk.txt") == "from docker cp\n"
    r = sd.docker("cp", "cpbox:/dir", str(tmp_path / "dkdir"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dkdir/sub/d").read_text() == "deep\n"
    r = sd.docker("cp", "cpbox:/dir/.", str(tmp_path / "dkdir"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dkdir/file").read_text() == "inside\n"
    r = sd.docker("cp", "-L", "cpbox:/pw", str(tmp_path / "dkpw"))
    assert r.returncode == 0, r.stderr
    assert "container-passwd-marker" in (tmp_path / "dkpw").read_text()
    r = sd.docker("cp", "cpbox:/nonexistent", str(tmp_path))
    assert r.returncode == 1 and "Could not find the file /nonexistent" in r.stderr
    r = sd.docker("run", "--name", "dkexp", "busybox", "sh", "-c", "touch /tmp/t; rm /etc/group")
    assert r.returncode == 0, r.stderr
    r = sd.docker("diff", "dkexp")
    assert r.stdout == "C /etc\nD /etc/group\nC /tmp\nA /tmp/t\n", r.stderr
    r = sd.docker("export", "-o", str(tmp_path / "dk.tar"), "dkexp")
    assert r.returncode == 0, r.stderr
    assert "tmp/t" in untar((tmp_path / "dk.tar").read_bytes())
    assert sd.docker("rm", "dkexp").returncode == 0


def test_docker_py_archive(sd, box):
    docker = pytest.importorskip("docker")
    cl = docker.DockerClient(base_url=sd.host)
    try:
        c = cl.containers.get("cpbox")
        assert c.put_archive("/tmp", make_tar([("py.txt", "f", b"py\n")])) is True
        bits, st = c.get_archive("/tmp/py.txt")
        assert st["name"] == "py.txt" and st["size"] == 3
        assert untar(b"".join(bits)) == {"py.txt": ("f", b"py\n")}
        with pytest.raises(docker.errors.APIError):
            c.put_archive("/tmp", make_tar([("../" + HOST_MARK, "f", b"x")]))
        assert not os.path.exists("/" + HOST_MARK)
        assert {"Path": "/dir/file", "Kind": 1} in c.diff()
    finally:
        cl.close()


def test_vfs_driver(croot, busybox_archive):
    """The same operations over the vfs storage driver (a full copy per container: changes
    come from comparing it with the image)."""
    from daemonlib import Daemon, mkdir

    d = Daemon(mkdir(croot / "cp-vfs"), fake=False)
    d.start("--storage-driver", "vfs")
    try:
        st, _h, body = d.request("POST", "/images/load?quiet=1", busybox_archive,
                                 {"Content-Type": "application/x-tar"})
        assert st == 200, body
        assert d.json("GET", "/info")[1]["Driver"] == "vfs"
        r = d.sampan("run", "--name", "v1", "busybox", "sh", "-c",
                     "echo n > /tmp/n; rm /etc/group; echo m >> /etc/passwd; mkdir -p /a/b")
        assert r.returncode == 0, r.stderr
        st, ch = d.json("GET", "/containers/v1/changes")
        assert ch == [{"Path": "/a", "Kind": 1}, {"Path": "/a/b", "Kind": 1},
                      {"Path": "/etc", "Kind": 0}, {"Path": "/etc/group", "Kind": 2},
                      {"Path": "/etc/passwd", "Kind": 0}, {"Path": "/tmp", "Kind": 0},
                      {"Path": "/tmp/n", "Kind": 1}], ch
        assert put_archive(d, "v1", "/tmp", make_tar([("put", "f", b"p")]))[0] == 200
        st, _h, body = get_archive(d, "v1", "/tmp/put")
        assert untar(body) == {"put": ("f", b"p")}
        st, _h, body = d.request("GET", "/containers/v1/export")
        assert untar(body)["tmp/n"] == ("f", b"n\n")
        assert d.request("DELETE", "/containers/v1")[0] == 204
    finally:
        d.stop()


def test_mount_points_are_never_replaced(sd, box):
    """An upload never removes a volume, a bind or a generated /etc file to put something else
    in its place (docker fails there too), running or stopped."""
    before = sorted(os.listdir(sd.data / "volumes/cpvol/_data"))
    assert before
    for state in ("running", "stopped"):
        for members in ([("vol", "f", b"x")], [("bind", "l", "/")], [("etc/hosts", "d", None)]):
            st, _h, body = put_archive(sd, "cpbox", "/", make_tar(members))
            assert st == 400, (state, members, body)
            assert b"cannot replace the mount point" in body
        assert sorted(os.listdir(sd.data / "volumes/cpvol/_data")) == before
        assert (box["bind"] / "b.txt").read_text() == "bound\n"
        sd.request("POST", "/containers/cpbox/stop?t=0")
    assert sd.request("POST", "/containers/cpbox/start")[0] == 204
    assert in_container(sd, "cat", "/vol/v.txt") == "v\n"


def test_copy_uidgid_uses_the_containers_own_user_database(sd):
    st, c = sd.json("POST", "/containers/create?name=usercp", {
        "Image": "busybox", "User": "daemon", "Cmd": ["sleep", "1000"]})
    assert st == 201
    assert sd.request("POST", "/containers/usercp/start")[0] == 204
    data = make_tar([("owned", "f", b"o")])
    assert put_archive(sd, "usercp", "/tmp", data, "&copyUIDGID=1")[0] == 200
    r = sd.sampan("exec", "-u", "0", "usercp", "stat", "-c", "%u:%g", "/tmp/owned")
    assert r.stdout == "1:1\n", r.stderr
    # its /etc/passwd becomes an absolute symlink: read inside the container, never the host's
    r = sd.sampan("exec", "-u", "0", "usercp", "sh", "-c",
                  "echo daemon:x:4242:4343::/:/bin/sh > /etc/passwd.real && "
                  "rm /etc/passwd && ln -s /etc/passwd.real /etc/passwd")
    assert r.returncode == 0, r.stderr
    assert put_archive(sd, "usercp", "/tmp", make_tar([("owned2", "f", b"o")]),
                       "&copyUIDGID=1")[0] == 200
    r = sd.sampan("exec", "-u", "0", "usercp", "stat", "-c", "%u:%g", "/tmp/owned2")
    assert r.stdout == "4242:4343\n", r.stderr
    assert sd.request("DELETE", "/containers/usercp?force=1")[0] == 204


@pytest.mark.parametrize("stopped", [False, True])
def test_tar_slip_through_its_own_symlink_stays_inside(sd, box, stopped):
    """A tar that plants a symlink to / (or ../../..) and then writes through it: the write
    resolves inside the container, as if chrooted; the host's /etc is never touched."""
    if stopped:
        sd.request("POST", "/containers/cpbox/stop?t=0")
    name = f"{HOST_MARK}-slip-{int(stopped)}"
    data = make_tar([("slip", "l", "/"), ("slip2", "l", "../../../../../../.."),
                     (f"slip/etc/{name}", "f", b"a"), (f"slip2/etc/{name}-2", "f", b"b")])
    st, _h, body = put_archive(sd, "cpbox", "/tmp", data)
    assert st == 200, body
    assert not os.path.exists(f"/etc/{name}") and not os.path.exists(f"/etc/{name}-2")
    if stopped:
        assert sd.request("POST", "/containers/cpbox/start")[0] == 204
    assert in_container(sd, "cat", f"/etc/{name}", f"/etc/{name}-2") == "ab"


def test_cp_the_root(sd, tmp_path):
    st, c = sd.json("POST", "/containers/create?name=rootcp", {"Image": "busybox",
                                                                "Cmd": ["true"]})
    assert st == 201
    st, h, body = get_archive(sd, "rootcp", "/")
    assert st == 200 and path_stat(h)["name"] == "/"
    names = untar(body)
    assert "./bin/busybox" in names and not any(n.startswith("/") for n in names)
    r = sd.sampan("cp", "rootcp:/", str(tmp_path / "root"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "root/bin/busybox").is_file() and (tmp_path / "root/etc/passwd").is_file()
    assert sd.request("DELETE", "/containers/rootcp")[0] == 204


def test_paths_through_a_file_stopped(sd, box):
    sd.request("POST", "/containers/cpbox/stop?t=0")
    data = make_tar([("f", "f", b"x")])
    for through_a_file in ("/dir/file/x", "/etc/hostname/x", "/vol/v.txt/x"):
        assert sd.request("HEAD", f"/containers/cpbox/archive?path={q(through_a_file)}")[0] \
            == 400
        assert get_archive(sd, "cpbox", through_a_file)[0] == 400
        assert put_archive(sd, "cpbox", through_a_file, data)[0] == 400
    assert sd.request("POST", "/containers/cpbox/start")[0] == 204


@pytest.mark.parametrize("compress", ["gzip", "bz2", "xz"])
def test_put_compressed_archives(sd, box, compress):
    import bz2
    import gzip
    import lzma

    fn = {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[compress]
    data = fn(make_tar([(f"c-{compress}", "f", compress.encode())]))
    st, _h, body = put_archive(sd, "cpbox", "/tmp", data)
    assert st == 200, body
    assert in_container(sd, "cat", f"/tmp/c-{compress}") == compress
    st, _h, body = put_archive(sd, "cpbox", "/tmp", fn(make_tar([("/abs", "f", b"x")])))
    assert st == 400 and b"absolute path refused" in body
    st, _h, body = put_archive(sd, "cpbox", "/tmp", b"not a tar at all" * 64)
    assert st == 400


def test_put_keeps_xattrs_but_never_overlay_ones(sd, box):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ti = tarfile.TarInfo("withx")
        ti.size = 1
        ti.pax_headers = {"SCHILY.xattr.user.note": "kept",
                          "SCHILY.xattr.trusted.overlay.opaque": "y"}
        tar.addfile(ti, io.BytesIO(b"x"))
    sd.request("POST", "/containers/cpbox/stop?t=0")  # the file lands in the overlay's upper
    st, _h, body = put_archive(sd, "cpbox", "/tmp", buf.getvalue())
    assert st == 200, body
    merged = sd.json("GET", "/containers/cpbox/json")[1]["GraphDriver"]["Data"]["MergedDir"]
    path = os.path.join(merged, "tmp/withx")
    assert os.getxattr(path, "user.note") == b"kept"
    upper = os.path.join(os.path.dirname(merged), "diff", "tmp", "withx")
    assert "trusted.overlay.opaque" not in os.listxattr(upper)
    assert sd.request("POST", "/containers/cpbox/start")[0] == 204


def test_file_capabilities_survive_cp_both_ways(sd, box, tmp_path):
    import subprocess

    if shutil.which("setcap") is None:
        pytest.skip("no setcap")
    f = tmp_path / "capped"
    f.write_bytes(b"#!/bin/sh\n")
    subprocess.run(["setcap", "cap_net_raw+ep", str(f)], check=True)
    cap = os.getxattr(f, "security.capability")
    r = sd.sampan("cp", str(f), "cpbox:/tmp/capped")
    assert r.returncode == 0, r.stderr
    st, h, body = get_archive(sd, "cpbox", "/tmp/capped")
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        (m,) = tar.getmembers()
        raw = m.pax_headers["SCHILY.xattr.security.capability"]
        assert raw.encode("utf-8", "surrogateescape") == cap
    r = sd.sampan("cp", "-a", "cpbox:/tmp/capped", str(tmp_path / "back"))
    assert r.returncode == 0, r.stderr
    assert os.getxattr(tmp_path / "back", "security.capability") == cap
