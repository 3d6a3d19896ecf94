"""Image verbs: pull, push, images, image (inspect ls rm prune pull push tag save load history),
history, tag, rmi, login, logout, save, load — docker's flags, output and exit codes."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click

from sampan.cli import format as fmt
from sampan.cli.system_cmd import client, daemon_errors, dump_json, state, write_output
from sampan.client import APIError, ClientError

INDEX_SERVER = "https://index.docker.io/v1/"

IMAGE_HEADERS = {
    "Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST",
    "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
    "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE",
    "Containers": "CONTAINERS",
}
IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
IMAGES_TABLE_DIGESTS = ("table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t"
                        "{{.CreatedSince}}\t{{.Size}}")
HISTORY_HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                   "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}
HISTORY_TABLE = ("table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t"
                 "{{.Comment}}")


# --------------------------------------------------------------------------- references


def _parse(name: str, default_tag: str | None = "latest") -> Any:
    from sampan.reference import parse

    try:
        return parse(name, default_tag=default_tag)
    except Exception as e:  # noqa: BLE001 - InvalidReference with docker's message
        raise ClientError(f"{e}") from None


def _auth_for(domain: str) -> dict[str, Any] | None:
    """The user's credentials for a registry (Sampan's config file, then docker's)."""
    try:
        from sampan.registry import credentials
    except ImportError:
        return None
    try:
        return credentials.lookup(domain)
    except Exception as e:  # noqa: BLE001 - a broken config file must not stop a pull
        click.echo(f"WARNING: {e}", err=True)
        return None


# --------------------------------------------------------------------------- progress


def _bar(current: int, total: int, width: int) -> str:
    if total <= 0:
        return fmt.human_size(current)
    pct = min(1.0, current / total)
    n = int(pct * width)
    bar = "=" * n + (">" if n < width else "") + " " * max(0, width - n - 1)
    sizes = f"{_hsize(current)}/{_hsize(total)}"
    return f"[{bar}] {sizes:>18}"


def _hsize(n: int) -> str:
    return fmt.human_size(n, precision=4)


class ProgressPrinter:
    """docker's JSON-message display: on a terminal, one line per layer id updated in place;
    otherwise plain status lines without the progress bars."""

    def __init__(self, out: TextIO, tty: bool):
        self.out = out
        self.tty = tty
        self.ids: dict[str, int] = {}
        cols = shutil.get_terminal_size((110, 24)).columns if tty else 110
        self.bar_width = max(10, min(50, cols - 50))

    def show(self, m: dict[str, Any]) -> None:
        if "aux" in m and "status" not in m:
            return
        if m.get("stream"):
            self._reset()
            self.out.write(m["stream"])
            self.out.flush()
            return
        status = m.get("status", "")
        id_ = m.get("id")
        detail = m.get("progressDetail")
        has_bar = isinstance(detail, dict) and detail.get("current") is not None
        progress = ""
        if has_bar:
            progress = _bar(int(detail.get("current") or 0), int(detail.get("total") or 0),
                            self.bar_width)
        elif m.get("progress"):
            progress = str(m["progress"])
            has_bar = True
        if not self.tty:
            if has_bar:
                return
            self.out.write(f"{id_}: {status}\n" if id_ else f"{status}\n")
            self.out.flush()
            return
        text = f"{id_}: {status}" if id_ else status
        if progress:
            text += " " + progress
        if id_ and detail is not None:
            if id_ not in self.ids:
                self.ids[id_] = len(self.ids)
                self.out.write("\n")
            diff = len(self.ids) - self.ids[id_]
            self.out.write(f"\x1b[{diff}A\r\x1b[2K{text}\x1b[{diff}B\r")
        else:
            self._reset()
            self.out.write(f"\r\x1b[2K{text}\n")
        self.out.flush()

    def _reset(self) -> None:
        self.ids.clear()


def show_stream(messages: Iterator[dict[str, Any]], quiet: bool = False) -> list[dict]:
    """Display a progress stream; returns the `aux` payloads."""
    out = sys.stdout
    printer = ProgressPrinter(out, out.isatty())
    aux = []
    for m in messages:
        if isinstance(m.get("aux"), dict):
            aux.append(m["aux"])
        if not quiet:
            printer.show(m)
    return aux


# --------------------------------------------------------------------------- pull / push


