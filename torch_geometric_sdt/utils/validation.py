"""Argument checks shared by the layers, transforms and functions."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor

#: The two message-passing directions of PyG.
FLOWS = ('source_to_target', 'target_to_source')


def check_choice(name: str, value: Any, options: tuple[str, ...]) -> int:
    """Raises a :class:`ValueError` naming :obj:`name` and the valid options
    unless :obj:`value` is one of :obj:`options`; returns its position.
    """
    if value not in options:
        valid = ', '.join(repr(option) for option in options)
        raise ValueError(f'{name} must be one of {valid} (got {value!r})')
    return options.index(value)


def check_flow(flow: Any) -> str:
    """Checks a PyG :obj:`flow` argument (:obj:`'source_to_target'` or
    :obj:`'target_to_source'`) and returns it.
    """
    check_choice('flow', flow, FLOWS)
    return flow


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    r"""Returns :obj:`value` as an :obj:`int`, raising a :class:`ValueError`
    unless it is an integer (a Python or NumPy integer, or an integer tensor
    of one element) of at least :obj:`minimum`.
    """
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.is_complex():
            raise ValueError(f'{name} must be an integer (got {value!r})')
        value = int(value.item())
    elif isinstance(value, bool):
        raise ValueError(f'{name} must be an integer (got {value!r})')
    else:
        try:
            value = operator.index(value)
        except TypeError:
            raise ValueError(
                f'{name} must be an integer (got {type(value).__name__} {value!r})'
            ) from None
    if minimum is not None and value < minimum:
        raise ValueError(f'{name} must be at least {minimum} (got {value})')
    return value


def check_topk(topk: Any, num_nodes: int) -> int | Tensor:
    r"""Checks a Top-K argument: an integer of at least 1 for all nodes, a
    0-dim integer tensor (returned as is, so that no value is read from the
    device), or one integer per node, :obj:`LongTensor[num_nodes]`.
    """
    if not isinstance(topk, Tensor):
        return check_int('topk', topk, minimum=1)
    if topk.is_floating_point() or topk.is_complex() or topk.dtype == torch.bool:
        raise ValueError(f'topk must be an integer tensor (got dtype {topk.dtype})')
    if topk.dim() == 0:
        return topk
    if topk.dim() != 1 or topk.numel() != num_nodes:
        raise ValueError(
            f'topk must hold one entry per target node, shape [{num_nodes}] '
            f'(got shape {list(topk.shape)})'
        )
    return topk


__all__ = ['FLOWS', 'check_choice', 'check_flow', 'check_int', 'check_topk']
