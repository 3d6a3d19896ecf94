"""Fixtures shared by the image tests (graph, unpack, storage drivers, registry, daemon).

- `data_root`: a fresh, empty data root for one test (on the same ext4 as /tmp).
- `make_graph(driver=None, root=None)`: a `sampan.graph.Graph`, closed after the test.
- `graph`: `make_graph()` with the default driver (overlay here).
- `outside`: a host directory that hostile layers aim at; it must stay as it was.
- `put_image(graph, image, ref=None)`: store an `imagebuild.Image` the way a pull does
  (blobs, layers, image); returns the image id.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def make_graph(data_root):
    from sampan.graph import Graph

    made = []

    def make(driver=None, root=None, **kw):
        g = Graph(root or data_root, driver, **kw)
        made.append(g)
        return g

    yield make
    for g in made:
        if g.closed:
            continue
        for row in g.db.query("SELECT id FROM containers"):
            g.release(row["id"], remove=True)
        g.close()


@pytest.fixture
def graph(make_graph):
    return make_graph()


@pytest.fixture
def outside(tmp_path):
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text("do not touch\n")
    return d


def put_image(graph, image, ref=None, lease=None):
    """Store an imagebuild.Image like a pull: blobs, then layers, then the image."""
    with graph.lease() as held:
        for digest, data in image.blobs().items():
            graph.lease_add(held, digest)
            graph.store.put(data, digest)
        parent = None
        for la in image.layers:
            info = graph.apply_layer(parent, io.BytesIO(la.data), la.media_type, la.diff_id,
                                     lease=held, digest=la.digest)
            parent = info.chain_id
        return graph.add_image(image.config.digest, image.manifest.digest, ref,
                               image.manifest.media_type)


@pytest.fixture(name="put_image")
def put_image_fixture():
    return put_image
