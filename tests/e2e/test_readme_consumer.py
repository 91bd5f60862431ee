"""The README's consumer example, run as written against the local stack.

A sandbox call goes through the real pipeline to the template's example consumer queue;
a second copy of its event (at-least-once delivery) and a `Call Enrichment Failed` sample
event are added to that queue; the README's code, extracted from the page, runs in a fresh
interpreter with the banner's `export` lines as its environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from call_enricher_tools.local.runner import LocalPipeline, PipelineOptions
from call_enricher_tools.local.stack import REGION

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FAILED_SAMPLE = json.loads((ROOT / "events/eventbridge/call-enrichment-failed.json").read_text())


def readme_consumer() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("this consumer works against it as written", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[LocalPipeline]:
    running = LocalPipeline(
        PipelineOptions(
            api_port=0,
            log_file=tmp_path / "handlers.log",
            stack_name=f"consumer-{uuid.uuid4().hex[:8]}",
        )
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_the_readme_consumer_works_against_the_local_stack(pipeline: LocalPipeline) -> None:
    stack = pipeline.require_stack()
    assert pipeline.sandbox is not None
    call_id = pipeline.sandbox.call_ids("final")[0]
    consumer_queue = stack.outputs()["ExampleConsumerQueueUrl"]
    sqs = stack.client("sqs")
    # Given a call enriched through the pipeline, its event in the example consumer's queue
    sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps({"callId": call_id}))
    body = None
    ends = time.monotonic() + 90
    while body is None and time.monotonic() < ends:
        got = sqs.receive_message(
            QueueUrl=consumer_queue, WaitTimeSeconds=1, VisibilityTimeout=0
        ).get("Messages", [])
        body = got[0]["Body"] if got else None
    assert body is not None, "no event reached the example consumer's queue"
    assert json.loads(body)["detail"]["callId"] == call_id
    # ... delivered a second time, and a failure event beside it
    sqs.send_message(QueueUrl=consumer_queue, MessageBody=body)
    sqs.send_message(QueueUrl=consumer_queue, MessageBody=json.dumps(FAILED_SAMPLE))
    # When the README's consumer runs with the banner's environment
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ENDPOINT_URL": stack.endpoint_url,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CONSUMER_QUEUE_URL": consumer_queue,
    }
    result = subprocess.run(  # noqa: S603 - the README's code, by this interpreter
        [sys.executable, "-c", readme_consumer()],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then it printed the call once (deduped on eventId) and the failure, and emptied the queue
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith(call_id)] == [
        next(line for line in lines if line.startswith(call_id))
    ]
    assert any(line.startswith(f"{call_id} FINAL ") for line in lines), lines
    failed = FAILED_SAMPLE["detail"]
    assert f"{failed['callId']} failed: {failed['reason']}" in lines
    assert len(lines) == 2, lines
    depth = sqs.get_queue_attributes(
        QueueUrl=consumer_queue, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert depth == "0"
