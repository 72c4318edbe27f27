r"""The arithmetic precision of model inference.

A model's forward pass can run its matrix products in bfloat16 (8
significant bits) with :func:`torch.autocast`, which keeps the reductions
that need range and accuracy (layer norms, softmax) in float32. That pays
only where the device multiplies bfloat16 natively (:func:`bfloat16_is_fast`:
a CPU with AVX-512 BF16 or AMX, a recent CUDA device); elsewhere bfloat16
products are emulated and slower than float32.

* :obj:`'float32'`: every product in float32 (the default: the same
  results on every machine, up to the last bits of the products).
* :obj:`'bfloat16'`: the products in bfloat16 on any device.
* :obj:`'auto'`: bfloat16 where :func:`bfloat16_is_fast`, float32 elsewhere.

bfloat16 changes results: rounding the inputs of every product to 8
significant bits moves a model's outputs, and a decision taken on a
threshold (a quantile, a cut) can flip where an output lies near it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from torch_geometric_sdt.utils.validation import check_choice

#: The accepted precisions, the default first.
PRECISIONS = ('float32', 'bfloat16', 'auto')


def bfloat16_is_fast(device: torch.device) -> bool:
    """Whether matrix products in bfloat16 run natively on :obj:`device`
    (a CPU with AVX-512 BF16 or AMX, a CUDA device that supports them);
    elsewhere they are emulated, slower than in float32."""
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported()
    if device.type != 'cpu':
        return False
    # torch.cpu's feature probes are private: without them, say no.
    probes = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def check_precision(precision: str) -> str:
    """Returns :obj:`precision` if it is one of :data:`PRECISIONS`; raises
    :class:`ValueError` otherwise."""
    check_choice('precision', precision, PRECISIONS)
    return precision


def uses_bfloat16(precision: str, device: torch.device) -> bool:
    """Whether :obj:`precision` (one of :data:`PRECISIONS`) runs the
    products on :obj:`device` in bfloat16."""
    if check_precision(precision) == 'auto':
        return bfloat16_is_fast(device)
    return precision == 'bfloat16'


@contextlib.contextmanager
def inference_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Runs a block's matrix products at :obj:`precision` on :obj:`device`
    (:func:`torch.autocast` to bfloat16, or nothing for float32). The
    block's outputs can then be bfloat16: convert them before reading."""
    enabled = uses_bfloat16(precision, device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):
        yield
