r"""Untrusted files: nothing that is read is ever unpickled.

Every crafted file below carries a pickle payload whose :meth:`__reduce__`
would create a marker file when loaded. Each reader must refuse the file with
a clear :class:`ValueError` and the marker must never appear. Checkpoint
headers are validated too: a foreign format, another format version or an
invalid configuration is refused with a message that says so.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_geometric_sdt import io
from torch_geometric_sdt.cli import main
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.models.sdt_clusterer import (
    CHECKPOINT_VERSION,
    SDTClusterer,
)
from torch_geometric_sdt.train import STATE_FILE, fit

SMALL = dict(hidden_channels=8, predictor_channels=8, heads=2, num_layers=1)


class Payload:
    """Creates :obj:`marker` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / 'PWNED'
    # The payload works: plain unpickling creates the marker.
    pickle.loads(pickle.dumps(Payload(path))).close()
    assert path.exists()
    path.unlink()
    return path


def _pickle_file(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({'weight': Payload(marker)}))
    return path


def _torch_save_file(path: Path, marker: Path) -> Path:
    torch.save({'weight': torch.zeros(2), 'x': Payload(marker)}, path)
    return path


@pytest.mark.parametrize('writer', [_pickle_file, _torch_save_file])
def test_model_checkpoint_with_pickle_is_refused(tmp_path, marker, writer):
    path = writer(tmp_path / 'model.safetensors', marker)
    with pytest.raises(ValueError, match='not a safetensors checkpoint'):
        SDTClusterer.load(path)
    with pytest.raises(ValueError, match='not a safetensors checkpoint'):
        SDTClusterer.load_with_metadata(path)
    assert not marker.exists()


