"""The package's defaults and names, defined once.

Every module that needs one of these imports it from here; this module
imports nothing of the package.
"""

from __future__ import annotations

#: kNN list length, self included: the paper's and the field's :math:`k`.
DEFAULT_K: int = 80

#: The training-free baselines of :mod:`torch_geometric_sdt.baselines`.
BASELINE_METHODS: tuple[str, ...] = ('infomap-knn', 'fc-es')

#: Every clustering method: the baselines and the SDT pipeline.
METHODS: tuple[str, ...] = (*BASELINE_METHODS, 'sdt')

__all__ = ['DEFAULT_K', 'BASELINE_METHODS', 'METHODS']
