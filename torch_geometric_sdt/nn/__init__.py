from .conv import SparseDiffAttention
from .knn import KNN, knn, knn_graph

__all__ = [
    'SparseDiffAttention',
    'KNN',
    'knn',
    'knn_graph',
]
