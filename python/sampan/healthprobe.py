"""The healthcheck probe helper: `python -m sampan.healthprobe ROOT ID PROCESS_JSON
PIDFILE` execs PROCESS_JSON (an OCI process) in container ID with this process's stdio and
exits with its status. sampand runs one per probe (daemon/health.py) so the probe's output has
a pipe of its own; this module imports nothing but the runtime, to start fast."""

import sys


def main(argv: list) -> int:
    root, cid, proc_json, pidfile = argv
    from sampan import _runtime

    try:
        ct = _runtime.Container.load(cid, root)
        _pid, status = ct.exec(proc_json, None, False, pidfile, 0)
    except Exception as e:  # noqa: BLE001 - reported as the probe's output
        print(f"OCI runtime exec failed: {e}", flush=True)
        return 126
    return int(status or 0) & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
