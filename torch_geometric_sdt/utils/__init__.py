from .infomap import infomap
from .knn_features import SimilarityScale, noise_scale, similarity_scale
from .rank import edge_rank, position_in_target
from .similarity import edge_similarity
from .softmax import masked_softmax
from .topk_jaccard import topk_jaccard, topk_jaccard_ray, topk_target

__all__ = [
    'infomap',
    'topk_jaccard',
    'topk_jaccard_ray',
    'topk_target',
    'edge_rank',
    'position_in_target',
    'masked_softmax',
    'edge_similarity',
    'SimilarityScale',
    'similarity_scale',
    'noise_scale',
]
