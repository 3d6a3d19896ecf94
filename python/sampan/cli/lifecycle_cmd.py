"""Verbs around a container's process and the daemon's events: events, top, stats, rename,
pause, unpause, update, port — docker's flags, output and exit codes."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from sampan.cli import format as fmt
from sampan.cli.system_cmd import client, daemon_errors
from sampan.client import APIError


def _filters(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in values:
        k, sep, v = f.partition("=")
        if not sep:
            raise click.BadParameter(f"bad format of filter (expected name=value): {f}")
        out.setdefault(k.strip().lower(), []).append(v)
    return out


def _rfc3339_nano_local(ns: int) -> str:
    """Go's RFC3339NanoFixed in local time, as `docker events` prints times."""
    t = datetime.fromtimestamp(ns // 1_000_000_000).astimezone()
    off = t.strftime("%z")
    off = "Z" if off in ("+0000", "") else off[:3] + ":" + off[3:]
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}" + off


def event_line(ev: dict[str, Any]) -> str:
    actor = ev.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    line = (f"{_rfc3339_nano_local(int(ev.get('timeNano') or ev.get('time', 0) * 10**9))} "
            f"{ev.get('Type', '')} {ev.get('Action', '')} {actor.get('ID', '')}")
    if attrs:
        line += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return line


@click.command("events")
@click.option("-f", "--filter", "filters", multiple=True, help="filter output (key=value)")
@click.option("--format", "format_", help="format the output with a Go template (or json)")
@click.option("--since", help="show all events created since timestamp")
@click.option("--until", help="stream events until this timestamp")
@daemon_errors
def events_cmd(filters: tuple[str, ...], format_: str | None, since: str | None,
               until: str | None) -> None:
    """Get real time events from the server."""
    params: dict[str, Any] = {"since": since, "until": until}
    fl = _filters(filters)
    if fl:
        params["filters"] = json.dumps(fl)
    c = client()
    c.timeout = None
    if format_ and format_.strip() == "json":
        format_ = "{{json .}}"
    try:
        for ev in c.stream_json("GET", "/events", params):
            if format_:
                click.echo(fmt.render(format_, ev), nl=False)
            else:
                click.echo(event_line(ev))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    except APIError as e:
        click.echo(f"Error response from daemon: {e.message}", err=True)
        sys.exit(1)


COMMANDS = [events_cmd]