@click.command("pull")
@click.argument("name")
@click.option("-a", "--all-tags", is_flag=True, help="download all tagged images")
@click.option("-q", "--quiet", is_flag=True, help="suppress verbose output")
@click.option("--platform", help="os/arch[/variant] to pull, e.g. linux/arm64")
@click.option("--disable-content-trust", is_flag=True, default=True, hidden=True)
@daemon_errors
def pull_cmd(name: str, all_tags: bool, quiet: bool, platform: str | None,
             disable_content_trust: bool) -> None:
    """Download an image from a registry."""
    ref = _parse(name, default_tag=None if all_tags else "latest")
    if all_tags and (ref.tag or ref.digest):
        raise ClientError("tag can't be used with --all-tags/-a")
    tag = ref.digest or ref.tag
    auth = _auth_for(ref.domain)
    if not quiet and not all_tags and not (":" in name.rsplit("/", 1)[-1] or "@" in name):
        click.echo("Using default tag: latest")
    show_stream(client().pull(ref.familiar_name(), tag, platform, auth), quiet)
    if not all_tags:
        click.echo(str(ref))
    else:
        click.echo(ref.name())


@click.command("push")
@click.argument("name")
@click.option("-a", "--all-tags", is_flag=True, help="push all tags of the repository")
@click.option("-q", "--quiet", is_flag=True, help="suppress verbose output")
@click.option("--platform", hidden=True)
@click.option("--disable-content-trust", is_flag=True, default=True, hidden=True)
@daemon_errors
def push_cmd(name: str, all_tags: bool, quiet: bool, platform: str | None,
             disable_content_trust: bool) -> None:
    """Upload an image to a registry."""
    ref = _parse(name, default_tag=None if all_tags else "latest")
    if all_tags and (ref.tag or ref.digest):
        raise ClientError("tag can't be used with --all-tags/-a")
    if ref.digest:
        raise ClientError("cannot push a digest reference")
    if not quiet and not all_tags and ":" not in name.rsplit("/", 1)[-1]:
        click.echo("Using default tag: latest")
    auth = _auth_for(ref.domain)
    show_stream(client().push(ref.familiar_name(), ref.tag, auth), quiet)
    if quiet:
        click.echo(str(ref) if not all_tags else ref.name())


# --------------------------------------------------------------------------- images


def _repo_of(ref: str) -> tuple[str, str]:
    """"repo:tag" → (repo, tag); "repo@digest" → (repo, digest)."""
    if "@" in ref:
        repo, _, d = ref.partition("@")
        return repo, d
    i = ref.rfind(":")
    if i > ref.rfind("/"):
        return ref[:i], ref[i + 1:]
    return ref, ""


def image_rows(images: list[dict[str, Any]], digests: bool, trunc: bool,
               df: bool = False) -> list[fmt.Row]:
    rows: list[fmt.Row] = []
    for img in images:
        tags: dict[str, list[str]] = {}
        dgs: dict[str, list[str]] = {}
        for rt in img.get("RepoTags") or []:
            if rt in ("<none>:<none>", ""):
                continue
            repo, tag = _repo_of(rt)
            tags.setdefault(repo, []).append(tag)
        for rd in img.get("RepoDigests") or []:
            if rd in ("<none>@<none>", ""):
                continue
            repo, d = _repo_of(rd)
            dgs.setdefault(repo, []).append(d)
        pairs: list[tuple[str, str, str]] = []
        for repo, ts in tags.items():
            ds = dgs.pop(repo, [])
            if not digests:
                ds = []
            for t in ts:
                if not ds:
                    pairs.append((repo, t, "<none>"))
                for d in ds:
                    pairs.append((repo, t, d))
        for repo, ds in dgs.items():
            if digests:
                pairs.extend((repo, "<none>", d) for d in ds)
            else:
                pairs.append((repo, "<none>", "<none>"))
        if not pairs:
            pairs.append(("<none>", "<none>", "<none>"))
        for repo, tag, d in pairs:
            rows.append(_image_row(img, repo, tag, d, trunc, df))
    return rows


