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

Three more rules keep one record's trouble its own:

* an unexpected exception while processing or deciding one record (a bug, data no event can
  carry) fails that record only: it is retried (then the DLQ, redrivable once fixed), never
  the whole batch, and never dropped as if it were the record's fault;
* a ``Call Enriched`` event EventBridge can never accept (over 256 KB, rejected as
  malformed) becomes a ``Call Enrichment Failed`` event (``event-too-large`` /
  ``event-rejected``) and the message is done: retrying could only fail the same way;
* before a failure is announced for a call, its stored state is read (consistently): a call
  stored FINAL meanwhile (another delivery of the same message, an earlier message) gets no
  failure event; its stored version is published if it was not yet.
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
from call_enricher.events import (
    REASON_NOT_FINAL_IN_TIME,
    call_enriched_event,
    call_enrichment_failed_event,
)
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
    call_id: str | None = None
    """On a parse failure: the message's call ID when that part of it was valid."""


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
        self._check_failures_against_store(enriched_events, failed_events, works, report)
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
                try:
                    event = call_enrichment_failed_event(
                        key=f"msg:{item.key}",
                        call_id=item.call_id,
                        raw_call_id=item.raw_call_id,
                        error=error,
                        attempts=0,
                        context=None,
                        source_id=item.key,
                    )
                except Exception:  # noqa: BLE001 (a bug must fail its record, not the batch)
                    self._log("exception", "unexpected error building the failure event")
                    report.results[item.key] = ItemResult(
                        item.key,
                        None,
                        Outcome.RETRY,
                        Disposition.RETRY,
                        error=errors.TransientError("unexpected error building the failure event"),
                    )
                    report.counters[Outcome.RETRY.value] += 1
                    continue
                report.results[item.key] = ItemResult(
                    item.key, item.call_id, Outcome.FAILED, Disposition.DONE, error=error
                )
                report.counters[Outcome.FAILED.value] += 1
                failed_events.append(event)
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
        """Each work's outcome and events. One record's unexpected failure (a bug, data no
        event can carry) is that record's retry, never the batch's failure."""
        enriched_events: list[OutgoingEvent] = []
        recheck: list[_CallWork] = []
        for work in works.values():
            own_enriched: list[OutgoingEvent] = []
            own_failed: list[OutgoingEvent] = []
            try:
                if self._decide_one(work, report, own_enriched, own_failed):
                    recheck.append(work)
            except errors.CallEnricherError as exc:
                # e.g. a stored record that no longer matches the model: classified as usual
                work.error = exc
                own_enriched = []
                own_failed = []
                try:
                    self._decide_error(work, exc, report, own_failed)
                except Exception:  # noqa: BLE001 (not even the failure event can be built)
                    own_failed = []
                    self._unexpected(work, report, "building the failure event")
            except Exception:  # noqa: BLE001 (a bug must fail its record, not the batch)
                own_enriched, own_failed = [], []
                self._unexpected(work, report, "deciding the outcome")
            enriched_events.extend(own_enriched)
            failed_events.extend(own_failed)
        return enriched_events, recheck

    def _decide_one(
        self,
        work: _CallWork,
        report: BatchReport,
        enriched_events: list[OutgoingEvent],
        failed_events: list[OutgoingEvent],
    ) -> bool:
        """Decide one work's outcome (its events appended); True when a re-check is due."""
        if not work.started:
            self._result(work, report, Outcome.NOT_STARTED, Disposition.RETRY)
            return False
        if work.served_from_store:
            self._result(work, report, Outcome.SERVED_FROM_STORE, Disposition.DONE)
            return False
        if work.error is not None:
            self._decide_error(work, work.error, report, failed_events)
            return False
        if work.save is None or work.enriched is None:
            raise RuntimeError("a started record has neither a result nor an error")
        save = work.save
        stored = save.stored
        outcome = Outcome.ENRICHED if save.needs_publish else Outcome.UNCHANGED
        if save.needs_publish:
            enriched_events.append(_enriched_event(work, stored, save.previous_status))
        due = False
        if stored.status != "FINAL" and work.enriched.status != "FINAL":
            if self._too_old(work.request):
                error = errors.CallNotFinalError(
                    f"the call was still ONGOING after {self.settings.recheck_max_age_seconds} s"
                )
                failed_events.append(self._failed_event(work, error, REASON_NOT_FINAL_IN_TIME))
                work.error = error
                self._result(work, report, Outcome.FAILED, Disposition.DONE)
                return False
            due = True
            outcome = Outcome.RECHECK_SCHEDULED
        self._result(work, report, outcome, Disposition.DONE)
        return due

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

    def _unexpected(self, work: _CallWork, report: BatchReport, doing: str) -> None:
        """An unexpected exception for one record: logged, and that record is retried (then
        the DLQ, from which it can be redriven once the bug is fixed: nothing is dropped)."""
        self._log("exception", f"unexpected error {doing}", call_id=work.request.call_id)
        work.error = errors.TransientError(f"unexpected error {doing}")
        self._result(work, report, Outcome.RETRY, Disposition.RETRY)

    def _check_failures_against_store(
        self,
        enriched_events: list[OutgoingEvent],
        failed_events: list[OutgoingEvent],
        works: dict[tuple[str, str | None], _CallWork],
        report: BatchReport,
    ) -> None:
        """Announce no failure for a call whose FINAL record is stored already.

        Another delivery of the same message (redelivered while a slow invocation still held
        it) or an earlier message may have stored the call FINAL since this batch began; Sinch
        failing this time does not undo that. Read consistently just before publishing:

        * stored FINAL and published: the failure event is dropped, the message is done
          (served from the store);
        * stored FINAL, its event not published yet (the other delivery is between its write
          and its publish, or crashed there): the stored version's ``Call Enriched`` event is
          published instead, as a redelivery does (deterministic event ID);
        * otherwise the failure event goes out.

        The read is a guard against a race, not a dependency: if it fails, the failure events
        go out as decided.
        """
        failing_keys = {event.key for event in failed_events}
        failing = {
            key: work for work in works.values() if (key := _failed_key(work)) in failing_keys
        }
        if not failing:
            return
        try:
            stored = self.store.get_many(
                {work.request.call_id for work in failing.values()}, consistent=True
            )
        except errors.CallEnricherError as exc:
            self._log("warning", "could not check stored calls before failing", error=exc.message)
            return
        moot: set[str] = set()
        for key, work in failing.items():
            summary = stored.get(work.request.call_id)
            if summary is None or summary.status != "FINAL":
                continue
            try:
                if summary.needs_publish:
                    full = self.store.get(work.request.call_id, consistent=True)
                    if full is None or full.status != "FINAL" or not full.needs_publish:
                        continue  # changed meanwhile: keep the failure as decided
                    enriched_events.append(_enriched_event(work, full, full.previous_status))
                    outcome = Outcome.ENRICHED
                else:
                    outcome = Outcome.SERVED_FROM_STORE
            except Exception:  # noqa: BLE001 (keep the failure as decided)
                self._log("warning", "could not use the stored call", call_id=work.request.call_id)
                continue
            moot.add(key)
            work.error = None
            self._override(work, report, outcome, Disposition.DONE, None, version=summary.version)
        if moot:
            report.counters["failures_superseded_by_store"] += len(moot)
            failed_events[:] = [event for event in failed_events if event.key not in moot]

    def _publish(
        self,
        enriched_events: list[OutgoingEvent],
        failed_events: list[OutgoingEvent],
        works: dict[tuple[str, str | None], _CallWork],
        report: BatchReport,
    ) -> None:
        """Publish the batch's events; a message whose event failed is retried, except when
        EventBridge can never accept its ``Call Enriched`` event (over 256 KB): that call
        fails for good instead (see :meth:`_announce_rejected`)."""
        events = enriched_events + failed_events
        if not events:
            return
        owners: dict[str, _CallWork] = {}
        for work in works.values():
            owners[_enriched_key(work)] = owners[_failed_key(work)] = work
        errors_by_key = dict(self.publisher.publish(events))
        rejected = self._announce_rejected(enriched_events, failed_events, errors_by_key, owners)
        for key, error in errors_by_key.items():
            if error is None or key in rejected:
                continue
            owner = owners.get(key)
            # Not published: the message is retried. The stored version stays marked as
            # unpublished, so the redelivery publishes it (no lost event).
            if owner is not None:
                self._override(owner, report, Outcome.RETRY, Disposition.RETRY, error)
            else:
                message_key = key.removeprefix("msg:")
                _override_result(report, message_key, Outcome.RETRY, Disposition.RETRY, error)
        for key, failure in rejected.items():
            work = owners[key]
            if failure is not None and errors_by_key.get(_failed_key(work)) is None:
                work.error = failure
                self._override(work, report, Outcome.FAILED, Disposition.DONE, failure)
        report.counters["events_published"] += sum(
            1 for key, error in errors_by_key.items() if error is None and key not in rejected
        )
        self._mark_published(
            [event for event in enriched_events if errors_by_key.get(event.key) is None]
        )

    def _announce_rejected(
        self,
        enriched_events: list[OutgoingEvent],
        failed_events: list[OutgoingEvent],
        errors_by_key: dict[str, errors.CallEnricherError | None],
        owners: dict[str, _CallWork],
    ) -> dict[str, errors.CallEnricherError | None]:
        """``Call Enriched`` events EventBridge can never accept (too large, rejected as
        malformed) become a ``Call Enrichment Failed`` event, published now: retrying the
        message could only fail the same way, then fill the DLQ where a redrive cannot help.
        The version stays stored (and unpublished: a later message tries again).

        Updates ``errors_by_key`` with the outcome of the failure events; returns, per
        rejected ``Call Enriched`` key, the error to report once its failure is announced
        (``None`` when the call's failure was announced already, e.g. ``not-final-in-time``).
        """
        announced = {event.key for event in failed_events}
        substitutes: list[OutgoingEvent] = []
        rejected: dict[str, errors.CallEnricherError | None] = {}
        for event in enriched_events:
            error = errors_by_key.get(event.key)
            work = owners.get(event.key)
            if not isinstance(error, errors.EventRejectedError) or work is None:
                continue
            if _failed_key(work) in announced:  # failing already (not-final-in-time)
                rejected[event.key] = None
                continue
            version = event.detail.get("version")
            failure = type(error)(
                f"{error.message}; version {version} of the call is stored but cannot be announced"
            )
            try:
                substitutes.append(self._failed_event(work, failure, failure.reason))
            except Exception:  # noqa: BLE001 (then the message is retried, as before)
                self._log("exception", "could not build the failure event")
                continue
            rejected[event.key] = failure
        if substitutes:
            errors_by_key.update(self.publisher.publish(substitutes))
        return rejected

    def _mark_published(self, events: Iterable[OutgoingEvent]) -> None:
        """Advance the publish marker of each published ``Call Enriched`` version."""

        def mark(call_id: str, version: int) -> None:
            try:
                self.store.mark_published(call_id, version)
            except errors.CallEnricherError as exc:
                # The event is out; a later redelivery could publish it again with the same
                # deterministic eventId, which consumers dedupe. Never fail the record for it.
                self._log(
                    "warning",
                    "could not mark the event published",
                    call_id=call_id,
                    error=exc.message,
                )

        versions = {(str(event.detail["callId"]), int(event.detail["version"])) for event in events}
        pool = self._get_pool()
        for future in [pool.submit(mark, *version) for version in sorted(versions)]:
            future.result()

    def _schedule_rechecks(self, works: list[_CallWork], report: BatchReport) -> None:
        for work in works:
            if any(
                report.results[key].outcome is not Outcome.RECHECK_SCHEDULED for key in work.keys
            ):
                continue  # its event was not published (the redelivery re-checks), or it failed
            if self.queue is None:
                error = errors.ConfigurationError("ENRICHMENT_QUEUE_URL is needed for re-checks")
                self._override(work, report, Outcome.RETRY, Disposition.RETRY, error)
                continue
            request = work.request.next_recheck(self._now())
            delay = min(
                SQS_MAX_DELAY_SECONDS,
                self.settings.recheck_base_delay_seconds * 2 ** min(work.request.recheck, 10),
            )
            try:
                self.queue.send(request, delay_seconds=delay)
                report.counters["rechecks"] += 1
            except errors.CallEnricherError as exc:
                self._override(work, report, Outcome.RETRY, Disposition.RETRY, exc)

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

    def _override(
        self,
        work: _CallWork,
        report: BatchReport,
        outcome: Outcome,
        disposition: Disposition,
        error: errors.CallEnricherError | None,
        *,
        version: int | None = None,
    ) -> None:
        """Change the decided result of ``work``'s messages (the counters follow)."""
        for key in work.keys:
            _override_result(report, key, outcome, disposition, error, version=version)

    def _failed_event(
        self, work: _CallWork, error: errors.CallEnricherError, reason: str
    ) -> OutgoingEvent:
        return call_enrichment_failed_event(
            key=_failed_key(work),
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


def _override_result(
    report: BatchReport,
    key: str,
    outcome: Outcome,
    disposition: Disposition,
    error: errors.CallEnricherError | None,
    *,
    version: int | None = None,
) -> None:
    """Change the decided result of one message (the counters follow)."""
    result = report.results[key]
    report.counters[result.outcome.value] -= 1
    report.counters[outcome.value] += 1
    result.outcome, result.disposition, result.error = outcome, disposition, error
    if version is not None:
        result.stored_version = version


def _enriched_event(
    work: _CallWork, stored: StoredCall, previous_status: str | None
) -> OutgoingEvent:
    """The ``Call Enriched`` event of a stored version, for the work that stored or found it."""
    return call_enriched_event(
        key=_enriched_key(work),
        stored=stored,
        previous_status=previous_status,
        context=work.request.context,
        entry_path=work.request.entry_path,
    )


def _enriched_key(work: _CallWork) -> str:
    """The publisher's correlation key of a work's ``Call Enriched`` event."""
    return f"call:{work.request.call_id}:{work.request.region or ''}"


def _failed_key(work: _CallWork) -> str:
    """The publisher's correlation key of a work's ``Call Enrichment Failed`` event."""
    return f"failed:{work.request.call_id}:{work.request.region or ''}"


def work_item_from_message(key: str, body: str | None) -> WorkItem:
    """Parse one queue message; a parse failure becomes a permanent error on the item."""
    from call_enricher.messages import parse_message_body

    try:
        return WorkItem(key=key, request=parse_message_body(body))
    except errors.CallEnricherError as exc:
        snippet = (body or "")[:64] if isinstance(body, str) else None
        call_id = exc.call_id if isinstance(exc, errors.MalformedMessageError) else None
        return WorkItem(key=key, error=exc, raw_call_id=snippet, call_id=call_id)
