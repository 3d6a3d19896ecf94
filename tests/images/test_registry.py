# ruff: noqa: F811 - pytest fixtures imported from registries.py
"""Registry client: TLS and insecure registries, Basic and token auth, credentials files,
redirects, mirrors, login."""

import base64
import json
import time
from pathlib import Path

import pytest
import sampan.registry.config as rconfig
from registries import (  # noqa: F401 - fixtures
    SERVICE,
    BlobHost,
    Fault,
    Image,
    Recorder,
    Uploader,
    basic_registry,
    busybox_layer,
    ca,
    certs_dir,
    graph,
    isolated_config,
    make_service,
    plain_registry,
    proxy_for,
    random_layer,
    reg_tmp,
    token_registry,
    token_server,
)
from sampan.errors import InvalidArgument, NotFound, RegistryError, SampanError, Unauthorized
from sampan.registry import credentials
from sampan.registry.auth import parse_challenges
from sampan.registry.config import RegistryConfig

pytestmark = pytest.mark.usefixtures("isolated_config")
ALICE = {"username": "alice", "password": "wonderland"}


@pytest.fixture(scope="module")
def basic_image(basic_registry, ca):
    im = Image([busybox_layer(), random_layer(200_000)])
    Uploader(basic_registry.url, verify=str(ca.cert), auth=("alice", "wonderland")).image(
        "auth/img", "1", im)
    return im


@pytest.fixture(scope="module")
def token_images(token_registry, token_server):
    up = Uploader(token_registry.url, token_server=token_server)
    pub = Image([busybox_layer(), random_layer(1000, "pub")])
    priv = Image([busybox_layer(), random_layer(1000, "priv")])
    up.image("public/img", "1", pub)
    up.image("private/img", "1", priv)
    return pub, priv


# ---- unit ---------------------------------------------------------------------------------

def test_parse_challenges():
    c = parse_challenges('Bearer realm="https://auth.example/token",service="reg",'
                         'scope="repository:a/b:pull"')
    assert len(c) == 1 and c[0].scheme == "bearer"
    assert c[0].params == {"realm": "https://auth.example/token", "service": "reg",
                           "scope": "repository:a/b:pull"}
    c = parse_challenges('Basic realm="x y", Bearer realm="r", service=s')
    assert [x.scheme for x in c] == ["basic", "bearer"]
    assert c[0].params["realm"] == "x y" and c[1].params == {"realm": "r", "service": "s"}
    assert parse_challenges("") == []


def test_insecure_rules():
    cfg = RegistryConfig(insecure_registries=["10.0.0.0/8", "myreg:5000", "plain.example"])
    assert cfg.is_insecure("localhost:5000") and cfg.is_insecure("127.0.0.1:5000")
    assert cfg.is_insecure("127.1.2.3") and cfg.is_insecure("[::1]:5000")
    assert cfg.is_insecure("10.1.2.3:443") and cfg.is_insecure("myreg:5000")
    assert cfg.is_insecure("plain.example:5000")
    assert not cfg.is_insecure("myreg:5001")
    assert not RegistryConfig().is_insecure("192.168.1.1:5000")
    eps = cfg.endpoints("127.0.0.1:5000")
    assert [e.url for e in eps] == ["https://127.0.0.1:5000", "http://127.0.0.1:5000"]
    assert eps[0].verify is False
    eps = RegistryConfig().endpoints("ghcr.io")
    assert [e.url for e in eps] == ["https://ghcr.io"] and eps[0].verify is True
    eps = RegistryConfig(mirrors=["http://127.0.0.1:1"]).endpoints("docker.io")
    assert [e.url for e in eps] == ["http://127.0.0.1:1", "https://registry-1.docker.io"]
    assert eps[0].mirror and not eps[1].mirror
    assert [e.url for e in RegistryConfig(mirrors=["http://m:1"]).endpoints(
        "docker.io", push=True)] == ["https://registry-1.docker.io"]
    with pytest.raises(InvalidArgument):
        RegistryConfig(mirrors=["mirror.example"])
    with pytest.raises(InvalidArgument):
        RegistryConfig(insecure_registries=["http://x"])


