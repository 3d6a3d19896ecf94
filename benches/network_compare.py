#!/usr/bin/env python3
"""Networking benchmarks (issue 5), side by side in one run:

1. **Bridge overhead**: the time `run --rm busybox true` takes on the default bridge minus the
   time with `--network none`, for sampan, podman and docker (each when available), in ONE
   loop whose order rotates every iteration. Sampan is measured two ways: through the CLI
   (`sampan run --rm`, like the others) and through the Engine API from this process
   (create, start, wait, delete: the daemon's own cost without the CLI's Python start-up).
2. **Throughput** container → host over the bridge against the host's loopback: a busybox
   container pipes `dd if=/dev/zero` into `nc` (which writes 1 KiB at a time) to a receiver in
   this process, once from the default bridge to the bridge's gateway address and once from
   `--network host` to 127.0.0.1 (same binary, same container, only the path differs); and
   `httpd` in the container serving a file this process downloads (sendfile: large writes).
   The same nc rounds, interleaved: a sampan network with docker's MTU 1500
   (`-o com.docker.network.driver.mtu=1500`), podman's bridge and host network, and a bare
   veth + bridge made here by hand in two network namespaces without any firewall rule (at
   MTU 1500 and 65520), against the loopback of that namespace at its MTU (65536) and at 1500:
   what the kernel's path costs, apart from anything Sampan or podman set up.

A sampand of its own runs on a temporary root with its own bridge (`--bridge`, `--bip` from a
free 10.x/24); podman gets busybox loaded from the same archive. Nothing is asserted: it prints
medians, p90 and the ratios (of medians, and the median of each round's ratio). Run as root:
`python3 benches/network_compare.py [-n N] [--rounds R] [--mtu N] [--skip-overhead]
[--json FILE]` (`--mtu` gives sampand an MTU; by default it picks its own, docs/network.md).
With MTU 1500 a writer of small chunks gets a fraction of loopback's throughput over any veth
bridge, and over a loopback set to MTU 1500 as well: the cost is per TCP segment."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
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
sys.path.insert(0, str(REPO / "python"))  # this tree, not an installed copy

from daemonlib import Daemon, mkdir  # noqa: E402


def free_subnet() -> ipaddress.IPv4Network:
    out = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"],
                         capture_output=True, text=True).stdout
    taken = []
    for line in out.splitlines():
        f = line.split()
        dst = f[1] if f[0] in ("local", "broadcast") else f[0]
        try:
            taken.append(ipaddress.IPv4Network(dst, strict=False))
        except ValueError:
            pass
    while True:
        n = ipaddress.IPv4Network(f"10.{secrets.randbelow(200) + 40}.{secrets.randbelow(256)}"
                                  ".0/24")
        if not any(n.overlaps(t) for t in taken):
            return n


# This host: crun refuses the hybrid cgroup layout and the default rlimits exceed what the
# sandbox allows, so podman runs with runc and explicit limits (the same for both networks).
PODMAN = ["podman", "--runtime", "runc", "run", "--rm", "--pull=never", "--ulimit",
          "nofile=1024:4096", "--ulimit", "nproc=1024:4096"]
BUSYBOX = "/bin/busybox"  # the binary of the demo image (sampan.demoimage): the same nc


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def timed(argv: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode()[-500:]}")
    return dt


def api_run(d: Daemon, network: str) -> float:
    body = json.dumps({"Image": "busybox", "Cmd": ["true"],
                       "HostConfig": {"NetworkMode": network}}).encode()
    t = time.perf_counter()
    st, _h, out = d.request("POST", "/containers/create", body,
                            {"Content-Type": "application/json"})
    cid = json.loads(out)["Id"]
    st, _h, out = d.request("POST", f"/containers/{cid}/start")
    if st != 204:
        raise RuntimeError(out)
    d.request("POST", f"/containers/{cid}/wait")
    d.request("DELETE", f"/containers/{cid}")
    return time.perf_counter() - t


_podman: list[bool] = []


def podman_ready(args: argparse.Namespace) -> bool:
    """podman with busybox loaded from the same archive as sampan's (once per run)."""
    if not _podman:
        ok = False
        if shutil.which("podman") and not args.no_podman:
            from sampan.demoimage import docker_archive

            with tempfile.NamedTemporaryFile(suffix=".tar") as f:
                f.write(docker_archive("busybox:latest"))
                f.flush()
                r = subprocess.run(["podman", "load", "-i", f.name], capture_output=True,
                                   text=True)
            ok = r.returncode == 0
            if not ok:
                print(f"podman: unavailable ({r.stderr.strip()[-200:]})")
        _podman.append(ok)
    return _podman[0]


