"""Sinch credentials: rotation without a redeploy, and one forced refresh after a 401.

Through the real queue handler (in-process moto Secrets Manager, the fake Sinch checking every
signature). ``SINCH_SECRET_MAX_AGE_SECONDS`` is 1 here and the credentials provider the
handler builds runs on a fake clock: the tests cross the cache's expiry by advancing it, never
by sleeping (a slow machine cannot make the cache expire early, nor a fast one late).
Secrets Manager reads are counted on the function's own client.
(tests/integration/test_queue_handler.py covers the plain "401 -> refresh -> success" path.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from call_enricher import aws
from call_enricher import secrets as secrets_module
from call_enricher.sinch.auth import SinchCredentials
from tests.support.queue_harness import CREDENTIALS, SAMPLES, Harness, call_id_of, queue_harness

MAX_AGE_SECONDS = 1
ROTATED = SinchCredentials(
    application_key="rotated-key-0002",
    application_secret="cm90YXRlZC1zZWNyZXQtMi1mb3ItdGVzdHMtb25seQ==",
)
IDS = [call_id_of(record) for record in SAMPLES.values()]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The clock of every SecretsManagerCredentials the handler builds from now on."""
    fake = FakeClock()
    real = secrets_module.SecretsManagerCredentials

    class OnFakeClock(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, clock=fake, **kwargs)

    monkeypatch.setattr(secrets_module, "SecretsManagerCredentials", OnFakeClock)
    return fake


@pytest.fixture
def short_cache(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> Iterator[tuple[Harness, list[str]]]:
    """The harness with a 1-second secret cache on ``clock``, and the secret reads it makes."""
    with queue_harness(monkeypatch, SINCH_SECRET_MAX_AGE_SECONDS=str(MAX_AGE_SECONDS)) as harness:
        secrets = aws.client("secretsmanager")
        original = secrets.get_secret_value
        reads: list[str] = []

        def counted(**kwargs: Any) -> Any:
            reads.append(kwargs["SecretId"])
            return original(**kwargs)

        monkeypatch.setattr(secrets, "get_secret_value", counted)
        yield harness, reads


def keys_used(harness: Harness) -> list[str]:
    return [
        (r.header("Authorization") or "").split(" ", 1)[1].split(":", 1)[0]
        for r in harness.sinch.requests
    ]


def test_a_rotated_secret_is_used_once_the_cache_expires(
    short_cache: tuple[Harness, list[str]], clock: FakeClock
) -> None:
    harness, reads = short_cache
    # Given a warm function that read the secret once
    assert harness.invoke(IDS[0]) == {"batchItemFailures": []}
    assert len(reads) == 1
    # When the secret is rotated in Secrets Manager, Sinch accepting the old key meanwhile
    harness.stack.rotate_secret(ROTATED)
    assert harness.invoke(IDS[1]) == {"batchItemFailures": []}
    # Then, inside the max age (a moment before it ends), the cached key is still used
    clock.advance(MAX_AGE_SECONDS - 0.25)
    assert harness.invoke(IDS[3]) == {"batchItemFailures": []}
    assert keys_used(harness) == [CREDENTIALS.application_key] * 3
    assert len(reads) == 1
    # When the max age has passed and Sinch only accepts the new key
    clock.advance(0.25)
    harness.sinch.credentials = ROTATED
    assert harness.invoke(IDS[2]) == {"batchItemFailures": []}
    # Then the new key was read and used straight away: no 401 was needed, no redeploy
    assert keys_used(harness)[-1] == ROTATED.application_key
    assert [r.auth_check.value for r in harness.sinch.requests if r.auth_check] == ["ok"] * 4
    assert len(reads) == 2


def test_a_401_forces_exactly_one_refresh_before_the_record_fails(
    short_cache: tuple[Harness, list[str]],
) -> None:
    harness, reads = short_cache
    assert harness.invoke(IDS[0]) == {"batchItemFailures": []}
    # Given Sinch rejects the key, and the stored secret is still the old one
    harness.sinch.credentials = ROTATED
    # When a record is handled
    with pytest.raises(BatchProcessingError):
        harness.invoke(IDS[1])
    # Then the 401 forced one secret read, the request was signed again once, then the
    # record failed for retry (an operator must fix the secret: the DLQ keeps the message)
    checks = [r.auth_check.value for r in harness.sinch.requests if r.auth_check]
    assert checks == ["ok", "wrong-key", "wrong-key"]
    assert len(reads) == 2
    assert harness.events() != []  # the first call's event
    item = harness.stack.item(IDS[1])  # no record; the failure is noted for `ops dlq list`
    assert item is not None
    assert (item["state"], item["lastError"]["reason"]) == ("retrying", "sinch-auth")
    assert "record" not in item
    # When the secret is then fixed in Secrets Manager, the redelivery succeeds
    harness.stack.rotate_secret(ROTATED)
    assert harness.invoke(IDS[1]) == {"batchItemFailures": []}
    assert [r.auth_check.value for r in harness.sinch.requests][-1] == "ok"
