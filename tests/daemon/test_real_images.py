"""The whole image path for real: sampand with the real graph and ImageService, a real
registry on loopback (tests/images/registries.py), driven by the sampan CLI, the docker CLI and
docker-py."""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest

IMAGES_TESTS = Path(__file__).resolve().parents[1] / "images"
if str(IMAGES_TESTS) not in sys.path:
    sys.path.insert(0, str(IMAGES_TESTS))

try:
    import sampan.graph
    import sampan.images  # noqa: F401
    from registries import (  # noqa: F401 - fixtures
        Image,
        Uploader,
        busybox_layer,
        plain_registry,
        random_layer,
        reg_tmp,
    )
except ImportError as e:  # the graph or registry parts are not there yet
    pytest.skip(f"the real image service is not available: {e}", allow_module_level=True)

docker_cli = pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")


@pytest.fixture(scope="module")
def remote(plain_registry):
    im = Image([busybox_layer(), random_layer(300_000)])
    Uploader(plain_registry.url).image("real/two", "1", im)
    return plain_registry


@pytest.fixture(scope="module")
def real(remote, tmp_path_factory):
    from daemonlib import Daemon

    d = Daemon(tmp_path_factory.mktemp("real-sampand"), fake=False)
    d.start("--insecure-registry", remote.host)
    yield d
    d.stop()


def test_pull_with_the_sampan_cli(real, remote):
    ref = f"{remote.host}/real/two:1"
    r = real.sampan("pull", ref)
    assert r.returncode == 0, r.stderr + real.log()
    assert "1: Pulling from real/two" in r.stdout
    assert r.stdout.count(": Pull complete") == 2
    assert r.stdout.splitlines()[-1] == ref
    r = real.sampan("images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}")
    assert r.stdout.splitlines() == [f"{ref} {r.stdout.split()[-1]}"]
    st, info = real.json("GET", "/info")
    assert st == 200 and info["Images"] == 1 and info["Driver"] in ("overlay", "vfs")
    r = real.sampan("pull", f"{remote.host}/real/two:nope")
    assert r.returncode == 1 and "Error response from daemon:" in r.stderr
    assert "nope" in r.stderr


@docker_cli
def test_docker_cli_on_real_images(real, remote, tmp_path):
    ref = f"{remote.host}/real/two:1"
    r = real.docker("pull", ref)
    assert r.returncode == 0, r.stderr
    r = real.docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert ref in r.stdout.split()
    r = real.docker("image", "inspect", "--format", "{{.Os}} {{len .RootFS.Layers}}", ref)
    assert r.stdout.strip() == "linux 2"
    r = real.docker("history", "-q", ref)
    assert r.returncode == 0 and r.stdout.strip()
    copy = f"{remote.host}/real/copy:2"
    assert real.docker("tag", ref, copy).returncode == 0
    r = real.docker("push", copy)
    assert r.returncode == 0, r.stderr
    assert "2: digest: sha256:" in r.stdout
    with urllib.request.urlopen(f"http://{remote.host}/v2/real/copy/tags/list") as resp:
        assert json.load(resp)["tags"] == ["2"]
    archive = tmp_path / "two.tar"
    assert real.docker("save", "-o", str(archive), ref).returncode == 0
    assert real.docker("rmi", copy).returncode == 0
    r = real.docker("rmi", ref)
    assert r.returncode == 0 and "Deleted: sha256:" in r.stdout, r.stderr
    r = real.docker("load", "-i", str(archive))
    assert r.returncode == 0 and f"Loaded image: {ref}" in r.stdout, r.stderr
    r = real.docker("system", "df", "--format", "{{.Type}} {{.TotalCount}}")
    assert r.stdout.splitlines()[0] == "Images 1"


def test_dockerpy_on_real_images(real, remote):
    try:
        import docker
    except ImportError:
        pytest.skip("docker-py is not installed")
    c = docker.DockerClient(base_url=real.host)
    try:
        img = c.images.pull(f"{remote.host}/real/two", tag="1")
        assert f"{remote.host}/real/two:1" in img.tags
        assert img.attrs["RootFS"]["Layers"] and img.attrs["Os"] == "linux"
        with pytest.raises(docker.errors.NotFound):
            c.images.get("nosuch:1")
        data = b"".join(img.save(named=True))
        assert len(data) > 300_000
    finally:
        c.close()


def test_rss_after_a_pull(real, record_property):
    kib = real.rss_kib()
    record_property("sampand_rss_after_pull_kib", kib)
    print(f"\nsampand RSS after pulls (graph + registry client loaded): {kib} KiB, "
          f"threads {real.threads()}")
    # The per-request worker thread of the last call may still be finishing.
    deadline = time.monotonic() + 5
    while real.threads() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert real.threads() == 1