def overhead(args: argparse.Namespace, d: Daemon, env: dict) -> dict:
    sampan_cli = [sys.executable, "-c", "import sys; from sampan.cli import main; "
                  "sys.argv[0] = 'sampan'; main()"]
    cases: dict[str, callable] = {}
    for net in ("none", "bridge"):
        cases[f"sampan-api/{net}"] = (lambda n=net: api_run(d, n))
        cases[f"sampan-cli/{net}"] = (lambda n=net: timed(
            sampan_cli + ["run", "--rm", "--network", n, "busybox", "true"], env))
    have_podman = podman_ready(args)
    if have_podman:
        for net in ("none", "bridge"):
            cases[f"podman/{net}"] = (lambda n=net: timed(
                PODMAN + ["--network", n, "localhost/busybox", "true"]))
    docker_ok = subprocess.run(["docker", "info"], capture_output=True).returncode == 0 \
        if shutil.which("docker") else False
    if docker_ok:
        for net in ("none", "bridge"):
            cases[f"docker/{net}"] = (lambda n=net: timed(
                ["docker", "run", "--rm", "--network", n, "busybox", "true"]))
    else:
        print("docker: unavailable (no dockerd running on this machine)")
    names = list(cases)
    for name in names:  # warm up
        cases[name]()
        cases[name]()
    res: dict[str, list[float]] = {n: [] for n in names}
    for i in range(args.n):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            res[name].append(cases[name]())
    print(f"\n== run --rm busybox true: default bridge vs --network none (N={args.n}) ==")
    print(f"{'case':22} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}")
    for name in names:
        xs = res[name]
        print(f"{name:22} {statistics.median(xs) * 1e3:10.1f} {pct(xs, 0.9) * 1e3:8.1f} "
              f"{min(xs) * 1e3:8.1f}")
    print("\nadded by the bridge (median(bridge) - median(none)):")
    summary = {}
    for eng in ("sampan-api", "sampan-cli", "podman", "docker"):
        if f"{eng}/bridge" in res:
            add = statistics.median(res[f"{eng}/bridge"]) - statistics.median(res[f"{eng}/none"])
            # paired differences are less noisy than the difference of medians
            paired = statistics.median(b - n for b, n in zip(res[f"{eng}/bridge"],
                                                              res[f"{eng}/none"]))
            summary[eng] = {"added_ms": add * 1e3, "paired_median_ms": paired * 1e3}
            print(f"  {eng:12} {add * 1e3:7.1f} ms   (median of paired differences "
                  f"{paired * 1e3:.1f} ms)")
    if have_podman and "sampan-cli" in summary:
        s_add = summary["sampan-cli"]["added_ms"]
        print("  sampan's added time is within the noise of this run" if s_add <= 0 else
              f"  podman/sampan-cli ratio of added time: "
              f"{summary['podman']['added_ms'] / s_add:.1f}x")
    return {"raw": res, "summary": summary}


class Receiver:
    def __init__(self, netns_path: str = "") -> None:
        """Listening on every address of the host's namespace, or of `netns_path`'s (a
        socket stays in the namespace it was made in)."""
        if netns_path:
            from sampan.drivers.network import netns

            self.sock = netns.run_in(netns_path, socket.socket)
        else:
            self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.results: list[tuple[int, float]] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        buf = bytearray(4 << 20)
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            n = 0
            t0 = None
            while True:
                k = c.recv_into(buf)
                if t0 is None:
                    t0 = time.perf_counter()
                if not k:
                    break
                n += k
            self.results.append((n, time.perf_counter() - (t0 or time.perf_counter())))
            c.close()


