"""The enrichment-queue sender: an ID counts as sent only once SQS confirmed it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from call_enricher import aws
from call_enricher.errors import AwsUnavailableError, ConfigurationError, MalformedMessageError
from call_enricher.messages import EnrichmentRequest
from call_enricher.queueing import EnrichmentQueue


@pytest.fixture
def queue_url(aws_mock: None) -> str:
    return str(aws.client("sqs").create_queue(QueueName="enrichment")["QueueUrl"])


def _requests(n: int) -> list[EnrichmentRequest]:
    return [EnrichmentRequest(call_id=f"call{i:04d}") for i in range(n)]


def _received(queue_url: str) -> list[dict[str, Any]]:
    sqs = aws.client("sqs")
    bodies: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_send_many_batches_by_ten(queue_url: str, spy: Any) -> None:
    # Given 23 requests
    client = spy(aws.client("sqs"))
    queue = EnrichmentQueue(queue_url, client=client)
    # When sent
    results = queue.send_many(_requests(23))
    # Then all are confirmed, in three SendMessageBatch calls, and all arrived
    assert results == [None] * 23
    assert client.count("send_message_batch") == 3
    assert sorted(b["callId"] for b in _received(queue_url)) == [f"call{i:04d}" for i in range(23)]


def test_a_request_that_cannot_be_serialised_fails_alone(queue_url: str) -> None:
    # Given three requests, the middle one with a context nested too deep to serialise (the
    # API builds requests itself, without parse_message_body's depth check)
    deep = json.loads('{"a":' * 300 + "1" + "}" * 300)
    requests = _requests(3)
    requests[1] = EnrichmentRequest(call_id="call-deep", context=deep)
    # When sent
    results = EnrichmentQueue(queue_url).send_many(requests)
    # Then only that one failed, permanently, and was never sent; the others arrived
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], MalformedMessageError)
    assert not results[1].retryable
    assert sorted(b["callId"] for b in _received(queue_url)) == ["call0000", "call0002"]


def test_failed_entries_are_retried_and_only_confirmed_ones_count(queue_url: str) -> None:
    real = aws.client("sqs")
    calls: list[list[str]] = []

    class Flaky:
        """Fails entry 1 once (retryable) and entry 2 always (sender fault)."""

        def send_message_batch(self, **kwargs: Any) -> Any:
            ids = [e["Id"] for e in kwargs["Entries"]]
            calls.append(ids)
            failed: list[dict[str, Any]] = []
            if "2" in ids:
                failed.append({"Id": "2", "Code": "InvalidParameterValue", "SenderFault": True})
            if len(calls) == 1:
                failed.append({"Id": "1", "Code": "InternalError", "SenderFault": False})
            keep = [e for e in kwargs["Entries"] if e["Id"] not in {f["Id"] for f in failed}]
            if keep:
                real.send_message_batch(QueueUrl=kwargs["QueueUrl"], Entries=keep)
            return {"Successful": [{"Id": e["Id"]} for e in keep], "Failed": failed}

    queue = EnrichmentQueue(queue_url, client=Flaky(), sleep=lambda _: None)
    results = queue.send_many(_requests(3))
    assert results[:2] == [None, None]
    assert isinstance(results[2], AwsUnavailableError)
    assert calls == [["0", "1", "2"], ["1"]]
    assert sorted(b["callId"] for b in _received(queue_url)) == ["call0000", "call0001"]


def test_whole_call_failure_is_retried_then_reported_per_request(queue_url: str) -> None:
    class Down:
        attempts = 0

        def send_message_batch(self, **_: Any) -> Any:
            Down.attempts += 1
            raise ClientError({"Error": {"Code": "ServiceUnavailable"}}, "SendMessageBatch")

    queue = EnrichmentQueue(queue_url, client=Down(), max_attempts=3, sleep=lambda _: None)
    results = queue.send_many(_requests(2))
    assert all(isinstance(r, AwsUnavailableError) for r in results)
    assert Down.attempts == 3


def test_send_with_delay_is_capped(queue_url: str, spy: Any) -> None:
    client = spy(aws.client("sqs"))
    EnrichmentQueue(queue_url, client=client).send(_requests(1)[0], delay_seconds=5000)
    assert client.calls[0][1]["DelaySeconds"] == 900


def test_send_failure_is_classified(queue_url: str) -> None:
    class Throttled:
        def send_message(self, **_: Any) -> Any:
            raise ClientError({"Error": {"Code": "ThrottlingException"}}, "SendMessage")

    with pytest.raises(AwsUnavailableError):
        EnrichmentQueue(queue_url, client=Throttled()).send(_requests(1)[0])


def test_missing_queue_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        EnrichmentQueue("")
