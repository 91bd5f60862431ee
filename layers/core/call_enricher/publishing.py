"""Publishing events on the EventBridge bus (``PutEvents``), with nothing lost silently.

Only the stream publisher uses it (the table is the outbox).
:meth:`EventPublisher.publish` takes a batch of :class:`OutgoingEvent` (each tagged with the
caller's correlation ``key``) and answers, per key, ``None`` (published) or the error that
stopped that key's event, never failing a key for a neighbour's problem:

1. Each entry's size is computed by EventBridge's documented rule (UTF-8 bytes of
   ``Source`` + ``DetailType`` + ``Detail`` + each ``Resources`` item, + 14 bytes for
   ``Time`` when set; we never set it) and checked against :data:`MAX_ENTRY_BYTES` **before**
   sending: an oversize event fails its key with an :class:`EventTooLargeError` (it can never
   be accepted), the others go on. ``Detail`` is compact JSON (``separators=(",", ":")``).
2. Entries go out in requests of at most :data:`MAX_ENTRIES_PER_REQUEST` (10) entries whose
   sizes add up to at most :data:`MAX_REQUEST_BYTES`.
3. ``FailedEntryCount`` is always checked. Entries that failed with a retryable code
   (:data:`RETRYABLE_ENTRY_ERROR_CODES`: ``ThrottlingException``, ``InternalFailure``, and the
   generic internal/unavailable codes) are resent, alone, with full-jitter exponential
   backoff, up to ``max_attempts`` sends in all. What still fails fails its own key with
   :class:`AwsUnavailableError` (transient: the stream record is retried).
4. Entries rejected for good: ``MalformedDetail``, ``InvalidArgument``, ``RedactionFailure``
   -> :class:`EventRejectedError`; authorisation failures (``AccessDeniedException``,
   ``NotAuthorizedFor*``) and unknown codes -> :class:`AwsUnavailableError` without resending
   (a deployment fault: the stream records are retried, then go to the on-failure queue).
5. A failure of the whole call (throttling, 5xx, connect/read timeout) that persists through
   botocore's own retries (standard mode, see :mod:`call_enricher.aws`) is retried the same
   way; if it persists, every key of that request fails with :class:`AwsUnavailableError`.
   Permanent whole-call errors are not retried. Worst case per request: ``max_attempts`` x
   botocore's attempts calls, each bounded by the clients' connect/read timeouts.

Results are per key: a key with several events fails if any of them fails. Nothing here
raises for an AWS failure; the caller decides what a failed key means (a stream batch item
failure). :class:`EventRejectedError` (a :class:`PermanentError`) says that
this one entry can never be accepted, whatever the retries; a whole request refused as invalid
is a plain :class:`PermanentError` (it may be a neighbour's fault, or a deployment's).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from call_enricher import aws
from call_enricher.errors import (
    AwsUnavailableError,
    CallEnricherError,
    EventRejectedError,
    EventTooLargeError,
)
from call_enricher.events import (
    DETAIL_TYPE_CALL_ENRICHED,
    DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
    OutgoingEvent,
)

__all__ = [
    "DETAIL_TYPE_CALL_ENRICHED",
    "DETAIL_TYPE_CALL_ENRICHMENT_FAILED",
    "MAX_ENTRIES_PER_REQUEST",
    "MAX_ENTRY_BYTES",
    "MAX_REQUEST_BYTES",
    "PERMANENT_ENTRY_ERROR_CODES",
    "RETRYABLE_ENTRY_ERROR_CODES",
    "EventPublisher",
    "EventRejectedError",
    "EventTooLargeError",
    "OutgoingEvent",
    "compact_json",
    "entry_size",
]

MAX_ENTRIES_PER_REQUEST = 10
"""EventBridge accepts at most 10 entries per ``PutEvents`` request."""

MAX_ENTRY_BYTES = 256 * 1024
"""EventBridge's limit on one entry, by its documented size rule (:func:`entry_size`)."""

MAX_REQUEST_BYTES = 256 * 1024
"""Budget for the entries of one request (EventBridge's request-level limit)."""

