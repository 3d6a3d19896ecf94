"""Registry client: OCI distribution / Docker Registry HTTP API v2.

See docs/images-interfaces.md.
"""

from sampan.registry.auth import TokenCache
from sampan.registry.client import Registry, Repository
from sampan.registry.config import Endpoint, RegistryConfig
from sampan.registry.pull import Puller
from sampan.registry.push import Pusher

__all__ = ["Endpoint", "Puller", "Pusher", "Registry", "RegistryConfig", "Repository",
           "TokenCache"]
