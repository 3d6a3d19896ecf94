"""The container store: one directory per container under `<data-root>/containers/<id>/`:
config.v2.json (the daemon's record, atomic writes), config.json (the OCI bundle config),
hostname/hosts/resolv.conf, `<id>-json.log`, and exit.json + monitor.log written by the
monitor. With the daemon's --log-root the json log is `<log-root>/<id>/<id>-json.log` instead;
each record keeps its own LogPath, so a daemon restarted with another --log-root still finds
(and keeps writing) the logs of containers made before. All methods are blocking and
thread-safe (one lock); the daemon calls them from worker threads."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sampan.containers import mounts as mountsmod
from sampan.containers import resources
from sampan.containers import spec as specmod
from sampan.errors import Conflict, InvalidArgument, NotFound, SampanError
from sampan.units import human_duration, now_rfc3339  # noqa: F401 - now_rfc3339: others import it from here

ZERO_TIME = "0001-01-01T00:00:00Z"

_ADJ = ("admiring", "brave", "clever", "dazzling", "eager", "festive", "gallant", "happy",
        "jolly", "keen", "lucid", "modest", "nifty", "optimistic", "peaceful", "quirky",
        "relaxed", "serene", "tender", "upbeat", "vibrant", "wizardly", "youthful", "zealous")
_NAMES = ("albattani", "babbage", "curie", "darwin", "euclid", "fermi", "galileo", "hopper",
          "ishango", "johnson", "kepler", "lovelace", "meitner", "noether", "ohm", "pascal",
          "ramanujan", "shannon", "turing", "volta", "wozniak", "yalow", "zhukovsky")


class EngineError(SampanError):
    status = 500




def parse_rfc3339(s: str) -> float:
    if not s or s.startswith("0001-"):
        return 0.0
    import calendar

    m = re.match(r"(\d+-\d+-\d+T\d+:\d+:\d+)(?:\.(\d+))?Z", s)
    if not m:
        return 0.0
    base = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return base + (float("0." + m.group(2)) if m.group(2) else 0.0)


def proc_start_time(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(data.rsplit(")", 1)[1].split()[19])


class Record:
    """One container: `doc` is docker's inspect document (kept up to date and persisted)."""

    def __init__(self, doc: dict[str, Any], cdir: Path):
        self.doc = doc
        self.dir = cdir
        self.lock = threading.Lock()
        self.warnings: list[str] = []  # for the create answer

    @property
    def id(self) -> str:
        return self.doc["Id"]

    @property
    def name(self) -> str:
        return self.doc["Name"].lstrip("/")

    @property
    def state(self) -> dict[str, Any]:
        return self.doc["State"]

    @property
    def running(self) -> bool:
        return bool(self.state.get("Running"))

    @property
    def log_path(self) -> Path:
        """The json-file log, where it was put at create (records older than LogPath: the
        container's directory)."""
        p = self.doc.get("LogPath")
        return Path(p) if p else self.dir / f"{self.id}-json.log"

    def save(self) -> None:
        specmod.atomic_write(self.dir / "config.v2.json", json.dumps(self.doc).encode())


