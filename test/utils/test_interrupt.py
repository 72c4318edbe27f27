from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from torch_geometric_sdt.utils.interrupt import (
    STOP_SIGNALS,
    deferred_interrupts,
    interruption_point,
)

ROOT = Path(__file__).resolve().parents[2]


class Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise Stop(signum)


@pytest.fixture
def handlers():
    r"""Restores the handlers of SIGINT and SIGTERM after the test."""
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _send(sig: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.2)  # Python runs the handler here (sleep is interrupted).


def test_signal_is_held_back_until_the_block_ends(handlers):
    signal.signal(signal.SIGTERM, _raise_stop)
    reached = False
    with pytest.raises(Stop):
        with deferred_interrupts():
            _send()
            reached = True  # Not raised inside the block.
    assert reached
    assert signal.getsignal(signal.SIGTERM) is _raise_stop


def test_no_signal_no_effect(handlers):
    signal.signal(signal.SIGTERM, _raise_stop)
    with deferred_interrupts():
        assert signal.getsignal(signal.SIGTERM) is not _raise_stop
    assert signal.getsignal(signal.SIGTERM) is _raise_stop


def test_sigint_default_handler_raises_keyboard_interrupt(handlers):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    reached = False
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            _send(signal.SIGINT)
            reached = True
    assert reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stop_replaces_the_exception_of_the_block(handlers):
    signal.signal(signal.SIGTERM, _raise_stop)
    with pytest.raises(Stop) as info:
        with deferred_interrupts():
            _send()
            raise ValueError('bad input')
    assert isinstance(info.value.__context__, ValueError)


def test_nested_blocks_deliver_at_the_outer_end(handlers):
    signal.signal(signal.SIGTERM, _raise_stop)
    steps = []
    with pytest.raises(Stop):
        with deferred_interrupts():
            with deferred_interrupts():
                _send()
                steps.append('inner')
            steps.append('outer')  # The inner block handed the signal on.
    assert steps == ['inner', 'outer']
    assert signal.getsignal(signal.SIGTERM) is _raise_stop


def test_interruption_point_delivers_early(handlers):
    signal.signal(signal.SIGTERM, _raise_stop)
    steps = []
    with pytest.raises(Stop):
        with deferred_interrupts():
            with deferred_interrupts():
                interruption_point()  # Nothing held back: no effect.
                steps.append('first')
                _send()
                steps.append('second')
                interruption_point()
                steps.append('never')
    assert steps == ['first', 'second']
    assert signal.getsignal(signal.SIGTERM) is _raise_stop
    interruption_point()  # Outside any block: no effect.


def test_signals_are_delivered_once_in_order(handlers):
    seen = []

    def note(signum, frame):
        seen.append(signum)

    signal.signal(signal.SIGINT, note)
    signal.signal(signal.SIGTERM, note)
    with deferred_interrupts():
        _send(signal.SIGTERM)
        _send(signal.SIGINT)
        _send(signal.SIGTERM)
        assert seen == []
    assert seen == [signal.SIGTERM, signal.SIGINT]


def test_ignored_signal_is_dropped(handlers):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with deferred_interrupts():
        _send()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_only_the_given_signals_are_held_back(handlers):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_stop)
    with pytest.raises(Stop):
        with deferred_interrupts((signal.SIGINT,)):
            _send(signal.SIGTERM)
            pytest.fail('SIGTERM was held back')  # pragma: no cover


def test_other_threads_are_left_alone(handlers):
    signal.signal(signal.SIGTERM, _raise_stop)
    seen = []

    def work():
        with deferred_interrupts():
            seen.append(signal.getsignal(signal.SIGTERM))
            interruption_point()
        seen.append('done')

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [_raise_stop, 'done']


def test_default_action_ends_the_process_after_the_block():
    # With SIG_DFL the held-back SIGTERM ends the process as soon as the
    # block ends, as it would have without the block.
    script = textwrap.dedent(
        """
        import os, signal, time
        from torch_geometric_sdt.utils.interrupt import deferred_interrupts

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            print('inside', flush=True)
        print('after', flush=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, '-c', script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert proc.stdout == 'inside\n'
