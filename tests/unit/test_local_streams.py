"""The pure parts of the local stream trigger (``call_enricher_tools.local.streams``): records
as Lambda hands them over, moto's artefacts evened out, the on-failure record, and a batch
cut by size with a fake streams client (the behaviour over moto is in
tests/integration/test_local_streams.py)."""

from __future__ import annotations

import base64
import datetime as dt
import threading
from typing import Any

from call_enricher_tools.local.streams import (
    StreamInvocation,
    StreamPoller,
    as_dynamodb_writes,
    on_failure_record,
    stream_event_record,
)

STREAM = "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2026-01-01T00:00:00.000"


def raw(sequence: int, name: str, new: Any = None, old: Any = None, key: str = "k") -> Any:
    """A GetRecords record as boto3 returns it."""
    data: dict[str, Any] = {
        "ApproximateCreationDateTime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "Keys": {"callId": {"S": key}},
        "SequenceNumber": str(sequence),
        "SizeBytes": 10,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        data["NewImage"] = {"callId": {"S": key}, **new}
    if old is not None:
        data["OldImage"] = {"callId": {"S": key}, **old}
    return {
        "eventID": f"e{sequence}",
        "eventName": name,
        "awsRegion": "us-east-1",
        "dynamodb": data,
    }


def test_a_record_is_shaped_as_lambda_delivers_it() -> None:
    # Given a record as boto3 parses it (datetime, bytes)
    record = raw(7, "MODIFY", new={"b": {"B": b"\x00\x01"}, "m": {"M": {"x": {"BS": [b"a"]}}}})
    # When it is turned into a Lambda event record
    event = stream_event_record(record, stream_arn=STREAM, region="eu-west-1")
    # Then it has Lambda's fields, epoch seconds and base64 binary values
    assert event["eventVersion"] == "1.1"
    assert event["eventSource"] == "aws:dynamodb"
    assert event["awsRegion"] == "eu-west-1"
    assert event["eventSourceARN"] == STREAM
    dynamodb = event["dynamodb"]
    assert dynamodb["ApproximateCreationDateTime"] == 1_767_225_600
    assert dynamodb["NewImage"]["b"] == {"B": base64.b64encode(b"\x00\x01").decode()}
    assert dynamodb["NewImage"]["m"] == {"M": {"x": {"BS": [base64.b64encode(b"a").decode()]}}}
    assert "OldImage" not in dynamodb
    assert dynamodb["SequenceNumber"] == "7"


def test_moto_artefacts_are_dropped_and_real_changes_kept() -> None:
    # Given moto's records of: an UpdateItem creating k (bare key, then the item), a write to
    # k that changed nothing, a real change, and a bare-key item that stays bare
    records = [
        raw(1, "INSERT", new={}),
        raw(2, "INSERT", new={"v": {"N": "1"}}),
        raw(3, "MODIFY", new={"v": {"N": "1"}}, old={"v": {"N": "1"}}),
        raw(4, "MODIFY", new={"v": {"N": "2"}}, old={"v": {"N": "1"}}),
        raw(5, "INSERT", new={}, key="bare"),
        raw(6, "REMOVE", old={"v": {"N": "2"}}),
    ]
    # When they are read as DynamoDB would have written them
    kept = as_dynamodb_writes(records)
    # Then only the changes DynamoDB streams remain
    assert [r["dynamodb"]["SequenceNumber"] for r in kept] == ["2", "4", "5", "6"]


def test_the_on_failure_record_names_the_batch_position() -> None:
    records = [
        stream_event_record(raw(s, "INSERT", new={}), stream_arn=STREAM, region="eu-west-1")
        for s in (11, 12)
    ]
    body = on_failure_record(
        records,
        shard_id="shardId-1",
        stream_arn=STREAM,
        function_arn="arn:aws:lambda:eu-west-1:123456789012:function:f",
        condition="RetryAttemptsExhausted",
        invoke_count=3,
        function_error=True,
    )
    assert body["DDBStreamBatchInfo"] == {
        "shardId": "shardId-1",
        "startSequenceNumber": "11",
        "endSequenceNumber": "12",
        "approximateArrivalOfFirstRecord": "2026-01-01T00:00:00.000Z",
        "approximateArrivalOfLastRecord": "2026-01-01T00:00:00.000Z",
        "batchSize": 2,
        "streamArn": STREAM,
    }
    assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert body["requestContext"]["approximateInvokeCount"] == 3
    assert body["responseContext"]["functionError"] == "Unhandled"
    assert body["version"] == "1.0"


class FakeStreams:
    """One open shard holding ``count`` records; GetRecords honours Limit."""

    def __init__(self, count: int) -> None:
        self.records = [raw(100 + i, "INSERT", new={"i": {"N": str(i)}}) for i in range(count)]
        self.limits: list[int] = []

    def describe_stream(self, **_: Any) -> dict[str, Any]:
        return {"StreamDescription": {"Shards": [{"ShardId": "shardId-1"}]}}

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        start = 0
        if kwargs["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER":
            start = int(kwargs["SequenceNumber"]) - 100 + 1
        return {"ShardIterator": str(start)}

    def get_records(self, **kwargs: Any) -> dict[str, Any]:
        start, limit = int(kwargs["ShardIterator"]), int(kwargs["Limit"])
        self.limits.append(limit)
        chunk = self.records[start : start + limit]
        return {"Records": chunk, "NextShardIterator": str(start + len(chunk))}


def test_batches_are_cut_at_the_batch_size_in_stream_order() -> None:
    # Given 7 records and a batch size of 3
    streams = FakeStreams(7)
    invocations: list[StreamInvocation] = []
    done = threading.Event()

    def on_invocation(invocation: StreamInvocation) -> None:
        invocations.append(invocation)
        if sum(len(i.sequence_numbers) for i in invocations) >= 7:
            done.set()

    poller = StreamPoller(
        streams_client=streams,
        stream_arn=STREAM,
        handler_factory=lambda _i: lambda event, context: None,
        function_name="f",
        function_timeout_seconds=5,
        batch_size=3,
        on_invocation=on_invocation,
    )
    # When the poller consumes the shard
    with poller:
        assert done.wait(10)
        assert poller.wait_idle(10)
    # Then it handed over 3 + 3 + 1 records, in order, never reading more than a batch
    assert [i.sequence_numbers for i in invocations] == [
        ["100", "101", "102"],
        ["103", "104", "105"],
        ["106"],
    ]
    assert max(streams.limits) == 3
    assert poller.stats.records_succeeded == 7
