"""The local API destination's rules, one delivery at a time, against the local receiver
over real HTTP (the DLQ is a recording stand-in: tests/integration/test_webhook.py runs the
whole thing on moto)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from call_enricher_tools.local.webhook import WebhookDelivery, WebhookReceiver, WebhookTarget

EVENT = json.dumps({"detail-type": "Call Enriched", "detail": {"eventId": "abc:v1"}})


class RecordingQueue:
    """The SQS calls the delivery makes to its DLQ."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {"MessageId": str(len(self.sent))}

    def attributes(self) -> dict[str, str]:
        (message,) = self.sent
        return {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}


def target(endpoint: str, headers: dict[str, str], **overrides: Any) -> WebhookTarget:
    fields: dict[str, Any] = {
        "rule_name": "rule",
        "rule_arn": "arn:aws:events:eu-west-1:123456789012:rule/bus/rule",
        "target_arn": "arn:aws:events:eu-west-1:123456789012:api-destination/d/1",
        "endpoint": endpoint,
        "method": "POST",
        "rate_limit_per_second": 300.0,
        "headers": headers,
        "max_retry_attempts": 3,
        "max_event_age_seconds": 86400.0,
        "outbox_url": "unused",
        "dead_letter_url": "dlq",
    }
    return WebhookTarget(**(fields | overrides))


@pytest.fixture
def receiver() -> Any:
    with WebhookReceiver(header="x-hook-key") as started:
        yield started


def delivery(t: WebhookTarget, dlq: RecordingQueue) -> WebhookDelivery:
    return WebhookDelivery(t, dlq, retry_base_seconds=0.001, retry_cap_seconds=0.01)


def test_the_key_goes_in_the_configured_header(receiver: WebhookReceiver) -> None:
    dlq = RecordingQueue()
    hook = delivery(target(receiver.url, {"x-hook-key": receiver.api_key}), dlq)
    attempt = hook.deliver(EVENT, first_seen=time.time())
    assert (attempt.status, attempt.attempts, attempt.dead_lettered) == (200, 1, False)
    (seen,) = receiver.deliveries
    assert seen.headers["x-hook-key"] == receiver.api_key
    assert seen.headers["user-agent"] == "Amazon/EventBridge/ApiDestinations"
    assert dlq.sent == []


def test_a_redirect_is_an_answer_not_followed_and_not_retried(receiver: WebhookReceiver) -> None:
    # Given an endpoint that answers 302 (EventBridge follows no redirect)
    receiver.fail_next(302)
    dlq = RecordingQueue()
    hook = delivery(target(receiver.url, {"x-hook-key": receiver.api_key}), dlq)
    attempt = hook.deliver(EVENT, first_seen=time.time())
    # Then one request only, and the event is in the DLQ without a retry condition
    assert (attempt.status, attempt.attempts, attempt.dead_lettered) == (302, 1, True)
    assert len(receiver.deliveries) == 1
    assert "EXHAUSTED_RETRY_CONDITION" not in dlq.attributes()
    assert json.loads(dlq.sent[0]["MessageBody"]) == json.loads(EVENT)


def test_an_event_too_old_to_retry_goes_to_the_dlq(receiver: WebhookReceiver) -> None:
    # Given an event first seen two minutes ago, a one-minute age limit and a 503
    receiver.fail_next(503)
    dlq = RecordingQueue()
    hook = delivery(
        target(receiver.url, {"x-hook-key": receiver.api_key}, max_event_age_seconds=60.0), dlq
    )
    attempt = hook.deliver(EVENT, first_seen=time.time() - 120)
    # Then it is not retried: its age is exhausted
    assert (attempt.attempts, attempt.dead_lettered) == (1, True)
    assert dlq.attributes()["EXHAUSTED_RETRY_CONDITION"] == "MaximumEventAgeExhausted"


def test_an_unreachable_endpoint_is_retried_then_dead_lettered() -> None:
    # Given an endpoint nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dlq = RecordingQueue()
    hook = delivery(target(f"http://127.0.0.1:{port}/events", {}, max_retry_attempts=2), dlq)
    attempt = hook.deliver(EVENT, first_seen=time.time())
    # Then every attempt failed to connect, and the DLQ says so
    assert (attempt.status, attempt.attempts, attempt.dead_lettered) == (None, 3, True)
    attributes = dlq.attributes()
    assert attributes["EXHAUSTED_RETRY_CONDITION"] == "MaximumRetryAttemptsExhausted"
    assert attributes["RETRY_ATTEMPTS"] == "2"
    assert "could not connect" in attributes["ERROR_MESSAGE"]
