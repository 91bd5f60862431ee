"""The EventBridge event details we publish: a public, versioned contract.

Two detail types, both with source ``EVENT_SOURCE`` (default ``call-enricher``):

``Call Enriched`` (:class:`CallEnrichedDetail`)
    One event per stored version of a call's enriched record: the record itself, its
    ``version`` (1, 2, ...), and the status of the version before it (``previousStatus``).
    ``eventId`` is ``{callId}:v{version}``: deterministic, so the rare duplicate of
    at-least-once delivery (the stream publisher retried after ``PutEvents``) carries the
    same ID and consumers can dedupe on it. An ONGOING call yields ONGOING versions, then a
    FINAL one; a FINAL version is never followed by an ONGOING one.

``Call Enrichment Failed`` (:class:`CallEnrichmentFailedDetail`)
    A call (or a message) that cannot be enriched: a ``reason`` of
    :class:`~call_enricher.errors.FailureReason` (``call-not-found``, ``invalid-record``,
    ``invalid-call-id``, ``malformed-message``, ...; ``not-final-in-time``: still ONGOING past
    the re-check horizon; ``event-too-large`` / ``event-rejected``: the record is stored, but
    its ``Call Enriched`` event can never be accepted by EventBridge), with Sinch's error code
    and reference when Sinch answered. One event per stored failure state: a redelivered message
    that fails the same way stores nothing new and announces nothing. ``eventId`` is
    derived from the call ID (or ``unknown``), the reason and the stored state change, so a
    replayed stream record yields the same ID.

``Spend Threshold Crossed`` (:class:`SpendThresholdCrossedDetail`)
    A daily spend or call-count threshold of the risk policy reached by one key (``total``,
    a destination ``country``, or a called ``number``'s keyed hash) on one UTC day, with the
    key's figures when it was seen. Published once per key, day and threshold by the spend
    watch (:mod:`call_enricher.spend`, only when ``SPEND_TABLE_NAME`` is set); ``eventId``
    is ``spend:{day}:{keyKind}:{key}:{threshold}``.

The first two are built here from the calls table's old and new images
(:func:`events_for_change`), the third from the spend table's figures, all by the stream
publisher only: the table is the outbox.

Versioning: ``schemaVersion`` is semantic. Minor versions only add optional fields, and
consumers must ignore fields they do not know (the schemas allow them); a major version
changes the detail type's meaning and is announced. The JSON Schemas in ``events/schemas/``
are generated from these models by ``python -m call_enricher_tools.schemas`` and checked in CI.

Privacy: details carry what the enriched record carries; the failure event's free text
(``message``, ``rawCallId``) has standalone phone-number-like digit runs masked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, ValidationError

from call_enricher.enrichment import EnrichedCall
from call_enricher.errors import ErrorClass, FailureReason, PermanentError
from call_enricher.model import format_decimal, format_utc
from call_enricher.redact import MAX_TEXT_CHARS, RAW_CALL_ID_CHARS
from call_enricher.state import MESSAGE_KEY_PREFIX, Failure, StoredCall

if TYPE_CHECKING:
    from call_enricher.spend import Crossing

__all__ = [
    "DETAIL_TYPE_CALL_ENRICHED",
    "DETAIL_TYPE_CALL_ENRICHMENT_FAILED",
    "DETAIL_TYPE_SPEND_THRESHOLD_CROSSED",
    "EVENT_SCHEMA_VERSION",
    "REASON_NOT_FINAL_IN_TIME",
    "CallEnrichedDetail",
    "CallEnrichmentFailedDetail",
    "OutgoingEvent",
    "SpendThresholdCrossedDetail",
    "call_enriched_event",
    "call_enriched_event_id",
    "call_enrichment_failed_event",
    "call_enrichment_failed_event_id",
    "events_for_change",
    "spend_threshold_crossed_event",
]

DETAIL_TYPE_CALL_ENRICHED = "Call Enriched"
DETAIL_TYPE_CALL_ENRICHMENT_FAILED = "Call Enrichment Failed"
DETAIL_TYPE_SPEND_THRESHOLD_CROSSED = "Spend Threshold Crossed"

EVENT_SCHEMA_VERSION = "1.0.0"
"""Version of every detail (semantic; see the module docstring)."""

REASON_NOT_FINAL_IN_TIME = FailureReason.NOT_FINAL_IN_TIME.value
"""Failure reason: the call was still ONGOING after ``RECHECK_MAX_AGE_SECONDS``."""

MAX_MESSAGE_CHARS = MAX_TEXT_CHARS

_SCHEMA_VERSION_PATTERN = r"^1\.\d+\.\d+$"
_REASON_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
_KNOWN_REASONS = [reason.value for reason in FailureReason]
_REASON_DESCRIPTION = (
    "Stable kebab-case reason code: "
    + ", ".join(f"`{reason}`" for reason in _KNOWN_REASONS)
    + " (`event-too-large`: the record is stored but its `Call Enriched` event is over"
    " EventBridge's 256 KB). Errors an operator must fix (`sinch-auth`, `configuration-error`)"
    " and transient ones are retried, then the DLQ: never announced as failures. Open set:"
    " consumers must accept codes they do not know (the schema lists the known ones and"
    " accepts any other kebab-case code)."
)
# The known codes, machine-readable, without closing the set: a reason added by a minor
# version still validates (Draft 4 compatible: no `examples`, no boolean schemas).
_REASON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"enum": _KNOWN_REASONS, "description": "The reasons of this schema version."},
        {"description": "A reason added by a later minor version: accept it."},
    ]
}


@dataclass(frozen=True)
class OutgoingEvent:
    """One event to publish.

    Attributes:
        key: the caller's correlation key (e.g. a stream record's sequence number); the
            publisher's results are per key.
        detail_type: ``DetailType`` (:data:`DETAIL_TYPE_CALL_ENRICHED`, ...).
        detail: the event detail, a JSON-ready dict (sent as compact JSON).
        resources: optional ``Resources`` (ARNs) of the entry.
    """

    key: str
    detail_type: str
    detail: dict[str, Any]
    resources: tuple[str, ...] = ()


_CONTEXT_DESCRIPTION = (
    "The producer's free-form correlation object from the request (SQS message `context`,"
    " API body `context`), copied unchanged; null when none was given."
)
_ENTRY_PATH_DESCRIPTION = (
    "How the request entered the service: `queue` (SQS producer), `api` (HTTP API),"
    " `callback` (Sinch callback), `recheck` (scheduled re-check of an ONGOING call), `cli`."
    " Open set: consumers must accept other values."
)


class _Detail(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        populate_by_name=True,
        extra="ignore",
        # Every key is always present in a published detail (null when empty): say so.
        json_schema_serialization_defaults_required=True,
        field_title_generator=lambda name, info: info.alias or name,
    )


class CallEnrichedDetail(_Detail):
    """Detail of ``Call Enriched``: one stored version of a call's enriched record."""

    schema_version: Annotated[
        str,
        Field(
            alias="schemaVersion",
            pattern=_SCHEMA_VERSION_PATTERN,
            description="Semantic version of this detail's schema (1.x.y).",
            examples=[EVENT_SCHEMA_VERSION],
        ),
    ] = EVENT_SCHEMA_VERSION
    event_id: Annotated[
        str,
        Field(
            alias="eventId",
            min_length=1,
            description=(
                "Deterministic ID `{callId}:v{version}`: the same stored version always has"
                " the same ID. Dedupe on it (delivery is at least once)."
            ),
            examples=["4398599d1ba84ef3bde0a82dfb61abed:v2"],
        ),
    ]
    call_id: Annotated[
        str,
        Field(
            alias="callId",
            min_length=1,
            description="Sinch call ID.",
            examples=["4398599d1ba84ef3bde0a82dfb61abed"],
        ),
    ]
    version: Annotated[
        int,
        Field(
            ge=1,
            description=(
                "Version of the stored record: 1 for the first, +1 each time the record"
                " changed. Versions of a call are consecutive; consumers may skip older ones."
            ),
        ),
    ]
    status: Annotated[
        str,
        Field(
            description=(
                "Call status of this version: `ONGOING` (will change) or `FINAL` (Sinch's"
                " final record; a later FINAL version is a correction by Sinch)."
            ),
            examples=["FINAL", "ONGOING"],
        ),
    ]
    previous_status: Annotated[
        str | None,
        Field(
            alias="previousStatus",
            description="Status of the previous version; null for version 1.",
            examples=[None, "ONGOING"],
        ),
    ] = None
    stored_at: Annotated[
        AwareDatetime,
        Field(alias="storedAt", description="When this version was stored (ISO 8601, UTC)."),
    ]
    record: Annotated[
        EnrichedCall,
        Field(
            description=(
                "The enriched call record (its own `schemaVersion` versions its content):"
                " parties, outcome, time, money, custom data, provenance, warnings."
            )
        ),
    ]
    context: Annotated[dict[str, Any] | None, Field(description=_CONTEXT_DESCRIPTION)] = None
    entry_path: Annotated[
        str | None, Field(alias="entryPath", description=_ENTRY_PATH_DESCRIPTION)
    ] = None


