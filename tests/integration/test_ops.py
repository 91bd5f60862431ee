"""``call-enricher ops`` against moto: the local stack's moto server (the resources of
template.yaml), in-process moto for CloudFormation, and a stubbed SQS for what moto cannot
do (message move tasks).

Nothing here asserts on timing: conditions are polled for with a generous timeout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import io
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from call_enricher import errors
from call_enricher.sinch.auth import SinchCredentials
from call_enricher.state import failure_from_error, retry_trace
from call_enricher.storage import CallStore
from call_enricher_tools import ops
from call_enricher_tools.cli import main as cli_main
from call_enricher_tools.local.stack import LocalStack
from call_enricher_tools.local.up import describe_dead_letter, watch_dead_letters
from tests.support.waiting import poll_until

CREDENTIALS = SinchCredentials(
    application_key="0b5e7c2a-0000-4aaa-8bbb-0a5000000001",
    application_secret="b3BzLXRlc3Qtc2VjcmV0LW5ldmVyLWxvZ2dlZA==",
)
RETRYING = "4398599d1ba84ef3bde0a82dfb61abed"
FAILED = "69f888cbcd224d1f9f0e6d3a2b1c0f9e"
UNKNOWN = "7d8e9f0a1b2c4d5e8f7a6b5c4d3e2f1a"
TIMEOUT = 30.0


wait_until = functools.partial(poll_until, timeout=TIMEOUT, interval=0.05)


@pytest.fixture(scope="module")
def started_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One local stack (moto server + the template's resources) for this module."""
    with LocalStack(
        sinch_credentials=CREDENTIALS,
        sinch_base_url="http://127.0.0.1:1",
        stack_name=f"ops-{uuid.uuid4().hex[:8]}",
    ) as started:
        yield started


@pytest.fixture
def stack(started_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    """The module's stack with empty queues and no stored calls, recorded for ``--local``."""
    sqs = started_stack.client("sqs")
    for url in sqs.list_queues(QueueNamePrefix=started_stack.stack_name)["QueueUrls"]:
        visible_bodies(started_stack, url)  # PurgeQueue: once a minute only
    dynamodb = started_stack.client("dynamodb")
    for call_id in (RETRYING, FAILED, UNKNOWN):
        dynamodb.delete_item(TableName=table(started_stack), Key={"callId": {"S": call_id}})
    monkeypatch.setenv(ops.LOCAL_STATE_ENV, str(tmp_path / "local"))
    ops.write_local_state(
        started_stack.stack_name, started_stack.endpoint_url, started_stack.outputs()
    )
    return started_stack


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def table(stack: LocalStack) -> str:
    return stack.function_environment()["CALLS_TABLE_NAME"]


def store(stack: LocalStack) -> CallStore:
    return CallStore(table(stack), client=stack.client("dynamodb"))


def send(stack: LocalStack, queue_url: str, *bodies: str, **attributes: str) -> None:
    sqs = stack.client("sqs")
    extra = {
        "MessageAttributes": {
            k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
        }
    }
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body, **(extra if attributes else {}))


def drain(stack: LocalStack, queue_url: str) -> list[dict[str, Any]]:
    """Every visible message of a queue, received and deleted."""
    sqs = stack.client("sqs")
    drained: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return drained
        for message in messages:
            drained.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def visible_bodies(stack: LocalStack, queue_url: str) -> list[str]:
    """The bodies of every visible message of a queue (drained: call at the end of a test)."""
    return sorted(message["Body"] for message in drain(stack, queue_url))


