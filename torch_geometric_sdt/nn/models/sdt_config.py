r"""The settings of :class:`~torch_geometric_sdt.nn.models.SDTClusterer` and
their checks (a checkpoint's config is untrusted input: every value is
checked before anything is allocated).
"""

from __future__ import annotations

from typing import Any

from torch_geometric_sdt.nn.models.topk_predictor import ARCHS as PREDICTOR_ARCHS
from torch_geometric_sdt.utils.knn_features import REFERENCES
from torch_geometric_sdt.utils.topk_jaccard import TRANSFORMS
from torch_geometric_sdt.utils.validation import check_choice

#: The input modes of :class:`~torch_geometric_sdt.nn.models.SDTClusterer`.
MODES = ('relational', 'embedding')

#: Bounds of the integer settings of :class:`SDTClusterer`, checked before
#: anything is built (a checkpoint's config is untrusted input).
CONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    'k': (2, 1024),
    'embedding_channels': (1, 65536),
    'hidden_channels': (1, 4096),
    'num_layers': (1, 64),
    'heads': (1, 64),
    'num_experts': (0, 64),
    'moe_top': (1, 64),
    'predictor_channels': (1, 4096),
    'predictor_layers': (1, 64),
}


def check_config(**config: Any) -> tuple[int, int]:
    r"""Checks every setting of :class:`SDTClusterer` (all its constructor
    arguments but :obj:`differential`) against :data:`CONFIG_BOUNDS` and the
    valid choices, before anything is built; returns the band
    :math:`(b_-, b_+)`. Raises :class:`ValueError` naming the setting.
    """
    for name, (low, high) in CONFIG_BOUNDS.items():
        value = config[name]
        if name == 'embedding_channels' and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f'{name} must be an integer (got {value!r})')
        if not low <= value <= high:
            raise ValueError(f'{name} must lie in [{low}, {high}] (got {value})')
    check_choice('mode', config['mode'], MODES)
    check_choice('predictor', config['predictor'], PREDICTOR_ARCHS)
    check_choice('transform', config['transform'], TRANSFORMS)
    check_choice('reference', config['reference'], REFERENCES)
    if config['mode'] == 'embedding' and config['embedding_channels'] is None:
        raise ValueError("mode='embedding' needs embedding_channels")
    for name, base in (('hidden_channels', 'hidden'), ('predictor_channels', 'Top-K')):
        if config[name] % config['heads'] != 0:
            raise ValueError(
                f'{name} ({config[name]}) must be divisible by heads '
                f'({config["heads"]}) for the {base} attention'
            )
    if config['num_experts'] and config['moe_top'] > config['num_experts']:
        raise ValueError(
            f'moe_top ({config["moe_top"]}) must not exceed num_experts '
            f'({config["num_experts"]})'
        )
    if not isinstance(config['veto'], bool):
        raise ValueError(f'veto must be a bool (got {config["veto"]!r})')
    band = config['band']
    if (
        not isinstance(band, (tuple, list))
        or len(band) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in band)
    ):
        raise ValueError(f'band must be two integers (b_-, b_+) (got {band!r})')
    if not (0 <= band[0] <= 1024 and 1 <= band[1] <= 1024):
        raise ValueError(f'band must lie in ([0, 1024], [1, 1024]) (got {list(band)})')
    for name in ('eta', 'theta', 'dropout'):
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{name} must be a number (got {value!r})')
        if not 0.0 <= value <= 1.0 or (name == 'dropout' and value == 1.0):
            raise ValueError(f'{name} must lie in [0, 1] (got {value})')
    veto_eta = config['veto_eta']
    if veto_eta is not None:
        if isinstance(veto_eta, bool) or not isinstance(veto_eta, (int, float)):
            raise ValueError(f'veto_eta must be a number or None (got {veto_eta!r})')
        if not 0.0 <= veto_eta <= 1.0:
            raise ValueError(f'veto_eta must lie in [0, 1] (got {veto_eta})')
    q = config['topk_quantile']
    if q is not None:
        if isinstance(q, bool) or not isinstance(q, (int, float)):
            raise ValueError(f'topk_quantile must be a number or None (got {q!r})')
        if not 0.0 < q < 1.0:
            raise ValueError(f'topk_quantile must lie in (0, 1) (got {q})')
    return int(band[0]), int(band[1])


__all__ = ['MODES', 'CONFIG_BOUNDS', 'check_config']
