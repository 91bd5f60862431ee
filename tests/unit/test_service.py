"""The service: fetch -> validate -> enrich -> ONE write per outcome, against in-memory fakes.

:class:`EnrichmentService` runs with a fake Sinch (canned Get Call bodies from
``events/sinch``, or a domain error per call ID), a fake store with the calls table's
save/fail/get_many semantics (minimal: the real conditions are tested on moto in
``test_storage``), and a fake queue recording re-checks. No AWS, no network, no sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from call_enricher import errors
from call_enricher.events import REASON_NOT_FINAL_IN_TIME
from call_enricher.messages import EnrichmentRequest
from call_enricher.service import (
    Disposition,
    EnrichmentService,
    Outcome,
    SinchClients,
    WorkItem,
    work_item_from_message,
)
from call_enricher.settings import Settings
from call_enricher.state import FINAL, Failure, RetryTrace, StoredCall, message_key
from call_enricher.storage import WriteOutcome, WriteResult

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
FINAL_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"  # busy-de.json
ONGOING_ID = "7d8e9f0a1b2c3d4e5f60718293a4b5c6"  # ongoing-in-app-to-pstn.json
OTHER_ID = "4398599d1ba84ef3bde0a82dfb61abed"  # answered-us-to-gb.json
MISSING_ID = "0000000000000000000000000000dead"
SAMPLES = {
    FINAL_ID: "busy-de.json",
    ONGOING_ID: "ongoing-in-app-to-pstn.json",
    OTHER_ID: "answered-us-to-gb.json",
}


# -- the fakes -------------------------------------------------------------------------------------


class FakeSinch:
    """A Sinch client factory: every client answers the canned record of a call ID, or
    raises ``errors[call_id]``; ``asked`` lists the IDs asked, in order."""

    def __init__(self, **errors_by_id: BaseException) -> None:
        self.records = {
            cid: json.loads((ROOT / "events/sinch" / f).read_text()) for cid, f in SAMPLES.items()
        }
        self.errors: dict[str, BaseException] = dict(errors_by_id)
        self.errors.setdefault(
            MISSING_ID,
            errors.CallNotFoundError("Call not found", http_status=404, sinch_error_code=40400),
        )
        self.asked: list[str] = []

    def factory(self, base_url: str, _on_attempt: Any) -> Any:
        def get_call(call_id: str, *, deadline: float | None = None) -> Any:
            self.asked.append(call_id)
            if call_id in self.errors:
                raise self.errors[call_id]
            return SimpleNamespace(data=self.records[call_id], base_url=base_url, attempts=1)

        return SimpleNamespace(get_call=get_call)


class FakeStore:
    """The calls table's save/fail/get_many outcomes on a dict; ``requests`` lists every
    write asked (each is one conditional UpdateItem in the real store)."""

    def __init__(self, items: Mapping[str, StoredCall] | None = None) -> None:
        self.items: dict[str, StoredCall] = dict(items or {})
        self.requests: list[tuple[str, str, WriteOutcome]] = []
        self.error: BaseException | None = None
        self.traces: list[tuple[str, RetryTrace]] = []

    def get_many(self, call_ids: Any) -> dict[str, StoredCall]:
        return {key: self.items[key] for key in call_ids if key in self.items}

    def save(self, enriched: Any, *, context: Any = None, entry_path: Any = None) -> WriteResult:
        if self.error is not None:
            raise self.error
        old = self.items.get(enriched.call_id)
        fingerprint = enriched.provenance.fingerprint
        if old is not None and old.fingerprint == fingerprint:
            return self._answer("save", old, WriteOutcome.UNCHANGED)
        if old is not None and old.is_final and enriched.status != FINAL:
            return self._answer("save", old, WriteOutcome.REFUSED_REGRESSION)
        number = (old.version or 0) + 1 if old else 1
        new = StoredCall(
            call_id=enriched.call_id,
            version=number,
            fingerprint=fingerprint,
            status=enriched.status,
            previous_status=old.status if old else None,
            record=enriched.model_dump(mode="json", by_alias=True),
            context=context,
            entry_path=entry_path,
            created_at=NOW,
            updated_at=NOW,
        )
        outcome = WriteOutcome.CREATED if number == 1 else WriteOutcome.UPDATED
        return self._answer("save", new, outcome, store=True)

    def fail(self, key: str, failure: Failure) -> WriteResult:
        if self.error is not None:
            raise self.error
        old = self.items.get(key)
        if old is not None and old.is_final:
            return self._answer("fail", old, WriteOutcome.KEPT_FINAL)
        if old is not None and old.failure and old.failure.fingerprint == failure.fingerprint:
            return self._answer("fail", old, WriteOutcome.UNCHANGED)
        new = (old or StoredCall(call_id=key)).model_copy(
            update={"state": "failed", "failure": failure}
        )
        return self._answer("fail", new, WriteOutcome.FAILED, store=True)

    def note_retry(self, call_id: str, trace: RetryTrace) -> bool:
        self.traces.append((call_id, trace))  # a trace: neither a version nor a failure
        return True

    def _answer(
        self, op: str, stored: StoredCall, outcome: WriteOutcome, *, store: bool = False
    ) -> WriteResult:
        self.requests.append((op, stored.call_id, outcome))
        if store:
            self.items[stored.call_id] = stored
        return WriteResult(outcome, stored)


class FakeQueue:
    def __init__(self, error: errors.CallEnricherError | None = None) -> None:
        self.sent: list[tuple[EnrichmentRequest, int]] = []
        self.error = error

    def send(self, request: EnrichmentRequest, *, delay_seconds: int = 0) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append((request, delay_seconds))


# -- helpers ---------------------------------------------------------------------------------------


def service(
    sinch: FakeSinch | None = None,
    store: FakeStore | None = None,
    queue: FakeQueue | None = None,
    **settings: Any,
) -> EnrichmentService:
    config = Settings(worker_threads=2, sinch_base_url="https://sinch.test", **settings)
    return EnrichmentService(
        config,
        sinch=SinchClients((sinch or FakeSinch()).factory),
        store=store if store is not None else FakeStore(),  # type: ignore[arg-type]
        queue=queue,  # type: ignore[arg-type]
        clock=lambda: 1000.0,
        now=lambda: NOW,
    )


def message(key: str, call_id: str, **fields: Any) -> WorkItem:
    return work_item_from_message(key, json.dumps({"callId": call_id, **fields}))


def run(svc: EnrichmentService, *items: WorkItem, remaining_ms: int = 60_000) -> Any:
    return svc.process(list(items), remaining_ms=lambda: remaining_ms)


def stored_final(call_id: str = FINAL_ID, *, age: timedelta = timedelta(hours=1)) -> StoredCall:
    return StoredCall(
        call_id=call_id,
        version=1,
        fingerprint="stored-fp",
        status=FINAL,
        created_at=NOW - age,
        updated_at=NOW - age,
    )


# -- one write per outcome -------------------------------------------------------------------------


def test_one_write_per_outcome():
    # Given a batch of a FINAL call, an ONGOING one, a missing one and a malformed message
    store, queue = FakeStore(), FakeQueue()
    items = [
        message("m-1", FINAL_ID),
        message("m-2", ONGOING_ID),
        message("m-3", MISSING_ID),
        work_item_from_message("m-4", "{not json"),
    ]
    # When it is processed
    report = run(service(store=store, queue=queue), *items)
    # Then each record is done, with exactly one write each (and no other store call)
    outcomes = {key: (r.outcome, r.disposition) for key, r in report.results.items()}
    assert outcomes == {
        "m-1": (Outcome.ENRICHED, Disposition.DONE),
        "m-2": (Outcome.RECHECK_SCHEDULED, Disposition.DONE),
        "m-3": (Outcome.FAILED, Disposition.DONE),
        "m-4": (Outcome.FAILED, Disposition.DONE),
    }
    assert sorted((op, key) for op, key, _ in store.requests) == sorted(
        [("fail", MISSING_ID), ("fail", "msg:m-4"), ("save", FINAL_ID), ("save", ONGOING_ID)]
    )
    assert report.counters == {"enriched": 1, "recheck-scheduled": 1, "failed": 2}


def test_the_same_call_twice_in_a_batch_is_asked_and_written_once():
    # Given two messages for one call (a duplicate send)
    sinch, store = FakeSinch(), FakeStore()
    # When processed / Then Sinch is asked once, one write is made, both messages are done
    report = run(service(sinch, store), message("m-1", FINAL_ID), message("m-2", FINAL_ID))
    assert sinch.asked == [FINAL_ID]
    assert [op for op, _, _ in store.requests] == ["save"]
    assert {r.outcome for r in report.results.values()} == {Outcome.ENRICHED}
    assert report.results["m-2"].stored.version == 1


def test_a_new_version_is_saved_with_the_requests_context_and_entry_path():
    store = FakeStore()
    report = run(service(store=store), message("m-1", FINAL_ID, context={"o": 1}, entryPath="api"))
    result = report.results["m-1"]
    assert (result.call_id, result.attempts) == (FINAL_ID, 1)
    assert (result.stored.version, result.stored.context, result.stored.entry_path) == (
        1,
        {"o": 1},
        "api",
    )


def test_the_same_record_again_writes_nothing_new():
    # Given a stored version of the call, identical to what Sinch returns
    store = FakeStore()
    run(service(store=store, final_freshness_seconds=0), message("m-1", FINAL_ID))
    # When the call is asked again (no freshness short-cut)
    report = run(service(store=store, final_freshness_seconds=0), message("m-2", FINAL_ID))
    # Then the outcome is UNCHANGED and done
    assert (report.results["m-2"].outcome, report.results["m-2"].disposition) == (
        Outcome.UNCHANGED,
        Disposition.DONE,
    )
    assert [outcome for _, _, outcome in store.requests] == [
        WriteOutcome.CREATED,
        WriteOutcome.UNCHANGED,
    ]


# -- failures that are stored, failures that are retried ------------------------------------------


def test_not_found_stores_the_failure_and_is_done():
    store = FakeStore()
    report = run(service(store=store), message("m-1", MISSING_ID, context={"t": 7}))
    result = report.results["m-1"]
    assert (result.outcome, result.disposition) == (Outcome.FAILED, Disposition.DONE)
    assert isinstance(result.error, errors.CallNotFoundError)
    failure = store.items[MISSING_ID].failure
    assert failure is not None
    assert (failure.reason, failure.error_class, failure.call_id) == (
        "call-not-found",
        "not-found",
        MISSING_ID,
    )
    assert (failure.sinch_error_code, failure.http_status, failure.attempts) == (40400, 404, 1)
    assert (failure.source_id, failure.context, failure.failed_at) == ("m-1", {"t": 7}, NOW)
    assert result.stored.state == "failed"


@pytest.mark.parametrize(
    "error",
    [
        errors.InvalidRecordError("record does not validate"),
        errors.SinchRejectedError("bad request", http_status=400, sinch_error_code=40001),
        errors.InvalidCallIdError("call id has a forbidden character"),
    ],
    ids=lambda error: error.reason,
)
def test_a_permanent_failure_is_stored_and_done(error):
    store = FakeStore()
    report = run(service(FakeSinch(**{FINAL_ID: error}), store), message("m-1", FINAL_ID))
    assert report.results["m-1"].outcome is Outcome.FAILED
    assert report.results["m-1"].disposition is Disposition.DONE
    assert store.items[FINAL_ID].failure.reason == error.reason
    assert [op for op, _, _ in store.requests] == ["fail"]


@pytest.mark.parametrize(
    "error",
    [
        errors.SinchUnavailableError("503", http_status=503),
        errors.SinchTimeoutError("read timeout"),
        errors.SinchRateLimitedError("429", http_status=429),
        errors.SinchGarbledResponseError("body is not JSON"),
        errors.DeadlineExceededError("out of time"),
    ],
    ids=lambda error: error.reason,
)
def test_a_transient_failure_is_retried_with_no_write(error):
    # Given Sinch failing transiently for a message on its third delivery
    store = FakeStore()
    item = work_item_from_message("m-1", json.dumps({"callId": FINAL_ID}), receive_count=3)
    # When processed
    report = run(service(FakeSinch(**{FINAL_ID: error}), store), item)
    # Then it is retried, with no version and no failure written
    result = report.results["m-1"]
    assert (result.outcome, result.disposition) == (Outcome.RETRY, Disposition.RETRY)
    assert result.error is error
    assert store.requests == []
    # And only its retry trace is left on the item (why it is retried, which attempt)
    ((call_id, trace),) = store.traces
    assert (call_id, trace.reason, trace.attempt, trace.source_id) == (
        FINAL_ID,
        error.reason,
        3,
        "m-1",
    )


@pytest.mark.parametrize(
    "error",
    [
        errors.SinchAuthError("unauthorised", http_status=401),
        errors.SinchAuthError("forbidden", http_status=403),
        errors.SinchRejectedError("forbidden", http_status=403),
        errors.ConfigurationError("SINCH_SECRET_ID is not set"),
    ],
    ids=["401", "auth-403", "rejected-403", "configuration"],
)
def test_an_error_an_operator_must_fix_is_retried_not_stored(error):
    store = FakeStore()
    report = run(service(FakeSinch(**{FINAL_ID: error}), store), message("m-1", FINAL_ID))
    assert report.results["m-1"].disposition is Disposition.RETRY
    assert report.results["m-1"].outcome is Outcome.RETRY
    assert store.requests == []


def test_a_store_outage_is_retried():
    store = FakeStore()
    store.error = errors.AwsUnavailableError("DynamoDB UpdateItem failed: ThrottlingException")
    report = run(service(store=store), message("m-1", FINAL_ID), message("m-2", MISSING_ID))
    assert {r.disposition for r in report.results.values()} == {Disposition.RETRY}


def test_a_malformed_message_stores_its_failure_under_its_message_key():
    # Given a message without a call ID, and one with a valid ID but a bad region
    store = FakeStore()
    items = [
        work_item_from_message("m-1", "{not json"),
        work_item_from_message("m-2", json.dumps({"callId": OTHER_ID, "region": "mars"})),
    ]
    # When processed
    report = run(service(store=store), *items)
    # Then each failure is stored under msg:{messageId}, Sinch never asked
    assert set(store.items) == {message_key("m-1"), message_key("m-2")}
    first, second = store.items["msg:m-1"].failure, store.items["msg:m-2"].failure
    assert (first.reason, first.call_id, first.attempts) == ("malformed-message", None, 0)
    assert first.raw_call_id is not None
    assert (second.reason, second.call_id) == ("malformed-message", OTHER_ID)
    # And the results name the call when the message had a valid one
    assert report.results["m-1"].call_id is None
    assert report.results["m-2"].call_id == OTHER_ID
    assert {r.disposition for r in report.results.values()} == {Disposition.DONE}


def test_a_redelivered_malformed_message_writes_once():
    store = FakeStore()
    run(service(store=store), work_item_from_message("m-1", ""))
    report = run(service(store=store), work_item_from_message("m-1", ""))
    assert [outcome for _, _, outcome in store.requests] == [
        WriteOutcome.FAILED,
        WriteOutcome.UNCHANGED,
    ]
    assert report.results["m-1"].disposition is Disposition.DONE


# -- the stored state ------------------------------------------------------------------------------


def test_a_fresh_final_is_served_from_the_store_without_asking_sinch():
    sinch, store = FakeSinch(), FakeStore({FINAL_ID: stored_final()})
    report = run(service(sinch, store), message("m-1", FINAL_ID))
    result = report.results["m-1"]
    assert (result.outcome, result.disposition) == (Outcome.SERVED_FROM_STORE, Disposition.DONE)
    assert result.stored == stored_final()
    assert sinch.asked == []
    assert store.requests == []


def test_a_final_older_than_the_freshness_window_is_asked_again():
    sinch = FakeSinch()
    store = FakeStore({FINAL_ID: stored_final(age=timedelta(days=2))})
    report = run(service(sinch, store), message("m-1", FINAL_ID))
    assert sinch.asked == [FINAL_ID]
    assert report.results["m-1"].outcome is Outcome.ENRICHED  # Sinch's record differs


@pytest.mark.parametrize("with_version", [False, True], ids=["failure-only", "final-failed"])
def test_a_failure_state_never_short_circuits(with_version):
    # Given a call whose stored state is a failure (a FINAL whose event was unpublishable,
    # or a call Sinch did not know), re-posted
    stored = stored_final() if with_version else StoredCall(call_id=FINAL_ID, updated_at=NOW)
    store = FakeStore({FINAL_ID: stored.model_copy(update={"state": "failed"})})
    sinch = FakeSinch()
    # When processed / Then Sinch is asked again
    run(service(sinch, store), message("m-1", FINAL_ID))
    assert sinch.asked == [FINAL_ID]


def test_a_stored_final_stands_when_sinch_fails_for_good():
    # Given a stored FINAL (not fresh) and Sinch now answering 404 for the call
    store = FakeStore({FINAL_ID: stored_final(age=timedelta(days=2))})
    sinch = FakeSinch(**{FINAL_ID: errors.CallNotFoundError("gone", http_status=404)})
    # When processed
    report = run(service(sinch, store), message("m-1", FINAL_ID))
    # Then the FINAL is served and no failure is stored
    result = report.results["m-1"]
    assert (result.outcome, result.disposition) == (Outcome.SERVED_FROM_STORE, Disposition.DONE)
    assert result.stored.is_final
    assert store.items[FINAL_ID].failure is None
    assert [outcome for _, _, outcome in store.requests] == [WriteOutcome.KEPT_FINAL]


def test_a_pre_read_outage_only_costs_the_short_cut():
    # Given get_many failing (the pre-read is an optimisation)
    store = FakeStore({FINAL_ID: stored_final()})

    def down(_: Any) -> dict[str, StoredCall]:
        raise errors.AwsUnavailableError("BatchGetItem failed")

    store.get_many = down  # type: ignore[method-assign]
    sinch = FakeSinch()
    report = run(service(sinch, store), message("m-1", FINAL_ID))
    assert sinch.asked == [FINAL_ID]
    assert report.results["m-1"].disposition is Disposition.DONE


# -- ONGOING calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("recheck", "delay"), [(0, 30), (1, 60), (3, 240), (5, 900), (40, 900)])
def test_an_ongoing_call_is_saved_and_rechecked_with_a_growing_delay(recheck, delay):
    # Given an ONGOING call on its n-th re-check (first seen a minute ago)
    store, queue = FakeStore(), FakeQueue()
    first_seen = (NOW - timedelta(minutes=1)).isoformat()
    fields = {"recheck": recheck, "firstSeenAt": first_seen} if recheck else {}
    # When processed
    report = run(service(store=store, queue=queue), message("m-1", ONGOING_ID, **fields))
    # Then the version is saved and the message re-sent, delayed (capped at 15 minutes)
    assert report.results["m-1"].outcome is Outcome.RECHECK_SCHEDULED
    assert store.items[ONGOING_ID].status == "ONGOING"
    ((request, delay_seconds),) = queue.sent
    assert delay_seconds == delay
    assert (request.call_id, request.recheck, request.entry_path) == (
        ONGOING_ID,
        recheck + 1,
        "recheck",
    )
    assert request.first_seen_at == (NOW - timedelta(minutes=1) if recheck else NOW)


def test_a_stale_ongoing_answer_for_a_stored_final_is_done_without_a_recheck():
    # Given a stored FINAL (not fresh) and Sinch answering an ONGOING record for the call
    store, queue = (
        FakeStore({ONGOING_ID: stored_final(ONGOING_ID, age=timedelta(days=2))}),
        FakeQueue(),
    )
    # When processed / Then the FINAL stands (regression refused) and nothing is re-checked
    report = run(service(store=store, queue=queue), message("m-1", ONGOING_ID))
    result = report.results["m-1"]
    assert (result.outcome, result.disposition) == (Outcome.UNCHANGED, Disposition.DONE)
    assert result.stored.is_final
    assert [outcome for _, _, outcome in store.requests] == [WriteOutcome.REFUSED_REGRESSION]
    assert queue.sent == []


def test_an_ongoing_call_past_the_recheck_horizon_fails_not_final_in_time():
    # Given an ONGOING call first seen longer ago than RECHECK_MAX_AGE_SECONDS
    store, queue = FakeStore(), FakeQueue()
    first_seen = (NOW - timedelta(hours=4, seconds=1)).isoformat()
    item = message("m-1", ONGOING_ID, recheck=12, firstSeenAt=first_seen)
    # When processed
    report = run(service(store=store, queue=queue), item)
    # Then its failure is stored (not a version), and no re-check is sent
    result = report.results["m-1"]
    assert (result.outcome, result.disposition) == (Outcome.FAILED, Disposition.DONE)
    failure = store.items[ONGOING_ID].failure
    assert (failure.reason, failure.error_class) == (REASON_NOT_FINAL_IN_TIME, "not-final")
    assert failure.attempts == 13  # this attempt and the 12 re-checks before it
    assert [op for op, _, _ in store.requests] == ["fail"]
    assert queue.sent == []


def test_a_recheck_that_cannot_be_sent_is_retried():
    store = FakeStore()
    queue = FakeQueue(error=errors.AwsUnavailableError("SQS SendMessage failed"))
    report = run(service(store=store, queue=queue), message("m-1", ONGOING_ID))
    assert report.results["m-1"].disposition is Disposition.RETRY
    assert store.items[ONGOING_ID].version == 1  # the version is stored; the retry is UNCHANGED


def test_without_a_queue_an_ongoing_call_is_retried_as_a_configuration_error():
    report = run(service(queue=None), message("m-1", ONGOING_ID))
    result = report.results["m-1"]
    assert result.disposition is Disposition.RETRY
    assert isinstance(result.error, errors.ConfigurationError)


# -- robustness ------------------------------------------------------------------------------------


def test_an_unexpected_exception_fails_only_its_record():
    # Given Sinch's client crashing (a bug) for one call of the batch
    sinch = FakeSinch(**{ONGOING_ID: RuntimeError("boom")})
    store = FakeStore()
    # When the batch is processed
    report = run(
        service(sinch, store, FakeQueue()), message("m-1", ONGOING_ID), message("m-2", FINAL_ID)
    )
    # Then that record is retried, with a secret-free transient error, and the other is done
    crashed = report.results["m-1"]
    assert (crashed.outcome, crashed.disposition) == (Outcome.RETRY, Disposition.RETRY)
    assert isinstance(crashed.error, errors.TransientError)
    assert crashed.error.message == "unexpected RuntimeError"
    assert report.results["m-2"].outcome is Outcome.ENRICHED
    assert [key for _, key, _ in store.requests] == [FINAL_ID]


def test_records_are_not_started_when_time_runs_out():
    # Given an invocation with less time left than one Sinch attempt and a write need
    sinch, store = FakeSinch(), FakeStore()
    # When a batch is processed
    report = run(
        service(sinch, store),
        message("m-1", FINAL_ID),
        message("m-2", MISSING_ID),
        remaining_ms=3_500,
    )
    # Then no record is started: all are retried, Sinch not asked, nothing written
    assert {(r.outcome, r.disposition) for r in report.results.values()} == {
        (Outcome.NOT_STARTED, Disposition.RETRY)
    }
    assert sinch.asked == []
    assert store.requests == []
    assert report.counters == {"not-started": 2}
    assert {trace.reason for _, trace in store.traces} == {"deadline-exceeded"}


def test_a_trace_that_cannot_be_written_does_not_change_the_outcome():
    store = FakeStore()

    def down(_call_id: str, _trace: RetryTrace) -> bool:
        raise errors.AwsUnavailableError("DynamoDB UpdateItem failed")

    store.note_retry = down  # type: ignore[method-assign]
    sinch = FakeSinch(**{FINAL_ID: errors.SinchTimeoutError("read timeout")})
    report = run(service(sinch, store), message("m-1", FINAL_ID))
    assert report.results["m-1"].disposition is Disposition.RETRY
    assert isinstance(report.results["m-1"].error, errors.SinchTimeoutError)