def seed_dead_letters(stack: LocalStack) -> None:
    """Four DLQ messages: a call retried until the DLQ, a failed call, a call with nothing
    stored, and a message without a valid call ID."""
    now = dt.datetime.now(dt.UTC)
    error = errors.SinchUnavailableError("Sinch answered 503", http_status=503)
    assert store(stack).note_retry(RETRYING, retry_trace(error, at=now, attempt=3))
    missing = errors.CallNotFoundError("Sinch does not know the call", http_status=404)
    store(stack).fail(FAILED, failure_from_error(missing, failed_at=now, call_id=FAILED))
    send(
        stack,
        stack.dead_letter_queue_url,
        json.dumps({"callId": RETRYING}),
        json.dumps({"callId": FAILED}),
        UNKNOWN,
        "not a call id!",
    )


# -- targets --------------------------------------------------------------------------------


def test_a_target_must_be_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Given no stack name anywhere and no local stack running
    monkeypatch.delenv("CALL_ENRICHER_STACK", raising=False)
    monkeypatch.setenv(ops.LOCAL_STATE_ENV, str(tmp_path))
    # When status is asked without a target, or of a local stack that is not running
    unnamed = run("ops", "status")
    not_running = run("ops", "status", "--local")
    # Then both are bad input (exit 2) and say what to do
    assert unnamed[0] == not_running[0] == ops.EXIT_BAD_INPUT
    assert "--stack NAME" in unnamed[2]
    assert "call-enricher local up" in not_running[2]


def test_a_deployed_stack_is_found_through_its_cloudformation_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto import mock_aws

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        # Given a stack whose outputs name its queues
        cloudformation = boto3.client("cloudformation", region_name="eu-west-1")
        cloudformation.create_stack(
            StackName="call-enricher-prod",
            TemplateBody=json.dumps(
                {
                    "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
                    "Outputs": {
                        "DeadLetterQueueUrl": {"Value": {"Ref": "Queue"}},
                        "MetricsNamespace": {"Value": "CallEnricher/call-enricher-prod"},
                    },
                }
            ),
        )
        # When the target is resolved by name
        target = ops.StackTarget.from_cloudformation("call-enricher-prod", region="eu-west-1")
        # Then its outputs are the stack's, and it is not local
        assert target.outputs["MetricsNamespace"] == "CallEnricher/call-enricher-prod"
        assert "call-enricher-prod" in target.outputs["DeadLetterQueueUrl"]
        assert not target.local
        assert target.cli_args == "--stack call-enricher-prod"
        # and an output the stack lacks is bad input naming it
        with pytest.raises(ops.OpsError) as missing:
            target.output("CallsTableName")
        assert missing.value.code == ops.EXIT_BAD_INPUT
        # and a stack that does not exist is bad input too
        with pytest.raises(ops.OpsError) as unknown:
            ops.StackTarget.from_cloudformation("no-such-stack", region="eu-west-1")
        assert unknown.value.code == ops.EXIT_BAD_INPUT
        assert "does not exist" in str(unknown.value)


