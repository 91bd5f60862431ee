"""AWS clients: created lazily, cached per process, safe to share between threads.

Only the adapter modules (:mod:`call_enricher.storage`, :mod:`call_enricher.publishing`,
the queue and secrets adapters) use this module; everything else stays free of boto3.

* :func:`client` returns one botocore client per service name, created on first use (so a
  handler that never touches EventBridge never pays for building its client) under a lock,
  from a private :class:`boto3.session.Session` (the default session is not thread-safe to
  create clients from). botocore clients themselves are thread-safe, so the queue handler's
  worker threads share them.
* One :class:`botocore.config.Config` for every client (:func:`client_config`): botocore's
  ``standard`` retry mode (throttling, 5xx and connection errors retried with jittered
  exponential backoff), short connect/read timeouts so a stuck call fails well within the
  Lambda deadline, and a connection pool large enough for the worker thread pool
  (``WORKER_THREADS`` + :data:`POOL_MARGIN`) so threads never queue for a connection.
* botocore, boto3, s3transfer and urllib3 log every request and response at DEBUG (bodies
  included: the Sinch secret, stored records, event entries with full phone numbers). Their
  loggers are pinned to INFO or above here, at import (:func:`pin_wire_loggers`), whatever
  level the root logger has (the template's ``LogLevel=DEBUG`` sets the root to DEBUG).
* Endpoints and region come from the standard environment (``AWS_REGION``,
  ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``), which boto3 honours natively: that
  is how the local stack points the same code at a moto server.

:func:`translate_error` turns a boto3/botocore exception into the domain taxonomy of
:mod:`call_enricher.errors` (see its docstring for the policy).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ParamValidationError,
)

from call_enricher.errors import AwsUnavailableError, CallEnricherError, PermanentError

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_WORKER_THREADS",
    "MAX_ATTEMPTS",
    "POOL_MARGIN",
    "READ_TIMEOUT_SECONDS",
    "THROTTLING_ERROR_CODES",
    "WIRE_LOGGERS",
    "backoff_delay",
    "client",
    "client_config",
    "error_code",
    "forget_credentials_and_connections",
    "pin_wire_loggers",
    "refresh_credentials",
    "reset_clients",
    "translate_error",
]

CONNECT_TIMEOUT_SECONDS = 2.0
"""TCP connect timeout for AWS endpoints (in-region endpoints connect in milliseconds)."""

READ_TIMEOUT_SECONDS = 5.0
"""Socket read timeout: DynamoDB/EventBridge/SQS answer in milliseconds when healthy."""

MAX_ATTEMPTS = 3
"""Total attempts per API call in botocore's standard retry mode (first try included)."""

POOL_MARGIN = 4
"""Connections kept beyond the worker threads (the handler's own calls, re-check sends)."""

THROTTLING_ERROR_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
    }
)
"""AWS error codes that mean "slow down and retry"."""

_PERMANENT_ERROR_CODES = frozenset({"ValidationException", "SerializationException"})
"""Codes that describe *this request* as invalid: resending the same request cannot help."""

DEFAULT_WORKER_THREADS = 10
"""``WORKER_THREADS`` when unset (the default of :class:`call_enricher.settings.Settings`)."""

WIRE_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")
"""Loggers that dump requests and responses (bodies included) at DEBUG."""


def pin_wire_loggers() -> None:
    """Keep :data:`WIRE_LOGGERS` at INFO or above, whatever the root logger's level.

    A logger at NOTSET inherits the root's level, so a DEBUG root (``LogLevel=DEBUG``) would
    make botocore log the Secrets Manager answer and every DynamoDB item and PutEvents
    entry. A level already above INFO is kept.
    """
    for name in WIRE_LOGGERS:
        wire = logging.getLogger(name)
        if wire.level < logging.INFO:  # NOTSET (inherits the root) or DEBUG
            wire.setLevel(logging.INFO)


pin_wire_loggers()

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_session: Any = None
_config: Config | None = None


def client_config(worker_threads: int | None = None) -> Config:
    """The botocore configuration shared by every client.

    ``worker_threads`` defaults to ``WORKER_THREADS`` as validated by
    :mod:`call_enricher.settings`. When the variable is not set (the callback receiver) the
    settings model, and with it pydantic, is not imported: its default is
    :data:`DEFAULT_WORKER_THREADS` (a unit test keeps the two equal).
    """
    if worker_threads is None:
        if "WORKER_THREADS" in os.environ:
            from call_enricher.settings import get_settings

            worker_threads = get_settings().worker_threads
        else:
            worker_threads = DEFAULT_WORKER_THREADS
    return Config(
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        max_pool_connections=worker_threads + POOL_MARGIN,
        tcp_keepalive=True,
    )


