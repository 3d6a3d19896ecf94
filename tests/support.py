"""Helpers shared by the runtime tests: one interface over several runtimes.

A *driver* starts and manages containers through one way in:

- ``runc``: the ``runc`` command (the reference: it shows the tests ask the right thing);
- ``sampan-cli``: the ``sampan runtime`` command;
- ``sampan-api``: the Python API ``sampan.runtime`` in this process;
- ``crun``: the ``crun`` command (only when asked for with ``--candidate crun``).

Every driver keeps its state in its own ``--root`` directory so that leftovers can be
found and removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROBE = HERE / "probe.sh"

CGROUP_ROOT = Path("/sys/fs/cgroup")
TIMEOUT = 30.0  # seconds any single runtime call may take before the test gives up


# --------------------------------------------------------------------------- sampan


def sampan_import_error() -> str | None:
    """None when ``sampan._runtime`` imports, else why not."""
    try:
        import sampan._runtime
        import sampan.runtime  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or whatever the module raises
        return f"sampan._runtime is not importable ({type(exc).__name__}: {exc})"
    return None


def sampan_cli_argv() -> list[str]:
    """How to run the ``sampan`` command with the sampan package this process imports."""
    code = "import sys; from sampan.cli import main; sys.argv[0] = 'sampan'; sys.exit(main())"
    return [sys.executable, "-c", code]


def sampan_env() -> dict:
    """Environment for subprocesses: they import the same sampan package as this process."""
    env = dict(os.environ)
    import sampan

    parent = str(Path(next(iter(sampan.__path__))).parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
    return env


# --------------------------------------------------------------------------- errors


class RuntimeFailure(Exception):
    """A runtime refused or failed; ``message`` is what it said, ``cause`` the original."""

    def __init__(self, message: str, *, returncode: int | None = None, cause=None):
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.cause = cause


class Proc:
    """A container started in the foreground; ``wait()`` gives its exit status."""

    def __init__(self, cid: str, wait: Callable[[float], int], cleanup=None):
        self.cid = cid
        self._wait = wait
        self._cleanup = cleanup
        self.status: int | None = None

    def wait(self, timeout: float = TIMEOUT) -> int:
        if self.status is None:
            self.status = self._wait(timeout)
        return self.status


# --------------------------------------------------------------------------- drivers


class Driver:
    name = "?"
    has_stats = True

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Scratch files (process.json for exec, logs) live beside the state root, not in
        # it: a runtime may take every entry of its root for a container.
        self.scratch = self.root.parent / f"{self.root.name}.scratch"
        self.scratch.mkdir(parents=True, exist_ok=True)

    def _scratch(self, cid: str, suffix: str) -> Path:
        return self.scratch / (re.sub(r"[^A-Za-z0-9_.-]", "_", cid) + "." + suffix)

    # run / foreground
    def run(self, cid: str, bundle: Path, *, console_socket=None, timeout=TIMEOUT) -> int:
        raise NotImplementedError

    def spawn(self, cid: str, bundle: Path) -> Proc:
        """Create and start in the foreground; returns once the process has started."""
        raise NotImplementedError

    # lifecycle
    def create(self, cid, bundle, *, pid_file=None, console_socket=None) -> None:
        raise NotImplementedError

    def start(self, cid) -> None:
        raise NotImplementedError

    def state(self, cid) -> dict:
        raise NotImplementedError

    def kill(self, cid, sig=signal.SIGTERM, *, all=False) -> None:
        raise NotImplementedError

    def pause(self, cid) -> None:
        raise NotImplementedError

    def resume(self, cid) -> None:
        raise NotImplementedError

    def exec(self, cid, process: dict, *, detach=False, pid_file=None) -> int:
        raise NotImplementedError

    def ps(self, cid) -> list:
        raise NotImplementedError

    def stats(self, cid) -> dict:
        raise NotImplementedError

    def delete(self, cid, *, force=False) -> None:
        raise NotImplementedError

    def list(self) -> list:
        raise NotImplementedError

    # helpers
    def wait_status(self, cid, wanted, timeout=TIMEOUT) -> dict:
        """Poll state() until its status is one of ``wanted``."""
        if isinstance(wanted, str):
            wanted = (wanted,)
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(cid)
            if st.get("status") in wanted:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {cid} stayed {st.get('status')!r}, "
                                     f"wanted {wanted}")
            time.sleep(0.02)

    def cleanup(self) -> None:
        """Kill and delete every container under this driver's root."""
        # Best effort: whatever fails here, the next step is still worth trying.
        try:
            items = self.list()
        except (RuntimeFailure, AssertionError, ValueError):
            items = []
        ids = {c.get("id") for c in items if c.get("id")}
        if self.root.is_dir():
            ids |= {p.name for p in self.root.iterdir() if p.is_dir()}
        for cid in ids:
            with contextlib.suppress(RuntimeFailure, AssertionError):
                self.kill(cid, signal.SIGKILL, all=True)
            with contextlib.suppress(RuntimeFailure, AssertionError):
                self.delete(cid, force=True)