def test_cli_refuses_pickled_model(tmp_path, marker, capsys):
    x, _ = synthetic_faces(200, dim=8, seed=0)
    np.save(tmp_path / 'x.npy', np.asarray(x))
    model = _torch_save_file(tmp_path / 'evil.safetensors', marker)
    out = tmp_path / 'pred.meta'
    rc = main(
        [
            'cluster',
            str(tmp_path / 'x.npy'),
            '-o',
            str(out),
            '-k',
            '80',
            '--method',
            'sdt',
            '--model',
            str(model),
            '-q',
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert 'not a safetensors checkpoint' in err and len(err.splitlines()) == 1
    assert not marker.exists() and not out.exists()


def test_training_state_with_pickle_is_refused(tmp_path, marker):
    x, y = synthetic_faces(300, dim=8, seed=1)
    _pickle_file(tmp_path / STATE_FILE, marker)
    model = SDTClusterer(k=6, **SMALL)
    with pytest.raises(ValueError, match='not a safetensors training state'):
        fit(
            model,
            x,
            y,
            checkpoint_dir=tmp_path,
            resume=True,
            topk_epochs=1,
            sdt_epochs=1,
            max_steps_per_epoch=1,
        )
    assert not marker.exists()
    # Without resume an existing state is neither read nor silently replaced:
    with pytest.raises(FileExistsError, match='resume=True .* overwrite=True'):
        fit(
            model,
            x,
            y,
            checkpoint_dir=tmp_path,
            topk_epochs=1,
            sdt_epochs=1,
            max_steps_per_epoch=1,
        )
    assert not marker.exists()


@pytest.mark.parametrize('suffix', ['.npy', '.npz'])
def test_object_arrays_are_never_unpickled(tmp_path, marker, suffix):
    arr = np.empty((3, 2), dtype=object)
    arr[:] = Payload(marker)
    path = tmp_path / f'evil{suffix}'
    if suffix == '.npy':
        np.save(path, arr, allow_pickle=True)
    else:
        np.savez(path, features=arr, labels=arr[:, 0], data=arr)
    for read in (io.load_features, io.load_labels):
        with pytest.raises(ValueError, match='Python objects .* never loaded'):
            read(path)
    if suffix == '.npz':
        with pytest.raises(ValueError, match='Python objects .* never loaded'):
            io.read_knn(path)
    assert not marker.exists()


# Checkpoint headers ##########################################################


def _rewrite_meta(path: Path, **meta: str | None) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework='pt') as f:
        new = {**f.metadata(), **meta}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    new = {k: v for k, v in new.items() if v is not None}
    save_file(tensors, str(path), metadata=new)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return SDTClusterer(k=4, **SMALL).save(tmp_path / 'model.safetensors')


@pytest.mark.parametrize(
    'meta,match',
    [
        (
            {'format_version': str(CHECKPOINT_VERSION + 1)},
            f'format version {CHECKPOINT_VERSION + 1}; this library .* reads version '
            f'{CHECKPOINT_VERSION}',
        ),
        ({'format_version': None}, 'format version None'),
        ({'format': 'something.else'}, 'not an SDTClusterer checkpoint'),
        ({'config': '{not json'}, 'no valid JSON config'),
        ({'config': None}, 'no valid JSON config'),
        ({'config': '[1, 2]'}, 'not a JSON object'),
        ({'config': json.dumps({'k': 'eighty'})}, 'invalid config'),
        (
            {'config': json.dumps({'k': 4, 'eta': 3.0})},
            r'invalid config \(eta must lie in \[0, 1\]',
        ),
        (
            {'config': json.dumps({'k': 4, 'bogus': 1})},
            r"unknown config keys \['bogus'\]",
        ),
        ({'config': json.dumps({'k': 5, **SMALL})}, 'does not match its config'),
        ({'train_range': '{oops'}, 'no valid JSON train_range'),
        ({'train_range': json.dumps({'z_first': [1, 'x']})}, 'invalid train_range'),
        ({'train_range': json.dumps({'z_first': [1.0]})}, 'invalid train_range'),
    ],
    ids=[
        'newer version',
        'no version',
        'foreign format',
        'bad JSON',
        'no config',
        'config not an object',
        'wrong type',
        'value out of range',
        'unknown key',
        'weights do not fit',
        'train_range not JSON',
        'train_range not numbers',
        'train_range not a pair',
    ],
)
def test_checkpoint_header_is_validated(checkpoint, meta, match):
    _rewrite_meta(checkpoint, **meta)
    with pytest.raises(ValueError, match=match):
        SDTClusterer.load(checkpoint)


def test_truncated_or_garbage_checkpoint(tmp_path, checkpoint):
    data = checkpoint.read_bytes()
    for name, blob in [
        ('cut', data[: len(data) // 2]),
        ('junk', b'\x00' * 64),
        ('tiny', b'ab'),
        ('header', (10).to_bytes(8, 'little') + b'[1]'),
    ]:
        path = tmp_path / f'{name}.safetensors'
        path.write_bytes(blob)
        with pytest.raises(ValueError, match='not a safetensors checkpoint'):
            SDTClusterer.load(path)


def test_training_state_version_is_checked(tmp_path):
    x, y = synthetic_faces(300, dim=8, seed=1)
    opts = dict(topk_epochs=2, sdt_epochs=1, max_steps_per_epoch=1, seed=0)
    fit(
        SDTClusterer(k=6, **SMALL),
        x,
        y,
        checkpoint_dir=tmp_path,
        stop_after_epochs=1,
        **opts,
    )
    state = tmp_path / STATE_FILE
    _rewrite_meta(state, format_version='99')
    with pytest.raises(ValueError, match='training state format version 99'):
        fit(
            SDTClusterer(k=6, **SMALL),
            x,
            y,
            checkpoint_dir=tmp_path,
            resume=True,
            **opts,
        )
    _rewrite_meta(state, format='torch_geometric_sdt.SDTClusterer')
    with pytest.raises(ValueError, match='not a training state'):
        fit(
            SDTClusterer(k=6, **SMALL),
            x,
            y,
            checkpoint_dir=tmp_path,
            resume=True,
            **opts,
        )
