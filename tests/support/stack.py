"""AWS resources for handler tests: the calls table, the queue, the bus and the Sinch secret.

Works against whatever endpoint boto3 is pointed at: in-process moto (``mock_aws``) for
integration tests, or a moto server for end-to-end runs. The table has its stream (new and
old images), which :meth:`AwsStack.publish` hands to the real stream publisher handler, as
the event source mapping does; a rule on the bus forwards every event of our source to a
capture queue, so tests see the events as a consumer would.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from call_enricher import aws
from call_enricher.sinch.auth import SinchCredentials

EVENT_SOURCE = "call-enricher"
REGION = "eu-west-1"
_DESERIALIZER = TypeDeserializer()


@dataclass
class AwsStack:
    table: str
    queue_url: str
    bus: str
    capture_url: str
    secret_id: str
    stream_arn: str = ""
    _iterators: dict[str, str] = field(default_factory=dict)

    def stream_records(self) -> list[dict[str, Any]]:
        """The stream records written since the last call, as Lambda's DynamoDB event
        records (every shard, in order)."""
        from call_enricher_tools.local.streams import as_dynamodb_writes, stream_event_record

        streams = aws.client("dynamodbstreams")
        shards = streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        records: list[dict[str, Any]] = []
        for shard in shards:
            shard_id = shard["ShardId"]
            iterator = (
                self._iterators.get(shard_id)
                or streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            )
            while iterator:
                page = streams.get_records(ShardIterator=iterator, Limit=1000)
                iterator = page.get("NextShardIterator")
                if iterator:
                    self._iterators[shard_id] = iterator
                records.extend(
                    stream_event_record(raw, stream_arn=self.stream_arn, region=REGION)
                    for raw in as_dynamodb_writes(page.get("Records", []))
                )
                if not page.get("Records"):
                    break
        return records

    def publish(self, handler: Any, context: Any, *, rounds: int = 5) -> dict[str, Any]:
        """Hand the new stream records to the stream publisher ``handler``, batch after batch
        until the stream is drained (a publisher's own write, e.g. an event too large
        recorded as a failure, is a record of the next batch). The first failing response
        is returned as it is."""
        for _ in range(rounds):
            records = self.stream_records()
            if not records:
                break
            response: dict[str, Any] = handler.lambda_handler({"Records": records}, context)
            if response.get("batchItemFailures"):
                return response
        return {"batchItemFailures": []}

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment variables the template gives the functions."""
        return {
            "CALLS_TABLE_NAME": self.table,
            "ENRICHMENT_QUEUE_URL": self.queue_url,
            "EVENT_BUS_NAME": self.bus,
            "EVENT_SOURCE": EVENT_SOURCE,
            "SINCH_SECRET_ID": self.secret_id,
            "SINCH_SECRET_MAX_AGE_SECONDS": "300",
            "POWERTOOLS_SERVICE_NAME": "call-enricher",
            "POWERTOOLS_METRICS_NAMESPACE": "CallEnricher",
            "POWERTOOLS_TRACE_DISABLED": "true",
            **overrides,
        }

    def events(self) -> list[dict[str, Any]]:
        """Every EventBridge envelope delivered so far (consumed from the capture queue)."""
        sqs = aws.client("sqs")
        envelopes: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(
                QueueUrl=self.capture_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return envelopes
            for message in messages:
                envelopes.append(json.loads(message["Body"]))
                sqs.delete_message(
                    QueueUrl=self.capture_url, ReceiptHandle=message["ReceiptHandle"]
                )

    def item(self, call_id: str) -> dict[str, Any] | None:
        """The calls-table item of ``call_id``, as plain Python values."""
        response = aws.client("dynamodb").get_item(
            TableName=self.table, Key={"callId": {"S": call_id}}, ConsistentRead=True
        )
        raw = response.get("Item")
        if raw is None:
            return None
        return {key: _DESERIALIZER.deserialize(value) for key, value in raw.items()}

    def rotate_secret(self, credentials: SinchCredentials) -> None:
        aws.client("secretsmanager").put_secret_value(
            SecretId=self.secret_id, SecretString=secret_string(credentials)
        )


def secret_string(credentials: SinchCredentials) -> str:
    return json.dumps(
        {
            "applicationKey": credentials.application_key,
            "applicationSecret": credentials.application_secret,
        }
    )


def calls_table_keys() -> dict[str, Any]:
    """The calls table's keys and indexes as template.yaml declares them."""
    from call_enricher_tools.local.template import Template

    properties = Template.load().resources["CallsTable"]["Properties"]
    names = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
    return {name: properties[name] for name in names if name in properties}


def create_aws_stack(credentials: SinchCredentials, *, prefix: str | None = None) -> AwsStack:
    """Create the stack's resources (call inside ``mock_aws`` or with a moto endpoint)."""
    prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
    dynamodb = aws.client("dynamodb")
    sqs = aws.client("sqs")
    events = aws.client("events")
    table = f"{prefix}-calls"
    dynamodb.create_table(
        TableName=table,
        **calls_table_keys(),
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    stream_arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    queue_url = sqs.create_queue(QueueName=f"{prefix}-enrichment")["QueueUrl"]
    capture_url = sqs.create_queue(QueueName=f"{prefix}-capture")["QueueUrl"]
    capture_arn = sqs.get_queue_attributes(QueueUrl=capture_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    bus = f"{prefix}-bus"
    events.create_event_bus(Name=bus)
    events.put_rule(
        Name=f"{prefix}-capture",
        EventBusName=bus,
        EventPattern=json.dumps({"source": [EVENT_SOURCE]}),
        State="ENABLED",
    )
    events.put_targets(
        Rule=f"{prefix}-capture",
        EventBusName=bus,
        Targets=[{"Id": "capture", "Arn": capture_arn}],
    )
    secret_id = aws.client("secretsmanager").create_secret(
        Name=f"{prefix}/sinch", SecretString=secret_string(credentials)
    )["ARN"]
    return AwsStack(table, queue_url, bus, capture_url, secret_id, stream_arn)