def test_an_unreachable_endpoint_is_an_aws_error(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an endpoint nothing listens on
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    # When a stack is looked up there
    code, _, err = run(
        "ops", "status", "--stack", "x", "--region", "eu-west-1",
        "--endpoint-url", f"http://127.0.0.1:{closed_port}",
    )  # fmt: skip
    # Then it is exit 3 with one line naming the call
    assert code == ops.EXIT_AWS
    assert err.startswith("error: CloudFormation DescribeStacks:")
    assert len(err.strip().splitlines()) == 1


# -- status ---------------------------------------------------------------------------------


def test_status_shows_the_queues_alarms_and_events(stack: LocalStack) -> None:
    # Given two messages waiting, one in the DLQ
    send(stack, stack.queue_url, RETRYING, FAILED)
    send(stack, stack.dead_letter_queue_url, UNKNOWN)
    # When status is asked of the local stack (through its moto endpoint)
    code, out, err = run("ops", "status", "--endpoint-url", stack.endpoint_url)
    # Then every figure is there; what moto cannot tell is n/a, and that is no failure
    assert code == ops.EXIT_OK, err
    lines = {line.strip().split("  ", 1)[0]: line for line in out.splitlines()[1:]}
    assert "2 waiting, 0 in flight, 0 delayed" in lines["enrichment queue"]
    assert "1 message(s)" in lines["dead-letter queue"]
    assert "dlq list --local" in lines["dead-letter queue"]
    assert "0 batch(es)" in lines["publisher failures"]
    assert "off (no WebhookEndpoint)" in lines["webhook failures"]
    assert "none" in lines["alarms in ALARM"]
    assert "n/a" in lines["events published"]
    assert "n/a" in lines["oldest message"]
    assert stack.stack_name in out.splitlines()[0]


def test_status_counts_the_events_the_webhook_could_not_deliver(stack: LocalStack) -> None:
    # Given an event in the webhook's DLQ (the queue exists even with no webhook set)
    send(stack, stack.outputs()["WebhookDeadLetterQueueUrl"], '{"detail": {"eventId": "x:v1"}}')
    # When status is asked
    code, out, err = run("ops", "status", "--endpoint-url", stack.endpoint_url)
    # Then it is counted, with where to read what to do
    assert code == ops.EXIT_OK, err
    (line,) = [line for line in out.splitlines() if "webhook failures" in line]
    assert "1 event(s) not delivered" in line
    assert "runbook.md#webhookdeadletterqueuenotemptyalarm" in line


# -- dlq list -------------------------------------------------------------------------------


def test_dlq_list_explains_every_message_from_the_table_and_consumes_none(
    stack: LocalStack,
) -> None:
    # Given four DLQ messages with different stored states
    seed_dead_letters(stack)
    # When they are listed
    code, out, err = run("ops", "dlq", "list", "--local-stack", stack.stack_name)
    # Then each call's last stored state is shown
    assert code == ops.EXIT_OK, err
    by_call = {line.split()[1]: line for line in out.splitlines()[1:5]}
    assert "retrying: sinch-unavailable, attempt 3 (HTTP 503)" in by_call[RETRYING]
    assert "failed: call-not-found (not-found)" in by_call[FAILED]
    assert "no state stored" in by_call[UNKNOWN]
    assert any("(no call ID" in line and "no state stored" in line for line in out.splitlines())
    assert "4 listed of about 4" in out
    # and all four are still in the DLQ, visible at once (released, not consumed)
    assert len(visible_bodies(stack, stack.dead_letter_queue_url)) == 4


def test_dlq_list_of_an_empty_dlq_and_its_limit(stack: LocalStack) -> None:
    # Given an empty DLQ, Then listing says so
    code, out, _ = run("ops", "dlq", "list", "--local-stack", stack.stack_name)
    assert (code, "is empty" in out) == (ops.EXIT_OK, True)
    # Given 12 messages, When at most 5 are listed (with a progress bar), Then 5 are shown
    send(stack, stack.dead_letter_queue_url, *[uuid.uuid4().hex for _ in range(12)])
    code, out, err = run(
        "ops", "dlq", "list", "--local-stack", stack.stack_name, "--max", "5", "--progress"
    )
    assert code == ops.EXIT_OK
    assert "5 listed of about 12" in out
    assert "\rdlq list [" in err
    # and a limit below 1 is bad input
    assert run("ops", "dlq", "list", "--local", "--max", "0")[0] == ops.EXIT_BAD_INPUT


# -- dlq redrive ------------------------------------------------------------------------------


def test_redrive_moves_every_message_back_one_at_a_time_on_moto(stack: LocalStack) -> None:
    # Given three DLQ messages, one with a message attribute
    send(stack, stack.dead_letter_queue_url, RETRYING, FAILED)
    send(stack, stack.dead_letter_queue_url, UNKNOWN, producer="billing")
    # When they are redriven on the local stack
    code, out, err = run("ops", "dlq", "redrive", "--local-stack", stack.stack_name)
    # Then all three are in the enrichment queue, bodies and attributes kept, the DLQ empty
    assert code == ops.EXIT_OK, err
    assert "3 message(s) moved" in out
    assert "moto cannot run a message move task" in out
    messages = drain(stack, stack.queue_url)
    assert sorted(m["Body"] for m in messages) == sorted([RETRYING, FAILED, UNKNOWN])
    attributed = next(m for m in messages if m["Body"] == UNKNOWN)
    assert attributed["MessageAttributes"]["producer"]["StringValue"] == "billing"
    assert visible_bodies(stack, stack.dead_letter_queue_url) == []


def test_redrive_max_moves_only_that_many(stack: LocalStack) -> None:
    # Given three DLQ messages, When at most two are redriven
    send(stack, stack.dead_letter_queue_url, RETRYING, FAILED, UNKNOWN)
    code, out, _ = run("ops", "dlq", "redrive", "--local-stack", stack.stack_name, "--max", "2")
    # Then two moved and one is left
    assert code == ops.EXIT_OK
    assert "2 message(s) moved" in out
    assert len(visible_bodies(stack, stack.dead_letter_queue_url)) == 1
    assert len(visible_bodies(stack, stack.queue_url)) == 2


class _FailingSends:
    """An SQS client whose ``send_message`` fails from the ``fail_from``-th call on."""

    def __init__(self, real: Any, fail_from: int) -> None:
        self._real = real
        self._fail_from = fail_from
        self.sends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def send_message(self, **kwargs: Any) -> Any:
        self.sends += 1
        if self.sends >= self._fail_from:
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, "SendMessage"
            )
        return self._real.send_message(**kwargs)


