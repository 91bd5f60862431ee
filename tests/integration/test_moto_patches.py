"""moto as the suite and the local stack run it (call_enricher_tools.local.moto_patches):
atomic DynamoDB writes under many threads (as the handlers' worker threads write),
transactions that roll back what they touched, SQS receives as before.

Without the patch moto gives two stream records one sequence number now and then (a stream
reader then loops for ever) and lets two writes pass one condition."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from call_enricher_tools.local.moto_patches import is_patched

THREADS = 8
WRITES = 400


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, object, str]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="eu-west-1")
        description = dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]
        streams = boto3.client("dynamodbstreams", region_name="eu-west-1")
        yield dynamodb, streams, description["LatestStreamArn"]


def test_the_suite_runs_moto_with_atomic_writes() -> None:
    assert is_patched()


def test_concurrent_writes_get_distinct_stream_sequence_numbers(
    table: tuple[object, object, str],
) -> None:
    dynamodb, streams, arn = table

    def write(index: int) -> None:
        dynamodb.put_item(TableName="t", Item={"pk": {"S": f"k{index}"}})  # type: ignore[attr-defined]

    # Given many threads writing at once / When every write is done
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(write, range(WRITES)))
    # Then the stream holds one record per write, each with its own sequence number
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]  # type: ignore[attr-defined]
    iterator = streams.get_shard_iterator(  # type: ignore[attr-defined]
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    numbers: list[str] = []
    for _ in range(WRITES):  # bounded: a repeated sequence number would never end the loop
        page = streams.get_records(ShardIterator=iterator, Limit=100)  # type: ignore[attr-defined]
        if not page["Records"]:
            break
        numbers.extend(r["dynamodb"]["SequenceNumber"] for r in page["Records"])
        iterator = page["NextShardIterator"]
    assert len(numbers) == WRITES
    assert len(set(numbers)) == WRITES


def test_one_condition_lets_exactly_one_concurrent_write_through(
    table: tuple[object, object, str],
) -> None:
    dynamodb, _, _ = table

    def claim(key: str, writer: int) -> bool:
        try:
            dynamodb.put_item(  # type: ignore[attr-defined]
                TableName="t",
                Item={"pk": {"S": key}, "writer": {"N": str(writer)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return False
        return True

    # Given many keys, each claimed by several writers at once
    keys = [f"claim{index}" for index in range(WRITES // THREADS)]
    jobs = [(key, writer) for key in keys for writer in range(THREADS)]
    # When they all race
    with ThreadPoolExecutor(THREADS) as pool:
        won = list(pool.map(lambda job: claim(*job), jobs))
    # Then each key was won by exactly one writer
    winners = dict.fromkeys(keys, 0)
    for (key, _), result in zip(jobs, won, strict=True):
        winners[key] += result
    assert set(winners.values()) == {1}


def stream_count(streams: object, arn: str) -> int:
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]  # type: ignore[attr-defined]
    iterator = streams.get_shard_iterator(  # type: ignore[attr-defined]
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return len(streams.get_records(ShardIterator=iterator, Limit=1000)["Records"])  # type: ignore[attr-defined]


def test_a_refused_transaction_leaves_every_item_and_the_stream_as_they_were(
    table: tuple[object, object, str],
) -> None:
    dynamodb, streams, arn = table
    client: Any = dynamodb
    # Given an item "kept" and a stream of one record
    client.put_item(TableName="t", Item={"pk": {"S": "kept"}, "n": {"N": "1"}})
    assert stream_count(streams, arn) == 1
    # When a transaction updates "kept", creates "new" and fails on a third condition
    with pytest.raises(ClientError) as refused:
        client.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": "t",
                        "Key": {"pk": {"S": "kept"}},
                        "UpdateExpression": "SET n = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                    }
                },
                {"Put": {"TableName": "t", "Item": {"pk": {"S": "new"}}}},
                {
                    "ConditionCheck": {
                        "TableName": "t",
                        "Key": {"pk": {"S": "absent"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    # Then it is cancelled, and nothing of it stays: items and stream as before
    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    kept = client.get_item(TableName="t", Key={"pk": {"S": "kept"}})["Item"]
    assert kept["n"] == {"N": "1"}
    assert "Item" not in client.get_item(TableName="t", Key={"pk": {"S": "new"}})
    assert stream_count(streams, arn) == 1
    # ... and one that passes writes all its items, each with its stream record
    client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "a"}}}},
            {"Put": {"TableName": "t", "Item": {"pk": {"S": "b"}}}},
        ]
    )
    assert stream_count(streams, arn) == 3
    assert "Item" in client.get_item(TableName="t", Key={"pk": {"S": "b"}})


def test_sqs_still_delivers_and_counts_messages() -> None:
    with mock_aws():
        sqs: Any = boto3.client("sqs", region_name="eu-west-1")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        for index in range(3):
            sqs.send_message(QueueUrl=url, MessageBody=str(index))
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        assert sorted(m["Body"] for m in got) == ["0", "1", "2"]
        depth = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert depth["ApproximateNumberOfMessagesNotVisible"] == "3"


def test_a_fifo_queue_still_dedupes_by_content() -> None:
    with mock_aws():
        sqs: Any = boto3.client("sqs", region_name="eu-west-1")
        url = sqs.create_queue(
            QueueName="q.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        )["QueueUrl"]
        for _ in range(2):
            sqs.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "FifoQueue"]
        )["Attributes"]
        assert attributes == {"ApproximateNumberOfMessages": "1", "FifoQueue": "true"}
