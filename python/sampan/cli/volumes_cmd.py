"""`sampan volume create/ls/inspect/rm/prune` with docker's flags and output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from sampan.cli import format as fmt
from sampan.cli.system_cmd import client, daemon_errors, each_name, inspect_each

LS_TABLE = "table {{.Driver}}\t{{.Name}}"
LS_HEADERS = {"Driver": "DRIVER", "Name": "VOLUME NAME", "Scope": "SCOPE",
              "Mountpoint": "MOUNTPOINT", "Labels": "LABELS", "Links": "LINKS",
              "Size": "SIZE", "CreatedAt": "CREATED AT"}


def _kv(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not k or (what == "opt" and not sep):
            raise click.BadParameter(f"invalid {what} '{v}': must be key=value")
        out[k] = val
    return out


def _filters(values: tuple[str, ...]) -> str | None:
    fl: dict[str, dict[str, bool]] = {}
    for f in values:
        k, sep, v = f.partition("=")
        if not sep:
            raise click.BadParameter(f"bad format of filter (expected name=value): {f}")
        fl.setdefault(k, {})[v] = True
    return json.dumps(fl) if fl else None


@click.group("volume")
def volume_group() -> None:
    """Manage volumes."""


@volume_group.command("create")
@click.option("-d", "--driver", default="local", show_default=True, help="volume driver name")
@click.option("-o", "--opt", "opts", multiple=True, help="driver specific options (key=value)")
@click.option("--label", "labels", multiple=True, help="set metadata for a volume")
@click.option("--name", "name_opt", help="specify volume name")
@click.argument("name", required=False)
@daemon_errors
def create_cmd(driver: str, opts: tuple[str, ...], labels: tuple[str, ...],
               name_opt: str | None, name: str | None) -> None:
    """Create a volume."""
    if name and name_opt and name != name_opt:
        click.echo("Conflicting options: either specify --name or provide positional arg, "
                   "not both", err=True)
        sys.exit(1)
    body = {"Name": name or name_opt or "", "Driver": driver,
            "DriverOpts": _kv(opts, "opt"), "Labels": _kv(labels, "label")}
    vol = client().post_json("/volumes/create", None, body)
    click.echo(vol["Name"])


def _row(v: dict[str, Any]) -> fmt.Row:
    labels = v.get("Labels") or {}
    usage = v.get("UsageData") or {}
    return fmt.Row("volume", {
        "Name": v["Name"], "Driver": v.get("Driver", ""), "Scope": v.get("Scope", "local"),
        "Mountpoint": v.get("Mountpoint", ""), "CreatedAt": v.get("CreatedAt", ""),
        "Labels": ",".join(f"{k}={val}" for k, val in labels.items()),
        "Links": str(usage.get("RefCount", "N/A")) if usage else "N/A",
        "Size": "N/A",
    })


@volume_group.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="only display volume names")
@click.option("-f", "--filter", "filters", multiple=True, help="provide filter values")
@click.option("--format", "format_", help="format output using a Go template (or json)")
@daemon_errors
def ls_cmd(quiet: bool, filters: tuple[str, ...], format_: str | None) -> None:
    """List volumes."""
    params = {}
    f = _filters(filters)
    if f:
        params["filters"] = f
    vols = client().get_json("/volumes", params).get("Volumes") or []
    vols.sort(key=lambda v: v["Name"])
    if quiet and not format_:
        for v in vols:
            click.echo(v["Name"])
        return
    click.echo(fmt.render_list(format_, [_row(v) for v in vols], LS_TABLE, LS_HEADERS),
               nl=False)


volume_group.add_command(ls_cmd, "list")


@volume_group.command("inspect")
@click.option("-f", "--format", "format_", help="format the output with a Go template")
@click.argument("names", nargs=-1, required=True)
@daemon_errors
def inspect_cmd(format_: str | None, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more volumes."""
    inspect_each(client(), "/volumes", names, format_)


@volume_group.command("rm")
@click.option("-f", "--force", is_flag=True, help="force the removal of one or more volumes")
@click.argument("names", nargs=-1, required=True)
@daemon_errors
def rm_cmd(force: bool, names: tuple[str, ...]) -> None:
    """Remove one or more volumes."""
    c = client()
    each_name(names, lambda n: c.request("DELETE", f"/volumes/{n}",
                                         {"force": force} if force else None))


volume_group.add_command(rm_cmd, "remove")


def human_size(n: int) -> str:
    """docker's units.HumanSize (decimal, 3 significant digits)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    f = float(n)
    i = 0
    while f >= 1000 and i < len(units) - 1:
        f /= 1000
        i += 1
    return f"{f:.4g}{units[i]}"


@volume_group.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="remove all unused volumes, not just "
              "anonymous ones")
@click.option("--filter", "filters", multiple=True, help="provide filter values (label=…)")
@click.option("-f", "--force", is_flag=True, help="do not prompt for confirmation")
@daemon_errors
def prune_cmd(all_: bool, filters: tuple[str, ...], force: bool) -> None:
    """Remove unused local volumes."""
    if not force:
        warning = ("WARNING! This will remove all local volumes not used by at least one "
                   "container." if all_ else
                   "WARNING! This will remove anonymous local volumes not used by at least one "
                   "container.")
        click.echo(warning)
        click.echo("Are you sure you want to continue? [y/N] ", nl=False)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            click.echo("Total reclaimed space: 0B")
            return
    fl = json.loads(_filters(filters) or "{}")
    if all_:
        fl["all"] = {"true": True}
    params = {"filters": json.dumps(fl)} if fl else None
    r = client().post_json("/volumes/prune", params)
    deleted = r.get("VolumesDeleted") or []
    if deleted:
        click.echo("Deleted Volumes:")
        for n in deleted:
            click.echo(n)
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(int(r.get('SpaceReclaimed') or 0))}")


COMMANDS = [volume_group]
