"""A musl CPython for each musl target, built with zig as the C compiler, run under qemu-user.

No distribution ships a musl CPython for soft-float MIPS (what OpenWrt runs), so one is built:

1. musl 1.2.5 (Debian trixie's `musl` source package: the release zig's headers describe),
   compiled by `zig cc` for the target and installed into a root directory as the dynamic
   loader (`/lib/ld-musl-<arch>.so.1`, which is also the `libc.so` a wheel's extension names
   in NEEDED); see `_relink_libc` and `compiler_rt.py` for what zig needed;
2. CPython 3.11 (Debian's `python3.11` source package, upstream tarball), cross-compiled by
   `zig cc`, dynamically linked so it can dlopen extensions, with the stdlib C modules the
   proof needs linked in (STATIC_MODULES; setup.py's shared modules are skipped) and the
   pure-Python stdlib copied next to it.

Each step leaves a `.done` marker in the cache, so only the first run pays (minutes per target).
Run `python3 scripts/cross/musl.py TARGET...` to build ahead of the tests.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cross import compiler_rt, debian
    from cross import env as xenv
else:
    from . import compiler_rt, debian
    from . import env as xenv


@dataclass(frozen=True)
class MuslTarget:
    name: str  # as scripts/build-wheels names it
    zig: str  # zig's target
    qemu: str  # qemu-user binary
    loader: str  # musl's dynamic loader name, under /lib
    host: str  # GNU triple for CPython's configure
    musl_target: str  # musl's configure --target
    cflags: list[str] = field(default_factory=list)
    cpu: str | None = None  # zig -mcpu, when the triple alone does not pin it


MUSL_TARGETS = {
    t.name: t
    for t in [
        MuslTarget("x86_64-musl", "x86_64-linux-musl", "qemu-x86_64-static",
                   "ld-musl-x86_64.so.1", "x86_64-linux-musl", "x86_64-linux-musl"),
        MuslTarget("aarch64-musl", "aarch64-linux-musl", "qemu-aarch64-static",
                   "ld-musl-aarch64.so.1", "aarch64-linux-musl", "aarch64-linux-musl"),
        MuslTarget("armv7-musl", "arm-linux-musleabihf", "qemu-arm-static",
                   "ld-musl-armhf.so.1", "arm-linux-musleabihf", "arm-linux-musleabihf",
                   ["-mcpu=generic+v7a"], "generic+v7a"),
        MuslTarget("mips-musl", "mips-linux-musleabi", "qemu-mips-static",
                   "ld-musl-mips-sf.so.1", "mips-linux-musl", "mips-linux-muslsf",
                   ["-msoft-float"]),
        MuslTarget("mipsel-musl", "mipsel-linux-musleabi", "qemu-mipsel-static",
                   "ld-musl-mipsel-sf.so.1", "mipsel-linux-musl", "mipsel-linux-muslsf",
                   ["-msoft-float"]),
    ]
}

PYTHON = "usr/bin/python3.11"
BUILD_PYTHON = "/usr/bin/python3.11"  # Debian's, the same 3.11.2 as the sources
JOBS = os.environ.get("SAMPAN_CROSS_JOBS", "2")


def zig_binary() -> Path:
    """zig from the ziglang package: this interpreter's, else the build tools' (installed by
    scripts/build-wheels' rules: pip, or a venv in the cache)."""
    import importlib.util

    spec = importlib.util.find_spec("ziglang")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "zig"
    python = xenv.tools_python(xenv.cache_dir())
    code = "import ziglang, os; print(os.path.dirname(ziglang.__file__))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    return Path(out) / "zig"


def wrappers(t: MuslTarget) -> dict[str, str]:
    """cc/ar/ranlib scripts that run zig for `t` (configure wants plain commands)."""
    d = xenv.cache_dir() / "zig" / t.name
    d.mkdir(parents=True, exist_ok=True)
    zig = zig_binary()
    flags = " ".join([f"-target {t.zig}", *t.cflags])
    scripts = {
        "cc": f'exec "{zig}" cc {flags} "$@"\n',
        "ar": f'exec "{zig}" ar "$@"\n',
        "ranlib": f'exec "{zig}" ranlib "$@"\n',
    }
    out = {}
    for name, body in scripts.items():
        p = d / name
        text = "#!/bin/sh\n" + body
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
            p.chmod(0o755)
        out[name] = str(p)
    return out


def _run(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> None:
    with open(log, "a") as lf:
        lf.write("$ " + " ".join(cmd) + "\n")
        lf.flush()
        r = subprocess.run(cmd, cwd=cwd, env=env, stdout=lf, stderr=subprocess.STDOUT,
                           check=False)
    if r.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"cross: failed: {' '.join(cmd)} (in {cwd}; log {log})\n"
                         + "\n".join(tail))


def _unpack(tarball: Path, into: Path) -> Path:
    """Fresh unpack of a source tarball; returns its top directory."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    with tarfile.open(tarball) as tf:
        top = tf.getnames()[0].split("/")[0]
        tf.extractall(into)
    return into / top


def root_dir(t: MuslTarget) -> Path:
    return xenv.cache_dir() / "roots" / t.name / "root"


def _relink_libc(src: Path, crt: Path, t: MuslTarget, log: Path) -> None:
    """Links lib/libc.so again with lld itself, with musl's --dynamic-list.

    `zig cc` accepts neither -Wl,--dynamic-list nor -Wl,-Bsymbolic-functions, so musl's
    configure drops both and libc.so binds nothing to itself; its dynamic linker then runs
    through unrelocated GOT entries and data like environ stops being shared with programs.
    `zig ld.lld` takes the flags musl asks for.
    """
    so = src / "lib" / "libc.so"
    so.unlink(missing_ok=True)
    dry = subprocess.run(["make", "-n", "lib/libc.so", f"LIBCC={crt}"], cwd=src,
                         capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in dry.replace("\\\n", " ").splitlines() if "-o lib/libc.so" in ln)
    objs = [a for a in shlex.split(line) if a.endswith((".lo", ".o"))]
    hash_style = "sysv" if t.zig.startswith("mips") else "both"  # no .gnu.hash on MIPS
    _run([str(zig_binary()), "ld.lld", "-shared", "-e", "_dlstart",
          "--dynamic-list=./dynamic.list", "--gc-sections", f"--hash-style={hash_style}",
          "--sort-section=alignment", "--sort-common", "-o", "lib/libc.so", *objs], src, log)


def build_musl(t: MuslTarget) -> Path:
    """musl for `t` installed into the target root; returns the root."""
    base = xenv.cache_dir() / "roots" / t.name
    root = base / "root"
    done = base / ".musl-done"
    if done.exists() and (root / "lib" / t.loader).exists():
        return root
    src_dir = debian.source("musl", debian.SOURCE_ONLY_SUITE)
    tarball = next(src_dir.glob("musl_*.orig.tar.gz"))
    log = base / "musl.log"
    base.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    xenv.say(f"{t.name}: building musl (log {log})")
    src = _unpack(tarball, base / "musl-build")
    w = wrappers(t)
    _run(["./configure", f"--target={t.musl_target}", "--prefix=/usr", "--syslibdir=/lib",
          "--disable-static", f"CC={w['cc']}", f"AR={w['ar']}", f"RANLIB={w['ranlib']}"],
         src, log)
    crt = compiler_rt.build(zig_binary(), t.zig, t.cpu,
                            xenv.cache_dir() / "zig" / t.name / "compiler_rt.o")
    _run(["make", f"-j{JOBS}", f"LIBCC={crt}"], src, log)
    _relink_libc(src, crt, t, log)
    _run(["make", "install", f"DESTDIR={root}", f"LIBCC={crt}"], src, log)
    loader = root / "lib" / t.loader
    if not loader.is_symlink():
        found = [p.name for p in (root / "lib").glob("ld-musl-*")]
        raise SystemExit(f"cross: {t.name}: musl installed {found}, expected {t.loader}")
    # musl links its loader to /usr/lib/libc.so; qemu resolves that absolute link on the host.
    loader.unlink()
    loader.symlink_to("../usr/lib/libc.so")
    shutil.rmtree(src.parent)
    done.write_text("ok\n")
    return root


CONFIG_SITE = """\
ac_cv_file__dev_ptmx=yes
ac_cv_file__dev_ptc=no
ac_cv_buggy_getaddrinfo=no
"""


# Stdlib C modules linked into the interpreter (Modules/Setup.local, *static*): what the smoke
# test, pip's tag code (packaging: logging, subprocess, ...) and sampan's pure-Python modules
# import. On Linux, CPython 3.11 builds the others with setup.py, which is skipped here.
STATIC_MODULES = [
    "_struct", "_json", "math", "cmath", "_datetime", "_random", "_bisect", "_heapq", "select",
    "_posixsubprocess", "fcntl", "binascii", "_contextvars", "array", "_opcode", "_typing",
    "_socket", "_sha512", "_sha256", "_sha1", "_md5", "_queue", "grp", "resource", "termios",
    "mmap", "_statistics", "unicodedata", "_csv", "_pickle",
]


def _setup_local(src: Path) -> str:
    """Setup.local lines for STATIC_MODULES, taken from the configured Setup.stdlib (which
    knows each module's sources and flags and comments out what configure found missing)."""
    lines = ["*static*"]
    stdlib = (src / "Modules/Setup.stdlib").read_text().splitlines()
    for name in STATIC_MODULES:
        for ln in stdlib:
            if ln.split()[:1] == [name]:
                lines.append(ln)
                break
    return "\n".join(lines) + "\n"


def build_python(t: MuslTarget) -> Path:
    """CPython 3.11 for `t` in the target root (/usr/bin/python3.11); returns the root.

    The build tree stays in the cache: a change of the module list or of the flags only
    re-runs what it must."""
    root = build_musl(t)
    base = root.parent
    done = base / ".python-done"
    if not Path(BUILD_PYTHON).exists():
        xenv.apt_install(["python3.11"])
    src_dir = debian.source("python3.11")
    tarball = next(src_dir.glob("python3.11_*.orig.tar.*"))
    w = wrappers(t)
    # -O1: quick to build and good enough for a test interpreter. -fPIC: data of libc.so is
    # reached through the GOT; copy relocations would be laid out against zig's stub libc.so,
    # which puts every data object at one address (environ, tzname, __progname, ... would
    # share one copy). zig's clang makes -Wdate-time an error, which getbuildinfo.c trips.
    env = dict(os.environ, CONFIG_SITE=str(base / "config.site"),
               CC=w["cc"], AR=w["ar"], RANLIB=w["ranlib"], LDFLAGS="-dynamic",
               CFLAGS="-O1 -fPIC -Wno-date-time", READELF=shutil.which("readelf") or "readelf",
               # The host's .pc files describe x86_64 libraries: find none.
               PKG_CONFIG_LIBDIR="/nonexistent", PKG_CONFIG_PATH="")
    configure = ["./configure", f"--host={t.host}", "--build=x86_64-pc-linux-gnu",
                 "--prefix=/usr", f"--with-build-python={BUILD_PYTHON}", "--without-ensurepip",
                 "--disable-test-modules", "--without-doc-strings", "--enable-ipv6"]
    key = repr((tarball.name, configure, CONFIG_SITE, env["CFLAGS"], env["LDFLAGS"],
                env["PKG_CONFIG_LIBDIR"]))
    full_key = repr((key, STATIC_MODULES))
    if done.exists() and done.read_text() == full_key and (root / PYTHON).exists():
        return root
    log = base / "python.log"
    log.write_text("")
    xenv.say(f"{t.name}: building CPython (log {log}); this takes a while")
    # A configured tree (from an earlier or interrupted run) is reused when nothing changed.
    stamp = base / "python-configured"
    tops = list((base / "python-build").glob("Python-*"))
    if stamp.exists() and stamp.read_text() == key and tops and (tops[0] / "Makefile").exists():
        src = tops[0]
    else:
        stamp.unlink(missing_ok=True)
        src = _unpack(tarball, base / "python-build")
        (base / "config.site").write_text(CONFIG_SITE)
        _run(configure, src, log, env)
        stamp.write_text(key)
    setup_local = src / "Modules/Setup.local"
    text = _setup_local(src)
    if not setup_local.exists() or setup_local.read_text() != text:
        setup_local.write_text(text)  # newer than the Makefile: make regenerates it
    _run(["make", f"-j{JOBS}", "python", "platform", "pybuilddir.txt"], src, log, env)
    _install_python(src, root)
    done.write_text(full_key)
    return root


SKIP_LIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
            "distutils", "__pycache__", "venv"}


def _install_python(src: Path, root: Path) -> None:
    """The interpreter and its pure-Python stdlib laid out as under /usr (what `make install`
    does, minus compileall and setup.py's shared modules; the stdlib C modules are built in)."""
    lib = root / "usr/lib/python3.11"
    if lib.exists():
        shutil.rmtree(lib)
    shutil.copytree(src / "Lib", lib, ignore=lambda d, names: [
        n for n in names if n in SKIP_LIB and Path(d) == src / "Lib"])
    (lib / "lib-dynload").mkdir()  # getpath's exec_prefix landmark
    builddir = (src / "pybuilddir.txt").read_text().strip()
    for f in (src / builddir).glob("_sysconfigdata_*.py"):
        shutil.copy2(f, lib / f.name)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "python", root / PYTHON)


def run_python(t: MuslTarget, args: list[str], **kw) -> subprocess.CompletedProcess:
    root = root_dir(t)
    env = dict(kw.pop("env", None) or os.environ, QEMU_LD_PREFIX=str(root))
    kw.setdefault("check", False)
    return subprocess.run([t.qemu, str(root / PYTHON), *args], env=env, **kw)  # noqa: PLW1510


def main(argv: list[str]) -> int:
    names = argv or list(MUSL_TARGETS)
    for n in names:
        t = MUSL_TARGETS[n]
        root = build_python(t)
        code = "import sys, sysconfig; print(sys.version.split()[0], sysconfig.get_platform())"
        r = run_python(t, ["-c", code], capture_output=True, text=True)
        print(f"{n}: {root} -> {r.stdout.strip() or r.stderr.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
