"""Crash safety of the image store through sampand, for real: the daemon is killed with SIGKILL in
the middle of a pull (at a few random points), of an `rmi` and of a `load`, then restarted on the
same data root. Each restart must leave a consistent store (`Graph.check()` on the store exactly
as the restarted daemon left it, no temporary or unrecorded layer directories, every blob
matching its digest, no image listed for the interrupted operation), and the next pull must
resume (Range requests, fewer bytes than the whole image) and give an image whose content runs.

A local docker-registry (tests/images/registries.py) serves the images through the fault proxy,
which slows blob downloads down so that a pull lasts a few seconds. Set SAMPAN_CRASH_SEED to
replay the random kill points of a failed run (the seed is printed).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

IMAGES_TESTS = Path(__file__).resolve().parents[1] / "images"
if str(IMAGES_TESTS) not in sys.path:
    sys.path.insert(0, str(IMAGES_TESTS))

try:
    import sampan.graph
    import sampan.images  # noqa: F401
    from registries import (  # noqa: F401 - fixtures
        Fault,
        FaultProxy,
        Image,
        Uploader,
        _tar,
        busybox_layer,
        plain_registry,
        random_layer,
        reg_tmp,
        sha,
    )
except ImportError as e:  # the graph or registry parts are not there yet
    pytest.skip(f"the real image service is not available: {e}", allow_module_level=True)

from daemonlib import Daemon, _pythonpath
from sampan.client import Client

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (layers keep ownership)")

MiB = 1 << 20
LAYER_SIZE = 8 * MiB          # four of them: ~32 MiB of incompressible layer data
LAYERS = 4
SLOW_PIECE = 96 * 1024        # the proxy sends blobs in pieces of this size, 20 ms apart
KILLS = 3
SEED = int(os.environ.get("SAMPAN_CRASH_SEED") or time.time_ns() % 1_000_000)

# Runs in a separate process on a stopped daemon's data root: opens the graph WITHOUT its
# start-up recovery (so that what is checked is the store exactly as the restarted daemon left
# it), reports Graph.check(), leftovers, images, layers, blobs (re-hashed), ingests and, for the
# chains asked, the files of the layer directories; with a `run` image, lays out its rootfs
# (Graph.prepare) and runs busybox in it to hash the data files.
INSPECT = r"""
import hashlib, json, os, subprocess, sys
from pathlib import Path
from sampan.graph import Graph

root, driver, want = Path(sys.argv[1]), sys.argv[2] or None, json.loads(sys.argv[3])

class AsLeft(Graph):
    def _recover(self):
        pass

def digest_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()

out = {"leftovers": sorted(e.name for e in os.scandir(root / "snapshots")
                           if e.name.startswith("."))}
g = AsLeft(root, driver=driver)
try:
    out["driver"] = g.driver_name
    out["problems"] = g.check()
    out["images"] = sorted(i["Id"] for i in g.list(all=True))
    out["tags"] = sorted(t for i in g.list(all=True) for t in i["RepoTags"])
    out["layers"] = sorted(r["chain_id"] for r in g.db.query("SELECT chain_id FROM layers"))
    out["blobs"] = sorted(d for d, _ in g.store.blobs())
    out["bad_blobs"] = [d for d in out["blobs"] if d.startswith("sha256:")
                        and digest_of(g.store.path(d)) != d]
    out["ingests"] = [{"ref": i["ref"], "offset": i["offset"]} for i in g.store.ingests()]
    files = {}
    for chain in want.get("chains", []):
        if chain in out["layers"]:
            fs = g.snapshots / chain.split(":", 1)[1] / "fs"
            files[chain] = {str(p.relative_to(fs)): digest_of(p)
                            for p in fs.rglob("*") if p.is_file() and not p.is_symlink()
                            and "data" in p.parts}
    out["files"] = files
    if want.get("run"):
        ctr = root / "crash-test-container"
        rootfs = g.prepare(want["run"], "crash-test", ctr)
        try:
            r = subprocess.run(["chroot", str(rootfs), "/bin/busybox", "sh", "-c",
                                "cd /data && /bin/busybox sha256sum *"],
                               capture_output=True, text=True, timeout=60)
            out["run"] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
        finally:
            g.release("crash-test", remove=True)
finally:
    g.close()
