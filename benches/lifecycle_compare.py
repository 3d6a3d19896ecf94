#!/usr/bin/env python3
"""Container lifecycle operations side by side with podman (runc), one run: pause+unpause,
top, update -m, stats, one healthcheck probe, and the delay from an action to its event on a
listening `GET /events`.

Both CLIs are timed as processes, as a user runs them; sampan's API round trip (what the CLI
costs without its Python start-up) is printed too. Both engines run the same busybox image
(sampan.demoimage, loaded into each). The order rotates every iteration; medians, p90 and
ratios of medians are printed. Nothing is asserted.

Run as root: ``PYTHONPATH=python python3 benches/lifecycle_compare.py [-n 15]``.
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
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "daemon"))
try:
    import sampan  # noqa: F401
except ImportError:  # a source tree that was not installed
    sys.path.insert(0, str(REPO / "python"))


def timed(argv: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)
    return time.perf_counter() - t


def timed_fn(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(len(xs) * 0.9))]
    return f"median {statistics.median(xs) * 1000:8.1f} ms   p90 {p90 * 1000:8.1f} ms"


def event_delay(host_sock: str, client, cid: str) -> float:
    """From the kill request to the kill event read by a listener already connected."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(host_sock)
    s.sendall(b"GET /events?filters=%7B%22event%22%3A%5B%22kill%22%5D%7D HTTP/1.1\r\n"
              b"Host: x\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    got = threading.Event()

    def read() -> None:
        data = b""
        while b"}\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        got.set()

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    client.request("POST", f"/containers/{cid}/kill", {"signal": "USR1"})
    got.wait(10)
    dt = time.perf_counter() - t0
    s.close()
    t.join()
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=15)
    ap.add_argument("--tmpdir", default="/tmp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    from daemonlib import Daemon, _pythonpath, mkdir, sampan_argv
    from sampan.client import Client
    from sampan.demoimage import docker_archive

    tmp = Path(tempfile.mkdtemp(prefix="sampan-lifebench-", dir=args.tmpdir))
    tmp.chmod(0o755)
    archive = tmp / "busybox.tar"
    archive.write_bytes(docker_archive("busybox:latest"))
    podman = shutil.which("podman")
    proot = tmp / "podman"
    pargs = [podman or "podman", "--root", str(proot / "root"), "--runroot",
             str(proot / "run"), "--storage-driver", "overlay", "--runtime", "runc",
             "--events-backend", "file"]
    prun = ["run", "--ulimit", "nofile=1024:4096", "--ulimit", "nproc=1024:4096"]
    results: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    d = None
    pcid = None
    try:
        d = Daemon(mkdir(tmp / "sampand"), fake=False)
        d.start()
        client = Client(d.host, timeout=120)
        st, _h, body = d.request("POST", "/images/load?quiet=1", archive.read_bytes(),
                                 {"Content-Type": "application/x-tar"})
        if st != 200:
            raise SystemExit(f"load failed: {body!r}")
        env = dict(os.environ, SAMPAN_HOST=d.host, PYTHONPATH=_pythonpath())
        sp = sampan_argv()
        loop = "trap : USR1; while :; do sleep 1; done"
        cid = client.post_json("/containers/create", body={
            "Image": "busybox", "Cmd": ["sh", "-c", loop],
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 3600 * 10 ** 9}})["Id"]
        client.request("POST", f"/containers/{cid}/start")
        contenders = {
            "sampan pause+unpause (CLI)": lambda: timed([*sp, "pause", cid], env) +
            timed([*sp, "unpause", cid], env),
            "sampan pause+unpause (API)": lambda: timed_fn(lambda: (
                client.request("POST", f"/containers/{cid}/pause"),
                client.request("POST", f"/containers/{cid}/unpause"))),
            "sampan top (CLI)": lambda: timed([*sp, "top", cid], env),
            "sampan top (API)": lambda: timed_fn(lambda: client.get_json(
                f"/containers/{cid}/top")),
            "sampan update -m (CLI)": lambda: timed([*sp, "update", "-m", "64m", cid], env),
            "sampan update (API)": lambda: timed_fn(lambda: client.post_json(
                f"/containers/{cid}/update", body={"Memory": 80 << 20})),
            "sampan stats one-shot (API)": lambda: timed_fn(lambda: client.get_json(
                f"/containers/{cid}/stats", {"stream": False, "one-shot": True})),
            "sampan healthcheck probe": lambda: timed(
                [sys.executable, "-S", "-B", "-m", "sampan.healthprobe",
                 str(d.exec / "runtime"), cid,
                 json.dumps({"args": ["true"], "cwd": "/", "env": ["PATH=/bin"],
                             "user": {"uid": 0, "gid": 0}, "terminal": False}),
                 str(tmp / "probe.pid")],
                dict(os.environ, PYTHONPATH=str(Path(sampan.__file__).parents[1]))),
            "sampan event delay (kill → event)": lambda: event_delay(str(d.sock), client, cid),
        }
        if podman:
            try:
                subprocess.run([*pargs, "load", "-q", "-i", str(archive)], check=True,
                               capture_output=True, timeout=300)
                r = subprocess.run([*pargs, *prun, "-d", "--health-cmd", "true",
                                    "--health-interval", "1h", "busybox", "sh", "-c", loop],
                                   check=True, capture_output=True, text=True, timeout=60)
                pcid = r.stdout.strip()
                contenders.update({
                    "podman pause+unpause": lambda: timed([*pargs, "pause", pcid]) +
                    timed([*pargs, "unpause", pcid]),
                    "podman top": lambda: timed([*pargs, "top", pcid]),
                    "podman update --memory": lambda: timed([*pargs, "update", "--memory",
                                                             "64m", pcid]),
                    "podman stats --no-stream": lambda: timed([*pargs, "stats", "--no-stream",
                                                               pcid]),
                    "podman healthcheck run": lambda: timed([*pargs, "healthcheck", "run",
                                                             pcid]),
                })
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                notes["podman"] = f"podman failed: {getattr(e, 'stderr', b'')!r}"[:300]
        else:
            notes["podman"] = "podman is not installed"
        names = list(contenders)
        for name in names:
            try:
                contenders[name]()
                results[name] = []
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                notes[name] = str(e)[:300]
        names = [n for n in names if n in results]
        for i in range(args.n):
            for name in names[i % len(names):] + names[:i % len(names)]:
                if name in notes:
                    continue
                try:
                    results[name].append(contenders[name]())
                except subprocess.CalledProcessError as e:  # reported, not fatal
                    notes[name] = f"failed at iteration {i}: {e.stderr!r}"[:300]
    finally:
        if pcid:
            subprocess.run([*pargs, "rm", "-f", pcid], capture_output=True)
        if d is not None:
            for c in d.json("GET", "/containers/json?all=1")[1] or []:
                d.request("DELETE", f"/containers/{c['Id']}?force=1")
            d.stop()
        if podman:
            subprocess.run([*pargs, "system", "reset", "-f"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.n} iterations")
    for name, xs in results.items():
        print(f"  {name:40s} {summary(xs)}")
    pairs = [("sampan pause+unpause (CLI)", "podman pause+unpause"),
             ("sampan top (CLI)", "podman top"),
             ("sampan update -m (CLI)", "podman update --memory"),
             ("sampan stats one-shot (API)", "podman stats --no-stream"),
             ("sampan healthcheck probe", "podman healthcheck run")]
    for a, b in pairs:
        if results.get(a) and results.get(b):
            ratio = statistics.median(results[a]) / statistics.median(results[b])
            print(f"  {a} / {b}: {ratio:.2f}")
    for k, v in notes.items():
        print(f"  note: {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
