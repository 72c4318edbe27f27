r"""Incremental clustering: a persistent index of clustered embeddings that
takes additions and removals (:class:`ClusterIndex`)."""

from .cluster_index import ClusterIndex
from .store import FORMAT, FORMAT_VERSION, IndexLockedError

__all__ = ['ClusterIndex', 'IndexLockedError', 'FORMAT', 'FORMAT_VERSION']
