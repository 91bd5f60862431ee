"""The service: enrich one call, enrich a batch. fetch -> validate -> enrich -> ONE write.

Every outcome of a request is one conditional write to the calls table (a new version, or a
failure state; nothing when the outcome is what is stored already) and nothing else: the
table's stream announces it (:mod:`call_enricher.outbox`). Handlers only translate a
:class:`Disposition` into their trigger's answer (a batch item failure, an HTTP status).

Per batch (the queue handler; the synchronous API path is a batch of one):

1. Summaries of every valid call ID are read in one ``BatchGetItem``: a stored FINAL version
   younger than ``FINAL_FRESHNESS_SECONDS`` is served from the table (Sinch is not asked).
   A failure state never short-circuits: a re-posted ID is asked of Sinch again.
2. Each distinct call runs on a bounded thread pool, only while enough of the invocation's
   time remains (the others are retried): fetch (deadline tied to the remaining time),
   validate, enrich, write.
3. ONGOING calls are re-checked by re-sending their message with an exponential delay
   (capped at 15 minutes) until ``RECHECK_MAX_AGE_SECONDS``, then ``not-final-in-time``.

Outcomes by error class: permanent errors and ``not found`` store a failure state and the
message is done (its ``Call Enrichment Failed`` event comes from the stream). Transient
errors, and errors an operator must fix (Sinch 401/403, missing configuration), are retried,
then land in the DLQ, from which they are redriven once fixed: nothing accepted is dropped.
A message without a valid call ID stores its failure under ``msg:{messageId}``. An unexpected
exception fails its own record only (retried), never the batch.
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
from call_enricher.messages import EnrichmentRequest, parse_message_body
from call_enricher.model import parse_call_record
from call_enricher.settings import SQS_MAX_DELAY_SECONDS, Settings
from call_enricher.sinch.regions import resolve_base_url
from call_enricher.state import (
    FINAL,
    Failure,
    StoredCall,
    failure_from_error,
    message_key,
    retry_trace,
)

if TYPE_CHECKING:
    from call_enricher.queueing import EnrichmentQueue
    from call_enricher.risk import RiskPolicy
    from call_enricher.sinch.client import AttemptInfo, SinchClient
    from call_enricher.storage import CallStore

# Errors an operator must fix: retried (then DLQ, redrivable) rather than recorded as final.
_OPERATOR_ERRORS = (errors.SinchAuthError, errors.ConfigurationError)


class Disposition(StrEnum):
    DONE = "done"  # terminal: the message can be deleted
    RETRY = "retry"  # report as a batch item failure; SQS redelivers, then the DLQ


class Outcome(StrEnum):
    ENRICHED = "enriched"  # a new version was stored
    UNCHANGED = "unchanged"  # Sinch returned what is stored already (or an older status)
    SERVED_FROM_STORE = "served-from-store"  # a stored FINAL stands: Sinch not asked / kept
    RECHECK_SCHEDULED = "recheck-scheduled"  # ONGOING: stored, re-check queued
    FAILED = "failed"  # a failure state is stored (or was already)
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
    receive_count: int = 1
    """SQS's ``ApproximateReceiveCount``: the attempt this delivery is."""


@dataclass
class ItemResult:
    key: str
    call_id: str | None
    outcome: Outcome
    disposition: Disposition
    stored: StoredCall | None = None
    """The call's state as the write (or the read that served it) left it."""
    error: errors.CallEnricherError | None = None
    attempts: int = 0


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
    risk_policy: RiskPolicy | None = None,
) -> tuple[EnrichedCall, int]:
    """Fetch one call from Sinch, validate and enrich it (no AWS). Returns (record, attempts).

    ``risk_policy``: the policy its ``risk`` is assessed under (default: the library's).
    """
    response = client.get_call(call_id, deadline=deadline)
    record = parse_call_record(response.data)
    enriched = enrich(
        record,
        raw=response.data,
        call_id=call_id,
        base_url=response.base_url,
        region=region,
        enriched_at=enriched_at,
        risk_policy=risk_policy,
    )
    return enriched, response.attempts


def work_item_from_message(key: str, body: str | None, receive_count: int = 1) -> WorkItem:
    """Parse one queue message; a parse failure becomes a permanent error on the item."""
    try:
        return WorkItem(key=key, request=parse_message_body(body), receive_count=receive_count)
    except errors.CallEnricherError as exc:
        snippet = body[:64] if isinstance(body, str) else None
        call_id = exc.call_id if isinstance(exc, errors.MalformedMessageError) else None
        return WorkItem(key=key, error=exc, raw_call_id=snippet, call_id=call_id)


@dataclass(frozen=True)
class _Answer:
    outcome: Outcome
    disposition: Disposition
    stored: StoredCall | None = None
    error: errors.CallEnricherError | None = None
    attempts: int = 0


