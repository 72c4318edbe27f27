r"""Safetensors files with a typed JSON header: the one home of the package's
checkpoint format.

A file holds named tensors and a string-to-string header with at least
``format`` (what the file is, *e.g.* ``'torch_geometric_sdt.SDTClusterer'``)
and ``format_version``. :func:`save_tensors` writes it atomically;
:func:`load_tensors` reads it back and checks both fields. Only tensors and
JSON are read: nothing is ever unpickled, so a file from an untrusted source
cannot run code.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from torch_geometric_sdt.utils.atomic import PathLike, atomic_write


def save_tensors(
    path: PathLike,
    tensors: dict[str, Tensor],
    *,
    format: str,
    version: int,
    metadata: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes :obj:`tensors` (moved to the CPU, made contiguous) and a header
    with :obj:`format`, :obj:`version` and :obj:`metadata` to :obj:`path`,
    atomically.

    Args:
        path (str or os.PathLike): The output file.
        tensors (dict): Named tensors.
        format (str): What the file holds.
        version (int): The version of that format.
        metadata (dict, optional): More header fields, strings only.
            (default: :obj:`None`)
        overwrite (bool, optional): Replace an existing file.
            (default: :obj:`False`)
    """
    from safetensors.torch import save

    header = {'format': format, 'format_version': str(version), **(metadata or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = save(state, metadata=header)
    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as tmp:
        Path(tmp).write_bytes(data)
    return path


def load_tensors(
    path: PathLike,
    *,
    format: str,
    version: int,
    kind: str,
    description: str,
    version_hint: str = '',
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Reads a file written by :func:`save_tensors` and checks its header.

    Args:
        path (str or os.PathLike): The file.
        format (str): The :obj:`format` it must hold.
        version (int): The format version this library reads.
        kind (str): What the file is, for messages (*e.g.*
            :obj:`'checkpoint'`).
        description (str): What a file of that format is called, for the
            message when the format differs (*e.g.*
            :obj:`'an SDTClusterer checkpoint'`).
        version_hint (str, optional): Appended to the message when the
            version differs. (default: :obj:`''`)

    Returns:
        (tensors, header): The named tensors and the header's fields.

    Raises:
        FileNotFoundError: If :obj:`path` is not a file.
        ValueError: If it is not a safetensors file, or holds another format
            or version.
    """
    from safetensors import SafetensorError, safe_open

    from torch_geometric_sdt.version import __version__

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{kind} not found: {path}')
    try:
        with safe_open(str(path), framework='pt') as f:
            header = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, AttributeError) as e:
        raise ValueError(f'{path} is not a safetensors {kind} ({e})') from e
    if not isinstance(header, dict) or header.get('format') != format:
        raise ValueError(f'{path} is not {description}')
    found = header.get('format_version')
    if found != str(version):
        raise ValueError(
            f'{path} has {kind} format version {found}; this library '
            f'({__version__}) reads version {version}{version_hint}'
        )
    return tensors, header


__all__ = ['save_tensors', 'load_tensors']