def fetch_rate(url: str) -> tuple[float, int]:
    """MB/s of one GET, from the first byte of the body to its end."""
    import urllib.request

    for _ in range(100):
        try:
            r = urllib.request.urlopen(url, timeout=20)
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise RuntimeError(f"{url} does not answer")
    buf = bytearray(4 << 20)
    n = 0
    t = time.perf_counter()
    while True:
        k = r.readinto(buf)
        if not k:
            break
        n += k
    return n / (time.perf_counter() - t) / 1e6, n


def throughput(args: argparse.Namespace, d: Daemon, env: dict, gw: str) -> dict:
    """Two senders in a busybox container: `httpd` serving a file (sendfile: large writes)
    fetched by this process, and `dd | nc` (busybox nc writes a few KiB at a time) into a
    receiver in this process. Each over the bridge and over the host's loopback
    (--network host), and for podman the same with its own bridge, as a reference for what the
    kernel path costs on this host."""
    sampan_cli = [sys.executable, "-c", "import sys; from sampan.cli import main; "
                  "sys.argv[0] = 'sampan'; main()"]
    out: dict[str, list[float]] = {}
    size = args.mb << 20
    serve = (f"mkdir -p /www && dd if=/dev/zero of=/www/big bs=1048576 count={args.mb} "
             "2>/dev/null && exec httpd -f -p {} -h /www")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    lo_port = probe.getsockname()[1]
    probe.close()
    names = {"bridge": "tb" + secrets.token_hex(3), "host": "th" + secrets.token_hex(3)}
    subprocess.run(sampan_cli + ["run", "-d", "--name", names["bridge"], "busybox", "sh", "-c",
                                 serve.format(80)], env=env, check=True, capture_output=True)
    subprocess.run(sampan_cli + ["run", "-d", "--name", names["host"], "--network", "host",
                                 "busybox", "sh", "-c", serve.format(f"127.0.0.1:{lo_port}")],
                   env=env, check=True, capture_output=True)
    try:
        c = d.json("GET", f"/containers/{names['bridge']}/json")[1]
        ip = c["NetworkSettings"]["IPAddress"]
        urls = {"sampan-bridge/httpd": f"http://{ip}/big",
                "sampan-loopback/httpd": f"http://127.0.0.1:{lo_port}/big"}
        for k in urls:
            out[k] = []
            fetch_rate(urls[k])  # warm up (and wait for the file)
        for i in range(args.rounds):
            for k in (list(urls) if i % 2 == 0 else list(urls)[::-1]):
                rate, n = fetch_rate(urls[k])
                assert n == size, (k, n)
                out[k].append(rate)
    finally:
        subprocess.run(sampan_cli + ["rm", "-f", *names.values()], env=env,
                       capture_output=True)
    rx = Receiver()
    nc_cases = {"sampan-bridge/nc": (sampan_cli + ["run", "--rm", "busybox"], gw, rx),
                "sampan-loopback/nc": (sampan_cli + ["run", "--rm", "--network", "host",
                                                     "busybox"], "127.0.0.1", rx)}
    # docker's MTU on a network of the same daemon
    sub1500 = free_subnet()
    net1500 = "mtu1500-" + secrets.token_hex(3)
    subprocess.run(sampan_cli + ["network", "create", "--subnet", str(sub1500), "-o",
                                 "com.docker.network.driver.mtu=1500", net1500],
                   env=env, check=True, capture_output=True)
    nc_cases["sampan-mtu1500/nc"] = (sampan_cli + ["run", "--rm", "--network", net1500,
                                                   "busybox"], str(next(sub1500.hosts())), rx)
    if podman_ready(args):
        pgw = subprocess.run(["podman", "network", "inspect", "podman", "--format",
                              "{{range .Subnets}}{{.Gateway}}{{end}}"],
                             capture_output=True, text=True).stdout.strip()
        if pgw:
            nc_cases["podman-bridge/nc"] = (PODMAN + ["localhost/busybox"], pgw, rx)
            nc_cases["podman-loopback/nc"] = (PODMAN + ["--network", "host",
                                                        "localhost/busybox"], "127.0.0.1", rx)
    bare = BareBridges() if not args.no_bare else None
    try:
        if bare is not None:
            nc_cases.update(bare.cases())
        for k in ("sampan-bridge/nc", "sampan-mtu1500/nc", "podman-bridge/nc"):
            if k in nc_cases:
                r = subprocess.run(nc_cases[k][0] + ["sh", "-c", "cat /sys/class/net/eth0/mtu; "
                                                     "cat /proc/net/route"],
                                   env=env, capture_output=True, text=True)
                lines = r.stdout.split("\n")
                dflt = [ln.split() for ln in lines[2:] if ln.split()[1:2] == ["00000000"]]
                print(f"{k.split('/')[0]}: eth0 MTU {lines[0]}, default route MTU "
                      f"{dflt[0][8] if dflt and dflt[0][8] != '0' else '(the link)'}")
        for k in nc_cases:
            out[k] = []
        for i in range(args.rounds):
            keys = list(nc_cases)
            keys = keys[i % len(keys):] + keys[:i % len(keys)]
            for k in keys:
                argv, dst, r = nc_cases[k]
                before = len(r.results)
                timed(argv + ["sh", "-c", f"dd if=/dev/zero bs=1048576 count={args.nc_mb} "
                                          f"2>/dev/null | nc {dst} {r.port}"],
                      env if k.startswith("sampan") else None)
                for _ in range(100):
                    if len(r.results) > before:
                        break
                    time.sleep(0.05)
                n, dt = r.results[-1]
                if n != args.nc_mb << 20:
                    raise RuntimeError(f"{k}: received {n} bytes of {args.nc_mb << 20}")
                out[k].append(n / dt / 1e6)
    finally:
        if bare is not None:
            bare.close()
        subprocess.run(sampan_cli + ["network", "rm", net1500], env=env, capture_output=True)
    print(f"\n== throughput container -> host (httpd: {args.mb} MiB, nc: {args.nc_mb} MiB; "
          f"x {args.rounds}; load now {os.getloadavg()[0]:.1f}) ==")
    ratios = {}
    for k in out:
        print(f"  {k:24} {statistics.median(out[k]):8.0f} MB/s (median)   "
              + " ".join(f"{x:.0f}" for x in out[k]))
    pairs = [(f"sampan/{t}", f"sampan-bridge/{t}", f"sampan-loopback/{t}")
             for t in ("httpd", "nc")]
    pairs += [("sampan-mtu1500/nc", "sampan-mtu1500/nc", "sampan-loopback/nc"),
              ("podman/nc", "podman-bridge/nc", "podman-loopback/nc"),
              ("bare-bridge1500/nc", "bare-bridge1500/nc", "bare-loopback/nc"),
              ("bare-bridge65520/nc", "bare-bridge65520/nc", "bare-loopback/nc"),
              ("bare-loopback1500/nc", "bare-loopback1500/nc", "bare-loopback/nc")]
    print(f"  {'ratio to loopback':24} {'of medians':>10} {'median of rounds':>17}")
    for name, b, lo in pairs:
        if b in out and lo in out:
            r_med = statistics.median(out[b]) / statistics.median(out[lo])
            r_rounds = statistics.median(x / y for x, y in zip(out[b], out[lo]))
            ratios[name] = {"of_medians": r_med, "median_of_rounds": r_rounds}
            print(f"  {name:24} {r_med:10.2f} {r_rounds:17.2f}")
    print("  (goal: sampan/* >= 0.8)")
    return {"raw": out, "ratios": ratios}


