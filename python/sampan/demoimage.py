"""A `busybox:latest` image built locally from Debian's busybox-static, with no network: for
the README's demo and the container tests.

    python3 -m sampan.demoimage -o busybox.tar [--tag busybox:latest]   # a docker-archive
    sampan load -i busybox.tar

Deterministic (fixed mtimes): the same busybox binary gives the same image id.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
        "mips": "mips", "mips64": "mips64", "ppc64le": "ppc64le", "s390x": "s390x",
        "riscv64": "riscv64"}

FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
                  "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\n",
}


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True,
                         text=True).stdout
    return sorted({a.strip() for a in out.split() if a.strip() and a.strip() != "bin/busybox"})


def layer_tar(busybox: Path = BUSYBOX) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, MTIME
            tar.addfile(ti)

        for d in ("bin", "dev", "etc", "home", "proc", "root", "sbin", "sys", "usr",
                  "usr/bin", "usr/sbin", "var", "var/spool"):
            add_dir(d, 0o700 if d == "root" else 0o755)
        add_dir("tmp", 0o1777)
        data = busybox.read_bytes()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode, ti.mtime = len(data), 0o755, MTIME
        tar.addfile(ti, io.BytesIO(data))
        for a in _applets(busybox):
            parent = os.path.dirname(a)
            if parent not in ("bin", "sbin", "usr/bin", "usr/sbin"):
                continue
            ti = tarfile.TarInfo(a)
            ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.LNKTYPE, "bin/busybox", 0o755, MTIME
            tar.addfile(ti)
        for name, text in FILES.items():
            b = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(b), 0o640 if "shadow" in name else 0o644, MTIME
            tar.addfile(ti, io.BytesIO(b))
    return buf.getvalue()


def docker_archive(tag: str = "busybox:latest", busybox: Path = BUSYBOX) -> bytes:
    """A docker-archive (`docker save`'s legacy layout) holding one image tagged `tag`."""
    layer = layer_tar(busybox)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": ARCH.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "created": CREATED,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "created_by": "sampan.demoimage: busybox-static"}],
    }
    cfg = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    cfg_hex = hashlib.sha256(cfg).hexdigest()
    layer_dir = diff_id[7:]
    manifest = [{"Config": f"{cfg_hex}.json", "RepoTags": [tag],
                 "Layers": [f"{layer_dir}/layer.tar"]}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in ((f"{cfg_hex}.json", cfg), (f"{layer_dir}/layer.tar", layer),
                           ("manifest.json", json.dumps(manifest).encode())):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, MTIME
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m sampan.demoimage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, help="docker-archive to write ('-': stdout)")
    p.add_argument("--tag", default="busybox:latest")
    p.add_argument("--busybox", default=str(BUSYBOX), help="a static busybox binary")
    ns = p.parse_args(argv)
    data = docker_archive(ns.tag, Path(ns.busybox))
    if ns.output == "-":
        sys.stdout.buffer.write(data)
    else:
        tmp = ns.output + ".tmp"
        Path(tmp).write_bytes(data)
        os.replace(tmp, ns.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
