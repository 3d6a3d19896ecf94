"""Containers as the daemon keeps them: records in `<data-root>/containers/<id>/`
(config.v2.json, written atomically), names, id prefixes, OCI bundle making (`spec`), and the
per-container monitor (`sampan.monitor`) that runs each one."""

from sampan.containers.store import ContainerStore, Record  # noqa: F401
