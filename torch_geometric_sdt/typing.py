"""Optional packages, detected once at import time.

Mirrors :mod:`torch_geometric.typing`: every optional accelerator is probed
here and nowhere else, so the rest of the library branches on a constant.
"""

from __future__ import annotations

import importlib.util

from torch_geometric.typing import WITH_TORCH_SCATTER, WITH_TORCH_SPARSE


def _has(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


WITH_FAISS: bool = _has('faiss')
WITH_PYNNDESCENT: bool = _has('pynndescent')
WITH_NUMBA: bool = _has('numba')

__all__ = [
    'WITH_FAISS',
    'WITH_PYNNDESCENT',
    'WITH_NUMBA',
    'WITH_TORCH_SCATTER',
    'WITH_TORCH_SPARSE',
]
