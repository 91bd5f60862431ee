"""The outbox publisher: the calls table's stream -> EventBridge, one event per state change.

The stream (new and old images) is the only source of events. For each stream record,
:func:`call_enricher.events.events_for_change` says what it announces (a new version:
``Call Enriched``; a new failure state: ``Call Enrichment Failed``; nothing else), and
:class:`OutboxPublisher` publishes it:

* in stream order, in ``PutEvents`` requests of at most 10 entries in which a call appears
  at most once, so a call's events are accepted in the order of its changes;
* deterministic event IDs (built from the images): a retried or replayed record carries
  the same ID, which consumers dedupe on;
* the first change that cannot be published stops the batch there: no later request is
  sent, and it and the later changes that announce something are reported failed (the
  event source mapping retries from the lowest failed record, bisects, then sends it to the
  on-failure queue). A call's later change is never published ahead of it (a call appears
  once per request); other calls' entries that shared its request were accepted already and
  go out again on the retry, with the same event IDs (the at-least-once window consumers
  dedupe on ``detail.eventId``);
* an event EventBridge can never accept (over 256 KB, rejected as malformed) is not retried:
  a ``Call Enriched`` one becomes the call's failure state (``event-too-large`` /
  ``event-rejected``, written conditionally on that version), which the stream announces in
  turn; a ``Call Enrichment Failed`` one is logged and counted (``EventsRejected``, alarmed).
* with a spend watch (:class:`~call_enricher.spend.SpendWatch`, when ``SPEND_TABLE_NAME``
  is set), each change is counted (exactly once per stream record) before its events go
  out, and the ``Spend Threshold Crossed`` events it claims join that change's own events in
  the same ``PutEvents`` flow; once accepted, each is marked announced. A change the spend
  watch cannot count stops the batch there like a failed publication (it is retried, and
  counting it again adds nothing). Without a spend watch nothing of this happens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from call_enricher import errors
from call_enricher.events import (
    DETAIL_TYPE_CALL_ENRICHED,
    DETAIL_TYPE_SPEND_THRESHOLD_CROSSED,
    OutgoingEvent,
    events_for_change,
)
from call_enricher.state import StoredCall, failure_from_error

if TYPE_CHECKING:
    from call_enricher.items import FailureRecorder
    from call_enricher.publishing import EventPublisher
    from call_enricher.settings import Settings
    from call_enricher.spend import SpendWatch

MAX_ENTRIES = 10


@dataclass(frozen=True)
class StreamChange:
    """One stream record: its sequence number, the item's key and its two images."""

    key: str
    item_key: str
    old: StoredCall | None
    new: StoredCall | None


@dataclass
class OutboxReport:
    failed: dict[str, errors.CallEnricherError] = field(default_factory=dict)
    """Sequence numbers to retry, with why."""
    published: int = 0
    rejected: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def change_from_record(record: Mapping[str, Any]) -> StreamChange:
    """A :class:`StreamChange` from a Lambda DynamoDB Streams record (images parsed)."""
    from call_enricher.items import parse_item

    stream = record.get("dynamodb") or {}
    keys = stream.get("Keys") or {}
    old, new = stream.get("OldImage"), stream.get("NewImage")
    return StreamChange(
        key=str(stream.get("SequenceNumber", "")),
        item_key=str((keys.get("callId") or {}).get("S", "")),
        old=parse_item(old) if old else None,
        new=parse_item(new) if new else None,
    )