RETRYABLE_ENTRY_ERROR_CODES = frozenset(
    {
        "ThrottlingException",  # documented as retryable
        "InternalFailure",  # documented as retryable
        "InternalException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
"""Per-entry ``ErrorCode`` values worth resending."""

PERMANENT_ENTRY_ERROR_CODES = frozenset({"MalformedDetail", "InvalidArgument", "RedactionFailure"})
"""Per-entry ``ErrorCode`` values that say the entry itself can never be accepted."""


def compact_json(value: Any) -> str:
    """The compact JSON text sent as ``Detail`` (UTF-8 kept as is; NaN refused)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_size(
    source: str,
    detail_type: str,
    detail: str | None,
    resources: Sequence[str] = (),
    *,
    with_time: bool = False,
) -> int:
    """The size of a ``PutEvents`` entry by EventBridge's documented rule, in bytes."""
    size = 14 if with_time else 0
    size += len(source.encode("utf-8")) + len(detail_type.encode("utf-8"))
    if detail is not None:
        size += len(detail.encode("utf-8"))
    return size + sum(len(resource.encode("utf-8")) for resource in resources)


@dataclass
class _Entry:
    key: str
    request_entry: dict[str, Any]
    size: int


class EventPublisher:
    """Publishes :class:`OutgoingEvent` batches on one bus. Thread-safe (no mutable state).

    Args:
        bus_name: the bus name or ARN (``EVENT_BUS_NAME``).
        source: ``Source`` of every event (``EVENT_SOURCE``, default ``call-enricher``).
        client: an EventBridge client; default :func:`call_enricher.aws.client` ``("events")``,
            created on first use.
        max_attempts: sends per entry in all (first send included), for retryable failures.
        sleep, random: backoff between sends (full jitter), injectable for tests.
    """

    def __init__(
        self,
        bus_name: str,
        source: str,
        *,
        client: Any | None = None,
        max_attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = random.random,
    ) -> None:
        if not bus_name or not source:
            raise ValueError("bus_name and source are required")
        self.bus_name = bus_name
        self.source = source
        self._client = client
        self._max_attempts = max(1, max_attempts)
        self._sleep = sleep
        self._random = random

    client = aws.LazyClient("events")

    def publish(self, events: Sequence[OutgoingEvent]) -> dict[str, CallEnricherError | None]:
        """Publish ``events``; per key ``None`` when all its events were accepted, else the
        (first) error that stopped one of them. Never raises for AWS failures."""
        results: dict[str, CallEnricherError | None] = dict.fromkeys(
            (event.key for event in events), None
        )

        def fail(key: str, error: CallEnricherError) -> None:
            if results.get(key) is None:
                results[key] = error

        entries: list[_Entry] = []
        for event in events:
            entry = self._entry(event)
            if isinstance(entry, CallEnricherError):
                fail(event.key, entry)
            else:
                entries.append(entry)
        for request in _requests(entries):
            self._send(request, fail)
        return results

    def _entry(self, event: OutgoingEvent) -> _Entry | CallEnricherError:
        try:
            detail = compact_json(event.detail)
        except (TypeError, ValueError) as exc:
            return EventRejectedError(f"{event.detail_type} event detail is not JSON: {exc}")
        size = entry_size(self.source, event.detail_type, detail, event.resources)
        if size > MAX_ENTRY_BYTES:
            return EventTooLargeError(
                f"{event.detail_type} event is {size} bytes, over EventBridge's "
                f"{MAX_ENTRY_BYTES}-byte entry limit"
            )
        request_entry: dict[str, Any] = {
            "EventBusName": self.bus_name,
            "Source": self.source,
            "DetailType": event.detail_type,
            "Detail": detail,
        }
        if event.resources:
            request_entry["Resources"] = list(event.resources)
        return _Entry(event.key, request_entry, size)

    def _send(self, request: list[_Entry], fail: Callable[[str, CallEnricherError], None]) -> None:
        pending = request
        last_error: dict[int, CallEnricherError] = {}
        for attempt in range(self._max_attempts):
            if attempt:
                self._sleep(aws.backoff_delay(attempt, self._random))
            try:
                response = self.client.put_events(Entries=[e.request_entry for e in pending])
            except (ClientError, BotoCoreError) as exc:
                error = aws.translate_error(exc, "EventBridge PutEvents")
                if not error.retryable:
                    for entry in pending:
                        fail(entry.key, error)
                    return
                last_error = {id(entry): error for entry in pending}
                continue
            pending = self._failed_entries(pending, response, fail, last_error)
            if not pending:
                return
        for entry in pending:
            fail(entry.key, last_error.get(id(entry)) or AwsUnavailableError("PutEvents failed"))

    @staticmethod
    def _failed_entries(
        sent: list[_Entry],
        response: dict[str, Any],
        fail: Callable[[str, CallEnricherError], None],
        last_error: dict[int, CallEnricherError],
    ) -> list[_Entry]:
        """Entries to resend; entries rejected for good are failed on the spot."""
        results = response.get("Entries") or []
        failed_count = int(response.get("FailedEntryCount") or 0)
        if (
            failed_count == 0
            and len(results) == len(sent)
            and all(result.get("EventId") and not result.get("ErrorCode") for result in results)
        ):
            return []
        retry: list[_Entry] = []
        for index, entry in enumerate(sent):
            result = results[index] if index < len(results) else {}
            code = result.get("ErrorCode")
            if code is None and result.get("EventId"):
                continue  # accepted
            code = code or "MissingResult"
            text = f"EventBridge rejected the event: {code}"
            message = str(result.get("ErrorMessage") or "")[:200]
            if message:
                text += f" ({message})"
            if code in RETRYABLE_ENTRY_ERROR_CODES or code == "MissingResult":
                last_error[id(entry)] = AwsUnavailableError(text)
                retry.append(entry)
            elif code in PERMANENT_ENTRY_ERROR_CODES:
                fail(entry.key, EventRejectedError(text))
            else:
                fail(entry.key, AwsUnavailableError(text))
        return retry


def _requests(entries: list[_Entry]) -> list[list[_Entry]]:
    """Pack entries, in order, into requests of <= 10 entries and <= MAX_REQUEST_BYTES."""
    requests: list[list[_Entry]] = []
    current: list[_Entry] = []
    current_size = 0
    for entry in entries:
        if current and (
            len(current) == MAX_ENTRIES_PER_REQUEST or current_size + entry.size > MAX_REQUEST_BYTES
        ):
            requests.append(current)
            current, current_size = [], 0
        current.append(entry)
        current_size += entry.size
    if current:
        requests.append(current)
    return requests