def test_certs_d(tmp_path):
    d = tmp_path / "certs.d" / "reg.example:5000"
    d.mkdir(parents=True)
    (d / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (d / "client.cert").write_text("c")
    (d / "client.key").write_text("k")
    cfg = RegistryConfig(certs_dir=tmp_path / "certs.d")
    verify, cert = cfg.tls_for("reg.example:5000")
    assert isinstance(verify, str) and "MIIB" in Path(verify).read_text()
    assert cert == (str(d / "client.cert"), str(d / "client.key"))
    assert cfg.tls_for("other:1") == (True, None)


def test_credentials_files(isolated_config, monkeypatch):
    dc = isolated_config / "docker-config"
    dc.mkdir()
    auth = base64.b64encode(b"carol:pw:with:colons").decode()
    (dc / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:hubpw").decode()},
        "http://127.0.0.1:5000/v2/": {"auth": auth},
        "tok.example": {"identitytoken": "IDT"}}}))
    assert credentials.lookup("docker.io") == {
        "username": "hub", "password": "hubpw", "serveraddress": "https://index.docker.io/v1/"}
    assert credentials.lookup("registry-1.docker.io")["username"] == "hub"
    got = credentials.lookup("127.0.0.1:5000")
    assert (got["username"], got["password"]) == ("carol", "pw:with:colons")
    assert credentials.lookup("tok.example")["identitytoken"] == "IDT"
    assert credentials.lookup("nowhere:1") is None
    # Sampan's own file wins, and login/logout write it
    path = credentials.store("127.0.0.1:5000", "dave", "pw2")
    assert path == isolated_config / "sampan-config" / "config.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert credentials.lookup("127.0.0.1:5000")["username"] == "dave"
    credentials.store("docker.io", "hubby", "x")
    assert "https://index.docker.io/v1/" in json.loads(path.read_text())["auths"]
    assert credentials.erase("127.0.0.1:5000")
    assert credentials.lookup("127.0.0.1:5000")["username"] == "carol"
    assert not credentials.erase("127.0.0.1:5000")
    (dc / "config.json").write_text("{not json")
    with pytest.raises(InvalidArgument):
        credentials.lookup("x:1")


