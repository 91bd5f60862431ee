"""The stream publisher handler over real stream records: the calls table is the outbox.

AWS is in-process moto: the table's stream (new and old images) is read as the event source
mapping would and handed to the real ``functions/stream_publisher`` handler; a rule on the
bus forwards every event to a capture queue, so the tests see what a consumer would. Items
are written with the real :class:`~call_enricher.storage.CallStore`, as the queue and API
paths write them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from call_enricher import aws, errors, outbox
from call_enricher.enrichment import EnrichedCall, enrich_json
from call_enricher.state import Failure, failure_from_error
from call_enricher.storage import CallStore, WriteOutcome
from tests.support.lambda_context import FakeLambdaContext
from tests.support.queue_harness import (
    FINAL_ID,
    ONGOING_ID,
    SAMPLES,
    SCHEMAS,
    Harness,
    failed_ids,
    queue_harness,
)

UNKNOWN_ID = "00000000000000000000000000000404"
OTHER_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with queue_harness(monkeypatch) as started:
        yield started


@pytest.fixture
def store(harness: Harness) -> CallStore:
    return CallStore(harness.stack.table)


def enriched(call_id: str, sample: str = "answered-us-to-gb", **fields: Any) -> EnrichedCall:
    """A sample Sinch record for ``call_id`` (fields overridden), enriched."""
    body = {**SAMPLES[sample], **fields, "callId": call_id}
    return enrich_json(body, call_id=call_id, base_url="https://calling.api.sinch.com")


def failure(call_id: str, error: errors.CallEnricherError) -> Failure:
    return failure_from_error(error, failed_at=datetime.now(UTC), call_id=call_id, attempts=1)


def not_found(call_id: str) -> Failure:
    error = errors.CallNotFoundError(
        f"Sinch answered HTTP 404 for call {call_id}", http_status=404, sinch_error_code=40400
    )
    return failure(call_id, error)


def publish(harness: Harness, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The real stream publisher handler over ``records`` (one batch)."""
    response: dict[str, Any] = harness.publisher.lambda_handler(
        {"Records": records}, FakeLambdaContext()
    )
    return response


def delivered(harness: Harness) -> list[dict[str, Any]]:
    """The events delivered so far (from the capture queue), each schema-valid."""
    envelopes = harness.stack.events()
    for envelope in envelopes:
        jsonschema.validate(envelope["detail"], SCHEMAS[envelope["detail-type"]])
    return envelopes


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["detail-type"], e["detail"]["eventId"]) for e in events]


def no_sleep(harness: Harness) -> None:
    """No real backoff between PutEvents attempts in these tests."""
    outbox.get_outbox().publisher._sleep = lambda _seconds: None


# --- one event per state change ------------------------------------------------------------


def test_each_new_version_is_one_call_enriched_event(harness: Harness, store: CallStore) -> None:
    # Given a call stored ONGOING, then FINAL (two versions)
    assert store.save(enriched(ONGOING_ID, "ongoing-in-app-to-pstn")).outcome is (
        WriteOutcome.CREATED
    )
    final = enriched(ONGOING_ID)
    assert store.save(final, entry_path="recheck").outcome is WriteOutcome.UPDATED
    # When the stream publisher handles the table's stream records
    response = publish(harness, harness.stack.stream_records())
    # Then nothing is retried, and each version is one `Call Enriched` event, in order
    assert response == {"batchItemFailures": []}
    events = delivered(harness)
    assert summary(events) == [
        ("Call Enriched", f"{ONGOING_ID}:v1"),
        ("Call Enriched", f"{ONGOING_ID}:v2"),
    ]
    first, second = (e["detail"] for e in events)
    assert (first["status"], first["previousStatus"]) == ("ONGOING", None)
    assert (second["status"], second["previousStatus"], second["entryPath"]) == (
        "FINAL",
        "ONGOING",
        "recheck",
    )
    assert second["record"]["callId"] == ONGOING_ID


