"""Sinch credentials from AWS Secrets Manager, cached with a max age.

The secret is a JSON object ``{"applicationKey": "...", "applicationSecret": "..."}``.
Powertools Parameters holds it; it is read again once ``SINCH_SECRET_MAX_AGE_SECONDS`` have
passed on the provider's ``clock`` (``time.monotonic``; injectable, so tests cross the max age
without sleeping). A rotated secret is therefore picked up without a redeploy, and the Sinch
client calls the provider with ``force_refresh=True`` once when Sinch answers 401 (the key was
rotated under us).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from call_enricher.errors import AwsUnavailableError, ConfigurationError
from call_enricher.sinch.auth import SinchCredentials

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider


_PROVIDER_MAX_AGE = 10 * 365 * 86400
"""What Powertools is told: its own (wall-clock) expiry never comes first; ``clock`` decides."""


class SecretsManagerCredentials:
    """A thread-safe ``callable(force_refresh) -> SinchCredentials`` backed by Secrets Manager.

    The secret is read again when ``max_age_seconds`` have passed on ``clock`` since the last
    read, or when asked with ``force_refresh=True``.
    """

    def __init__(
        self,
        secret_id: str,
        *,
        max_age_seconds: int = 300,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not secret_id:
            raise ConfigurationError("SINCH_SECRET_ID is not set")
        self._secret_id = secret_id
        self._max_age = max_age_seconds
        self._client = client
        self._clock = clock
        self._read_at: float | None = None
        self._provider: SecretsProvider | None = None
        self._lock = threading.Lock()

    def _get_provider(self) -> SecretsProvider:
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            from call_enricher import aws

            self._provider = SecretsProvider(
                boto3_client=self._client or aws.client("secretsmanager")
            )
        return self._provider

    def prepare(self) -> None:
        """Build the provider and its Secrets Manager client now (INIT), fetching nothing."""
        with self._lock:
            self._get_provider()

    def forget(self) -> None:
        """Drop the cached secret (before a SnapStart snapshot: nothing secret in it)."""
        with self._lock:
            self._read_at = None
            if self._provider is not None:
                self._provider.clear_cache()  # type: ignore[no-untyped-call]

    def __call__(self, force_refresh: bool = False) -> SinchCredentials:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        with self._lock:  # one fetch at a time; worker threads share the cached value
            now = self._clock()
            read_at = self._read_at
            fetch = force_refresh or read_at is None or now - read_at >= self._max_age
            try:
                value = self._get_provider().get(
                    self._secret_id,
                    transform="json",
                    max_age=_PROVIDER_MAX_AGE,
                    force_fetch=fetch,
                )
            except GetParameterError as exc:
                raise AwsUnavailableError(
                    f"could not read the Sinch secret {self._secret_id!r}: {type(exc).__name__}"
                ) from None
            if fetch:
                self._read_at = now
        return credentials_from_secret(value, self._secret_id)


def credentials_from_secret(value: object, secret_id: str = "the Sinch secret") -> SinchCredentials:  # noqa: S107
    """Validate the secret's JSON shape (never echoing its content)."""
    if not isinstance(value, dict):
        raise ConfigurationError(f"{secret_id!r} must be a JSON object")
    key = value.get("applicationKey")
    secret = value.get("applicationSecret")
    if not isinstance(key, str) or not key or not isinstance(secret, str) or not secret:
        raise ConfigurationError(
            f"{secret_id!r} must have non-empty string fields applicationKey and applicationSecret"
        )
    return SinchCredentials(application_key=key, application_secret=secret)
