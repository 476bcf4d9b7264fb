"""SIGTERM in training: save the run's state, exit promptly with status 143.

Kubernetes stops a pod (eviction, node drain, preemption, a deleted pod or Job) by sending
SIGTERM to the container's PID 1, here ``python -m training run``, then SIGKILL after the grace
period (30 s by default). A PID 1 has no default action for SIGTERM: without a handler the
signal is ignored, and every stop waited out the grace period. With :func:`install`:

- during training batches the signal is only recorded (:func:`deferred`); the training loop
  notices it at the end of the batch in progress (milliseconds), saves the state as it is
  mid-epoch and stops (see training/train.py: ``AtomicBackup.save_partial``);
- anywhere else (start-up, data loading, the final evaluation and save) the handler raises
  :class:`Preempted` at once: everything written there is atomic or written again by the
  resumed run, so nothing is lost that a rerun does not redo in seconds.

Either way the process exits with :data:`EXIT_PREEMPTED` = 143 (128 + 15, what a shell and the
container runtime report for a process ended by SIGTERM, so a stop that came before the handler
was installed reads the same). It is not the run's failure: the pod failure policy must not
count it, and the retried index resumes from the saved state.

:class:`Preempted` is a BaseException (as KeyboardInterrupt), so that no library's
``except Exception`` swallows it.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 128 + signal.SIGTERM  # 143


class Preempted(BaseException):
    """SIGTERM arrived; the run stops now (its state is saved or was already)."""


class _State:
    requested = False
    deferring = 0


_state = _State()


def _on_sigterm(signum: int, frame: object) -> None:
    if not _state.requested:
        log.warning("SIGTERM: stopping at the next safe point (state saved, exit status %d)",
                    EXIT_PREEMPTED)
    _state.requested = True
    if not _state.deferring:
        raise Preempted("SIGTERM")


def install() -> None:
    """Handle SIGTERM in this process (call from the main thread, early)."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def requested() -> bool:
    """Whether a SIGTERM has arrived."""
    return _state.requested


def check() -> None:
    """Raise :class:`Preempted` if a SIGTERM has arrived (a safe point)."""
    if _state.requested:
        raise Preempted("SIGTERM")


@contextmanager
def deferred() -> Iterator[None]:
    """Inside, a SIGTERM is only recorded; the code polls :func:`requested` at safe points.
    Leaving the block is one more safe point."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    check()
