"""The queue handler in one process: SQS event -> real handler -> in-process moto + fake Sinch.

Shared by the integration and reliability suites. AWS is in-process moto (``mock_aws``); Sinch
is :class:`~tests.support.fake_sinch.FakeSinch` over real HTTP on 127.0.0.1, checking the
signature of every request and serving the sample records of ``events/sinch/``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from moto import mock_aws

from call_enricher import aws, outbox, runtime
from call_enricher.settings import get_settings
from call_enricher.sinch.auth import SinchCredentials
from tests.support.fake_sinch import FakeSinch
from tests.support.handlers import load_handler
from tests.support.lambda_context import FakeLambdaContext
from tests.support.stack import AwsStack, create_aws_stack

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = {
    path.stem: json.loads(path.read_text())
    for path in sorted((ROOT / "events/sinch").glob("*.json"))
}
SCHEMAS = {
    "Call Enriched": json.loads((ROOT / "events/schemas/call-enriched.schema.json").read_text()),
    "Call Enrichment Failed": json.loads(
        (ROOT / "events/schemas/call-enrichment-failed.schema.json").read_text()
    ),
}
FINAL_ID = "4398599d1ba84ef3bde0a82dfb61abed"  # answered-us-to-gb
ONGOING_ID = "7d8e9f0a1b2c3d4e5f60718293a4b5c6"  # ongoing-in-app-to-pstn
CREDENTIALS = SinchCredentials(
    application_key="0b5c7a9e-aaaa-4bbb-8ccc-111122223333",
    application_secret="c2VjcmV0LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3",  # base64 of a test string
)


def call_id_of(record: dict[str, Any]) -> str:
    """The call ID of a sample record (``callId``, or the callbacks' ``callid``)."""
    return str(record.get("callId") or record.get("callid"))


@dataclass
class Harness:
    handler: ModuleType
    stack: AwsStack
    sinch: FakeSinch
    publisher: ModuleType

    def publish(self) -> dict[str, Any]:
        """Run the real stream publisher over the table's new stream records."""
        return self.stack.publish(self.publisher, FakeLambdaContext())

    def invoke(self, *bodies: str, context: FakeLambdaContext | None = None) -> dict[str, Any]:
        event = sqs_event(*bodies)
        return self.invoke_event(event, context)

    def invoke_event(
        self, event: dict[str, Any], context: FakeLambdaContext | None = None
    ) -> dict[str, Any]:
        response: dict[str, Any] = self.handler.lambda_handler(
            event, context or FakeLambdaContext()
        )
        return response

    def events(self) -> list[dict[str, Any]]:
        """Every event the stream publisher delivers for the table's changes since the last
        call, each checked against its schema."""
        response = self.publish()
        assert response == {"batchItemFailures": []}, response
        envelopes = self.stack.events()
        for envelope in envelopes:
            jsonschema.validate(envelope["detail"], SCHEMAS[envelope["detail-type"]])
        return envelopes

    def sinch_requests(self, call_id: str) -> int:
        return len(self.sinch.requests_for(FakeSinch.call_path(call_id)))


def sqs_event(*bodies: str, ids: list[str] | None = None) -> dict[str, Any]:
    """An SQS Lambda event (from the sample event's first record) with one record per body."""
    template = json.loads((ROOT / "events/sqs-batch.json").read_text())["Records"][0]
    records = []
    for index, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["messageId"] = ids[index] if ids else f"msg-{index}"
        record["body"] = body
        records.append(record)
    return {"Records": records}


def failed_ids(response: dict[str, Any]) -> set[str]:
    return {item["itemIdentifier"] for item in response["batchItemFailures"]}


@contextmanager
def queue_harness(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[Harness]:
    """Start moto, the fake Sinch (serving every sample record) and the real queue handler.

    ``env`` overrides the functions' environment (e.g. ``FINAL_FRESHNESS_SECONDS="0"``).
    """
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    # botocore's account-based DynamoDB Streams endpoint ({account}.streams-ddb...) is not
    # one in-process moto routes: use the regional one.
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    aws.reset_clients()
    with mock_aws(), FakeSinch(credentials=CREDENTIALS) as sinch:
        stack = create_aws_stack(CREDENTIALS)
        for env_name, value in stack.env(
            SINCH_BASE_URL=sinch.base_url,
            SINCH_READ_TIMEOUT_SECONDS="2",
            SINCH_CONNECT_TIMEOUT_SECONDS="1",
            DEADLINE_MARGIN_MS="500",
            WORKER_THREADS="4",
            **env,
        ).items():
            monkeypatch.setenv(env_name, value)
        for record in SAMPLES.values():
            sinch.add_call(call_id_of(record), record)
        get_settings.cache_clear()
        runtime.set_service(None)
        outbox.set_outbox(None)
        try:
            yield Harness(
                load_handler("queue_enricher"), stack, sinch, load_handler("stream_publisher")
            )
        finally:
            runtime.set_service(None)
            outbox.set_outbox(None)
            get_settings.cache_clear()
    aws.reset_clients()
