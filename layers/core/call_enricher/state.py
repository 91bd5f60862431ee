"""A call's fate as the calls table holds it: the stored item and its failure state.

Pure models (no AWS): :class:`StoredCall` is the item (the committed ``stored-call-item``
schema), :class:`Failure` the failure state it may carry. :mod:`call_enricher.storage`
reads and writes them; :mod:`call_enricher.events` turns a change of them into events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from call_enricher.errors import CallEnricherError
from call_enricher.redact import safe_raw_call_id, safe_text

__all__ = [
    "FINAL",
    "MESSAGE_FAILURE_TTL_SECONDS",
    "MESSAGE_KEY_PREFIX",
    "STORED_ITEM_SCHEMA_VERSION",
    "Failure",
    "RetryTrace",
    "StoredCall",
    "failure_from_error",
    "message_key",
    "search_keys",
]

STORED_ITEM_SCHEMA_VERSION = "2.0.0"
"""Version of the item layout (``schemaVersion``). 2.0.0: failure states and the stream
outbox (1.x had ``publishedVersion``, now ignored when read)."""

MESSAGE_FAILURE_TTL_SECONDS = 86_400
"""How long the failure state of a message without a valid call ID is kept."""

MESSAGE_KEY_PREFIX = "msg:"
FINAL = "FINAL"


class _Item(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class Failure(_Item):
    """A call's (or a message's) failure state, as stored in the item's ``failure`` map."""

    reason: Annotated[str, Field(description="Stable kebab-case reason code.")]
    error_class: Annotated[
        str, Field(alias="errorClass", description="permanent, not-found or not-final.")
    ]
    message: Annotated[str, Field(description="Secret-free explanation (masked).")]
    call_id: Annotated[
        str | None,
        Field(alias="callId", description="The call ID; null for a message without one."),
    ] = None
    raw_call_id: Annotated[
        str | None,
        Field(alias="rawCallId", description="Masked prefix of what the message carried."),
    ] = None
    sinch_error_code: Annotated[int | None, Field(alias="sinchErrorCode")] = None
    sinch_reference: Annotated[str | None, Field(alias="sinchReference")] = None
    http_status: Annotated[int | None, Field(alias="httpStatus")] = None
    attempts: Annotated[int | None, Field(ge=0, description="Sinch attempts.")] = None
    context: Annotated[dict[str, Any] | None, Field(description="The producer's context.")] = None
    entry_path: Annotated[str | None, Field(alias="entryPath")] = None
    source_id: Annotated[
        str | None, Field(alias="sourceId", description="The message or request ID.")
    ] = None
    failed_at: Annotated[AwareDatetime, Field(alias="failedAt")]
    fingerprint: Annotated[
        str,
        Field(description="Identity of the failure: the same outcome has the same value."),
    ]


class RetryTrace(_Item):
    """The last transient error of a call given back to SQS for retry (``lastError``)."""

    reason: Annotated[str, Field(description="e.g. sinch-unavailable, aws-unavailable.")]
    error_class: Annotated[str, Field(alias="errorClass")]
    message: Annotated[str, Field(description="Secret-free explanation (masked).")]
    http_status: Annotated[int | None, Field(alias="httpStatus")] = None
    sinch_error_code: Annotated[int | None, Field(alias="sinchErrorCode")] = None
    attempt: Annotated[int, Field(ge=1, description="SQS receive count of the message.")] = 1
    at: Annotated[AwareDatetime, Field(description="When it failed (UTC).")]
    source_id: Annotated[str | None, Field(alias="sourceId")] = None

    def describe(self) -> str:
        """``retrying: sinch-unavailable, attempt 3``."""
        return f"retrying: {self.reason}, attempt {self.attempt}"


