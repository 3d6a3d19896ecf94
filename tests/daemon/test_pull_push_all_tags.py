# ruff: noqa: F811 - pytest fixtures imported from registries.py
"""`pull -a` and push of every tag through sampand with the real graph, from the sampan CLI,
the docker CLI 28 (which sends no `tag` for -a) and the raw API, against docker-registry."""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

IMAGES_TESTS = Path(__file__).resolve().parents[1] / "images"
if str(IMAGES_TESTS) not in sys.path:
    sys.path.insert(0, str(IMAGES_TESTS))

from registries import (  # noqa: E402,F401 - fixtures
    Image,
    Uploader,
    busybox_layer,
    plain_registry,
    random_layer,
    reg_tmp,
)

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")


@pytest.fixture(scope="module")
def remote(plain_registry):
    base = busybox_layer()
    a = Image([base, random_layer(40_000, "a")])
    b = Image([base, random_layer(40_000, "b")])
    up = Uploader(plain_registry.url)
    for repo in ("every/cli", "every/docker", "every/api"):
        up.image(repo, "1", a)
        up.image(repo, "2", b)
    return plain_registry


@pytest.fixture
def real(remote, tmp_path):
    from daemonlib import Daemon

    d = Daemon(tmp_path, fake=False)
    d.start("--insecure-registry", remote.host)
    yield d
    d.stop()


def tags(reg, repo):
    with urllib.request.urlopen(f"{reg.url}/v2/{repo}/tags/list") as resp:
        return sorted(json.load(resp)["tags"] or [])


def local(real):
    r = real.sampan("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert r.returncode == 0, r.stderr
    return sorted(r.stdout.split())


def test_sampan_cli_pull_and_push_all_tags(real, remote):
    repo = f"{remote.host}/every/cli"
    r = real.sampan("pull", "-a", repo)
    assert r.returncode == 0, r.stderr + real.log()
    assert "Using default tag" not in r.stdout
    assert "1: Pulling from every/cli" in r.stdout and "2: Pulling from every/cli" in r.stdout
    assert r.stdout.count("Digest: sha256:") == 2
    assert f"Status: Downloaded newer image for {repo}\n" in r.stdout
    assert r.stdout.splitlines()[-1] == repo
    assert local(real) == [f"{repo}:1", f"{repo}:2"]
    r = real.sampan("pull", "-a", f"{repo}:1")
    assert r.returncode == 1 and "tag can't be used with --all-tags/-a" in r.stderr
    # push -a: every local tag of the repository
    dst = f"{remote.host}/every/cli-copy"
    for t in ("1", "2"):
        assert real.sampan("tag", f"{repo}:{t}", f"{dst}:c{t}").returncode == 0
    r = real.sampan("push", "-a", dst)
    assert r.returncode == 0, r.stderr + real.log()
    assert r.stdout.count(f"The push refers to repository [{dst}]") == 1
    assert "c1: digest: sha256:" in r.stdout and "c2: digest: sha256:" in r.stdout
    assert tags(remote, "every/cli-copy") == ["c1", "c2"]
    # without -a the CLI pushes :latest, as docker's does, and there is none
    r = real.sampan("push", dst)
    assert r.returncode == 1 and "Using default tag: latest" in r.stdout
    assert "No such image" in r.stderr or "does not exist" in r.stderr


@docker_cli
def test_docker_cli_pull_and_push_all_tags(real, remote):
    repo = f"{remote.host}/every/docker"
    r = real.docker("pull", "--all-tags", repo)
    assert r.returncode == 0, r.stderr + real.log()
    assert f"Status: Downloaded newer image for {repo}" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == repo
    assert local(real) == [f"{repo}:1", f"{repo}:2"]
    dst = f"{remote.host}/every/docker-copy"
    for t in ("1", "2"):
        assert real.docker("tag", f"{repo}:{t}", f"{dst}:d{t}").returncode == 0
    r = real.docker("push", "--all-tags", dst)
    assert r.returncode == 0, r.stderr + real.log()
    assert "d1: digest: sha256:" in r.stdout and "d2: digest: sha256:" in r.stdout
    assert tags(remote, "every/docker-copy") == ["d1", "d2"]
    r = real.docker("push", "-a", f"{remote.host}/every/nothing-here")
    assert r.returncode == 1
    assert "An image does not exist locally with the tag" in r.stderr


def test_api_create_and_push_without_tag(real, remote):
    repo = f"{remote.host}/every/api"
    st, _, data = real.request("POST", f"/images/create?fromImage={repo}")
    lines = [json.loads(x) for x in data.splitlines() if x.strip()]
    assert st == 200 and not any("error" in m for m in lines), lines
    assert lines[-1] == {"status": f"Status: Downloaded newer image for {repo}"}
    assert local(real) == [f"{repo}:1", f"{repo}:2"]
    st, _, data = real.request("POST", f"/images/{remote.host}/every/api/push")
    lines = [json.loads(x) for x in data.splitlines() if x.strip()]
    assert st == 200 and not any("error" in m for m in lines), lines
    assert [m["aux"]["Tag"] for m in lines if "aux" in m] == ["1", "2"]
    st, _, data = real.request("POST", f"/images/{remote.host}/every/none/push")
    assert st == 404
    assert "An image does not exist locally with the tag" in json.loads(data)["message"]
