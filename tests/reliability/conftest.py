"""Fixtures of the reliability suite: the real queue handler over moto and the fake Sinch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.queue_harness import Harness, queue_harness


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with queue_harness(monkeypatch) as started:
        yield started


@pytest.fixture
def harness_no_freshness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """Idempotency window off: every delivery asks Sinch and goes through the conditional write
    (the worst case for duplicates: nothing is short-circuited by a fresh stored FINAL)."""
    with queue_harness(monkeypatch, FINAL_FRESHNESS_SECONDS="0") as started:
        yield started
