"""The real docker CLI (28) and docker-py against sampand (fake image service)."""

from __future__ import annotations

import shutil

import pytest

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")


def _dockerpy():
    try:
        import docker
    except ImportError:
        pytest.skip("docker-py is not installed (pip install docker)")
    return docker


@docker_cli
def test_docker_version_and_info(shared_daemon):
    r = shared_daemon.docker("version")
    assert r.returncode == 0, r.stderr
    assert "API version:       1.45 (downgraded from" in r.stdout
    assert "Server: Sampan Engine" in r.stdout
    r = shared_daemon.docker("version", "--format", "{{.Server.APIVersion}}/"
                                                    "{{.Server.MinAPIVersion}}")
    assert r.stdout.strip() == "1.45/1.24"
    r = shared_daemon.docker("info", "--format", "{{.Driver}} {{.Images}} {{.OSType}} "
                                                 "{{.DockerRootDir}}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"vfs 3 linux {shared_daemon.data}"
    r = shared_daemon.docker("info")
    assert r.returncode == 0 and "Server Version: 0.1.0" in r.stdout, r.stderr


@docker_cli
def test_docker_images(shared_daemon):
    r = shared_daemon.docker("images")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert any(ln.split()[:2] == ["busybox", "latest"] and "4.26MB" in ln for ln in lines)
    r = shared_daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}", "-a")
    assert sorted(r.stdout.split()) == ["<none>:<none>", "busybox:latest",
                                        "localhost:5000/team/app:1.0"]
    r = shared_daemon.docker("image", "inspect", "localhost:5000/team/app:1.0", "--format",
                             "{{index .RepoTags 0}}")
    assert r.stdout.strip() == "localhost:5000/team/app:1.0"
    r = shared_daemon.docker("image", "inspect", "nosuch")
    assert r.returncode == 1 and "No such image: nosuch" in r.stderr


@docker_cli
def test_docker_image_verbs(daemon, tmp_path):
    r = daemon.docker("pull", "alpine:3.19")
    assert r.returncode == 0, r.stderr
    assert "aaaaaaaaaaaa: Pull complete" in r.stdout
    assert r.stdout.strip().endswith("docker.io/library/alpine:3.19")
    r = daemon.docker("pull", "broken/x:1")
    assert r.returncode == 1 and "broken layer" in r.stderr
    r = daemon.docker("pull", "missing/x:1", input="")
    assert r.returncode == 1 and "manifest unknown" in r.stderr
    assert daemon.docker("tag", "alpine:3.19", "localhost:5000/alp:1").returncode == 0
    r = daemon.docker("rmi", "localhost:5000/alp:1")
    assert r.returncode == 0 and "Untagged: localhost:5000/alp:1" in r.stdout
    r = daemon.docker("history", "--format", "{{.ID}} {{.Size}}", "alpine:3.19")
    assert r.returncode == 0 and "<missing> 777B" in r.stdout
    archive = tmp_path / "a.tar"
    assert daemon.docker("save", "-o", str(archive), "alpine:3.19").returncode == 0
    assert daemon.docker("rmi", "alpine:3.19").returncode == 0
    r = daemon.docker("load", "-i", str(archive))
    assert r.returncode == 0 and "Loaded image: alpine:3.19" in r.stdout
    r = daemon.docker("image", "prune", "-f")
    assert r.returncode == 0 and "Total reclaimed space: 2kB" in r.stdout
    r = daemon.docker("system", "df")
    assert r.returncode == 0 and r.stdout.splitlines()[1].split()[:2] == ["Images", "3"]
    r = daemon.docker("push", "localhost:5000/team/app:1.0")
    assert r.returncode == 0 and "1.0: digest: sha256:" in r.stdout
    r = daemon.docker("login", "-u", "alice", "--password-stdin", "localhost:5000",
                      input="secret\n")
    assert r.returncode == 0 and "Login Succeeded" in r.stdout
    r = daemon.docker("login", "-u", "alice", "--password-stdin", "localhost:5000",
                      input="wrong\n")
    assert r.returncode == 1 and "incorrect username or password" in r.stderr


@docker_cli
def test_docker_cli_no_daemon(tmp_path):
    import subprocess

    r = subprocess.run(["docker", "version"], check=False, capture_output=True, text=True,
                       env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock", "PATH": "/usr/bin:"
                            "/usr/local/bin:/bin", "DOCKER_CONFIG": str(tmp_path)})
    assert r.returncode != 0


def test_dockerpy(shared_daemon):
    docker = _dockerpy()
    c = docker.DockerClient(base_url=shared_daemon.host)
    try:
        assert c.ping() is True
        v = c.version()
        assert v["ApiVersion"] == "1.45"
        assert c.api.api_version == "1.45"
        assert c.info()["Driver"] == "vfs"
        tags = sorted(t for i in c.images.list() for t in i.tags)
        assert tags == ["busybox:latest", "localhost:5000/team/app:1.0"]
        img = c.images.get("localhost:5000/team/app:1.0")
        assert img.labels == {"tier": "web"}
        assert img.history()[1]["Id"] == "<missing>"
        assert len(c.images.list(all=True)) == 3
        assert [i.tags for i in c.images.list(filters={"dangling": True})] == [[]]
        with pytest.raises(docker.errors.ImageNotFound):
            c.images.get("nosuch")
        with pytest.raises(docker.errors.APIError) as e:
            c.login("alice", "wrong", registry="localhost:5000", reauth=True)
        assert "incorrect username or password" in str(e.value)
        assert c.df()["Images"]
    finally:
        c.close()


def test_dockerpy_versions(shared_daemon):
    docker = _dockerpy()
    for version in ("1.24", "1.41", "1.45"):
        c = docker.APIClient(base_url=shared_daemon.host, version=version)
        assert c.version()["ApiVersion"] == "1.45"
        c.close()
    c = docker.APIClient(base_url=shared_daemon.host, version="1.50")
    with pytest.raises(docker.errors.APIError) as e:
        c.images()
    assert "client version 1.50 is too new" in str(e.value)
    c.close()


def test_dockerpy_image_verbs(daemon, tmp_path):
    docker = _dockerpy()
    c = docker.DockerClient(base_url=daemon.host)
    try:
        img = c.images.pull("alpine", tag="3.19")
        assert "alpine:3.19" in img.tags
        events = list(c.api.pull("alpine", tag="3.20", stream=True, decode=True))
        assert events[-1]["status"] == "Status: Downloaded newer image for alpine:3.20"
        with pytest.raises(docker.errors.APIError):
            c.images.pull("private/x", tag="1")
        with pytest.raises(docker.errors.APIError):
            c.images.pull("broken/x", tag="1")
        assert img.tag("localhost:5000/alp", "2") is True
        c.images.remove("localhost:5000/alp:2")
        data = b"".join(c.images.get("alpine:3.19").save(named=True))
        c.images.remove("alpine:3.19", force=True)
        loaded = c.images.load(data)
        assert "alpine:3.19" in loaded[0].tags
        out = list(c.api.push("localhost:5000/team/app", tag="1.0", stream=True, decode=True))
        assert out[-1]["aux"]["Tag"] == "1.0"
        pruned = c.images.prune(filters={"dangling": True})
        assert pruned["SpaceReclaimed"] == 2000
    finally:
        c.close()
