"""The queue handler end to end in one process: SQS event -> real handler -> moto + fake Sinch.

AWS is in-process moto; Sinch is the fake server over real HTTP on 127.0.0.1, which checks
the signature of every request. The sample records in events/sinch/ are what Sinch serves.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ClientError

from call_enricher import aws, outbox, runtime
from call_enricher.settings import get_settings
from call_enricher.sinch.auth import SinchCredentials
from tests.support.fake_sinch import FakeSinch, Reply
from tests.support.lambda_context import FakeLambdaContext
from tests.support.queue_harness import (
    CREDENTIALS,
    FINAL_ID,
    ONGOING_ID,
    ROOT,
    SAMPLES,
    SCHEMAS,
    Harness,
    failed_ids,
    queue_harness,
    sqs_event,
)
from tests.support.queue_harness import call_id_of as _call_id

UNKNOWN_ID = "00000000000000000000000000000404"
OTHER_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with queue_harness(monkeypatch) as started:
        yield started


@pytest.fixture
def writes(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Item writes per key: every UpdateItem DynamoDB carried out (a refused condition is
    no write). Counted at the client, as moto's stream adds a key-only record to an insert."""
    dynamodb = aws.client("dynamodb")
    original = dynamodb.update_item
    counter: Counter[str] = Counter()

    def counting(**kwargs: Any) -> Any:
        response = original(**kwargs)
        counter[kwargs["Key"]["callId"]["S"]] += 1
        return response

    monkeypatch.setattr(dynamodb, "update_item", counting)
    return counter


class Crash(BaseException):
    """The invocation dies here (not an Exception: nothing in the service may catch it)."""


def assert_retrying(harness: Harness, call_id: str, reason: str) -> None:
    """The call is given back to SQS: no version, no failure state, only the retry's trace."""
    item = harness.stack.item(call_id)
    assert item is not None
    assert (item["state"], item["lastError"]["reason"]) == ("retrying", reason)
    assert "failure" not in item
    assert "version" not in item


