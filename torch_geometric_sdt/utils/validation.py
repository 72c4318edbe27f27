"""Argument checks shared by the layers, transforms and functions."""

from __future__ import annotations

from typing import Any

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


__all__ = ['FLOWS', 'check_choice', 'check_flow']
