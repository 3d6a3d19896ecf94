"""Image endpoints over raw HTTP, against the fake image service (tests/daemon/fake_images.py)."""

from __future__ import annotations

import base64
import io
import json
import socket
import tarfile
import threading
import time
from urllib.parse import quote

import pytest


def _auth(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).decode()


def _lines(data: bytes) -> list[dict]:
    assert data.endswith(b"\r\n")
    return [json.loads(x) for x in data.split(b"\r\n") if x.strip()]


def test_list_images(shared_daemon):
    st, imgs = shared_daemon.json("GET", "/v1.45/images/json")
    assert st == 200
    tags = sorted(t for i in imgs for t in i["RepoTags"])
    assert tags == ["busybox:latest", "localhost:5000/team/app:1.0"]
    created = [i["Created"] for i in imgs]
    assert created == sorted(created, reverse=True)
    for i in imgs:
        for key in ("Id", "ParentId", "RepoTags", "RepoDigests", "Created", "Size",
                    "SharedSize", "Labels", "Containers"):
            assert key in i


@pytest.mark.parametrize("filters,expect", [
    ({"dangling": {"true": True}}, []),
    ({"dangling": ["false"]}, ["busybox:latest", "localhost:5000/team/app:1.0"]),
    ({"reference": {"busybox": True}}, ["busybox:latest"]),
    ({"label": ["tier"]}, ["localhost:5000/team/app:1.0"]),
])
def test_list_filters(shared_daemon, filters, expect):
    q = quote(json.dumps(filters))
    st, imgs = shared_daemon.json("GET", f"/images/json?filters={q}")
    assert st == 200
    assert sorted(t for i in imgs for t in i["RepoTags"]) == expect


def test_fields_follow_the_api_version(shared_daemon):
    _, old = shared_daemon.json("GET", "/v1.43/images/json")
    _, new = shared_daemon.json("GET", "/v1.44/images/json")
    assert all(i["VirtualSize"] == i["Size"] for i in old)
    assert all("VirtualSize" not in i for i in new)


def test_dangling_filter_finds_untagged(shared_daemon):
    q = quote(json.dumps({"dangling": ["true"]}))
    st, imgs = shared_daemon.json("GET", f"/images/json?all=1&filters={q}")
    assert st == 200 and len(imgs) == 1 and imgs[0]["RepoTags"] == []


def test_names_with_slashes_and_ports(shared_daemon):
    for path in ("/images/localhost:5000/team/app:1.0/json",
                 "/v1.45/images/localhost:5000/team/app:1.0/json",
                 "/images/localhost%3A5000%2Fteam%2Fapp%3A1.0/json"):
        st, img = shared_daemon.json("GET", path)
        assert st == 200, path
        assert img["RepoTags"] == ["localhost:5000/team/app:1.0"]
    st, hist = shared_daemon.json("GET", "/images/localhost:5000/team/app:1.0/history")
    assert st == 200 and hist[0]["CreatedBy"].startswith("/bin/sh")
    st, img = shared_daemon.json("GET", "/images/busybox/json")
    iid = img["Id"]
    for name in (iid, iid[7:], iid[7:19]):
        st, got = shared_daemon.json("GET", f"/images/{name}/json")
        assert st == 200 and got["Id"] == iid


def test_not_found_message(shared_daemon):
    st, body = shared_daemon.json("GET", "/images/nosuch:1/json")
    assert st == 404 and body["message"] == "No such image: nosuch:1"


def test_tag_and_delete(daemon):
    st, _, body = daemon.request("POST", "/images/busybox/tag?repo=localhost:5000/copy&tag=v2")
    assert st == 201 and body == b""
    st, img = daemon.json("GET", "/images/localhost:5000/copy:v2/json")
    assert st == 200 and "busybox:latest" in img["RepoTags"]
    # two tags: deleting the image by id needs force
    st, body = daemon.json("DELETE", f"/images/{img['Id'][7:19]}")
    assert st == 409 and "must be forced" in body["message"]
    st, body = daemon.json("DELETE", "/images/localhost:5000/copy:v2")
    assert st == 200 and body == [{"Untagged": "localhost:5000/copy:v2"}]
    st, body = daemon.json("DELETE", "/images/busybox?force=1&noprune=0")
    assert st == 200 and body[-1]["Deleted"] == img["Id"]
    assert daemon.json("GET", "/images/busybox/json")[0] == 404


def test_prune(daemon):
    q = quote(json.dumps({"dangling": {"true": True}}))
    st, body = daemon.json("POST", f"/images/prune?filters={q}")
    assert st == 200 and len(body["ImagesDeleted"]) == 1 and body["SpaceReclaimed"] == 2000
    st, body = daemon.json("POST", "/images/prune")
    assert st == 200 and body["ImagesDeleted"] is None and body["SpaceReclaimed"] == 0
    st, body = daemon.json("POST", f"/images/prune?filters={quote(json.dumps({'x': ['1']}))}")
    assert st == 400


def test_pull_streams_progress(daemon):
    st, h, data = daemon.request("POST", "/v1.45/images/create?fromImage=alpine&tag=3.19",
                                 headers={"X-Registry-Auth": _auth({})})
    assert st == 200
    assert h["Content-Type"] == "application/json"
    assert h["Transfer-Encoding"] == "chunked"
    msgs = _lines(data)
    assert msgs[0] == {"status": "Pulling from alpine", "id": "3.19"}
    assert {"status": "Pulling fs layer", "progressDetail": {}, "id": "aaaaaaaaaaaa"} in msgs
    assert msgs[-1]["status"] == "Status: Downloaded newer image for alpine:3.19"
    assert daemon.json("GET", "/images/alpine:3.19/json")[0] == 200


