"""Progress for people and for files: a live bar on a terminal, one line per loop in a log.

A redirected log (a file, CI, `nohup`) gets no carriage-return redraws: each loop logs one
line when it ends, with its count, its last status text and its time.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("masksynth")


def on_terminal() -> bool:
    return sys.stderr.isatty()


class _Line:
    """tqdm's interface, written as one log line at close."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.postfix, self.started, self.closed = "", time.monotonic(), False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        seconds = time.monotonic() - self.started
        suffix = f", {self.postfix}" if self.postfix else ""
        log.info("%s: %s %s in %.1f s%s", self.desc, count, self.unit, seconds, suffix)

    def __enter__(self) -> _Line:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None, desc: str, unit: str = "it", initial: int = 0, quiet: bool = False):
    """A progress bar (tqdm) on a terminal, else one log line at the end; `quiet`: neither.

    Use it like tqdm: update(n), set_postfix_str(text), close(), or as a context manager.
    """
    if quiet:
        return tqdm(total=total, disable=True)
    if on_terminal():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True)
    return _Line(total, desc, unit, initial)
