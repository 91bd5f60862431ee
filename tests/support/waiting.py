"""Polling for a condition in tests that run servers: generous timeouts, no timing asserted."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Call ``condition`` every ``interval`` seconds until it is true or ``timeout`` passes;
    its last answer."""
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        if condition():
            return True
        time.sleep(interval)
    return condition()
