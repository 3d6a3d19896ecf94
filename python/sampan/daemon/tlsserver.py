"""TLS listeners whose connections survive the client's half-close.

docker's attach and exec protocol ends the container's stdin with a half-close of the
hijacked connection; over TLS that is a close_notify alert (Go's tls.Conn.CloseWrite), after
which the client still reads the output. asyncio's TLS protocol answers a close_notify by
shutting the whole connection down, so `docker run -i` over TLS lost everything the process
printed after its stdin ended. OpenSSL itself lets a connection write after it has received
close_notify; only asyncio's choice is in the way.

No public asyncio API changes that choice, so this subclass of asyncio.sslproto.SSLProtocol
(the CPython 3.11+ implementation) turns the shutdown that follows a close_notify into a plain
end of input for the application. On older Pythons the standard TLS server is used, and a
half-close over TLS still ends the connection."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

try:
    from asyncio import sslproto as _sslproto

    _WRAPPED = _sslproto.SSLProtocolState.WRAPPED
except (ImportError, AttributeError):  # CPython < 3.11: a different implementation
    _sslproto = None  # type: ignore[assignment]
    _WRAPPED = None

HALF_CLOSE = _sslproto is not None


if HALF_CLOSE:

    class _HalfCloseSSLProtocol(_sslproto.SSLProtocol):  # type: ignore[name-defined,misc]
        _peer_closed_write = False

        def _call_eof_received(self) -> None:
            if self._state == _WRAPPED:
                # the read path saw close_notify; the shutdown it starts next is skipped
                self._peer_closed_write = True
            super()._call_eof_received()

        def _start_shutdown(self) -> None:
            app = self._app_transport
            if self._peer_closed_write and self._state == _WRAPPED and app is not None \
                    and not app._closed:
                return  # our side stays open until the application closes it
            super()._start_shutdown()


async def start_tls_server(client_connected_cb: Callable[..., Any], sock: Any, ssl_ctx: Any,
                           limit: int) -> asyncio.base_events.Server:
    """asyncio.start_server(ssl=…) with half-close kept, where this Python allows it."""
    if not HALF_CLOSE:
        return await asyncio.start_server(client_connected_cb, sock=sock, ssl=ssl_ctx,
                                          limit=limit)
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        app = asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)
        return _HalfCloseSSLProtocol(loop, app, ssl_ctx, None, server_side=True)

    return await loop.create_server(factory, sock=sock)
