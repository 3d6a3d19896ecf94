"""packaging/openwrt: the procd init script, its UCI → daemon.json mapping and the package
Makefile, tested as far as they can be off a router.

The init script runs under busybox ash (OpenWrt's shell) through openwrt_harness.sh, which plays
UCI (config_load/config_get/config_get_bool/config_list_foreach over a UCI file) and procd
(records every procd_* call). The daemon.json it generates starts a real sampand, which must then
stay quiet: no write system call while idle (flash wear on a router)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "packaging" / "openwrt"
INIT = PKG / "files" / "sampand.init"
HARNESS = Path(__file__).with_name("openwrt_harness.sh")
BUSYBOX = shutil.which("busybox")

needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="no busybox (OpenWrt's ash)")


def shells() -> list[list[str]]:
    out = []
    if BUSYBOX:
        out.append([BUSYBOX, "sh"])
    for sh in ("dash", "bash"):
        if shutil.which(sh):
            out.append([shutil.which(sh)])
    return out


@pytest.mark.parametrize("path", sorted(p.name for p in (PKG / "files").iterdir()
                                        if p.name != "sampan.config"))
def test_shell_syntax(path):
    for sh in shells():
        r = subprocess.run([*sh, "-n", str(PKG / "files" / path)], capture_output=True,
                           text=True)
        assert r.returncode == 0, (sh, r.stderr)


def run_init(tmp_path: Path, uci: str, fn: str = "start_service"):
    conf = tmp_path / "uci"
    conf.mkdir(exist_ok=True)
    (conf / "sampan").write_text(uci)
    gen = tmp_path / "run" / "daemon.json"
    env = dict(os.environ, UCI_CONFIG_DIR=str(conf), HARNESS_GENERATED=str(gen))
    r = subprocess.run([BUSYBOX, "sh", str(HARNESS), str(INIT), fn], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    calls = [line.split("\t")[1:] for line in r.stdout.splitlines() if line.startswith("procd")]
    return calls, gen


@needs_busybox
def test_shipped_config_maps_to_flash_sparing_daemon_json(tmp_path):
    calls, gen = run_init(tmp_path, (PKG / "files" / "sampan.config").read_text())
    doc = json.loads(gen.read_text())
    assert doc == {
        "data-root": "/opt/sampan", "exec-root": "/var/run/sampan",
        "log-root": "/tmp/sampan/logs",
        "hosts": ["unix:///var/run/sampan/sampan.sock"], "log-level": "warn",
        "live-restore": True, "log-driver": "json-file",
        "log-opts": {"max-size": "1m", "max-file": "2"},
    }
    assert calls == [
        ["open_instance"],
        ["set_param", "command", "/usr/bin/sampand", "--config-file", str(gen)],
        ["set_param", "respawn", "3600", "5", "5"],
        ["set_param", "stdout", "1"], ["set_param", "stderr", "1"],
        ["set_param", "file", "/etc/config/sampan"],
        ["set_param", "limits", "nofile=65536 65536"],
        ["close_instance"],
    ]
    assert run_init(tmp_path, "", "service_triggers")[0] == [["add_reload_trigger", "sampan"]]


@needs_busybox
def test_every_option_and_quoting(tmp_path):
    uci = """
config globals 'globals'
\toption data_root "/mnt/sda1/my sampan"
\toption exec_root '/tmp/run/s'
\toption log_root '/tmp/run/s logs'
\tlist hosts 'unix:///tmp/run/s/sampan.sock'
\tlist hosts 'tcp://127.0.0.1:2375'
\toption log_level 'debug'
\toption storage_driver 'vfs'
\tlist insecure_registries '192.168.1.10:5000'
\tlist insecure_registries '10.0.0.0/8'
\tlist registry_mirrors 'https://mirror.example.org'
\toption live_restore 'off'
\toption log_max_size '512k'
\toption log_max_file '5'
\toption bridge 'none'
\toption bip '172.30.0.1/16'
\toption respawn_retry '0'
"""
    calls, gen = run_init(tmp_path, uci)
    doc = json.loads(gen.read_text())
    assert doc["data-root"] == "/mnt/sda1/my sampan"
    assert doc["log-root"] == "/tmp/run/s logs"
    assert doc["hosts"] == ["unix:///tmp/run/s/sampan.sock", "tcp://127.0.0.1:2375"]
    assert doc["insecure-registries"] == ["192.168.1.10:5000", "10.0.0.0/8"]
    assert doc["registry-mirrors"] == ["https://mirror.example.org"]
    assert doc["storage-driver"] == "vfs" and doc["log-level"] == "debug"
    assert doc["live-restore"] is False
    assert doc["log-opts"] == {"max-size": "512k", "max-file": "5"}
    assert doc["bridge"] == "none" and doc["bip"] == "172.30.0.1/16"
    assert ["set_param", "respawn", "3600", "5", "0"] in calls
    # JSON special characters in a value stay one string
    calls, gen = run_init(tmp_path, "config globals 'globals'\n"
                                    "\toption data_root '/a\"b\\\\c'\n"
                                    "\toption log_driver 'none'\n"
                                    "\toption log_root 'none'\n")
    doc = json.loads(gen.read_text())
    assert doc["data-root"] == '/a"b\\\\c' and doc["log-driver"] == "none"
    assert "log-opts" not in doc and "hosts" not in doc
    assert "log-root" not in doc  # 'none': in each container's directory, as docker does
    # an option left empty gets its default, as OpenWrt's config_get gives it
    _, gen = run_init(tmp_path, "config globals 'globals'\n\toption log_root ''\n")
    assert json.loads(gen.read_text())["log-root"] == "/tmp/sampan/logs"


@needs_busybox
def test_disabled_starts_nothing(tmp_path):
    calls, gen = run_init(tmp_path, "config globals 'globals'\n\toption enabled '0'\n")
    assert calls == [] and not gen.exists()


def io_counters(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        k, v = line.split(":")
        out[k] = int(v)
    return out


def request(sock: Path, path: str) -> tuple[int, dict]:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        raw, body = body, b""
        while raw:
            size, _, rest = raw.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            body, raw = body + rest[:n], rest[n + 2:]
    return int(head.split()[1]), json.loads(body or b"null")


@needs_busybox
@pytest.mark.skipif(os.geteuid() != 0, reason="sampand needs root")
def test_sampand_runs_with_the_generated_config_and_idles_quietly(tmp_path):
    root = tmp_path / "sd"
    uci = f"""
