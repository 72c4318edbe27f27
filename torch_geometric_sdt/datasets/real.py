r"""Loading real embedding sets from disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from torch_geometric_sdt.io import (
    FEATURE_SUFFIXES,
    PathLike,
    load_features,
    load_labels,
)

_FOLDER_FEATURES = tuple(f'features{s}' for s in FEATURE_SUFFIXES)
_FOLDER_LABELS = ('labels.npy', 'labels.meta', 'labels.txt', 'labels.npz')


def load_embeddings(
    path: PathLike,
    *,
    labels: PathLike | None = None,
    dim: int | None = None,
    return_numpy: bool = False,
    mmap: bool = True,
) -> Data | tuple[np.ndarray, np.ndarray | None]:
    r"""Loads an embedding set with its identity labels.

    :obj:`path` may be

    * a **folder** holding ``features.{npy,bin,npz}``, optionally
      ``labels.{npy,meta,txt,npz}`` and ``identities.txt`` (one name per
      line, line :math:`i` naming label :math:`i`), such as the LFW
      MobileFaceNet set;
    * a **features file** (``.bin``, ``.npy``, ``.npz``). Unless
      :obj:`labels` is given, a ``.bin`` file looks for its labels in the
      learn-to-cluster places: ``<stem>.meta`` beside it, then
      ``../labels/<stem>.meta`` (the layout ``features/part1_test.bin``,
      ``labels/part1_test.meta``). The dimension of a ``.bin`` file is derived
      from the label count when :obj:`dim` is not given.

    Args:
        path (str or os.PathLike): The folder or features file.
        labels (str or os.PathLike, optional): An explicit labels file.
            (default: :obj:`None`)
        dim (int, optional): The dimension of a ``.bin`` features file.
            (default: :obj:`None`)
        return_numpy (bool, optional): Return :obj:`(x, y)` NumPy arrays
            (memory-mapped where the format allows) instead of a
            :class:`~torch_geometric.data.Data`. (default: :obj:`False`)
        mmap (bool, optional): Memory-map ``.bin`` / ``.npy`` features.
            (default: :obj:`True`)

    Returns:
        :class:`torch_geometric.data.Data` with :obj:`x` (:obj:`float32`
        :obj:`[N, D]`), :obj:`y` (:obj:`int64` :obj:`[N]`, absent for an
        unlabeled set) and :obj:`identities` (a list of names, when
        ``identities.txt`` exists); or :obj:`(x, y)` NumPy arrays, :obj:`y`
        being :obj:`None` for an unlabeled set.

    Raises:
        FileNotFoundError: If :obj:`path` or the folder's features file does
            not exist.
        ValueError: If a file is malformed or the number of labels differs
            from the number of feature rows.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'no such file or folder: {path}')
    identities: list[str] | None = None
    if path.is_dir():
        features = next(
            (path / n for n in _FOLDER_FEATURES if (path / n).exists()), None
        )
        if features is None:
            raise FileNotFoundError(
                f'no features file in {path} (expected one of '
                f'{", ".join(_FOLDER_FEATURES)})'
            )
        if labels is None:
            labels = next(
                (path / n for n in _FOLDER_LABELS if (path / n).exists()), None
            )
        names = path / 'identities.txt'
        if names.exists():
            identities = names.read_text().splitlines()
    else:
        features = path
        if labels is None and path.suffix.lower() == '.bin':
            candidates = (
                path.with_suffix('.meta'),
                path.parent.parent / 'labels' / f'{path.stem}.meta',
            )
            labels = next((p for p in candidates if p.exists()), None)

    y = load_labels(labels) if labels is not None else None
    if features.suffix.lower() == '.bin' and dim is None and y is not None:
        dim = _bin_dim(features, y.shape[0])
    x = load_features(features, dim=dim, mmap=mmap)
    if y is not None and y.shape[0] != x.shape[0]:
        raise ValueError(
            f'{labels} holds {y.shape[0]} labels but {features} '
            f'holds {x.shape[0]} feature rows'
        )
    if (
        identities is not None
        and y is not None
        and y.size
        and y.max() >= len(identities)
    ):
        raise ValueError(
            f'labels reach {int(y.max())} but {path}/identities.txt '
            f'names only {len(identities)} identities'
        )

    if return_numpy:
        return x, y
    data = Data(x=torch.from_numpy(np.array(x, dtype=np.float32)))
    if y is not None:
        data.y = torch.from_numpy(y)
    if identities is not None:
        data.identities = identities
    return data


def _bin_dim(features: Path, num_samples: int) -> int:
    if not features.exists():
        raise FileNotFoundError(f'no such file: {features}')
    size = features.stat().st_size
    if size == 0 or size % (4 * num_samples) != 0:
        raise ValueError(
            f'{features} holds {size} bytes, which is not N * D * 4 for the '
            f'N={num_samples} labels (truncated or mismatched file?)'
        )
    return size // (4 * num_samples)


__all__ = ['load_embeddings']