def test_pull_digest_and_platform(daemon):
    digest = "sha256:" + "b" * 64
    st, _, data = daemon.request("POST", f"/images/create?fromImage=alpine&tag={digest}&"
                                         "platform=linux/arm64")
    assert st == 200
    assert _lines(data)[-1]["status"].endswith(f"alpine@{digest}")
    st, _, data = daemon.request("POST", "/images/create?fromImage=alpine:3&platform=windows")
    assert st == 400 and "no matching manifest" in json.loads(data)["message"]


def test_pull_errors_before_progress_are_http_errors(daemon):
    st, _, data = daemon.request("POST", "/images/create?fromImage=private/x&tag=1")
    assert st == 401 and "pull access denied" in json.loads(data)["message"]
    st, _, data = daemon.request("POST", "/images/create?fromImage=missing/x&tag=1")
    assert st == 404 and "manifest unknown" in json.loads(data)["message"]
    # credentials in X-Registry-Auth reach the service
    st, _, data = daemon.request("POST", "/images/create?fromImage=private/x&tag=1",
                                 headers={"X-Registry-Auth": _auth({"username": "alice",
                                                                    "password": "secret"})})
    assert st == 200


def test_pull_error_mid_stream_is_an_error_line(daemon):
    st, _, data = daemon.request("POST", "/images/create?fromImage=broken/x&tag=1")
    assert st == 200
    last = _lines(data)[-1]
    assert last["error"] == "failed to register layer: broken layer"
    assert last["errorDetail"]["message"] == last["error"]
    assert daemon.request("GET", "/_ping")[0] == 200


def test_pull_all_tags_not_supported(daemon):
    st, _, data = daemon.request("POST", "/images/create?fromImage=alpine")
    assert st == 501 and "all tags" in json.loads(data)["message"]


def test_pull_client_disconnect_and_concurrency(daemon):
    # a client that goes away mid-pull
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(daemon.sock))
    s.sendall(b"POST /images/create?fromImage=slow/a&tag=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.close()
    # other requests, and two pulls at once, go on meanwhile
    results = []

    def pull(name):
        results.append(daemon.request("POST", f"/images/create?fromImage={name}&tag=1")[0])

    threads = [threading.Thread(target=pull, args=(n,)) for n in ("slow/b", "slow/c")]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    assert daemon.request("GET", "/_ping")[0] == 200
    assert time.monotonic() - t0 < 1.0
    for t in threads:
        t.join(30)
    assert results == [200, 200]
    time.sleep(2.5)  # the abandoned pull stops at its next progress message
    assert daemon.threads() == 1
    assert daemon.json("GET", "/images/slow/a:1/json")[0] == 404


def test_push(daemon):
    st, _, data = daemon.request("POST", "/images/localhost:5000/team/app/push?tag=1.0",
                                 headers={"X-Registry-Auth": _auth({"username": "u"})})
    assert st == 200
    msgs = _lines(data)
    assert msgs[0]["status"] == "The push refers to repository [localhost:5000/team/app]"
    assert msgs[-1]["aux"]["Tag"] == "1.0"
    st, _, data = daemon.request("POST", "/images/nosuch/push?tag=1")
    assert st == 404


def test_auth(shared_daemon):
    st, body = shared_daemon.json("POST", "/auth", {"username": "alice", "password": "secret",
                                                    "serveraddress": "localhost:5000"})
    assert st == 200 and body == {"Status": "Login Succeeded", "IdentityToken": ""}
    legacy = base64.b64encode(b"alice:secret").decode()
    st, body = shared_daemon.json("POST", "/auth", {"auth": legacy})
    assert st == 200
    st, body = shared_daemon.json("POST", "/auth", {"username": "alice", "password": "no"})
    assert st == 401 and "incorrect username or password" in body["message"]


def _tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getnames()


def test_save_and_load(daemon):
    st, h, data = daemon.request("GET", "/images/get?names=busybox&names=localhost:5000/team/"
                                        "app:1.0")
    assert st == 200 and h["Content-Type"] == "application/x-tar"
    assert "manifest.json" in _tar_names(data) and len(data) > 300 * 1024
    st, h, one = daemon.request("GET", "/images/busybox/get")
    assert st == 200 and "manifest.json" in _tar_names(one)
    st, _, err = daemon.request("GET", "/images/get?names=busybox&names=nosuch")
    assert st == 404 and "No such image" in json.loads(err)["message"]
    # load: retag busybox as something else through the archive
    daemon.request("DELETE", "/images/busybox?force=1")
    st, h, out = daemon.request("POST", "/images/load?quiet=0", body=one,
                                headers={"Content-Type": "application/x-tar"})
    assert st == 200 and h["Content-Type"] == "application/json"
    assert _lines(out) == [{"stream": "Loaded image: busybox:latest\n"}]
    assert daemon.json("GET", "/images/busybox/json")[0] == 200


def test_load_chunked_and_bad_archive(daemon):
    st, _, one = daemon.request("GET", "/images/busybox/get")
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(one[i:i + 7000]), one[i:i + 7000])
                      for i in range(0, len(one), 7000)) + b"0\r\n\r\n"
    out = daemon.raw(b"POST /images/load HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    assert out.startswith(b"HTTP/1.1 200") and b"Loaded image: busybox:latest" in out
    st, _, err = daemon.request("POST", "/images/load", body=b"this is not a tar" * 100)
    assert st == 400 and "invalid archive" in json.loads(err)["message"]
    assert daemon.request("GET", "/_ping")[0] == 200


def test_system_df(shared_daemon):
    st, df = shared_daemon.json("GET", "/system/df")
    assert st == 200
    assert len(df["Images"]) == 3 and df["Containers"] == [] and df["Volumes"] == []
    assert df["LayersSize"] == sum(i["Size"] for i in df["Images"])