class CallEnrichmentFailedDetail(_Detail):
    """Detail of ``Call Enrichment Failed``: a call or message that could not be enriched."""

    schema_version: Annotated[
        str,
        Field(
            alias="schemaVersion",
            pattern=_SCHEMA_VERSION_PATTERN,
            description="Semantic version of this detail's schema (1.x.y).",
            examples=[EVENT_SCHEMA_VERSION],
        ),
    ] = EVENT_SCHEMA_VERSION
    event_id: Annotated[
        str,
        Field(
            alias="eventId",
            min_length=1,
            description=(
                "Deterministic ID `{callId or 'unknown'}:failed:{reason}:{digest}`, the digest"
                " derived from the stored failure state: a redelivered or replayed announcement"
                " of the same failure has the same ID."
            ),
            examples=["4398599d1ba84ef3bde0a82dfb61abed:failed:call-not-found:0f1e2d3c4b5a6978"],
        ),
    ]
    call_id: Annotated[
        str | None,
        Field(
            alias="callId",
            description="Sinch call ID; null when the message had no valid one (see rawCallId).",
        ),
    ] = None
    raw_call_id: Annotated[
        str | None,
        Field(
            alias="rawCallId",
            max_length=2 * RAW_CALL_ID_CHARS,
            description=(
                "When callId is null: a short prefix of what the message carried as call ID,"
                " escaped (non-printable and non-ASCII as \\x.. / \\u....), phone-number-like"
                " digit runs masked, `...` appended when cut. Null when there was nothing."
            ),
        ),
    ] = None
    reason: Annotated[
        str,
        Field(
            pattern=_REASON_PATTERN,
            description=_REASON_DESCRIPTION,
            examples=["call-not-found", "not-final-in-time"],
            json_schema_extra=_REASON_SCHEMA,
        ),
    ]
    error_class: Annotated[
        ErrorClass,
        Field(
            alias="errorClass",
            description=(
                "Class of the failure: `permanent` (retrying cannot help), `not-found` (Sinch"
                " does not know the call), `not-final` (still ONGOING). (`transient` is in the"
                " enumeration for completeness; transient errors are retried, never announced.)"
            ),
        ),
    ]
    message: Annotated[
        str,
        Field(
            max_length=MAX_MESSAGE_CHARS,
            description="Human-readable, secret-free explanation (English; not for parsing).",
        ),
    ]
    sinch_error_code: Annotated[
        int | None,
        Field(
            alias="sinchErrorCode",
            description="Sinch's `errorCode` (e.g. 40400) when Sinch answered with an error.",
        ),
    ] = None
    sinch_reference: Annotated[
        str | None,
        Field(alias="sinchReference", description="Sinch's error `reference`, for its support."),
    ] = None
    http_status: Annotated[
        int | None,
        Field(alias="httpStatus", description="HTTP status of Sinch's answer, when there was one."),
    ] = None
    attempts: Annotated[
        int | None,
        Field(
            ge=0,
            description=(
                "How many times the call was asked to Sinch for this request (re-checks"
                " included); 0 when it never reached Sinch (malformed message)."
            ),
        ),
    ] = None
    context: Annotated[dict[str, Any] | None, Field(description=_CONTEXT_DESCRIPTION)] = None
    entry_path: Annotated[
        str | None, Field(alias="entryPath", description=_ENTRY_PATH_DESCRIPTION)
    ] = None
    failed_at: Annotated[
        AwareDatetime,
        Field(alias="failedAt", description="When the failure was decided (ISO 8601, UTC)."),
    ]