def drain(harness: Harness) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The table's new stream records, and the events the real stream publisher delivers
    for them (each checked against its schema): what ``harness.events()`` does, with the
    records kept so a test can count the writes behind the events."""
    records = harness.stack.stream_records()
    if records:
        response = harness.publisher.lambda_handler({"Records": records}, FakeLambdaContext())
        assert response == {"batchItemFailures": []}, response
    envelopes = harness.stack.events()
    for envelope in envelopes:
        jsonschema.validate(envelope["detail"], SCHEMAS[envelope["detail-type"]])
    return records, envelopes


# --- the happy path -----------------------------------------------------------------------


def test_final_record_is_stored_and_announced(harness: Harness, writes: Counter[str]) -> None:
    # Given a JSON message with producer context and a bare call ID message
    body = json.dumps({"callId": FINAL_ID, "context": {"orderId": "A-1"}})
    bare = OTHER_ID
    # When the batch is handled
    response = harness.invoke(body, bare)
    # Then no message is reported failed
    assert response == {"batchItemFailures": []}
    # And each call is stored as version 1, state enriched, with no failure and no marker
    item = harness.stack.item(FINAL_ID)
    assert item is not None
    assert (item["version"], item["status"], item["state"]) == (1, "FINAL", "enriched")
    assert item["schemaVersion"] == "2.0.0"
    assert "failure" not in item
    assert "publishedVersion" not in item
    assert item["record"]["parties"]["to"]["phone"]["country"] == "GB"
    # And each outcome was one item write
    assert writes == {FINAL_ID: 1, bare: 1}
    # And one schema-valid `Call Enriched` event per call carries the record and context
    events = harness.events()
    assert sorted(e["detail"]["callId"] for e in events) == sorted([FINAL_ID, bare])
    first = next(e for e in events if e["detail"]["callId"] == FINAL_ID)
    assert first["detail-type"] == "Call Enriched"
    assert first["detail"]["eventId"] == f"{FINAL_ID}:v1"
    assert first["detail"]["context"] == {"orderId": "A-1"}
    assert first["detail"]["previousStatus"] is None
    # And Sinch saw signed requests only
    assert all(r.auth_check.value == "ok" for r in harness.sinch.requests)


def test_the_queue_handler_never_calls_put_events(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_client = aws.client("events")
    original = events_client.put_events
    calls: list[int] = []

    def counting(**kwargs: Any) -> Any:
        calls.append(len(kwargs["Entries"]))
        return original(**kwargs)

    monkeypatch.setattr(events_client, "put_events", counting)
    # Given a batch with a success, a call Sinch does not know and a malformed message
    # When the queue handler handles it
    response = harness.invoke(FINAL_ID, UNKNOWN_ID, "{not json")
    # Then it answers without ever calling PutEvents: it only wrote the table
    assert response == {"batchItemFailures": []}
    assert calls == []
    # And the events come from the stream, through the stream publisher
    kinds = sorted((e["detail-type"], e["detail"].get("reason")) for e in harness.events())
    assert kinds == [
        ("Call Enriched", None),
        ("Call Enrichment Failed", "call-not-found"),
        ("Call Enrichment Failed", "malformed-message"),
    ]
    assert sum(calls) == 3


def test_every_sample_record_goes_through(harness: Harness) -> None:
    # Given one message per sample record / When handled in one batch
    response = harness.invoke(*(_call_id(r) for r in SAMPLES.values()))
    # Then none fails and every call is stored and announced once
    assert response == {"batchItemFailures": []}
    events = harness.events()
    assert len(events) == len(SAMPLES)
    assert all(e["detail-type"] == "Call Enriched" for e in events)


def test_duplicate_delivery_does_not_call_sinch_again(harness: Harness) -> None:
    # Given a FINAL call already enriched
    harness.invoke(FINAL_ID)
    harness.events()
    # When the same call ID arrives again (another message, e.g. from the API)
    response = harness.invoke(json.dumps({"callId": FINAL_ID, "entryPath": "api"}))
    # Then it is served from the table: no new Sinch request, no write, no new event
    assert response == {"batchItemFailures": []}
    assert harness.sinch_requests(FINAL_ID) == 1
    assert drain(harness) == ([], [])


def test_same_call_twice_in_one_batch_is_fetched_once(
    harness: Harness, writes: Counter[str]
) -> None:
    # Given the same call ID twice in one batch / When handled
    response = harness.invoke(FINAL_ID, FINAL_ID)
    # Then Sinch is asked once, the item written once and one event announced
    assert response == {"batchItemFailures": []}
    assert harness.sinch_requests(FINAL_ID) == 1
    assert writes == {FINAL_ID: 1}
    assert len(harness.events()) == 1


# --- permanent failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "malformed-message"),
        ("{not json", "malformed-message"),
        ('{"region": "euc1"}', "malformed-message"),
        ("../../etc/passwd", "invalid-call-id"),
        ('{"callId": "abc%2Fdef"}', "invalid-call-id"),
    ],
)
def test_malformed_message_is_dropped_with_a_failure_event(
    harness: Harness, body: str, reason: str
) -> None:
    # Given a malformed message next to a good one
    response = harness.invoke(body, FINAL_ID)
    # Then neither is retried: the bad one is permanent, the good one succeeded
    assert response == {"batchItemFailures": []}
    # And the bad one's failure is stored under its message ID, kept for a day
    item = harness.stack.item("msg:msg-0")
    assert item is not None
    assert (item["state"], item["failure"]["reason"]) == ("failed", reason)
    assert item["expiresAt"] > datetime.now(UTC).timestamp()
    # And the stream announced it: one `Call Enrichment Failed` event with its reason
    failed = [e for e in harness.events() if e["detail-type"] == "Call Enrichment Failed"]
    assert [e["detail"]["reason"] for e in failed] == [reason]
    assert failed[0]["detail"]["callId"] is None
    # And only the good call reached Sinch
    assert [r.path for r in harness.sinch.requests] == [FakeSinch.call_path(FINAL_ID)]


def test_malformed_message_redelivered_is_announced_once(harness: Harness) -> None:
    # Given a malformed message, handled and announced
    event = sqs_event("{not json", ids=["m-redelivered"])
    assert harness.invoke_event(event) == {"batchItemFailures": []}
    (first,) = harness.events()
    assert first["detail"]["reason"] == "malformed-message"
    # When SQS delivers the same message (same messageId) again
    response = harness.invoke_event(event)
    # Then it is done again, but the same failure is stored already: no write, no event
    assert response == {"batchItemFailures": []}
    assert drain(harness) == ([], [])


def test_unknown_call_is_a_failure_event_with_sinch_error_code(harness: Harness) -> None:
    # Given a call ID Sinch does not know / When its message is handled
    response = harness.invoke(json.dumps({"callId": UNKNOWN_ID, "context": {"k": "v"}}))
    # Then the message is done and the failure announced with Sinch's code and the context
    assert response == {"batchItemFailures": []}
    (event,) = harness.events()
    detail = event["detail"]
    assert (detail["reason"], detail["sinchErrorCode"], detail["httpStatus"]) == (
        "call-not-found",
        40400,
        404,
    )
    assert detail["context"] == {"k": "v"}
    # And the item holds the failure state (no version)
    item = harness.stack.item(UNKNOWN_ID)
    assert item is not None
    assert (item["state"], item["failure"]["reason"]) == ("failed", "call-not-found")
    assert "version" not in item


def test_unknown_call_posted_twice_is_one_failure_event(
    harness: Harness, writes: Counter[str]
) -> None:
    # Given an unknown call ID, handled and announced
    first = harness.invoke_event(sqs_event(UNKNOWN_ID, ids=["first"]))
    assert first == {"batchItemFailures": []}
    # When it is posted again (another message)
    second = harness.invoke_event(sqs_event(UNKNOWN_ID, ids=["second"]))
    # Then Sinch is asked again (a failure never short-circuits), but the same failure is
    # stored already: one write in all, ONE `Call Enrichment Failed` event
    assert second == {"batchItemFailures": []}
    assert harness.sinch_requests(UNKNOWN_ID) == 2
    assert writes == {UNKNOWN_ID: 1}
    assert [(e["detail-type"], e["detail"]["reason"]) for e in harness.events()] == [
        ("Call Enrichment Failed", "call-not-found")
    ]
    # And the item holds state failed, reason call-not-found
    item = harness.stack.item(UNKNOWN_ID)
    assert item is not None
    assert (item["state"], item["failure"]["reason"]) == ("failed", "call-not-found")


def test_a_later_final_version_supersedes_a_failure(harness: Harness, writes: Counter[str]) -> None:
    # Given a call that failed as not found (stored and announced)
    harness.invoke(UNKNOWN_ID)
    harness.events()
    # When Sinch knows it later and the call ID is posted again
    harness.sinch.add_call(UNKNOWN_ID, {**SAMPLES["answered-us-to-gb"], "callId": UNKNOWN_ID})
    response = harness.invoke(UNKNOWN_ID)
    # Then version 1 is stored FINAL, the failure gone, and `Call Enriched` announced
    assert response == {"batchItemFailures": []}
    item = harness.stack.item(UNKNOWN_ID)
    assert item is not None
    assert (item["state"], item["version"], item["status"]) == ("enriched", 1, "FINAL")
    assert "failure" not in item
    assert writes == {UNKNOWN_ID: 2}  # the failure, then the version
    assert [(e["detail-type"], e["detail"]["eventId"]) for e in harness.events()] == [
        ("Call Enriched", f"{UNKNOWN_ID}:v1")
    ]


def test_invalid_record_is_a_failure_event(harness: Harness) -> None:
    # Given Sinch answers a record that fails validation
    bad = "badbadbadbadbadbadbadbadbadbad00"
    harness.sinch.on_call(bad, Reply.json({"callId": bad, "duration": -5, "status": "FINAL"}))
    # When it is handled
    response = harness.invoke(bad)
    # Then it is a permanent failure: stored and announced, not retried
    assert response == {"batchItemFailures": []}
    (event,) = harness.events()
    assert event["detail"]["reason"] == "invalid-record"
    assert "duration" in event["detail"]["message"]
    item = harness.stack.item(bad)
    assert item is not None
    assert (item["state"], item["failure"]["reason"]) == ("failed", "invalid-record")


# --- transient failures ---------------------------------------------------------------------


def test_sinch_outage_fails_only_that_message(harness: Harness) -> None:
    down = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0"
    harness.sinch.on_call(down, Reply.error(503, 50300))
    response = harness.invoke(FINAL_ID, down)
    assert failed_ids(response) == {"msg-1"}
    assert_retrying(harness, down, "sinch-unavailable")
    # No failure event for a transient error: SQS redelivers, then the DLQ
    assert [e["detail"]["callId"] for e in harness.events()] == [FINAL_ID]


@pytest.mark.parametrize(
    "reply",
    [
        Reply.html(200),
        Reply(status=200, body=b'{"callId": "4398599d1ba8', content_type="application/json"),
        Reply(status=200, body=b"", content_type="application/json"),
    ],
    ids=["html", "cut-short", "empty"],
)
def test_sinch_200_with_a_garbled_body_is_retried_not_failed(
    harness: Harness, reply: Reply
) -> None:
    # Given Sinch answers 200 with a body that is not JSON at all, every time
    garbled = "9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a"
    harness.sinch.on_call(garbled, reply)
    # When it is handled next to a good call
    response = harness.invoke(FINAL_ID, garbled)
    # Then only its message is retried (a batch item failure), after the client's retries
    assert failed_ids(response) == {"msg-1"}
    assert harness.sinch_requests(garbled) == 3
    # And nothing is stored as failed: the item only explains the retry; nothing announced
    assert_retrying(harness, garbled, "sinch-garbled-response")
    assert [e["detail"]["callId"] for e in harness.events()] == [FINAL_ID]


def test_sinch_403_is_retried_not_stored_as_failed(harness: Harness) -> None:
    # Given Sinch refuses one call with 403 (an operator must fix access)
    forbidden = "4034034034034034034034034034034f"
    harness.sinch.on_call(forbidden, Reply.error(403, 40300, "Forbidden"))
    # When it is handled next to a good call
    response = harness.invoke(FINAL_ID, forbidden)
    # Then it is reported as a batch item failure (SQS redelivers, then the DLQ)
    assert failed_ids(response) == {"msg-1"}
    # And nothing is stored as failed: the item only explains the retry; nothing announced
    assert_retrying(harness, forbidden, "sinch-rejected")
    assert [e["detail"]["callId"] for e in harness.events()] == [FINAL_ID]


def test_auth_failure_is_retried_not_dropped(harness: Harness) -> None:
    # Given credentials Sinch rejects (the secret is wrong even after a refresh)
    harness.sinch.credentials = SinchCredentials(
        application_key="other-key", application_secret=CREDENTIALS.application_secret
    )
    # When a batch with two calls is handled, every record fails
    with pytest.raises(BatchProcessingError):
        harness.invoke(FINAL_ID, OTHER_ID)
    # Then nothing is dropped: no failure state, no event (an operator must fix the secret;
    # the messages go to the DLQ after maxReceiveCount and can be redriven)
    assert harness.events() == []
    assert_retrying(harness, FINAL_ID, "sinch-auth")
    assert_retrying(harness, OTHER_ID, "sinch-auth")


def test_mixed_batch_reports_exactly_the_retryable_messages(harness: Harness) -> None:
    flaky = "f1a2f1a2f1a2f1a2f1a2f1a2f1a2f1a2"
    limited = "1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e"
    record = {**SAMPLES["busy-de"], "callId": flaky}
    harness.sinch.on_call(flaky, Reply.error(500), Reply.json(record))  # retried in-call
    harness.sinch.on_call(limited, Reply.error(429, 42900, headers={"Retry-After": "120"}))
    response = harness.invoke(
        FINAL_ID,  # ok
        "not a call id",  # permanent
        UNKNOWN_ID,  # not found
        flaky,  # transient, recovered by the client's retries
        limited,  # rate limited beyond the deadline: retried by SQS
    )
    assert failed_ids(response) == {"msg-4"}
    kinds = sorted((e["detail-type"], e["detail"].get("reason")) for e in harness.events())
    assert kinds == [
        ("Call Enriched", None),
        ("Call Enriched", None),
        ("Call Enrichment Failed", "call-not-found"),
        ("Call Enrichment Failed", "invalid-call-id"),
    ]


def test_records_not_started_in_time_are_retried(harness: Harness) -> None:
    # Given an invocation that has almost no time left
    context = FakeLambdaContext(remaining_ms=lambda: 400)
    # When a batch arrives, no record can start: the invocation fails as a whole so SQS
    # redelivers every message (never reported as success)
    with pytest.raises(BatchProcessingError):
        harness.invoke(FINAL_ID, OTHER_ID, context=context)
    assert harness.sinch.requests == []
    assert_retrying(harness, FINAL_ID, "deadline-exceeded")


# --- ONGOING calls ---------------------------------------------------------------------------


def test_ongoing_call_is_published_in_progress_and_rechecked(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []
    sqs = aws.client("sqs")
    original = sqs.send_message

    def spy(**kwargs: Any) -> Any:
        sent.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(sqs, "send_message", spy)
    # Given an ONGOING call
    response = harness.invoke(ONGOING_ID)
    # Then it is stored and announced as in progress
    assert response == {"batchItemFailures": []}
    (event,) = harness.events()
    assert event["detail"]["status"] == "ONGOING"
    assert event["detail"]["record"]["outcome"]["outcome"] == "in-progress"
    # And a re-check was queued with the base delay, carrying when it was first seen
    (recheck,) = sent
    assert recheck["DelaySeconds"] == 30
    body = json.loads(recheck["MessageBody"])
    assert (body["callId"], body["recheck"], body["entryPath"]) == (ONGOING_ID, 1, "recheck")
    # When the call has ended and the re-check arrives
    final = {**SAMPLES["answered-us-to-gb"], "callId": ONGOING_ID}
    harness.sinch.add_call(ONGOING_ID, final)
    response = harness.invoke(recheck["MessageBody"])
    # Then version 2 is FINAL, announced with the previous status, and no re-check follows
    assert response == {"batchItemFailures": []}
    (event,) = harness.events()
    assert (event["detail"]["version"], event["detail"]["status"]) == (2, "FINAL")
    assert event["detail"]["previousStatus"] == "ONGOING"
    assert len(sent) == 1


def test_recheck_delay_grows_and_is_capped(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, Any]] = []
    sqs = aws.client("sqs")
    monkeypatch.setattr(sqs, "send_message", lambda **kw: sent.append(kw) or {"MessageId": "x"})
    first_seen = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    body = json.dumps({"callId": ONGOING_ID, "recheck": 6, "firstSeenAt": first_seen})
    harness.invoke(body)
    assert sent[0]["DelaySeconds"] == 900  # 30 * 2**6 = 1920, capped at SQS's 15 minutes


def test_call_ongoing_for_too_long_fails_not_final_in_time(harness: Harness) -> None:
    first_seen = (datetime.now(UTC) - timedelta(hours=5)).isoformat()
    body = json.dumps({"callId": ONGOING_ID, "recheck": 12, "firstSeenAt": first_seen})
    response = harness.invoke(body)
    assert response == {"batchItemFailures": []}
    failed = [e for e in harness.events() if e["detail-type"] == "Call Enrichment Failed"]
    assert [e["detail"]["reason"] for e in failed] == ["not-final-in-time"]


def test_stale_ongoing_never_replaces_final(harness: Harness) -> None:
    # Given the call is stored FINAL (and published)
    final = {**SAMPLES["answered-us-to-gb"], "callId": ONGOING_ID}
    harness.sinch.add_call(ONGOING_ID, final)
    harness.invoke(ONGOING_ID)
    harness.events()
    # When a stale ONGOING answer arrives for it (FINAL_FRESHNESS off to force a fetch)
    harness.sinch.add_call(ONGOING_ID, SAMPLES["ongoing-in-app-to-pstn"])
    runtime.get_service().settings = get_settings().model_copy(
        update={"final_freshness_seconds": 0}
    )
    response = harness.invoke(ONGOING_ID)
    # Then the stored record stays FINAL at version 1 and nothing is announced
    assert response == {"batchItemFailures": []}
    item = harness.stack.item(ONGOING_ID)
    assert item is not None
    assert (item["status"], item["version"]) == ("FINAL", 1)
    assert harness.events() == []


# --- AWS failures and crash windows ---------------------------------------------------------


def test_a_crash_after_the_write_still_publishes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    dynamodb = aws.client("dynamodb")
    original = dynamodb.update_item

    def write_then_die(**kwargs: Any) -> Any:
        original(**kwargs)
        raise Crash("the invocation died after UpdateItem")

    # Given the invocation dies right after the record was written (before SQS deletes)
    monkeypatch.setattr(dynamodb, "update_item", write_then_die)
    with pytest.raises(Crash):
        harness.invoke(FINAL_ID)
    monkeypatch.setattr(dynamodb, "update_item", original)
    item = harness.stack.item(FINAL_ID)
    assert item is not None
    assert (item["state"], item["version"]) == ("enriched", 1)
    # When the stream publisher runs: the table's stream holds the change
    (event,) = harness.events()
    # Then the stored version is announced, exactly once
    assert (event["detail-type"], event["detail"]["eventId"]) == ("Call Enriched", f"{FINAL_ID}:v1")
    # And the redelivered message finds it stored: no write, no second event
    assert harness.invoke(FINAL_ID) == {"batchItemFailures": []}
    assert drain(harness) == ([], [])


def test_put_events_partial_failure_retries_that_record_and_every_later_one(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three calls stored one after the other (stream order: FINAL, OTHER, ONGOING)
    for call_id in (FINAL_ID, OTHER_ID, ONGOING_ID):
        assert harness.invoke(call_id) == {"batchItemFailures": []}
    records = harness.stack.stream_records()
    assert [r["dynamodb"]["Keys"]["callId"]["S"] for r in records] == [
        FINAL_ID,
        OTHER_ID,
        ONGOING_ID,
    ]
    # And EventBridge refusing OTHER's entry every time (retryable code, never accepted)
    publisher = outbox.get_outbox().publisher
    publisher._sleep = lambda _seconds: None  # no real backoff in tests
    events_client = publisher.client
    original = events_client.put_events
    sent: list[str] = []

    def partial(**kwargs: Any) -> Any:
        entries = kwargs["Entries"]
        sent.extend(json.loads(e["Detail"])["eventId"] for e in entries)
        keep = [e for e in entries if OTHER_ID not in e["Detail"]]
        response = original(**{**kwargs, "Entries": keep}) if keep else {"Entries": []}
        results = iter(response["Entries"])
        return {
            "FailedEntryCount": len(entries) - len(keep),
            "Entries": [
                next(results)
                if OTHER_ID not in e["Detail"]
                else {"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}
                for e in entries
            ],
        }

    monkeypatch.setattr(events_client, "put_events", partial)
    # When the stream publisher handles the batch
    response = harness.publisher.lambda_handler({"Records": records}, FakeLambdaContext())
    # Then OTHER's record and every later one are reported to retry, so the mapping
    # retries from OTHER's record (the lowest sequence number reported)
    sequence = [r["dynamodb"]["SequenceNumber"] for r in records]
    assert failed_ids(response) == {sequence[1], sequence[2]}
    # And OTHER's event was not delivered: FINAL's was, and ONGOING's, which went out in
    # the same PutEvents request and is reported anyway (at least once, same eventId)
    first = [e["detail"]["eventId"] for e in harness.stack.events()]
    assert first == [f"{FINAL_ID}:v1", f"{ONGOING_ID}:v1"]
    attempted = set(sent)
    # When the mapping retries from the failed record and EventBridge works again
    monkeypatch.setattr(events_client, "put_events", original)
    retry = harness.publisher.lambda_handler({"Records": records[1:]}, FakeLambdaContext())
    # Then both are delivered, with the event IDs their first attempt carried
    assert retry == {"batchItemFailures": []}
    delivered = [e["detail"]["eventId"] for e in harness.stack.events()]
    assert delivered == [f"{OTHER_ID}:v1", f"{ONGOING_ID}:v1"]
    assert set(delivered) <= attempted


def test_dynamodb_throttling_retries_the_message(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    dynamodb = aws.client("dynamodb")
    original = dynamodb.update_item

    def throttled(**kwargs: Any) -> Any:
        if kwargs["Key"]["callId"]["S"] != FINAL_ID:
            return original(**kwargs)
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
            "UpdateItem",
        )

    # Given DynamoDB throttles the write of one call
    monkeypatch.setattr(dynamodb, "update_item", throttled)
    # When that call and an invalid message are handled
    response = harness.invoke(FINAL_ID, "not a call id")
    # Then the throttled one is retried, unstored; the invalid one is stored and announced
    assert failed_ids(response) == {"msg-0"}
    assert harness.stack.item(FINAL_ID) is None
    assert [e["detail"]["reason"] for e in harness.events()] == ["invalid-call-id"]


# --- credentials -----------------------------------------------------------------------------


def test_rotated_secret_is_picked_up_after_a_401(harness: Harness) -> None:
    # Given a first call with the current credentials (cached by the function)
    assert harness.invoke(FINAL_ID) == {"batchItemFailures": []}
    # When the key is rotated at Sinch and in Secrets Manager (cache not yet expired)
    rotated = SinchCredentials(
        application_key="rotated-key-0001",
        application_secret="cm90YXRlZC1zZWNyZXQtZm9yLXRlc3RzLW9ubHk=",
    )
    harness.stack.rotate_secret(rotated)
    harness.sinch.credentials = rotated
    response = harness.invoke(OTHER_ID)
    # Then the 401 forced one refresh and the record succeeded with the new key
    assert response == {"batchItemFailures": []}
    statuses = [r.auth_check.value for r in harness.sinch.requests]
    assert statuses == ["ok", "wrong-key", "ok"]
    assert harness.sinch.requests[-1].header("Authorization").startswith("Application rotated-key")


def test_sample_sqs_event_is_handled(harness: Harness) -> None:
    # The sample event shipped for `sam local invoke -e events/sqs-batch.json`
    event = json.loads((ROOT / "events/sqs-batch.json").read_text())
    response = harness.invoke_event(event)
    assert response == {"batchItemFailures": []}
    assert {e["detail"]["callId"] for e in harness.events()} == {
        json.loads(r["body"])["callId"] if r["body"].startswith("{") else r["body"]
        for r in event["Records"]
    }


# --- observability -----------------------------------------------------------------------


def test_metrics_and_logs_are_emitted_without_phone_numbers(
    harness: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from call_enricher.observability import logger

    log_stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", log_stream)
    # Given a batch with a success and a permanent failure
    harness.invoke(FINAL_ID, UNKNOWN_ID)
    output_lines = capsys.readouterr().out.splitlines() + log_stream.getvalue().splitlines()
    lines = [json.loads(line) for line in output_lines if line.startswith("{")]
    # Then EMF metrics carry the counts, Sinch latency and the failure reason
    emf = [line for line in lines if "_aws" in line]
    names = {
        metric["Name"]
        for line in emf
        for directive in line["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    }
    assert {"RecordsEnriched", "SinchLatency", "SinchResponses", "EnrichmentFailed"} <= names
    failed = next(line for line in emf if "EnrichmentFailed" in line)
    assert failed["reason"] == "call-not-found"
    # And each record's log line names its call and message
    records = [line for line in lines if line.get("message") == "record processed"]
    assert {(r["callId"], r["messageId"]) for r in records} == {
        (FINAL_ID, "msg-0"),
        (UNKNOWN_ID, "msg-1"),
    }
    # And no full phone number of the record appears anywhere in the output
    record = SAMPLES["answered-us-to-gb"]
    output = json.dumps(lines)
    for party in ("from", "to"):
        assert record[party]["endpoint"].lstrip("+") not in output