def _image_row(img: dict[str, Any], repo: str, tag: str, digest: str, trunc: bool,
               df: bool) -> fmt.Row:
    size = int(img.get("Size") or 0)
    shared = int(img.get("SharedSize") if img.get("SharedSize") is not None else -1)
    containers = int(img.get("Containers") if img.get("Containers") is not None else -1)
    created = img.get("Created")
    return fmt.Row("image", {
        "ID": fmt.short_id(str(img.get("Id", "")), trunc),
        "Repository": repo,
        "Tag": tag,
        "Digest": digest,
        "CreatedSince": lambda: fmt.time_ago(created),
        "CreatedAt": lambda: fmt.go_time_string(created),
        "Size": fmt.human_size(size),
        "VirtualSize": fmt.human_size(int(img.get("VirtualSize") or size)),
        "SharedSize": fmt.human_size(shared) if shared >= 0 else "N/A",
        "UniqueSize": fmt.human_size(size - shared) if shared >= 0 else "N/A",
        "Containers": str(containers) if containers >= 0 else "N/A",
    })


def _filters(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        if "=" not in v:
            raise ClientError(f"bad format of filter (expected name=value): {v}")
        k, _, val = v.partition("=")
        out.setdefault(k.strip().lower() if k.strip() != "label!" else k.strip(),
                       []).append(val)
    return out


def _images(repository: str | None, all_: bool, quiet: bool, digests: bool,
            filters: tuple[str, ...], format_: str | None, no_trunc: bool) -> None:
    f = _filters(filters)
    if repository:
        f.setdefault("reference", []).append(repository)
    images = client().images(all=all_, filters=f or None)
    rows = image_rows(images, digests, not no_trunc)
    if quiet:
        seen = []
        for r in rows:
            i = r.get("ID")
            if i not in seen:
                seen.append(i)
        for i in seen:
            click.echo(i)
        return
    default = IMAGES_TABLE_DIGESTS if digests else IMAGES_TABLE
    if format_ and format_.strip() == "table":
        format_ = default
    click.echo(fmt.render_list(format_, rows, default, IMAGE_HEADERS), nl=False)


_images_options = [
    click.option("-a", "--all", "all_", is_flag=True, help="show all images (default hides "
                                                           "intermediate images)"),
    click.option("-q", "--quiet", is_flag=True, help="only show image IDs"),
    click.option("--digests", is_flag=True, help="show digests"),
    click.option("-f", "--filter", "filters", multiple=True, help="filter output (key=value)"),
    click.option("--format", "format_", help="format output with a Go template, 'table' or "
                                             "'json'"),
    click.option("--no-trunc", is_flag=True, help="don't truncate output"),
    click.option("--tree", is_flag=True, hidden=True),
]


def _with_options(opts: list) -> Any:
    def deco(fn: Any) -> Any:
        for o in reversed(opts):
            fn = o(fn)
        return fn
    return deco


@click.command("images")
@click.argument("repository", required=False)
@_with_options(_images_options)
@daemon_errors
def images_cmd(repository: str | None, all_: bool, quiet: bool, digests: bool,
               filters: tuple[str, ...], format_: str | None, no_trunc: bool,
               tree: bool) -> None:
    """List images."""
    _images(repository, all_, quiet, digests, filters, format_, no_trunc)


# --------------------------------------------------------------------------- inspect / history


@click.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "format_", help="format the output with a Go template")
@daemon_errors
def inspect_cmd(names: tuple[str, ...], format_: str | None) -> None:
    """Display detailed information on one or more images."""
    c = client()
    found: list[Any] = []
    errors: list[str] = []
    for n in names:
        try:
            found.append(c.inspect_image(n))
        except APIError as e:
            if e.status != 404:
                raise
            errors.append(e.message)
    if format_:
        tmpl_out = [fmt.render(format_, obj) for obj in found]
        click.echo("".join(tmpl_out), nl=False)
    else:
        click.echo(dump_json(found))
    if errors:
        for m in errors:
            click.echo(f"Error response from daemon: {m}", err=True)
        sys.exit(1)


