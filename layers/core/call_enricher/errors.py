"""Domain errors, classified once.

Every failure the library can raise is a :class:`CallEnricherError` carrying:

* ``error_class``: what the caller should do about it
  (:class:`ErrorClass`: retry it, give up, report "not found", or wait for the call to end);
* ``reason``: a stable, kebab-case machine code used in events, metrics, logs and HTTP
  error bodies (``call-not-found``, ``invalid-record``, ``sinch-unavailable``, ...); the
  reasons a stored failure state can carry are :class:`FailureReason`, the one list the
  event schemas and docs/events.md follow;
* optional Sinch diagnostics (``http_status``, ``sinch_error_code``, ``sinch_reference``).

Handlers map ``error_class`` to their trigger's answer (SQS batch item failure, HTTP
status, CLI exit code) and nowhere else. Messages never contain credentials.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorClass(StrEnum):
    """What a caller should do with a failure."""

    TRANSIENT = "transient"  # retry later (SQS redelivery, HTTP 502/504)
    PERMANENT = "permanent"  # retrying cannot help (bad input, invalid record, auth/config)
    NOT_FOUND = "not-found"  # Sinch does not know the call (permanent, but reported apart)
    NOT_FINAL = "not-final"  # the call is still ONGOING: check again later


class FailureReason(StrEnum):
    """The reasons a stored failure state, and so a ``Call Enrichment Failed`` event, can
    carry: the reason of every error whose failure is stored (not retried), plus
    ``not-final-in-time``. The error classes below take their ``reason`` from here; the
    event schema's known codes and docs/events.md's reason table are this list, in this
    order (tests/unit and tests/docs check both). An open set for consumers: a minor version
    may add a reason.

    Transient errors and the ones an operator must fix (``sinch-auth``,
    ``configuration-error``, a Sinch 403) are retried, then the DLQ: never a failure state.
    """

    CALL_NOT_FOUND = "call-not-found"
    INVALID_RECORD = "invalid-record"
    INVALID_CALL_ID = "invalid-call-id"
    MALFORMED_MESSAGE = "malformed-message"
    SINCH_REJECTED = "sinch-rejected"
    PERMANENT_ERROR = "permanent-error"
    NOT_FINAL_IN_TIME = "not-final-in-time"
    """Still ONGOING ``RECHECK_MAX_AGE_SECONDS`` after the call was first seen (the reason
    the service stores instead of :class:`CallNotFinalError`'s)."""
    EVENT_TOO_LARGE = "event-too-large"
    EVENT_REJECTED = "event-rejected"


class CallEnricherError(Exception):
    """Base of every domain error. ``str(err)`` is a one-line, secret-free message."""

    error_class: ClassVar[ErrorClass] = ErrorClass.PERMANENT
    reason: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        sinch_error_code: int | None = None,
        sinch_reference: str | None = None,
        retry_after: float | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.sinch_error_code = sinch_error_code
        self.sinch_reference = sinch_reference
        self.retry_after = retry_after
        self.details = details

    @property
    def retryable(self) -> bool:
        return self.error_class is ErrorClass.TRANSIENT

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description for events, logs and error bodies."""
        optional = {
            "httpStatus": self.http_status,
            "sinchErrorCode": self.sinch_error_code,
            "sinchReference": self.sinch_reference,
            "details": self.details,
        }
        return {
            "reason": self.reason,
            "errorClass": self.error_class.value,
            "message": self.message,
            **{key: value for key, value in optional.items() if value is not None},
        }


# --- transient ---------------------------------------------------------------------------


class TransientError(CallEnricherError):
    error_class = ErrorClass.TRANSIENT
    reason = "transient-error"


class SinchUnavailableError(TransientError):
    """Sinch answered 5xx, or the connection failed."""

    reason = "sinch-unavailable"


class SinchRateLimitedError(TransientError):
    """Sinch answered 429 (capacity or velocity exceeded)."""

    reason = "sinch-rate-limited"


class SinchTimeoutError(TransientError):
    """Sinch did not answer within the timeouts."""

    reason = "sinch-timeout"


class SinchGarbledResponseError(TransientError):
    """Sinch answered 2xx with a body that is not JSON at all (empty, cut short, a proxy's
    HTML page): the transport failed, not the record, so it is asked again. Valid JSON that
    fails validation is :class:`InvalidRecordError` (permanent)."""

    reason = "sinch-garbled-response"


class DeadlineExceededError(TransientError):
    """The caller's deadline (e.g. the Lambda's remaining time) would be exceeded."""

    reason = "deadline-exceeded"


class AwsUnavailableError(TransientError):
    """DynamoDB, EventBridge, SQS or Secrets Manager failed in a retryable way."""

    reason = "aws-unavailable"


# --- permanent ---------------------------------------------------------------------------


class PermanentError(CallEnricherError):
    error_class = ErrorClass.PERMANENT
    reason = FailureReason.PERMANENT_ERROR.value


class InvalidCallIdError(PermanentError):
    """The call ID is empty, too long, or has characters a Sinch call ID never has."""

    reason = FailureReason.INVALID_CALL_ID.value


class MalformedMessageError(PermanentError):
    """An input message (SQS body, API body) could not be understood."""

    reason = FailureReason.MALFORMED_MESSAGE.value
    call_id: str | None = None
    """The message's call ID when it was valid and the rest of the message was not (set by
    the parser), so a failure event can still name its call."""


class InvalidRecordError(PermanentError):
    """Sinch returned a body that is not a valid Get Call record.

    ``details`` lists the problems: ``[{"field": "duration", "problem": "..."}, ...]``.
    """

    reason = FailureReason.INVALID_RECORD.value


class SinchRejectedError(PermanentError):
    """Sinch answered 400 or 403 (bad parameters, forbidden)."""

    reason = FailureReason.SINCH_REJECTED.value


class SinchAuthError(PermanentError):
    """Sinch answered 401: key, secret, signature or x-timestamp rejected."""

    reason = "sinch-auth"


class ConfigurationError(PermanentError):
    """Settings or credentials are missing or invalid."""

    reason = "configuration-error"


class EventRejectedError(PermanentError):
    """EventBridge can never accept this entry (rejected as malformed, not JSON)."""

    reason = FailureReason.EVENT_REJECTED.value


class EventTooLargeError(EventRejectedError):
    """The event is over EventBridge's entry size limit (256 KB)."""

    reason = FailureReason.EVENT_TOO_LARGE.value


class CallNotFoundError(CallEnricherError):
    """Sinch answered 404: it does not know the call (in the region asked)."""

    error_class = ErrorClass.NOT_FOUND
    reason = FailureReason.CALL_NOT_FOUND.value


class CallNotFinalError(CallEnricherError):
    """The call is still ONGOING (or stayed ONGOING past the re-check horizon)."""

    error_class = ErrorClass.NOT_FINAL
    reason = "not-final"
