"""The callback receiver through its real handler: API Gateway v2 events, moto SQS + Secrets."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from call_enricher.messages import parse_message_body
from call_enricher.sinch.auth import SinchCredentials, signed_headers
from tests.support.handlers import load_handler
from tests.support.lambda_context import FakeLambdaContext
from tests.support.queue_harness import CREDENTIALS, Harness, queue_harness

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "events/sinch-dice-callback.json").read_text())
CALL_ID = "4398599d1ba84ef3bde0a82dfb61abed"


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with queue_harness(monkeypatch, SINCH_CALLBACK_PATH="/prod/hooks/sinch") as h:
        yield h


def signed(
    body: str, *, path: str = "/prod/hooks/sinch", credentials: SinchCredentials = CREDENTIALS
) -> dict[str, Any]:
    event = copy.deepcopy(SAMPLE)
    content_type = event["headers"]["content-type"]
    headers = signed_headers(
        credentials, method="POST", path=path, body=body.encode(), content_type=content_type
    )
    event["headers"]["x-timestamp"] = headers["x-timestamp"]
    event["headers"]["authorization"] = headers["Authorization"]
    event["body"] = body
    return event


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    handler = load_handler("sinch_callbacks", fresh=True)
    response: dict[str, Any] = handler.lambda_handler(event, FakeLambdaContext())
    return response


def queued(harness: Harness) -> list[str]:
    got = boto3.client("sqs").receive_message(
        QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10
    )
    return [m["Body"] for m in got.get("Messages", [])]


def test_a_signed_dice_is_enqueued_with_credentials_from_secrets_manager(harness: Harness):
    # Given the sample DiCE body signed with the secret stored in Secrets Manager, for the
    # path configured at Sinch (a stage prefix the function does not see)
    response = invoke(signed(SAMPLE["body"]))
    # Then 200 {} and the call ID is on the enrichment queue, as the queue contract parses it
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {}
    [body] = queued(harness)
    request = parse_message_body(body)
    assert (request.call_id, request.entry_path) == (CALL_ID, "callback")


def test_the_queue_handler_enriches_what_the_callback_enqueued(harness: Harness):
    invoke(signed(SAMPLE["body"]))
    [body] = queued(harness)
    response = harness.invoke(body)
    assert response["batchItemFailures"] == []
    assert [e["detail-type"] for e in harness.events()] == ["Call Enriched"]


def test_a_duplicate_callback_is_harmless(harness: Harness):
    event = signed(SAMPLE["body"])
    assert invoke(event)["statusCode"] == 200
    assert invoke(event)["statusCode"] == 200
    bodies = queued(harness)
    for body in bodies:
        harness.invoke(body)
    assert harness.sinch_requests(CALL_ID) == 1  # the second is served from the store


@pytest.mark.parametrize("what", ["path", "key", "body"])
def test_signature_failures_are_401_and_enqueue_nothing(harness: Harness, what: str):
    other = SinchCredentials(CREDENTIALS.application_key, "b3RoZXItc2VjcmV0")
    event = {
        "path": lambda: signed(SAMPLE["body"], path="/sinch/callbacks"),
        "key": lambda: signed(SAMPLE["body"], credentials=other),
        "body": lambda: {**signed(SAMPLE["body"]), "body": SAMPLE["body"].replace("185", "5")},
    }[what]()
    response = invoke(event)
    assert response["statusCode"] == 401
    assert json.loads(response["body"])["error"]["details"] is None
    assert queued(harness) == []


def test_the_sample_event_as_is_is_rejected_here(harness: Harness):
    # Its signature is real but for other credentials, another path and an old timestamp
    assert invoke(SAMPLE)["statusCode"] == 401
