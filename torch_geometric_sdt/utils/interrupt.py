r"""Stop requests (Ctrl-C, ``SIGTERM``) held back while native code runs.

Python runs a signal handler in the main thread at the next bytecode
boundary. Inside a call into compiled code (:mod:`numba` kernels and their
compilation, the NN descent of :mod:`pynndescent`, the C++ of Infomap) that
boundary can fall where an exception cannot be raised safely: in a callback
the native code makes into Python, or in the conversion of its result. The
exception is then lost (the run carries on and finishes as if nothing had
happened) or turned into a :class:`SystemError`.

:func:`deferred_interrupts` holds stop requests back around such calls and
delivers them, to the handler that was installed before, when the block
ends; :func:`interruption_point` delivers them earlier, at a place inside the
block where stopping is safe (between two native calls).

The trade-off is latency: a stop takes effect when the native call running
at that moment returns. The NN-descent backend of
:func:`~torch_geometric_sdt.nn.knn.knn` holds stop requests back for the
whole :mod:`pynndescent` construction, one compiled call: for 50K points of
dimension 64 on two cores about 30 s (about 90 s in a fresh process, where
:mod:`numba` first compiles), minutes at :math:`10^6` points. The run still
ends as asked, with nothing written.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

#: The signals :func:`deferred_interrupts` holds back by default.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class _Deferral:
    r"""The state of one active :func:`deferred_interrupts` block."""

    def __init__(self) -> None:
        self.previous: dict[int, object] = {}  # Handlers before the block.
        self.received: list[int] = []  # Signals held back, in order.
        self.closed = False

    def record(self, signum: int, frame: FrameType | None) -> None:
        if self.closed:
            # The block has ended but its handlers are not all restored yet
            # (a signal delivered during the restore raised): pass it on.
            _deliver(signum, self.previous[signum])
        elif signum not in self.received:
            self.received.append(signum)


# The active blocks of the main thread, outermost first.
_active: list[_Deferral] = []


@contextlib.contextmanager
def deferred_interrupts(
    signals: tuple[int, ...] = STOP_SIGNALS,
) -> Iterator[None]:
    r"""Holds stop requests back while the block runs and delivers them when
    it ends.

    In the main thread, the handlers of :obj:`signals` are replaced by ones
    that only record the signal. On exit the previous handlers are restored
    and every recorded signal is delivered to its previous handler, once, in
    the order of arrival, until one raises: a Python handler is called
    (Python's default for ``SIGINT`` and the ``sdt`` command line's for
    ``SIGTERM`` raise :class:`KeyboardInterrupt`, which then leaves the
    block, replacing any exception the block raised); for
    :obj:`signal.SIG_DFL` the signal is raised again, so that the process
    ends as it would have; :obj:`signal.SIG_IGN` drops it. A signal whose
    handler was not installed from Python is not held back.

    Blocks nest (an inner block hands its signals to the outer one, which
    delivers them when it ends, or at an :func:`interruption_point`). Outside
    the main thread, where Python cannot change signal handlers, the block
    does nothing.

    A stop takes effect when the block ends, so blocks should be short or
    contain interruption points; see the module description for the
    trade-off.

    Args:
        signals (tuple of int, optional): The signals to hold back.
            (default: :obj:`STOP_SIGNALS`, ``SIGINT`` and ``SIGTERM``)

    Example:
        >>> import numpy as np
        >>> from torch_geometric_sdt.utils.interrupt import deferred_interrupts
        >>> with deferred_interrupts():
        ...     total = np.arange(10).sum()  # a call into compiled code
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    state = _Deferral()
    _active.append(state)
    try:
        for signum in signals:
            current = signal.getsignal(signum)
            if signum in state.previous or current is None:
                # None: installed by native code, so it cannot be restored.
                continue
            try:
                signal.signal(signum, state.record)
            except ValueError:  # Not the main interpreter.
                break
            state.previous[signum] = current
        yield
    finally:
        # Nothing can raise here before `closed` is set: until then every
        # signal of `signals` only meets `state.record`.
        state.closed = True
        _active.remove(state)
        for signum, handler in state.previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        for signum in state.received:
            _deliver(signum, state.previous[signum])


def interruption_point() -> None:
    r"""Delivers now the stop requests that the enclosing
    :func:`deferred_interrupts` blocks hold back, to the handlers installed
    before the outermost of them, as those blocks would when they end.

    Called between two native calls inside a long deferred block, it lets a
    stop take effect there (typically by raising
    :class:`KeyboardInterrupt`) instead of at the end of the block. Outside
    such a block, or outside the main thread, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or not _active:
        return
    pending: list[int] = []
    for state in _active:
        for signum in state.received:
            if signum not in pending:
                pending.append(signum)
        state.received.clear()
    for signum in pending:
        for state in _active:  # The outermost block that holds it back.
            if signum in state.previous:
                _deliver(signum, state.previous[signum])
                break


def _deliver(signum: int, handler: object) -> None:
    r"""Hands :obj:`signum` to :obj:`handler`, the handler it would have met."""
    if handler == signal.SIG_IGN:
        return
    if handler == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return
    if callable(handler):
        handler(signum, None)


__all__ = ['deferred_interrupts', 'interruption_point', 'STOP_SIGNALS']
