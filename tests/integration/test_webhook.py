"""Webhook delivery against a local stack's moto server: the template's rule (its pattern
matched by moto, as deployed), its connection (the credentials resolved from the webhook's
secret) and the delivery that plays the API destination, to a receiver on 127.0.0.1.

Events are put on the bus directly (the sample events of ``events/eventbridge/``, varied),
so each test says exactly which events the rule must let through; the full path from a call
ID to the webhook is ``tests/e2e/test_webhook.py``.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from call_enricher.sinch.auth import SinchCredentials
from call_enricher_tools.local.stack import LocalStack
from call_enricher_tools.local.webhook import (
    Attempt,
    WebhookDelivery,
    WebhookReceiver,
    authorization_headers,
)
from tests.support.waiting import poll_until

pytestmark = pytest.mark.slow  # a moto server with the template's resources

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = {
    name: json.loads((ROOT / f"events/eventbridge/{name}.json").read_text())
    for name in ("call-enriched", "call-enrichment-failed", "spend-threshold-crossed")
}
CREDENTIALS = SinchCredentials(
    application_key="0b5e7c2a-0000-4aaa-8bbb-0a5000000004",
    application_secret="d2ViaG9vay10ZXN0LXNlY3JldC1uZXZlci1sb2dnZWQ=",
)


@contextmanager
def webhook_stack(
    receiver: WebhookReceiver, secret: dict[str, str] | None = None, **parameters: str
) -> Iterator[tuple[LocalStack, list[Attempt]]]:
    """A local stack whose webhook is ``receiver`` (its secret: the receiver's, or
    ``secret``), and its delivery running."""
    attempts: list[Attempt] = []
    with (
        receiver,
        LocalStack(
            sinch_credentials=CREDENTIALS,
            sinch_base_url="http://127.0.0.1:1",
            stack_name=f"hook-{uuid.uuid4().hex[:8]}",
            parameters=parameters,
            webhook_url=receiver.url,
            webhook_secret=secret or receiver.secret,
        ) as stack,
    ):
        (target,) = stack.webhook_targets
        delivery = WebhookDelivery(
            target, stack.client("sqs"), retry_base_seconds=0.01, on_attempt=attempts.append
        ).start()
        try:
            yield stack, attempts
        finally:
            delivery.stop()


def event(name: str, **detail: Any) -> dict[str, Any]:
    """A sample event with its detail changed, a fresh call ID and event ID."""
    envelope = copy.deepcopy(SAMPLES[name])
    call_id = uuid.uuid4().hex
    envelope["detail"].update({"callId": call_id, "eventId": f"{call_id}:v1", **detail})
    return envelope


def publish(stack: LocalStack, *envelopes: dict[str, Any]) -> None:
    outputs = stack.outputs()
    entries = [
        {
            "EventBusName": outputs["EventBusName"],
            "Source": outputs["EventSource"],
            "DetailType": str(e["detail-type"]),
            "Detail": json.dumps(e["detail"]),
        }
        for e in envelopes
    ]
    assert stack.client("events").put_events(Entries=entries)["FailedEntryCount"] == 0


def dead_letters(stack: LocalStack, count: int = 1) -> list[dict[str, Any]]:
    """The next ``count`` messages of the webhook's DLQ (received and deleted)."""
    sqs = stack.client("sqs")
    url = stack.outputs()["WebhookDeadLetterQueueUrl"]
    letters: list[dict[str, Any]] = []

    def received() -> bool:
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
        )
        for message in got.get("Messages", []):
            letters.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(letters) >= count

    assert poll_until(received, timeout=30), letters
    return letters


def ids(envelopes: list[dict[str, Any]]) -> set[str]:
    return {str(e["detail"]["eventId"]) for e in envelopes}


