"""Run code in a fresh interpreter: what a cold start imports is only visible there."""

from __future__ import annotations

import subprocess
import sys


def fresh_stdout(code: str) -> str:
    """The stripped stdout of ``code`` run by this interpreter in a new process.

    Raises :class:`subprocess.CalledProcessError` when the code fails (its assertions too)."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and the tests' fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()
