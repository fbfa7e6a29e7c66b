"""Ctrl-C that waits for a consistent moment: the work in progress is saved, then it stops."""

from __future__ import annotations

import signal
import threading


class ImmediateInterrupt(KeyboardInterrupt):
    """The second Ctrl-C: stop at once (the last saved state is the one kept)."""


class DeferredInterrupt:
    """Within this context, Ctrl-C only sets `requested`; the loop checks it between steps.

    A second Ctrl-C raises ImmediateInterrupt at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise ImmediateInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