class StoredCall(_Item):
    """The calls table item (the committed ``stored-call-item`` schema): a call's fate."""

    call_id: Annotated[str, Field(alias="callId", description="Partition key: the call ID.")]
    state: Annotated[
        Literal["enriched", "failed", "retrying"],
        Field(
            description="enriched: the last outcome stored a version; failed: see failure;"
            " retrying: nothing stored yet, the last attempt failed transiently (lastError)."
        ),
    ] = "enriched"
    version: Annotated[
        int | None, Field(ge=1, description="Stored version: 1, then +1 per change.")
    ] = None
    fingerprint: Annotated[str | None, Field(description="Fingerprint of the record.")] = None
    status: Annotated[str | None, Field(description="Call status of the stored record.")] = None
    previous_status: Annotated[
        str | None,
        Field(alias="previousStatus", description="Status of the previous version (null: v1)."),
    ] = None
    record: Annotated[
        dict[str, Any] | None,
        Field(description="The enriched record's public JSON (see the call-enriched schema)."),
    ] = None
    context: Annotated[
        dict[str, Any] | None, Field(description="Context of the request that stored it.")
    ] = None
    entry_path: Annotated[str | None, Field(alias="entryPath")] = None
    created_at: Annotated[
        AwareDatetime | None, Field(alias="createdAt", description="First write (UTC).")
    ] = None
    updated_at: Annotated[
        AwareDatetime | None,
        Field(alias="updatedAt", description="When this version was stored (UTC)."),
    ] = None
    failure: Annotated[
        Failure | None, Field(description="The failure state; null while enriched.")
    ] = None
    last_error: Annotated[
        RetryTrace | None,
        Field(
            alias="lastError",
            description="The last transient error, while the message is retried (then the"
            " DLQ): why a message is there. Removed by the next version or failure.",
        ),
    ] = None
    schema_version: Annotated[str, Field(alias="schemaVersion")] = STORED_ITEM_SCHEMA_VERSION
    expires_at: Annotated[
        int | None, Field(alias="expiresAt", description="DynamoDB TTL, epoch seconds.")
    ] = None
    search_day: Annotated[
        str | None,
        Field(
            alias="searchDay",
            description="Partition key of the ByDay index (GET /calls?day=): the record's UTC"
            " start day, else the day the call failed (YYYY-MM-DD). Absent while only"
            " retrying, and for a message without a call ID.",
        ),
    ] = None
    search_sort: Annotated[
        str | None,
        Field(
            alias="searchSort",
            description="Sort key of the ByDay index: the same instant (ISO 8601 UTC, in"
            " microseconds) then '#' and the call ID, so a day reads in time order.",
        ),
    ] = None

    @property
    def is_final(self) -> bool:
        return self.status == FINAL


def retry_trace(
    error: CallEnricherError, *, at: datetime, attempt: int, source_id: str | None = None
) -> RetryTrace:
    """The trace a transient ``error`` leaves on the call's item."""
    return RetryTrace(
        reason=error.reason,
        error_class=error.error_class.value,
        message=safe_text(error.message, 300),
        http_status=error.http_status,
        sinch_error_code=error.sinch_error_code,
        attempt=max(1, attempt),
        at=at.astimezone(UTC),
        source_id=source_id,
    )


def search_keys(when: datetime, call_id: str) -> tuple[str, str]:
    """``(searchDay, searchSort)`` of a call whose day is set by ``when`` (its start, or when
    it failed): the UTC date, and the UTC instant then the call ID."""
    utc = when.astimezone(UTC)
    return utc.date().isoformat(), f"{utc.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z#{call_id}"


def message_key(message_id: str) -> str:
    """The key of a message's failure state when the message had no valid call ID."""
    return MESSAGE_KEY_PREFIX + message_id


def failure_from_error(
    error: CallEnricherError,
    *,
    failed_at: datetime,
    call_id: str | None,
    reason: str | None = None,
    raw_call_id: str | None = None,
    attempts: int | None = None,
    context: Mapping[str, Any] | None = None,
    entry_path: str | None = None,
    source_id: str | None = None,
) -> Failure:
    """The failure state of ``error``: texts masked, identity fingerprinted.

    The fingerprint covers what the outcome *is* (reason, class, Sinch's code, the HTTP
    status, the call), not when or how often: the same failure again writes nothing.
    """
    final_reason = reason or error.reason
    parts = (call_id, raw_call_id, final_reason, error.error_class.value, error.http_status)
    identity = "|".join(map(str, (*parts, error.sinch_error_code)))
    return Failure(
        reason=final_reason,
        error_class=error.error_class.value,
        message=safe_text(error.message),
        call_id=call_id,
        raw_call_id=safe_raw_call_id(raw_call_id) if call_id is None else None,
        sinch_error_code=error.sinch_error_code,
        sinch_reference=error.sinch_reference,
        http_status=error.http_status,
        attempts=attempts,
        context=dict(context) if context is not None else None,
        entry_path=entry_path,
        source_id=source_id,
        failed_at=failed_at.astimezone(UTC),
        fingerprint=hashlib.sha256(identity.encode("utf-8", "backslashreplace")).hexdigest()[:32],
    )
