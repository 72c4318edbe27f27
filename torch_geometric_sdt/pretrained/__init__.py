"""Models shipped with the package (see ``MODEL_CARD.md`` beside this file)."""

from __future__ import annotations

from pathlib import Path

#: File name of the default :class:`~torch_geometric_sdt.SDTClusterer`.
DEFAULT_MODEL = 'sdt_relational_k80.safetensors'


def default_model_path() -> Path:
    """Returns the path of the shipped default SDT model.

    Raises:
        FileNotFoundError: If this installation has no shipped model.
    """
    path = Path(__file__).with_name(DEFAULT_MODEL)
    if not path.is_file():
        raise FileNotFoundError(
            f'no shipped SDT model at {path}; train one with `sdt train` and '
            'pass it with --model'
        )
    return path