_Amount = Annotated[Decimal, PlainSerializer(format_decimal, return_type=str)]


class SpendThresholdCrossedDetail(_Detail):
    """Detail of ``Spend Threshold Crossed``: a key's daily spend or call count reached a
    threshold of the risk policy."""

    schema_version: Annotated[
        str,
        Field(
            alias="schemaVersion",
            pattern=_SCHEMA_VERSION_PATTERN,
            description="Semantic version of this detail's schema (1.x.y).",
            examples=[EVENT_SCHEMA_VERSION],
        ),
    ] = EVENT_SCHEMA_VERSION
    event_id: Annotated[
        str,
        Field(
            alias="eventId",
            min_length=1,
            description=(
                "Deterministic ID `spend:{day}:{keyKind}:{key}:{threshold}` (threshold"
                " `USD-100` or `calls-50`): one per key, day and threshold. Dedupe on it."
            ),
            examples=["spend:2026-11-26:country:GB:USD-250"],
        ),
    ]
    day: Annotated[
        str,
        Field(
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="The UTC day (the calls' start day) the figures add up.",
            examples=["2026-11-26"],
        ),
    ]
    key_kind: Annotated[
        Literal["total", "country", "number"],
        Field(
            alias="keyKind",
            description=(
                "`total` (every call; key `all`), `country` (the callee's ISO 3166-1 alpha-2"
                " country, or `+{callingCode}` for a number without one, e.g. `+882`) or"
                " `number` (the called number's keyed hash)."
            ),
        ),
    ]
    key: Annotated[
        str,
        Field(
            min_length=1,
            description=(
                "`all`, the country, or for `number` the HMAC-SHA256 of the E.164 number"
                " under the deployment's secret key (32 hex digits): never the number."
            ),
            examples=["GB", "+882", "all"],
        ),
    ]
    metric: Annotated[
        Literal["spend", "calls"],
        Field(description="`spend` (debit in `currency`) or `calls` (number of calls)."),
    ]
    currency: Annotated[
        str | None, Field(description="Currency of a `spend` threshold; null for `calls`.")
    ] = None
    threshold: Annotated[
        _Amount, Field(description="The threshold reached (exact decimal, as a string).")
    ]
    value: Annotated[
        _Amount,
        Field(description="The figure that reached it (exact decimal, as a string)."),
    ]
    calls: Annotated[int, Field(description="The key's call count of the day, when seen.")]
    spend: Annotated[
        dict[str, _Amount],
        Field(description="The key's spend of the day per currency (exact decimals), when seen."),
    ]
    call_id: Annotated[
        str,
        Field(alias="callId", description="The call whose stored version reached the threshold."),
    ]
    version: Annotated[int, Field(ge=1, description="That call's version.")]
    crossed_at: Annotated[
        AwareDatetime,
        Field(alias="crossedAt", description="When the crossing was seen (ISO 8601, UTC)."),
    ]


