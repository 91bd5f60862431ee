"""The enrichment request: the message contract of the enrichment queue (version 1).

An SQS message body is either

* a JSON object ``{"callId": "...", "region": "euc1"?, "context": {...}?}``; ``context`` is
  the producer's free-form correlation data (at most 8 KiB of JSON, nested at most 32
  levels), copied into the events; or
* a bare call ID as plain text (``4398599d1ba84ef3bde0a82dfb61abed``) for simple producers.

The service itself adds ``recheck`` (a counter) and ``firstSeenAt`` when it re-sends an
ONGOING call's message with a delay, and ``entryPath`` (``queue``, ``api``, ``callback``) when
the API or the callback receiver enqueues. Producers may set ``entryPath`` but need not.
Unknown keys are ignored (forward compatible). Anything else is a permanent
:class:`MalformedMessageError` (or :class:`InvalidCallIdError`): never retried, never sent
to Sinch.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from call_enricher.callid import validate_call_id
from call_enricher.errors import InvalidCallIdError, MalformedMessageError
from call_enricher.sinch.regions import REGION_BASE_URLS

MESSAGE_SCHEMA_VERSION = "1"
MAX_CONTEXT_BYTES = 8 * 1024
MAX_CONTEXT_DEPTH = 32
"""Deepest nesting of objects and arrays accepted in ``context`` (the object itself is level 1).

Correlation data is flat in practice; a deeply nested one, even small in bytes, cannot be
copied into an event (serializers bound their depth), so it is refused at the door."""
_SNIPPET = 40

EntryPath = Literal["queue", "api", "callback", "recheck"]


class EnrichmentRequest(BaseModel):
    """One call ID to enrich, as carried by the enrichment queue."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    call_id: Annotated[str, Field(alias="callId", description="Sinch call ID.")]
    region: Annotated[
        str | None,
        Field(description="Sinch region to ask (global, euc1, use1, sae1, apse1, apse2)."),
    ] = None
    context: Annotated[
        dict[str, Any] | None,
        Field(
            description=(
                "Producer's correlation data, copied into the events (<= 8 KiB, <= 32 levels)."
            )
        ),
    ] = None
    entry_path: Annotated[EntryPath, Field(alias="entryPath")] = "queue"
    recheck: Annotated[int, Field(ge=0, le=1000, description="ONGOING re-checks so far.")] = 0
    first_seen_at: Annotated[
        AwareDatetime | None,
        Field(alias="firstSeenAt", description="When the call was first seen ONGOING."),
    ] = None

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        if value is not None and value not in REGION_BASE_URLS:
            raise ValueError(f"unknown region; expected one of {', '.join(REGION_BASE_URLS)}")
        return value

    def to_body(self) -> str:
        """The compact JSON body to send to the queue."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    def next_recheck(self, first_seen_at: datetime) -> EnrichmentRequest:
        return self.model_copy(
            update={
                "recheck": self.recheck + 1,
                "first_seen_at": self.first_seen_at or first_seen_at,
                "entry_path": "recheck",
            }
        )


def _snippet(text: str) -> str:
    return json.dumps(text[:_SNIPPET]) + ("..." if len(text) > _SNIPPET else "")


def context_depth(value: Any) -> int:
    """How deeply ``value`` nests objects and arrays (a scalar is 0, ``{}`` is 1).

    Iterative, so a hostile depth cannot exhaust the interpreter's stack.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_context(context: Any) -> None:
    """Refuse a ``context`` over :data:`MAX_CONTEXT_DEPTH` levels or :data:`MAX_CONTEXT_BYTES`.

    Raises :class:`MalformedMessageError` (permanent). ``None`` passes; the type itself is
    checked by :class:`EnrichmentRequest`. The depth is checked first: it bounds the work of
    measuring the size.
    """
    if context is None:
        return
    depth = context_depth(context)
    if depth > MAX_CONTEXT_DEPTH:
        raise MalformedMessageError(
            f"context is nested {depth} levels deep, more than {MAX_CONTEXT_DEPTH}",
            details=[{"field": "context", "problem": "too deep"}],
        )
    if len(json.dumps(context, default=str)) > MAX_CONTEXT_BYTES:
        raise MalformedMessageError(
            f"context is larger than {MAX_CONTEXT_BYTES} bytes",
            details=[{"field": "context", "problem": "too large"}],
        )


def parse_message_body(body: str | None) -> EnrichmentRequest:
    """Parse an SQS message body (JSON object or bare call ID) into a request.

    Raises :class:`MalformedMessageError` or :class:`InvalidCallIdError` (both permanent);
    a :class:`MalformedMessageError` raised after the call ID was validated carries it
    (``call_id``).
    """
    if body is None or not body.strip():
        raise MalformedMessageError("message body is empty")
    text = body.strip()
    if not text.startswith(("{", "[", '"')):
        return EnrichmentRequest(call_id=validate_call_id(text))
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessageError(f"message body is not valid JSON: {_snippet(text)}") from exc
    if isinstance(data, str):  # a JSON string: treat like a bare call ID
        return EnrichmentRequest(call_id=validate_call_id(data))
    if not isinstance(data, dict):
        raise MalformedMessageError(
            f"message body must be a JSON object or a call ID, got {type(data).__name__}"
        )
    if "callId" not in data and "callid" in data:  # Sinch's callback spelling
        data["callId"] = data.pop("callid")
    if "callId" not in data:
        raise MalformedMessageError("message has no callId", details=[{"field": "callId"}])
    call_id = validate_call_id(data["callId"])
    try:
        return _request_from(data)
    except MalformedMessageError as exc:
        exc.call_id = call_id  # the rest is malformed, the call ID is not
        raise


def _request_from(data: dict[str, Any]) -> EnrichmentRequest:
    """The request of a message object whose ``callId`` is valid."""
    check_context(data.get("context"))
    try:
        return EnrichmentRequest.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]) or "?", "problem": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        text_problems = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise MalformedMessageError(f"invalid message: {text_problems}", details=problems) from None


__all__ = [
    "MAX_CONTEXT_BYTES",
    "MAX_CONTEXT_DEPTH",
    "MESSAGE_SCHEMA_VERSION",
    "EnrichmentRequest",
    "InvalidCallIdError",
    "MalformedMessageError",
    "check_context",
    "context_depth",
    "parse_message_body",
]
