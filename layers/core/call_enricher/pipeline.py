"""The enrichment pipeline: call ID -> Sinch -> record -> enrichment -> store -> publish.

This is the one place where error classes become outcomes. Handlers only translate a
:class:`Disposition` into their trigger's answer (a batch item failure, an HTTP status).

Per batch (the queue handler; the sync API path is a batch of one):

1. Stored states of every valid call ID are read in one ``BatchGetItem`` (idempotency: a
   stored FINAL record younger than ``FINAL_FRESHNESS_SECONDS`` whose version was published is
   served from the table, and Sinch is not asked again).
2. Each distinct call ID is processed on a bounded thread pool: fetch (with a deadline tied
   to the Lambda's remaining time), validate, enrich, and one conditional ``UpdateItem``. A
   record is only started while enough time remains; the others are retried by SQS.
3. The events of the whole batch are published with ``PutEvents`` (10 per call); each
   published ``Call Enriched`` version is then marked in the table, so a redelivered message
   neither loses nor duplicates an event.
4. ONGOING calls are re-checked by re-sending their message with an exponential delay
   (capped at 15 minutes) until ``RECHECK_MAX_AGE_SECONDS``, then ``not-final-in-time``.

Outcomes by error class: permanent input/record errors and ``not found`` publish a
``Call Enrichment Failed`` event and the message is done (deleted). Transient errors,
and errors an operator must fix (Sinch 401/403, missing configuration), are retried, then
land in the DLQ from which they can be redriven once fixed: nothing accepted is dropped.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from call_enricher import errors
from call_enricher.enrichment import EnrichedCall, enrich
from call_enricher.events import call_enriched_event, call_enrichment_failed_event
from call_enricher.messages import EnrichmentRequest
from call_enricher.model import parse_call_record
from call_enricher.settings import SQS_MAX_DELAY_SECONDS, Settings
from call_enricher.sinch.regions import resolve_base_url

if TYPE_CHECKING:
    from call_enricher.publishing import EventPublisher, OutgoingEvent
    from call_enricher.queueing import EnrichmentQueue
    from call_enricher.sinch.client import AttemptInfo, SinchClient
    from call_enricher.storage import CallStore, SaveResult, StoredCall

# Errors an operator must fix: retried (then DLQ, redrivable) rather than dropped.
_OPERATOR_ERRORS = (errors.SinchAuthError, errors.ConfigurationError)


class Disposition(StrEnum):
    DONE = "done"  # terminal: the message can be deleted
    RETRY = "retry"  # report as a batch item failure; SQS redelivers, then the DLQ


class Outcome(StrEnum):
    ENRICHED = "enriched"  # a new version was stored (and published)
    UNCHANGED = "unchanged"  # Sinch returned what is stored already
    SERVED_FROM_STORE = "served-from-store"  # fresh FINAL in the table: Sinch not asked
    RECHECK_SCHEDULED = "recheck-scheduled"  # ONGOING: stored, published, re-check queued
    FAILED = "failed"  # permanent failure, `Call Enrichment Failed` published
    RETRY = "retry"  # transient failure
    NOT_STARTED = "not-started"  # the invocation ran out of time before this record


@dataclass(frozen=True)
class WorkItem:
    """One message to process: a parsed request, or the permanent error parsing it raised."""

    key: str
    request: EnrichmentRequest | None = None
    error: errors.CallEnricherError | None = None
    raw_call_id: str | None = None


@dataclass
class ItemResult:
    key: str
    call_id: str | None
    outcome: Outcome
    disposition: Disposition
    enriched: EnrichedCall | None = None
    stored_version: int | None = None
    error: errors.CallEnricherError | None = None
    attempts: int = 0


@dataclass
class _CallWork:
    request: EnrichmentRequest
    keys: list[str]
    stored: StoredCall | None
    enriched: EnrichedCall | None = None
    save: SaveResult | None = None
    error: errors.CallEnricherError | None = None
    attempts: int = 0
    started: bool = False
    served_from_store: bool = False


@dataclass
class BatchReport:
    results: dict[str, ItemResult]
    counters: Counter[str] = field(default_factory=Counter)
    sinch_attempts: list[AttemptInfo] = field(default_factory=list)


class SinchClients:
    """One thread-safe Sinch client per base URL, sharing one credentials source.

    ``factory(base_url, on_attempt)`` builds a client; every attempt it makes is recorded
    here (for metrics) until :meth:`drain_attempts` hands them over.
    """

    def __init__(
        self, factory: Callable[[str, Callable[[AttemptInfo], None]], SinchClient]
    ) -> None:
        self._factory = factory
        self._clients: dict[str, SinchClient] = {}
        self._attempts: list[AttemptInfo] = []
        self._lock = threading.Lock()

    def for_base_url(self, base_url: str) -> SinchClient:
        with self._lock:
            client = self._clients.get(base_url)
            if client is None:
                client = self._clients[base_url] = self._factory(base_url, self._record)
            return client

    def _record(self, info: AttemptInfo) -> None:
        with self._lock:
            self._attempts.append(info)

    def drain_attempts(self) -> list[AttemptInfo]:
        with self._lock:
            attempts, self._attempts = self._attempts, []
            return attempts


def fetch_and_enrich(
    client: SinchClient,
    call_id: str,
    *,
    region: str | None,
    deadline: float | None = None,
    enriched_at: datetime | None = None,
) -> tuple[EnrichedCall, int]:
    """Fetch one call from Sinch, validate and enrich it (no AWS). Returns (record, attempts)."""
    response = client.get_call(call_id, deadline=deadline)
    record = parse_call_record(response.data)
    enriched = enrich(
        record,
        raw=response.data,
        call_id=call_id,
        base_url=response.base_url,
        region=region,
        enriched_at=enriched_at,
    )
    return enriched, response.attempts


class EnrichmentService:
    """Runs the pipeline for a batch of work items. Thread-safe collaborators are injected."""

    def __init__(
        self,
        settings: Settings,
        *,
        sinch: SinchClients,
        store: CallStore,
        publisher: EventPublisher,
        queue: EnrichmentQueue | None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: Callable[..., None] | None = None,
    ) -> None:
        self.settings = settings
        self.sinch = sinch
        self.store = store
        self.publisher = publisher
        self.queue = queue
        self._clock = clock
        self._now = now
        self._log = log or (lambda *_a, **_k: None)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- public ------------------------------------------------------------------------

    def process(self, items: Sequence[WorkItem], *, remaining_ms: Callable[[], int]) -> BatchReport:
        """Process ``items``; every key gets exactly one :class:`ItemResult`."""
        report = BatchReport(results={})
        failed_events: list[OutgoingEvent] = []
        works = self._group(items, report, failed_events)
        self._load_stored(works)
        self._run_concurrently(works, remaining_ms, report)
        enriched_events, recheck = self._decide(works, report, failed_events)
        self._publish(enriched_events, failed_events, works, report)
        self._schedule_rechecks(recheck, report)
        return report

    # -- steps ---------------------------------------------------------------------------

    def _group(
        self,
        items: Sequence[WorkItem],
        report: BatchReport,
        failed_events: list[OutgoingEvent],
    ) -> dict[tuple[str, str | None], _CallWork]:
        """Parse failures become failed events; duplicates of one call in a batch are merged."""
        works: dict[tuple[str, str | None], _CallWork] = {}
        for item in items:
            if item.request is None:
                error = item.error or errors.MalformedMessageError("message could not be parsed")
                report.results[item.key] = ItemResult(
                    item.key, None, Outcome.FAILED, Disposition.DONE, error=error
                )
                failed_events.append(
                    call_enrichment_failed_event(
                        key=f"msg:{item.key}",
                        call_id=None,
                        raw_call_id=item.raw_call_id,
                        error=error,
                        attempts=0,
                        context=None,
                        source_id=item.key,
                    )
                )
                continue
            group = (item.request.call_id, item.request.region)
            if group in works:
                works[group].keys.append(item.key)
            else:
                works[group] = _CallWork(request=item.request, keys=[item.key], stored=None)
        return works

    def _load_stored(self, works: dict[tuple[str, str | None], _CallWork]) -> None:
        if not works or self.settings.final_freshness_seconds <= 0:
            return
        try:
            stored = self.store.get_many({call_id for call_id, _ in works})
        except errors.AwsUnavailableError as exc:
            # Idempotency is an optimisation: conditional writes keep the table correct.
            self._log("warning", "could not pre-read stored calls", error=exc.message)
            return
        for (call_id, _), work in works.items():
            work.stored = stored.get(call_id)

    def _run_concurrently(
        self,
        works: dict[tuple[str, str | None], _CallWork],
        remaining_ms: Callable[[], int],
        report: BatchReport,
    ) -> None:
        def run(work: _CallWork) -> None:
            budget_ms = remaining_ms() - self.settings.deadline_margin_ms
            if budget_ms <= self._min_budget_ms():
                return  # not started: reported as a retry
            work.started = True
            deadline = self._clock() + budget_ms / 1000.0
            self._process_call(work, deadline)

        pool = self._get_pool()
        futures = [pool.submit(run, work) for work in works.values()]
        for future in futures:
            future.result()  # _process_call never raises; surface programming errors here
        report.sinch_attempts.extend(self.sinch.drain_attempts())

    def _process_call(self, work: _CallWork, deadline: float) -> None:
        request = work.request
        try:
            if self._fresh_final(work.stored):
                work.served_from_store = True
                return
            # SINCH_BASE_URL, when set, overrides every region (the sandbox, tests).
            base_url = resolve_base_url(
                region=request.region or self.settings.sinch_region,
                base_url=self.settings.sinch_base_url,
            )
            client = self.sinch.for_base_url(base_url)
            work.enriched, work.attempts = fetch_and_enrich(
                client,
                request.call_id,
                region=request.region or self.settings.sinch_region,
                deadline=deadline,
                enriched_at=self._now(),
            )
            work.save = self.store.save(work.enriched)
        except errors.CallEnricherError as exc:
            work.error = exc
            work.attempts = work.attempts or 1
        except Exception as exc:  # noqa: BLE001 (a bug must fail its record, not the batch)
            self._log("exception", "unexpected error", call_id=request.call_id)
            work.error = errors.TransientError(f"unexpected {type(exc).__name__}")

    def _decide(
        self,
        works: dict[tuple[str, str | None], _CallWork],
        report: BatchReport,
        failed_events: list[OutgoingEvent],
    ) -> tuple[list[OutgoingEvent], list[_CallWork]]:
        enriched_events: list[OutgoingEvent] = []
        recheck: list[_CallWork] = []
        for work in works.values():
            call_id = work.request.call_id
            if not work.started:
                self._result(work, report, Outcome.NOT_STARTED, Disposition.RETRY)
            elif work.served_from_store:
                self._result(work, report, Outcome.SERVED_FROM_STORE, Disposition.DONE)
            elif work.error is not None:
                self._decide_error(work, work.error, report, failed_events)
            elif work.save is not None and work.enriched is not None:
                save = work.save
                stored = save.stored
                outcome = Outcome.ENRICHED if save.needs_publish else Outcome.UNCHANGED
                if save.needs_publish:
                    enriched_events.append(
                        call_enriched_event(
                            key=_event_key(call_id),
                            stored=stored,
                            previous_status=save.previous_status,
                            context=work.request.context,
                            entry_path=work.request.entry_path,
                        )
                    )
                if stored.status != "FINAL" and work.enriched.status != "FINAL":
                    if self._too_old(work.request):
                        error = errors.CallNotFinalError(
                            "the call was still ONGOING after "
                            f"{self.settings.recheck_max_age_seconds} s"
                        )
                        work.error = error
                        failed_events.append(self._failed_event(work, error, "not-final-in-time"))
                        self._result(work, report, Outcome.FAILED, Disposition.DONE)
                        continue
                    recheck.append(work)
                    outcome = Outcome.RECHECK_SCHEDULED
                self._result(work, report, outcome, Disposition.DONE)
        return enriched_events, recheck

    def _decide_error(
        self,
        work: _CallWork,
        error: errors.CallEnricherError,
        report: BatchReport,
        failed_events: list[OutgoingEvent],
    ) -> None:
        terminal = error.error_class in (errors.ErrorClass.PERMANENT, errors.ErrorClass.NOT_FOUND)
        if terminal and not isinstance(error, _OPERATOR_ERRORS) and error.http_status != 403:
            failed_events.append(self._failed_event(work, error, error.reason))
            self._result(work, report, Outcome.FAILED, Disposition.DONE)
        else:
            self._result(work, report, Outcome.RETRY, Disposition.RETRY)

    def _publish(
        self,
        enriched_events: list[OutgoingEvent],
        failed_events: list[OutgoingEvent],
        works: dict[tuple[str, str | None], _CallWork],
        report: BatchReport,
    ) -> None:
        """Publish the batch's events; a message whose event failed is retried."""
        events = enriched_events + failed_events
        if not events:
            return
        errors_by_key = self.publisher.publish(events)
        owners = {_event_key(work.request.call_id): work for work in works.values()}
        for key, error in errors_by_key.items():
            work = owners.get(key)
            message_keys = work.keys if work is not None else [key.removeprefix("msg:")]
            if error is None:
                continue
            # Not published: the message is retried. The stored version stays marked as
            # unpublished, so the redelivery publishes it (no lost event).
            for message_key in message_keys:
                result = report.results[message_key]
                result.outcome, result.disposition, result.error = (
                    Outcome.RETRY,
                    Disposition.RETRY,
                    error,
                )
        report.counters["events_published"] += sum(
            1 for event in events if errors_by_key.get(event.key) is None
        )
        published = [
            owners[event.key]
            for event in enriched_events
            if errors_by_key.get(event.key) is None and event.key in owners
        ]
        self._mark_published(published)

    def _mark_published(self, works: Iterable[_CallWork]) -> None:
        def mark(work: _CallWork) -> None:
            if work.save is None:
                return
            try:
                self.store.mark_published(work.request.call_id, work.save.stored.version)
            except errors.CallEnricherError as exc:
                # The event is out; a later redelivery could publish it again with the same
                # deterministic eventId, which consumers dedupe. Never fail the record for it.
                self._log(
                    "warning",
                    "could not mark the event published",
                    call_id=work.request.call_id,
                    error=exc.message,
                )

        pool = self._get_pool()
        for future in [pool.submit(mark, work) for work in works]:
            future.result()

    def _schedule_rechecks(self, works: list[_CallWork], report: BatchReport) -> None:
        for work in works:
            if any(report.results[key].disposition is Disposition.RETRY for key in work.keys):
                continue  # its event was not published: the redelivery re-checks anyway
            if self.queue is None:
                raise errors.ConfigurationError("ENRICHMENT_QUEUE_URL is needed for re-checks")
            request = work.request.next_recheck(self._now())
            delay = min(
                SQS_MAX_DELAY_SECONDS,
                self.settings.recheck_base_delay_seconds * 2 ** min(work.request.recheck, 10),
            )
            try:
                self.queue.send(request, delay_seconds=delay)
                report.counters["rechecks"] += 1
            except errors.CallEnricherError as exc:
                for key in work.keys:
                    result = report.results[key]
                    result.outcome, result.disposition, result.error = (
                        Outcome.RETRY,
                        Disposition.RETRY,
                        exc,
                    )

    # -- helpers -------------------------------------------------------------------------

    def _result(
        self, work: _CallWork, report: BatchReport, outcome: Outcome, disposition: Disposition
    ) -> None:
        version = work.save.stored.version if work.save is not None else None
        for key in work.keys:
            report.results[key] = ItemResult(
                key=key,
                call_id=work.request.call_id,
                outcome=outcome,
                disposition=disposition,
                enriched=work.enriched,
                stored_version=version,
                error=work.error,
                attempts=work.attempts,
            )
        report.counters[outcome.value] += len(work.keys)

    def _failed_event(
        self, work: _CallWork, error: errors.CallEnricherError, reason: str
    ) -> OutgoingEvent:
        return call_enrichment_failed_event(
            key=_event_key(work.request.call_id),
            call_id=work.request.call_id,
            raw_call_id=None,
            error=error,
            reason=reason,
            attempts=max(work.attempts, 1) + work.request.recheck,
            context=work.request.context,
            source_id=work.keys[0],
            entry_path=work.request.entry_path,
        )

    def _fresh_final(self, stored: StoredCall | None) -> bool:
        if stored is None or stored.status != "FINAL":
            return False
        if stored.published_version < stored.version:
            return False  # stored but never published: go through the pipeline again
        age = self._now() - stored.updated_at
        return age < timedelta(seconds=self.settings.final_freshness_seconds)

    def _too_old(self, request: EnrichmentRequest) -> bool:
        if request.first_seen_at is None:
            return False
        age = (self._now() - request.first_seen_at).total_seconds()
        return age >= self.settings.recheck_max_age_seconds

    def _min_budget_ms(self) -> int:
        # Enough for one Sinch attempt plus the store write; below it a record is not started.
        return int(self.settings.sinch_connect_timeout_seconds * 1000) + 500

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.worker_threads, thread_name_prefix="enrich"
                )
            return self._pool


def describe(results: Iterable[ItemResult]) -> dict[str, Any]:
    """A compact summary for logs and the CLI."""
    counts = Counter(result.outcome.value for result in results)
    return dict(sorted(counts.items()))


def _event_key(call_id: str) -> str:
    return f"call:{call_id}"


def work_item_from_message(key: str, body: str | None) -> WorkItem:
    """Parse one queue message; a parse failure becomes a permanent error on the item."""
    from call_enricher.messages import parse_message_body

    try:
        return WorkItem(key=key, request=parse_message_body(body))
    except errors.CallEnricherError as exc:
        snippet = (body or "")[:64] if isinstance(body, str) else None
        return WorkItem(key=key, error=exc, raw_call_id=snippet)
