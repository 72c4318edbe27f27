from .topk_jaccard import edge_rank, topk_jaccard, topk_target

__all__ = [
    'topk_jaccard',
    'topk_target',
    'edge_rank',
]
