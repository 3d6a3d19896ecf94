"""The native `sampan` (rust/cli) in every wheel of dist/: a data script pip installs into
bin/, executable, built for the wheel's architecture and ABI, static (the musl build, as the
monitor), and under qemu it speaks for itself: no daemon → the Python CLI's message and 125."""

from __future__ import annotations

import subprocess

import pytest
from cross_targets import TARGETS
from crosslib import require_qemu, wheel_for
from elfinfo import EF_MIPS_ABI, EF_MIPS_ABI_O32, EM_MIPS, parse


@pytest.fixture(params=[t.name for t in TARGETS])
def target(request):
    return next(t for t in TARGETS if t.name == request.param)


def test_client_is_a_static_data_script_for_the_target(target, tmp_path):
    import zipfile

    w = wheel_for(target)
    if w is None:
        pytest.skip(f"no {target.platform} wheel: run scripts/build-wheels {target.name}")
    version = w.name.split("-")[1]
    with zipfile.ZipFile(w) as z:
        name = f"sampan-{version}.data/scripts/sampan"
        info = z.getinfo(name)
        data = z.read(name)
    assert (info.external_attr >> 16) & 0o777 == 0o755
    elf = parse(data)
    assert (elf.machine, elf.bits, elf.endian) == (target.machine, target.bits, target.endian)
    assert elf.interp is None and elf.needed == [], (elf.interp, elf.needed)
    if target.machine == EM_MIPS:
        assert elf.flags & EF_MIPS_ABI == EF_MIPS_ABI_O32, hex(elf.flags)
    qemu = require_qemu(target)
    exe = tmp_path / "sampan"
    exe.write_bytes(data)
    exe.chmod(0o755)
    r = subprocess.run([qemu, str(exe), "-H", f"unix://{tmp_path}/none.sock", "ps"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 125, r.stderr
    assert r.stderr.startswith(f"Cannot connect to the Sampan daemon at unix://{tmp_path}/none"
                               ".sock. Is sampand running?\n"), r.stderr
