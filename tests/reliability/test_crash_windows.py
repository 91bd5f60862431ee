"""Crash windows of the outbox design: kill processing at every step, redeliver, count events.

A Lambda invocation can die anywhere (timeout, out of memory, the runtime recycled): SQS then
redelivers every message of the batch that was not deleted, and a stream event source
mapping retries the stream records of a failed invocation. Each test kills the real queue
handler or the real stream publisher at one point, by making a patched AWS client (or the
handler itself) raise :class:`Killed`, a ``BaseException`` that no ``except Exception`` can
swallow (as good as the process dying there), then redelivers and counts the events on the
bus per ``eventId``.

What the tests establish (docs and README say the same):

========================================  ===========================================
killed ...                                afterwards
========================================  ===========================================
queue: after the Sinch fetch, before the  stored once, published exactly once
write
queue: after the write, before the SQS    the stream holds the change: published
delete                                    exactly once; the redelivery writes nothing
publisher: before PutEvents               retried: published exactly once
publisher: after PutEvents, before it     retried: published TWICE, same eventId and
answered                                  detail: the one at-least-once window
ONGOING: before the re-check is sent      no duplicate event; the re-check is sent
ONGOING: after the re-check is sent       two re-checks in flight, one FINAL event
mid-batch: records not started in time    only those are retried; each published once
the same message in two containers        one stored version, one event
at once (visibility timeout expired)
stored FINAL, then Sinch fails for good   no failure state, nothing announced
an unknown call ID delivered twice        one failure state, one failure event
========================================  ===========================================
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from call_enricher import aws, runtime
from tests.support.fake_sinch import Reply
from tests.support.lambda_context import FakeLambdaContext
from tests.support.queue_harness import (
    FINAL_ID,
    ONGOING_ID,
    SAMPLES,
    Harness,
    call_id_of,
    failed_ids,
    sqs_event,
)

HARNESSES = ["harness", "harness_no_freshness"]
SAMPLE_IDS = [call_id_of(record) for record in SAMPLES.values()]


class Killed(BaseException):
    """The invocation dies here (not an Exception: nothing in the pipeline may catch it)."""


def kill_once(
    monkeypatch: pytest.MonkeyPatch,
    client: Any,
    method: str,
    when: Callable[[dict[str, Any]], bool] = lambda _kwargs: True,
) -> list[dict[str, Any]]:
    """Make ``client.method`` die on its first call matching ``when``; later calls go through.

    Returns the list of kwargs of the killed call (empty until it happened).
    """
    original = getattr(client, method)
    killed: list[dict[str, Any]] = []

    def patched(**kwargs: Any) -> Any:
        if not killed and when(kwargs):
            killed.append(kwargs)
            raise Killed(f"{method} killed")
        return original(**kwargs)

    monkeypatch.setattr(client, method, patched)
    return killed


def is_record_write(kwargs: dict[str, Any]) -> bool:
    return "#record" in kwargs.get("UpdateExpression", "")


def event_ids(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["detail"]["eventId"] for e in events)


@pytest.fixture(params=HARNESSES)
def any_harness(request: pytest.FixtureRequest) -> Harness:
    """Each test runs with the idempotency window on (the default) and off."""
    harness: Harness = request.getfixturevalue(request.param)
    return harness


def test_killed_after_the_fetch_before_the_write(
    any_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the invocation dies as it writes the record
    killed = kill_once(monkeypatch, aws.client("dynamodb"), "update_item", is_record_write)
    event = sqs_event(FINAL_ID)
    with pytest.raises(Killed):
        any_harness.invoke_event(event)
    assert killed
    assert any_harness.stack.item(FINAL_ID) is None
    # When SQS redelivers the same record
    assert any_harness.invoke_event(event) == {"batchItemFailures": []}
    # Then the call is stored once and announced exactly once
    assert event_ids(any_harness.events()) == {f"{FINAL_ID}:v1": 1}
    item = any_harness.stack.item(FINAL_ID)
    assert item is not None
    assert (item["version"], item["state"]) == (1, "enriched")


def publisher_killed_at_put_events(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, *, after: bool
) -> None:
    """The stream publisher dies at its first PutEvents: before sending, or after EventBridge
    accepted the entries (``after``), so the mapping retries the same stream records."""
    events = aws.client("events")
    original = events.put_events
    calls: list[int] = []

    def put_events(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            if after:
                original(**kwargs)
            raise Killed("PutEvents killed")
        return original(**kwargs)

    monkeypatch.setattr(events, "put_events", put_events)


def test_killed_after_the_write_before_the_sqs_delete_publishes_once(
    any_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the queue invocation dies after its writes, before it could answer (so SQS
    # never deletes the messages)
    def die(_report: Any) -> None:
        raise Killed("after the writes")

    monkeypatch.setattr(any_harness.handler, "emit_batch_metrics", die)
    event = sqs_event(FINAL_ID, SAMPLE_IDS[0])
    with pytest.raises(Killed):
        any_harness.invoke_event(event)
    monkeypatch.setattr(any_harness.handler, "emit_batch_metrics", runtime.emit_batch_metrics)
    # When SQS redelivers both records, twice
    assert any_harness.invoke_event(event) == {"batchItemFailures": []}
    assert any_harness.invoke_event(event) == {"batchItemFailures": []}
    # Then the stream held each change: each call published exactly once
    assert event_ids(any_harness.events()) == {f"{FINAL_ID}:v1": 1, f"{SAMPLE_IDS[0]}:v1": 1}


def test_publisher_killed_before_put_events_publishes_once_on_retry(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given stored calls, and a stream publisher that dies before its first PutEvents
    assert harness.invoke(FINAL_ID, SAMPLE_IDS[0]) == {"batchItemFailures": []}
    records = harness.stack.stream_records()
    publisher_killed_at_put_events(harness, monkeypatch, after=False)
    with pytest.raises(Killed):
        harness.publisher.lambda_handler({"Records": records}, FakeLambdaContext())
    # When the mapping retries the same stream records
    response = harness.publisher.lambda_handler({"Records": records}, FakeLambdaContext())
    # Then every change is published exactly once
    assert response == {"batchItemFailures": []}
    assert event_ids(harness.stack.events()) == {f"{FINAL_ID}:v1": 1, f"{SAMPLE_IDS[0]}:v1": 1}


def test_publisher_killed_after_put_events_publishes_twice_with_the_same_id(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stored call, and a stream publisher that dies right after EventBridge accepted
    assert harness.invoke(json.dumps({"callId": FINAL_ID, "context": {"o": "1"}})) == {
        "batchItemFailures": []
    }
    records = harness.stack.stream_records()
    publisher_killed_at_put_events(harness, monkeypatch, after=True)
    with pytest.raises(Killed):
        harness.publisher.lambda_handler({"Records": records}, FakeLambdaContext())
    first = harness.stack.events()
    # When the mapping retries the same stream records
    assert harness.publisher.lambda_handler({"Records": records}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    second = harness.stack.events()
    # Then the version is published again: the documented at-least-once window. The copy has
    # the same eventId and detail, so a consumer that dedupes on eventId sees one.
    assert [e["detail"]["eventId"] for e in first] == [f"{FINAL_ID}:v1"]
    assert [e["detail"] for e in second] == [e["detail"] for e in first]


def test_ongoing_killed_before_the_recheck_is_sent(
    any_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an ONGOING call whose invocation dies as it schedules the re-check (the in-progress
    # version is stored, so the stream announces it)
    sqs = aws.client("sqs")
    kill_once(monkeypatch, sqs, "send_message")
    event = sqs_event(ONGOING_ID)
    with pytest.raises(Killed):
        any_harness.invoke_event(event)
    assert event_ids(any_harness.events()) == {f"{ONGOING_ID}:v1": 1}
    # When SQS redelivers the record
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(sqs, "send_message", lambda **kw: sent.append(kw) or {"MessageId": "r"})
    assert any_harness.invoke_event(event) == {"batchItemFailures": []}
    # Then no event is repeated, and the re-check is scheduled this time
    assert any_harness.events() == []
    assert [json.loads(s["MessageBody"])["recheck"] for s in sent] == [1]


def test_ongoing_killed_after_the_recheck_is_sent(
    any_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an ONGOING call whose invocation dies after sending its re-check
    sqs = aws.client("sqs")
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(sqs, "send_message", lambda **kw: sent.append(kw) or {"MessageId": "r"})

    def die(_report: Any) -> None:
        raise Killed("after the re-check was sent")

    monkeypatch.setattr(any_harness.handler, "emit_batch_metrics", die)
    event = sqs_event(ONGOING_ID)
    with pytest.raises(Killed):
        any_harness.invoke_event(event)
    monkeypatch.setattr(any_harness.handler, "emit_batch_metrics", runtime.emit_batch_metrics)
    # When the message is redelivered, a second re-check goes out (harmless duplicates)
    assert any_harness.invoke_event(event) == {"batchItemFailures": []}
    assert len(sent) == 2
    # And when both re-checks arrive after the call ended
    any_harness.sinch.add_call(ONGOING_ID, {**SAMPLES["answered-us-to-gb"], "callId": ONGOING_ID})
    rechecks = [s["MessageBody"] for s in sent]
    assert any_harness.invoke_event(sqs_event(*rechecks, ids=["r-1", "r-2"])) == {
        "batchItemFailures": []
    }
    assert any_harness.invoke_event(sqs_event(rechecks[1], ids=["r-2"])) == {
        "batchItemFailures": []
    }
    # Then v1 (ONGOING) and v2 (FINAL) were each published exactly once
    assert event_ids(any_harness.events()) == {f"{ONGOING_ID}:v1": 1, f"{ONGOING_ID}:v2": 1}
    item = any_harness.stack.item(ONGOING_ID)
    assert item is not None
    assert (item["status"], item["version"]) == ("FINAL", 2)


def test_records_not_started_before_the_timeout_are_retried_and_complete(
    any_harness: Harness,
) -> None:
    # Given a batch of every sample call, and an invocation about to time out: the first four
    # records see plenty of time, every later one too little to start
    bodies = SAMPLE_IDS
    ids = [f"m-{i}" for i in range(len(bodies))]
    event = sqs_event(*bodies, ids=ids)
    asked = iter(range(10_000))
    context = FakeLambdaContext(remaining_ms=lambda: 60_000 if next(asked) < 4 else 100)
    # When the batch is handled
    response = any_harness.invoke_event(event, context)
    # Then the records not started are reported for retry, the others are done
    retry = failed_ids(response)
    assert len(retry) == len(bodies) - 4
    # When SQS redelivers exactly those
    redelivered = [r for r in event["Records"] if r["messageId"] in retry]
    assert any_harness.invoke_event({"Records": redelivered}) == {"batchItemFailures": []}
    # Then every call was stored and published exactly once: nothing lost, nothing twice
    counts = event_ids(any_harness.events())
    assert counts == {f"{call_id}:v1": 1 for call_id in SAMPLE_IDS}


def test_a_batch_killed_by_no_time_at_all_loses_nothing(any_harness: Harness) -> None:
    # Given an invocation with no time left for any record: the whole batch fails
    event = sqs_event(*SAMPLE_IDS[:5], ids=[f"m-{i}" for i in range(5)])
    with pytest.raises(BatchProcessingError):
        any_harness.invoke_event(event, FakeLambdaContext(remaining_ms=lambda: 50))
    assert any_harness.sinch.requests == []
    # When it is redelivered with time, Then each record completes once
    assert any_harness.invoke_event(event) == {"batchItemFailures": []}
    assert event_ids(any_harness.events()) == {f"{c}:v1": 1 for c in SAMPLE_IDS[:5]}


def test_the_same_message_handled_twice_at_once_stores_one_version(
    harness_no_freshness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    # DynamoDB applies each write atomically; in-process moto does not (two concurrent
    # UpdateItems on one item can interleave their SET actions). One lock around the table
    # calls gives moto DynamoDB's per-item atomicity; everything else stays concurrent.
    dynamodb = aws.client("dynamodb")
    table_lock = threading.Lock()

    def atomic(call: Callable[..., Any]) -> Callable[..., Any]:
        def locked(**kwargs: Any) -> Any:
            with table_lock:
                return call(**kwargs)

        return locked

    for name in ("update_item", "get_item", "batch_get_item"):
        monkeypatch.setattr(dynamodb, name, atomic(getattr(dynamodb, name)))
    # Given two containers handling the same SQS records at the same time (a visibility
    # timeout expired while the first was still working: SQS is at-least-once)

    from call_enricher_tools.local.poller import load_function
    from tests.support.handlers import FUNCTIONS_DIR

    handlers = [
        load_function(FUNCTIONS_DIR / "queue_enricher" / "app.py", instance=f"twin_{i}")
        for i in range(2)
    ]
    event = sqs_event(*SAMPLE_IDS[:6], ids=[f"m-{i}" for i in range(6)])
    barrier = threading.Barrier(2)
    responses: list[Any] = []

    def run(handler: Callable[..., Any]) -> None:
        barrier.wait(timeout=10)
        responses.append(handler(event, FakeLambdaContext()))

    threads = [threading.Thread(target=run, args=(h,)) for h in handlers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then both succeed, each call is stored once (version 1: the conditional write
    # serialises them, the second write finds the same fingerprint and writes nothing), and
    # each version is announced exactly once (one stream record per change)
    assert responses == [{"batchItemFailures": []}] * 2
    counts = event_ids(harness_no_freshness.events())
    assert counts == {f"{call_id}:v1": 1 for call_id in SAMPLE_IDS[:6]}
    for call_id in SAMPLE_IDS[:6]:
        item = harness_no_freshness.stack.item(call_id)
        assert item is not None
        assert item["version"] == 1


def test_a_redelivery_failing_at_sinch_announces_no_failure_for_a_stored_final_call(
    any_harness: Harness,
) -> None:
    # Given a message whose call was stored FINAL and announced (e.g. by a slow first delivery)
    event = sqs_event(FINAL_ID)
    assert any_harness.invoke_event(event) == {"batchItemFailures": []}
    assert event_ids(any_harness.events()) == {f"{FINAL_ID}:v1": 1}
    # When the same message is delivered again and Sinch now fails it for good
    any_harness.sinch.on_call(FINAL_ID, Reply.error(404))
    assert any_harness.invoke_event(event) == {"batchItemFailures": []}
    # Then no failure is stored or announced for the FINAL call, nothing is published again
    assert any_harness.events() == []
    item = any_harness.stack.item(FINAL_ID)
    assert item is not None
    assert (item["status"], item["version"], item["state"]) == ("FINAL", 1, "enriched")
    assert "failure" not in item


def test_an_unknown_call_delivered_twice_is_one_failure_state_and_one_event(
    any_harness: Harness,
) -> None:
    # Given an ID Sinch does not know, posted twice (two messages, a redelivery of each)
    unknown = "0123456789abcdef0123456789abcdef"
    for ids in (["a"], ["b"], ["a"]):
        assert any_harness.invoke_event(sqs_event(unknown, ids=ids)) == {"batchItemFailures": []}
    # Then one failure state is stored and announced once
    events = any_harness.events()
    assert [(e["detail-type"], e["detail"]["reason"]) for e in events] == [
        ("Call Enrichment Failed", "call-not-found")
    ]
    item = any_harness.stack.item(unknown)
    assert item is not None
    assert (item["state"], item["failure"]["reason"]) == ("failed", "call-not-found")