def test_each_failure_state_is_one_call_enrichment_failed_event(
    harness: Harness, store: CallStore
) -> None:
    # Given a call that failed as not found
    assert store.fail(UNKNOWN_ID, not_found(UNKNOWN_ID)).outcome is WriteOutcome.FAILED
    # And failed the same way again (the same failure: nothing written)
    assert store.fail(UNKNOWN_ID, not_found(UNKNOWN_ID)).outcome is WriteOutcome.UNCHANGED
    # And then failed differently (a new failure state)
    invalid = errors.InvalidRecordError("duration: must be >= 0", http_status=200)
    assert store.fail(UNKNOWN_ID, failure(UNKNOWN_ID, invalid)).outcome is WriteOutcome.FAILED
    # When the stream publisher handles the records
    assert publish(harness, harness.stack.stream_records()) == {"batchItemFailures": []}
    # Then each failure state is one `Call Enrichment Failed` event, in order
    events = delivered(harness)
    assert [(e["detail-type"], e["detail"]["reason"]) for e in events] == [
        ("Call Enrichment Failed", "call-not-found"),
        ("Call Enrichment Failed", "invalid-record"),
    ]
    first = events[0]["detail"]
    assert (first["callId"], first["sinchErrorCode"], first["httpStatus"]) == (
        UNKNOWN_ID,
        40400,
        404,
    )
    assert first["eventId"].startswith(f"{UNKNOWN_ID}:failed:call-not-found:")
    assert len({e["detail"]["eventId"] for e in events}) == 2


def test_a_failure_over_a_stored_version_announces_only_the_failure(
    harness: Harness, store: CallStore
) -> None:
    # Given an ONGOING version, announced
    store.save(enriched(ONGOING_ID, "ongoing-in-app-to-pstn"))
    assert publish(harness, harness.stack.stream_records()) == {"batchItemFailures": []}
    assert summary(delivered(harness)) == [("Call Enriched", f"{ONGOING_ID}:v1")]
    # When the call then fails (the version stays stored)
    store.fail(ONGOING_ID, failure(ONGOING_ID, errors.InvalidRecordError("bad record")))
    assert publish(harness, harness.stack.stream_records()) == {"batchItemFailures": []}
    # Then only the failure is announced: the version did not change
    (event,) = delivered(harness)
    assert (event["detail-type"], event["detail"]["reason"]) == (
        "Call Enrichment Failed",
        "invalid-record",
    )
    item = harness.stack.item(ONGOING_ID)
    assert item is not None
    assert (item["state"], item["version"]) == ("failed", 1)


def test_writes_that_change_neither_version_nor_failure_announce_nothing(
    harness: Harness, store: CallStore
) -> None:
    # Given a FINAL call stored and announced
    record = enriched(FINAL_ID)
    store.save(record)
    assert publish(harness, harness.stack.stream_records()) == {"batchItemFailures": []}
    assert len(delivered(harness)) == 1
    # When the same record is saved again (unchanged: no write, no stream record)
    assert store.save(record).outcome is WriteOutcome.UNCHANGED
    # And the item is touched without a change of state (a TTL set), then removed (as TTL)
    dynamodb = aws.client("dynamodb")
    dynamodb.update_item(
        TableName=harness.stack.table,
        Key={"callId": {"S": FINAL_ID}},
        UpdateExpression="SET expiresAt = :at",
        ExpressionAttributeValues={":at": {"N": "4102444800"}},
    )
    dynamodb.delete_item(TableName=harness.stack.table, Key={"callId": {"S": FINAL_ID}})
    records = harness.stack.stream_records()
    assert {r["eventName"] for r in records} == {"MODIFY", "REMOVE"}
    # Then the stream publisher handles those records and announces nothing
    assert publish(harness, records) == {"batchItemFailures": []}
    assert delivered(harness) == []


def test_a_replayed_batch_yields_the_same_event_ids(harness: Harness, store: CallStore) -> None:
    # Given a new version and a failure state on the stream
    store.save(enriched(FINAL_ID))
    store.fail(UNKNOWN_ID, not_found(UNKNOWN_ID))
    records = harness.stack.stream_records()
    # When the batch is published, then handed over again (a retry, a replay)
    assert publish(harness, records) == {"batchItemFailures": []}
    first = summary(delivered(harness))
    assert publish(harness, records) == {"batchItemFailures": []}
    again = summary(delivered(harness))
    # Then the replay carries the same event IDs (consumers dedupe on them)
    assert [kind for kind, _ in first] == ["Call Enriched", "Call Enrichment Failed"]
    assert again == first
    # And nothing was written by publishing
    assert harness.stack.stream_records() == []


# --- events EventBridge can never accept ---------------------------------------------------


