"""The outbox publisher: stream changes -> events, in order, chunked, stopping at a failure.

:class:`OutboxPublisher` runs against an in-memory EventPublisher (it records each
``PutEvents`` request and answers per event as told) and an in-memory FailureRecorder (it
records ``record_unpublishable``). No AWS, no sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer

from call_enricher import errors
from call_enricher.enrichment import enrich_json
from call_enricher.events import (
    DETAIL_TYPE_CALL_ENRICHED,
    DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
    OutgoingEvent,
    call_enrichment_failed_event,
)
from call_enricher.outbox import MAX_ENTRIES, OutboxPublisher, StreamChange, change_from_record
from call_enricher.state import Failure, StoredCall, failure_from_error, message_key

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


# -- the fakes -------------------------------------------------------------------------------------


class FakePublisher:
    """EventPublisher in memory: records each request; ``fail[eventId]`` is the error of
    that event (every send), anything else is accepted."""

    def __init__(self, fail: dict[str, errors.CallEnricherError] | None = None) -> None:
        self.fail = fail or {}
        self.requests: list[list[OutgoingEvent]] = []

    def publish(
        self, events: Sequence[OutgoingEvent]
    ) -> dict[str, errors.CallEnricherError | None]:
        self.requests.append(list(events))
        return {event.key: self.fail.get(event.detail["eventId"]) for event in events}

    def event_ids(self) -> list[list[str]]:
        return [[event.detail["eventId"] for event in request] for request in self.requests]


class FakeRecorder:
    """The publisher's one table write (items.FailureRecorder), recorded; ``error`` raises."""

    def __init__(self, error: errors.CallEnricherError | None = None) -> None:
        self.error = error
        self.unpublishable: list[tuple[str, int, Failure]] = []

    def record_unpublishable(self, call_id: str, version: int, failure: Failure) -> bool:
        if self.error is not None:
            raise self.error
        self.unpublishable.append((call_id, version, failure))
        return True


def outbox(
    publisher: FakePublisher,
    store: FakeRecorder | None = None,
    log: Callable[..., None] | None = None,
) -> OutboxPublisher:
    return OutboxPublisher(publisher, store or FakeRecorder(), now=lambda: NOW, log=log)  # type: ignore[arg-type]


# -- changes ---------------------------------------------------------------------------------------


@cache
def _record() -> str:
    sample = (ROOT / "events" / "sinch" / "busy-de.json").read_bytes()
    return json.dumps(enrich_json(sample).model_dump(mode="json", by_alias=True))


def version(call_id: str, number: int = 1, status: str = "FINAL", **fields: Any) -> StoredCall:
    return StoredCall(
        call_id=call_id,
        version=number,
        fingerprint=f"fp-{number}",
        status=status,
        record={**json.loads(_record()), "callId": call_id, "status": status},
        created_at=T0,
        updated_at=T0 + timedelta(minutes=number),
        **fields,
    )


def failure(call_id: str | None, error: errors.CallEnricherError | None = None) -> Failure:
    return failure_from_error(
        error or errors.CallNotFoundError("Call not found", http_status=404),
        failed_at=T0,
        call_id=call_id,
    )


