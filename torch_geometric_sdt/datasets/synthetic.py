r"""Synthetic face embeddings with realistic identity structure.

Real face embeddings are not Gaussian blobs around uniformly spread centres:
identity sizes are long-tailed with a majority of singletons, identities
crowd together (look-alikes, shared age, pose or ethnicity), some identities
are much tighter than others and some images (profile, blur, occlusion) lie
far from their identity. :func:`synthetic_faces` reproduces these traits with
a small generative model whose defaults are calibrated on real LFW embeddings
(MobileFaceNet, 192-d; see ``benchmarks/synthetic_calibration.py`` and
``benchmarks/results/synthetic_vs_real.md``):

1. **Identity sizes** are i.i.d. draws: a singleton with probability
   :math:`p_1`, otherwise :math:`2 + \lfloor X \rfloor` with :math:`X` Lomax
   (Pareto II) distributed, :math:`P(X \ge t) = (1 + t / \theta)^{-\alpha}`.
   Sizes are capped (default 1,000; LFW's largest identity has 530 images)
   and drawn until they cover :math:`N` items, so the number of
   identities grows with :math:`N` while the per-identity statistics stay.
2. **Geometry** lives in an :math:`r`-dimensional subspace (real embeddings
   have a low effective rank: the LFW MobileFaceNet set has rank 66 of
   192) with a decaying spectrum :math:`\lambda_j \propto (j + 1)^{-\beta}`,
   embedded into :math:`D` dimensions by a fixed random orthonormal map.
3. **Identity centres** are hierarchical: identities form look-alike groups
   with centres :math:`g`, and

   .. math::
       c_i = \frac{m \mu + g_{\text{group}(i)} + s_i e_i}
       {\| m \mu + g_{\text{group}(i)} + s_i e_i \|},
       \qquad s_i = s \cdot \text{LogNormal}(0, \sigma_s),

   where :math:`\mu` is a shared mean direction (real embeddings share one)
   and :math:`e_i, g \sim \mathcal{N}(0, \text{diag}(\lambda))`.
4. **Samples** are :math:`x = (c_i + \nu_i t z) / \| c_i + \nu_i t z \|` with
   a per-identity noise level :math:`\nu_i = \nu \cdot
   \text{LogNormal}(0, \sigma_\nu)`, a heavy-tailed per-sample factor
   :math:`t` (Student-t-like, :math:`t = \sqrt{\kappa / \chi^2_\kappa}`) and
   :math:`z \sim \mathcal{N}(0, \text{diag}(\lambda))`.

Samples are generated in fixed-size chunks, each from its own random stream
derived from :obj:`seed`, so the result does not depend on the machine and
memory beyond the output stays bounded.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from tqdm.auto import tqdm

_CHUNK = 1 << 16

# Defaults calibrated on LFW (MobileFaceNet, 192-d); see the module docstring.
SINGLETON_RATE = 0.708
SIZE_SCALE = 2.0
SIZE_TAIL = 1.54
INTRINSIC_DIM = 64
SPECTRUM_POWER = 0.5
MEAN_WEIGHT = 0.7
GROUP_SIZE = 4.0
GROUP_SPREAD = 1.0
SPREAD_SIGMA = 0.25
NOISE = 0.5
NOISE_SIGMA = 0.22
NOISE_TAIL = 16.0
MAX_SIZE = 1000


def identity_sizes(
    num_samples: int,
    *,
    seed: int = 0,
    singleton_rate: float = SINGLETON_RATE,
    size_scale: float = SIZE_SCALE,
    size_tail: float = SIZE_TAIL,
    max_size: int | None = MAX_SIZE,
) -> np.ndarray:
    r"""Draws long-tailed identity sizes that sum to :obj:`num_samples`.

    Each size is 1 with probability :obj:`singleton_rate`, else
    :math:`2 + \lfloor X \rfloor` with :math:`P(X \ge t) = (1 + t /
    \theta)^{-\alpha}` (:math:`\theta` = :obj:`size_scale`, :math:`\alpha` =
    :obj:`size_tail`), capped at :obj:`max_size`. Sizes are drawn until they
    cover :obj:`num_samples`; the last one is trimmed.

    Args:
        num_samples (int): The total number of items :math:`N`.
        seed (int, optional): The random seed. (default: :obj:`0`)
        singleton_rate (float, optional): The share of singleton identities.
            (default: :obj:`0.708`)
        size_scale (float, optional): The Lomax scale :math:`\theta`.
            (default: :obj:`2.0`)
        size_tail (float, optional): The Lomax tail index :math:`\alpha`
            (smaller is heavier). (default: :obj:`1.54`)
        max_size (int, optional): The largest identity; the Lomax tail would
            otherwise give identities of >10,000 items at :math:`N = 10^6`.
            :obj:`None` for no cap. (default: :obj:`1000`)

    Returns:
        numpy.ndarray: The :obj:`int64` sizes, in random order.
    """
    _check_positive_int(num_samples, 'num_samples')
    if not 0.0 <= singleton_rate < 1.0:
        raise ValueError(f'singleton_rate must lie in [0, 1) (got {singleton_rate})')
    if size_scale <= 0 or size_tail <= 0:
        raise ValueError(
            f'size_scale and size_tail must be positive (got {size_scale}, {size_tail})'
        )
    if max_size is not None and max_size < 1:
        raise ValueError(f'max_size must be >= 1 (got {max_size})')

    rng = np.random.default_rng([seed, 1])
    out: list[np.ndarray] = []
    total = 0
    while total < num_samples:
        # Expected size is at least 1, so this batch nearly always suffices.
        batch = max(num_samples - total, 16)
        u = rng.random(batch)
        lomax = size_scale * (rng.random(batch) ** (-1.0 / size_tail) - 1.0)
        sizes = np.where(
            u < singleton_rate, 1.0, 2.0 + np.floor(np.minimum(lomax, 1e12))
        )
        sizes = sizes.astype(np.int64)
        if max_size is not None:
            np.minimum(sizes, max_size, out=sizes)
        out.append(sizes)
        total += int(sizes.sum())
    sizes = np.concatenate(out)
    cum = np.cumsum(sizes)
    last = int(np.searchsorted(cum, num_samples))
    sizes = sizes[: last + 1].copy()
    sizes[-1] -= int(cum[last]) - num_samples
    return sizes


def synthetic_faces(
    num_samples: int,
    dim: int = 256,
    *,
    seed: int = 0,
    num_identities: int | None = None,
    singleton_rate: float = SINGLETON_RATE,
    size_scale: float = SIZE_SCALE,
    size_tail: float = SIZE_TAIL,
    max_size: int | None = MAX_SIZE,
    intrinsic_dim: int | None = INTRINSIC_DIM,
    spectrum_power: float = SPECTRUM_POWER,
    mean_weight: float = MEAN_WEIGHT,
    group_size: float = GROUP_SIZE,
    group_spread: float = GROUP_SPREAD,
    spread_sigma: float = SPREAD_SIGMA,
    noise: float = NOISE,
    noise_sigma: float = NOISE_SIGMA,
    noise_tail: float | None = NOISE_TAIL,
    return_data: bool = False,
    progress: bool = False,
) -> tuple[Tensor, Tensor] | Data:
    r"""Generates L2-normalised synthetic face embeddings with identity
    labels, calibrated to look like real face embeddings (see
    :mod:`torch_geometric_sdt.datasets.synthetic` for the model).

    At :obj:`num_samples=13233`, :obj:`dim=192` the identity-size
    distribution, the cosine to the own identity's centre, the cosine between
    nearest identity centres and the share of cross-identity edges in the
    :math:`k = 80` nearest-neighbour graph are close to those of LFW. Larger
    :math:`N` brings proportionally more identities with the same
    per-identity statistics, so the space crowds as it does in real data.

    Args:
        num_samples (int): The number of embeddings :math:`N`.
        dim (int, optional): The embedding dimension :math:`D`.
            (default: :obj:`256`)
        seed (int, optional): The random seed; equal seeds give identical
            output. (default: :obj:`0`)
        num_identities (int, optional): If set, exactly this many identities
            with sizes from the long-tailed law rescaled to sum to :math:`N`
            (every identity keeps at least one item). (default: :obj:`None`)
        singleton_rate (float, optional): The share of singleton identities.
            (default: :obj:`0.708`)
        size_scale (float, optional): The Lomax scale of identity sizes.
            (default: :obj:`2.0`)
        size_tail (float, optional): The Lomax tail index of identity sizes.
            (default: :obj:`1.54`)
        max_size (int, optional): The largest identity; the Lomax tail would
            otherwise give identities of >10,000 items at :math:`N = 10^6`.
            :obj:`None` for no cap. (default: :obj:`1000`)
        intrinsic_dim (int, optional): The rank :math:`r` of the embedding
            subspace, capped at :obj:`dim`; :obj:`None` uses :obj:`dim`.
            (default: :obj:`64`)
        spectrum_power (float, optional): The decay :math:`\beta` of the
            variance spectrum. (default: :obj:`0.5`)
        mean_weight (float, optional): The weight :math:`m` of the shared mean
            direction. (default: :obj:`0.7`)
        group_size (float, optional): The mean number of identities per
            look-alike group; :obj:`1` disables grouping.
            (default: :obj:`4.0`)
        group_spread (float, optional): The spread :math:`s` of identity
            centres around their group centre. (default: :obj:`1.0`)
        spread_sigma (float, optional): The log-normal spread
            :math:`\sigma_s` of :math:`s_i` across identities.
            (default: :obj:`0.25`)
        noise (float, optional): The sample noise level :math:`\nu`.
            (default: :obj:`0.5`)
        noise_sigma (float, optional): The log-normal spread
            :math:`\sigma_\nu` of the noise level across identities.
            (default: :obj:`0.22`)
        noise_tail (float, optional): The degrees of freedom :math:`\kappa` of
            the heavy-tailed per-sample noise factor (smaller is heavier);
            :obj:`None` for Gaussian noise. (default: :obj:`16.0`)
        return_data (bool, optional): Return a
            :class:`torch_geometric.data.Data` with :obj:`x`, :obj:`y` instead
            of a tuple. (default: :obj:`False`)
        progress (bool, optional): Show a progress bar.
            (default: :obj:`False`)

    Returns:
        (x, y): :obj:`x` :obj:`float32` :obj:`Tensor[N, D]` with unit rows
        and :obj:`y` :obj:`int64` :obj:`Tensor[N]` identity ids in
        :math:`[0, C)`, items in random order; or a :class:`Data` when
        :obj:`return_data=True`.
    """
    _check_positive_int(num_samples, 'num_samples')
    _check_positive_int(dim, 'dim')
    for name, value in (
        ('noise', noise),
        ('group_spread', group_spread),
        ('mean_weight', mean_weight),
        ('spectrum_power', spectrum_power),
        ('spread_sigma', spread_sigma),
        ('noise_sigma', noise_sigma),
    ):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f'{name} must be a finite number >= 0 (got {value})')
    if group_size < 1:
        raise ValueError(f'group_size must be >= 1 (got {group_size})')
    if noise_tail is not None and noise_tail <= 0:
        raise ValueError(f'noise_tail must be positive or None (got {noise_tail})')
    rank = dim if intrinsic_dim is None else min(intrinsic_dim, dim)
    _check_positive_int(rank, 'intrinsic_dim')

    sizes = identity_sizes(
        num_samples,
        seed=seed,
        singleton_rate=singleton_rate,
        size_scale=size_scale,
        size_tail=size_tail,
        max_size=max_size,
    )
    if num_identities is not None:
        sizes = rescale_sizes(sizes, num_samples, num_identities, seed)
    num_ids = sizes.shape[0]

    rng = np.random.default_rng([seed, 2])
    # Labels in random item order (identity ids are already in random order).
    y = np.repeat(np.arange(num_ids, dtype=np.int64), sizes)
    y = y[rng.permutation(num_samples)]

    scale = np.arange(1, rank + 1, dtype=np.float64) ** -spectrum_power
    scale = np.sqrt(scale / scale.sum()).astype(np.float32)  # E|z|^2 = 1.
    mu = rng.standard_normal(rank).astype(np.float32)
    mu /= np.linalg.norm(mu)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    basis = np.ascontiguousarray(basis.T, dtype=np.float32)  # [rank, dim]

    # Hierarchical identity centres: groups of look-alikes.
    num_groups = max(1, round(num_ids / group_size))
    group = rng.integers(0, num_groups, num_ids)
    centres = rng.standard_normal((num_groups, rank), dtype=np.float32)[group]
    if group_size == 1:
        centres *= 0.0
    spread = group_spread * rng.lognormal(0.0, spread_sigma, num_ids)
    own = rng.standard_normal((num_ids, rank), dtype=np.float32)
    centres += spread.astype(np.float32)[:, None] * own
    del own
    centres *= scale
    centres += mean_weight * mu
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    level = (noise * rng.lognormal(0.0, noise_sigma, num_ids)).astype(np.float32)

    x = torch.empty(num_samples, dim)
    out = x.numpy()
    starts = range(0, num_samples, _CHUNK)
    for i, start in enumerate(
        tqdm(starts, disable=not progress, desc='synthetic_faces')
    ):
        crng = np.random.default_rng([seed, 3, i])
        yc = y[start : start + _CHUNK]
        z = crng.standard_normal((yc.shape[0], rank), dtype=np.float32)
        z *= scale
        amp = level[yc]
        if noise_tail is not None:
            chi2 = crng.chisquare(noise_tail, yc.shape[0])
            amp = amp * np.sqrt(noise_tail / chi2).astype(np.float32)
        z *= amp[:, None]
        z += centres[yc]
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        np.matmul(z, basis, out=out[start : start + _CHUNK])
    # The basis is orthonormal, so rows are unit up to rounding; fix that.
    x /= x.norm(dim=1, keepdim=True)

    y_t = torch.from_numpy(y)
    if return_data:
        return Data(x=x, y=y_t)
    return x, y_t


def demo_data(
    num_samples: int = 20_000,
    dim: int = 256,
    *,
    seed: int = 0,
) -> Data:
    r"""A small seeded synthetic face set for demonstrations and smoke tests:
    :func:`synthetic_faces` with its calibrated defaults, as a
    :class:`torch_geometric.data.Data` with :obj:`x` and :obj:`y`.

    Args:
        num_samples (int, optional): The number of embeddings.
            (default: :obj:`20000`)
        dim (int, optional): The embedding dimension. (default: :obj:`256`)
        seed (int, optional): The random seed. (default: :obj:`0`)
    """
    data = synthetic_faces(num_samples, dim, seed=seed, return_data=True)
    assert isinstance(data, Data)
    return data


def rescale_sizes(
    sizes: np.ndarray, num_samples: int, num_identities: int, seed: int
) -> np.ndarray:
    r"""Draws :obj:`num_identities` sizes from the law of :obj:`sizes`
    (with replacement, seeded) and rescales them to sum to exactly
    :obj:`num_samples`: every identity keeps one item and the rest is shared
    in proportion to :math:`s_i - 1`, the rounding remainder going to the
    largest fractions.

    Args:
        sizes (numpy.ndarray): Sizes to draw from.
        num_samples (int): The total :math:`N`.
        num_identities (int): How many identities.
        seed (int): The seed.

    Returns:
        numpy.ndarray: :obj:`int64` sizes, each at least 1, summing to
        :math:`N`.
    """
    _check_positive_int(num_identities, 'num_identities')
    if num_identities > num_samples:
        raise ValueError(
            f'num_identities ({num_identities}) exceeds num_samples ({num_samples})'
        )
    rng = np.random.default_rng([seed, 4])
    base = rng.choice(sizes, num_identities, replace=True).astype(np.float64)
    # Every identity keeps one item; the rest is shared in proportion.
    extra = (base - 1.0) / max((base - 1.0).sum(), 1.0) * (num_samples - num_identities)
    if (base - 1.0).sum() == 0:
        extra = np.full(num_identities, (num_samples - num_identities) / num_identities)
    out = 1 + np.floor(extra).astype(np.int64)
    missing = num_samples - int(out.sum())
    if missing > 0:  # Hand out the rounding remainder to the largest fractions.
        order = np.argsort(-(extra - np.floor(extra)), kind='stable')
        out[order[:missing]] += 1
    return out


def _check_positive_int(value: int, name: str) -> None:
    if (
        not isinstance(value, (int, np.integer))
        or isinstance(value, bool)
        or value <= 0
    ):
        raise ValueError(f'{name} must be a positive integer (got {value!r})')


__all__ = ['synthetic_faces', 'demo_data', 'identity_sizes', 'rescale_sizes']