def test_credential_helper(isolated_config, monkeypatch, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-fake"
    helper.write_text('#!/bin/sh\nread s\necho "{\\"ServerURL\\":\\"$s\\",'
                      '\\"Username\\":\\"hlp\\",\\"Secret\\":\\"sec\\"}"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    dc = isolated_config / "docker-config"
    dc.mkdir()
    (dc / "config.json").write_text(json.dumps({"credHelpers": {"reg.example": "fake"}}))
    got = credentials.lookup("reg.example")
    assert (got["username"], got["password"]) == ("hlp", "sec")


# ---- TLS + Basic ----------------------------------------------------------------------------

def test_basic_auth_over_tls(graph, basic_registry, basic_image, certs_dir, monkeypatch):
    """Verified TLS with the CA from certs.d (loopback made to look remote: 127.0.0.0/8 is
    insecure by default, which skips verification as in Docker)."""
    monkeypatch.setattr(rconfig, "LOOPBACK_NETS", ())
    svc = make_service(graph, certs=certs_dir)
    assert svc.config.endpoints(basic_registry.host)[0].verify not in (True, False)
    name = f"{basic_registry.host}/auth/img:1"
    assert svc.pull(name, auth=ALICE) == basic_image.id
    # credentials from the docker config file
    svc2 = make_service(graph, certs=certs_dir)
    with pytest.raises(Unauthorized) as e:
        svc2.pull(name)
    assert "authentication required" in str(e.value)
    credentials.store(basic_registry.host, "bob", "builder")
    assert svc2.pull(name) == basic_image.id


def test_basic_wrong_password(graph, basic_registry, basic_image, certs_dir):
    svc = make_service(graph, certs=certs_dir)
    with pytest.raises(Unauthorized) as e:
        svc.pull(f"{basic_registry.host}/auth/img:1",
                 auth={"username": "alice", "password": "nope"})
    assert e.value.status == 401
    assert "unauthorized" in str(e.value)
    with pytest.raises(SampanError):
        graph.resolve(f"{basic_registry.host}/auth/img:1")
    with pytest.raises(Unauthorized) as e:
        svc.login({"username": "alice", "password": "nope",
                   "serveraddress": basic_registry.host})
    assert str(e.value) == (f"login attempt to https://{basic_registry.host}/v2/ failed with "
                            "status: 401 Unauthorized")
    assert svc.login(dict(ALICE, serveraddress=f"https://{basic_registry.host}"))[
        "Status"] == "Login Succeeded"


def test_tls_unknown_ca(graph, basic_registry, basic_image, tmp_path, monkeypatch):
    """Without the CA (and not configured insecure) the registry is refused; 127.0.0.1 is
    insecure by default, so make it look secure by naming it as a non-loopback host."""
    monkeypatch.setattr(rconfig, "LOOPBACK_NETS", ())
    svc = make_service(graph, certs=tmp_path / "empty")
    with pytest.raises(RegistryError) as e:
        svc.pull(f"{basic_registry.host}/auth/img:1", auth=ALICE)
    assert "certificate" in str(e.value)
    # configured insecure: TLS without verification
    svc = make_service(graph, certs=tmp_path / "empty",
                       insecure_registries=[basic_registry.host])
    assert svc.pull(f"{basic_registry.host}/auth/img:1", auth=ALICE) == basic_image.id


def test_loopback_insecure_by_default(graph, basic_registry, basic_image, tmp_path):
    svc = make_service(graph, certs=tmp_path / "empty")
    assert svc.pull(f"{basic_registry.host}/auth/img:1", auth=ALICE) == basic_image.id


def test_plain_http_fallback(graph, plain_registry):
    im = Image([random_layer(100)])
    Uploader(plain_registry.url).image("fallback/x", "1", im)
    assert make_service(graph).pull(f"{plain_registry.host}/fallback/x:1") == im.id
    # the same host, not insecure: no plain HTTP
    svc = make_service(graph)
    svc.config.is_insecure = lambda host: False
    with pytest.raises(RegistryError):
        svc.pull(f"{plain_registry.host}/fallback/x:1")


# ---- token auth ---------------------------------------------------------------------------

def test_token_anonymous_and_credentials(graph, token_registry, token_server, token_images):
    pub, priv = token_images
    svc = make_service(graph)
    token_server.requests.clear()
    assert svc.pull(f"{token_registry.host}/public/img:1") == pub.id
    reqs = token_server.requests
    assert reqs and reqs[0]["user"] is None and reqs[0]["service"] == SERVICE
    assert reqs[0]["scopes"] == ["repository:public/img:pull"]
    # one token for the whole pull (cached per scope)
    assert len(reqs) == 1
    with pytest.raises(Unauthorized) as e:
        svc.pull(f"{token_registry.host}/private/img:1")
    assert str(e.value).startswith("pull access denied for "
                                   f"{token_registry.host}/private/img, repository does not "
                                   "exist or may require 'docker login'")
    token_server.requests.clear()
    assert svc.pull(f"{token_registry.host}/private/img:1", auth=ALICE) == priv.id
    assert token_server.requests[0]["user"] == "alice"
    assert token_server.requests[0]["authorization"].startswith("Basic ")


def test_token_wrong_password(graph, token_registry, token_images):
    svc = make_service(graph)
    with pytest.raises(Unauthorized) as e:
        svc.pull(f"{token_registry.host}/private/img:1",
                 auth={"username": "alice", "password": "bad"})
    assert "incorrect username or password" in str(e.value)
    with pytest.raises(Unauthorized):
        svc.login({"username": "alice", "password": "bad",
                   "serveraddress": token_registry.host})
    assert svc.login(dict(ALICE, serveraddress=token_registry.host))[
        "Status"] == "Login Succeeded"


def test_token_refreshed_on_expiry_and_401(graph, token_registry, token_server, token_images):
    svc = make_service(graph)
    name = f"{token_registry.host}/public/img:1"
    svc.pull(name)
    n = len(token_server.requests)
    svc.pull(name)
    assert len(token_server.requests) == n             # cached
    for key in list(svc.tokens._tokens):                 # expire them
        svc.tokens._tokens[key].expires = time.time()
    svc.pull(name)
    assert len(token_server.requests) == n + 1
    # a token the registry refuses (say, revoked) is replaced after the 401
    for tok in svc.tokens._tokens.values():
        tok.value = "not-a-jwt"
    svc.pull(name)
    assert len(token_server.requests) == n + 2


def test_identity_token(graph, token_registry, token_server, token_images):
    _, priv = token_images
    import requests
    r = requests.post(token_server.url, data={"grant_type": "password", "username": "alice",
                                              "password": "wonderland", "service": SERVICE})
    rt = r.json()["refresh_token"]
    svc = make_service(graph)
    assert svc.pull(f"{token_registry.host}/private/img:1",
                    auth={"identitytoken": rt}) == priv.id
    assert any(x.get("grant") == "refresh_token" for x in token_server.requests)


# ---- redirects ----------------------------------------------------------------------------

def test_no_authorization_to_redirect_host(graph, basic_registry, basic_image, proxy_for):
    """Blob downloads redirected to another host get no Authorization header."""
    p = proxy_for(basic_registry)
    bh = BlobHost(basic_registry)
    try:
        p.add(Fault("redirect", r"/blobs/sha256:", times=None, location=bh.url))
        svc = make_service(graph)
        rec = Recorder()
        assert svc.pull(f"{p.host}/auth/img:1", auth=ALICE, progress=rec) == basic_image.id
        assert len(bh.requests) >= 2
        for r in bh.requests:
            assert not any(k.lower() == "authorization" for k in r["headers"])
        manifest_reqs = [h for (m, path, h) in p.log if "/manifests/" in path]
        assert all(h.get("Authorization", "").startswith("Basic ") for h in manifest_reqs)
    finally:
        bh.close()


# ---- mirrors ------------------------------------------------------------------------------

def test_mirror_first_then_fallback(graph, plain_registry, monkeypatch):
    """docker.io pulls go to the mirrors first; a dead mirror is skipped. Docker Hub itself
    is replaced by a closed loopback port so that nothing leaves the machine."""
    monkeypatch.setattr(rconfig, "DEFAULT_REGISTRY_HOST", "127.0.0.1:9")
    im = Image([random_layer(100, "mirrored")])
    Uploader(plain_registry.url).image("library/mirrored", "latest", im)
    svc = make_service(graph, mirrors=["http://127.0.0.1:9", plain_registry.url])
    rec = Recorder()
    assert svc.pull("mirrored", progress=rec) == im.id
    assert graph.resolve("mirrored:latest") == im.id
    assert rec.messages[0] == {"status": "Pulling from library/mirrored", "id": "latest"}
    assert rec.messages[-1] == {"status": "Status: Downloaded newer image for mirrored:latest"}
    # not on the mirror: falls back to "Docker Hub" (here a closed port) and says why
    with pytest.raises((RegistryError, NotFound)):
        svc.pull("not-mirrored")