def spend_threshold_crossed_event(
    crossing: Crossing,
    *,
    calls: int,
    spend: Mapping[str, Decimal],
    call_id: str,
    version: int,
    crossed_at: datetime,
) -> OutgoingEvent:
    """The ``Spend Threshold Crossed`` event of ``crossing`` (a :class:`~call_enricher.spend.
    Crossing`), keyed by its event ID."""
    detail = SpendThresholdCrossedDetail(
        event_id=crossing.event_id,
        day=crossing.day,
        key_kind=crossing.kind,
        key=crossing.key,
        metric=crossing.metric,
        currency=crossing.currency,
        threshold=crossing.threshold,
        value=crossing.value,
        calls=calls,
        spend=dict(spend),
        call_id=call_id,
        version=version,
        crossed_at=crossed_at,
    )
    return OutgoingEvent(
        key=detail.event_id,
        detail_type=DETAIL_TYPE_SPEND_THRESHOLD_CROSSED,
        detail=detail.model_dump(mode="json", by_alias=True),
    )


def call_enriched_event_id(call_id: str, version: int) -> str:
    """``{callId}:v{version}``: the ID of a stored version's ``Call Enriched`` event."""
    return f"{call_id}:v{version}"


def call_enrichment_failed_event_id(call_id: str | None, reason: str, state_id: str) -> str:
    """The ID of a ``Call Enrichment Failed`` event (see :class:`CallEnrichmentFailedDetail`)."""
    digest = hashlib.sha256(state_id.encode("utf-8", "backslashreplace")).hexdigest()[:16]
    return f"{call_id or 'unknown'}:failed:{reason}:{digest}"