config globals 'globals'
\toption data_root '{root}/data'
\toption exec_root '{root}/exec'
\toption log_root '{root}/logs'
\tlist hosts 'unix://{root}/exec/sampan.sock'
\toption log_level 'info'
\tlist insecure_registries '192.168.1.10:5000'
\tlist registry_mirrors 'https://mirror.example.org'
\toption bridge 'none'
"""
    calls, gen = run_init(tmp_path, uci)
    command = next(c[2:] for c in calls if c[:2] == ["set_param", "command"])
    assert command[0] == "/usr/bin/sampand"
    import sampan

    # the sampan this test imports: a source tree in CI has no built extension
    env = dict(os.environ, PYTHONPATH=str(Path(sampan.__file__).resolve().parents[1]))
    argv = [sys.executable, "-m", "sampan.daemon.main", *command[1:]]
    r = subprocess.run([*argv, "--validate"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    log = open(tmp_path / "sampand.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    sock = root / "exec" / "sampan.sock"
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, (tmp_path / "sampand.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "sampand.log").read_text()
            time.sleep(0.05)
        time.sleep(0.2)
        st, info = request(sock, "/info")
        assert st == 200
        assert info["DockerRootDir"] == f"{root}/data"
        reg = info["RegistryConfig"]
        assert "192.168.1.10:5000" in json.dumps(reg["IndexConfigs"]) or \
            "192.168.1.10:5000" in json.dumps(reg)
        assert reg["Mirrors"] == ["https://mirror.example.org/"] or \
            reg["Mirrors"] == ["https://mirror.example.org"]
        assert info["LiveRestoreEnabled"] is True
        # the log root is made at start-up, owner-only
        assert (root / "logs").stat().st_mode & 0o777 == 0o700
        # idle: no write system call at all for a while (on flash, every write wears it)
        time.sleep(0.5)
        before = io_counters(proc.pid)
        mtimes = {p: p.stat().st_mtime_ns for p in (root / "data").rglob("*")}
        time.sleep(4)
        after = io_counters(proc.pid)
        assert after["syscw"] == before["syscw"], (before, after)
        assert after["write_bytes"] == before["write_bytes"]
        assert {p: p.stat().st_mtime_ns for p in (root / "data").rglob("*")} == mtimes
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        finally:
            log.close()
    assert proc.returncode == 0, (tmp_path / "sampand.log").read_text()


def test_makefile_covers_every_router_wheel():
    mk = (PKG / "Makefile").read_text()
    plats = dict(re.findall(r"^SAMPAN_WHEEL_PLATFORM_(\w+):=(\S+)$", mk, re.M))
    wheels = (REPO / "scripts" / "build-wheels").read_text()
    musl = set(re.findall(r'"(musllinux_1_2_\w+)"', wheels))
    assert musl and musl == set(plats.values())
    # the build tags that tell wheels of one platform tag apart (mips/mipsel)
    builds = dict(re.findall(r"^SAMPAN_WHEEL_BUILD_(\w+):=(\S+)-$", mk, re.M))
    assert set(re.findall(r'"(\d\w+)"\),', wheels)) == set(builds.values()) == {"1mipsel"}
    # every file the Makefile installs is in the tree
    for name in re.findall(r"\./files/([\w.]+)", mk):
        assert (PKG / "files" / name).is_file(), name
    assert "USE_PROCD=1" in INIT.read_text() and "respawn" in INIT.read_text()
    for dep in ("python3-light", "python3-click", "python3-h11", "python3-sqlite3",
                "python3-openssl", "kmod-veth"):
        assert f"+{dep}" in mk
    assert "+python3-zstandard" not in mk          # the optional extra stays optional