class EnrichmentService:
    """Runs a batch of work items. Thread-safe collaborators are injected."""

    def __init__(
        self,
        settings: Settings,
        *,
        sinch: SinchClients,
        store: CallStore,
        queue: EnrichmentQueue | None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        log: Callable[..., None] | None = None,
        risk_policy: Callable[[], RiskPolicy] | None = None,
    ) -> None:
        self.settings = settings
        self.sinch = sinch
        self.risk_policy = risk_policy
        """Where the risk policy comes from (cached by the source); None: the default."""
        self.store = store
        self.queue = queue
        self._clock = clock
        self._now = now
        self._log = log or (lambda *_a, **_k: None)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.worker_threads, thread_name_prefix="enrich"
        )

    def process(self, items: Sequence[WorkItem], *, remaining_ms: Callable[[], int]) -> BatchReport:
        """Process ``items``; every key gets exactly one :class:`ItemResult`."""
        groups: dict[tuple[str, str | None], list[WorkItem]] = {}
        for item in items:
            group = (item.request.call_id, item.request.region) if item.request else ("", item.key)
            groups.setdefault(group, []).append(item)
        fresh = self._fresh_finals({call_id for call_id, _ in groups if call_id})

        def run(members: list[WorkItem]) -> _Answer:
            budget_ms = remaining_ms() - self.settings.deadline_margin_ms
            if budget_ms <= self._min_budget_ms():
                return _Answer(Outcome.NOT_STARTED, Disposition.RETRY)
            first = members[0]
            try:
                if first.request is None:
                    return self._fail_message(first)
                deadline = self._clock() + budget_ms / 1000.0
                return self._enrich(first.key, first.request, fresh, deadline)
            except Exception as exc:  # noqa: BLE001 (a bug must fail its record, not the batch)
                self._log("exception", "unexpected error", call_id=first.call_id)
                error = errors.TransientError(f"unexpected {type(exc).__name__}")
                return _Answer(Outcome.RETRY, Disposition.RETRY, error=error)

        def run_and_trace(members: list[WorkItem]) -> _Answer:
            answer = run(members)
            if answer.disposition is Disposition.RETRY and members[0].request is not None:
                self._note_retry(members, answer)
            return answer

        report = BatchReport(results={})
        futures = [
            (members, self._pool.submit(run_and_trace, members)) for members in groups.values()
        ]
        for members, future in futures:
            answer = future.result()
            for item in members:
                call_id = item.request.call_id if item.request else item.call_id
                report.results[item.key] = ItemResult(
                    item.key,
                    call_id,
                    answer.outcome,
                    answer.disposition,
                    answer.stored,
                    answer.error,
                    answer.attempts,
                )
                report.counters[answer.outcome.value] += 1
        report.sinch_attempts.extend(self.sinch.drain_attempts())
        return report

    # -- one call ------------------------------------------------------------------------

    def _enrich(
        self,
        key: str,
        request: EnrichmentRequest,
        fresh: dict[str, StoredCall],
        deadline: float,
    ) -> _Answer:
        stored = fresh.get(request.call_id)
        if stored is not None:
            return _Answer(Outcome.SERVED_FROM_STORE, Disposition.DONE, stored)
        region = request.region or self.settings.sinch_region
        # SINCH_BASE_URL, when set, overrides every region (the sandbox, tests).
        base_url = resolve_base_url(region=region, base_url=self.settings.sinch_base_url)
        attempts = 0
        try:
            policy = self.risk_policy() if self.risk_policy is not None else None
            enriched, attempts = fetch_and_enrich(
                self.sinch.for_base_url(base_url),
                request.call_id,
                region=region,
                deadline=deadline,
                enriched_at=self._now(),
                risk_policy=policy,
            )
            if enriched.status != FINAL and self._too_old(request):
                limit = self.settings.recheck_max_age_seconds
                error = errors.CallNotFinalError(f"the call was still ONGOING after {limit} s")
                reason = errors.FailureReason.NOT_FINAL_IN_TIME.value
                return self._fail(key, request, error, attempts, reason)
            saved = self.store.save(
                enriched, context=request.context, entry_path=request.entry_path
            )
        except errors.CallEnricherError as exc:
            return self._fail(key, request, exc, max(attempts, 1))
        outcome = Outcome.ENRICHED if saved.outcome.wrote else Outcome.UNCHANGED
        if saved.stored.status == FINAL:
            return _Answer(outcome, Disposition.DONE, saved.stored, attempts=attempts)
        return self._recheck(request, saved.stored, attempts)

    def _recheck(self, request: EnrichmentRequest, stored: StoredCall, attempts: int) -> _Answer:
        if self.queue is None:
            error = errors.ConfigurationError("ENRICHMENT_QUEUE_URL is needed for re-checks")
            return _Answer(Outcome.RETRY, Disposition.RETRY, stored, error, attempts)
        delay = min(
            SQS_MAX_DELAY_SECONDS,
            self.settings.recheck_base_delay_seconds * 2 ** min(request.recheck, 10),
        )
        try:
            self.queue.send(request.next_recheck(self._now()), delay_seconds=delay)
        except errors.CallEnricherError as exc:
            return _Answer(Outcome.RETRY, Disposition.RETRY, stored, exc, attempts)
        return _Answer(Outcome.RECHECK_SCHEDULED, Disposition.DONE, stored, attempts=attempts)

    def _fail(
        self,
        key: str,
        request: EnrichmentRequest,
        error: errors.CallEnricherError,
        attempts: int,
        reason: str | None = None,
    ) -> _Answer:
        """A failed attempt: retried, or stored as the call's failure state."""
        if not _is_final_failure(error):
            return _Answer(Outcome.RETRY, Disposition.RETRY, error=error, attempts=attempts)
        failure = failure_from_error(
            error,
            failed_at=self._now(),
            call_id=request.call_id,
            reason=reason,
            attempts=attempts + request.recheck,
            context=request.context,
            entry_path=request.entry_path,
            source_id=key,
        )
        return self._write_failure(request.call_id, failure, error, attempts)

    def _fail_message(self, item: WorkItem) -> _Answer:
        """A message that could not be parsed: its failure state, keyed by its message ID
        (a redelivery finds it stored and announces nothing twice)."""
        error = item.error or errors.MalformedMessageError("message could not be parsed")
        failure = failure_from_error(
            error,
            failed_at=self._now(),
            call_id=item.call_id,
            raw_call_id=item.raw_call_id,
            attempts=0,
            source_id=item.key,
        )
        return self._write_failure(message_key(item.key), failure, error, 0)

    def _write_failure(
        self, key: str, failure: Failure, error: errors.CallEnricherError, attempts: int
    ) -> _Answer:
        try:
            written = self.store.fail(key, failure)
        except errors.CallEnricherError as exc:
            return _Answer(Outcome.RETRY, Disposition.RETRY, error=exc, attempts=attempts)
        if written.stored.is_final:
            # A FINAL version stands; Sinch failing this time does not undo it.
            return _Answer(Outcome.SERVED_FROM_STORE, Disposition.DONE, written.stored)
        return _Answer(Outcome.FAILED, Disposition.DONE, written.stored, error, attempts)

    def _note_retry(self, members: list[WorkItem], answer: _Answer) -> None:
        """A call given back to SQS leaves its last transient error on its item."""
        first = members[0]
        if first.request is None:
            return
        error = answer.error or errors.DeadlineExceededError(
            "not started: the invocation was running out of time"
        )
        trace = retry_trace(
            error,
            at=self._now(),
            attempt=max(item.receive_count for item in members),
            source_id=first.key,
        )
        try:
            self.store.note_retry(first.request.call_id, trace)
        except Exception as exc:  # noqa: BLE001 (a trace must never change the outcome)
            self._log(
                "warning",
                "could not note the retry",
                call_id=first.request.call_id,
                error=type(exc).__name__,
            )

    # -- helpers -------------------------------------------------------------------------

    def _fresh_finals(self, call_ids: set[str]) -> dict[str, StoredCall]:
        """Stored FINAL versions young enough to serve without asking Sinch."""
        if not call_ids or self.settings.final_freshness_seconds <= 0:
            return {}
        try:
            stored = self.store.get_many(call_ids)
        except errors.CallEnricherError as exc:
            # An optimisation only: the conditional writes keep the table correct.
            self._log("warning", "could not pre-read stored calls", error=exc.message)
            return {}
        horizon = self._now() - timedelta(seconds=self.settings.final_freshness_seconds)
        return {
            call_id: call
            for call_id, call in stored.items()
            if call.state == "enriched"
            and call.is_final
            and call.updated_at is not None
            and call.updated_at > horizon
        }

    def _too_old(self, request: EnrichmentRequest) -> bool:
        if request.first_seen_at is None:
            return False
        age = (self._now() - request.first_seen_at).total_seconds()
        return age >= self.settings.recheck_max_age_seconds

    def _min_budget_ms(self) -> int:
        # Enough for one Sinch attempt plus the store write; below it a record is not started.
        return int(self.settings.sinch_connect_timeout_seconds * 1000) + 500


def _is_final_failure(error: errors.CallEnricherError) -> bool:
    """Permanent and not-found errors end a request; an operator's (401, 403, config) and
    transient ones are retried (then the DLQ, redrivable once fixed)."""
    terminal = error.error_class in (
        errors.ErrorClass.PERMANENT,
        errors.ErrorClass.NOT_FOUND,
        errors.ErrorClass.NOT_FINAL,
    )
    return terminal and not isinstance(error, _OPERATOR_ERRORS) and error.http_status != 403


def describe(results: Iterable[ItemResult]) -> dict[str, Any]:
    """A compact summary for logs and the CLI."""
    counts = Counter(result.outcome.value for result in results)
    return dict(sorted(counts.items()))
