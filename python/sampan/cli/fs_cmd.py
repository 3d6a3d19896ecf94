"""`sampan cp`, `sampan export`, `sampan diff` — docker's flags, path rules and messages.

cp follows docker's client: the container side is stat'ed (HEAD archive), the tar is made or
unpacked here with its first name component rebased to the destination's name, and the rules
are docker's: a trailing "/." copies a directory's contents, a directory is copied into an
existing directory, a file onto a file, and a destination ending in "/" must be a directory."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from typing import Any

import click

from sampan.cli.system_cmd import client, daemon_errors, write_output
from sampan.client import APIError

_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27


def _fail(msg: str, code: int = 1) -> None:
    click.echo(msg, err=True)
    sys.exit(code)


def _split_arg(arg: str) -> tuple[str | None, str]:
    """docker's splitCpArg: "CONTAINER:PATH", or a local path (absolute, or starting with ".",
    or without a colon)."""
    if os.path.isabs(arg) or arg.startswith("."):
        return None, arg
    name, sep, path = arg.partition(":")
    if not sep:
        return None, arg
    return name, path


def _stat(c: Any, ctr: str, path: str) -> dict[str, Any] | None:
    try:
        r = c.request("HEAD", f"/containers/{ctr}/archive", {"path": path})
    except APIError as e:
        if e.status == 404:
            try:  # is it the container or the path that is missing?
                c.get_json(f"/containers/{ctr}/json")
            except APIError as e2:
                raise e2 from None
            return None
        raise
    raw = r.headers.get("X-Docker-Container-Path-Stat")
    return json.loads(base64.b64decode(raw)) if raw else {}


def _has_trailing_dot(p: str) -> bool:
    return p == "." or p.endswith("/.")


@click.command("cp")
@click.option("-a", "--archive", is_flag=True, help="archive mode (copy all uid/gid "
              "information)")
@click.option("-L", "--follow-link", is_flag=True, help="always follow symbol link in SRC_PATH")
@click.option("-q", "--quiet", is_flag=True, help="suppress progress output")
@click.argument("src")
@click.argument("dest")
@daemon_errors
def cp_cmd(archive: bool, follow_link: bool, quiet: bool, src: str, dest: str) -> None:
    """Copy files/folders between a container and the local filesystem.

    sampan cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-
    sampan cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH"""
    sctr, spath = _split_arg(src)
    dctr, dpath = _split_arg(dest)
    if sctr is not None and dctr is not None:
        _fail("copying between containers is not supported")
    if sctr is None and dctr is None:
        _fail("must specify at least one container source")
    if sctr is not None:
        if not spath:
            _fail("error: path cannot be empty")
        size = _copy_from(sctr, spath, dpath, archive, follow_link)
        where = dpath
    else:
        if not dpath:
            _fail("error: path cannot be empty")
        size = _copy_to(spath, dctr or "", dpath, archive, follow_link)
        where = dest
    # docker prints this only to a terminal (and not with -q)
    if size is not None and not quiet and sys.stderr.isatty():
        from sampan.cli.volumes_cmd import human_size

        click.echo(f"Successfully copied {human_size(size)} to {where}", err=True)


# ------------------------------------------------------------------ container → local


def _copy_from(ctr: str, path: str, dest: str, archive: bool, follow: bool) -> int | None:
    from sampan.containers.fsview import View, extract

    c = client()
    c.timeout = None
    if not path.startswith("/"):
        path = "/" + path
    rebase_from = None
    if follow:
        st = _stat(c, ctr, path)
        if st is None:
            raise APIError(404, f"Could not find the file {path} in container {ctr}")
        if st.get("mode", 0) & _GO_SYMLINK:
            rebase_from = st["linkTarget"]
    req_path = rebase_from or path
    r = c.request("GET", f"/containers/{ctr}/archive", {"path": req_path}, stream=True)
    st = json.loads(base64.b64decode(r.headers.get("X-Docker-Container-Path-Stat") or "e30="))
    if dest == "-":
        out = sys.stdout.buffer
        for chunk in r.chunks():
            out.write(chunk)
        out.flush()
        return None
    src_name = st.get("name") or os.path.basename(req_path.rstrip("/"))
    if src_name == "/":
        src_name = "."  # the root's tar is named from "."
    src_is_dir = bool(st.get("mode", 0) & _GO_DIR)
    # docker names the copy after the path asked for, even when following a link
    want_name = os.path.basename(path.rstrip("/")) or src_name
    dest_abs = os.path.abspath(dest)
    try:
        dst = os.stat(dest_abs)
    except FileNotFoundError:
        dst = None
    if dst is not None and stat.S_ISDIR(dst.st_mode):
        if src_is_dir and _has_trailing_dot(path):
            into, rebase = dest_abs, (src_name, ".")
        else:
            into, rebase = dest_abs, (src_name, want_name)
    else:
        if dst is not None and src_is_dir:
            _fail(f"cannot copy a directory to a file: {dest}")  # docker: ErrCannotCopyDir
        if dst is None and dest.endswith("/"):
            _fail(f"no such directory: {dest}")
        into = os.path.dirname(dest_abs) or "/"
        if not os.path.isdir(into):
            _fail(f"no such directory: {os.path.dirname(dest) or into}")
        rebase = (src_name, os.path.basename(dest_abs))
    owner = None if archive and os.geteuid() == 0 else (os.geteuid(), os.getegid())

    class _Reader:
        def __init__(self) -> None:
            self.it = r.chunks()
            self.buf = b""
            self.count = 0

        def read(self, n: int = -1) -> bytes:
            while n < 0 or len(self.buf) < n:
                try:
                    chunk = next(self.it)
                    self.count += len(chunk)
                    self.buf += chunk
                except StopIteration:
                    break
            if n < 0:
                out, self.buf = self.buf, b""
            else:
                out, self.buf = self.buf[:n], self.buf[n:]
            return out

    reader = _Reader()
    with View.for_path(into) as view:
        extract(view, "/", reader, False, owner, rebase)
    return reader.count


# ------------------------------------------------------------------ local → container


def _copy_to(src: str, ctr: str, path: str, archive: bool, follow: bool) -> int | None:
    from sampan.containers.fsview import Entry, View, coalesce, tar_entry

    c = client()
    c.timeout = None
    if not path.startswith("/"):
        path = "/" + path
    params = {"noOverwriteDirNonDir": True, "copyUIDGID": archive}
    if src == "-":
        st = _stat(c, ctr, path)
        if st is None:
            raise APIError(404, f"Could not find the file {path} in container {ctr}")
        if not st.get("mode", 0) & _GO_DIR:
            _fail(f'destination "{ctr}:{path}" must be a directory')
        c.request("PUT", f"/containers/{ctr}/archive", dict(params, path=path),
                  body=iter(lambda: sys.stdin.buffer.read(1 << 16), b""),
                  headers={"Content-Type": "application/x-tar"})
        return None
    src_abs = os.path.abspath(src)
    try:
        lst = os.stat(src_abs) if follow else os.lstat(src_abs)
    except FileNotFoundError:
        _fail(f"lstat {src_abs}: no such file or directory")
    src_is_dir = stat.S_ISDIR(lst.st_mode)
    dst = _stat(c, ctr, path)
    if dst is not None and dst.get("mode", 0) & _GO_SYMLINK:
        path = dst["linkTarget"]
        dst = _stat(c, ctr, path)
    base = os.path.basename(src_abs.rstrip("/")) or "/"
    if dst is not None and dst.get("mode", 0) & _GO_DIR:
        into = path
        name = "." if (src_is_dir and _has_trailing_dot(src)) else base
    else:
        if dst is not None and src_is_dir:
            _fail(f"cannot copy a directory to a file: {ctr}:{path}")
        if dst is None and path.endswith("/"):
            _fail(f"no such directory: {ctr}:{path}")
        into = os.path.dirname(path.rstrip("/")) or "/"
        name = os.path.basename(path.rstrip("/"))
    parent, leaf = os.path.split(src_abs.rstrip("/") or "/")
    if follow and stat.S_ISLNK(os.lstat(src_abs).st_mode):
        parent, leaf = os.path.split(os.path.realpath(src_abs))

    sent = [0]

    def body():
        with View.for_path(parent or "/") as view:
            e = Entry(os.dup(view.root_fd), leaf, leaf, ())
            try:
                for chunk in coalesce(tar_entry(view, e, name)):
                    sent[0] += len(chunk)
                    yield chunk
            finally:
                e.close()

    c.request("PUT", f"/containers/{ctr}/archive", dict(params, path=into), body=body(),
              headers={"Content-Type": "application/x-tar"})
    return sent[0]


# ------------------------------------------------------------------ export, diff


@click.command("export")
@click.option("-o", "--output", help="write to a file, instead of STDOUT")
@click.argument("container")
@daemon_errors
def export_cmd(output: str | None, container: str) -> None:
    """Export a container's filesystem as a tar archive."""
    if not output and sys.stdout.isatty():
        _fail("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    c = client()
    c.timeout = None
    r = c.request("GET", f"/containers/{container}/export", stream=True)
    write_output(r.chunks(), output)


@click.command("diff")
@click.argument("container")
@daemon_errors
def diff_cmd(container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem."""
    changes = client().get_json(f"/containers/{container}/changes") or []
    kinds = {0: "C", 1: "A", 2: "D"}
    for ch in changes:
        click.echo(f"{kinds.get(ch['Kind'], '?')} {ch['Path']}")


COMMANDS = [cp_cmd, export_cmd, diff_cmd]