class Changes:
    """Builds stream changes with increasing sequence numbers."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, old: StoredCall | None, new: StoredCall | None) -> StreamChange:
        self.seq += 1
        key = (new or old).call_id if (new or old) else ""
        return StreamChange(key=f"seq-{self.seq:03d}", item_key=key, old=old, new=new)

    def new_version(self, call_id: str, number: int = 1) -> StreamChange:
        old = version(call_id, number - 1, "ONGOING") if number > 1 else None
        return self(old, version(call_id, number, "ONGOING" if number == 1 else "FINAL"))

    def new_failure(self, call_id: str) -> StreamChange:
        return self(None, StoredCall(call_id=call_id, state="failed", failure=failure(call_id)))


@pytest.fixture
def change() -> Changes:
    return Changes()


# -- one event per change, nothing for the rest ----------------------------------------------------


def test_one_event_per_change(change):
    # Given a new version of one call, a new failure of another, and a version of a third
    changes = [change.new_version("a"), change.new_failure("b"), change.new_version("c", 2)]
    publisher = FakePublisher()
    # When the batch is published
    report = outbox(publisher).publish(changes)
    # Then each change gave one event, all in one PutEvents request, and none failed
    assert publisher.event_ids() == [["a:v1", publisher.requests[0][1].detail["eventId"], "c:v2"]]
    assert [e.detail_type for e in publisher.requests[0]] == [
        DETAIL_TYPE_CALL_ENRICHED,
        DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
        DETAIL_TYPE_CALL_ENRICHED,
    ]
    assert report.failed == {}
    assert (report.published, report.rejected) == (3, 0)
    assert report.by_type == {DETAIL_TYPE_CALL_ENRICHED: 2, DETAIL_TYPE_CALL_ENRICHMENT_FAILED: 1}


def test_no_event_for_an_unchanged_item_or_a_removal(change):
    # Given a change that touched neither version nor failure, and a TTL removal
    stored = version("a")
    changes = [
        change(stored, stored.model_copy(update={"expires_at": 1})),
        change(stored, None),
        change(None, StoredCall(call_id="msg:m-1")),  # moto's key-only INSERT
    ]
    publisher = FakePublisher()
    # When the batch is published / Then nothing is sent and nothing fails
    report = outbox(publisher).publish(changes)
    assert publisher.requests == []
    assert (report.failed, report.published, report.rejected) == ({}, 0, 0)


def test_a_change_with_a_version_and_a_failure_sends_both_in_order(change):
    # Given one change that stores a version and a failure at once
    new = version("a").model_copy(update={"state": "failed", "failure": failure("a")})
    publisher = FakePublisher()
    # When published / Then Call Enriched comes before Call Enrichment Failed, same request
    report = outbox(publisher).publish([change(None, new)])
    assert [[e.detail_type for e in r] for r in publisher.requests] == [
        [DETAIL_TYPE_CALL_ENRICHED, DETAIL_TYPE_CALL_ENRICHMENT_FAILED]
    ]
    assert report.published == 2


# -- order and chunks ------------------------------------------------------------------------------


def test_events_keep_stream_order_across_requests(change):
    # Given 25 versions of 25 calls
    changes = [change.new_version(f"call-{i:02d}") for i in range(25)]
    publisher = FakePublisher()
    # When published / Then requests of at most 10 entries, in stream order
    report = outbox(publisher).publish(changes)
    assert [len(r) for r in publisher.requests] == [MAX_ENTRIES, MAX_ENTRIES, 5]
    sent = [event_id for request in publisher.event_ids() for event_id in request]
    assert sent == [f"call-{i:02d}:v1" for i in range(25)]
    assert report.published == 25


def test_a_call_appears_at_most_once_per_request(change):
    # Given a call changed three times in one batch, between changes of other calls
    changes = [
        change.new_version("a", 1),
        change.new_version("b", 1),
        change.new_version("a", 2),
        change.new_version("c", 1),
        change.new_version("a", 3),
    ]
    publisher = FakePublisher()
    # When published
    outbox(publisher).publish(changes)
    # Then each request holds the call once, so its changes are accepted in order
    assert publisher.event_ids() == [["a:v1", "b:v1"], ["a:v2", "c:v1"], ["a:v3"]]


def test_a_change_is_never_split_across_requests(change):
    # Given 9 single-event changes, then one change with two events
    changes = [change.new_version(f"call-{i}") for i in range(9)]
    both = version("z").model_copy(update={"state": "failed", "failure": failure("z")})
    changes.append(change(None, both))
    publisher = FakePublisher()
    # When published / Then the two-event change goes in the next request, whole
    outbox(publisher).publish(changes)
    assert [len(r) for r in publisher.requests] == [9, 2]


# -- failures --------------------------------------------------------------------------------------


def test_the_first_transient_failure_stops_the_batch(change):
    # Given five changes, the second one's event failing transiently
    changes = [
        change.new_version("a"),
        change.new_version("b"),
        change.new_version("c"),
        change.new_version("a", 2),  # starts a second request (a is in the first)
        change.new_version("d"),
    ]
    throttled = errors.AwsUnavailableError("EventBridge rejected the event: ThrottlingException")
    publisher = FakePublisher(fail={"b:v1": throttled})
    # When the batch is published
    report = outbox(publisher).publish(changes)
    # Then the first request was sent and nothing after it
    assert publisher.event_ids() == [["a:v1", "b:v1", "c:v1"]]
    # And the failed change and every later one are reported failed, the failed one with its
    # own error (the event source mapping retries from it, in order)
    assert list(report.failed) == ["seq-002", "seq-003", "seq-004", "seq-005"]
    assert report.failed["seq-002"] is throttled
    assert all(
        isinstance(report.failed[seq], errors.TransientError)
        for seq in ("seq-003", "seq-004", "seq-005")
    )
    # (c's event was accepted by EventBridge, so it counts as published; its retry is a
    # duplicate with the same ID, which consumers dedupe)
    assert report.published == 2


def test_a_failure_in_the_last_request_fails_it_and_the_rest_of_it(change):
    # Given three changes in one request, the first failing
    changes = [change.new_version("a"), change.new_version("b"), change.new_version("c")]
    publisher = FakePublisher(fail={"a:v1": errors.AwsUnavailableError("PutEvents failed")})
    # When published / Then all three are retried
    report = outbox(publisher).publish(changes)
    assert list(report.failed) == ["seq-001", "seq-002", "seq-003"]
    assert report.published == 2  # b's and c's were accepted (and will be sent again)


def test_a_call_enriched_event_too_large_becomes_the_calls_failure(change):
    # Given a version whose event EventBridge can never accept, then another change
    changes = [change.new_version("big", 2), change.new_version("next")]
    publisher = FakePublisher(fail={"big:v2": errors.EventTooLargeError("300000 bytes")})
    store = FakeRecorder()
    logged: list[tuple[Any, ...]] = []
    # When the batch is published
    report = outbox(publisher, store, log=lambda *a, **k: logged.append((*a, k))).publish(changes)
    # Then the store records that version as unpublishable (event-too-large), and the
    # record is not retried: the stream announces the failure in turn
    ((call_id, number, recorded),) = store.unpublishable
    assert (call_id, number) == ("big", 2)
    assert (recorded.reason, recorded.error_class, recorded.call_id) == (
        "event-too-large",
        "permanent",
        "big",
    )
    assert recorded.failed_at == NOW
    assert "version 2 of the call is stored but cannot be announced" in recorded.message
    assert report.failed == {}
    assert (report.rejected, report.published) == (1, 1)
    assert [entry[:2] for entry in logged] == [("error", "event rejected for good")]


def test_a_call_enriched_event_rejected_as_malformed_is_recorded_as_event_rejected(change):
    publisher = FakePublisher(fail={"a:v1": errors.EventRejectedError("MalformedDetail")})
    store = FakeRecorder()
    report = outbox(publisher, store).publish([change.new_version("a")])
    assert [failure.reason for _, _, failure in store.unpublishable] == ["event-rejected"]
    assert (report.failed, report.rejected) == ({}, 1)


def test_a_rejected_failure_event_is_counted_not_retried(change):
    # Given a failure event EventBridge rejects for good
    fail_change = change.new_failure("a")
    event_id = call_enrichment_failed_event("a", failure("a")).detail["eventId"]
    publisher = FakePublisher(fail={event_id: errors.EventTooLargeError("too big")})
    store = FakeRecorder()
    # When published
    report = outbox(publisher, store).publish([fail_change, change.new_version("b")])
    # Then it is counted as rejected, nothing is recorded (no loop of failure events), and
    # the batch goes on
    assert store.unpublishable == []
    assert report.failed == {}
    assert (report.rejected, report.published) == (1, 1)


def test_a_store_failure_recording_an_unpublishable_version_retries_the_record(change):
    # Given a too-large event, and the table unavailable when recording it
    changes = [change.new_version("big"), change.new_version("b", 2)]
    publisher = FakePublisher(fail={"big:v1": errors.EventTooLargeError("too big")})
    down = errors.AwsUnavailableError("DynamoDB UpdateItem failed: ThrottlingException")
    # When published / Then that change (and the rest) are retried
    report = outbox(publisher, FakeRecorder(error=down)).publish(changes)
    assert report.failed["seq-001"] is down
    assert list(report.failed) == ["seq-001", "seq-002"]


def test_a_stored_record_the_model_rejects_is_skipped_and_counted(change):
    # Given a change whose stored record no longer fits EnrichedCall, between good ones
    broken = StoredCall(call_id="bad", version=1, status="FINAL", record={"callId": "bad"})
    changes = [change.new_version("a"), change(None, broken), change.new_version("b")]
    publisher = FakePublisher()
    logged: list[tuple[Any, ...]] = []
    # When published / Then it is logged and counted, not retried, and the others go out
    report = outbox(publisher, log=lambda *a, **k: logged.append((*a, k))).publish(changes)
    assert publisher.event_ids() == [["a:v1", "b:v1"]]
    assert (report.failed, report.rejected, report.published) == ({}, 1, 2)
    assert logged[0][:2] == ("error", "stream record cannot be announced")


# -- replays ---------------------------------------------------------------------------------------


def test_a_replayed_change_gives_the_same_event_ids(change):
    # Given a batch published once, then replayed (the event source mapping retried it)
    changes = [
        change.new_version("a", 2),
        change.new_failure("b"),
        change(None, StoredCall(call_id=message_key("m-1"), state="failed", failure=failure(None))),
    ]
    first, replay = FakePublisher(), FakePublisher()
    outbox(first).publish(changes)
    outbox(replay).publish(changes)
    # Then every event, IDs included, is the same: consumers dedupe on the ID
    assert replay.event_ids() == first.event_ids()
    assert [e.detail for e in replay.requests[0]] == [e.detail for e in first.requests[0]]
    assert first.event_ids()[0][2].startswith("unknown:failed:call-not-found:")


def test_change_from_record_parses_a_lambda_stream_record():
    # Given a Lambda DynamoDB Streams record of a version replacing a failure
    old = StoredCall(call_id="a", state="failed", failure=failure("a"), created_at=T0)
    new = version("a")

    def image(stored: StoredCall) -> dict[str, Any]:
        text = stored.model_dump_json(by_alias=True, exclude_none=True)
        plain = json.loads(text, parse_float=Decimal)
        return {name: TypeSerializer().serialize(value) for name, value in plain.items()}

    record = {
        "eventName": "MODIFY",
        "dynamodb": {
            "Keys": {"callId": {"S": "a"}},
            "SequenceNumber": "4200",
            "OldImage": image(old),
            "NewImage": image(new),
        },
    }
    # When it is read / Then it is the change, images parsed
    assert change_from_record(record) == StreamChange(key="4200", item_key="a", old=old, new=new)
    # And a REMOVE has no new image
    removed = change_from_record({"dynamodb": {**record["dynamodb"], "NewImage": None}})
    assert removed.new is None
