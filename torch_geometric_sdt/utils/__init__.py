from .infomap import infomap
from .knn_features import SimilarityScale, similarity_scale
from .memory import check_memory, estimate_memory
from .topk_jaccard import edge_rank, topk_jaccard, topk_target

__all__ = [
    'infomap',
    'topk_jaccard',
    'topk_target',
    'edge_rank',
    'SimilarityScale',
    'similarity_scale',
    'estimate_memory',
    'check_memory',
]
