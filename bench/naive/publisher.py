"""Naive stream publisher: each DynamoDB stream record's new image -> one PutEvents entry."""

import json
import os

import boto3

BUS = os.environ["EVENT_BUS_NAME"]

events = boto3.client("events")


def lambda_handler(event: dict, context: object) -> dict:  # type: ignore[type-arg]
    entries = [
        {
            "Source": "naive",
            "DetailType": "Call Enriched",
            "Detail": json.dumps(record["dynamodb"]["NewImage"]),
            "EventBusName": BUS,
        }
        for record in event["Records"]
        if record.get("dynamodb", {}).get("NewImage")
    ]
    for start in range(0, len(entries), 10):
        events.put_events(Entries=entries[start : start + 10])
    return {"batchItemFailures": []}
