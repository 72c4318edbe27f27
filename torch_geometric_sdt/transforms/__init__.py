from .topk_jaccard import TopKJaccard

__all__ = [
    'TopKJaccard',
]
