r"""Helpers shared by the kNN backends: the order of a neighbour list, the
similarity ranges and the option checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def order(val: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    r"""Sorts each row by (value descending, id ascending)."""
    idx, perm = torch.sort(idx, dim=1, stable=True)
    val = val.gather(1, perm)
    val, perm = torch.sort(val, dim=1, descending=True, stable=True)
    return val, idx.gather(1, perm)


def merge(
    a: tuple[Tensor, Tensor],
    b: tuple[Tensor, Tensor],
    k: int,
) -> tuple[Tensor, Tensor]:
    r"""Merges two top-k lists over disjoint ids into one."""
    val, idx = order(torch.cat([a[0], b[0]], dim=1), torch.cat([a[1], b[1]], 1))
    return val[:, :k], idx[:, :k]


def clamp_similarity(sim: Tensor, metric: str) -> Tensor:
    r"""Clips similarities to their range: :math:`[-1, 1]` for cosine,
    :math:`(-\infty, 0]` for l2 (so a :math:`+\infty` self entry becomes
    :math:`1` or :math:`0`)."""
    return sim.clamp(-1.0, 1.0) if metric == 'cosine' else sim.clamp(max=0.0)


def check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'{name} must be a positive int (got {value!r})')


def check_no_options(backend: str, kwargs: dict[str, Any]) -> None:
    r"""Raises on the options a backend did not consume."""
    if len(kwargs) > 0:
        raise ValueError(f'unknown option(s) {sorted(kwargs)} for backend {backend!r}')


def float32_numpy(x: Tensor) -> np.ndarray:
    r"""A C-contiguous float32 NumPy copy of :obj:`x`, for the CPU
    libraries."""
    return np.ascontiguousarray(x.detach().cpu().to(torch.float32).numpy())
