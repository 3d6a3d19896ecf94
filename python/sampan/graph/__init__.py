"""The image graph: content store, metadata, layers, local image operations.

See docs/images-interfaces.md for the API the other parts use.
"""

from .content import ContentStore, Writer
from .graph import Graph, LayerInfo, chain_id, chain_ids

__all__ = ["ContentStore", "Graph", "LayerInfo", "Writer", "chain_id", "chain_ids"]
