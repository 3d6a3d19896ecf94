"""Static checks of every wheel in dist/: tags, RECORD, and the extension's ELF identity."""

from __future__ import annotations

import base64
import hashlib
import zipfile

import pytest
from cross_targets import GLIBC_MAX, MANYLINUX_LIBS, TARGETS, WheelTarget
from crosslib import dist_dir, wheel_for, wheel_name_parts
from elfinfo import (
    EF_ARM_ABI_FLOAT_HARD,
    EF_ARM_ABI_FLOAT_SOFT,
    EF_ARM_EABIMASK,
    EF_MIPS_ABI,
    EF_MIPS_ABI2,
    EF_MIPS_ABI_O32,
    EF_MIPS_ARCH,
    EF_MIPS_ARCH_32R2,
    EM_ARM,
    EM_MIPS,
    ET_DYN,
    TAG_ABI_VFP_ARGS,
    parse,
)

EXT = "sampan/_runtime.abi3.so"
MONITOR = "sampan/libexec/sampan-monitor"


def _wheel(t: WheelTarget) -> zipfile.ZipFile:
    w = wheel_for(t)
    if w is None:
        pytest.skip(f"no {t.platform} wheel in {dist_dir()}: run scripts/build-wheels {t.name}")
    return zipfile.ZipFile(w)


@pytest.fixture(params=[t.name for t in TARGETS])
def target(request):
    return next(t for t in TARGETS if t.name == request.param)


def test_file_name_and_wheel_metadata_agree(target):
    z = _wheel(target)
    dist, version, build, py, abi, plat = wheel_name_parts(z.filename.rsplit("/", 1)[-1])
    assert (dist, py, abi) == ("sampan", "cp39", "abi3")
    assert set(plat.split(".")) == set(target.platform.split("."))
    assert build == target.build_tag
    info = next(n for n in z.namelist() if n.endswith(".dist-info/WHEEL"))
    assert info == f"sampan-{version}.dist-info/WHEEL"
    lines = z.read(info).decode().splitlines()
    tags = {ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Tag:")}
    assert tags == {f"cp39-abi3-{p}" for p in plat.split(".")}
    builds = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Build:")]
    assert builds == ([build] if build else [])
    assert "Root-Is-Purelib: false" in lines


def test_record_lists_every_file_with_its_hash(target):
    z = _wheel(target)
    record_name = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
    rows = [r.split(",") for r in z.read(record_name).decode().splitlines() if r]
    listed = {r[0] for r in rows}
    assert listed == set(z.namelist())
    for path, digest, size in rows:
        if path == record_name:
            assert digest == "" and size == ""
            continue
        data = z.read(path)
        want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={want}", path
        assert int(size) == len(data), path


def test_extension_is_an_elf_for_the_target(target):
    z = _wheel(target)
    assert EXT in z.namelist()
    elf = parse(z.read(EXT))
    assert elf.type == ET_DYN
    assert (elf.machine, elf.bits, elf.endian) == (target.machine, target.bits, target.endian)
    assert elf.interp is None  # a shared object, not an executable

    if target.machine == EM_ARM:
        assert elf.flags & EF_ARM_EABIMASK == 0x05000000, hex(elf.flags)  # EABI version 5
        if target.float_abi == "hard":
            assert elf.flags & EF_ARM_ABI_FLOAT_HARD, hex(elf.flags)
            assert not elf.flags & EF_ARM_ABI_FLOAT_SOFT
            # Floating-point arguments in VFP registers: the armhf calling convention.
            assert elf.arm_attributes.get(TAG_ABI_VFP_ARGS) == 1, elf.arm_attributes
    if target.machine == EM_MIPS:
        assert elf.flags & EF_MIPS_ABI == EF_MIPS_ABI_O32, hex(elf.flags)
        assert not elf.flags & EF_MIPS_ABI2  # not n32
        assert elf.flags & EF_MIPS_ARCH == EF_MIPS_ARCH_32R2, hex(elf.flags)
        assert elf.mips_fp_abi == target.float_abi, elf.mips_fp_abi


def test_extension_needs_only_the_targets_libc(target):
    elf = parse(_wheel(target).read(EXT))
    assert not any("python" in n for n in elf.needed), elf.needed  # abi3: no libpython
    if target.glibc:
        assert "libc.so.6" in elf.needed
        assert set(elf.needed) <= MANYLINUX_LIBS, elf.needed
        assert elf.glibc_max() is not None and elf.glibc_max() <= GLIBC_MAX, elf.verneed
    else:
        # musl's libc.so is its dynamic loader too; nothing glibc-versioned.
        assert elf.needed == ["libc.so"], elf.needed
        assert elf.verneed == {}, elf.verneed


def test_monitor_is_a_static_executable_for_the_target(target, tmp_path):
    """The monitor binary rides in every wheel (scripts/pep517/sampan_backend.py adds it):
    executable, of the wheel's architecture and ABI, static (it also runs inside containers as
    /sbin/docker-init); under qemu it runs, and as docker-init it reports a missing command
    with 127."""
    import subprocess

    from crosslib import require_qemu

    z = _wheel(target)
    info = z.getinfo(MONITOR)
    assert (info.external_attr >> 16) & 0o777 == 0o755
    data = z.read(MONITOR)
    elf = parse(data)
    assert (elf.machine, elf.bits, elf.endian) == (target.machine, target.bits, target.endian)
    assert elf.interp is None and elf.needed == [], (elf.interp, elf.needed)
    if target.machine == EM_ARM and target.float_abi == "hard":
        assert elf.flags & EF_ARM_ABI_FLOAT_HARD, hex(elf.flags)
    if target.machine == EM_MIPS:
        assert elf.flags & EF_MIPS_ABI == EF_MIPS_ABI_O32, hex(elf.flags)
        assert elf.mips_fp_abi == target.float_abi, elf.mips_fp_abi
    qemu = require_qemu(target)
    exe = tmp_path / "docker-init"
    exe.write_bytes(data)
    exe.chmod(0o755)
    r = subprocess.run([qemu, str(exe), "--", "/no/such/command"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 127, r.stderr
    assert "/no/such/command" in r.stderr
    r = subprocess.run([qemu, "-0", "sampan-monitor", str(exe)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "usage: sampan-monitor run" in r.stderr, r.stderr


def test_every_wheel_carries_the_same_python_code():
    contents = {}
    for t in TARGETS:
        w = wheel_for(t)
        if w is None:
            continue
        with zipfile.ZipFile(w) as z:
            contents[t.name] = {n: hashlib.sha256(z.read(n)).hexdigest()
                                for n in z.namelist() if n.endswith(".py")}
    if len(contents) < 2:
        pytest.skip("fewer than two wheels in dist/")
    first_name, first = next(iter(contents.items()))
    assert "sampan/runtime.py" in first and "sampan/reference.py" in first
    for name, files in contents.items():
        assert files == first, f"{name} and {first_name} differ"