def _ellipsis(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


@click.command("history")
@click.argument("name")
@click.option("-H", "--human", type=bool, default=True, show_default=True,
              help="print sizes and dates in human readable format")
@click.option("--no-trunc", is_flag=True, help="don't truncate output")
@click.option("-q", "--quiet", is_flag=True, help="only show image IDs")
@click.option("--format", "format_", help="format output with a Go template, 'table' or 'json'")
@click.option("--platform", hidden=True)
@daemon_errors
def history_cmd(name: str, human: bool, no_trunc: bool, quiet: bool, format_: str | None,
                platform: str | None) -> None:
    """Show the history of an image."""
    items = client().history(name) or []
    trunc = not no_trunc
    if quiet:
        for h in items:
            click.echo(fmt.short_id(str(h.get("Id", "")), trunc))
        return
    rows = []
    for h in items:
        created = h.get("Created")
        by = str(h.get("CreatedBy") or "").replace("\t", " ")
        size = int(h.get("Size") or 0)
        hid = str(h.get("Id") or "<missing>")
        rows.append(fmt.Row("history", {
            "ID": hid if hid == "<missing>" else fmt.short_id(hid, trunc),
            "CreatedSince": (lambda c=created: fmt.time_ago(c)) if human else (
                lambda c=created: _rfc3339(c)),
            "CreatedAt": lambda c=created: _rfc3339(c),
            "CreatedBy": _ellipsis(by, 45) if trunc else by,
            "Size": fmt.human_size(size) if human else str(size),
            "Comment": str(h.get("Comment") or ""),
        }))
    click.echo(fmt.render_list(format_, rows, HISTORY_TABLE, HISTORY_HEADERS), nl=False)


def _rfc3339(v: Any) -> str:
    from datetime import datetime

    t = fmt.parse_time(v)
    if t is None:
        return ""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- tag / rmi / prune


@click.command("tag")
@click.argument("source")
@click.argument("target")
@daemon_errors
def tag_cmd(source: str, target: str) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    if "@" in target:
        raise ClientError("refusing to create a tag with a digest reference")
    ref = _parse(target)
    client().tag(source, ref.familiar_name(), ref.tag)


@click.command("rmi")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="force removal of the image")
@click.option("--no-prune", is_flag=True, help="do not delete untagged parents")
@daemon_errors
def rmi_cmd(names: tuple[str, ...], force: bool, no_prune: bool) -> None:
    """Remove one or more images."""
    c = client()
    failed = False
    for n in names:
        try:
            for item in c.remove_image(n, force=force, noprune=no_prune) or []:
                for k in ("Untagged", "Deleted"):
                    if item.get(k):
                        click.echo(f"{k}: {item[k]}")
        except APIError as e:
            click.echo(f"Error response from daemon: {e.message}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@click.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="remove all unused images, not just "
                                                        "dangling ones")
