r"""Labelled draws from data regimes other than the LFW-like default of
:func:`~torch_geometric_sdt.datasets.synthetic_faces`, for measuring how a
clustering method holds up when identity sizes or the cosine scale change.

A regime cell is an **identity-size law** (:obj:`REGIMES`) crossed with a
**cosine scale** (:obj:`COSINES`). Every face regime uses the geometry of
:func:`~torch_geometric_sdt.datasets.synthetic_faces` (its calibrated
defaults) and changes only how many items each identity has; the cosine
scale then transforms the unit vectors. :obj:`'gaussian'` is a generic
non-face Gaussian mixture instead.

Identity sizes that :func:`synthetic_faces` cannot draw directly (fixed
ranges, a set number of strangers) are obtained by generating a larger set
with equally large identities and single-item identities in the same space
(:obj:`num_identities` with a two-point size law), then keeping a random
subset of each identity. Everything is seeded; equal arguments give equal
output.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .synthetic import identity_sizes, rescale_sizes, synthetic_faces

#: The identity-size laws, by name.
REGIMES: dict[str, str] = {
    'lfw': 'synthetic_faces defaults (LFW-like: ~71 % singleton identities, '
    'Lomax tail, ~2.4 items per identity at 13K)',
    'msceleb': '50-120 items per identity (uniform), no singletons',
    'photo_library': '5-40 identities of 20-500 items (log-uniform) plus '
    '5-20 % one-off strangers (singletons)',
    'crowd': 'mostly singletons: 95 % singleton identities, the rest with '
    'the default Lomax law capped at 20',
    'dense': 'LFW-like sizes in a crowded space: look-alike groups of 32 '
    'identities (default 4), so the nearest impostor is as close as in an '
    'LFW-like draw of a million items',
    'large': 'every identity larger than k = 80: 100-300 items (uniform), '
    'no singletons',
    'gaussian': 'generic Gaussian mixture, not faces: clusters of 100 points '
    'in 32-d, centres uniform in [-10, 10]^32, spread 1.2, then L2-normalised',
}

#: The cosine scales, by name.
COSINES: dict[str, str] = {
    'arcface': 'as generated (random-pair cosine near 0.3 for the face regimes)',
    'squeezed': 'a shared direction mixed into every vector: random-pair '
    'cosine mean 0.83',
    'shifted': 'the mean removed and renormalised: random-pair cosine mean 0',
}

#: The random-pair cosine mean that :obj:`'squeezed'` is calibrated to.
SQUEEZED_MEAN = 0.83
#: The dimension of the :obj:`'gaussian'` regime (its :obj:`dim` is ignored).
GAUSSIAN_DIM = 32
GAUSSIAN_SIZE = 100
GAUSSIAN_SPREAD = 1.2
#: The look-alike group size of :obj:`'dense'` (:func:`synthetic_faces`
#: defaults to 4).
DENSE_GROUP_SIZE = 32
_CALIBRATION_ROWS = 2000


def regime_draw(
    name: str,
    num_samples: int,
    dim: int = 256,
    seed: int = 0,
    cosine: str = 'arcface',
) -> tuple[Tensor, Tensor]:
    r"""Draws labelled unit vectors from the regime cell
    (:obj:`name`, :obj:`cosine`).

    Identity-size laws (:obj:`name`) and the statistics each is calibrated
    to (checked in ``test/datasets/test_regimes.py``):

    * :obj:`'lfw'`: :func:`synthetic_faces` with its defaults, calibrated on
      LFW (a singleton share of identities near 0.71).
    * :obj:`'msceleb'`: every identity has 50 to 120 items, no singletons
      (mean size near 85).
    * :obj:`'photo_library'`: 5 to 40 identities (uniform) of 20 to 500
      items (log-uniform), plus a share of one-off strangers (singletons)
      uniform in [5 %, 20 %] of the items.
    * :obj:`'crowd'`: 95 % of the identities are singletons (about 80 % of
      the items); the others follow the default Lomax law capped at 20.
    * :obj:`'large'`: every identity has 100 to 300 items, more than the
      :math:`k = 80` neighbours of the SDT's graph; no singletons.
    * :obj:`'dense'`: the LFW-like sizes of :obj:`'lfw'`, with look-alike
      groups of :obj:`DENSE_GROUP_SIZE` = 32 identities instead of 4. The
      LFW-like law brings more identities into the same space as
      :math:`N` grows, so at a million items a face's nearest impostor is
      much closer than at a few thousand; this law puts that crowding into
      a small draw. Calibrated on the cosine of each item's nearest
      different-identity neighbour among its 80 nearest (256-d): median
      0.653 at 3,000 items and 0.663 at 20,000, against 0.667 for
      :obj:`'lfw'` at 1,000,000 items and 0.618 at 20,000.
    * :obj:`'gaussian'`: not faces: clusters of 100 points (the last one
      smaller), centres uniform in :math:`[-10, 10]^{32}`, isotropic spread
      1.2, in 32 dimensions (:obj:`dim` is ignored). The clustering
      pipeline compares items by cosine, so the points are L2-normalised;
      since the centres lie far from the origin relative to the spread, the
      clusters stay separated in angle (cosine to the own centre near 0.98).

    Cosine scales (:obj:`cosine`):

    * :obj:`'arcface'`: the vectors as generated.
    * :obj:`'squeezed'`: :math:`x' = (x + a u) / \|x + a u\|` with a fixed
      random unit vector :math:`u`; :math:`a` is found by bisection on up to
      2,000 rows so that the mean cosine of distinct random pairs is 0.83
      (the 99th percentile follows from the data: 0.89 to 0.98 at 3,000
      items, highest where large identities make many random pairs
      same-identity pairs).
    * :obj:`'shifted'`: the mean vector is subtracted and the rows
      normalised again, so the random-pair cosine mean is near 0.

    Args:
        name (str): A key of :obj:`REGIMES`.
        num_samples (int): The number of items :math:`N`.
        dim (int, optional): The dimension :math:`D` of the face regimes.
            (default: :obj:`256`)
        seed (int, optional): The random seed. (default: :obj:`0`)
        cosine (str, optional): A key of :obj:`COSINES`.
            (default: :obj:`'arcface'`)

    Returns:
        (x, y): :obj:`float32` :obj:`Tensor[N, D]` with unit rows and
        :obj:`int64` :obj:`Tensor[N]` labels in :math:`[0, C)`, items in
        random order.
    """
    if name not in REGIMES:
        raise ValueError(f'unknown regime {name!r}; choose from {sorted(REGIMES)}')
    if cosine not in COSINES:
        raise ValueError(f'unknown cosine {cosine!r}; choose from {sorted(COSINES)}')
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 2:
        raise ValueError(f'num_samples must be an integer >= 2 (got {num_samples!r})')
    n = int(num_samples)
    rng = np.random.default_rng([seed, 101])
    if name == 'lfw':
        x, y = synthetic_faces(n, dim, seed=seed)
    elif name == 'crowd':
        x, y = synthetic_faces(n, dim, seed=seed, singleton_rate=0.95, max_size=20)
    elif name == 'dense':
        x, y = synthetic_faces(n, dim, seed=seed, group_size=DENSE_GROUP_SIZE)
    elif name == 'gaussian':
        x, y = _gaussian(n, seed)
    else:
        x, y = _faces_with_sizes(_sizes(name, n, rng), dim, seed)
    if cosine == 'squeezed':
        x = _squeeze(x, SQUEEZED_MEAN, seed)
    elif cosine == 'shifted':
        x = torch.nn.functional.normalize(x - x.mean(dim=0), dim=1)
    assert isinstance(x, Tensor) and isinstance(y, Tensor)
    return x.float().contiguous(), y


def parse_cell(cell: str) -> tuple[str, str]:
    r"""Splits a regime cell :obj:`'LAW'` or :obj:`'LAW:COSINE'` into its
    identity-size law and cosine scale (default :obj:`'arcface'`); raises
    :class:`ValueError` naming the valid choices."""
    law, _, cosine = cell.partition(':')
    cosine = cosine or 'arcface'
    if law not in REGIMES or cosine not in COSINES:
        raise ValueError(
            f'unknown regime {cell!r}: give LAW or LAW:COSINE with LAW in '
            f'{sorted(REGIMES)} and COSINE in {sorted(COSINES)}'
        )
    return law, cosine


#: The shipped model's training mixture: every identity-size law at every
#: cosine scale; dimension and size cycle so that every law meets every
#: dimension and size across its cosine scales. Seeds start at 10000, above
#: every seed the benchmarks score.
MIXTURE_LAWS = (
    'lfw',
    'msceleb',
    'photo_library',
    'crowd',
    'large',
    'gaussian',
    'dense',
)
MIXTURE_DIMS = (128, 256, 512)
MIXTURE_SIZES = (3000, 6000, 10000)
MIXTURE_FIRST_SEED = 10_000


def training_mixture(scale: float = 1.0) -> list[tuple[str, int, int, int]]:
    r"""The draws of the shipped model's training mixture, as
    :obj:`(law:cosine, num_samples, dim, seed)` tuples (draw them with
    :func:`mixture_draws`): :obj:`len(MIXTURE_LAWS) * len(COSINES)` draws,
    sizes multiplied by :obj:`scale` (at least 500 items)."""
    out = []
    for i, law in enumerate(MIXTURE_LAWS):
        for j, cosine in enumerate(COSINES):
            n = max(500, int(MIXTURE_SIZES[(i + j) % 3] * scale))
            dim = MIXTURE_DIMS[(i + 2 * j) % 3]
            out.append((f'{law}:{cosine}', n, dim, MIXTURE_FIRST_SEED + len(out)))
    return out


def mixture_draws(
    draws: list[tuple[str, int, int, int]],
) -> tuple[list[Tensor], list[Tensor]]:
    """The embeddings and labels of :func:`training_mixture` draws."""
    xs, ys = [], []
    for cell, n, dim, seed in draws:
        law, cosine = parse_cell(cell)
        x, y = regime_draw(law, n, dim, seed=seed, cosine=cosine)
        xs.append(x)
        ys.append(y)
    return xs, ys


def random_pair_cosine(x: Tensor, max_rows: int = _CALIBRATION_ROWS) -> float:
    r"""The mean cosine of distinct pairs among the first :obj:`max_rows`
    unit rows of :obj:`x` (items come in random order)."""
    s = x[:max_rows].double()
    m = s.size(0)
    total = s.sum(dim=0)
    return float((total @ total - (s * s).sum()) / (m * (m - 1)))


def _squeeze(x: Tensor, target: float, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed + 7919)
    u = torch.randn(x.size(1), generator=g, dtype=torch.float64)
    u = u / u.norm()
    sample = x[:_CALIBRATION_ROWS].double()

    def mean_at(a: float) -> float:
        return random_pair_cosine(torch.nn.functional.normalize(sample + a * u, dim=1))

    lo, hi = 0.0, 1.0
    while mean_at(hi) < target and hi < 1e6:
        hi *= 2.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_at(mid) < target else (lo, mid)
    a = 0.5 * (lo + hi)
    return torch.nn.functional.normalize(x.double() + a * u, dim=1).float()


def _gaussian(n: int, seed: int) -> tuple[Tensor, Tensor]:
    rng = np.random.default_rng([seed, 102])
    num = math.ceil(n / GAUSSIAN_SIZE)
    centres = rng.uniform(-10.0, 10.0, (num, GAUSSIAN_DIM))
    y = np.repeat(np.arange(num), GAUSSIAN_SIZE)[:n]
    y = y[rng.permutation(n)]
    x = centres[y] + GAUSSIAN_SPREAD * rng.standard_normal((n, GAUSSIAN_DIM))
    x_t = torch.nn.functional.normalize(torch.from_numpy(x), dim=1).float()
    return x_t, torch.from_numpy(y).long()


def _sizes(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if name == 'msceleb':
        return _fill(lambda: int(rng.integers(50, 121)), n, 50, rng)
    if name == 'large':
        return _fill(lambda: int(rng.integers(100, 301)), n, 100, rng)
    assert name == 'photo_library'
    strangers = round(float(rng.uniform(0.05, 0.20)) * n)
    rest = n - strangers
    lo_c, hi_c = max(5, math.ceil(rest / 500)), max(5, min(40, rest // 20))
    num = int(rng.integers(lo_c, hi_c + 1)) if hi_c >= lo_c else lo_c
    raw = np.exp(rng.uniform(math.log(20), math.log(500), num))
    big = _fit_total(raw, rest, 20, 500, rng)
    return np.concatenate([big, np.ones(strangers, dtype=np.int64)])


def _fill(draw, n: int, floor: int, rng: np.random.Generator) -> np.ndarray:
    # Draws sizes until they cover n, then takes the excess off random
    # identities without going below the floor (unless n itself is smaller).
    sizes = []
    while sum(sizes) < n:
        sizes.append(draw())
    out = np.array(sizes, dtype=np.int64)
    excess = int(out.sum()) - n
    room = np.repeat(np.arange(out.size), np.maximum(out - floor, 0))
    if excess > room.size:  # n below the floor: one identity.
        return np.array([n], dtype=np.int64)
    np.subtract.at(out, rng.choice(room, excess, replace=False), 1)
    return out[out > 0]


def _fit_total(
    raw: np.ndarray, total: int, lo: int, hi: int, rng: np.random.Generator
) -> np.ndarray:
    # Scales raw sizes to sum to total within [lo, hi] (water-filling), then
    # hands out the integer remainder to identities with room.
    w = raw.astype(np.float64)
    for _ in range(100):
        free = (w > lo) & (w < hi)
        fixed = w[~free].sum()
        if not free.any():
            break
        w[free] *= (total - fixed) / w[free].sum()
        w = np.clip(w, lo, hi)
    out = np.floor(w).astype(np.int64)
    while out.sum() != total:
        if out.sum() < total:
            idx = np.flatnonzero(out < hi)
            out[rng.choice(idx)] += 1
        else:
            idx = np.flatnonzero(out > lo)
            out[rng.choice(idx)] -= 1
    return out


def _faces_with_sizes(sizes: np.ndarray, dim: int, seed: int) -> tuple[Tensor, Tensor]:
    r"""Face embeddings whose identities have exactly :obj:`sizes` items:
    a :func:`synthetic_faces` draw with enough single-item and equally
    large identities, of which random ones are kept and subsampled."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    single = int((sizes == 1).sum())
    multi = np.sort(sizes[sizes > 1])[::-1]
    top = int(multi[0]) if multi.size else 1
    rate = single / sizes.size
    for attempt in range(50):
        slack = 1.2 + 0.1 * attempt
        c_single = math.ceil(slack * single) + 2 if single else 0
        c_multi = math.ceil(slack * multi.size) + 2 if multi.size else 0
        num_ids = c_single + c_multi
        # Room for up to 1.5 times the expected number of large identities.
        total = num_ids + (top - 1) * math.ceil(1.5 * c_multi)
        kw = dict(
            singleton_rate=min(rate, 0.999) if c_multi else 0.999,
            size_scale=1.0,
            size_tail=1e9,
            max_size=2,
        )
        base = identity_sizes(total, seed=seed, **kw)
        gen = rescale_sizes(base, total, num_ids, seed)
        if (gen == 1).sum() >= single and (gen >= top).sum() >= multi.size:
            break
    else:  # pragma: no cover - the slack grows until it fits
        raise RuntimeError('could not draw the requested identity sizes')
    x, y = synthetic_faces(total, dim, seed=seed, num_identities=num_ids, **kw)
    rng = np.random.default_rng([seed, 103])
    ids_single = rng.permutation(np.flatnonzero(gen == 1))[:single]
    ids_multi = rng.permutation(np.flatnonzero(gen >= top))[: multi.size]
    y_np = y.numpy()
    order = np.argsort(y_np, kind='stable')
    starts = np.concatenate([[0], np.cumsum(np.bincount(y_np, minlength=num_ids))])
    keep, label = [], []
    chosen = np.concatenate([ids_multi, ids_single])
    want = np.concatenate([multi, np.ones(single, dtype=np.int64)])
    for new, (old, m) in enumerate(zip(chosen, want)):
        items = order[starts[old] : starts[old + 1]]
        keep.append(rng.choice(items, int(m), replace=False))
        label.append(np.full(int(m), new, dtype=np.int64))
    idx = np.concatenate(keep)
    lab = np.concatenate(label)
    perm = rng.permutation(n)
    # Relabel so that labels are in random order, consecutive from 0.
    relabel = rng.permutation(chosen.size)
    return x[torch.from_numpy(idx[perm])], torch.from_numpy(relabel[lab[perm]])


__all__ = [
    'REGIMES',
    'COSINES',
    'regime_draw',
    'random_pair_cosine',
    'parse_cell',
    'training_mixture',
    'mixture_draws',
]
