r"""Helpers shared by the kNN backends: the order of a neighbour list, the
similarity ranges and the option checks."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from torch_geometric_sdt.utils.mapped import MAPPED_CHUNK_BYTES, release_rows

# Magnitudes between these powers of two are searched as they are: the
# squares and sums of squares of such values (times any realistic dimension)
# neither overflow nor underflow, in float32 or float64.
SAFE_MIN_EXPONENT = -40
SAFE_MAX_EXPONENT = 40

#: The similarity measures of the kNN search.
METRICS = ('cosine', 'l2')


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


def keep_top(
    a: tuple[Tensor, Tensor],
    b: tuple[Tensor, Tensor],
    k: int,
) -> tuple[Tensor, Tensor]:
    r"""The :math:`k` largest values of two candidate lists (values, ids)
    side by side, without :func:`merge`'s ordering: ties in any order, so a
    caller that needs the id rule at the cut keeps one entry past it and
    settles ties there."""
    top = torch.topk(torch.cat([a[0], b[0]], dim=1), k, dim=1)
    return top.values, torch.cat([a[1], b[1]], dim=1).gather(1, top.indices)


def l2_exponent(largest: float) -> int:
    r"""The exponent :math:`e` that brings the largest magnitude
    :obj:`largest` of a data set into :math:`[0.5, 1)` when it lies outside
    about :math:`[2^{-40}, 2^{40}]`, else :math:`0` (see
    :func:`~torch_geometric_sdt.nn.knn.api.scale_for_l2`)."""
    if largest == 0:
        return 0
    _, exponent = math.frexp(largest)
    if SAFE_MIN_EXPONENT <= exponent <= SAFE_MAX_EXPONENT:
        return 0
    return -exponent


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


def prepare(x: Tensor | np.ndarray, metric: str) -> tuple[Tensor, torch.device]:
    r"""Validates :obj:`x` and returns it as a float32/float64 tensor (rows
    normalised for cosine), together with the device of the result.

    The rows are read in chunks of about
    :obj:`~torch_geometric_sdt.utils.mapped.MAPPED_CHUNK_BYTES`: the cosine
    result is the only :math:`N \times D` tensor made, and features on a
    read-only memory-mapped file (:func:`~torch_geometric_sdt.io.load_features`)
    hand each chunk's pages back once read
    (:func:`~torch_geometric_sdt.utils.mapped.release_rows`), so that they do
    not stay in this process's memory beside the normalised copy.
    """
    if metric not in METRICS:
        raise ValueError(f'unknown metric {metric!r} (expected one of {METRICS})')
    source = x if isinstance(x, np.ndarray) else None
    if isinstance(x, np.ndarray):
        if x.dtype.kind != 'f':
            raise ValueError(f'x must be a floating-point array (got dtype {x.dtype})')
        with warnings.catch_warnings():
            # A read-only (memory-mapped) array is never written to here.
            warnings.filterwarnings('ignore', message='The given NumPy array')
            x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, Tensor):
        raise ValueError(
            f'x must be a torch.Tensor or numpy.ndarray (got {type(x).__name__})'
        )
    if not x.dtype.is_floating_point:
        raise ValueError(f'x must be a floating-point tensor (got dtype {x.dtype})')
    if x.dim() != 2:
        raise ValueError(
            f'x must be 2-D [num_points, dim] (got shape {tuple(x.shape)})'
        )
    if x.size(1) == 0:
        raise ValueError('x must have at least one feature column')
    device = x.device
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    step = max(1, MAPPED_CHUNK_BYTES // (x.element_size() * x.size(1)))
    starts = range(0, x.size(0), step) or range(1)

    def chunk(lo: int) -> Tensor:
        return x[lo : lo + step].to(dtype)

    def done(lo: int) -> None:
        if source is not None:
            release_rows(source, lo, min(lo + step, x.size(0)))

    # The largest magnitude of every row (NaN propagates): one pass, no
    # [N, D] temporary.
    parts = []
    for lo in starts:
        parts.append(max_abs_rows(chunk(lo)))
        done(lo)
    row_max = torch.cat(parts)
    finite = torch.isfinite(row_max)
    if not bool(finite.all()):
        bad = (~finite).nonzero().view(-1)
        raise ValueError(
            f'x has {bad.numel()} row(s) with NaN or Inf values '
            f'(first: row {int(bad[0])})'
        )
    if metric == 'l2':
        if x.numel() > 0:
            # Squared distances reach 4 D max|x|^2: refuse what overflows.
            largest = float(row_max.max())
            limit = math.sqrt(torch.finfo(dtype).max / (4 * x.size(1)))
            if largest > limit:
                raise ValueError(
                    f"x has values up to {largest:.3g}, too large for metric='l2' "
                    f'in {str(dtype).removeprefix("torch.")}: with {x.size(1)} '
                    f'features their squared distances overflow above {limit:.3g} '
                    '(scale the features down, or pass float64)'
                )
        return x.to(dtype).contiguous(), device
    zero = row_max == 0
    if bool(zero.any()):
        bad = zero.nonzero().view(-1)
        raise ValueError(
            f'x has {bad.numel()} zero row(s), which have no direction '
            f"for metric='cosine' (first: row {int(bad[0])})"
        )
    # Rows of huge or tiny values first become rows of largest magnitude in
    # [0.5, 1) (an exact power-of-two scaling), so that their squared norm
    # can neither overflow nor underflow.
    _, exponent = torch.frexp(row_max)
    odd = (exponent < SAFE_MIN_EXPONENT) | (exponent > SAFE_MAX_EXPONENT)
    out = torch.empty(x.shape, dtype=dtype, device=device)
    for lo in starts:
        part = chunk(lo)
        rows = odd[lo : lo + step].nonzero().view(-1)
        if rows.numel() > 0:
            part = part.clone()
            part[rows] = scale_rows_pow2(part[rows], -exponent[lo + rows])
        norm = torch.linalg.vector_norm(part, dim=1)
        torch.div(part, norm.unsqueeze(1), out=out[lo : lo + part.size(0)])
        done(lo)
    return out, device