class OutboxPublisher:
    """Publishes a batch of stream changes (see the module docstring). Thread-compatible."""

    def __init__(
        self,
        publisher: EventPublisher,
        store: FailureRecorder,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: Callable[..., None] | None = None,
        spend: SpendWatch | None = None,
    ) -> None:
        self.publisher = publisher
        self.store = store
        self.spend = spend
        self._now = now
        self._log = log or (lambda *_a, **_k: None)

    def publish(self, changes: Sequence[StreamChange]) -> OutboxReport:
        report = OutboxReport()
        chunk: list[tuple[StreamChange, list[OutgoingEvent]]] = []
        for index, change in enumerate(changes):
            try:
                events = events_for_change(change.old, change.new)
            except errors.CallEnricherError as exc:  # a stored record the model rejects
                self._log(
                    "error",
                    "stream record cannot be announced",
                    key=change.item_key,
                    error=exc.message,
                )
                report.rejected += 1
                continue
            if self.spend is not None:
                try:
                    events = [*events, *self.spend.observe(change)]
                except errors.CallEnricherError as exc:  # not counted: retry it and the rest
                    self._log(
                        "warning", "spend watch failed", key=change.item_key, error=exc.message
                    )
                    if chunk and not self._send(chunk, report):
                        self._fail_rest(changes[index:], report)
                        return report
                    report.failed[change.key] = exc
                    self._fail_rest(changes[index + 1 :], report)
                    return report
            if not events:
                continue
            size = sum(len(own) for _, own in chunk)
            repeats = any(other.item_key == change.item_key for other, _ in chunk)
            if chunk and (repeats or size + len(events) > MAX_ENTRIES):
                if not self._send(chunk, report):
                    self._fail_rest(changes[index:], report)
                    return report
                chunk = []
            chunk.append((change, events))
        if chunk:
            self._send(chunk, report)
        return report

    def _send(
        self, chunk: list[tuple[StreamChange, list[OutgoingEvent]]], report: OutboxReport
    ) -> bool:
        """Publish one chunk; False when a change of it failed (it and the rest retry)."""
        results = self.publisher.publish([event for _, events in chunk for event in events])
        failed_at: int | None = None
        for position, (change, events) in enumerate(chunk):
            for event in events:
                error = results.get(event.key)
                if error is None:
                    report.published += 1
                    report.by_type[event.detail_type] = report.by_type.get(event.detail_type, 0) + 1
                    if event.detail_type == DETAIL_TYPE_SPEND_THRESHOLD_CROSSED:
                        self._announced(event)
                    continue
                if isinstance(error, errors.EventRejectedError):
                    error = self._unpublishable(change, event, error, report)
                if error is not None and failed_at is None:
                    failed_at = position
                    report.failed[change.key] = error
        if failed_at is None:
            return True
        self._fail_rest([change for change, _ in chunk[failed_at + 1 :]], report)
        return False

    def _unpublishable(
        self,
        change: StreamChange,
        event: OutgoingEvent,
        error: errors.EventRejectedError,
        report: OutboxReport,
    ) -> errors.CallEnricherError | None:
        """An event EventBridge can never accept: recorded (or logged), never retried."""
        report.rejected += 1
        stored = change.new
        self._log(
            "error",
            "event rejected for good",
            key=change.item_key,
            reason=error.reason,
            detail_type=event.detail_type,
        )
        if event.detail_type != DETAIL_TYPE_CALL_ENRICHED or stored is None:
            return None  # a failure event: nothing more to record (the alarm tells)
        if stored.version is None:  # never: a Call Enriched event comes from a version
            return None
        failure = failure_from_error(
            type(error)(
                f"{error.message}; version {stored.version} of the call is stored but"
                " cannot be announced"
            ),
            failed_at=self._now(),
            call_id=stored.call_id,
            context=stored.context,
            entry_path=stored.entry_path,
        )
        try:
            self.store.record_unpublishable(stored.call_id, stored.version, failure)
        except errors.CallEnricherError as exc:
            return exc
        return None

    def _announced(self, event: OutgoingEvent) -> None:
        if self.spend is None:
            return
        try:
            self.spend.announced(event)
        except errors.CallEnricherError as exc:  # published: at worst announced again, same ID
            self._log(
                "warning",
                "spend crossing published but not marked",
                event_id=event.detail.get("eventId"),
                error=exc.message,
            )

    @staticmethod
    def _fail_rest(changes: Sequence[StreamChange], report: OutboxReport) -> None:
        for change in changes:
            report.failed.setdefault(
                change.key, errors.TransientError("an earlier change of the batch is retried")
            )


# -- wiring of the stream publisher function ------------------------------------------------

_lock = threading.Lock()
_outbox: OutboxPublisher | None = None


def _log(level: str, message: str, **fields: Any) -> None:
    from call_enricher.observability import logger

    getattr(logger, level)(message, extra=fields)


def build_outbox(settings: Settings) -> OutboxPublisher:
    """Build the stream publisher from settings (AWS clients created lazily inside)."""
    from call_enricher.items import FailureRecorder
    from call_enricher.publishing import EventPublisher

    return OutboxPublisher(
        EventPublisher(settings.event_bus_name, settings.event_source),
        FailureRecorder(settings.calls_table_name),
        log=_log,
        spend=build_spend_watch(settings),
    )


def build_spend_watch(settings: Settings) -> SpendWatch | None:
    """The spend watch of ``settings``: None when ``SPEND_TABLE_NAME`` is empty."""
    if not settings.spend_table_name:
        return None
    from call_enricher.policy_source import policy_source
    from call_enricher.spend import SecretNumberKey, SpendStore, SpendWatch

    return SpendWatch(
        SpendStore(settings.spend_table_name),
        number_key=SecretNumberKey(settings.spend_number_key_secret_id),
        policy=policy_source(settings.risk_policy_parameter),
    )


def get_outbox() -> OutboxPublisher:
    """The process-wide outbox publisher, built on first use."""
    global _outbox
    with _lock:
        if _outbox is None:
            from call_enricher.settings import get_settings

            _outbox = build_outbox(get_settings())
        return _outbox


def set_outbox(outbox: OutboxPublisher | None) -> None:
    """Replace the process-wide outbox publisher (tests, local stack)."""
    global _outbox
    with _lock:
        _outbox = outbox


def emit_outbox_metrics(report: OutboxReport) -> None:
    """The stream publisher's figures: events published per detail type, and rejected."""
    from aws_lambda_powertools.metrics import MetricUnit

    from call_enricher.observability import MetricName, dimensioned_count, metrics

    if report.published:
        metrics.add_metric(
            name=MetricName.EVENTS_PUBLISHED, unit=MetricUnit.Count, value=report.published
        )
    for detail_type, count in report.by_type.items():
        dimensioned_count(MetricName.EVENTS_PUBLISHED_BY_TYPE, count, "detailType", detail_type)
    if report.rejected:
        metrics.add_metric(
            name=MetricName.EVENTS_REJECTED, unit=MetricUnit.Count, value=report.rejected
        )


def init_publisher() -> OutboxPublisher:
    """INIT of the stream publisher: settings validated, the outbox publisher built with its
    EventBridge and DynamoDB clients (and the spend watch's, when configured), installed as
    the process-wide one (:func:`set_outbox` swaps it)."""
    from call_enricher import events, items, snapstart  # noqa: F401 - the per-record modules
    from call_enricher.settings import get_settings

    publisher = build_outbox(get_settings())
    publisher.publisher.client  # noqa: B018 - creates the EventBridge client
    publisher.store.client  # noqa: B018 - the DynamoDB client (event-too-large records)
    set_outbox(publisher)
    snapstart.register_snapstart_hooks()
    return publisher
