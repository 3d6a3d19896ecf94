# ruff: noqa: F811 - pytest fixtures imported from registries.py
"""All tags of a repository: `pull -a` (the registry's tags list, paginated) and push without a
tag (every local tag), against the real docker-registry."""

import json
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from registries import (  # noqa: F401 - fixtures
    Image,
    Recorder,
    Uploader,
    busybox_layer,
    graph,
    isolated_config,
    make_service,
    plain_registry,
    random_layer,
    reg_tmp,
)
from sampan.errors import InvalidArgument, NotFound
from sampan.reference import parse

pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture(scope="module")
def tagged(plain_registry):
    """alltags/src: tags 1 and latest name image a, tag 2 names image b (they share a layer)."""
    base = busybox_layer()
    a = Image([base, random_layer(50_000, "a")])
    b = Image([base, random_layer(60_000, "b")])
    up = Uploader(plain_registry.url)
    up.image("alltags/src", "1", a)
    up.image("alltags/src", "latest", a)
    up.image("alltags/src", "2", b)
    return {"1": a, "latest": a, "2": b}


def registry_order(reg, repo):
    with urllib.request.urlopen(f"{reg.url}/v2/{repo}/tags/list") as resp:
        return json.load(resp)["tags"] or []


def registry_tags(reg, repo):
    return sorted(registry_order(reg, repo))


def test_tags_list(plain_registry, tagged, graph):
    from sampan.registry.client import Registry, Repository
    svc = make_service(graph)
    ep = next(e for e in svc.config.endpoints(plain_registry.host)
              if e.url == plain_registry.url)
    reg = Registry(ep, svc.config, None, svc.tokens)
    try:
        assert sorted(Repository(reg, "alltags/src").tags()) == ["1", "2", "latest"]
        with pytest.raises(NotFound):
            Repository(reg, "alltags/nosuch").tags()
    finally:
        reg.close()


class _Pages(BaseHTTPRequestHandler):
    """A registry's tags list in pages of `n`, linked by `Link: <…>; rel="next"` as Docker Hub
    and distribution 3 do (Debian's distribution 2.8 ignores `n` and sends one page)."""

    TAGS = [f"t{i:02d}" for i in range(7)]

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/v2/":
            return self._send(200, {})
        if url.path != "/v2/paged/repo/tags/list":
            return self._send(404, {"errors": [{"code": "NAME_UNKNOWN",
                                                "message": "repository name not known"}]})
        q = urllib.parse.parse_qs(url.query)
        n = int(q.get("n", ["100"])[0])
        last = q.get("last", [""])[0]
        rest = [t for t in self.TAGS if t > last]
        page, more = rest[:n], rest[n:]
        link = None
        if more:
            link = f'</v2/paged/repo/tags/list?last={page[-1]}&n={n}>; rel="next"'
        self._send(200, {"name": "paged/repo", "tags": page}, link)

    def _send(self, status, doc, link=None):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if link:
            self.send_header("Link", link)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_tags_list_follows_link_pages(graph):
    from sampan.registry.client import Registry, Repository
    from sampan.registry.config import RegistryConfig
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        host = f"127.0.0.1:{srv.server_port}"
        cfg = RegistryConfig(insecure_registries=[host])
        ep = next(e for e in cfg.endpoints(host) if e.url.startswith("http://"))
        reg = Registry(ep, cfg, None)
        try:
            assert Repository(reg, "paged/repo").tags(page_size=3) == _Pages.TAGS
            assert Repository(reg, "paged/repo").tags() == _Pages.TAGS
        finally:
            reg.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_next_link():
    from sampan.registry.client import _next_link
    assert _next_link('</v2/x/tags/list?n=2&last=b>; rel="next"') == "/v2/x/tags/list?n=2&last=b"
    assert _next_link('<https://a/prev>; rel="prev", <https://a/next>; rel=next') == \
        "https://a/next"
    assert _next_link("") is None
    assert _next_link('<https://a/x>; rel="last"') is None


