"""EventBridge publishing: batching, size checks, failed-entry retries, per-key results.

The bus is in-process moto, with a rule forwarding our events to an SQS queue so the tests
see what a consumer receives. Failures moto does not produce (partial failures, throttling)
are injected by wrapping the client or with botocore's Stubber.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber

from call_enricher import aws
from call_enricher.errors import (
    AwsUnavailableError,
    ErrorClass,
    EventRejectedError,
    EventTooLargeError,
    PermanentError,
)
from call_enricher.events import (
    DETAIL_TYPE_CALL_ENRICHED,
    DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
    OutgoingEvent,
)
from call_enricher.publishing import MAX_ENTRY_BYTES, EventPublisher, compact_json, entry_size

from .conftest import EVENT_SOURCE


def event(n: int, *, size: int = 0, key: str | None = None) -> OutgoingEvent:
    detail: dict[str, Any] = {"n": n, "callId": f"call-{n}"}
    if size:
        detail["pad"] = "x" * size
    return OutgoingEvent(
        key=key or f"msg-{n}", detail_type=DETAIL_TYPE_CALL_ENRICHED, detail=detail
    )


class Recorder:
    """Sleeps that are recorded, not slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class PartialFailures:
    """An EventBridge client failing chosen entries (by detail ``n``) with chosen codes.

    ``plan[n]`` is the list of error codes entry ``n`` gets on its successive sends; once the
    list is used up the entry goes through to the real (moto) bus.
    """

    def __init__(self, inner: Any, plan: dict[int, list[str]]) -> None:
        self.inner = inner
        self.plan = {n: list(codes) for n, codes in plan.items()}
        self.sent: list[list[int]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        numbers = [json.loads(entry["Detail"])["n"] for entry in Entries]
        self.sent.append(numbers)
        results: list[dict[str, Any] | None] = []
        forward = []
        for n, entry in zip(numbers, Entries, strict=True):
            codes = self.plan.get(n)
            if codes:
                code = codes.pop(0)
                results.append({"ErrorCode": code, "ErrorMessage": f"injected {code}"})
            else:
                results.append(None)
                forward.append(entry)
        accepted = iter(self.inner.put_events(Entries=forward)["Entries"] if forward else [])
        entries = [result or next(accepted) for result in results]
        failed = sum(1 for entry in entries if "ErrorCode" in entry)
        return {"FailedEntryCount": failed, "Entries": entries}


@pytest.fixture
def publisher(event_bus, spy) -> EventPublisher:
    client = spy(aws.client("events"))
    return EventPublisher(event_bus.bus_name, EVENT_SOURCE, client=client, sleep=Recorder())


# -- the wire format and batching ---------------------------------------------------------------


def test_events_reach_a_rule_target_as_consumers_see_them(publisher, event_bus):
    # Given two events of both detail types
    enriched = event(1)
    failed = OutgoingEvent(
        key="msg-2",
        detail_type=DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
        detail={"n": 2, "reason": "call-not-found", "text": "Zürich ☎"},
        resources=("arn:aws:sqs:eu-west-1:123456789012:enrichment",),
    )
    # When they are published
    results = publisher.publish([enriched, failed])
    # Then both keys succeed and the rule's SQS target receives the EventBridge envelopes
    assert results == {"msg-1": None, "msg-2": None}
    envelopes = {e["detail-type"]: e for e in event_bus.received(expected=2)}
    assert set(envelopes) == {DETAIL_TYPE_CALL_ENRICHED, DETAIL_TYPE_CALL_ENRICHMENT_FAILED}
    assert envelopes[DETAIL_TYPE_CALL_ENRICHED]["source"] == EVENT_SOURCE
    assert envelopes[DETAIL_TYPE_CALL_ENRICHED]["detail"] == enriched.detail
    assert envelopes[DETAIL_TYPE_CALL_ENRICHMENT_FAILED]["detail"] == failed.detail
    assert envelopes[DETAIL_TYPE_CALL_ENRICHMENT_FAILED]["resources"] == list(failed.resources)
    # And Detail went out as compact JSON
    sent = publisher.client.calls[0][1]["Entries"][0]
    assert sent["Detail"] == '{"n":1,"callId":"call-1"}'
    assert sent["EventBusName"] == event_bus.bus_name


def test_put_events_is_called_with_at_most_10_entries(publisher, event_bus):
    # Given 23 events
    events = [event(n) for n in range(23)]
    # When they are published
    results = publisher.publish(events)
    # Then three PutEvents calls carried 10, 10 and 3 entries, in order, and all succeeded
    sizes = [len(kwargs["Entries"]) for _, kwargs in publisher.client.calls]
    assert sizes == [10, 10, 3]
    assert all(error is None for error in results.values())
    assert len(results) == 23
    delivered = sorted(envelope["detail"]["n"] for envelope in event_bus.received(expected=23))
    assert delivered == list(range(23))


def test_requests_stay_within_the_request_size_budget(publisher):
    # Given three events of about 100 KB each (10 would fit by count, not by size)
    events = [event(n, size=100_000) for n in range(3)]
    # When they are published
    results = publisher.publish(events)
    # Then they were split so no request carries more than 256 KB of entries
    assert [len(kwargs["Entries"]) for _, kwargs in publisher.client.calls] == [2, 1]
    assert all(error is None for error in results.values())


# -- size checks ---------------------------------------------------------------------------------


def test_entry_size_follows_the_documented_rule():
    # Given an entry with non-ASCII text and resources
    detail = compact_json({"city": "Zürich"})
    # When its size is computed / Then it counts UTF-8 bytes (+14 with Time)
    expected = len("src") + len("Call Enriched") + len(detail.encode()) + len("arn:1")
    assert len(detail.encode()) == len(detail) + 1  # "ü" is two bytes
    assert entry_size("src", "Call Enriched", detail, ["arn:1"]) == expected
    assert entry_size("src", "Call Enriched", detail, ["arn:1"], with_time=True) == expected + 14


def test_oversize_entry_fails_alone_before_sending(publisher):
    # Given one event over 256 KB between two normal ones
    events = [event(1), event(2, size=MAX_ENTRY_BYTES), event(3)]
    # When they are published
    results = publisher.publish(events)
    # Then the big one fails permanently without ever being sent; the others are published
    assert results["msg-1"] is None
    assert results["msg-3"] is None
    error = results["msg-2"]
    assert isinstance(error, EventTooLargeError)  # a PermanentError: no retry can help
    assert isinstance(error, EventRejectedError)
    assert error.error_class is ErrorClass.PERMANENT
    assert error.reason == "event-too-large"
    assert "entry limit" in error.message
    sent = [json.loads(e["Detail"])["n"] for _, kw in publisher.client.calls for e in kw["Entries"]]
    assert sent == [1, 3]


def test_entry_at_exactly_the_limit_is_sent(publisher):
    # Given an event whose entry is exactly 256 KB by the documented rule
    base = event(1)
    overhead = entry_size(EVENT_SOURCE, base.detail_type, compact_json({**base.detail, "pad": ""}))
    exact = event(1, size=MAX_ENTRY_BYTES - overhead)
    detail = compact_json(exact.detail)
    assert entry_size(EVENT_SOURCE, exact.detail_type, detail) == MAX_ENTRY_BYTES
    # When it is published / Then it is sent (the limit is inclusive)
    assert publisher.publish([exact]) == {"msg-1": None}
    assert publisher.client.count("put_events") == 1


def test_detail_that_is_not_json_fails_its_key_only(publisher):
    # Given a detail with a NaN (not valid JSON) next to a good event
    bad = OutgoingEvent(
        key="bad", detail_type=DETAIL_TYPE_CALL_ENRICHED, detail={"x": float("nan")}
    )
    # When published / Then only the bad key fails, permanently
    results = publisher.publish([bad, event(1)])
    assert isinstance(results["bad"], EventRejectedError)
    assert results["msg-1"] is None


# -- failed entries ------------------------------------------------------------------------------


def test_only_failed_entries_are_resent_and_only_their_keys_fail(event_bus):
    # Given a bus that throttles entry 2 once, fails entry 5 internally once,
    # rejects entry 7's detail for good and denies entry 8
    client = PartialFailures(
        aws.client("events"),
        {
            2: ["ThrottlingException"],
            5: ["InternalFailure"],
            7: ["MalformedDetail"],
            8: ["AccessDeniedException"],
        },
    )
    sleeps = Recorder()
    publisher = EventPublisher(
        event_bus.bus_name, EVENT_SOURCE, client=client, sleep=sleeps, random=lambda: 0.5
    )
    # When 10 events are published
    results = publisher.publish([event(n) for n in range(10)])
    # Then the first send carried all 10 and the resend only the two retryable failures
    assert client.sent == [list(range(10)), [2, 5]]
    assert len(sleeps.sleeps) == 1
    # And only the two rejected keys failed: malformed permanently, denied transiently
    assert isinstance(results["msg-7"], EventRejectedError)
    assert results["msg-7"].reason == "event-rejected"
    assert "MalformedDetail" in results["msg-7"].message
    assert isinstance(results["msg-8"], AwsUnavailableError)
    assert all(results[f"msg-{n}"] is None for n in (0, 1, 2, 3, 4, 5, 6, 9))
    # And every accepted event reached the bus exactly once
    delivered = sorted(e["detail"]["n"] for e in event_bus.received(expected=8))
    assert delivered == [0, 1, 2, 3, 4, 5, 6, 9]


def test_entries_still_failing_after_max_attempts_fail_transiently(event_bus):
    # Given a bus that keeps throttling entry 3
    client = PartialFailures(aws.client("events"), {3: ["ThrottlingException"] * 10})
    sleeps = Recorder()
    publisher = EventPublisher(
        event_bus.bus_name,
        EVENT_SOURCE,
        client=client,
        max_attempts=4,
        sleep=sleeps,
        random=lambda: 1.0,
    )
    # When 5 events are published
    results = publisher.publish([event(n) for n in range(5)])
    # Then entry 3 was sent 4 times with growing (full-jitter, capped) backoff, then failed
    assert client.sent == [[0, 1, 2, 3, 4], [3], [3], [3]]
    assert sleeps.sleeps == sorted(sleeps.sleeps)
    assert len(sleeps.sleeps) == 3
    error = results.pop("msg-3")
    assert isinstance(error, AwsUnavailableError)
    assert error.retryable
    assert "ThrottlingException" in error.message
    assert all(value is None for value in results.values())


def test_missing_results_are_treated_as_retryable():
    # Given a (misbehaving) answer with fewer results than entries, then a full one
    class Short:
        def __init__(self) -> None:
            self.sent: list[int] = []

        def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            self.sent.append(len(Entries))
            results = [{"EventId": f"id-{i}"} for i in range(len(Entries))]
            if len(self.sent) == 1:
                return {"FailedEntryCount": 0, "Entries": results[:-1]}
            return {"FailedEntryCount": 0, "Entries": results}

    client = Short()
    publisher = EventPublisher("bus", "src", client=client, sleep=Recorder())
    # When three events are published / Then the unconfirmed one is sent again and succeeds
    assert publisher.publish([event(1), event(2), event(3)]) == dict.fromkeys(
        ["msg-1", "msg-2", "msg-3"]
    )
    assert client.sent == [3, 1]


def test_a_key_fails_if_any_of_its_events_fails(event_bus):
    # Given two events for one key, the second rejected for good
    client = PartialFailures(aws.client("events"), {2: ["InvalidArgument"]})
    publisher = EventPublisher(event_bus.bus_name, EVENT_SOURCE, client=client)
    # When published / Then the key reports that error
    results = publisher.publish([event(1, key="same"), event(2, key="same"), event(3)])
    assert isinstance(results["same"], PermanentError)
    assert results["msg-3"] is None


# -- whole-call failures -------------------------------------------------------------------------


def _stubbed(max_attempts: int = 3) -> tuple[EventPublisher, Stubber, Recorder]:
    client = boto3.client("events", region_name="eu-west-1")
    sleeps = Recorder()
    publisher = EventPublisher("bus", "src", client=client, max_attempts=max_attempts, sleep=sleeps)
    return publisher, Stubber(client), sleeps


def _ok(count: int) -> dict[str, Any]:
    return {"FailedEntryCount": 0, "Entries": [{"EventId": f"id-{i}"} for i in range(count)]}


def test_whole_call_throttling_is_retried_then_succeeds():
    # Given PutEvents throttled twice, then answering
    publisher, stubber, sleeps = _stubbed()
    stubber.add_client_error("put_events", service_error_code="ThrottlingException")
    stubber.add_client_error(
        "put_events", service_error_code="InternalException", http_status_code=500
    )
    stubber.add_response("put_events", _ok(2))
    # When two events are published
    with stubber:
        results = publisher.publish([event(1), event(2)])
        stubber.assert_no_pending_responses()
    # Then they were published on the third call
    assert results == {"msg-1": None, "msg-2": None}
    assert len(sleeps.sleeps) == 2


def test_persistent_whole_call_failure_fails_only_that_requests_keys():
    # Given 12 events (two requests) and the first request throttled on every attempt
    publisher, stubber, _ = _stubbed(max_attempts=2)
    stubber.add_client_error("put_events", service_error_code="ThrottlingException")
    stubber.add_client_error("put_events", service_error_code="ThrottlingException")
    stubber.add_response("put_events", _ok(2))
    # When they are published
    with stubber:
        results = publisher.publish([event(n) for n in range(12)])
    # Then the first request's 10 keys fail transiently and the second request's 2 succeed
    failed = {key for key, error in results.items() if error is not None}
    assert failed == {f"msg-{n}" for n in range(10)}
    assert all(isinstance(results[key], AwsUnavailableError) for key in failed)
    assert results["msg-10"] is None
    assert results["msg-11"] is None


def test_permanent_whole_call_error_is_not_retried():
    # Given PutEvents rejecting the request as invalid
    publisher, stubber, sleeps = _stubbed()
    stubber.add_client_error("put_events", service_error_code="ValidationException")
    # When published / Then the keys fail permanently after a single call
    with stubber:
        results = publisher.publish([event(1)])
        stubber.assert_no_pending_responses()
    assert isinstance(results["msg-1"], PermanentError)
    # And not as a rejection of that entry: the request as a whole was refused
    assert not isinstance(results["msg-1"], EventRejectedError)
    assert sleeps.sleeps == []


def test_connection_errors_are_transient():
    # Given an endpoint that cannot be reached
    class Unreachable:
        def put_events(self, **_: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="https://events.eu-west-1.amazonaws.com")

    publisher = EventPublisher("bus", "src", client=Unreachable(), sleep=Recorder())
    # When published / Then the key fails transiently (the message will be retried)
    error = publisher.publish([event(1)])["msg-1"]
    assert isinstance(error, AwsUnavailableError)
    assert "EndpointConnectionError" in error.message


def test_nothing_to_publish_makes_no_call(publisher):
    assert publisher.publish([]) == {}
    assert publisher.client.calls == []