def test_redrive_never_loses_a_message_when_a_send_fails(stack: LocalStack) -> None:
    # Given three DLQ messages and a queue that refuses the second send
    send(stack, stack.dead_letter_queue_url, RETRYING, FAILED, UNKNOWN)
    target = ops.StackTarget.from_outputs(
        stack.stack_name, stack.outputs(), endpoint_url=stack.endpoint_url
    )
    target._clients["sqs"] = _FailingSends(target.client("sqs"), fail_from=2)
    out, err = io.StringIO(), io.StringIO()
    # When they are redriven
    code = ops.cmd_dlq_redrive(target, out, err, argparse.Namespace(max=None, progress=False))
    # Then one moved, the redrive stopped (partial, exit 4) and says why, and nothing is lost:
    # the other two are still in the DLQ, visible again at once
    assert code == ops.EXIT_PARTIAL
    assert "1 message(s) moved" in out.getvalue()
    assert "SQS SendMessage: AccessDenied" in err.getvalue()
    moved = visible_bodies(stack, stack.queue_url)
    left = visible_bodies(stack, stack.dead_letter_queue_url)
    assert len(moved) == 1
    assert len(left) == 2
    assert sorted(moved + left) == sorted([RETRYING, FAILED, UNKNOWN])


def test_redrive_falls_back_when_the_endpoint_cannot_run_a_move_task(stack: LocalStack) -> None:
    # Given the local moto reached as if it were AWS (not known to be local)
    send(stack, stack.dead_letter_queue_url, RETRYING)
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="eu-west-1"
    )
    target = ops.StackTarget(
        stack.stack_name, stack.outputs(), region="eu-west-1",
        endpoint_url=stack.endpoint_url, session=session,
    )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    # When the DLQ is redriven, StartMessageMoveTask answers HTTP 500
    code = ops.cmd_dlq_redrive(target, out, err, argparse.Namespace(max=None, progress=False))
    # Then the messages are moved one at a time instead, and the command says why
    assert code == ops.EXIT_OK, err.getvalue()
    assert "cannot run a message move task" in out.getvalue()
    assert "(one message at a time): 1 message(s) moved" in out.getvalue()
    assert visible_bodies(stack, stack.queue_url) == [RETRYING]