def call_enriched_event(stored: StoredCall, *, key: str = "") -> OutgoingEvent:
    """The ``Call Enriched`` event of the version ``stored`` holds (rebuilt identically from
    the same image: a retried or replayed stream record gives the same event).

    Raises:
        ValueError: ``stored`` holds no version (a failure of a call never enriched).
        PermanentError: the stored record does not match the current ``EnrichedCall`` model.
    """
    if stored.record is None or stored.version is None or stored.status is None:
        raise ValueError(f"stored call {stored.call_id} holds no version")
    try:
        record = EnrichedCall.model_validate(stored.record)
    except ValidationError as exc:
        fields = sorted({".".join(map(str, err["loc"])) for err in exc.errors()})[:5]
        raise PermanentError(
            f"stored record of call {stored.call_id} v{stored.version} does not match the"
            f" EnrichedCall model (fields: {', '.join(fields)})"
        ) from None
    detail = CallEnrichedDetail(
        event_id=call_enriched_event_id(stored.call_id, stored.version),
        call_id=stored.call_id,
        version=stored.version,
        status=stored.status,
        previous_status=stored.previous_status,
        stored_at=stored.updated_at or stored.created_at,
        record=record,
        context=stored.context,
        entry_path=stored.entry_path,
    )
    return OutgoingEvent(
        key=key or detail.event_id,
        detail_type=DETAIL_TYPE_CALL_ENRICHED,
        detail=detail.model_dump(mode="json", by_alias=True),
    )


def call_enrichment_failed_event(
    key: str, failure: Failure, *, event_key: str = ""
) -> OutgoingEvent:
    """The ``Call Enrichment Failed`` event of the failure state stored under ``key``."""
    state_id = f"{key}|{failure.fingerprint}|{format_utc(failure.failed_at)}"
    call_id = failure.call_id if key.startswith(MESSAGE_KEY_PREFIX) else key
    detail = CallEnrichmentFailedDetail(
        event_id=call_enrichment_failed_event_id(call_id, failure.reason, state_id),
        call_id=call_id,
        raw_call_id=failure.raw_call_id if call_id is None else None,
        reason=failure.reason,
        error_class=ErrorClass(failure.error_class),
        message=failure.message,
        sinch_error_code=failure.sinch_error_code,
        sinch_reference=failure.sinch_reference,
        http_status=failure.http_status,
        attempts=failure.attempts,
        context=failure.context,
        entry_path=failure.entry_path,
        failed_at=failure.failed_at,
    )
    return OutgoingEvent(
        key=event_key or detail.event_id,
        detail_type=DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
        detail=detail.model_dump(mode="json", by_alias=True),
    )


def events_for_change(
    old: StoredCall | None, new: StoredCall | None, *, key: str = ""
) -> list[OutgoingEvent]:
    """The events one change of an item announces, in order (the outbox's one rule).

    A new version -> ``Call Enriched``; a new failure state -> ``Call Enrichment Failed``;
    anything else (the item removed by its TTL, a write that changed neither) -> nothing.
    """
    if new is None:
        return []
    events: list[OutgoingEvent] = []
    if new.version is not None and (old is None or old.version != new.version):
        events.append(call_enriched_event(new, key=key))
    if new.failure is not None and (old is None or old.failure != new.failure):
        events.append(call_enrichment_failed_event(new.call_id, new.failure, event_key=key))
    return events