print(json.dumps(out))
"""


def inspect(data_root: Path, driver: str | None = None, chains=(), run: str | None = None):
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    r = subprocess.run([sys.executable, "-c", INSPECT, str(data_root), driver or "",
                        json.dumps({"chains": list(chains), "run": run})],
                       check=False, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def assert_consistent(state: dict) -> None:
    assert state["leftovers"] == [], state["leftovers"]
    assert state["problems"] == [], state["problems"]
    assert state["bad_blobs"] == [], state["bad_blobs"]


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else sha(f"{out[-1]} {d}".encode()))
    return out


def kill9(d: Daemon) -> None:
    assert d.proc is not None and d.proc.poll() is None, "sampand already ended\n" + d.log()
    os.kill(d.pid, signal.SIGKILL)
    d.proc.wait()
    d.stop()            # forget the process


def restart(d: Daemon, *args: str) -> Client:
    d.start(*args)
    c = Client(d.host, timeout=120)
    c.images()          # opens the graph: its start-up recovery runs now
    return c


# --------------------------------------------------------------------------- fixtures


class BigImage:
    """busybox + LAYERS layers of LAYER_SIZE random bytes each (files data/layerN)."""

    def __init__(self):
        self.data = [os.urandom(LAYER_SIZE) for _ in range(LAYERS)]
        tars = [busybox_layer()] + [_tar({f"data/layer{i}": b}) for i, b in enumerate(self.data)]
        self.image = Image(tars)
        self.id = self.image.id
        self.diff_ids = [sha(t) for t in tars]
        self.chains = chain_ids(self.diff_ids)
        self.layer_digests = self.image.layer_digests
        self.sizes = {d: len(self.image.blobs[d]) for d in self.layer_digests}
        self.total = sum(self.sizes.values())
        self.file_digests = {f"data/layer{i}": sha(b) for i, b in enumerate(self.data)}


@pytest.fixture(scope="module")
def big(plain_registry):
    im = BigImage()
    Uploader(plain_registry.url).image("crash/big", "1", im.image)
    return im


@pytest.fixture
def slow_proxy(plain_registry):
    p = FaultProxy(plain_registry.url)
    p.add(Fault("slow", r"/blobs/sha256:", "GET", times=None, after=SLOW_PIECE))
    yield p
    p.close()


@pytest.fixture
def sampand(tmp_path):
    made: list[Daemon] = []

    def make(name: str) -> Daemon:
        root = tmp_path / name
        root.mkdir()
        d = Daemon(root, fake=False)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


# --------------------------------------------------------------------------- pull


class PullWatch:
    """A pull through the daemon's API in a thread; follows its progress messages."""

    def __init__(self, host: str, name: str, tag: str):
        self.messages: list[dict] = []
        self.downloaded: dict[str, int] = {}     # layer id → bytes it has (incl. resumed)
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(host, name, tag), daemon=True)
        self.thread.start()

    def _run(self, host: str, name: str, tag: str) -> None:
        c = Client(host, timeout=120)
        try:
            for m in c.pull(name, tag):
                self.messages.append(m)
                if m.get("status") == "Downloading":
                    self.downloaded[m["id"]] = m["progressDetail"]["current"]
        except Exception as e:  # noqa: BLE001 - the daemon was killed: any way the stream ends
            self.error = e
        finally:
            c.close()
            self.done.set()

    def fetched(self, have: dict[str, int]) -> int:
        """Bytes downloaded by this pull, given what each blob had on disk before it."""
        return sum(max(0, n - have.get(i, 0)) for i, n in self.downloaded.items())

    def statuses(self) -> list[str]:
        return [m.get("status", "") for m in self.messages]


def on_disk(data_root: Path, big: BigImage) -> dict[str, int]:
    """Bytes of each layer blob already in the store or its ingest, by short id."""
    out = {}
    for digest, size in big.sizes.items():
        hexpart = digest.split(":", 1)[1]
        ingest = data_root / "ingest" / hashlib.sha256(digest.encode()).hexdigest() / "data"
        if (data_root / "blobs/sha256" / hexpart).exists():
            out[hexpart[:12]] = size
        elif ingest.exists():
            out[hexpart[:12]] = ingest.stat().st_size
    return out


