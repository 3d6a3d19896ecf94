"""Debian packages for other architectures, fetched with apt into the cache, never installed.

A private apt configuration (its own sources, lists and archive cache under the cross cache)
downloads binary packages of another architecture (`apt-get download`) and source packages
(`apt-get source --download-only`), leaving the machine's dpkg architectures and apt state
alone. `python_root(arch)` unpacks Debian's CPython for `arch` into a directory that
qemu-user uses as its library prefix (QEMU_LD_PREFIX).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from . import env as xenv

MIRROR = os.environ.get("SAMPAN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("SAMPAN_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
SUITE = "bookworm"
SOURCE_ONLY_SUITE = "trixie"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# Debian's CPython 3.11 and what its interpreter and the extension need at run time.
PYTHON_PACKAGES = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6",
    "zlib1g", "libexpat1", "libffi8", "libgcc-s1",
]
PYTHON = "usr/bin/python3.11"


def _apt_dir(arch: str) -> Path:
    d = xenv.cache_dir() / "apt" / arch
    for sub in ("lists/partial", "archives/partial", "etc/preferences.d", "etc/apt.conf.d"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    sources = (
        f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n"
        f"deb [signed-by={KEYRING}] {SECURITY} {SUITE}-security main\n"
        f"deb-src [signed-by={KEYRING}] {MIRROR} {SUITE} main\n"
        # musl: the release zig's headers describe (1.2.5), which is also what OpenWrt runs.
        f"deb-src [signed-by={KEYRING}] {MIRROR} {SOURCE_ONLY_SUITE} main\n"
    )
    listing = d / "etc/sources.list"
    if not listing.exists() or listing.read_text() != sources:
        listing.write_text(sources)
        for old in (d / "lists").glob("*_*"):
            old.unlink()  # sources changed: refresh the lists
    status = d / "status"
    if not status.exists():
        status.write_text("")
    return d


def _apt(arch: str, *args: str, cwd: Path | None = None) -> None:
    d = _apt_dir(arch)
    opts = [
        f"-oAPT::Architecture={arch}", f"-oAPT::Architectures={arch}",
        f"-oDir::State={d}", f"-oDir::State::Lists={d}/lists", f"-oDir::State::status={d}/status",
        f"-oDir::Cache={d}", f"-oDir::Cache::Archives={d}/archives",
        f"-oDir::Etc::SourceList={d}/etc/sources.list", "-oDir::Etc::SourceParts=/nonexistent",
        f"-oDir::Etc::Preferences={d}/etc/preferences",
        f"-oDir::Etc::PreferencesParts={d}/etc/preferences.d",
        f"-oDir::Etc::Parts={d}/etc/apt.conf.d",
        "-oAPT::Get::List-Cleanup=0", "-oAcquire::Languages=none", "-q",
    ]
    if not any((d / "lists").glob("*Packages*")):
        xenv.say(f"apt ({arch}): update")
        subprocess.run(["apt-get", *opts, "update"], check=True)
    subprocess.run(["apt-get", *opts, *args], check=True, cwd=cwd)


def download(arch: str, packages: list[str], dest: Path) -> list[Path]:
    """The .deb files of `packages` for `arch` in `dest` (downloaded once)."""
    dest.mkdir(parents=True, exist_ok=True)
    want = [p for p in packages if not list(dest.glob(f"{p}_*_{arch}.deb"))
            and not list(dest.glob(f"{p}_*_all.deb"))]
    if want:
        _apt(arch, "download", *want, cwd=dest)
    return sorted(dest.glob("*.deb"))


def source(package: str, suite: str = SUITE) -> Path:
    """Directory holding the downloaded source package files (.dsc, .orig.tar.*, ...)."""
    dest = xenv.cache_dir() / "src" / f"{package}-{suite}"
    if not list(dest.glob("*.orig.tar.*")):
        dest.mkdir(parents=True, exist_ok=True)
        _apt("amd64", "source", "--download-only", f"{package}/{suite}", cwd=dest)
    return dest


def python_root(arch: str) -> Path:
    """A directory with Debian's CPython 3.11 for `arch` unpacked, for QEMU_LD_PREFIX."""
    base = xenv.cache_dir() / "roots" / f"debian-{arch}"
    root = base / "root"
    done = base / ".done"
    if done.exists() and (root / PYTHON).exists():
        return root
    debs = download(arch, PYTHON_PACKAGES, base / "debs")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    done.write_text("ok\n")
    return root
