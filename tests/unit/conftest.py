"""Unit-test fixtures: offline AWS (in-process moto), fake credentials, a fixed region.

Every unit test runs with fake credentials and no endpoint override, so nothing can reach a
real AWS account even by mistake; the library's cached boto3 clients are dropped around each
test so a client never outlives the moto mock it was created under.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from moto import mock_aws

from call_enricher import aws

REGION = "eu-west-1"
CALLS_TABLE = "test-calls"
EVENT_BUS = "test-bus"
EVENT_SOURCE = "call-enricher"


@pytest.fixture(autouse=True)
def fake_aws_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials and region; no profile or endpoint from the developer's shell."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_EVENTBRIDGE",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    aws.reset_clients()
    yield
    aws.reset_clients()


@pytest.fixture
def aws_mock() -> Iterator[None]:
    """In-process moto for every AWS service, fresh for the test."""
    with mock_aws():
        yield


@pytest.fixture
def calls_table(aws_mock: None) -> str:
    """The calls table as the template defines it (partition key ``callId``, string)."""
    aws.client("dynamodb").create_table(
        TableName=CALLS_TABLE,
        KeySchema=[{"AttributeName": "callId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "callId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return CALLS_TABLE


@dataclass(frozen=True)
class BusCapture:
    """A custom bus whose rule forwards every event of our source to an SQS queue."""

    bus_name: str
    queue_url: str

    def received(self, expected: int) -> list[dict[str, Any]]:
        """The EventBridge envelopes delivered to the queue (at least ``expected`` of them)."""
        sqs = aws.client("sqs")
        envelopes: list[dict[str, Any]] = []
        for _ in range(20):
            response = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = response.get("Messages", [])
            envelopes.extend(json.loads(message["Body"]) for message in messages)
            if not messages and len(envelopes) >= expected:
                break
        return envelopes


@pytest.fixture
def event_bus(aws_mock: None) -> BusCapture:
    """A custom bus, a rule on our source and an SQS target: proves the wire format."""
    events = aws.client("events")
    sqs = aws.client("sqs")
    events.create_event_bus(Name=EVENT_BUS)
    queue_url = sqs.create_queue(QueueName="bus-capture")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events.put_rule(
        Name="capture-all",
        EventBusName=EVENT_BUS,
        EventPattern=json.dumps({"source": [EVENT_SOURCE]}),
        State="ENABLED",
    )
    events.put_targets(
        Rule="capture-all",
        EventBusName=EVENT_BUS,
        Targets=[{"Id": "queue", "Arn": queue_arn}],
    )
    return BusCapture(EVENT_BUS, queue_url)


class ClientSpy:
    """Wraps a boto3 client, recording every API call (name, keyword arguments) it makes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return attribute(**kwargs)

        return call

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)


@pytest.fixture
def spy() -> type[ClientSpy]:
    """The :class:`ClientSpy` class, to wrap a client and count its calls."""
    return ClientSpy
