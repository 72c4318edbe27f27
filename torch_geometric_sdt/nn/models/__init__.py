from .knn_context import KNNContext
from .sdt import EdgeHead, FeedForward, MoEFeedForward, SDTBlock, SDTEncoder
from .sdt_clusterer import (
    BAND_CHUNK_SIZE,
    DEFAULT_BAND,
    LINK_CHUNK_SIZE,
    NODE_CHUNK_SIZE,
    TOPK_BATCH_SIZE,
    SDTClusterer,
    check_max_links,
    choose_eta,
    spread_key,
)
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
    'choose_eta',
    'check_max_links',
    'spread_key',
    'TOPK_BATCH_SIZE',
    'NODE_CHUNK_SIZE',
    'BAND_CHUNK_SIZE',
    'LINK_CHUNK_SIZE',
    'DEFAULT_BAND',
]
