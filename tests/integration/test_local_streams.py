"""The local DynamoDB stream trigger (``call_enricher_tools.local.streams``) against a real
moto server: the local stack's calls table, built from template.yaml with its stream, and a
small fake handler module written to ``tmp_path`` (not the real publisher).

The fake handler logs every batch it is given to a file next to it, and fails on purpose
depending on the ``mode`` attribute of an item:

* ``raise``: raises whenever the record is in the batch;
* ``raise-in-company``: raises when the record is in a batch with others;
* ``report-once``: reports the record in ``batchItemFailures`` the first time only.

Waiting is done with the poller's own ``wait_idle`` (a condition with a timeout) or
:func:`wait_until`; nothing asserts on timing.
"""

from __future__ import annotations

import functools
import json
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from call_enricher.sinch.auth import SinchCredentials
from call_enricher_tools.local.poller import load_function
from call_enricher_tools.local.stack import LocalStack
from call_enricher_tools.local.streams import StreamInvocation, StreamPoller
from tests.support.waiting import poll_until

CREDENTIALS = SinchCredentials(
    application_key="5e1f7c2a-0000-4aaa-8bbb-5743ea000001",
    application_secret="c3RyZWFtcy1zZWNyZXQtbmV2ZXItbG9nLXRoaXM=",
)
TIMEOUT = 30.0

FAKE_HANDLER = textwrap.dedent(
    '''
    """A fake stream handler: logs each batch, fails on purpose by the items' ``mode``."""
    import json
    from pathlib import Path

    HERE = Path(__file__).parent
    LOG = HERE / "batches.jsonl"


    def lambda_handler(event, context):
        records = event["Records"]
        with LOG.open("a", encoding="utf-8") as log:
            log.write(json.dumps(records) + "\\n")
        failures = []
        for record in records:
            image = record["dynamodb"].get("NewImage", {})
            mode = image.get("mode", {}).get("S")
            sequence = record["dynamodb"]["SequenceNumber"]
            if mode == "raise" or (mode == "raise-in-company" and len(records) > 1):
                raise RuntimeError(f"cannot handle {sequence}")
            marker = HERE / f"reported-{sequence}"
            if mode == "report-once" and not marker.exists():
                marker.touch()
                failures.append({"itemIdentifier": sequence})
        return {"batchItemFailures": failures}
    '''
)


wait_until = functools.partial(poll_until, timeout=TIMEOUT, interval=0.05)


class Harness:
    """A local stack, its calls table, the fake handler and a poller built from the template."""

    def __init__(self, stack: LocalStack, handler_dir: Path) -> None:
        self.stack = stack
        self.handler_dir = handler_dir
        self.table = stack.ref(stack.require_stream_trigger().table_logical_id)
        self.dynamodb = stack.client("dynamodb")
        self.invocations: list[StreamInvocation] = []

    def poller(self, **overrides: Any) -> StreamPoller:
        app = self.handler_dir / "app.py"
        return StreamPoller.from_stack(
            self.stack,
            lambda i: load_function(app, instance=f"fake_stream_{uuid.uuid4().hex[:8]}_{i}"),
            on_invocation=self.invocations.append,
            retry_pause_seconds=0.01,
            **overrides,
        )

    def put(self, call_id: str, **attributes: str) -> None:
        item = {"callId": {"S": call_id}, **{k: {"S": v} for k, v in attributes.items()}}
        self.dynamodb.put_item(TableName=self.table, Item=item)

    def batches(self) -> list[list[dict[str, Any]]]:
        """Every batch the handler was given, in order."""
        log = self.handler_dir / "batches.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]

    def delivered_ids(self) -> list[list[str]]:
        """The call IDs of each batch, in order."""
        return [[r["dynamodb"]["Keys"]["callId"]["S"] for r in b] for b in self.batches()]

    def failure_messages(self) -> list[dict[str, Any]]:
        sqs = self.stack.client("sqs")
        messages = sqs.receive_message(
            QueueUrl=self.stack.publisher_failure_queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
        ).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]


