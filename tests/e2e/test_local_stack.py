"""The local stack over real sockets: moto server, poller, submit (and the full demo path).

Everything here talks HTTP on 127.0.0.1 (ephemeral ports): boto3 to the moto server, the
real queue handler to Sinch stand-ins. Terminal states are polled for with a generous
overall timeout; nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import re
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from call_enricher.sinch.auth import SinchCredentials
from call_enricher_tools.local.demo import DEMO_SANDBOX, run_demo
from call_enricher_tools.local.poller import Invocation, SqsPoller, load_function
from call_enricher_tools.local.runner import PipelineOptions
from call_enricher_tools.local.stack import LocalStack, PortInUseError
from call_enricher_tools.local.streams import StreamPoller
from call_enricher_tools.local.submit import cmd_submit, read_ids, validate_ids
from call_enricher_tools.local.up import run_local_up
from call_enricher_tools.sandbox import Sandbox
from tests.support.console import Console
from tests.support.fake_sinch import FakeSinch, Reply
from tests.support.waiting import poll_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
QUEUE_APP = ROOT / "functions" / "queue_enricher" / "app.py"
PUBLISHER_APP = ROOT / "functions" / "stream_publisher" / "app.py"
CREDENTIALS = SinchCredentials(
    application_key="5e1f7c2a-0000-4aaa-8bbb-e2e000000001",
    application_secret="ZTJlLXNlY3JldC1uZXZlci1sb2ctdGhpcy0wMTIz",
)
SAMPLES = {p.stem: json.loads(p.read_text()) for p in (ROOT / "events/sinch").glob("*.json")}
OVERALL_TIMEOUT = 45.0


wait_until = functools.partial(poll_until, timeout=OVERALL_TIMEOUT, interval=0.1)


def new_stack(sinch_base_url: str, visibility: int = 1, **parameters: str) -> LocalStack:
    # moto's backends are process-wide: a unique stack name keeps tests apart
    return LocalStack(
        sinch_credentials=CREDENTIALS,
        sinch_base_url=sinch_base_url,
        stack_name=f"e2e-{uuid.uuid4().hex[:8]}",
        visibility_timeout_seconds=visibility,
        parameters=parameters,
    )


@pytest.fixture
def fake_sinch() -> Iterator[FakeSinch]:
    with FakeSinch(credentials=CREDENTIALS) as fake:
        yield fake


# -- the stack itself ---------------------------------------------------------------------


def test_stack_is_built_from_the_template(fake_sinch: FakeSinch) -> None:
    # Given a local stack
    with new_stack(fake_sinch.base_url, MaxReceiveCount="3") as stack:
        sqs = stack.client("sqs")
        # When we look at the enrichment queue
        attributes = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])[
            "Attributes"
        ]
        # Then its redrive policy comes from the template (with the parameter) ...
        policy = json.loads(attributes["RedrivePolicy"])
        assert policy["maxReceiveCount"] == 3
        dlq_arn = sqs.get_queue_attributes(
            QueueUrl=stack.dead_letter_queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        assert policy["deadLetterTargetArn"] == dlq_arn
        # ... the visibility timeout is the short local one
        assert attributes["VisibilityTimeout"] == "1"
        # ... and the functions' environment resolves to the local resources
        env = stack.function_environment()
        assert env["ENRICHMENT_QUEUE_URL"] == stack.queue_url
        assert env["SINCH_SECRET_ID"] == stack.secret_arn
        assert env["AWS_ENDPOINT_URL"] == stack.endpoint_url
        assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
        table = stack.client("dynamodb").describe_table(TableName=env["CALLS_TABLE_NAME"])
        assert table["Table"]["KeySchema"] == [{"AttributeName": "callId", "KeyType": "HASH"}]
        assert stack.endpoint_url.startswith("http://127.0.0.1:")
        # ... and the example rule delivers Call Enriched events to the example consumer
        outputs = stack.outputs()
        assert outputs["EnrichmentQueueUrl"] == stack.queue_url
        stack.client("events").put_events(
            Entries=[
                {
                    "EventBusName": env["EVENT_BUS_NAME"],
                    "Source": env["EVENT_SOURCE"],
                    "DetailType": "Call Enriched",
                    "Detail": "{}",
                }
            ]
        )
        consumer = sqs.receive_message(
            QueueUrl=outputs["ExampleConsumerQueueUrl"], WaitTimeSeconds=2
        ).get("Messages", [])
        assert [json.loads(m["Body"])["detail-type"] for m in consumer] == ["Call Enriched"]
        assert [e["detail-type"] for e in stack.receive_events(wait_seconds=2)] == ["Call Enriched"]


def test_a_taken_port_is_reported_clearly() -> None:
    # Given a port someone else holds
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        stack = LocalStack(
            sinch_credentials=CREDENTIALS, sinch_base_url="http://127.0.0.1:1", port=port
        )
        # When the stack is started on it, Then the error names the port and what to do
        with pytest.raises(PortInUseError) as caught:
            stack.start()
    assert caught.value.port == port
    assert f"127.0.0.1:{port} is already in use" in str(caught.value)


# -- the poller ------------------------------------------------------------------------------


def test_poller_deletes_successes_and_redrives_a_poison_message_to_the_dlq(
    fake_sinch: FakeSinch,
) -> None:
    # Given a stack whose queue redrives after 2 receives, and a handler that always reports
    # the message with body "poison" as failed
    invocations: list[Invocation] = []
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert context.get_remaining_time_in_millis() > 0
        failures = []
        for record in event["Records"]:
            assert record["eventSource"] == "aws:sqs"
            assert record["eventSourceARN"].endswith("EnrichmentQueue")
            with lock:
                seen[record["body"]] = seen.get(record["body"], 0) + 1
            if record["body"] == "poison":
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    with new_stack(fake_sinch.base_url, MaxReceiveCount="2") as stack:
        sqs = stack.client("sqs")
        for body in ("ok-1", "poison", "ok-2"):
            sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)
        poller = SqsPoller(
            sqs_client=sqs,
            queue_url=stack.queue_url,
            queue_arn=stack.queue_arn,
            handler_factory=lambda _i: handler,
            function_name="queue",
            function_timeout_seconds=10,
            batch_size=10,
            batching_window_seconds=0.2,
            concurrency=2,
            on_invocation=invocations.append,
        )
        # When the poller runs until the queue is empty
        with poller:
            drained = wait_until(lambda: stack.queue_depth(stack.queue_url) == 0)
        # Then the good messages were processed once and deleted, and the poison message was
        # delivered maxReceiveCount times, then moved to the DLQ by the redrive policy
        assert drained
        assert seen == {"ok-1": 1, "ok-2": 1, "poison": 2}
        dlq = sqs.receive_message(QueueUrl=stack.dead_letter_queue_url, WaitTimeSeconds=1)
        assert [m["Body"] for m in dlq.get("Messages", [])] == ["poison"]
        receive_counts = sorted(
            count
            for invocation in invocations
            for mid, count in invocation.receive_counts.items()
            if mid in invocation.failed_ids
        )
        assert receive_counts == [1, 2]
        assert poller.stats.deleted == 2
        assert poller.stats.redeliveries == 1


def test_poller_fails_the_whole_batch_on_an_exception_or_an_unknown_item_identifier(
    fake_sinch: FakeSinch,
) -> None:
    # Given a handler that raises on the first delivery and names an unknown ID on the second
    calls: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(len(event["Records"]))
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) == 2:
            return {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}
        return {"batchItemFailures": []}

    with new_stack(fake_sinch.base_url, MaxReceiveCount="5") as stack:
        sqs = stack.client("sqs")
        # The three go in one SendMessageBatch before the poller starts: all visible when it
        # first receives, so they share a batch (no sleep; the window is only a safety net)
        sqs.send_message_batch(
            QueueUrl=stack.queue_url,
            Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)],
        )
        assert stack.queue_depth(stack.queue_url) == 3
        poller = SqsPoller(
            sqs_client=sqs,
            queue_url=stack.queue_url,
            queue_arn=stack.queue_arn,
            handler_factory=lambda _i: handler,
            function_name="queue",
            function_timeout_seconds=10,
            batching_window_seconds=0.5,
            concurrency=1,
        )
        # When the poller runs until the queue is empty
        with poller:
            drained = wait_until(lambda: stack.queue_depth(stack.queue_url) == 0)
        # Then nothing was deleted until the third, valid answer: no message was lost
        assert drained
        assert calls[0] == 3  # one batch of the three
        assert sum(calls) >= 9
        assert poller.stats.failed_invocations == 2
        assert poller.stats.deleted == 3


# -- the real queue handler through the poller ---------------------------------------------


def test_real_queue_handler_through_the_poller(fake_sinch: FakeSinch) -> None:
    # Given Sinch serving a FINAL call, a call that fails once with 503, and nothing else
    final = SAMPLES["answered-us-to-gb"]
    final_id = final["callId"]
    flaky_id = "0123456789abcdef0123456789abcdef"
    unknown_id = "ffffffffffffffffffffffffffffffff"
    fake_sinch.add_call(final_id, final)
    fake_sinch.on_call(flaky_id, Reply.error(503), Reply.json({**final, "callId": flaky_id}))
    with new_stack(fake_sinch.base_url, visibility=5) as stack:
        stack.apply_environment()
        sqs = stack.client("sqs")
        trigger = stack.trigger
        poller = SqsPoller(
            sqs_client=sqs,
            queue_url=stack.queue_url,
            queue_arn=stack.queue_arn,
            handler_factory=lambda i: load_function(QUEUE_APP, instance=f"e2e_queue_{i}"),
            function_name="queue-enricher",
            function_timeout_seconds=trigger.function_timeout_seconds,
            batch_size=trigger.batch_size,
            batching_window_seconds=trigger.batching_window_seconds,
            concurrency=trigger.max_concurrency,
        )
        # When the IDs and a malformed message are sent to the queue
        for body in (json.dumps({"callId": final_id}), flaky_id, unknown_id, "not a call id!"):
            sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)
        events: list[dict[str, Any]] = []

        def settled() -> bool:
            events.extend(stack.receive_events())
            return len(events) >= 4

        # (the events come from the calls table's stream, through the real publisher)
        publisher = StreamPoller.from_stack(
            stack, lambda i: load_function(PUBLISHER_APP, instance=f"e2e_publisher_{i}")
        )
        with poller, publisher:
            done = wait_until(settled)
        # Then each ended in its terminal state, seen as events on the bus
        assert done, events
        # (a set: at-least-once delivery may repeat an event, never lose one)
        outcomes = {(e["detail-type"], e["detail"].get("callId")) for e in events}
        assert outcomes == {
            ("Call Enriched", final_id),
            ("Call Enriched", flaky_id),
            ("Call Enrichment Failed", unknown_id),
            ("Call Enrichment Failed", None),
        }
        item = stack.stored_item(flaky_id)
        assert item is not None
        assert len(fake_sinch.requests_for(fake_sinch.call_path(flaky_id))) == 2
        assert stack.queue_depth(stack.queue_url) == 0
        assert stack.queue_depth(stack.dead_letter_queue_url) == 0


# -- submit ----------------------------------------------------------------------------------


def test_submit_sends_ids_from_arguments_file_and_stdin(
    fake_sinch: FakeSinch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a local stack, a file of IDs (with a comment and a duplicate) and IDs on stdin
    ids = [f"{i:032x}" for i in range(25)]
    id_file = tmp_path / "ids.txt"
    id_file.write_text("# calls\n" + "\n".join(ids[:15]) + "\n" + ids[0] + "\n\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(ids[15:24])))
    with new_stack(fake_sinch.base_url) as stack:
        args = argparse.Namespace(
            call_ids=[ids[24], "-"],
            file=str(id_file),
            queue_url=stack.queue_url,
            region="euc1",
            endpoint_url=None,
        )
        out, err = io.StringIO(), io.StringIO()
        # When submit runs
        code = cmd_submit(args, out, err)
        # Then every ID is on the queue exactly once, with the region, and the report says so
        assert code == 0, err.getvalue()
        assert "sent 25 of 25" in out.getvalue()
        assert "25/25" in err.getvalue()
        bodies: list[dict[str, Any]] = []
        sqs = stack.client("sqs")
        while True:
            messages = sqs.receive_message(
                QueueUrl=stack.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30
            ).get("Messages", [])
            if not messages:
                break
            bodies += [json.loads(m["Body"]) for m in messages]
        assert sorted(b["callId"] for b in bodies) == sorted(ids)
        assert {b.get("region") for b in bodies} == {"euc1"}


def test_submit_validates_every_id_before_sending_anything(fake_sinch: FakeSinch) -> None:
    # Given one invalid ID among valid ones
    with new_stack(fake_sinch.base_url) as stack:
        args = argparse.Namespace(
            call_ids=["a" * 32, "../etc/passwd", "b" * 32],
            file=None,
            queue_url=stack.queue_url,
            region=None,
            endpoint_url=None,
        )
        out, err = io.StringIO(), io.StringIO()
        # When submit runs, Then it exits 2 naming the problem, and the queue stays empty
        assert cmd_submit(args, out, err) == 2
        assert "nothing was sent" in err.getvalue()
        assert stack.queue_depth(stack.queue_url) == 0


def test_submit_reports_ids_that_could_not_be_sent(fake_sinch: FakeSinch) -> None:
    # Given a queue URL that does not exist on the local endpoint
    with new_stack(fake_sinch.base_url) as stack:
        missing = stack.queue_url.rsplit("/", 1)[0] + "/no-such-queue"
        args = argparse.Namespace(
            call_ids=["a" * 32, "b" * 32], file=None, queue_url=missing, region=None,
            endpoint_url=None,
        )  # fmt: skip
        out, err = io.StringIO(), io.StringIO()
        # When submit runs, Then it exits non-zero and lists each ID that was not sent
        assert cmd_submit(args, out, err) == 5
        assert "2 call ID(s) were NOT sent" in err.getvalue()
        assert "a" * 32 in err.getvalue()


def test_read_and_validate_ids() -> None:
    assert read_ids(["x", "-"], None, io.StringIO("y # c\n\nz\n")) == ["x", "y", "z"]
    valid, invalid = validate_ids(["a" * 32, "a" * 32, "bad/id"])
    assert valid == ["a" * 32]
    assert list(invalid) == ["bad/id"]


# -- the full pipeline: sandbox, moto, local API, poller ------------------------------------

PHONE_LIKE = re.compile(r"\+?\d[\d ]{7,}\d")


def test_make_demo_path_end_to_end(tmp_path: Path) -> None:
    # Given nothing running
    out, err = Console(), Console()
    # When the demo runs (the same function `make demo` runs)
    log_file = tmp_path / "demo.log"
    code = run_demo(stdout=out, stderr=err, timeout_seconds=OVERALL_TIMEOUT, log_file=log_file)
    text = out.text()
    # Then every call reached its expected terminal state through every entry path
    assert code == 0, f"{text}\n{err.text()}"
    for entry in ("queue", "api", "callback"):
        # the entry column, then the risk column (a level, or "-")
        assert re.search(rf"\s{entry}\s+\S+\s*$", text, re.MULTILINE), entry
    assert "failed: call-not-found" in text
    assert "Call Enrichment Failed" in text
    assert "status ONGOING" in text  # the ONGOING call was published before its FINAL
    redelivered = re.search(r"(\d+) redelivered", text)
    assert redelivered, text
    assert int(redelivered.group(1)) >= 1  # the 503 x4 call went round the queue again
    # ... and the output holds neither a full phone number nor a secret
    assert not PHONE_LIKE.search(text.replace("127.0.0.1", "")), PHONE_LIKE.findall(text)
    # ... while the handlers' logs went to the log file, with masked numbers only
    logs = log_file.read_text()
    assert '"message":"record processed"' in logs
    seeded = Sandbox(**DEMO_SANDBOX)  # the demo's: the same records and credentials
    leaked = [n for n in seeded.phone_numbers() if n in text or n in logs]
    assert leaked == []
    assert seeded.credentials.application_secret not in text + logs


def test_local_up_runs_until_stopped_and_shows_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given `local up` running on free ports, started by its path from a shell whose PATH
    # does not hold the venv (as after `make setup`)
    script = Path(sys.executable).parent / "call-enricher"
    monkeypatch.setattr(sys, "argv", [str(script), "local", "up"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    out, err = Console(), Console()
    stop = threading.Event()
    log_file = tmp_path / "handlers.log"
    options = PipelineOptions(
        api_port=0, log_file=log_file, stack_name=f"up-{uuid.uuid4().hex[:6]}"
    )
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(run_local_up(options, stdout=out, stderr=err, stop=stop))
    )
    thread.start()
    try:
        assert wait_until(lambda: "Ctrl-C stops everything" in out.text() or not thread.is_alive())
        banner = out.text()
        assert "IAM auth is not enforced locally" in banner, err.text()
        api_url = re.search(r"HTTP API\s+(http://127\.0\.0\.1:\d+)", banner)
        queue_url = re.search(r"export QUEUE_URL=(\S+)", banner)
        assert api_url
        assert queue_url
        call_id = re.search(r"submit --queue-url \$QUEUE_URL (\w+)", banner)
        assert call_id
        # And the banner's commands work as printed in that shell, and say where the logs are
        assert f"  {script.absolute()} submit --queue-url $QUEUE_URL" in banner
        assert f"  {script.absolute()} ops status --local" in banner
        assert "  call-enricher " not in banner
        assert f"The handlers' JSON logs and metrics: {log_file}" in banner
        # When a call ID is submitted to the printed queue URL
        args = argparse.Namespace(
            call_ids=[call_id.group(1)], file=None, queue_url=queue_url.group(1), region=None,
            endpoint_url=None,
        )  # fmt: skip
        assert cmd_submit(args, io.StringIO(), io.StringIO()) == 0
        # Then its Call Enriched event is printed
        assert wait_until(lambda: f"Call Enriched: {call_id.group(1)}" in out.text())
        # ... as one line among the console's own, the handlers' JSON in the log file only
        assert not [line for line in out.text().splitlines() if line.startswith("{")]
        assert '"record processed"' in log_file.read_text()
        # And a consumer reading the printed consumer queue gets that event (local up never
        # drains it), and the printed day search lists the call
        consumer = re.search(r"export CONSUMER_QUEUE_URL=(\S+)", banner)
        assert consumer
        sqs = boto3.client(
            "sqs", endpoint_url=queue_url.group(1).rsplit("/", 2)[0], region_name="eu-west-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        delivered: list[dict[str, Any]] = []

        def consumed() -> bool:
            got = sqs.receive_message(QueueUrl=consumer.group(1), WaitTimeSeconds=1)
            delivered.extend(json.loads(m["Body"]) for m in got.get("Messages", []))
            return any(e["detail"]["callId"] == call_id.group(1) for e in delivered)

        assert wait_until(consumed)
        assert {e["detail-type"] for e in delivered} == {"Call Enriched"}
        search = re.search(r"curl -s '(http://\S+/calls\?day=\d{4}-\d{2}-\d{2})'", banner)
        assert search
        listed = requests.get(search.group(1), timeout=10).json()
        assert call_id.group(1) in {c["callId"] for c in listed["calls"]}
        # And the burst of risky calls (one UTC day) submitted as the banner says, paged
        # through GET /calls?day= three at a time: each comes exactly once
        burst = re.search(r"submit --queue-url \$QUEUE_URL ((?:\w{32} ?){4,})$", banner, re.M)
        assert burst
        burst_ids = burst.group(1).split()
        args.call_ids = burst_ids
        assert cmd_submit(args, io.StringIO(), io.StringIO()) == 0
        assert wait_until(lambda: all(f"Call Enriched: {c}" in out.text() for c in burst_ids))
        first = requests.get(f"{api_url.group(1)}/calls/{burst_ids[0]}", timeout=10).json()
        day = first["record"]["time"]["utcDay"]  # the sandbox puts the risky calls on one day
        paged: list[str] = []
        cursor: str | None = None
        for _ in range(20):
            query = {"day": day, "limit": "3", **({"cursor": cursor} if cursor else {})}
            page = requests.get(f"{api_url.group(1)}/calls", params=query, timeout=10).json()
            paged += [c["callId"] for c in page["calls"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert set(burst_ids) <= set(paged), (burst_ids, paged)
        assert len(paged) == len(set(paged))
    finally:
        stop.set()
        thread.join(timeout=30)
    # ... and Ctrl-C (the stop event) shuts everything down cleanly
    assert result == [0]
    assert out.text().rstrip().endswith("Stopped.")


def test_local_up_says_clearly_when_the_api_port_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        out, err = io.StringIO(), io.StringIO()
        code = run_local_up(
            PipelineOptions(api_port=port), stdout=out, stderr=err, stop=threading.Event()
        )
    assert code == 6
    assert f"HTTP API: port 127.0.0.1:{port} is already in use" in err.getvalue()
