"""Domain errors, classified once.

Every failure the library can raise is a :class:`CallEnricherError` carrying:

* ``error_class``: what the caller should do about it
  (:class:`ErrorClass`: retry it, give up, report "not found", or wait for the call to end);
* ``reason``: a stable, kebab-case machine code used in events, metrics, logs and HTTP
  error bodies (``call-not-found``, ``invalid-record``, ``sinch-unavailable``, ...);
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
    reason = "permanent-error"


class InvalidCallIdError(PermanentError):
    """The call ID is empty, too long, or has characters a Sinch call ID never has."""

    reason = "invalid-call-id"


class MalformedMessageError(PermanentError):
    """An input message (SQS body, API body) could not be understood."""

    reason = "malformed-message"
    call_id: str | None = None
    """The message's call ID when it was valid and the rest of the message was not (set by
    the parser), so a failure event can still name its call."""


class InvalidRecordError(PermanentError):
    """Sinch returned a body that is not a valid Get Call record.

    ``details`` lists the problems: ``[{"field": "duration", "problem": "..."}, ...]``.
    """

    reason = "invalid-record"


class SinchRejectedError(PermanentError):
    """Sinch answered 400 or 403 (bad parameters, forbidden)."""

    reason = "sinch-rejected"


class SinchAuthError(PermanentError):
    """Sinch answered 401: key, secret, signature or x-timestamp rejected."""

    reason = "sinch-auth"


class ConfigurationError(PermanentError):
    """Settings or credentials are missing or invalid."""

    reason = "configuration-error"


class EventRejectedError(PermanentError):
    """EventBridge can never accept this entry (rejected as malformed, not JSON)."""

    reason = "event-rejected"


class EventTooLargeError(EventRejectedError):
    """The event is over EventBridge's entry size limit (256 KB)."""

    reason = "event-too-large"


class CallNotFoundError(CallEnricherError):
    """Sinch answered 404: it does not know the call (in the region asked)."""

    error_class = ErrorClass.NOT_FOUND
    reason = "call-not-found"


class CallNotFinalError(CallEnricherError):
    """The call is still ONGOING (or stayed ONGOING past the re-check horizon)."""

    error_class = ErrorClass.NOT_FINAL
    reason = "not-final"