@pytest.fixture
def make_harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """``make_harness(**parameters)``: a started local stack (template parameters
    overridden) with the fake handler; stopped at teardown."""
    stacks: list[LocalStack] = []

    def make(**parameters: str) -> Harness:
        (tmp_path / "app.py").write_text(FAKE_HANDLER, encoding="utf-8")
        # moto's backends are process-wide: a unique stack name keeps tests apart
        stack = LocalStack(
            sinch_credentials=CREDENTIALS,
            sinch_base_url="http://127.0.0.1:1",  # no Sinch is called here
            stack_name=f"streams-{uuid.uuid4().hex[:8]}",
            parameters=parameters,
        )
        stacks.append(stack.start())
        return Harness(stack, tmp_path)

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


def test_the_stack_builds_the_table_stream_and_the_mapping_from_the_template(
    harness: Harness,
) -> None:
    # Given the local stack built from template.yaml
    stack = harness.stack
    trigger = stack.require_stream_trigger()
    # Then the calls table has the template's stream, and its ARN is what !GetAtt gives
    table = harness.dynamodb.describe_table(TableName=harness.table)["Table"]
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert table["LatestStreamArn"] == stack.calls_stream_arn
    # and the mapping's settings are the template's, with its parameter defaults
    assert trigger.function == "StreamPublisherFunction"
    assert trigger.starting_position == "TRIM_HORIZON"
    assert trigger.batch_size == 100
    assert trigger.bisect_batch_on_function_error is True
    assert trigger.maximum_retry_attempts == 10
    assert trigger.report_batch_item_failures is True
    # and the failure queue exists, as the template's Output names it
    assert stack.outputs()["PublisherFailureQueueUrl"] == stack.publisher_failure_queue_url
    assert stack.queue_depth(stack.publisher_failure_queue_url) == 0