def test_kill_9_mid_pull_restart_resume(sampand, slow_proxy, big):
    rng = random.Random(SEED)
    print(f"\nSAMPAN_CRASH_SEED={SEED}")
    d = sampand("pull")
    args = ("--insecure-registry", slow_proxy.host)
    name, tag = f"{slow_proxy.host}/crash/big", "1"
    c = restart(d, *args)
    driver = c.info()["Driver"]
    ranged = []
    for i in range(KILLS):
        # Kill when a random share (10-70 %) of what is left to download has come in.
        have = on_disk(d.data, big)
        left = big.total - sum(have.values())
        target = int(rng.uniform(0.1, 0.7) * left)
        slow_proxy.log.clear()
        w = PullWatch(d.host, name, tag)
        deadline = time.monotonic() + 60
        while w.fetched(have) < target and time.monotonic() < deadline:
            assert not w.done.is_set(), f"kill {i}: the pull ended first: {w.messages}"
            time.sleep(0.005)
        assert w.fetched(have) >= target, f"no download progress: {w.messages}\n{d.log()}"
        kill9(d)
        w.done.wait(30)
        assert not any(s.startswith("Status:") for s in w.statuses())
        ranged += [h.get("Range") for m, _p, h in slow_proxy.log
                   if m == "GET" and h.get("Range")]
        print(f"kill {i}: {w.fetched(have)} of the {left} bytes left downloaded (target "
              f"{target}); layers completed: {w.statuses().count('Pull complete')}")

        # Restart: the interrupted image is not listed; the store the daemon recovered is
        # consistent (checked on the stopped daemon's data root, without another recovery).
        c = restart(d, *args)
        assert c.images(all=True) == []
        d.stop()
        state = inspect(d.data, driver, big.chains)
        assert_consistent(state)
        assert state["images"] == []
        for chain, files in state["files"].items():    # a recorded layer is a whole layer
            n = big.chains.index(chain)
            if n:
                f = f"data/layer{n - 1}"
                assert files.get(f) == big.file_digests[f], (chain, files)
        for ing in state["ingests"]:      # partial downloads of blobs not in the store yet
            assert ing["ref"] in big.sizes and ing["offset"] <= big.sizes[ing["ref"]], ing
            assert ing["ref"] not in state["blobs"], ing
        c = restart(d, *args)

    # The last pull completes, resuming from what the killed ones left.
    slow_proxy.log.clear()
    w = PullWatch(d.host, name, tag)
    assert w.done.wait(120)
    assert w.error is None, f"{w.error}\n{d.log()}"
    assert w.statuses()[-1] == f"Status: Downloaded newer image for {name}:{tag}"
    fetched = 0
    for m, path, h in slow_proxy.log:
        digest = path.rsplit("/", 1)[-1]
        if m == "GET" and digest in big.sizes:
            start = int(h["Range"][6:].split("-")[0]) if h.get("Range") else 0
            fetched += big.sizes[digest] - start
            if start:
                ranged.append(h["Range"])
    print(f"final pull: {fetched} of {big.total} layer bytes downloaded; Range requests over "
          f"the restarts: {ranged}")
    assert fetched < big.total
    assert ranged, "no download was resumed with a Range request"
    assert [i["Id"] for i in c.images()] == [big.id]
    d.stop()

    state = inspect(d.data, driver, big.chains, run=big.id)
    assert_consistent(state)
    assert state["images"] == [big.id]
    assert state["ingests"] == []
    assert set(big.chains) <= set(state["layers"])
    assert state["run"]["rc"] == 0, state["run"]
    got = dict(reversed(line.split()) for line in state["run"]["stdout"].splitlines())
    assert got == {f"layer{i}": sha(b).split(":")[1] for i, b in enumerate(big.data)}


# --------------------------------------------------------------------------- rmi


def many_files_layer(n: int, prefix: str) -> bytes:
    return _tar({f"{prefix}/d{i // 500}/f{i}": f"file {i}\n" for i in range(n)})