def _stubbed_target() -> tuple[ops.StackTarget, Stubber]:
    outputs = {
        "DeadLetterQueueArn": "arn:aws:sqs:eu-west-1:123456789012:dlq",
        "EnrichmentQueueArn": "arn:aws:sqs:eu-west-1:123456789012:queue",
    }
    target = ops.StackTarget("call-enricher-prod", outputs, region="eu-west-1")
    sqs = boto3.client(
        "sqs", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    target._clients["sqs"] = sqs
    return target, Stubber(sqs)


def test_redrive_on_aws_is_one_move_task_followed_until_it_completes() -> None:
    # Given SQS that starts a move task, reports it running, then completed
    target, stubber = _stubbed_target()
    source = {"SourceArn": target.outputs["DeadLetterQueueArn"]}
    stubber.add_response(
        "start_message_move_task",
        {"TaskHandle": "handle-1"},
        {**source, "DestinationArn": target.outputs["EnrichmentQueueArn"]},
    )
    running = {"TaskHandle": "handle-1", "Status": "RUNNING"}
    stubber.add_response(
        "list_message_move_tasks",
        {"Results": [{**running, "ApproximateNumberOfMessagesMoved": 1,
                      "ApproximateNumberOfMessagesToMove": 3}]},
        {**source, "MaxResults": 10},
    )  # fmt: skip
    stubber.add_response(
        "list_message_move_tasks",
        {"Results": [{"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 3}]},
        {**source, "MaxResults": 10},
    )
    progress_stream = io.StringIO()
    # When the DLQ is redriven
    with stubber:
        result = ops.redrive_with_move_task(
            target, ops.Progress(progress_stream, "redrive", enabled=True), sleep=lambda _: None
        )
    # Then it moved all three, with a progress bar while it ran
    assert (result.moved, result.problems) == (3, [])
    assert "33%" in progress_stream.getvalue()
    stubber.assert_no_pending_responses()


def test_a_failed_move_task_is_reported_with_its_reason() -> None:
    # Given a move task that fails after moving one message
    target, stubber = _stubbed_target()
    stubber.add_response("start_message_move_task", {"TaskHandle": "h"})
    stubber.add_response(
        "list_message_move_tasks",
        {"Results": [{"Status": "FAILED", "ApproximateNumberOfMessagesMoved": 1,
                      "FailureReason": "AWS.SimpleQueueService.AccessDenied"}]},
    )  # fmt: skip
    # When it is followed
    with stubber:
        result = ops.redrive_with_move_task(
            target, ops.Progress(io.StringIO(), "", enabled=False), sleep=lambda _: None
        )
    # Then the result says what moved and why it stopped
    assert result.moved == 1
    assert result.problems == ["the move task ended FAILED: AWS.SimpleQueueService.AccessDenied"]


# -- replay -------------------------------------------------------------------------------


def _put_event(stack: LocalStack, detail_type: str, event_id: str) -> None:
    env = stack.function_environment()
    stack.client("events").put_events(
        Entries=[
            {
                "EventBusName": env["EVENT_BUS_NAME"],
                "Source": env["EVENT_SOURCE"],
                "DetailType": detail_type,
                "Detail": json.dumps({"eventId": event_id}),
            }
        ]
    )


def test_replay_sends_the_archived_window_back_to_the_bus(stack: LocalStack) -> None:
    # Given two events archived (and delivered once)
    _put_event(stack, "Call Enriched", "a:v1")
    _put_event(stack, "Call Enrichment Failed", "b:failed")
    delivered: list[dict[str, Any]] = []
    assert wait_until(lambda: bool(delivered.extend(stack.receive_events())) or len(delivered) == 2)
    # When the last ten minutes are replayed
    code, out, err = run(
        "ops",
        "replay",
        "--local-stack",
        stack.stack_name,
        "--since",
        "10m",
        "--poll-seconds",
        "0.1",
    )
    # Then the replay completes and says what it did, and the events reach the bus again
    assert code == ops.EXIT_OK, err
    assert "COMPLETED" in out
    assert "to every rule on the bus" in out
    assert "dedupe on it" in out
    replayed: list[dict[str, Any]] = []
    assert wait_until(lambda: bool(replayed.extend(stack.receive_events())) or len(replayed) >= 2)
    assert {e["detail"]["eventId"] for e in replayed} >= {"a:v1", "b:failed"}


def test_replay_by_detail_type_goes_to_the_rules_listening_only_to_it(stack: LocalStack) -> None:
    # Given an archived event
    _put_event(stack, "Call Enriched", "a:v1")
    # When only Call Enriched is replayed
    code, out, err = run(
        "ops", "replay", "--local-stack", stack.stack_name, "--since", "10m",
        "--detail-type", "Call Enriched", "--poll-seconds", "0.1",
    )  # fmt: skip
    # Then the example rule (Call Enriched only) is chosen, the catch-all rule is left out,
    # and the local run says moto ignored that choice
    assert code == ops.EXIT_OK, err
    assert "ExampleCallEnrichedRule" in out.splitlines()[0]
    assert "not to rule" in out
    assert "local-subscriber" in out
    assert "moto ignores FilterArns" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--since", "1h", "--detail-type", "Call Finished"], "unknown detail type"),
        (["--since", "1h", "--until", "2h"], "must be before --until"),
        (["--since", "yesterday-ish"], "cannot read the time"),
        (["--since", "1h", "--rule", "no-such-rule"], "no rule 'no-such-rule'"),
    ],
)
def test_replay_refuses_bad_input(stack: LocalStack, arguments: list[str], message: str) -> None:
    # When a replay is asked with a bad argument, Then exit 2 and the reason
    code, _, err = run("ops", "replay", "--local-stack", stack.stack_name, *arguments)
    assert code == ops.EXIT_BAD_INPUT
    assert message in err


def test_times_are_iso_or_ages() -> None:
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    assert ops.parse_time("2h", now=now) == dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    assert ops.parse_time("90m", now=now) == dt.datetime(2026, 12, 1, 10, 30, tzinfo=dt.UTC)
    assert ops.parse_time("2026-12-01T09:00", now=now).tzinfo == dt.UTC
    assert ops.parse_time("2026-12-01T09:00+01:00", now=now).hour == 9
    assert ops.parse_time("now", now=now) == now


# -- the local stack's DLQ watcher ----------------------------------------------------------


def test_the_dlq_watcher_prints_each_new_dead_letter_once_and_consumes_none(
    stack: LocalStack,
) -> None:
    # Given a call retried until the DLQ
    now = dt.datetime.now(dt.UTC)
    error = errors.SinchUnavailableError("Sinch answered 503", http_status=503)
    store(stack).note_retry(RETRYING, retry_trace(error, at=now, attempt=2))
    lines: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_dead_letters, args=(stack, lines.append, stop), kwargs={"interval": 0.1}
    )
    watcher.start()
    try:
        # When its message reaches the DLQ
        send(stack, stack.dead_letter_queue_url, json.dumps({"callId": RETRYING}))
        # Then one line names the call and its last error
        assert wait_until(lambda: len(lines) >= 1)
        assert RETRYING in lines[0]
        assert "moved to the DLQ: retrying: sinch-unavailable, attempt 2 (HTTP 503)" in lines[0]
        # and a second message gets its own line, the first none again
        send(stack, stack.dead_letter_queue_url, UNKNOWN)
        assert wait_until(lambda: len(lines) >= 2)
        assert UNKNOWN in lines[1]
        assert "no state stored" in lines[1]
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert len(lines) == 2
    # and both are still in the DLQ
    assert len(visible_bodies(stack, stack.dead_letter_queue_url)) == 2


def test_a_dead_letter_line_without_a_call_id() -> None:
    letter = ops.DeadLetter("m" * 36, None, "msg:m", None, 3, "no state stored")
    assert describe_dead_letter(letter).startswith("[dlq] message mmmmmmmmmmmm… (call no call ID)")
