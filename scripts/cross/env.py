"""The cross toolchain: where its cache lives, what it needs, installing what is missing.

Debian's rustc-web + cargo-web (with rust-web-src for -Zbuild-std) build the Rust side; zig
(PyPI `ziglang`) compiles and links C for every target; maturin packs the wheels. rustup's own
toolchain (if any) is kept out of the way: a shim directory in the cache puts Debian's cargo and
rustc first on PATH for the builds only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEBIAN_RUST = ["rustc-web", "cargo-web", "rust-web-src"]
# Not needed to build; needed to prove (tests/cross) and cheap, so installed alongside.
DEBIAN_PROOF = ["qemu-user-static", "binfmt-support"]
PIP_TOOLS = {"maturin": "maturin>=1.16,<2", "ziglang": "ziglang>=0.13"}
RUST_SRC = Path("/usr/lib/rustlib/src/rust/library")


def cache_dir() -> Path:
    """SAMPAN_CROSS_CACHE, else /var/cache/sampan-cross (root) or ~/.cache/sampan-cross."""
    env = os.environ.get("SAMPAN_CROSS_CACHE")
    if env:
        p = Path(env)
    elif os.geteuid() == 0:
        p = Path("/var/cache/sampan-cross")
    else:
        p = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sampan-cross"
    p.mkdir(parents=True, exist_ok=True)
    return p


def say(msg: str) -> None:
    print(f"cross: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    say("$ " + " ".join(cmd))
    kw.setdefault("check", False)
    return subprocess.run(cmd, **kw)  # noqa: PLW1510 - check is in kw


_apt_updated = False


def apt_install(packages: list[str], *, install: bool = True) -> None:
    """Installs the Debian packages that are not installed yet."""
    global _apt_updated
    missing = [p for p in packages if not dpkg_installed(p)]
    if not missing:
        return
    if not install:
        raise SystemExit(f"cross: missing Debian packages: {' '.join(missing)} "
                         f"(apt-get install {' '.join(missing)})")
    if os.geteuid() != 0:
        raise SystemExit(f"cross: need root to install {' '.join(missing)} "
                         f"(or: sudo apt-get install {' '.join(missing)})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if _run(cmd, env=env).returncode != 0:
        if not _apt_updated:
            _run(["apt-get", "update", "-q"], env=env, check=True)
            _apt_updated = True
        _run(cmd, env=env, check=True)


def dpkg_installed(pkg: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", pkg],
                       capture_output=True, text=True, check=False)
    return r.returncode == 0 and r.stdout.strip().endswith("installed")


def _has_modules(python: str, modules: list[str]) -> bool:
    code = ("import importlib.util,sys;"
            f"sys.exit(0 if all(importlib.util.find_spec(m) for m in {modules!r}) else 1)")
    return subprocess.run([python, "-c", code], capture_output=True, check=False).returncode == 0


def tools_python(cache: Path, *, install: bool = True) -> str:
    """A Python that has maturin and ziglang: this one, else a venv in the cache."""
    mods = list(PIP_TOOLS)
    if all(importlib.util.find_spec(m) for m in mods):
        return sys.executable
    venv = cache / "venv"
    vpy = str(venv / "bin" / "python3")
    if venv.exists() and _has_modules(vpy, mods):
        return vpy
    if not install:
        raise SystemExit("cross: maturin and ziglang are missing (pip install maturin ziglang)")
    # Try this interpreter first (a user venv / pyenv); an externally managed system Python
    # (PEP 668) refuses, then a venv in the cache takes them.
    r = _run([sys.executable, "-m", "pip", "install", "-q", *PIP_TOOLS.values()])
    if r.returncode == 0 and _has_modules(sys.executable, mods):
        return sys.executable
    if not venv.exists() and _run([sys.executable, "-m", "venv", str(venv)]).returncode != 0:
        apt_install(["python3-venv"])
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)], check=True)
    _run([vpy, "-m", "pip", "install", "-q", *PIP_TOOLS.values()], check=True)
    return vpy


@dataclass
class Tools:
    python: str  # has maturin and ziglang
    shim: Path  # cargo/rustc/rustdoc -> Debian's

    def env(self, *, target_dir: Path | None = None) -> dict[str, str]:
        e = dict(os.environ)
        e.pop("RUSTUP_TOOLCHAIN", None)
        pybin = str(Path(self.python).parent)
        e["PATH"] = os.pathsep.join([str(self.shim), pybin, e.get("PATH", "")])
        e["RUSTC"] = str(self.shim / "rustc")
        e["CARGO"] = str(self.shim / "cargo")
        e["RUSTC_BOOTSTRAP"] = "1"  # -Zbuild-std on a stable compiler
        if target_dir is not None:
            e["CARGO_TARGET_DIR"] = str(target_dir)
        return e


def debian_rust_ok(need_src: bool) -> bool:
    if not (Path("/usr/bin/rustc").exists() and Path("/usr/bin/cargo").exists()):
        return False
    return not need_src or (RUST_SRC / "Cargo.lock").exists()


def ensure_build_tools(*, install: bool = True, need_build_std: bool = True) -> Tools:
    cache = cache_dir()
    if not debian_rust_ok(need_build_std) or not all(dpkg_installed(p) for p in DEBIAN_PROOF):
        apt_install(DEBIAN_RUST + DEBIAN_PROOF, install=install)
    if not debian_rust_ok(need_build_std):
        raise SystemExit("cross: Debian's rustc-web/cargo-web/rust-web-src are not usable")
    shim = cache / "bin"
    shim.mkdir(exist_ok=True)
    for tool in ("cargo", "rustc", "rustdoc"):
        link = shim / tool
        if link.is_symlink() and os.readlink(link) == f"/usr/bin/{tool}":
            continue
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(f"/usr/bin/{tool}")
    return Tools(python=tools_python(cache, install=install), shim=shim)
