"""Naive Sinch callback receiver: verify the Application HMAC, one SQS SendMessage."""

import base64
import hashlib
import hmac
import json
import os

import boto3

KEY = os.environ["SINCH_APPLICATION_KEY"]
SECRET = base64.b64decode(os.environ["SINCH_APPLICATION_SECRET"])
QUEUE_URL = os.environ["ENRICHMENT_QUEUE_URL"]
PATH = os.environ.get("SINCH_CALLBACK_PATH", "/sinch/callbacks")

sqs = boto3.client("sqs")


def lambda_handler(event: dict, context: object) -> dict:  # type: ignore[type-arg]
    headers = {k.lower(): v for k, v in event.get("headers", {}).items()}
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    content_type = headers.get("content-type", "")
    to_sign = "\n".join(
        [
            "POST",
            base64.b64encode(hashlib.md5(raw).digest()).decode(),  # noqa: S324 - Sinch signs MD5
            content_type,
            "x-timestamp:" + headers.get("x-timestamp", ""),
            PATH,
        ]
    )
    expected = base64.b64encode(hmac.new(SECRET, to_sign.encode(), hashlib.sha256).digest())
    given = headers.get("authorization", "").partition(":")[2].encode()
    if not hmac.compare_digest(expected, given):
        return {"statusCode": 401, "body": ""}
    callback = json.loads(raw)
    if callback.get("event") == "dice":
        sqs.send_message(QueueUrl=QUEUE_URL, MessageBody=json.dumps({"callId": callback["callid"]}))
    return {"statusCode": 200, "body": "{}"}
