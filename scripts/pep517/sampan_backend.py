"""Sampan's PEP 517 build backend: maturin's, plus the monitor and the native CLI inside the wheel.

maturin packs one Rust artefact per wheel (PyO3/maturin#368): the extension `sampan._runtime`.
The per-container monitor is a second one, a static executable, and must ship in the same wheel
so that `pip install .` stays one command. This backend delegates everything to maturin and,
after maturin wrote the wheel, builds `rust/monitor` with cargo for the same target and adds it
as package data at `sampan/libexec/sampan-monitor` (mode 0755, with its RECORD row). The binary
is added to the finished wheel rather than copied into the source tree first, so a cross build
never overwrites a developer's host binary and the wheel never carries a stale one.

The target is the one maturin builds for: `--target` in MATURIN_PEP517_ARGS, else
CARGO_BUILD_TARGET, else the host. `scripts/build-wheels` calls `build_monitor`/`add_to_wheel`
itself for its cross targets; `scripts/build-monitor` is the developer's fast path
(`python/sampan/libexec/sampan-monitor` rebuilt in place).

The `sampan` command is the native client (rust/cli, docs/cli-native.md), built the same way
and added as the wheel's data script `sampan-<version>.data/scripts/sampan`: pip puts it, as it
is and executable, beside the `sampand` console script, whose shebang tells the client which
interpreter runs the Python CLI it hands other verbs to.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IN_WHEEL = "sampan/libexec/sampan-monitor"
DEV_PATH = ROOT / "python" / IN_WHEEL
MONITOR_RUSTFLAGS = "-C target-feature=+crt-static -C relocation-model=static"


def _say(msg: str) -> None:
    print(f"sampan-backend: {msg}", file=sys.stderr, flush=True)


def host_triple(cargo_env: dict[str, str] | None = None) -> str:
    rustc = (cargo_env or os.environ).get("RUSTC", "rustc")
    out = subprocess.run([rustc, "-vV"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("host:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError("rustc -vV names no host triple")


def requested_target() -> str | None:
    args = shlex.split(os.environ.get("MATURIN_PEP517_ARGS", ""))
    for i, a in enumerate(args):
        if a == "--target" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--target="):
            return a.split("=", 1)[1]
    return os.environ.get("CARGO_BUILD_TARGET") or None


def _ensure_member(crate: str) -> None:
    """Make `rust/<crate>` a member of the workspace again where maturin's sdist dropped it
    (its Cargo.toml keeps only the extension's crates; `cargo build -p` then knows no
    sampan-monitor). Only an unpacked sdist is rewritten; the source tree lists them."""
    manifest = ROOT / "Cargo.toml"
    text = manifest.read_text()
    m = re.search(r"^members\s*=\s*\[(.*?)\]", text, re.M | re.S)
    if m is None or f'"rust/{crate}"' in m.group(1):
        return
    members = m.group(1).rstrip().rstrip(",")
    members = f'{members}, "rust/{crate}"' if members.strip() else f'"rust/{crate}"'
    _say(f"adding rust/{crate} to the workspace members of {manifest}")
    manifest.write_text(text[:m.start(1)] + members + text[m.end(1):])


def build_monitor(target: str | None = None, *, env: dict[str, str] | None = None,
                  extra: list[str] | None = None) -> Path:
    """cargo build the static monitor for `target` (default: the host); returns its path.

    Statically linked so that it also runs inside any container image as /sbin/docker-init:
    musl targets are static already, glibc ones get +crt-static (only on the binary's target,
    never on build scripts or proc macros, hence the explicit --target)."""
    env = dict(env or os.environ)
    target = target or host_triple(env)
    _ensure_member("monitor")
    key = "CARGO_TARGET_" + target.upper().replace("-", "_").replace(".", "_") + "_RUSTFLAGS"
    # Not position independent either: a static PIE relocates its read-only data at start,
    # which dirties those pages in every monitor instead of sharing them.
    env[key] = (env.get(key, "") + " " + MONITOR_RUSTFLAGS).strip()
    env.pop("CARGO_BUILD_TARGET", None)
    cargo = env.get("CARGO", "cargo")
    cmd = [cargo, "build", "--release", "-p", "sampan-monitor", "--target", target,
           "--manifest-path", str(ROOT / "Cargo.toml"), *(extra or [])]
    _say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    tdir = Path(env.get("CARGO_TARGET_DIR") or ROOT / "target")
    out = tdir / target / "release" / "sampan-monitor"
    if not out.is_file():
        raise RuntimeError(f"cargo built no {out}")
    return out


def build_client(target: str | None = None, *, env: dict[str, str] | None = None,
                 extra: list[str] | None = None) -> Path:
    """cargo build the native `sampan` (rust/cli) for `target` (default: the host); its path.

    Linked as the target links by default (glibc: dynamically, as the extension is; musl:
    statically). For the host it builds in cargo's host directory, shared with the extension's
    dependencies, rather than under the monitor's target directory, whose RUSTFLAGS differ."""
    env = dict(env or os.environ)
    _ensure_member("cli")
    host = host_triple(env)
    target = target or host
    env.pop("CARGO_BUILD_TARGET", None)
    cargo = env.get("CARGO", "cargo")
    cmd = [cargo, "build", "--release", "-p", "sampan-cli",
           "--manifest-path", str(ROOT / "Cargo.toml"), *(extra or [])]
    if target != host:
        cmd += ["--target", target]
    _say("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    tdir = Path(env.get("CARGO_TARGET_DIR") or ROOT / "target")
    out = tdir / (target if target != host else "") / "release" / "sampan"
    if not out.is_file():
        raise RuntimeError(f"cargo built no {out}")
    return out


def client_arcname(wheel: Path) -> str:
    """Where a wheel's data script `sampan` goes: `<name>-<version>.data/scripts/sampan`."""
    name, version = wheel.name.split("-")[:2]
    return f"{name}-{version}.data/scripts/sampan"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def add_to_wheel(wheel: Path, binary: Path, arcname: str = IN_WHEEL) -> None:
    """Put `binary` into `wheel` at `arcname`, executable, replacing any copy maturin took
    from the source tree, and list it in RECORD."""
    data = binary.read_bytes()
    tmp = wheel.with_name(wheel.name + ".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = None
        for info in src.infolist():
            if info.filename == arcname:
                continue
            if info.filename.endswith(".dist-info/RECORD"):
                record_name = info
                continue
            dst.writestr(info, src.read(info.filename))
        entry = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
        entry.external_attr = (0o100755 << 16)
        entry.compress_type = zipfile.ZIP_DEFLATED
        dst.writestr(entry, data)
        if record_name is None:
            raise RuntimeError(f"{wheel.name} has no RECORD")
        rows = [r for r in src.read(record_name.filename).decode().splitlines()
                if r and r.split(",", 1)[0] != arcname]
        rows.insert(len(rows) - 1, f"{arcname},{_record_hash(data)},{len(data)}")
        dst.writestr(record_name, ("\n".join(rows) + "\n").encode())
    os.replace(tmp, wheel)


def install_dev(binary: Path) -> Path:
    """Copy the binary to python/sampan/libexec/ (temp + rename: a running monitor keeps its
    own copy of the old file)."""
    DEV_PATH.parent.mkdir(parents=True, exist_ok=True)
    tmp = DEV_PATH.with_name(f".sampan-monitor.{os.getpid()}")
    tmp.write_bytes(binary.read_bytes())
    tmp.chmod(0o755)
    os.replace(tmp, DEV_PATH)
    return DEV_PATH


def _maturin():
    # Imported when a hook runs: scripts/build-wheels imports this module for build_monitor
    # and add_to_wheel in an interpreter that may not have maturin.
    import maturin

    return maturin


def get_requires_for_build_wheel(config_settings=None):
    return _maturin().get_requires_for_build_wheel(config_settings)


def get_requires_for_build_sdist(config_settings=None):
    return _maturin().get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return _maturin().prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_sdist(sdist_directory, config_settings=None):
    return _maturin().build_sdist(sdist_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = _maturin().build_wheel(wheel_directory, config_settings, metadata_directory)
    wheel = Path(wheel_directory) / name
    add_to_wheel(wheel, build_monitor(requested_target()))
    add_to_wheel(wheel, build_client(requested_target()), client_arcname(wheel))
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    # An editable install runs python/sampan from the tree: the monitor goes there.
    name = _maturin().build_editable(wheel_directory, config_settings, metadata_directory)
    install_dev(build_monitor(requested_target()))
    # the command itself is a script in bin/, installed from the wheel as for a normal install
    wheel = Path(wheel_directory) / name
    add_to_wheel(wheel, build_client(requested_target()), client_arcname(wheel))
    return name


def get_requires_for_build_editable(config_settings=None):
    return _maturin().get_requires_for_build_editable(config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    return _maturin().prepare_metadata_for_build_editable(metadata_directory,
                                                               config_settings)
