"""Storage drivers: how image layers are laid out on disk and turned into a container rootfs.

- overlay (default): every layer directory holds only that layer's changes, with overlayfs
  whiteouts (character device 0:0, xattr trusted.overlay.opaque=y). A container's rootfs is an
  overlay mount of the image's layer directories (topmost first) under its own upper/work
  directories, through `sampan._runtime.mount_overlay` (which copes with long lower lists).
- vfs (fallback): every layer directory is a full copy of its parent with the layer applied
  (whiteouts become deletions); a container gets a full copy of its image's top layer.

`select_driver` picks overlay when a test mount under the data root works, else vfs, and says
why (`reason`).
"""

from __future__ import annotations

import logging
import os
import stat
import uuid
from pathlib import Path

from sampan.errors import InvalidArgument, SampanError


def _mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == target:
                    return True
    except OSError:
        pass
    return False


def _unescape(field: str) -> str:
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def fs_type(path: Path) -> str:
    """The file-system type holding `path`, from /proc/self/mountinfo (longest mount prefix)."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                mnt = _unescape(fields[4])
                if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and \
                        len(mnt) >= len(best):
                    best, kind = mnt, fields[sep + 1]
    except (OSError, ValueError):
        pass
    return kind


class StorageDriver:
    name = "none"
    whiteouts = "overlay"   # how LayerApplier writes whiteouts for this driver

    def __init__(self, root: Path, reason: str = ""):
        self.root = Path(root)
        self.reason = reason

    # layers

    def new_layer(self, parent_fs: Path | None, dest_fs: Path) -> None:
        raise NotImplementedError

    # containers

    def prepare(self, layers: list, container_dir: Path) -> Path:
        raise NotImplementedError

    def release(self, container_dir: Path, remove: bool = False) -> None:
        raise NotImplementedError

    def data(self, layers: list) -> dict:
        """GraphDriver.Data of an image with these layer dirs (topmost first)."""
        return {}

    def status(self) -> list:
        """DriverStatus pairs for /info."""
        return [["Backing Filesystem", fs_type(self.root)]]


class OverlayDriver(StorageDriver):
    name = "overlay"
    whiteouts = "overlay"

    def __init__(self, root: Path, reason: str = "", extra: list | None = None):
        super().__init__(root, reason)
        self.extra = list(extra or [])

    def new_layer(self, parent_fs, dest_fs):
        os.mkdir(dest_fs, 0o755)

    def prepare(self, layers, container_dir):
        from sampan import _runtime

        container_dir = Path(container_dir)
        upper, work, merged = (container_dir / "diff", container_dir / "work",
                               container_dir / "merged")
        for d in (container_dir, upper, work, merged):
            d.mkdir(mode=0o755 if d != container_dir else 0o710, exist_ok=True)
        if _mounted(merged):
            return merged
        lower = [Path(p) for p in layers]
        if not lower:
            empty = container_dir / "empty"
            empty.mkdir(mode=0o755, exist_ok=True)
            lower = [empty]
        try:
            _runtime.mount_overlay([str(p) for p in lower], str(merged), str(upper), str(work),
                                   self.extra)
        except (_runtime.ContainerError, OSError) as exc:
            raise SampanError(f"mounting the rootfs of {container_dir}: {exc}") from None
        return merged

    def release(self, container_dir, remove=False):
        from sampan import _runtime
        from sampan.graph.fsutil import remove_detached

        merged = Path(container_dir) / "merged"
        while _mounted(merged):
            _runtime.unmount(str(merged))
        if remove:
            remove_detached(container_dir)

    def data(self, layers):
        if not layers:
            return {}
        out = {"UpperDir": str(layers[0])}
        if len(layers) > 1:
            out["LowerDir"] = ":".join(str(p) for p in layers[1:])
        return out


class VfsDriver(StorageDriver):
    name = "vfs"
    whiteouts = "delete"

    def new_layer(self, parent_fs, dest_fs):
        from sampan.graph.fsutil import copytree

        if parent_fs is None:
            os.mkdir(dest_fs, 0o755)
        else:
            copytree(parent_fs, dest_fs)

    def prepare(self, layers, container_dir):
        from sampan.graph.fsutil import copytree

        container_dir = Path(container_dir)
        container_dir.mkdir(mode=0o710, exist_ok=True)
        rootfs = container_dir / "rootfs"
        if rootfs.exists():
            return rootfs
        tmp = container_dir / f".rootfs-{uuid.uuid4().hex[:8]}"
        if layers:
            copytree(layers[0], tmp)
        else:
            os.mkdir(tmp, 0o755)
        os.rename(tmp, rootfs)
        return rootfs

    def release(self, container_dir, remove=False):
        from sampan.graph.fsutil import rmtree

        if remove:
            rmtree(container_dir)

    def data(self, layers):
        return {"Dir": str(layers[0])} if layers else {}


# File systems overlayfs refuses as an upper (container) layer, or that cannot hold its
# whiteouts: OpenWrt's root is overlayfs over squashfs, and nested overlayfs is not supported.
# (jffs2 and ubifs are fine: they are the upper layer of OpenWrt's own root overlay.) Others
# are found out by the test mount below.
NO_OVERLAY_UPPER = {
    "overlay": "overlayfs", "overlayfs": "overlayfs", "aufs": "aufs", "squashfs": "squashfs",
    "ecryptfs": "ecryptfs", "nfs": "NFS", "nfs4": "NFS", "cifs": "CIFS", "smb3": "SMB",
}
OVERLAY_HINT = ("mount an ext4, f2fs, btrfs or xfs file system (a USB disk, an SD card) and "
                "set the data root on it to use overlay")


def overlay_unsupported(root: Path) -> tuple[str | None, list]:
    """(None, extra mount options) when overlayfs works for layers under `root`, else (why, [])."""
    kind = fs_type(root)
    if kind in NO_OVERLAY_UPPER or kind.startswith("fuse"):
        name = NO_OVERLAY_UPPER.get(kind, kind)
        return (f"{root} is on {name}, which overlayfs cannot use for its upper directory; "
                f"{OVERLAY_HINT}"), []
    try:
        from sampan import _runtime
    except ImportError as exc:
        return f"the runtime module does not import ({exc})", []
    # A daemon killed while this is mounted leaves it: Graph recovery detaches and removes
    # every .probe-* at the next open.
    probe = Path(root) / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    from sampan.graph.fsutil import remove_detached

    try:
        lower, upper, work, merged = (probe / "l", probe / "u", probe / "w", probe / "m")
        for d in (probe, lower, upper, work, merged):
            d.mkdir()
        (lower / "gone").write_text("x")
        (lower / "dir").mkdir()
        (lower / "dir" / "old").write_text("x")
        (upper / "dir").mkdir()
        try:
            os.mknod(upper / "gone", stat.S_IFCHR, os.makedev(0, 0))
            os.setxattr(upper / "dir", "trusted.overlay.opaque", b"y")
        except OSError as exc:
            return f"cannot write overlay whiteouts under {root} ({exc.strerror})", []
        last = None
        for extra in (["index=off"], []):
            try:
                _runtime.mount_overlay([str(lower)], str(merged), str(upper), str(work), extra)
            except (_runtime.ContainerError, OSError) as exc:
                last = exc
                continue
            try:
                hidden = not os.path.lexists(merged / "gone")
                opaque = not os.path.lexists(merged / "dir" / "old")
            finally:
                while _mounted(merged):
                    _runtime.unmount(str(merged))
            if not (hidden and opaque):
                return f"overlay mounts under {root} do not honour whiteouts", []
            return None, extra
        return f"a test overlay mount under {root} ({kind}) failed: {last}", []
    except OSError as exc:
        return f"cannot test overlay under {root}: {exc}", []
    finally:
        remove_detached(probe)


def select_driver(root: Path, requested: str | None = None,
                  recorded: str | None = None) -> StorageDriver:
    """The storage driver for layers under `root`.

    `requested` (a --storage-driver) must work or InvalidArgument; otherwise the driver the data
    root was created with (`recorded`) is kept; otherwise overlay when a test mount works, else
    vfs with the reason.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = requested or recorded
    if name in ("overlay2", "overlayfs"):
        name = "overlay"
    if name not in (None, "overlay", "vfs"):
        raise InvalidArgument(f"unknown storage driver {name!r} (overlay, vfs)")
    if name == "vfs":
        why = "requested" if requested else "the data root was created with vfs"
        return VfsDriver(root, why)
    why, extra = overlay_unsupported(root)
    if why is None:
        return OverlayDriver(root, "", extra)
    if name == "overlay" and requested:
        raise InvalidArgument(f"storage driver overlay is not usable: {why}")
    if name == "overlay" and recorded:
        raise SampanError(f"the data root {root} was created with the overlay driver, which no "
                          f"longer works here: {why}")
    logging.getLogger("sampan.storage").warning(
        "storage driver vfs (every layer and container a full copy): overlay is not usable: %s",
        why)
    return VfsDriver(root, why)
