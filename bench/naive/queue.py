"""Naive SQS handler: per record one GET to Sinch (new connection), one PutItem, one PutEvents."""

import json
import os

import boto3
import requests

SINCH_URL = os.environ["SINCH_BASE_URL"]
AUTH = (os.environ["SINCH_APPLICATION_KEY"], os.environ["SINCH_APPLICATION_SECRET"])
TABLE = os.environ["CALLS_TABLE_NAME"]
BUS = os.environ["EVENT_BUS_NAME"]

dynamodb = boto3.client("dynamodb")
events = boto3.client("events")


def enrich_one(call_id: str) -> dict:  # type: ignore[type-arg]
    response = requests.get(f"{SINCH_URL}/calling/v1/calls/id/{call_id}", auth=AUTH, timeout=10)
    response.raise_for_status()
    call: dict = response.json()  # type: ignore[type-arg]
    dynamodb.put_item(
        TableName=TABLE, Item={"callId": {"S": call_id}, "record": {"S": json.dumps(call)}}
    )
    events.put_events(
        Entries=[
            {
                "Source": "naive",
                "DetailType": "Call Enriched",
                "Detail": json.dumps(call),
                "EventBusName": BUS,
            }
        ]
    )
    return call


def lambda_handler(event: dict, context: object) -> dict:  # type: ignore[type-arg]
    failures = []
    for record in event["Records"]:
        try:
            body = record["body"]
            call_id = json.loads(body)["callId"] if body.startswith("{") else body.strip()
            enrich_one(call_id)
        except Exception:
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
