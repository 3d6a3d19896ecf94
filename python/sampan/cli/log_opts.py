"""run/create flags for logging and the init: --log-driver, --log-opt KEY=VALUE, --init
(HostConfig.LogConfig and HostConfig.Init; the daemon validates them)."""

from __future__ import annotations

from typing import Any

import click


def _log_opt(ctx: Any, param: Any, values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"invalid log opt: {v!r} (want KEY=VALUE)")
        out[k] = val
    return out


def options(fn: Any) -> Any:
    opts = [
        click.option("--log-driver", help="logging driver for the container (json-file, none)"),
        click.option("--log-opt", "log_opts", multiple=True, callback=_log_opt,
                     help="log driver options (max-size=10m, max-file=3)"),
        click.option("--init", "init", is_flag=True, default=None,
                     help="run an init inside the container that forwards signals and reaps "
                          "processes"),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def apply(body: dict[str, Any], o: dict[str, Any]) -> None:
    host = body.setdefault("HostConfig", {})
    if o.get("log_driver") or o.get("log_opts"):
        host["LogConfig"] = {"Type": o.get("log_driver") or "", "Config": o.get("log_opts") or {}}
    if o.get("init"):
        host["Init"] = True