class LazyClient:
    """An adapter's ``client`` attribute: the instance's own ``_client`` (a test's stand-in,
    or one given to the constructor), else the process-wide :func:`client` of ``service``,
    taken on first use and kept in ``_client``."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        if instance._client is None:
            instance._client = client(self.service)
        return instance._client


def client(service: str) -> Any:
    """The process-wide client for ``service`` (``"dynamodb"``, ``"events"``, ...).

    Created on first use and cached; concurrent first calls create it once.
    """
    cached = _clients.get(service)
    if cached is not None:
        return cached
    with _lock:
        cached = _clients.get(service)
        if cached is None:
            global _session, _config
            if _session is None:
                import boto3.session

                _session = boto3.session.Session()
            if _config is None:
                _config = client_config()
            cached = _session.client(service, config=_config)
            _clients[service] = cached
        return cached


def reset_clients() -> None:
    """Forget the cached session, configuration and clients (tests; changed environment)."""
    global _session, _config
    with _lock:
        _clients.clear()
        _session = None
        _config = None


def forget_credentials_and_connections() -> None:
    """Before a SnapStart snapshot: close every client's pooled connections and drop the
    AWS credentials the session resolved (the clients stay; :func:`refresh_credentials`
    gives them fresh credentials after the restore)."""
    with _lock:
        for cached in _clients.values():
            cached._endpoint.http_session.close()  # pools emptied, new connections on use
            cached._request_signer._credentials = None
        if _session is not None:
            _session._session._credentials = None


def refresh_credentials() -> None:
    """After a SnapStart restore: resolve credentials again (the environment's provider
    chain) and hand them to every cached client."""
    with _lock:
        if _session is None:
            return
        core = _session._session
        core._credentials = None
        credentials = core.get_credentials()
        for cached in _clients.values():
            cached._request_signer._credentials = credentials


BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 2.0


def backoff_delay(attempt: int, random: Callable[[], float]) -> float:
    """Full-jitter exponential backoff before resend ``attempt`` (1 = the first resend) of
    an AWS batch call's leftovers: ``random() * min(cap, base * 2**attempt)``."""
    return float(random() * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a :class:`ClientError` (else the exception's class name)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "Unknown")
    return type(exc).__name__


def translate_error(exc: Exception, operation: str) -> CallEnricherError:
    """Classify a boto3/botocore failure of ``operation`` (e.g. ``"DynamoDB UpdateItem"``).

    Policy:

    * throttling codes, HTTP 5xx, and every connection / timeout error of botocore ->
      :class:`AwsUnavailableError` (transient: the message is retried);
    * ``ValidationException`` / ``SerializationException`` (the request itself is invalid,
      e.g. an item over DynamoDB's 400 KB) and botocore's client-side parameter validation ->
      :class:`PermanentError`: the same request can never succeed;
    * anything else (``AccessDeniedException``, ``ResourceNotFoundException``, expired or
      missing credentials, unknown codes) -> :class:`AwsUnavailableError`. These are
      deployment faults, not faults of the record: failing transiently sends the message
      to the DLQ after ``maxReceiveCount``, from where it can be redriven once the
      deployment is fixed, instead of being discarded as permanently failed.

    The message carries the operation, the error code and AWS's short message (which
    never echoes item values), capped in length.
    """
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        aws_message = str(exc.response.get("Error", {}).get("Message") or "")[:200]
        text = f"{operation} failed: {code}" + (f" ({aws_message})" if aws_message else "")
        if code in THROTTLING_ERROR_CODES or (isinstance(status, int) and status >= 500):
            return AwsUnavailableError(text, http_status=status)
        if code in _PERMANENT_ERROR_CODES:
            return PermanentError(text, http_status=status)
        return AwsUnavailableError(text, http_status=status)
    if isinstance(exc, ParamValidationError):
        return PermanentError(f"{operation} failed: invalid request parameters")
    if isinstance(exc, BotoCoreError):
        return AwsUnavailableError(f"{operation} failed: {type(exc).__name__}")
    return AwsUnavailableError(f"{operation} failed: {type(exc).__name__}")
