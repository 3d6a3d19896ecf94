"""The `sampan` CLI's image and system verbs against sampand (fake image service)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

from daemonlib import _pythonpath, sampan_argv


def test_no_daemon_exits_125_with_a_hint(tmp_path, shared_daemon):
    r = shared_daemon.sampan("-H", f"unix://{tmp_path}/none.sock", "images")
    assert r.returncode == 125
    assert f"Cannot connect to the Sampan daemon at unix://{tmp_path}/none.sock" in r.stderr
    assert "sampand &" in r.stderr and "--data-root" in r.stderr
    r = shared_daemon.sampan("version", env={"SAMPAN_HOST": f"unix://{tmp_path}/none.sock"})
    assert r.returncode == 125 and "Client:" in r.stdout
    r = shared_daemon.sampan("-H", "tcp://127.0.0.1:1", "info")
    assert r.returncode == 125


def test_version_and_info(shared_daemon):
    r = shared_daemon.sampan("version")
    assert r.returncode == 0, r.stderr
    assert "Server: Sampan Engine" in r.stdout and "API version:      1.45" in r.stdout
    r = shared_daemon.sampan("version", "--format", "{{.Server.ApiVersion}} {{.Client.Version}}")
    assert r.stdout == "1.45 0.1.0\n"
    r = shared_daemon.sampan("info")
    assert r.returncode == 0 and " Storage Driver: vfs" in r.stdout
    assert "  Reason: fake graph for tests" in r.stdout
    assert f"Sampan Root Dir: {shared_daemon.data}" in r.stdout
    r = shared_daemon.sampan("system", "info", "-f", "{{.Images}} {{json .ClientInfo.Debug}}")
    assert r.stdout == "3 false\n"
    r = shared_daemon.sampan("info", "--format", "{{.Nope.Deeper}} {{nofunc}}")
    assert r.returncode == 1 and 'function "nofunc" not defined' in r.stderr


def test_images_table_and_flags(shared_daemon):
    r = shared_daemon.sampan("images")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "REPOSITORY                TAG       IMAGE ID       CREATED             SIZE"
    assert lines[1].split()[:2] == ["localhost:5000/team/app", "1.0"]
    assert lines[-1].split() == ["busybox", "latest", lines[-1].split()[2], "2", "weeks", "ago",
                                 "4.26MB"]
    assert len(lines) == 4 and lines[2].split()[:2] == ["<none>", "<none>"]  # dangling
    r = shared_daemon.sampan("images", "-a", "--digests")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["REPOSITORY", "TAG", "DIGEST", "IMAGE"]
    assert len(lines) == 4 and any(ln.startswith("<none>") for ln in lines)
    assert all("sha256:" in ln for ln in lines[1:] if not ln.startswith("<none>"))
    r = shared_daemon.sampan("images", "-q")
    assert all(len(x) == 12 for x in r.stdout.split()) and len(r.stdout.split()) == 3
    r = shared_daemon.sampan("images", "-q", "--no-trunc")
    assert all(x.startswith("sha256:") and len(x) == 71 for x in r.stdout.split())
    r = shared_daemon.sampan("images", "busybox", "--format", "{{.Repository}}:{{.Tag}}")
    assert r.stdout == "busybox:latest\n"
    r = shared_daemon.sampan("images", "--filter", "label=tier", "--format", "{{.Tag}}")
    assert r.stdout == "1.0\n"
    r = shared_daemon.sampan("image", "ls", "--format", "json")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert {x["Repository"] for x in rows} == {"busybox", "localhost:5000/team/app", "<none>"}
    assert set(rows[0]) >= {"ID", "Repository", "Tag", "Size", "CreatedSince", "CreatedAt"}
    r = shared_daemon.sampan("images", "--format", "table {{.Repository}}\\t{{.Size}}")
    assert r.stdout.splitlines()[0] == "REPOSITORY                SIZE"
    r = shared_daemon.sampan("images", "--format", "{{.Bogus}}")
    assert r.returncode == 1 and "can't evaluate field Bogus" in r.stderr
    r = shared_daemon.sampan("images", "--filter", "nonsense")
    assert r.returncode == 1 and "bad format of filter" in r.stderr
    r = shared_daemon.sampan("images", "--filter", "bogus=1")
    assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: invalid "
                                                     "filter 'bogus'")


def test_inspect_and_history(shared_daemon):
    r = shared_daemon.sampan("image", "inspect", "busybox")
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data[0]["RepoTags"] == ["busybox:latest"]
    assert r.stdout.startswith("[\n    {\n        \"Id\"")
    r = shared_daemon.sampan("image", "inspect", "-f", "{{.Os}}/{{.Architecture}}",
                             "busybox", "localhost:5000/team/app:1.0")
    assert r.stdout == "linux/amd64\nlinux/amd64\n"
    r = shared_daemon.sampan("image", "inspect", "busybox", "nosuch")
    assert r.returncode == 1 and len(json.loads(r.stdout)) == 1
    assert "No such image: nosuch" in r.stderr
    r = shared_daemon.sampan("history", "busybox")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert "and a long tai…" in lines[1] and lines[2].startswith("<missing>")
    r = shared_daemon.sampan("history", "--no-trunc", "-H", "false", "--format",
                             "{{.Size}}|{{.CreatedBy}}", "busybox")
    assert r.stdout.splitlines()[1] == "4261375|/bin/sh -c #(nop) ADD file:abc in / "
    r = shared_daemon.sampan("image", "history", "-q", "busybox")
    assert r.stdout.splitlines()[1] == "<missing>"


def test_pull_plain_and_quiet(daemon):
    r = daemon.sampan("pull", "alpine")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "Using default tag: latest"
    assert out[1] == "latest: Pulling from alpine"
    assert "aaaaaaaaaaaa: Pull complete" in out
    assert not any("Downloading" in ln for ln in out)  # no bars without a terminal
    assert out[-1] == "docker.io/library/alpine:latest"
    r = daemon.sampan("pull", "-q", "localhost:5000/x/y:2", "--platform", "linux/arm64")
    assert r.returncode == 0 and r.stdout == "localhost:5000/x/y:2\n"
    r = daemon.sampan("pull", "broken/x:1")
    assert r.returncode == 1 and r.stderr.strip() == "failed to register layer: broken layer"
    r = daemon.sampan("pull", "missing/x:1")
    assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: manifest")
    r = daemon.sampan("pull", "Bad:Name")
    assert r.returncode == 1 and "invalid reference format" in r.stderr
    r = daemon.sampan("pull", "-a", "alpine")
    assert r.returncode == 1 and "all tags" in r.stderr


def test_pull_on_a_terminal_updates_lines_in_place(daemon):
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on a pty
        os.environ["PYTHONPATH"] = _pythonpath()
        os.environ["SAMPAN_HOST"] = daemon.host
        argv = sampan_argv() + ["pull", "alpine:3.19"]
        os.execv(argv[0], argv)
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 1)
        if not r:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    text = out.decode()
    assert "\x1b[2A" in text or "\x1b[1A" in text  # cursor moves up to rewrite layer lines
    assert "Downloading [" in text and "1kB/1kB" in text
    assert "docker.io/library/alpine:3.19" in text


def test_push_tag_rmi_prune(daemon):
    r = daemon.sampan("push", "localhost:5000/team/app:1.0")
    assert r.returncode == 0 and "1.0: digest: sha256:" in r.stdout
    r = daemon.sampan("push", "localhost:5000/team/nosuch:1")
    assert r.returncode == 1 and "No such image" in r.stderr
    assert daemon.sampan("tag", "busybox", "localhost:5000/bb:v1").returncode == 0
    r = daemon.sampan("tag", "busybox", "x@sha256:" + "a" * 64)
    assert r.returncode == 1 and "digest" in r.stderr
    r = daemon.sampan("image", "inspect", "-f", "{{json .RepoTags}}", "busybox")
    assert r.stdout.strip() == '["busybox:latest","localhost:5000/bb:v1"]'
    r = daemon.sampan("rmi", "localhost:5000/bb:v1", "nosuch")
    assert r.returncode == 1
    assert r.stdout == "Untagged: localhost:5000/bb:v1\n"
    assert r.stderr.strip() == "Error response from daemon: No such image: nosuch:latest"
    r = daemon.sampan("image", "prune")  # no -f: asks, and "no" keeps everything
    assert "WARNING! This will remove all dangling images." in r.stdout
    r = daemon.sampan("image", "prune", "-f")
    assert r.returncode == 0
    assert r.stdout.startswith("Deleted Images:\ndeleted: sha256:")
    assert r.stdout.endswith("Total reclaimed space: 2kB\n")
    r = daemon.sampan("image", "rm", "-f", "busybox")
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith("Deleted: sha256:")


def test_save_and_load(daemon, tmp_path):
    archive = tmp_path / "bb.tar"
    r = daemon.sampan("save", "-o", str(archive), "busybox")
    assert r.returncode == 0 and archive.stat().st_size > 300 * 1024
    r = daemon.sampan("save", "nosuch", "-o", str(tmp_path / "x.tar"))
    assert r.returncode == 1 and not (tmp_path / "x.tar").exists()
    data = daemon.sampan("image", "save", "busybox", input="").stdout
    assert len(data) > 0
    daemon.sampan("rmi", "-f", "busybox")
    r = daemon.sampan("load", "-i", str(archive))
    assert r.returncode == 0 and r.stdout == "Loaded image: busybox:latest\n"
    r = daemon.sampan("image", "load", input=archive.read_bytes())
    assert r.returncode == 0 and b"Loaded image: busybox:latest" in r.stdout
    r = daemon.sampan("load", "-q", input=b"garbage" * 10)
    assert r.returncode == 1 and b"invalid archive" in r.stderr


def test_login_logout(daemon, tmp_path):
    cfg = tmp_path / "cfg"
    env = {"SAMPAN_CONFIG": str(cfg)}
    r = daemon.sampan("login", "-u", "alice", "--password-stdin", "localhost:5000",
                      input="secret\n", env=env)
    assert r.returncode == 0 and r.stdout == "Login Succeeded\n", r.stderr
    saved = json.loads((cfg / "config.json").read_text())
    assert "localhost:5000" in saved["auths"]
    assert oct(os.stat(cfg / "config.json").st_mode & 0o777) == "0o600"
    r = daemon.sampan("login", "-u", "alice", "--password-stdin", "localhost:5000",
                      input="wrong\n", env=env)
    assert r.returncode == 1 and "incorrect username or password" in r.stderr
    r = daemon.sampan("login", "localhost:5000", input="", env=env)
    assert r.returncode == 1 and "non TTY" in r.stderr
    # the stored credentials go with a pull (the fake wants alice for private/*)
    r = daemon.sampan("login", "-u", "alice", "-p", "secret", env=env)
    assert r.returncode == 0 and "insecure" in r.stderr
    r = daemon.sampan("pull", "-q", "private/x:1", env=env)
    assert r.returncode == 0, r.stderr
    r = daemon.sampan("logout", env=env)
    assert r.stdout == "Removing login credentials for https://index.docker.io/v1/\n"
    r = daemon.sampan("logout", "localhost:5000", env=env)
    assert r.stdout == "Removing login credentials for localhost:5000\n"
    r = daemon.sampan("logout", "localhost:5000", env=env)
    assert r.stdout == "Not logged in to localhost:5000\n"
    r = daemon.sampan("pull", "-q", "private/x:2", env=env)
    assert r.returncode == 1 and "pull access denied" in r.stderr
    # docker's own config file is read too
    dcfg = tmp_path / "docker"
    dcfg.mkdir()
    import base64

    (dcfg / "config.json").write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {
        "auth": base64.b64encode(b"alice:secret").decode()}}}))
    r = daemon.sampan("pull", "-q", "private/x:3", env={**env, "DOCKER_CONFIG": str(dcfg)})
    assert r.returncode == 0, r.stderr


def test_system_df(shared_daemon):
    r = shared_daemon.sampan("system", "df")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert lines[1].split() == ["Images", "3", "0", "16.61MB", "16.61MB", "(100%)"]
    assert lines[2].split() == ["Containers", "0", "0", "0B", "0B"]
    r = shared_daemon.sampan("system", "df", "--format", "{{.Type}}={{.Size}}")
    assert r.stdout.splitlines()[0] == "Images=16.61MB"
    r = shared_daemon.sampan("system", "df", "-v")
    assert r.returncode == 0 and "Images space usage:" in r.stdout
    assert "SHARED SIZE" in r.stdout


def test_cli_help_lists_verbs():
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    r = subprocess.run(sampan_argv() + ["--help"], check=False, capture_output=True, text=True,
                       env=env)
    for verb in ("pull", "push", "images", "image", "history", "tag", "rmi", "login",
                 "logout", "save", "load", "system", "version", "info", "runtime"):
        assert f"  {verb}" in r.stdout