def publish_one_of_each(stack: LocalStack) -> list[dict[str, Any]]:
    """A FINAL and an ONGOING Call Enriched, a failure and a spend alert, on the bus."""
    envelopes = [
        event("call-enriched", status="FINAL"),
        event("call-enriched", status="ONGOING"),
        event("call-enrichment-failed"),
        event("spend-threshold-crossed"),
    ]
    publish(stack, *envelopes)
    return envelopes


def delivered_once(receiver: WebhookReceiver, expected: list[dict[str, Any]]) -> bool:
    """Whether exactly these events reach the receiver, each once (nothing more comes)."""
    assert poll_until(lambda: len(receiver.events()) >= len(expected), timeout=30)
    assert not poll_until(lambda: len(receiver.events()) > len(expected), timeout=2)
    return ids(receiver.events()) == ids(expected) and len(receiver.events()) == len(expected)


def test_the_default_filters_deliver_final_records_and_failures_with_the_api_key() -> None:
    # Given the webhook on with the template's default filters
    receiver = WebhookReceiver()
    with webhook_stack(receiver) as (stack, attempts):
        # When one event of each kind is published on the bus
        final, _ongoing, failed, _spend = publish_one_of_each(stack)
        # Then the FINAL record and the failure are delivered, each once ...
        assert delivered_once(receiver, [final, failed])
        # ... as EventBridge sends them: the whole event (envelope and detail), JSON, the
        # connection's key in its header (the receiver answers 401 without it)
        (delivered,) = [e for e in receiver.events() if e["detail-type"] == "Call Enriched"]
        # (moto's envelope has no "account"; EventBridge's does)
        assert set(delivered) >= set(SAMPLES["call-enriched"]) - {"account"}
        assert delivered["detail"] == final["detail"]
        assert all(d.authorized for d in receiver.deliveries)
        assert {d.headers["content-type"] for d in receiver.deliveries} == {
            "application/json; charset=utf-8"
        }
        assert [a.status for a in attempts] == [200, 200]
        target = stack.webhook_targets[0]
        assert target.headers == {"x-api-key": receiver.api_key}
        assert target.max_retry_attempts == 185
        assert target.rate_limit_per_second == 10


def test_the_filters_are_parameters() -> None:
    # Given the webhook asked for ONGOING and FINAL records and spend alerts only
    receiver = WebhookReceiver()
    parameters = {
        "WebhookDetailTypes": "Call Enriched,Spend Threshold Crossed",
        "WebhookStatuses": "FINAL,ONGOING",
    }
    with webhook_stack(receiver, **parameters) as (stack, _):
        final, ongoing, _failed, spend = publish_one_of_each(stack)
        # Then those three come, and the failure does not
        assert delivered_once(receiver, [final, ongoing, spend])


def test_basic_auth_takes_the_user_name_and_password_from_the_secret() -> None:
    # Given WebhookAuthType BASIC and a secret with a user name and password
    receiver = WebhookReceiver(auth_type="BASIC")
    with webhook_stack(receiver, WebhookAuthType="BASIC") as (stack, attempts):
        # Then the connection sends HTTP basic auth made of them
        (target,) = stack.webhook_targets
        assert target.headers == authorization_headers(
            "BASIC",
            {
                "BasicAuthParameters": {
                    "Username": receiver.secret["username"],
                    "Password": receiver.secret["password"],
                }
            },
        )
        assert target.headers["Authorization"].startswith("Basic ")
        final = event("call-enriched", status="FINAL")
        publish(stack, final)
        assert poll_until(lambda: attempts, timeout=30)
        assert attempts[0].status == 200
        assert ids(receiver.events()) == ids([final])


