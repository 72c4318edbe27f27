from .conv import SparseDiffAttention

__all__ = [
    'SparseDiffAttention',
]
