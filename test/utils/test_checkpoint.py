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


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()  # reaped: its pid names no process
    return child.pid


def test_atomic_write_temporary_names_its_process(tmp_path):
    import os
    import re

    with atomic_write(tmp_path / 'out.npz') as tmp:
        assert tmp.parent == tmp_path
        assert re.fullmatch(rf'\.out\.{os.getpid()}\.[a-z0-9_]+\.tmp\.npz', tmp.name)
        tmp.write_bytes(b'x')
    assert [p.name for p in tmp_path.iterdir()] == ['out.npz']


def test_atomic_write_removes_stale_temporaries_of_dead_processes(tmp_path):
    import os
    import subprocess
    import sys

    from torch_geometric_sdt.utils.atomic import process_alive

    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        assert not process_alive(dead)
        assert process_alive(sleeper.pid) and process_alive(os.getppid())
        stale = tmp_path / f'.out.{dead}.k3j_x9a2.tmp.npz'
        live = [
            tmp_path / f'.out.{sleeper.pid}.ab12cd34.tmp.npz',
            tmp_path / f'.out.{os.getppid()}.ab12cd34.tmp.npz',
            tmp_path / f'.out.{os.getpid()}.ab12cd34.tmp.npz',
        ]
        others = [
            tmp_path / f'.out.{dead}.k3j_x9a2.tmp.npy',  # another target
            tmp_path / f'.out.x.{dead}.k3j_x9a2.tmp.npz',  # of 'out.x.npz'
            tmp_path / f'.other.{dead}.k3j_x9a2.tmp.npz',
            tmp_path / f'out.{dead}.k3j_x9a2.tmp.npz',  # not hidden
            tmp_path / f'.out.{dead}.k3j_x9a2.tmp.npz.bak',
            tmp_path / '.out.k3j_x9a2.tmp.npz',  # no process id
        ]
        for path in [stale, *live, *others]:
            path.write_bytes(b'partial')
        folder = tmp_path / f'.out.{dead}.folder12.tmp.npz'
        folder.mkdir()
        with atomic_write(tmp_path / 'out.npz') as tmp:
            tmp.write_bytes(b'done')
        assert not stale.exists()
        assert all(p.exists() for p in [*live, *others, folder])
        assert (tmp_path / 'out.npz').read_bytes() == b'done'
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_temporaries_go_even_when_the_write_is_refused(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f'.out.{dead}.k3j_x9a2.tmp.txt'
    stale.write_text('partial')
    (tmp_path / 'out.txt').write_text('kept')
    with pytest.raises(FileExistsError), atomic_write(tmp_path / 'out.txt'):
        pass
    assert not stale.exists()
    assert (tmp_path / 'out.txt').read_text() == 'kept'
