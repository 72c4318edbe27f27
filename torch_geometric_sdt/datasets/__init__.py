from .real import load_embeddings
from .regimes import (
    COSINES,
    REGIMES,
    mixture_draws,
    parse_cell,
    regime_draw,
    training_mixture,
)
from .synthetic import demo_data, identity_sizes, synthetic_faces

__all__ = [
    'load_embeddings',
    'synthetic_faces',
    'demo_data',
    'identity_sizes',
    'regime_draw',
    'REGIMES',
    'COSINES',
    'parse_cell',
    'training_mixture',
    'mixture_draws',
]