class ContainerStore:
    def __init__(self, data_root: Path, exec_root: Path, graph: Callable[[], Any],
                 log_root: Path | None = None):
        self.root = data_root / "containers"
        self.log_root = log_root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.runtime_root = exec_root / "runtime"
        self.runtime_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._graph = graph
        self.lock = threading.RLock()
        self.by_id: dict[str, Record] = {}
        self.names: dict[str, str] = {}
        self._load()

    # ---------------------------------------------------------------- records

    def _load(self) -> None:
        for d in sorted(self.root.iterdir()):
            p = d / "config.v2.json"
            try:
                doc = json.loads(p.read_text())
            except (OSError, ValueError):
                continue  # a create that died before its record: removed by `cleanup`
            rec = Record(doc, d)
            self.by_id[rec.id] = rec
            self.names[rec.name] = rec.id

    def leftovers(self) -> list[Path]:
        return [d for d in self.root.iterdir()
                if d.is_dir() and d.name not in self.by_id]

    def get(self, ref: str) -> Record:
        with self.lock:
            if ref in self.by_id:
                return self.by_id[ref]
            n = ref.lstrip("/")
            if self.names.get(n) in self.by_id:  # a name reserved by a create under way: 404
                return self.by_id[self.names[n]]
            if ref and re.fullmatch(r"[0-9a-f]+", ref):
                found = [r for i, r in self.by_id.items() if i.startswith(ref)]
                if len(found) == 1:
                    return found[0]
                if len(found) > 1:
                    raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def all(self) -> list[Record]:
        with self.lock:
            return list(self.by_id.values())

    def _new_name(self) -> str:
        for _ in range(100):
            n = f"{random.choice(_ADJ)}_{random.choice(_NAMES)}"
            if n not in self.names:
                return n
        return f"{random.choice(_ADJ)}_{random.choice(_NAMES)}{random.randint(0, 9999)}"

    # ---------------------------------------------------------------- create

    def create(self, body: dict[str, Any], name: str | None) -> Record:
        if not isinstance(body, dict):
            raise InvalidArgument("config cannot be empty in order to create a container")
        host = body.get("HostConfig") or {}
        from sampan.containers.createtypes import CONFIG, HOST_CONFIG

        # dockerd ignores unknown fields: they never reach inspect
        config = {k: v for k, v in body.items() if k in CONFIG}
        if not isinstance(host, dict):
            raise InvalidArgument("HostConfig must be an object")
        image_ref = config.get("Image")
        if not image_ref or not isinstance(image_ref, str):
            raise InvalidArgument("no image specified" if not image_ref else
                                  "Image must be a string")
        for k in ("Cmd", "Entrypoint", "Env", "Binds", "CapAdd", "CapDrop", "SecurityOpt"):
            v = config.get(k) if k in config else host.get(k)
            if v is not None and not (isinstance(v, list) and all(isinstance(x, str)
                                                                  for x in v)):
                if not (k in ("Cmd", "Entrypoint") and isinstance(v, str)):
                    raise InvalidArgument(f"{k} must be a list of strings")
        for k in ("Memory", "PidsLimit", "MemorySwap"):
            v = host.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise InvalidArgument(f"{k} must be an integer")
        if (host.get("Memory") or 0) and host["Memory"] < 6 * 1024 * 1024:
            raise InvalidArgument("Minimum memory limit allowed is 6MB")
        labels = config.get("Labels") or {}
        if not isinstance(labels, dict):
            raise InvalidArgument("Labels must be an object")
        netmode = specmod.network_mode(host)
        specmod.capabilities(host.get("CapAdd"), host.get("CapDrop"), False)  # validate
        from sampan.containers import initproc, logfiles

        log_config = logfiles.validate(host.get("LogConfig"))
        graph = self._graph()
        image_id = graph.resolve(image_ref)
        image = graph.inspect(image_id)
        image_config = image.get("Config") or {}
        if not specmod.command(config, image_config):
            raise InvalidArgument("no command specified")
        mps = mountsmod.parse(config, host, image_config, lambda n: self.get(n).doc)
        config["Volumes"] = mountsmod.config_volumes(config, image_config)
        cid = os.urandom(32).hex()
        with self.lock:
            if name:
                name = specmod.valid_name(name)
                if name in self.names:
                    other = self.names[name]
                    raise Conflict(f'Conflict. The container name "/{name}" is already in use '
                                   f'by container "{other}". You have to remove (or rename) '
                                   "that container to be able to reuse that name.")
            else:
                name = self._new_name()
            self.names[name] = cid  # reserved
        cdir = self.root / cid
        try:
            cdir.mkdir(mode=0o710)
            hostname = config.get("Hostname") or cid[:12]
            if netmode == "host" and not config.get("Hostname"):
                hostname = os.uname().nodename
            config["Hostname"] = hostname
            config.setdefault("Domainname", "")
            config["Labels"] = labels
            config["Image"] = image_ref
            for k in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User"):
                if config.get(k) in (None, "", []) and image_config.get(k):
                    if k == "Cmd" and config.get("Entrypoint") is not None:
                        continue
                    config[k] = image_config[k]
            config["Env"] = specmod.merge_env(image_config.get("Env") or [],
                                              body.get("Env") or [])
            for k in ("Tty", "OpenStdin", "AttachStdin", "AttachStdout", "AttachStderr",
                      "StdinOnce"):
                config[k] = bool(config.get(k))
            rootfs = graph.prepare(image_id, cid, cdir / "fs")
            specmod.write_etc_files(cdir, cid, hostname, netmode)
            oci = specmod.make_spec(cid, Path(rootfs), cdir, image_config, config, host)
            from sampan.containers.volumejournal import Journaled

            user_mounts, shown_mounts = mountsmod.setup(
                cid, Path(rootfs), mps,
                Journaled(mountsmod.volumes_for(self.root.parent), cdir))
            oci["mounts"] = mountsmod.merge(oci["mounts"], user_mounts)
            warnings = resources.apply(oci, host, config, self, cdir)
            specmod.atomic_write(cdir / "config.json", json.dumps(oci).encode(), 0o600)
            args = initproc.user_args(oci)  # inspect shows the command, not docker-init
            host_doc = {k: v for k, v in host.items() if k in HOST_CONFIG}
            host_doc.setdefault("NetworkMode", "default")
            host_doc.setdefault("Binds", None)
            host_doc.setdefault("AutoRemove", False)
            host_doc.setdefault("Privileged", False)
            host_doc.setdefault("ReadonlyRootfs", False)
            host_doc.setdefault("Memory", 0)
            host_doc.setdefault("PidsLimit", None)
            host_doc.setdefault("CapAdd", None)
            host_doc.setdefault("CapDrop", None)
            host_doc.setdefault("SecurityOpt", None)
            host_doc.setdefault("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0})
            host_doc["LogConfig"] = log_config
            shown_net = "none" if netmode in ("none", "bridge") else netmode
            doc = {
                "Id": cid,
                "Created": now_rfc3339(),
                "Path": args[0],
                "Args": args[1:],
                "State": {"Status": "created", "Running": False, "Paused": False,
                          "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": 0,
                          "ExitCode": 0, "Error": "", "StartedAt": ZERO_TIME,
                          "FinishedAt": ZERO_TIME},
                "Image": image_id,
                "ResolvConfPath": str(cdir / "resolv.conf"),
                "HostnamePath": str(cdir / "hostname"),
                "HostsPath": str(cdir / "hosts"),
                "LogPath": str((self.log_root / cid if self.log_root else cdir)
                               / f"{cid}-json.log"),
                "Name": "/" + name,
                "RestartCount": 0,
                "Driver": getattr(graph, "driver_name", "overlay"),
                "Platform": "linux",
                "MountLabel": "",
                "ProcessLabel": "",
                "AppArmorProfile": "",
                "ExecIDs": None,
                "HostConfig": host_doc,
                "GraphDriver": {"Name": getattr(graph, "driver_name", "overlay"),
                                "Data": {"MergedDir": str(rootfs)}},
                "Mounts": shown_mounts,
                "Config": config,
                "NetworkSettings": {"Bridge": "", "SandboxID": "", "Ports": {},
                                    "SandboxKey": "", "Networks": {shown_net: {
                                        "NetworkID": shown_net, "EndpointID": "",
                                        "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                                        "MacAddress": ""}}},
                "SampanMonitor": {"Pid": 0, "StartTime": 0},
            }
            if getattr(self, "network", None) is not None:
                self.network.on_create(doc, body, image_config)
            rec = Record(doc, cdir)
            rec.warnings = warnings
            rec.save()
        except BaseException:
            mountsmod.release(cid, mountsmod.volumes_for(self.root.parent), True)
            with self.lock:
                self.names.pop(name, None)
            try:
                graph.release(cid, remove=True)
            except Exception:  # noqa: BLE001
                pass
            remove_container_dir(cdir)
            raise
        with self.lock:
            self.by_id[cid] = rec
        return rec

    # ---------------------------------------------------------------- start / exit

    def monitor_options(self, rec: Record) -> dict[str, Any]:
        """The monitor's options, written to monitor.json (docs/monitor.md)."""
        cfg = rec.doc["Config"]
        from sampan.containers.logfiles import monitor_options

        log = monitor_options(rec.doc["HostConfig"].get("LogConfig"))
        log["path"] = str(rec.log_path)
        return {"tty": bool(cfg.get("Tty")), "stdin": bool(cfg.get("OpenStdin")),
                "stdin_once": bool(cfg.get("StdinOnce")), "log": log}

    def start(self, rec: Record, on_created: Callable[[], None] | None = None) -> int:
        """Start the container's monitor; returns the monitor's pid (for the daemon to watch).
        `on_created` runs between the monitor's "created" and the start (attach clients that
        waited for the start connect then). Raises EngineError with the runtime's message when
        the process cannot start."""
        with rec.lock:
            if rec.id not in self.by_id:  # removed while this start waited for the lock
                raise NotFound(f"No such container: {rec.id}")
            if rec.running:
                return 0
            if rec.state.get("Status") == "removing":
                raise Conflict("container is marked for removal and cannot be started")
            graph = self._graph()
            graph.prepare(rec.doc["Image"], rec.id, rec.dir / "fs")  # idempotent: remounts
            resources.refresh_joins(rec, self, specmod.atomic_write)
            mountsmod.on_start(rec.id, rec.doc.get("Mounts"),
                               mountsmod.volumes_for(self.root.parent))
            stale = self.runtime_root / rec.id
            if stale.exists():
                try:
                    from sampan import _runtime
                    _runtime.Container.load(rec.id, str(self.runtime_root)).delete(True)
                except Exception:  # noqa: BLE001
                    shutil.rmtree(stale, ignore_errors=True)
            # the last run's status must not pass for this run's if its monitor dies unheard
            (rec.dir / "exit.json").unlink(missing_ok=True)
            if rec.log_path.parent != rec.dir:
                # in the log root, which may be a tmpfs emptied by a reboot since
                logdir = rec.log_path.parent
                logdir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                logdir.mkdir(mode=0o700, exist_ok=True)
            from sampan.containers import launch

            net = getattr(self, "network", None)
            if net is not None:
                net.attach(rec)  # its network namespace, joined by path
            try:
                msg = launch.start_run(rec.dir, rec.id, self.runtime_root,
                                       self.monitor_options(rec), on_created)
            except BaseException:
                if net is not None:
                    net.detach(rec)
                raise
            if "error" in msg:
                self.record_exit(rec)
                if not rec.state.get("Error"):
                    rec.state["Error"] = msg["error"]
                    rec.state["ExitCode"] = 128
                    rec.save()
                e = EngineError(f"failed to create task for container: {msg['error']}")
                code = rec.state.get("ExitCode", 128)
                e.status = 400 if code in (126, 127) else 500
                e.exit_code = code  # type: ignore[attr-defined]
                raise e
            st = rec.state
            st.update({"Status": "running", "Running": True, "Paused": False,
                       "Restarting": False, "OOMKilled": False, "Dead": False,
                       "Pid": msg["pid"], "ExitCode": 0, "Error": "",
                       "StartedAt": msg["started"], "FinishedAt": ZERO_TIME})
            rec.doc["SampanMonitor"] = {"Pid": msg["monitor"],
                                        "StartTime": proc_start_time(msg["monitor"]) or 0}
            rec.save()
            return msg["monitor"]

    def monitor_alive(self, rec: Record) -> bool:
        m = rec.doc.get("SampanMonitor") or {}
        pid = m.get("Pid") or 0
        return bool(pid) and proc_start_time(pid) == m.get("StartTime")

    def record_exit(self, rec: Record) -> None:
        """The monitor is gone: take its exit.json into the record."""
        if getattr(self, "network", None) is not None:
            self.network.detach(rec)
        try:
            ex = json.loads((rec.dir / "exit.json").read_text())
        except (OSError, ValueError):
            ex = {"ExitCode": 255, "FinishedAt": now_rfc3339(), "OOMKilled": False,
                  "Error": "the container's monitor died without recording an exit status"}
            # its processes would run on unseen, holding the rootfs and the cgroup (containerd
            # deletes the task when a shim dies, the same way)
            try:
                from sampan import _runtime

                _runtime.Container.load(rec.id, str(self.runtime_root)).delete(True)
            except Exception:  # noqa: BLE001 - no runtime state: nothing left to kill
                pass
        st = rec.state
        st.update({"Status": "exited", "Running": False, "Pid": 0,
                   "ExitCode": int(ex.get("ExitCode", 255)),
                   "OOMKilled": bool(ex.get("OOMKilled")), "Error": ex.get("Error") or "",
                   "FinishedAt": ex.get("FinishedAt") or now_rfc3339()})
        rec.doc["SampanMonitor"] = {"Pid": 0, "StartTime": 0}
        rec.save()

    def kill(self, rec: Record, sig: int) -> None:
        if not rec.running:
            raise Conflict(f"Cannot kill container: {rec.id}: Container {rec.id} is not running")
        from sampan import _runtime

        try:
            _runtime.Container.load(rec.id, str(self.runtime_root)).kill(sig, False)
        except Exception as e:  # noqa: BLE001
            if self.monitor_alive(rec):
                raise EngineError(f"Cannot kill container: {rec.id}: {e}") from None

    # ---------------------------------------------------------------- remove

    def remove(self, rec: Record, force: bool, volumes: bool = False) -> None:
        with rec.lock:  # after a start under way: never a monitor left without its directory
            self._remove(rec, force, volumes)

    def _remove(self, rec: Record, force: bool, volumes: bool) -> None:
        if rec.running:
            if not force:
                raise Conflict(f"You cannot remove a running container {rec.id}. Stop the "
                               "container before attempting removal or force remove")
            raise EngineError("remove of a running container must stop it first")
        with self.lock:
            if rec.id not in self.by_id:
                return
            rec.state["Status"] = "removing"
            # persisted: a crash from here on is finished by the next daemon start, -v too
            rec.doc["SampanRemoving"] = {"Volumes": bool(volumes)}
        rec.save()
        graph = self._graph()
        try:
            graph.release(rec.id, remove=True)
        except NotFound:
            pass
        # while the record still names its volumes: once it is gone nothing would
        mountsmod.release(rec.id, mountsmod.volumes_for(self.root.parent), volumes)
        logdir = rec.log_path.parent
        if logdir != rec.dir and logdir.name == rec.id:  # its own directory in a log root
            shutil.rmtree(logdir, ignore_errors=True)
        try:
            (rec.dir / "config.v2.json").unlink()
        except OSError:
            pass
        remove_container_dir(rec.dir)
        with self.lock:
            self.by_id.pop(rec.id, None)
            if self.names.get(rec.name) == rec.id:
                del self.names[rec.name]

    # ---------------------------------------------------------------- views

    def summary(self, rec: Record) -> dict[str, Any]:
        d, st = rec.doc, rec.state
        now = time.time()
        from sampan.daemon import health, restarts

        if st["Running"]:
            status = "Up " + human_duration(now - parse_rfc3339(st["StartedAt"]))
            status += " (Paused)" if st.get("Paused") else health.status_suffix(rec)
        elif st.get("Restarting"):
            status = restarts.status_text(rec) or "Restarting"
        elif st["Status"] == "created":
            status = "Created"
        elif st["Status"] == "removing":
            status = "Removal In Progress"
        else:
            status = (f"Exited ({st['ExitCode']}) "
                      f"{human_duration(now - parse_rfc3339(st['FinishedAt']))} ago")
        args = [d["Path"], *d["Args"]]
        net = list(d["NetworkSettings"]["Networks"])
        return {
            "Id": rec.id, "Names": [d["Name"]], "Image": d["Config"]["Image"],
            "ImageID": d["Image"], "Command": " ".join(args),
            "Created": int(parse_rfc3339(d["Created"])), "Ports": _summary_ports(d),
            "Labels": d["Config"].get("Labels") or {}, "State": st["Status"],
            "Status": status, "HostConfig": {"NetworkMode": d["HostConfig"]["NetworkMode"]},
            "NetworkSettings": {"Networks": d["NetworkSettings"]["Networks"]},
            "Mounts": d["Mounts"], "SizeRw": None,
        } | ({"Networks": net} if False else {})

    def inspect(self, rec: Record) -> dict[str, Any]:
        doc = {k: v for k, v in rec.doc.items() if not k.startswith("Sampan")}
        return json.loads(json.dumps(doc))

    def list(self, all: bool, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        allowed = {"id", "name", "status", "label", "exited", "ancestor", "health", "volume"}
        for h in filters.get("health", []):
            if h not in ("starting", "healthy", "unhealthy", "none"):
                raise InvalidArgument(f"Unrecognised filter value for health: {h}")
        for k in filters:
            if k not in allowed:
                raise InvalidArgument(f"invalid filter '{k}'")
        for s in filters.get("status", []):
            if s not in ("created", "restarting", "running", "removing", "paused", "exited",
                         "dead"):
                raise InvalidArgument(f"invalid filter 'status={s}'")
        out = []
        for rec in sorted(self.all(), key=lambda r: r.doc["Created"], reverse=True):
            st = rec.state
            if not all and not st["Running"] and not filters.get("status") \
                    and not filters.get("exited"):
                continue
            if "id" in filters and not any(rec.id.startswith(v) for v in filters["id"]):
                continue
            if "name" in filters and not any(re.search(v, rec.name) for v in filters["name"]):
                continue
            if "status" in filters and st["Status"] not in filters["status"]:
                continue
            if "exited" in filters and (st["Status"] != "exited" or str(st["ExitCode"])
                                        not in filters["exited"]):
                continue
            if "health" in filters and ((st.get("Health") or {}).get("Status", "none")
                                        if st["Running"] else "none") not in filters["health"]:
                continue
            labels = rec.doc["Config"].get("Labels") or {}
            ok = True
            for lf in filters.get("label", []):
                k, sep, v = lf.partition("=")
                if k not in labels or (sep and labels[k] != v):
                    ok = False
            if not ok:
                continue
            if "ancestor" in filters and not any(
                    a in (rec.doc["Config"]["Image"], rec.doc["Image"])
                    or rec.doc["Image"].startswith("sha256:" + a) for a in filters["ancestor"]):
                continue
            if "volume" in filters and not mountsmod.uses(rec.doc, filters["volume"]):
                continue
            out.append(self.summary(rec))
        return out


def remove_container_dir(cdir: Path) -> None:
    """Delete a container's directory once nothing runs from it. Whatever is still mounted under
    it (its rootfs, when the graph lost track of it) is detached first: a plain rmtree would
    delete through the mount, and rmdir of the mount point would fail anyway. Failures are
    logged, not raised: the directory, without its record, goes at the next daemon start."""
    from sampan.graph.fsutil import remove_detached

    try:
        remove_detached(cdir)
    except OSError as e:
        import logging

        logging.getLogger("sampand").warning("removing %s: %s", cdir, e)


def _summary_ports(d: dict[str, Any]) -> list[dict[str, Any]]:
    """/containers/json's Ports from inspect's NetworkSettings.Ports."""
    out: list[dict[str, Any]] = []
    for key, lst in ((d.get("NetworkSettings") or {}).get("Ports") or {}).items():
        port, _, proto = key.partition("/")
        if not lst:
            out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
        for b in lst or []:
            out.append({"IP": b.get("HostIp") or "0.0.0.0", "PrivatePort": int(port),
                        "PublicPort": int(b.get("HostPort") or 0), "Type": proto or "tcp"})
    return out


def _tail(p: Path, n: int = 2000) -> str:
    try:
        return p.read_text(errors="replace")[-n:].strip()
    except OSError:
        return "(no monitor log)"


SIGNALS = {name[3:]: int(getattr(signal, name)) for name in dir(signal)
           if name.startswith("SIG") and not name.startswith("SIG_")
           and isinstance(getattr(signal, name), int)}


def parse_signal(s: str | int | None, default: int = signal.SIGKILL) -> int:
    if s is None or s == "":
        return int(default)
    if isinstance(s, int):
        return s
    t = str(s).upper()
    if t.isdigit():
        n = int(t)
    else:
        n = SIGNALS.get(t.removeprefix("SIG"), 0)
    if not 0 < n < 65:
        raise InvalidArgument(f"Invalid signal: {s}")
    return n
