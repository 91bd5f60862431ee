"""Naive API handler: POST /calls/{callId}/enrich -> GET Sinch, PutItem, PutEvents, 200."""

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


def lambda_handler(event: dict, context: object) -> dict:  # type: ignore[type-arg]
    call_id = event["pathParameters"]["callId"]
    response = requests.get(f"{SINCH_URL}/calling/v1/calls/id/{call_id}", auth=AUTH, timeout=10)
    if response.status_code != 200:
        return {"statusCode": 502, "body": json.dumps({"error": response.status_code})}
    call = response.json()
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
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(call),
    }