def test_retried_answers_are_retried_and_what_cannot_be_delivered_goes_to_the_dlq() -> None:
    # Given a webhook whose delivery may be retried twice
    receiver = WebhookReceiver()
    with webhook_stack(receiver, WebhookMaxRetryAttempts="2") as (stack, attempts):
        # When the endpoint answers 429 once, then 200
        receiver.fail_next(429)
        first = event("call-enriched", status="FINAL")
        publish(stack, first)
        assert poll_until(lambda: len(attempts) == 1, timeout=30)
        # Then the event is delivered on the second attempt
        assert (attempts[0].status, attempts[0].attempts) == (200, 2)
        assert attempts[0].dead_lettered is False
        # When it answers 503 three times (the first attempt and both retries)
        receiver.fail_next(503, 503, 503)
        second = event("call-enriched", status="FINAL")
        publish(stack, second)
        assert poll_until(lambda: len(attempts) == 2, timeout=30)
        # Then the event is in the webhook's DLQ, whole, with EventBridge's attributes
        assert (attempts[1].status, attempts[1].attempts, attempts[1].dead_lettered) == (
            503,
            3,
            True,
        )
        (letter,) = dead_letters(stack)
        assert json.loads(letter["Body"])["detail"] == second["detail"]
        attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
        (target,) = stack.webhook_targets
        assert attributes["RULE_ARN"] == target.rule_arn
        assert attributes["TARGET_ARN"] == target.target_arn
        assert attributes["EXHAUSTED_RETRY_CONDITION"] == "MaximumRetryAttemptsExhausted"
        assert attributes["RETRY_ATTEMPTS"] == "2"
        assert "HTTP 503" in attributes["ERROR_MESSAGE"]
        # When the endpoint answers 400 (a client error EventBridge does not retry)
        receiver.fail_next(400)
        third = event("call-enrichment-failed")
        publish(stack, third)
        assert poll_until(lambda: len(attempts) == 3, timeout=30)
        # Then it goes to the DLQ at once, with no retry condition
        assert (attempts[2].status, attempts[2].attempts) == (400, 1)
        (letter,) = dead_letters(stack)
        attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
        assert "EXHAUSTED_RETRY_CONDITION" not in attributes
        assert attributes["RETRY_ATTEMPTS"] == "0"
        assert json.loads(letter["Body"])["detail"]["eventId"] == third["detail"]["eventId"]


def test_a_wrong_key_is_refused_and_retried_then_dead_lettered() -> None:
    # Given a connection whose key is not the one the endpoint expects (a rotated secret)
    receiver = WebhookReceiver()
    wrong = {"apiKey": "an-old-key"}
    with webhook_stack(receiver, wrong, WebhookMaxRetryAttempts="1") as (stack, attempts):
        publish(stack, event("call-enriched", status="FINAL"))
        assert poll_until(lambda: attempts, timeout=30)
        # Then every request was refused (401, which EventBridge retries), and the event is
        # in the DLQ rather than lost
        assert {d.status for d in receiver.deliveries} == {401}
        assert (attempts[0].attempts, attempts[0].dead_lettered) == (2, True)
        assert dead_letters(stack)


def test_without_an_endpoint_there_is_no_webhook() -> None:
    # Given the template's defaults (WebhookEndpoint empty)
    with LocalStack(
        sinch_credentials=CREDENTIALS,
        sinch_base_url="http://127.0.0.1:1",
        stack_name=f"hook-{uuid.uuid4().hex[:8]}",
    ) as stack:
        # Then no rule, connection or API destination exists; the DLQ does (its alarm needs it)
        events = stack.client("events")
        bus = stack.outputs()["EventBusName"]
        names = [r["Name"] for r in events.list_rules(EventBusName=bus)["Rules"]]
        assert not [n for n in names if "Webhook" in n]
        connections = events.list_connections()["Connections"]
        assert not [c for c in connections if c["Name"].startswith(stack.stack_name)]
        destinations = events.list_api_destinations()["ApiDestinations"]
        assert not [d for d in destinations if d["Name"].startswith(stack.stack_name)]
        assert stack.webhook_targets == []
        assert "WebhookRuleName" not in stack.outputs()
        assert stack.outputs()["WebhookDeadLetterQueueUrl"]
