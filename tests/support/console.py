"""A console for tests that run a command's threads: written to by them, read by the test."""

from __future__ import annotations

import io
import threading


class Console(io.StringIO):
    """A thread-safe text sink that can be waited on (:meth:`text` while threads write)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return super().write(text)

    def text(self) -> str:
        with self._lock:
            return self.getvalue()