def test_an_event_over_256_kb_becomes_an_event_too_large_failure(
    harness: Harness, store: CallStore, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stored version whose record is over EventBridge's 256 KB (custom data)
    huge = enriched(FINAL_ID, custom="x" * 300_000)
    saved = store.save(huge, context={"orderId": "A-1"}, entry_path="api")
    assert saved.outcome is WriteOutcome.CREATED
    # When the stream publisher handles its record
    response = publish(harness, harness.stack.stream_records())
    # Then it is not retried (it can never be accepted) and nothing is delivered
    assert response == {"batchItemFailures": []}
    assert delivered(harness) == []
    # And the item now holds an event-too-large failure, its version kept
    item = harness.stack.item(FINAL_ID)
    assert item is not None
    assert (item["state"], item["version"], item["status"]) == ("failed", 1, "FINAL")
    assert item["failure"]["reason"] == "event-too-large"
    # And it is counted as rejected
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    assert any(line.get("EventsRejected") == [1.0] for line in emf), emf
    # When the publisher handles that write's own stream record
    assert publish(harness, harness.stack.stream_records()) == {"batchItemFailures": []}
    # Then it yields one `Call Enrichment Failed` event with reason event-too-large
    (event,) = delivered(harness)
    detail = event["detail"]
    assert (event["detail-type"], detail["reason"], detail["callId"]) == (
        "Call Enrichment Failed",
        "event-too-large",
        FINAL_ID,
    )
    assert (detail["context"], detail["entryPath"]) == ({"orderId": "A-1"}, "api")
    assert "version 1" in detail["message"]


# --- the handler's answer ------------------------------------------------------------------


def test_the_handler_reports_the_records_to_retry_as_batch_item_failures(
    harness: Harness, store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two calls' versions on the stream
    store.save(enriched(FINAL_ID))
    store.save(enriched(OTHER_ID, "busy-de"))
    records = harness.stack.stream_records()
    other = next(
        r["dynamodb"]["SequenceNumber"]
        for r in records
        if r["dynamodb"]["Keys"]["callId"]["S"] == OTHER_ID
        and "version" in r["dynamodb"].get("NewImage", {})
    )
    # And EventBridge refusing OTHER's entry (a deployment fault: not resent)
    no_sleep(harness)
    events_client = outbox.get_outbox().publisher.client
    original = events_client.put_events

    def refuse_other(**kwargs: Any) -> Any:
        entries = kwargs["Entries"]
        keep = [e for e in entries if OTHER_ID not in e["Detail"]]
        results = iter(original(**{**kwargs, "Entries": keep})["Entries"] if keep else [])
        return {
            "FailedEntryCount": len(entries) - len(keep),
            "Entries": [
                next(results)
                if OTHER_ID not in e["Detail"]
                else {"ErrorCode": "AccessDeniedException", "ErrorMessage": "denied"}
                for e in entries
            ],
        }

    monkeypatch.setattr(events_client, "put_events", refuse_other)
    # When the batch is handled
    response = publish(harness, records)
    # Then the answer has the ReportBatchItemFailures shape, naming OTHER's record
    assert set(response) == {"batchItemFailures"}
    assert all(set(item) == {"itemIdentifier"} for item in response["batchItemFailures"])
    assert failed_ids(response) == {other}
    assert [e["detail"]["callId"] for e in delivered(harness)] == [FINAL_ID]
    # And when every record of a batch fails, the invocation fails (the mapping bisects)
    with pytest.raises(BatchProcessingError):
        publish(harness, [r for r in records if r["dynamodb"]["SequenceNumber"] == other])


# --- observability -------------------------------------------------------------------------


def test_metrics_count_the_events_published_without_phone_numbers(
    harness: Harness,
    store: CallStore,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from call_enricher.observability import logger

    log_stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", log_stream)
    # Given two versions and a failure state on the stream
    store.save(enriched(FINAL_ID))
    store.save(enriched(OTHER_ID, "busy-de"))
    store.fail(UNKNOWN_ID, not_found(UNKNOWN_ID))
    capsys.readouterr()
    # When the stream publisher handles them
    assert publish(harness, harness.stack.stream_records()) == {"batchItemFailures": []}
    output_lines = capsys.readouterr().out.splitlines() + log_stream.getvalue().splitlines()
    lines = [json.loads(line) for line in output_lines if line.startswith("{")]
    # Then EMF metrics count the events published, in all and per detail type
    emf = [line for line in lines if "_aws" in line]
    assert any(line.get("EventsPublished") == [3.0] for line in emf), emf
    by_type = {
        line["detailType"]: line["EventsPublishedByType"]
        for line in emf
        if "EventsPublishedByType" in line
    }
    assert by_type == {"Call Enriched": [2.0], "Call Enrichment Failed": [1.0]}
    assert not any("EventsRejected" in line for line in emf)
    # And no phone number of the records appears anywhere in the output
    output = json.dumps(lines)
    for sample in ("answered-us-to-gb", "busy-de"):
        for party in ("from", "to"):
            assert SAMPLES[sample][party]["endpoint"].lstrip("+") not in output
