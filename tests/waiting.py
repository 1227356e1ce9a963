"""Waiting on a condition with a deadline: what tests do instead of sleeping for a time that assumes speed."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(pred: Callable[[], bool], what: str = "condition", timeout: float = 30.0,
             poll: Callable[[], object] | None = None, interval: float = 0.005) -> None:
    """Return once ``pred()`` is true; call ``poll()`` before each check (e.g. a driver tick); raise
    AssertionError naming ``what`` after ``timeout`` seconds (generous: a busy 2-core machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll is not None:
            poll()
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
