"""sampand: the Docker Engine API over HTTP/1.1 (asyncio + h11) on a unix socket and tcp.

`main` start-up and shutdown; `config` flags and daemon.json; `server` HTTP; `router` API
versions and routes; `engine` the daemon's state and blocking-work helpers; `system` and
`images` the endpoints.
"""