@click.option("-f", "--force", is_flag=True, help="do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="filters (e.g. until=<timestamp>)")
@daemon_errors
def prune_cmd(all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused images."""
    f = _filters(filters)
    f["dangling"] = ["false" if all_ else "true"]
    if not force:
        what = ("all images without at least one container associated to them" if all_ else
                "all dangling images")
        click.echo(f"WARNING! This will remove {what}.")
        if not sys.stdin.isatty() and not sys.stdin.readable():
            return
        click.echo("Are you sure you want to continue? [y/N] ", nl=False)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return
    report = client().prune_images(f)
    deleted = report.get("ImagesDeleted") or []
    if deleted:
        click.echo("Deleted Images:")
        for item in deleted:
            if item.get("Untagged"):
                click.echo(f"untagged: {item['Untagged']}")
            if item.get("Deleted"):
                click.echo(f"deleted: {item['Deleted']}")
        click.echo()
    click.echo(f"Total reclaimed space: {fmt.human_size(int(report.get('SpaceReclaimed') or 0))}")


# --------------------------------------------------------------------------- save / load


@click.command("save")
@click.argument("names", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="write to a file, instead of STDOUT")
@click.option("--platform", hidden=True)
@daemon_errors
def save_cmd(names: tuple[str, ...], output: str | None, platform: str | None) -> None:
    """Save one or more images to a tar archive (streamed to STDOUT by default)."""
    if output is None and sys.stdout.isatty():
        raise ClientError("cowardly refusing to save to a terminal. Use the -o flag or "
                          "redirect")
    write_output(client().save(list(names)).chunks(), output)


@click.command("load")
@click.option("-i", "--input", "input_", type=click.Path(dir_okay=False, exists=True),
              help="read from tar archive file, instead of STDIN")
@click.option("-q", "--quiet", is_flag=True, help="suppress the load output")
@click.option("--platform", hidden=True)
@daemon_errors
def load_cmd(input_: str | None, quiet: bool, platform: str | None) -> None:
    """Load an image from a tar archive or STDIN."""
    if input_ is None:
        if sys.stdin.isatty():
            raise ClientError("requested load from stdin, but stdin is empty")
        stream = client().load(sys.stdin.buffer, quiet=quiet)
        _show_load(stream)
        return
    size = os.path.getsize(input_)
    with open(input_, "rb") as f:
        _show_load(client().load(f, quiet=quiet, size=size))


def _show_load(stream: Iterator[dict[str, Any]]) -> None:
    for m in stream:
        if m.get("stream"):
            click.echo(m["stream"], nl=False)
        elif m.get("status"):
            click.echo(m["status"])


# --------------------------------------------------------------------------- login / logout


def _server(server: str | None) -> tuple[str, str]:
    """(the address sent to the daemon, the registry host for the credential store)."""
    if not server:
        return INDEX_SERVER, "docker.io"
    from sampan.registry.credentials import normalize_host

    host = normalize_host(server)
    return (INDEX_SERVER if host == "docker.io" else host), host


@click.command("login")
@click.argument("server", required=False)
@click.option("-u", "--username", help="username")
@click.option("-p", "--password", help="password or personal access token")
@click.option("--password-stdin", is_flag=True, help="take the password from stdin")
@daemon_errors
def login_cmd(server: str | None, username: str | None, password: str | None,
              password_stdin: bool) -> None:
    """Log in to a registry (credentials are kept in Sampan's config file)."""
    from sampan.registry import credentials

    address, host = _server(server)
    if password and password_stdin:
        raise ClientError("--password and --password-stdin are mutually exclusive")
    if password_stdin:
        if not username:
            raise ClientError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
                   err=True)
    if not username:
        if not sys.stdin.isatty():
            raise ClientError("Cannot perform an interactive login from a non TTY device")
        username = click.prompt("Username", default="", show_default=False).strip()
        if not username:
            raise ClientError("Username is required")
    if not password:
        if not sys.stdin.isatty():
            raise ClientError("Cannot perform an interactive login from a non TTY device")
        password = click.prompt("Password", hide_input=True, default="", show_default=False)
        if not password:
            raise ClientError("Password is required")
    result = client().login({"username": username, "password": password,
                             "serveraddress": address}) or {}
    token = result.get("IdentityToken") or ""
    path = credentials.store(host, username=username, password="" if token else password,
                             identitytoken=token)
    if not token:
        click.echo(f"WARNING! Your password will be stored unencrypted in {path}.", err=True)
    click.echo(result.get("Status") or "Login Succeeded")


@click.command("logout")
@click.argument("server", required=False)
@daemon_errors
def logout_cmd(server: str | None) -> None:
    """Log out from a registry (forget the credentials in Sampan's config file)."""
    from sampan.registry import credentials

    address, host = _server(server)
    if credentials.erase(host):
        click.echo(f"Removing login credentials for {address}")
    else:
        click.echo(f"Not logged in to {address}")


# --------------------------------------------------------------------------- `image` group


@click.group("image")
def image_group() -> None:
    """Manage images."""


@click.command("ls")
@_with_options(_images_options)
@click.argument("repository", required=False)
@daemon_errors
def image_ls(repository: str | None, all_: bool, quiet: bool, digests: bool,
             filters: tuple[str, ...], format_: str | None, no_trunc: bool,
             tree: bool) -> None:
    """List images."""
    _images(repository, all_, quiet, digests, filters, format_, no_trunc)


image_group.add_command(image_ls, "ls")
image_group.add_command(image_ls, "list")
image_group.add_command(inspect_cmd, "inspect")
image_group.add_command(rmi_cmd, "rm")
image_group.add_command(rmi_cmd, "remove")
image_group.add_command(prune_cmd, "prune")
image_group.add_command(pull_cmd, "pull")
image_group.add_command(push_cmd, "push")
image_group.add_command(tag_cmd, "tag")
image_group.add_command(save_cmd, "save")
image_group.add_command(load_cmd, "load")
image_group.add_command(history_cmd, "history")

COMMANDS = [pull_cmd, push_cmd, images_cmd, history_cmd, tag_cmd, rmi_cmd, login_cmd,
            logout_cmd, save_cmd, load_cmd, image_group]

__all__ = ["COMMANDS", "IMAGE_HEADERS", "image_rows", "state"]
