from __future__ import annotations

import pytest
import torch

from torch_geometric_sdt.utils.atomic import atomic_write, check_writable
from torch_geometric_sdt.utils.checkpoint import load_tensors, save_tensors

OPTS = dict(kind='thing', description='a thing of this library')


def test_round_trip_keeps_tensors_and_header(tmp_path):
    path = tmp_path / 'a.safetensors'
    weight = torch.arange(6.0).view(2, 3).t()  # not contiguous
    save_tensors(path, {'w': weight}, format='fmt', version=3, metadata={'a': 'b'})
    tensors, header = load_tensors(path, format='fmt', version=3, **OPTS)
    assert torch.equal(tensors['w'], weight)
    assert header['a'] == 'b' and header['format_version'] == '3'
    assert [p.name for p in tmp_path.iterdir()] == ['a.safetensors']


def test_existing_file_is_kept_without_overwrite(tmp_path):
    path = tmp_path / 'a.safetensors'
    save_tensors(path, {'w': torch.zeros(1)}, format='fmt', version=1)
    with pytest.raises(FileExistsError):
        save_tensors(path, {'w': torch.ones(1)}, format='fmt', version=1)
    save_tensors(path, {'w': torch.ones(1)}, format='fmt', version=1, overwrite=True)
    assert load_tensors(path, format='fmt', version=1, **OPTS)[0]['w'].item() == 1


def test_format_version_and_garbage_are_refused(tmp_path):
    path = tmp_path / 'a.safetensors'
    save_tensors(path, {'w': torch.zeros(1)}, format='other', version=1)
    with pytest.raises(ValueError, match='is not a thing of this library'):
        load_tensors(path, format='fmt', version=1, **OPTS)
    with pytest.raises(ValueError, match='thing format version 1;.*reads version 2'):
        load_tensors(path, format='other', version=2, version_hint='!', **OPTS)
    path.write_bytes(b'\x00' * 16)
    with pytest.raises(ValueError, match='not a safetensors thing'):
        load_tensors(path, format='fmt', version=1, **OPTS)
    with pytest.raises(FileNotFoundError, match='thing not found'):
        load_tensors(tmp_path / 'missing', format='fmt', version=1, **OPTS)


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    path = tmp_path / 'out.txt'
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text('partial')
        raise RuntimeError('stop')
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match='does not exist'):
        check_writable(tmp_path / 'missing' / 'out.txt')


def test_io_reexports_the_one_atomic_write():
    from torch_geometric_sdt import io
    from torch_geometric_sdt.utils import atomic

    assert io.atomic_write is atomic.atomic_write
    assert io.check_writable is atomic.check_writable
