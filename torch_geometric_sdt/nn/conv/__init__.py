from .sparse_diff_attention import SparseDiffAttention

__all__ = [
    'SparseDiffAttention',
]
