r"""Helpers shared by the kNN backends: the order of a neighbour list, the
similarity ranges and the option checks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

# Magnitudes between these powers of two are searched as they are: the
# squares and sums of squares of such values (times any realistic dimension)
# neither overflow nor underflow, in float32 or float64.
SAFE_MIN_EXPONENT = -40
SAFE_MAX_EXPONENT = 40


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


def pow2(exponent: Tensor, dtype: torch.dtype) -> Tensor:
    r""":math:`2^e` for integer tensors :obj:`exponent` within the normal
    range of :obj:`dtype` (float32 or float64), exactly: built from the
    exponent bits, not computed."""
    if dtype == torch.float64:
        return ((exponent.to(torch.int64) + 1023) << 52).view(torch.float64)
    return ((exponent.to(torch.int32) + 127) << 23).view(torch.float32)


def scale_rows_pow2(x: Tensor, exponent: Tensor) -> Tensor:
    r"""Row :math:`i` of :obj:`x` times :math:`2^{e_i}`, exactly (up to
    results that underflow), in two steps so that each factor is a normal
    number."""
    half = torch.div(exponent, 2, rounding_mode='floor')
    x = x * pow2(half, x.dtype).unsqueeze(1)
    return x * pow2(exponent - half, x.dtype).unsqueeze(1)


def scale_pow2(x: Tensor, exponent: int) -> Tensor:
    r""":obj:`x` times :math:`2^e`, exactly (up to results that overflow or
    underflow), in steps whose factors are normal numbers of
    :obj:`x.dtype`."""
    step = 1000 if x.dtype == torch.float64 else 100
    while exponent != 0:
        e = max(-step, min(step, exponent))
        x = x * math.ldexp(1.0, e)
        exponent -= e
    return x


def max_abs_rows(x: Tensor) -> Tensor:
    r"""The largest magnitude in every row of :obj:`x` (NaN for a row with a
    NaN), without an :math:`N \times D` temporary."""
    return torch.maximum(x.amax(dim=1), x.amin(dim=1).neg())
