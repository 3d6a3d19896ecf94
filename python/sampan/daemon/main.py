"""`sampand`: start-up (flags and daemon.json, one daemon per data root, pid file, listening
sockets), the asyncio loop, and clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sampan import __version__
from sampan.daemon.config import ConfigError, DaemonConfig, Host, load

log = logging.getLogger("sampand")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR, "fatal": logging.CRITICAL}


class StartError(Exception):
    pass


class _Formatter(logging.Formatter):
    """dockerd-style lines: time="…" level=info msg="…"."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        t += f".{int((record.created % 1) * 1e6):06d}" + time.strftime("%z", time.localtime())
        level = {"WARNING": "warning", "CRITICAL": "fatal"}.get(record.levelname,
                                                                record.levelname.lower())
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        msg = msg.replace("\\", "\\\\").replace('"', '\\"')
        return f'time="{t}" level={level} msg="{msg}"'


def _setup_logging(cfg: DaemonConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = _LEVELS["debug" if cfg.debug else cfg.log_level]
    root.setLevel(level)
    logging.getLogger("asyncio").setLevel(max(level, logging.WARNING))


# --------------------------------------------------------------------------- exclusivity


def _lock(cfg: DaemonConfig) -> int:
    """An exclusive flock on DATA_ROOT/sampand.lock, held for the daemon's life."""
    path = cfg.lock_path
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            os.close(fd)
            raise
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder else ""
        raise StartError(f"another sampand is already running on data root {cfg.data_root}"
                         f"{who}; lock {path} is held") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _check_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().strip() or "0")
    except (OSError, ValueError):
        return
    if pid <= 0 or pid == os.getpid():
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # stale
    if b"sampand" in cmdline or b"sampan.daemon" in cmdline:
        raise StartError(f"pid file {path} names a running sampand (pid {pid}); stop it or "
                         "use another --pidfile")