class CliDriver(Driver):
    """A runc-compatible command line: runc, crun or ``sampan runtime``."""

    def __init__(self, name: str, argv: list, root: Path, env: dict | None = None):
        super().__init__(root)
        self.name = name
        self.argv = list(argv) + ["--root", str(self.root)]
        self.env = env
        self.has_stats = name != "sampan-cli"  # `sampan runtime` has no `events`

    def cmd(self, *args, check=True, timeout=TIMEOUT, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        try:
            proc = subprocess.run(
                self.argv + [str(a) for a in args], timeout=timeout, env=self.env,
                stdin=kw.pop("stdin", subprocess.DEVNULL), text=True, check=False, **kw
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeFailure(f"{self.name} {args[0]}: timed out after {timeout}s") from exc
        if check and proc.returncode != 0:
            raise RuntimeFailure(
                f"{self.name} {' '.join(map(str, args))}: exit {proc.returncode}: "
                f"{(proc.stderr or '').strip()}",
                returncode=proc.returncode,
            )
        return proc

    def run(self, cid, bundle, *, console_socket=None, timeout=TIMEOUT, detach=False) -> int:
        args = ["run", "-b", bundle]
        if console_socket is not None:
            args += ["--console-socket", console_socket]
        if detach:
            args.append("-d")
        # Output to a file, not a pipe: a detached container holds it open while it runs.
        self.last_log = self._scratch(cid, "run.log")
        with open(self.last_log, "w") as out:
            proc = self.cmd(*args, cid, check=False, timeout=timeout, capture_output=False,
                            stdout=out, stderr=out)
        return proc.returncode

    def run_capture(self, cid, bundle, *, timeout=TIMEOUT) -> subprocess.CompletedProcess:
        """``run`` with the container's stdout and stderr captured."""
        return self.cmd("run", "-b", bundle, cid, check=False, timeout=timeout)

    def spawn(self, cid, bundle) -> Proc:
        # Files, not pipes: the container inherits them, and nobody reads while it runs.
        log = self._scratch(cid, "log")
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                self.argv + ["run", "-b", str(bundle), cid],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env,
            )

        def wait(timeout):
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
                raise AssertionError(f"{self.name} run {cid}: still running after {timeout}s")
            return popen.returncode

        deadline = time.monotonic() + TIMEOUT
        while True:
            if popen.poll() is not None:
                break
            st = self.cmd("state", cid, check=False)
            if st.returncode == 0 and json.loads(st.stdout).get("status") != "created":
                break
            if time.monotonic() > deadline:
                popen.kill()
                raise AssertionError(f"{self.name} run {cid}: never started: "
                                     f"{log.read_text(errors='replace')}")
            time.sleep(0.01)
        return Proc(cid, wait)

    def create(self, cid, bundle, *, pid_file=None, console_socket=None):
        args = ["create", "-b", bundle]
        if pid_file is not None:
            args += ["--pid-file", pid_file]
        if console_socket is not None:
            args += ["--console-socket", console_socket]
        # stderr to a file: the created process inherits it and holds it open.
        log = self._scratch(cid, "create.log")
        with open(log, "w") as err:
            proc = self.cmd(*args, cid, check=False, capture_output=False,
                            stdout=subprocess.DEVNULL, stderr=err)
        if proc.returncode != 0:
            raise RuntimeFailure(
                f"{self.name} create {cid}: exit {proc.returncode}: {log.read_text().strip()}",
                returncode=proc.returncode)

    def start(self, cid):
        self.cmd("start", cid)

    def state(self, cid) -> dict:
        return json.loads(self.cmd("state", cid).stdout)

    def kill(self, cid, sig=signal.SIGTERM, *, all=False):
        args = ["kill"] + (["--all"] if all else []) + [cid, str(int(sig))]
        self.cmd(*args)

    def pause(self, cid):
        self.cmd("pause", cid)

    def resume(self, cid):
        self.cmd("resume", cid)

    def exec(self, cid, process, *, detach=False, pid_file=None) -> int:
        path = self._scratch(cid, f"{time.monotonic_ns()}.process.json")
        path.write_text(json.dumps(process))
        args = ["exec", "-p", path]
        if detach:
            args.append("-d")
        if pid_file is not None:
            args += ["--pid-file", pid_file]
        log = self._scratch(cid, "exec.log")
        try:
            with open(log, "w") as err:
                proc = self.cmd(*args, cid, check=False, capture_output=False,
                                stdout=subprocess.DEVNULL, stderr=err)
        finally:
            path.unlink()
        if detach and proc.returncode != 0:
            raise RuntimeFailure(f"{self.name} exec -d: exit {proc.returncode}: "
                                 f"{log.read_text().strip()}", returncode=proc.returncode)
        if detach:
            return int(Path(pid_file).read_text()) if pid_file else 0
        return proc.returncode

    def ps(self, cid) -> list:
        return [int(p) for p in json.loads(self.cmd("ps", "-f", "json", cid).stdout) or []]

    def stats(self, cid) -> dict:
        return json.loads(self.cmd("events", "--stats", cid).stdout)["data"]

    def delete(self, cid, *, force=False):
        self.cmd("delete", *(["--force"] if force else []), cid)

    def list(self) -> list:
        return json.loads(self.cmd("list", "-f", "json").stdout) or []


class ApiDriver(Driver):
    """``sampan.runtime`` called in this process."""

    name = "sampan-api"

    def __init__(self, root: Path):
        super().__init__(root)
        from sampan import runtime

        self.rt = runtime
        self._containers: dict = {}

    def _call(self, cid, fn, *args, timeout=TIMEOUT, **kw):
        """Call the binding in a thread, so that a hang fails the test instead of the run.

        On timeout the container's processes are SIGKILLed from the host (its cgroup), and
        those that are this process's children are reaped, then the test fails.
        """
        box: dict = {}

        def target():
            try:
                box["value"] = fn(*args, **kw)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                box["error"] = exc

        t = threading.Thread(target=target, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            rescue(cid)
            t.join(5)
            raise AssertionError(f"{self.name}: {getattr(fn, '__name__', fn)} on {cid} did not "
                                 f"return within {timeout}s")
        if "error" in box:
            exc = box["error"]
            if isinstance(exc, self.rt.ContainerError):
                raise RuntimeFailure(str(exc), cause=exc) from exc
            raise exc
        return box.get("value")

    def _get(self, cid):
        c = self._containers.get(cid)
        if c is None:
            c = self._call(cid, self.rt.Container.load, cid, root=str(self.root))
        return c

    def run(self, cid, bundle, *, console_socket=None, timeout=TIMEOUT) -> int:
        return self._call(
            cid, self.rt.run, cid, str(bundle), root=str(self.root),
            console_socket=None if console_socket is None else str(console_socket),
            timeout=timeout,
        )

    def spawn(self, cid, bundle) -> Proc:
        self.create(cid, bundle)
        self.start(cid)
        c = self._containers[cid]
        return Proc(cid, lambda timeout: self._call(cid, c.wait, timeout=timeout))

    def create(self, cid, bundle, *, pid_file=None, console_socket=None):
        self._containers[cid] = self._call(
            cid, self.rt.Container.create, cid, str(bundle), root=str(self.root),
            console_socket=None if console_socket is None else str(console_socket),
            pid_file=None if pid_file is None else str(pid_file),
        )

    def start(self, cid):
        self._call(cid, self._get(cid).start)

    def state(self, cid) -> dict:
        return self._call(cid, self._get(cid).state)

    def kill(self, cid, sig=signal.SIGTERM, *, all=False):
        self._call(cid, self._get(cid).kill, int(sig), all=all)

    def pause(self, cid):
        self._call(cid, self._get(cid).pause)

    def resume(self, cid):
        self._call(cid, self._get(cid).resume)

    def exec(self, cid, process, *, detach=False, pid_file=None) -> int:
        return self._call(cid, self._get(cid).exec, process, detach=detach,
                          pid_file=None if pid_file is None else str(pid_file))

    def ps(self, cid) -> list:
        return [int(p) for p in self._call(cid, self._get(cid).ps)]

    def stats(self, cid) -> dict:
        return self._call(cid, self._get(cid).stats)

    def delete(self, cid, *, force=False):
        try:
            self._call(cid, self._get(cid).delete, force=force)
        finally:
            self._containers.pop(cid, None)

    def list(self) -> list:
        return self._call("-", self.rt.list, root=str(self.root))


def rescue(cid: str) -> None:
    """SIGKILL every process in the cgroups named ``cid`` and reap those that are ours."""
    pids = set()
    for d in cgroup_dirs_named(cid):
        try:
            pids |= {int(p) for p in Path(d, "cgroup.procs").read_text().split()}
        except OSError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    # Zombie children of this process (e.g. an exec'd process the binding never reaped)
    # keep a pid namespace's init from finishing its exit: reap them. The test has failed
    # already, so taking an exit status the binding wanted costs nothing more.
    for pid in child_pids():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if pid in pids or state == "Z":
                os.waitpid(pid, os.WNOHANG)
        except OSError:
            pass


def make_driver(name: str, root: Path) -> Driver:
    if name == "runc":
        return CliDriver("runc", ["runc"], root)
    if name == "crun":
        return CliDriver("crun", ["crun"], root)
    if name == "sampan-cli":
        return CliDriver("sampan-cli", sampan_cli_argv() + ["runtime"], root, env=sampan_env())
    if name == "sampan-api":
        return ApiDriver(root)
    raise ValueError(f"unknown runtime {name!r}")


def driver_unavailable(name: str) -> str | None:
    """Why a driver cannot run here, or None."""
    if name in ("runc", "crun"):
        return None if shutil.which(name) else f"{name} is not installed"
    return sampan_import_error()


# --------------------------------------------------------------------------- console


class ConsoleSocket:
    """A unix socket that receives a pty master over SCM_RIGHTS, as runc's --console-socket.

    ``start()`` accepts one connection in a thread, takes the fd and reads everything the
    container writes until the slave side is closed; ``output()`` returns it.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        self.sock.listen(1)
        self.sock.settimeout(TIMEOUT)
        self.master: int | None = None
        self.data = bytearray()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> ConsoleSocket:
        self._thread.start()
        return self

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                _, fds, _, _ = socket.recv_fds(conn, 4096, 4)
            if not fds:
                raise RuntimeError("console socket: no fd received")
            self.master = fds[0]
            for extra in fds[1:]:
                os.close(extra)
            while True:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO once no slave is open
                    break
                if not chunk:
                    break
                self.data += chunk
        except BaseException as exc:  # noqa: BLE001 - reported by output()
            self.error = exc

    def output(self, timeout: float = TIMEOUT) -> str:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("console: the container's pty was never closed")
        if self.error is not None:
            raise AssertionError(f"console: {self.error!r}")
        return self.data.decode(errors="replace").replace("\r\n", "\n")

    def close(self):
        self.sock.close()
        if self.master is not None:
            try:
                os.close(self.master)
            except OSError:
                pass
            self.master = None


# --------------------------------------------------------------------------- host views


def outdir(bundle: Path) -> Path:
    """The host directory that a bundle made with ``out=True`` mounts at /out."""
    return Path(bundle).parent / f"{Path(bundle).name}.out"


def host_mounts() -> list:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def cgroup_dirs_named(name: str) -> list:
    """Every cgroup directory, in any hierarchy, whose last component is ``name``."""
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        for dirpath, dirnames, _ in os.walk(hierarchy):
            if name in dirnames:
                found.append(os.path.join(dirpath, name))
    return found


def cgroup_paths_of(pid: int) -> dict:
    """Host paths of the cgroup directories of ``pid``: {hierarchy dir: path}."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, superopts = fields[sep + 1], fields[sep + 3]
            if fstype == "cgroup2":
                mounts[""] = fields[4]
            elif fstype == "cgroup":
                for opt in superopts.split(","):
                    if opt not in ("rw", "ro") and not opt.startswith("release_agent"):
                        mounts.setdefault(opt, fields[4])
    paths = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for ctl in controllers.split(",") if controllers else [""]:
                if ctl in mounts:
                    paths[ctl] = Path(mounts[ctl] + path)
    return paths


def processes_rooted_at(rootfs: Path) -> list:
    """Pids of processes whose root directory is ``rootfs`` (i.e. still in the container)."""
    rootfs = os.path.realpath(rootfs)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{entry}/root")
        except OSError:
            continue
        if root == rootfs:
            pids.append(int(entry))
    return pids


def open_fds() -> list:
    return sorted(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    """OS threads of this process, once those of finished Python threads are gone.

    A joined Python thread may still exist for a moment in /proc/self/task; wait (up to a
    second) for the count to come down to the Python threads alive. Threads the binding
    started and kept stay counted.
    """
    deadline = time.monotonic() + 1.0
    while True:
        n = len(os.listdir("/proc/self/task"))
        if n <= threading.active_count() or time.monotonic() > deadline:
            return n
        time.sleep(0.01)


def child_pids() -> list:
    me = str(os.getpid())
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                kids.append(int(entry))
    return kids


def end_children(exclude=()) -> list:
    """SIGKILL and reap this process's children (but those in ``exclude``); their pids."""
    left = [pid for pid in child_pids() if pid not in set(exclude)]
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    for pid in left:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.01)
    return left


def find_key(obj: Any, pattern: str) -> list:
    """Every (dotted path, value) in a nested dict/list whose key matches ``pattern``."""
    rx = re.compile(pattern, re.IGNORECASE)
    out = []

    def walk(o, path):
        if isinstance(o, dict):
            for k, v in o.items():
                p = f"{path}.{k}" if path else str(k)
                if rx.search(str(k)):
                    out.append((p, v))
                walk(v, p)
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, f"{path}[{i}]")

    walk(obj, "")
    return out


def read_file(path: Path, timeout: float = 10.0) -> str:
    """Wait for ``path`` to exist and hold a complete line, then return its text."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = Path(path).read_text()
            if text.endswith("\n"):
                return text
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)