def test_records_are_delivered_in_order_with_old_and_new_images(harness: Harness) -> None:
    # Given a poller handing over at most two records at a time
    poller = harness.poller(batch_size=2)
    dynamodb, table = harness.dynamodb, harness.table
    key = {"callId": {"S": "call-1"}}
    # When one call is created by UpdateItem (as the library writes), another is put, the
    # first is changed, a conditional write fails, a write changes nothing, and one is deleted
    with poller:
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": {"N": "1"}},
        )
        harness.put("call-2", state="new")
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": {"N": "2"}},
        )
        with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
            dynamodb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET v = :v",
                ConditionExpression="v = :old",
                ExpressionAttributeValues={":v": {"N": "3"}, ":old": {"N": "9"}},
            )
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": {"N": "2"}},
        )
        dynamodb.delete_item(TableName=table, Key={"callId": {"S": "call-2"}})
        assert poller.wait_idle(TIMEOUT)
    # Then the handler saw one record per change DynamoDB would have streamed, in write order
    records = [r for batch in harness.batches() for r in batch]
    assert [(r["eventName"], r["dynamodb"]["Keys"]["callId"]["S"]) for r in records] == [
        ("INSERT", "call-1"),
        ("INSERT", "call-2"),
        ("MODIFY", "call-1"),
        ("REMOVE", "call-2"),
    ]
    # with the images of each change
    insert, put, modify, remove = (r["dynamodb"] for r in records)
    assert insert["NewImage"] == {"callId": {"S": "call-1"}, "v": {"N": "1"}}
    assert "OldImage" not in insert
    assert put["NewImage"] == {"callId": {"S": "call-2"}, "state": {"S": "new"}}
    assert modify["OldImage"]["v"] == {"N": "1"}
    assert modify["NewImage"]["v"] == {"N": "2"}
    assert remove["OldImage"] == {"callId": {"S": "call-2"}, "state": {"S": "new"}}
    assert "NewImage" not in remove
    # in increasing sequence order, never more than the batch size at once
    sequence = [int(r["SequenceNumber"]) for r in (insert, put, modify, remove)]
    assert sequence == sorted(sequence)
    assert all(1 <= len(batch) <= 2 for batch in harness.batches())
    # and each record is shaped as Lambda delivers it
    for record in records:
        assert record["eventSource"] == "aws:dynamodb"
        assert record["eventVersion"] == "1.1"
        assert record["awsRegion"] == "eu-west-1"
        assert record["eventSourceARN"] == harness.stack.calls_stream_arn
        assert record["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
        assert record["dynamodb"]["SizeBytes"] > 0
        assert record["eventID"]
    assert poller.stats.records_succeeded == 4
    assert poller.stats.retries == 0


def test_a_reported_failure_is_retried_from_the_failed_record_on(harness: Harness) -> None:
    # Given four records in the stream, the second reported as failed on its first delivery
    for call_id, mode in (("a", "ok"), ("b", "report-once"), ("c", "ok"), ("d", "ok")):
        harness.put(call_id, mode=mode)
    poller = harness.poller()
    # When the poller consumes the stream
    with poller:
        assert poller.wait_idle(TIMEOUT)
    # Then the checkpoint moved to just before the failed record, and the rest was retried
    assert harness.delivered_ids() == [["a", "b", "c", "d"], ["b", "c", "d"]]
    assert [i.attempt for i in harness.invocations] == [0, 1]
    assert harness.invocations[0].failed_sequence_numbers == [
        harness.invocations[1].sequence_numbers[0]
    ]
    assert poller.stats.retries == 1
    assert poller.stats.reported_failures == 1
    assert poller.stats.records_succeeded == 4
    assert harness.failure_messages() == []


def test_a_raising_handler_has_its_batch_bisected_until_the_failing_record_is_alone(
    harness: Harness,
) -> None:
    # Given four records, the third of which fails the handler whenever it has company
    for call_id, mode in (("a", "ok"), ("b", "ok"), ("c", "raise-in-company"), ("d", "ok")):
        harness.put(call_id, mode=mode)
    poller = harness.poller()
    # When the poller consumes the stream
    with poller:
        assert poller.wait_idle(TIMEOUT)
    # Then each failed batch was split in two, first half first, until it went through
    assert harness.delivered_ids() == [["a", "b", "c", "d"], ["a", "b"], ["c", "d"], ["c"], ["d"]]
    assert [i.bisected for i in harness.invocations] == [False, True, True, True, True]
    assert [i.error is not None for i in harness.invocations] == [True, False, True, False, False]
    # and splitting used up no retry
    assert [i.attempt for i in harness.invocations] == [0] * 5
    assert poller.stats.bisections == 2
    assert poller.stats.retries == 0
    assert poller.stats.failed_invocations == 2
    assert poller.stats.records_succeeded == 4


def test_after_the_last_retry_the_batch_goes_to_the_failure_queue_and_the_shard_moves_on(
    make_harness: Callable[..., Harness],
) -> None:
    # Given a mapping that retries twice, and a record the handler can never take
    harness = make_harness(PublisherMaxRetryAttempts="2")
    for call_id, mode in (("a", "ok"), ("b", "raise"), ("c", "ok")):
        harness.put(call_id, mode=mode)
    poller = harness.poller()
    with poller:
        # When the poller has given up on it
        assert wait_until(lambda: poller.stats.on_failure_messages == 1)
        # and a later change is written
        harness.put("d", mode="ok")
        assert poller.wait_idle(TIMEOUT)
    # Then the failing record was isolated, tried once and retried twice, then given up on
    b_sequence = harness.batches()[0][1]["dynamodb"]["SequenceNumber"]
    alone = [i for i in harness.invocations if i.sequence_numbers == [b_sequence]]
    assert [i.attempt for i in alone] == [0, 1, 2]
    assert all(i.error is not None for i in alone)
    # and its position is on the failure queue, as Lambda's on-failure record for streams
    (message,) = harness.failure_messages()
    info = message["DDBStreamBatchInfo"]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == b_sequence
    assert info["batchSize"] == 1
    assert info["streamArn"] == harness.stack.calls_stream_arn
    assert info["shardId"] == harness.invocations[0].shard_id
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert message["requestContext"]["functionArn"].endswith(":function:" + poller.function_name)
    assert message["responseContext"]["functionError"] == "Unhandled"
    assert message["version"] == "1.0"
    assert message["timestamp"].endswith("Z")
    # and every other record, including the one written afterwards, went through
    succeeded = {ids[0] for ids in harness.delivered_ids() if len(ids) == 1} | {"a"}
    assert {"a", "c", "d"} <= succeeded
    assert harness.delivered_ids()[-1] == ["d"]
    assert poller.stats.records_succeeded == 3
    assert poller.stats.records_sent_to_on_failure == 1
    assert poller.stats.retries == 2
