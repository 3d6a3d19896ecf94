"""Smoke test run *inside* a target's CPython (under qemu-user, or natively for x86_64).

    python smoke.py SPEC.json

SPEC names the unpacked wheel (`site`), optionally pip's `packaging` directory, a config.json
and resources to translate, and a bundle + state root to run. Everything observed is printed
as one JSON object on stdout; the pytest side (test_emulated.py) does the judging, so this file
asserts nothing and needs only the standard library of a minimal CPython.
"""

import json
import os
import platform
import struct
import sys
import sysconfig
import traceback

ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM",
          "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPSEL"]
SMALL_PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}],
}
REFERENCES = [
    "busybox",
    "library/busybox:1.36",
    "localhost:5000/team/app:v1",
    "ghcr.io/owner/image@sha256:" + "a" * 64,
    "[::1]:5000/x:y",
    "Upper/Case",
    "bad::tag",
]


def decode(program):
    """sock_filter structs in this build's byte order -> [code, jt, jf, k]."""
    return [list(t) for t in struct.iter_unpack("=HBBI", program)]


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    report = {}

    def section(name):
        def wrap(fn):
            try:
                report[name] = fn()
            except BaseException as e:  # noqa: BLE001 - reported, judged outside
                report[name] = {"error": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc()}
            return fn
        return wrap

    @section("platform")
    def _():
        libc = None
        try:
            libc = os.confstr("CS_GNU_LIBC_VERSION")
        except (ValueError, OSError, AttributeError):
            pass
        return {
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "sysconfig_platform": sysconfig.get_platform(),
            "machine": platform.machine(),
            "byteorder": sys.byteorder,
            "pointer_bits": struct.calcsize("P") * 8,
            "gnu_libc": libc,
        }

    if spec.get("packaging"):
        @section("pip_platforms")
        def _():
            # pip's own tag logic (its vendored `packaging`), run on this interpreter.
            sys.path.insert(0, spec["packaging"])
            from packaging import _musllinux, tags

            if spec.get("qemu"):
                # packaging learns the musl version by running the interpreter's dynamic
                # loader. Without binfmt_misc the kernel cannot start a foreign binary, so
                # that one call goes through qemu; everything else is pip's own logic.
                import subprocess
                import types

                prefix = os.environ.get("QEMU_LD_PREFIX", "")

                def run(args, *a, **kw):
                    # qemu takes the program's own path from the host's file system.
                    exe = prefix + args[0] if os.path.exists(prefix + args[0]) else args[0]
                    env = {k: v for k, v in os.environ.items()
                           if k in ("PATH", "QEMU_LD_PREFIX") or not k.startswith("QEMU_")}
                    return subprocess.run([spec["qemu"], exe, *args[1:]], *a, env=env, **kw)  # noqa: PLW1510

                _musllinux.subprocess = types.SimpleNamespace(run=run, PIPE=subprocess.PIPE)
            return sorted({t.platform for t in tags.sys_tags() if t.abi == "abi3"})

    sys.path.insert(0, spec["site"])

    @section("import")
    def _():
        from sampan import _runtime
        return {"file": _runtime.__file__,
                "names": sorted(n for n in dir(_runtime) if not n.startswith("__"))}

    @section("reference")
    def _():
        from sampan.reference import parse
        out = {}
        for s in REFERENCES:
            try:
                out[s] = str(parse(s))
            except Exception as e:  # noqa: BLE001 - the error is the result
                out[s] = f"error: {type(e).__name__}: {e}"
        return out

    @section("seccomp")
    def _():
        from sampan import _runtime as r
        n, prog = r.seccomp_program()
        out = {"native": r.seccomp_native_arch(), "count": n, "bytes": len(prog),
               "program": decode(prog), "arches": {}}
        for a in ARCHES:
            n_a, prog_a = r.seccomp_program(None, a)
            out["arches"][a] = {"count": n_a, "program": decode(prog_a)}
        n_s, prog_s = r.seccomp_program(json.dumps(SMALL_PROFILE))
        out["small"] = {"count": n_s, "program": decode(prog_s)}
        try:
            r.seccomp_program(None, "SCMP_ARCH_PPC64LE")
            out["unknown_arch_error"] = None
        except r.ContainerError as e:
            out["unknown_arch_error"] = str(e)
        return out

    if spec.get("config"):
        @section("spec")
        def _():
            from sampan import _runtime as r
            return json.loads(r.parse_spec(open(spec["config"]).read()))

    if spec.get("resources"):
        @section("cgroup")
        def _():
            from sampan import _runtime as r
            out = {"values": r.cgroup_values(json.dumps(spec["resources"]))}
            try:
                r.cgroup_values(json.dumps({"memory": {"limit": 1 << 26, "swap": 1 << 20}}))
                out["bad_swap_error"] = None
            except r.ContainerError as e:
                out["bad_swap_error"] = str(e)
            return out

    if spec.get("bundle"):
        @section("run")
        def _():
            from sampan import runtime
            try:
                status = runtime.run(spec.get("container_id", "cross-smoke"), spec["bundle"],
                                     root=spec["state_root"])
                return {"status": status}
            except runtime.ContainerError as e:
                return {"container_error": str(e)}

    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
