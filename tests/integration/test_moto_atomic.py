"""moto's DynamoDB made atomic (call_enricher_tools.local.moto_atomic), as the suite and the
local stack run it: concurrent writes from many threads, as the handlers' worker threads do.

Without the patch moto gives two stream records one sequence number now and then (a stream
reader then loops for ever) and lets two writes pass one condition."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from call_enricher_tools.local.moto_atomic import is_patched

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