def test_pull_all_tags(graph, plain_registry, tagged):
    svc = make_service(graph)
    name = f"{plain_registry.host}/alltags/src"
    rec = Recorder()
    ids = svc.pull_all_tags(name, progress=rec)
    order = registry_order(plain_registry, "alltags/src")    # the registry's order, kept
    assert sorted(order) == ["1", "2", "latest"]
    assert ids == [tagged[t].id for t in order]
    for t, im in tagged.items():
        assert graph.resolve(f"{name}:{t}") == im.id
    plain = [m for m in rec.messages if "progressDetail" not in m]
    assert [m for m in plain if m["status"] == "Pulling from alltags/src"] == [
        {"status": "Pulling from alltags/src", "id": t} for t in order]
    assert [m["status"] for m in plain if m["status"].startswith("Digest: ")] == [
        f"Digest: {tagged[t].digest}" for t in order]
    # one Status for the repository, at the end, as dockerd writes it
    statuses = [m["status"] for m in plain if m["status"].startswith("Status: ")]
    assert statuses == [f"Status: Downloaded newer image for {name}"]
    assert rec.messages[-1] == {"status": statuses[0]}
    # the shared layer was fetched once; the second tag of image a found everything there
    assert sum(m.get("status") == "Pull complete" for m in rec.messages) == 3
    rec = Recorder()
    assert svc.pull_all_tags(name, progress=rec) == ids
    assert rec.messages[-1] == {"status": f"Status: Image is up to date for {name}"}


def test_pull_all_tags_bad_input(graph, plain_registry, tagged):
    svc = make_service(graph)
    with pytest.raises(InvalidArgument, match="tag can't be used with --all-tags/-a"):
        svc.pull_all_tags(f"{plain_registry.host}/alltags/src:1")
    with pytest.raises(NotFound, match="repository .*alltags/nosuch not found"):
        svc.pull_all_tags(f"{plain_registry.host}/alltags/nosuch")
    assert graph.list(all=True) == []


def test_push_without_a_tag_pushes_every_tag(graph, plain_registry, tagged):
    svc = make_service(graph)
    src = f"{plain_registry.host}/alltags/src"
    svc.pull(f"{src}:1")
    svc.pull(f"{src}:2")
    dst = f"{plain_registry.host}/alltags/dst"
    graph.tag(f"{src}:1", parse(f"{dst}:v1"))
    graph.tag(f"{src}:2", parse(f"{dst}:v2"))
    graph.tag(f"{src}:2", parse(f"{dst}:latest"))
    graph.tag(f"{src}:1", parse(f"{plain_registry.host}/alltags/other:x"))   # not this repo
    rec = Recorder()
    digest = svc.push(dst, progress=rec)
    assert registry_tags(plain_registry, "alltags/dst") == ["latest", "v1", "v2"]
    assert registry_tags(plain_registry, "alltags/src") == ["1", "2", "latest"]
    refers = [m for m in rec.messages if m.get("status", "").startswith("The push refers")]
    assert refers == [{"status": f"The push refers to repository [{dst}]"}]
    aux = [m["aux"] for m in rec.messages if "aux" in m]
    # lexical order of the local references, as dockerd
    assert [(a["Tag"], a["Digest"]) for a in aux] == [
        ("latest", tagged["2"].digest), ("v1", tagged["1"].digest), ("v2", tagged["2"].digest)]
    assert digest == tagged["2"].digest
    done = [m["status"] for m in rec.messages if ": digest: " in m.get("status", "")]
    assert done == [f"{a['Tag']}: digest: {a['Digest']} size: {a['Size']}" for a in aux]
    # a tagged push still pushes that tag only
    rec = Recorder()
    graph.tag(f"{src}:1", parse(f"{plain_registry.host}/alltags/one:a"))
    graph.tag(f"{src}:1", parse(f"{plain_registry.host}/alltags/one:b"))
    svc.push(f"{plain_registry.host}/alltags/one:b", progress=rec)
    assert registry_tags(plain_registry, "alltags/one") == ["b"]


def test_push_all_tags_nothing_local(graph, plain_registry):
    svc = make_service(graph)
    with pytest.raises(NotFound, match="An image does not exist locally with the tag: "
                                       f"{plain_registry.host}/alltags/none$"):
        svc.push(f"{plain_registry.host}/alltags/none")
