"""torch_geometric_sdt: noise-resilient clustering of embeddings for PyG.

Implements "Enhancing Noise Resilience in Face Clustering via Sparse
Differential Transformer" (AAAI 2026, https://arxiv.org/abs/2512.22612):
Top-K Jaccard edge scores, differential attention on sparse graphs and
Infomap clustering, with the field's baselines, metrics and file formats.
"""

from .baselines import cluster_knn
from .metrics import evaluate
from .nn import KNN, SparseDiffAttention, knn, knn_graph
from .nn.models import SDTClusterer, TopKPredictor
from .transforms import TopKJaccard
from .utils import infomap, topk_jaccard, topk_target
from .version import __version__

__all__ = [
    '__version__',
    'KNN',
    'knn',
    'knn_graph',
    'SparseDiffAttention',
    'TopKJaccard',
    'topk_jaccard',
    'topk_target',
    'TopKPredictor',
    'SDTClusterer',
    'infomap',
    'cluster_knn',
    'evaluate',
]