class BareBridges:
    """Two veth + bridge paths made by hand, no firewall rule anywhere: namespace H holds two
    bridges (MTU 1500 and 65520) with an address each and a receiver; namespaces C1 and C2
    each hold a veth plugged into one of them; namespace L has its loopback at MTU 1500 and a
    receiver of its own. busybox nc runs in them through `ip netns exec`."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.ns = {k: f"snb{k}{tag}" for k in ("h", "c1", "c2", "l")}
        h, c1, c2, lo = (self.ns[k] for k in ("h", "c1", "c2", "l"))
        cmds = [f"netns add {n}" for n in self.ns.values()]
        cmds += [f"-n {n} link set lo up" for n in self.ns.values()]
        cmds += [f"-n {lo} link set lo mtu 1500"]
        for c, mtu, sub in ((c1, 1500, 1), (c2, 65520, 2)):
            cmds += [f"-n {h} link add br{sub} mtu {mtu} type bridge",
                     f"-n {h} addr add 10.0.{sub}.1/24 dev br{sub}",
                     f"-n {h} link set br{sub} up",
                     f"-n {c} link add eth0 mtu {mtu} type veth peer name v{sub} mtu {mtu} "
                     f"netns {h}",
                     f"-n {h} link set v{sub} master br{sub} up",
                     f"-n {c} addr add 10.0.{sub}.2/24 dev eth0",
                     f"-n {c} link set eth0 up"]
        try:
            for c in cmds:
                subprocess.run(["ip", *c.split()], check=True, capture_output=True)
        except subprocess.CalledProcessError as e:
            self.close()
            raise RuntimeError(f"ip {e.cmd}: {e.stderr.decode()}") from None
        self.rx_h = Receiver(f"/run/netns/{h}")
        self.rx_l = Receiver(f"/run/netns/{lo}")

    def cases(self) -> dict[str, tuple[list[str], str, Receiver]]:
        def ex(n: str) -> list[str]:
            return ["ip", "netns", "exec", self.ns[n], BUSYBOX]
        return {"bare-bridge1500/nc": (ex("c1"), "10.0.1.1", self.rx_h),
                "bare-bridge65520/nc": (ex("c2"), "10.0.2.1", self.rx_h),
                "bare-loopback/nc": (ex("h"), "127.0.0.1", self.rx_h),
                "bare-loopback1500/nc": (ex("l"), "127.0.0.1", self.rx_l)}

    def close(self) -> None:
        for r in (getattr(self, "rx_h", None), getattr(self, "rx_l", None)):
            if r is not None:
                r.sock.close()
        for n in self.ns.values():  # their links go with them
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20, help="iterations per case (default 20)")
    ap.add_argument("--mb", type=int, default=256, help="MiB per httpd throughput round")
    ap.add_argument("--nc-mb", type=int, default=64, help="MiB per nc throughput round")
    ap.add_argument("--rounds", type=int, default=5, help="throughput rounds per path")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--no-bare", action="store_true",
                    help="without the hand-made namespaces (veth + bridge, no firewall)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--mtu", type=int, default=0,
                    help="sampand --mtu for the default bridge (default: sampand's choice)")
    ap.add_argument("--json", help="write raw timings here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="sampan-netbench-"))
    d = Daemon(mkdir(root), fake=False)
    bridge = "snb" + secrets.token_hex(3)
    net = free_subnet()
    gw = str(next(net.hosts()))
    d.start("--bridge", bridge, "--bip", f"{gw}/24",
            *(["--mtu", str(args.mtu)] if args.mtu else []))
    results = {}
    try:
        from sampan.demoimage import docker_archive

        st, _h, body = d.request("POST", "/images/load?quiet=1",
                                 docker_archive("busybox:latest"),
                                 {"Content-Type": "application/x-tar"})
        assert st == 200, body
        env = dict(os.environ, SAMPAN_HOST=d.host,
                   PYTHONPATH=os.pathsep.join([str(REPO / "python"),
                                               os.environ.get("PYTHONPATH", "")]))
        print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
              f"sampand --mtu {args.mtu or '(not given)'}")
        if not args.skip_overhead:
            results["overhead"] = overhead(args, d, env)
        if not args.skip_throughput:
            results["throughput"] = throughput(args, d, env, gw)
    finally:
        d.stop()
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        subprocess.run(["bash", "-c", "for t in filter nat; do iptables -w -t $t -S | "
                        f"grep -- '{bridge}' | sed 's/^-A/-D/' | "
                        "while read r; do eval iptables -w -t $t $r; done; done"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
