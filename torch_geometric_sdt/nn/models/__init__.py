from .sdt import EdgeHead, FeedForward, MoEFeedForward, SDTBlock, SDTEncoder
from .sdt_clusterer import KNNContext, SDTClusterer
from .topk_predictor import TopKPredictor

__all__ = [
    'TopKPredictor',
    'FeedForward',
    'MoEFeedForward',
    'SDTBlock',
    'SDTEncoder',
    'EdgeHead',
    'KNNContext',
    'SDTClusterer',
]
