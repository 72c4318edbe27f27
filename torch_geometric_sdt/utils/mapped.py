r"""Reading features from a read-only memory-mapped file without keeping them
resident.

Every page of a mapped file that a process reads stays in its resident set
until the mapping goes away, so one pass over :math:`N \times D` mapped
features adds all of them (5 GiB for 5.21M faces of dimension 256) to the
process's memory, although the kernel could drop them. A pass that reads the
rows chunk by chunk can hand each chunk's pages back once it is done
(:func:`release_rows`): they stay in the page cache, so a later read costs no
disk access while memory lasts, but they no longer count against the
process.
"""

from __future__ import annotations

import mmap

import numpy as np

#: Bytes of rows one chunked pass over mapped features reads at a time.
MAPPED_CHUNK_BYTES = 1 << 26


def readonly_mapping(x: object) -> mmap.mmap | None:
    r"""The read-only file mapping that :obj:`x` views, or :obj:`None`.

    Only a :class:`numpy.memmap` opened with :obj:`mode='r'` (what
    :func:`~torch_geometric_sdt.io.load_features` and
    :obj:`numpy.load(..., mmap_mode='r')` give), or a view of one, counts:
    releasing the pages of a writable or copy-on-write mapping would drop
    changes that were never written back.
    """
    if not isinstance(x, np.ndarray):
        return None
    base: object = x
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap) and getattr(base, 'mode', None) != 'r':
            return None
        base = base.base
    return base if isinstance(base, mmap.mmap) else None


def release_rows(x: np.ndarray, start: int, end: int) -> None:
    r"""Hands the resident pages under rows :math:`[start, end)` of a
    C-contiguous :obj:`x` on a read-only file mapping back to the kernel
    (:obj:`MADV_DONTNEED`); does nothing for any other array. The data stay
    readable: a later read maps the pages again, from the page cache or the
    file. Only whole pages inside the rows are released, so a page shared
    with a neighbouring chunk stays until that chunk releases it.
    """
    mm = readonly_mapping(x)
    if mm is None or end <= start or len(mm) == 0 or not x.flags.c_contiguous:
        return
    if not hasattr(mm, 'madvise') or not hasattr(mmap, 'MADV_DONTNEED'):
        return  # Not on this platform: the pages stay until unmapped.
    row_bytes = x.strides[0]
    start_of_map = np.frombuffer(mm, dtype=np.uint8, count=1).__array_interface__
    offset = x.__array_interface__['data'][0] - start_of_map['data'][0]
    lo = offset + start * row_bytes
    hi = offset + end * row_bytes
    page = mmap.PAGESIZE
    lo = -(-lo // page) * page
    hi = min(hi, len(mm)) // page * page
    if hi > lo:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


__all__ = ['MAPPED_CHUNK_BYTES', 'readonly_mapping', 'release_rows']