def test_kill_9_mid_rmi(sampand, plain_registry):
    # Enough files that removing the layer takes a moment (on this VM, whose ext4 is mounted
    # with `discard`, unlinking a file that reached the disk costs ~1.5 ms).
    im = Image([busybox_layer(), many_files_layer(2500, "many")])
    Uploader(plain_registry.url).image("crash/many", "1", im)
    d = sampand("rmi")
    args = ("--insecure-registry", plain_registry.host)
    c = restart(d, *args)
    driver = c.info()["Driver"]
    name = f"{plain_registry.host}/crash/many:1"
    for m in c.pull(f"{plain_registry.host}/crash/many", "1"):
        pass
    assert [i["Id"] for i in c.images()] == [im.id]

    snapshots = d.data / "snapshots"
    removing = threading.Event()

    def rmi() -> None:
        try:
            Client(d.host, timeout=60).remove_image(name)
        except Exception:  # noqa: BLE001, S110 - killed mid-rmi
            pass

    threading.Thread(target=rmi, daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(e.name.startswith(".del-") for e in os.scandir(snapshots)):
            removing.set()
            break
    kill9(d)
    assert removing.is_set(), "the removal of the layers was never seen"

    c = restart(d, *args)
    assert c.images(all=True) == []     # the image went in one transaction, before its layers
    d.stop()
    state = inspect(d.data, driver)
    assert_consistent(state)
    assert state["images"] == [] and state["layers"] == []

    # What the killed rmi had no time to delete goes with the next prune; a pull works again.
    c = restart(d, *args)
    c.prune_images()
    for m in c.pull(f"{plain_registry.host}/crash/many", "1"):
        pass
    assert [i["Id"] for i in c.images()] == [im.id]
    assert c.remove_image(name)[-1]["Deleted"]
    c.prune_images()
    d.stop()
    state = inspect(d.data, driver)
    assert_consistent(state)
    assert state["images"] == [] and state["layers"] == [] and state["blobs"] == []


# --------------------------------------------------------------------------- load


def partial_load_ingest(data_root: Path) -> int:
    """Bytes in the ingest of an archive member being loaded (0 when there is none)."""
    for ref in (data_root / "ingest").glob("*/ref"):
        try:
            if ref.read_text().startswith("load-"):
                return (ref.parent / "data").stat().st_size
        except OSError:
            pass
    return 0


def test_kill_9_mid_load(sampand, tmp_path):
    """Killed twice: while the archive's blobs stream in, then while its layers unpack."""
    import imagebuild as ib

    layers = [ib.busybox_members()] + [[ib.Dir("data"), ib.File(f"data/l{i}",
                                                                os.urandom(6 * MiB))]
                                       for i in range(5)]
    img = ib.image(*layers, compression="none")
    archive = ib.docker_archive([(img, ["crash/load:1"])], layout="legacy")
    chains = chain_ids(img.diff_ids)
    d = sampand("load")
    c = restart(d)
    driver = c.info()["Driver"]
    snapshots = d.data / "snapshots"

    def unpacking() -> bool:   # some layer recorded, the next one being unpacked
        names = [e.name for e in os.scandir(snapshots)]
        return any(n.startswith(".tmp-") for n in names) and any(n[0] != "." for n in names)

    for when, ready in (("reading", lambda: partial_load_ingest(d.data) > MiB),
                        ("unpacking", unpacking)):
        result: dict = {}

        def load(result=result) -> None:
            try:
                result["lines"] = list(Client(d.host, timeout=60).load(archive,
                                                                       size=len(archive)))
            except Exception as e:  # noqa: BLE001 - killed mid-load
                result["error"] = e

        t = threading.Thread(target=load, daemon=True)
        t.start()
        deadline = time.monotonic() + 60
        seen = False
        while time.monotonic() < deadline and t.is_alive():
            if ready():
                seen = True
                break
        kill9(d)
        t.join(30)
        assert seen, f"the load was never seen {when}: {result}"
        assert "lines" not in result, result

        c = restart(d)
        assert c.images(all=True) == []
        d.stop()
        state = inspect(d.data, driver, chains)
        assert_consistent(state)
        assert state["images"] == []
        assert state["ingests"] == []       # a partial archive member cannot be resumed
        if when == "unpacking":
            assert state["layers"]          # some layers were done
        for chain, files in state["files"].items():
            n = chains.index(chain)
            if n:
                assert files.get(f"data/l{n - 1}") == ib.sha256(layers[n][1].data)
        c = restart(d)

    lines = list(c.load(archive, size=len(archive)))
    assert {"stream": "Loaded image: crash/load:1\n"} in lines
    assert [i["Id"] for i in c.images()] == [img.id]
    d.stop()
    state = inspect(d.data, driver)
    assert_consistent(state)
    assert state["images"] == [img.id] and set(chains) <= set(state["layers"])
