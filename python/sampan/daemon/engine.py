"""The daemon's state: configuration, the image service (built lazily: importing the registry
client costs memory an idle daemon need not pay), and helpers to run blocking work off the
event loop without keeping threads around at idle."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Callable

from sampan.daemon.config import DaemonConfig

log = logging.getLogger("sampand")

# A test hook: "module:callable" building the image service from the DaemonConfig.
FACTORY_ENV = "SAMPAN_DAEMON_IMAGE_SERVICE"
CERTS_DIR = Path("/etc/sampan/certs.d")


class ServiceUnavailable(Exception):
    status = 501


class Engine:
    def __init__(self, config: DaemonConfig):
        self.config = config
        self.started = time.time()
        self.id = self._engine_id()
        self._images: Any = None
        self._graph: Any = None
        self._graph_error: str | None = None
        self._lock = threading.Lock()
        self.factory_module: Any = None
        spec = os.environ.get(FACTORY_ENV)
        if spec:
            mod, _, attr = spec.partition(":")
            self.factory_module = importlib.import_module(mod)
            self._factory: Callable[[DaemonConfig], Any] | None = getattr(
                self.factory_module, attr or "make")
        else:
            self._factory = None

    def _engine_id(self) -> str:
        path = self.config.data_root / "engine-id"
        try:
            return path.read_text().strip()
        except OSError:
            pass
        new = str(uuid.uuid4())
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(new + "\n")
            os.replace(tmp, path)
        except OSError as e:
            log.warning("cannot record the engine id in %s: %s", path, e)
        return new

    # ---------------------------------------------------------------- the image service

    def start(self) -> None:
        """Nothing is imported or opened here: the image store (the graph: ~9 MiB of imports
        with hashlib, sqlite3 and ctypes) opens on the first request that needs it, the
        registry client (requests, ssl: ~13 MiB) on the first pull/push/login. An idle daemon
        stays small. The test hook's factory is built now."""
        if self._factory is not None:
            self.images  # noqa: B018 - build it now
            return
        driver = self.config.storage_driver
        if driver is not None and driver not in ("overlay", "overlay2", "overlayfs", "vfs"):
            raise ValueError(f"unknown storage driver {driver!r} (overlay or vfs)")

    def _open_graph(self) -> Any:
        if self._graph is not None:
            return self._graph
        if self._graph_error is not None:
            raise ServiceUnavailable(self._graph_error)
        try:
            from sampan.graph import Graph
        except ImportError as e:
            self._graph_error = f"the image store is not available: {e}"
            raise ServiceUnavailable(self._graph_error) from None
        self._graph = Graph(self.config.data_root, driver=self.config.storage_driver)
        log.info("image store: driver %s%s", getattr(self._graph, "driver_name", "?"),
                 f" ({self._graph.driver_reason})" if getattr(self._graph, "driver_reason",
                                                              "") else "")
        return self._graph

    @property
    def images(self) -> Any:
        """The ImageService (graph + registry)."""
        if self._images is not None:
            return self._images
        with self._lock:
            if self._images is not None:
                return self._images
            if self._factory is not None:
                self._images = self._factory(self.config)
                return self._images
            try:
                images_mod = importlib.import_module("sampan.images")
                registry_config = getattr(images_mod, "RegistryConfig", None)
                if registry_config is None:
                    registry_config = importlib.import_module("sampan.registry").RegistryConfig
            except (ImportError, AttributeError) as e:
                raise ServiceUnavailable(f"the image service is not available: {e}") from None
            graph = self._open_graph()
            rc = registry_config(insecure_registries=list(self.config.insecure_registries),
                                 mirrors=list(self.config.registry_mirrors),
                                 certs_dir=CERTS_DIR if CERTS_DIR.is_dir() else None)
            self._images = images_mod.ImageService(graph, rc)
            return self._images

    @property
    def graph(self) -> Any:
        if self._images is not None:
            return self._images.graph
        if self._factory is not None:
            return self.images.graph
        with self._lock:
            return self._open_graph()

    def on_graph(self, method: str, *args: Any, **kw: Any) -> asyncio.Future:
        """`graph.<method>(*args, **kw)` in a worker thread (opening the graph there too)."""
        return blocking(lambda: getattr(self.graph, method)(*args, **kw))

    def on_images(self, method: str, *args: Any, missing: str | None = None, **kw: Any) -> Any:
        """A callable running `images.<method>` (building the ImageService on first use), for
        a worker thread."""
        def call(*more: Any) -> Any:
            fn = getattr(self.images, method, None)
            if fn is None:
                raise ServiceUnavailable(missing or f"the image service cannot {method} yet")
            return fn(*args, *more, **kw)
        call.__name__ = method
        return call

    def graph_if_open(self) -> Any:
        """The graph, or None when there is none (for /info: never fails)."""
        try:
            return self.graph
        except Exception as e:  # noqa: BLE001 - /info reports, never fails
            log.debug("no graph: %s", e)
            return None

    def close(self) -> None:
        seen = []
        for obj in (self._images, self._graph, getattr(self._images, "graph", None)):
            if obj is None or any(obj is x for x in seen):
                continue
            seen.append(obj)
            close = getattr(obj, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as e:  # noqa: BLE001 - shutting down anyway
                    log.warning("closing %s: %s", type(obj).__name__, e)


# --------------------------------------------------------------------------- blocking work


_workers: set[threading.Thread] = set()


def wait_workers(timeout: float) -> int:
    """At shutdown: give running blocking calls `timeout` seconds to end; how many still run."""
    deadline = time.monotonic() + timeout
    for t in list(_workers):
        t.join(max(0.0, deadline - time.monotonic()))
    return sum(1 for t in _workers if t.is_alive())


def blocking(fn: Callable[..., Any], *args: Any, **kw: Any) -> asyncio.Future:
    """Run `fn` in a new daemon thread (gone when done: no idle pool); an awaitable result."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        try:
            try:
                result = fn(*args, **kw)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                if not loop.is_closed():
                    loop.call_soon_threadsafe(settle, False, e)
                return
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle, True, result)
        except RuntimeError:
            pass  # the loop closed meanwhile (shutdown)
        finally:
            _workers.discard(threading.current_thread())

    t = threading.Thread(target=run, name=getattr(fn, "__name__", "work"), daemon=True)
    _workers.add(t)
    t.start()
    return fut


async def iterate_in_thread(it: Iterator[bytes], depth: int = 8) -> AsyncIterator[bytes]:
    """Consume a blocking iterator in one thread, with back-pressure (at most `depth` chunks
    buffered). Closing the async generator stops the producer at its next chunk."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue(depth)
    stop = threading.Event()
    _END = object()

    def produce() -> None:
        try:
            for chunk in it:
                if stop.is_set():
                    return
                asyncio.run_coroutine_threadsafe(q.put(("data", chunk)), loop).result()
            asyncio.run_coroutine_threadsafe(q.put(("end", _END)), loop).result()
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            if not loop.is_closed() and not stop.is_set():
                try:
                    asyncio.run_coroutine_threadsafe(q.put(("error", e)), loop).result()
                except RuntimeError:
                    pass
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as e:  # noqa: BLE001
                    log.debug("closing an iterator: %s", e)

    threading.Thread(target=produce, name="stream", daemon=True).start()
    try:
        while True:
            kind, value = await q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        # unblock a producer waiting on a full queue
        while not q.empty():
            q.get_nowait()


class SyncBody:
    """A file-like view of a request body for code running in a worker thread."""

    def __init__(self, body: Any, loop: asyncio.AbstractEventLoop):
        self._body = body
        self._loop = loop

    def read(self, n: int = -1) -> bytes:
        return asyncio.run_coroutine_threadsafe(self._body.read(n), self._loop).result()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        pass


def normalize_auth(d: dict[str, Any]) -> dict[str, Any]:
    """An AuthConfig (X-Registry-Auth or POST /auth): lower-case keys, strings only, the legacy
    "auth" field (base64 user:password) split into username and password."""
    import base64

    out: dict[str, Any] = {}
    for k, v in d.items():
        if v is None:
            continue
        if not isinstance(v, str):
            raise TypeError(f"{k} must be a string")
        out[k.lower()] = v
    if out.get("auth") and not out.get("username"):
        try:
            user, _, pw = base64.b64decode(out["auth"]).decode().partition(":")
        except ValueError:
            raise ValueError("auth is not base64 of user:password") from None
        out["username"], out["password"] = user, pw
    out.pop("auth", None)
    return out


def python_version() -> str:
    return "python" + ".".join(map(str, sys.version_info[:3]))
