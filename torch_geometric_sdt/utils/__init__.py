from .infomap import infomap
from .topk_jaccard import edge_rank, topk_jaccard, topk_target

__all__ = [
    'infomap',
    'topk_jaccard',
    'topk_target',
    'edge_rank',
]