def _write_pidfile(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- sockets


def _group_id(cfg: DaemonConfig) -> int | None:
    import grp

    try:
        return grp.getgrnam(cfg.group).gr_gid
    except KeyError:
        if cfg.group_explicit:
            raise StartError(f"group {cfg.group!r} for the socket does not exist") from None
        log.debug("group %s does not exist; the socket stays root-only", cfg.group)
        return None


def _bind_unix(h: Host, gid: int | None) -> socket.socket:
    path = Path(h.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket from a daemon that died
        else:
            raise StartError(f"another daemon is listening on {h}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    if gid is not None:
        os.chown(path, 0 if os.geteuid() == 0 else -1, gid)
    os.chmod(path, 0o660)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _bind_tcp(h: Host) -> socket.socket:
    infos = socket.getaddrinfo(h.host, h.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    if not infos:
        raise StartError(f"cannot resolve {h}")
    family, stype, proto, _, addr = infos[0]
    sock = socket.socket(family, stype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise StartError(f"cannot listen on {h}: {e.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _tls_context(cfg: DaemonConfig) -> Any:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tlscert, cfg.tlskey)
        if cfg.tlscacert:
            ctx.load_verify_locations(cfg.tlscacert)
    except (OSError, ssl.SSLError) as e:
        raise StartError(f"TLS set-up failed: {e}") from None
    ctx.verify_mode = ssl.CERT_REQUIRED if cfg.tlsverify else ssl.CERT_NONE
    return ctx


# --------------------------------------------------------------------------- running


def _app(engine: Any) -> Any:
    from sampan.daemon import containers, images, system
    from sampan.daemon.router import Router

    router = Router(engine)
    system.register(router)
    images.register(router)
    containers.register(router)
    from sampan.daemon import execs

    execs.register(router)
    from sampan.daemon import events

    events.register(router)
    from sampan.daemon import container_fs, volumes

    volumes.register(router)
    container_fs.register(router)
    from sampan.daemon import networks

    networks.register(router)
    extra = getattr(engine.factory_module, "register_routes", None)
    if callable(extra):  # test hook: the factory module may add routes
        extra(router)
    return router


def _import_asyncio(tls: bool) -> None:
    """Import asyncio. Without TLS listeners, asyncio's optional `ssl` import is skipped: it
    costs ~4.5 MiB of an idle daemon's memory (the registry client imports ssl for itself
    later, when first used)."""
    if tls or "asyncio" in sys.modules:
        import asyncio
        return
    had = "ssl" in sys.modules
    if not had:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # makes `import ssl` fail
    try:
        import asyncio  # noqa: F401
    finally:
        if not had and sys.modules.get("ssl", 0) is None:
            del sys.modules["ssl"]


def _loop_exception(loop: Any, context: dict) -> None:
    exc = context.get("exception")
    if isinstance(exc, ConnectionError) or type(exc).__name__.startswith("SSL"):
        log.debug("connection: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


async def _serve(cfg: DaemonConfig, engine: Any, socks: list[tuple[socket.socket, Any]]) -> None:
    import asyncio

    from sampan.daemon.router import API_VERSION
    from sampan.daemon.server import Server

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception)
    common = [("Api-Version", API_VERSION), ("Docker-Experimental", "false"),
              ("Ostype", "linux"), ("Server", f"Sampan/{__version__} (linux)")]
    server = Server(_app(engine), common)
    for sock, ssl_ctx in socks:
        await server.listen(sock, ssl_ctx)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP: nothing to reload"))
    log.info("sampand %s listening on %s (data root %s)", __version__,
             ", ".join(str(h) for h in cfg.hosts), cfg.data_root)
    await stop.wait()
    log.info("shutting down")
    await server.close()


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = load(argv)
    except ConfigError as e:
        print(f"sampand: {e}", file=sys.stderr)
        return 1
    if args.validate:
        print("configuration OK")
        return 0
    _setup_logging(cfg)
    if os.geteuid() != 0:
        log.warning("sampand is not running as root: containers will not work")
    from sampan import hostfeatures

    for warning in hostfeatures.warnings():
        log.warning("%s", warning.removeprefix("WARNING: "))
    lock_fd = None
    socks: list[tuple[socket.socket, Any]] = []
    unix_paths: list[Path] = []
    pid_written = False
    engine = None
    try:
        cfg.data_root.mkdir(parents=True, exist_ok=True, mode=0o711)
        # traversable: the socket inside is for root and the socket's group
        cfg.exec_root.mkdir(parents=True, exist_ok=True, mode=0o711)
        if cfg.log_root is not None:
            try:
                cfg.log_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as e:
                raise StartError(f"cannot create log-root {cfg.log_root}: "
                                 f"{e.strerror or e}") from None
        lock_fd = _lock(cfg)
        assert cfg.pidfile is not None
        _check_pidfile(cfg.pidfile)
        gid = None
        if any(h.scheme == "unix" for h in cfg.hosts):
            gid = _group_id(cfg)
        ssl_ctx = _tls_context(cfg) if cfg.tls and any(h.scheme == "tcp"
                                                        for h in cfg.hosts) else None
        for h in cfg.hosts:
            if h.scheme == "unix":
                socks.append((_bind_unix(h, gid), None))
                unix_paths.append(Path(h.path))
            else:
                if not cfg.tls:
                    log.warning("API is accessible on %s without encryption: anyone who can "
                                "reach it is root on this machine", h)
                socks.append((_bind_tcp(h), ssl_ctx))
        _import_asyncio(bool(ssl_ctx))
        from sampan.daemon.engine import Engine

        engine = Engine(cfg)
        try:
            engine.start()
        except Exception as e:
            log.debug("image store", exc_info=True)
            raise StartError(f"cannot open the image store in {cfg.data_root}: {e}") from e
        _write_pidfile(cfg.pidfile)
        pid_written = True
        import asyncio

        asyncio.run(_serve(cfg, engine, socks))
        return 0
    except StartError as e:
        log.error("%s", e)
        return 1
    except PermissionError as e:
        log.error("%s (sampand needs root)", e)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for sock, _ in socks:
            try:
                sock.close()
            except OSError:
                pass
        for p in unix_paths:
            try:
                p.unlink()
            except OSError:
                pass
        if pid_written and cfg.pidfile is not None:
            try:
                cfg.pidfile.unlink()
            except OSError:
                pass
        if engine is not None:
            from sampan.daemon.engine import wait_workers

            left = wait_workers(10.0)
            if left:
                log.warning("%d image operation(s) still running at exit", left)
            else:
                engine.close()
        if lock_fd is not None:
            os.close(lock_fd)


if __name__ == "__main__":
    sys.exit(main())
