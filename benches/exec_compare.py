#!/usr/bin/env python3
"""Interactive I/O latency: `exec` and `run -i` through sampand (Rust and Python monitors)
side by side with podman, in one loop whose order rotates every iteration.

- ``api-exec/<monitor>``: exec create + hijacked start + output to the end + inspect, over
  sampand's socket from this process (the daemon's and the monitor's cost, no client start-up);
- ``docker-exec/<monitor>``: ``docker exec box true`` (the real docker CLI) against sampand;
- ``sampan-exec/<monitor>``: ``sampan exec box true`` (pays for starting Python and the CLI);
- ``podman-exec``: ``podman exec pbox true`` (conmon + crun/runc);
- ``docker-run-i/<monitor>``: ``echo hi | docker run -i --rm busybox cat`` against sampand;
- ``podman-run-i``: ``echo hi | podman run -i --rm --network none busybox cat``.

Run as root: ``python3 benches/exec_compare.py [-n N]`` (default 20). Prints median, p90 and
min per case and the ratios against podman. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "tests" / "daemon"))
sys.path.insert(0, str(REPO / "tests" / "containers"))


def api_exec(sock_path: str) -> None:
    def req(method: str, path: str, body: dict | None, upgrade: bool = False) -> bytes:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock_path)
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: d\r\nConnection: " + \
            ("Upgrade\r\nUpgrade: tcp\r\n" if upgrade else "close\r\n")
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        s.sendall(head.encode() + b"\r\n" + data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        s.close()
        return out

    r = req("POST", "/v1.45/containers/box/exec",
            {"Cmd": ["true"], "AttachStdout": True, "AttachStderr": True})
    eid = json.loads(r.split(b"\r\n\r\n", 1)[1])["Id"]
    req("POST", f"/v1.45/exec/{eid}/start", {"Detach": False}, upgrade=True)
    info = json.loads(req("GET", f"/v1.45/exec/{eid}/json", None).split(b"\r\n\r\n", 1)[1])
    if info["ExitCode"] != 0:
        raise RuntimeError(f"exec failed: {info}")


def run(argv: list[str], env: dict, stdin: bytes | None = None) -> None:
    p = subprocess.run(argv, env=env, input=stdin, capture_output=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{argv}: {p.returncode} {p.stderr[-500:]!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    args = ap.parse_args()
    from conftest import start_daemon
    from daemonlib import _pythonpath, sampan_argv
    from interactive import stop_daemon
    from sampan.containers import monitorbin
    from sampan.demoimage import docker_archive

    archive = docker_archive("busybox:latest")
    tmp = Path(tempfile.mkdtemp(prefix="sampan-exec-bench-", dir="/tmp"))
    daemons = {}
    kinds = ["rust", "python"] if os.access(monitorbin.BINARY, os.X_OK) else ["python"]
    cases: dict[str, callable] = {}
    podman = shutil.which("podman")
    try:
        for kind in kinds:
            old = os.environ.pop("SAMPAN_MONITOR", None)
            if kind == "python":
                os.environ["SAMPAN_MONITOR"] = "python"
            d = start_daemon(tmp / kind, archive)
            os.environ.pop("SAMPAN_MONITOR", None)
            if old is not None:
                os.environ["SAMPAN_MONITOR"] = old
            daemons[kind] = d
            st, r = d.json("POST", "/containers/create?name=box",
                           {"Image": "busybox", "Cmd": ["sleep", "3600"]})
            assert st == 201, r
            assert d.request("POST", "/containers/box/start")[0] == 204
            denv = dict(os.environ, DOCKER_HOST=d.host, DOCKER_CONFIG=str(tmp / "dcfg"))
            senv = dict(os.environ, SAMPAN_HOST=d.host, PYTHONPATH=_pythonpath())
            sock = str(d.sock)
            cases[f"api-exec/{kind}"] = lambda sock=sock: api_exec(sock)
            if shutil.which("docker"):
                cases[f"docker-exec/{kind}"] = lambda e=denv: run(
                    ["docker", "exec", "box", "true"], e)
                cases[f"docker-run-i/{kind}"] = lambda e=denv: run(
                    ["docker", "run", "-i", "--rm", "busybox", "cat"], e, b"hi\n")
            cases[f"sampan-exec/{kind}"] = lambda e=senv: run(
                [*sampan_argv(), "exec", "box", "true"], e)
        if podman:
            subprocess.run([podman, "rm", "-f", "pbox"], capture_output=True, check=False)
            p = subprocess.run([podman, "run", "-d", "--name", "pbox", "--network", "none",
                                "busybox", "sleep", "3600"], capture_output=True, check=False)
            if p.returncode == 0:
                cases["podman-exec"] = lambda: run([podman, "exec", "pbox", "true"],
                                                   dict(os.environ))
                cases["podman-run-i"] = lambda: run(
                    [podman, "run", "-i", "--rm", "--network", "none", "busybox", "cat"],
                    dict(os.environ), b"hi\n")
            else:
                print(f"podman unavailable: {p.stderr.decode()[-300:]}")
        names = list(cases)
        for name in names:  # warm-up
            cases[name]()
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.n):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                t = time.perf_counter()
                cases[name]()
                times[name].append((time.perf_counter() - t) * 1000)
        print(f"{'case':24} {'median':>9} {'p90':>9} {'min':>9}   (ms, n={args.n})")
        med = {}
        for name in names:
            v = sorted(times[name])
            med[name] = statistics.median(v)
            print(f"{name:24} {med[name]:9.1f} {v[int(len(v) * 0.9) - 1]:9.1f} {v[0]:9.1f}")
        for kind in kinds:
            for what in ("exec", "run-i"):
                ours, theirs = f"docker-{what}/{kind}", f"podman-{what}"
                if ours in med and theirs in med:
                    print(f"{ours} / {theirs}: {med[ours] / med[theirs]:.2f}")
    finally:
        if podman:
            subprocess.run([podman, "rm", "-f", "pbox"], capture_output=True, check=False)
        for d in daemons.values():
            stop_daemon(d)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
