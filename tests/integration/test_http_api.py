"""The HTTP API handler through API Gateway v2 events: in-process moto, fake Sinch over HTTP."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from call_enricher import runtime
from tests.support.fake_sinch import Reply
from tests.support.handlers import load_handler
from tests.support.lambda_context import FakeLambdaContext
from tests.support.queue_harness import FINAL_ID, ONGOING_ID, SAMPLES, Harness, queue_harness

ROOT = Path(__file__).resolve().parents[2]
EVENTS = {
    name: json.loads((ROOT / f"events/{name}.json").read_text())
    for name in ("api-get-call", "api-post-calls", "api-post-enrich")
}
UNKNOWN_ID = "0000aaaa0000bbbb0000cccc0000dddd"


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with queue_harness(monkeypatch) as h:
        yield h


def api() -> Any:
    return load_handler("http_api")


def invoke(event: dict[str, Any], context: FakeLambdaContext | None = None) -> dict[str, Any]:
    response: dict[str, Any] = api().lambda_handler(event, context or FakeLambdaContext())
    return response


def body_of(response: dict[str, Any]) -> Any:
    return json.loads(response["body"]) if response.get("body") else None


def post_calls(
    body: Any, *, raw: str | None = None, content_type: str = "application/json"
) -> dict[str, Any]:
    event = copy.deepcopy(EVENTS["api-post-calls"])
    event["body"] = raw if raw is not None else json.dumps(body)
    event["headers"]["content-type"] = content_type
    return invoke(event)


def for_call(name: str, call_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    event = copy.deepcopy(EVENTS[name])
    suffix = "/enrich" if name == "api-post-enrich" else ""
    path = f"/calls/{call_id}{suffix}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"callId": call_id}
    event["headers"].update(headers or {})
    return event


def queued(harness: Harness) -> list[dict[str, Any]]:
    sqs = __import__("boto3").client("sqs")
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10)
        if not got.get("Messages"):
            return bodies
        for message in got["Messages"]:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(
                QueueUrl=harness.stack.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )


def assert_error(response: dict[str, Any], status: int, code: str) -> dict[str, Any]:
    assert response["statusCode"] == status, response
    error = body_of(response)["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "details"}
    assert "Traceback" not in response["body"]
    return error


# -- POST /calls -------------------------------------------------------------------------


def test_sample_post_calls_accepts_valid_collapses_duplicates_rejects_invalid(harness: Harness):
    # Given the sample event: two valid IDs (one twice) and an invalid one
    # When it reaches the handler
    response = invoke(EVENTS["api-post-calls"])
    # Then the valid IDs are accepted once each and queued with the region, context and path
    assert response["statusCode"] == 202
    body = body_of(response)
    assert [a["callId"] for a in body["accepted"]] == [FINAL_ID, ONGOING_ID]
    assert [(r["callId"], r["reason"]) for r in body["rejected"]] == [
        ("not a call id!", "invalid-call-id")
    ]
    messages = queued(harness)
    assert sorted(m["callId"] for m in messages) == sorted([FINAL_ID, ONGOING_ID])
    assert all(m["entryPath"] == "api" and m["region"] == "euc1" for m in messages)
    assert all(m["context"] == {"orderId": "A-1001"} for m in messages)


def test_post_calls_with_every_id_rejected_is_422_naming_them(harness: Harness):
    # Given a body whose every call ID is invalid
    # When it is posted
    error = assert_error(
        post_calls({"callIds": ["not a call id!", "../etc"]}), 422, "validation-error"
    )
    # Then it is a 422 whose details are the rejected IDs, and nothing is enqueued
    assert [(r["callId"], r["reason"]) for r in error["details"]] == [
        ("not a call id!", "invalid-call-id"),
        ("../etc", "invalid-call-id"),
    ]
    assert all(r["message"] for r in error["details"])
    assert queued(harness) == []


def test_post_calls_with_some_ids_accepted_is_202(harness: Harness):
    # Given one valid and one invalid call ID / When posted
    response = post_calls({"callIds": ["not a call id!", FINAL_ID]})
    # Then 202: the valid one is accepted and enqueued, the other listed as rejected
    assert response["statusCode"] == 202
    body = body_of(response)
    assert body["accepted"] == [{"callId": FINAL_ID}]
    assert [r["callId"] for r in body["rejected"]] == ["not a call id!"]
    assert [m["callId"] for m in queued(harness)] == [FINAL_ID]


def test_post_calls_with_100_ids_enqueues_all(harness: Harness):
    ids = [f"{i:032x}" for i in range(100)]
    response = post_calls({"callIds": ids})
    assert response["statusCode"] == 202
    assert len(body_of(response)["accepted"]) == 100
    assert len(queued(harness)) == 100


def test_post_calls_with_101_ids_is_a_validation_error_naming_the_field(harness: Harness):
    error = assert_error(
        post_calls({"callIds": [f"{i:032x}" for i in range(101)]}), 422, "validation-error"
    )
    assert error["details"][0]["field"] == "callIds"
    assert queued(harness) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"callIds": []}, "callIds"),
        ({}, "callIds"),
        ({"callIds": "abc"}, "callIds"),
        ({"callIds": [FINAL_ID], "region": "mars"}, "region"),
        ({"callIds": [FINAL_ID], "unknown": 1}, "unknown"),
        ({"callIds": [FINAL_ID], "context": []}, "context"),
        ({"callIds": [FINAL_ID], "context": json.loads('{"a":' * 33 + "1" + "}" * 33)}, "context"),
        ({"callIds": [FINAL_ID], "context": {"a": "x" * 9000}}, "context"),
        ([FINAL_ID], "body"),
    ],
)
def test_post_calls_invalid_fields_are_422(harness: Harness, body: Any, field: str):
    error = assert_error(post_calls(body), 422, "validation-error")
    assert any(d["field"].startswith(field) for d in error["details"]), error
    assert queued(harness) == []


def test_post_calls_malformed_json_is_400(harness: Harness):
    assert_error(post_calls(None, raw='{"callIds": ['), 400, "malformed-json")


def test_post_calls_wrong_content_type_is_415(harness: Harness):
    assert_error(
        post_calls({"callIds": [FINAL_ID]}, content_type="text/plain"),
        415,
        "unsupported-media-type",
    )


def test_post_calls_oversize_body_is_413(harness: Harness):
    assert_error(
        post_calls({"callIds": [FINAL_ID], "context": {"x": "a" * 70_000}}),
        413,
        "payload-too-large",
    )


def test_post_calls_only_ids_the_queue_confirmed_are_accepted(harness: Harness):
    # Given SQS that fails one entry of every batch for good
    import boto3

    real = boto3.client("sqs")
    service = runtime.get_service()
    assert service.queue is not None

    def partly(**kwargs: Any) -> dict[str, Any]:
        entries = kwargs["Entries"]
        bad = [e for e in entries if e["MessageBody"].find(FINAL_ID) >= 0]
        good = [e for e in entries if e not in bad]
        result = real.send_message_batch(QueueUrl=kwargs["QueueUrl"], Entries=good) if good else {}
        return {
            "Successful": result.get("Successful", []),
            "Failed": [{"Id": e["Id"], "Code": "InternalError", "SenderFault": False} for e in bad],
        }

    fake_client = mock.Mock(wraps=real)
    fake_client.send_message_batch.side_effect = partly
    service.queue._client = fake_client
    service.queue._sleep = lambda _s: None
    # When two IDs are posted
    response = post_calls({"callIds": [FINAL_ID, ONGOING_ID]})
    # Then only the confirmed one is accepted, the other rejected as queue-unavailable
    body = body_of(response)
    assert response["statusCode"] == 202
    assert [a["callId"] for a in body["accepted"]] == [ONGOING_ID]
    assert [(r["callId"], r["reason"]) for r in body["rejected"]] == [
        (FINAL_ID, "queue-unavailable")
    ]
    assert [m["callId"] for m in queued(harness)] == [ONGOING_ID]
    # And when nothing can be enqueued, 503
    assert_error(post_calls({"callIds": [FINAL_ID]}), 503, "queue-unavailable")


# -- POST /calls/{callId}/enrich and GET /calls/{callId} ---------------------------------


def test_enrich_then_get_with_etag(harness: Harness):
    # When the sample enrich event is handled
    response = invoke(EVENTS["api-post-enrich"])
    # Then it answers with the state it produced: enriched, version 1, the record
    assert response["statusCode"] == 200, response
    body = body_of(response)
    assert (body["callId"], body["state"], body["outcome"]) == (FINAL_ID, "enriched", "enriched")
    assert body["status"] == "FINAL"
    assert body["version"] == 1
    assert body["failure"] is None
    assert body["record"]["callId"] == FINAL_ID
    # And the stream announces the stored version
    assert [e["detail-type"] for e in harness.events()] == ["Call Enriched"]
    # And GET returns the same state with an ETag; If-None-Match gives 304
    got = invoke(EVENTS["api-get-call"])
    assert got["statusCode"] == 200
    assert (body_of(got)["state"], body_of(got)["failure"]) == ("enriched", None)
    assert body_of(got)["record"] == body["record"]
    etag = got["headers"]["ETag"]
    again = invoke(for_call("api-get-call", FINAL_ID, {"if-none-match": etag}))
    assert again["statusCode"] == 304
    changed = invoke(for_call("api-get-call", FINAL_ID, {"if-none-match": '"9-x"'}))
    assert changed["statusCode"] == 200


def test_enrich_again_answers_the_state_served(harness: Harness):
    # Given a call enriched on demand
    assert invoke(EVENTS["api-post-enrich"])["statusCode"] == 200
    harness.events()
    # When it is enriched again while its FINAL version is fresh
    again = invoke(EVENTS["api-post-enrich"])
    # Then it answers the stored state, served from the table: no write, no new event
    assert again["statusCode"] == 200
    body = body_of(again)
    assert (body["state"], body["version"], body["outcome"]) == (
        "enriched",
        1,
        "served-from-store",
    )
    assert body["record"]["callId"] == FINAL_ID
    assert harness.sinch_requests(FINAL_ID) == 1
    assert harness.events() == []


def test_get_a_call_never_processed_is_404(harness: Harness):
    # Given a call ID with no stored state / When it is read / Then 404 call-not-found
    error = assert_error(invoke(for_call("api-get-call", UNKNOWN_ID)), 404, "call-not-found")
    assert "never processed" in error["message"]


def test_get_a_failed_call_is_200_with_its_failure_and_etag(harness: Harness):
    # Given a call that failed as not found (through the queue)
    assert harness.invoke(UNKNOWN_ID) == {"batchItemFailures": []}
    # When it is read
    got = invoke(for_call("api-get-call", UNKNOWN_ID))
    # Then 200: state failed, no version or record, and why it failed
    assert got["statusCode"] == 200, got
    body = body_of(got)
    assert (body["callId"], body["state"]) == (UNKNOWN_ID, "failed")
    assert (body["version"], body["status"], body["record"]) == (None, None, None)
    failure = body["failure"]
    assert (failure["reason"], failure["errorClass"]) == ("call-not-found", "not-found")
    assert (failure["sinchErrorCode"], failure["httpStatus"]) == (40400, 404)
    assert failure["failedAt"]
    assert {"fingerprint", "sourceId", "callId", "context"}.isdisjoint(failure)
    # And it has an ETag: If-None-Match with it gives 304, another one 200
    etag = got["headers"]["ETag"]
    again = invoke(for_call("api-get-call", UNKNOWN_ID, {"if-none-match": etag}))
    assert (again["statusCode"], again["headers"]["ETag"]) == (304, etag)
    other = invoke(for_call("api-get-call", UNKNOWN_ID, {"if-none-match": '"0-x"'}))
    assert other["statusCode"] == 200
    # When the call is known to Sinch later and enriched
    harness.sinch.add_call(UNKNOWN_ID, {**SAMPLES["answered-us-to-gb"], "callId": UNKNOWN_ID})
    assert harness.invoke(UNKNOWN_ID) == {"batchItemFailures": []}
    # Then the old ETag no longer matches: 200 with the enriched state, the failure gone
    changed = invoke(for_call("api-get-call", UNKNOWN_ID, {"if-none-match": etag}))
    assert changed["statusCode"] == 200
    assert changed["headers"]["ETag"] != etag
    body = body_of(changed)
    assert (body["state"], body["version"], body["failure"]) == ("enriched", 1, None)


def test_enrich_unknown_call_is_404_with_the_failed_state(harness: Harness):
    # When a call Sinch does not know is enriched on demand
    error = assert_error(invoke(for_call("api-post-enrich", UNKNOWN_ID)), 404, "call-not-found")
    # Then the 404 names the reason and carries the state it produced: failed
    assert error["details"]["reason"] == "call-not-found"
    call = error["details"]["call"]
    assert (call["callId"], call["state"], call["version"]) == (UNKNOWN_ID, "failed", None)
    assert call["failure"]["reason"] == "call-not-found"
    assert call["failure"]["entryPath"] == "api"
    # And that state is stored: GET answers it with 200, and the stream announces it
    got = invoke(for_call("api-get-call", UNKNOWN_ID))
    assert (got["statusCode"], body_of(got)["state"]) == (200, "failed")
    (event,) = harness.events()
    assert (event["detail-type"], event["detail"]["reason"]) == (
        "Call Enrichment Failed",
        "call-not-found",
    )


def test_enrich_invalid_record_is_422_with_the_failed_state(harness: Harness):
    # Given Sinch answers a record that fails validation
    harness.sinch.on_call(FINAL_ID, Reply.json({"callId": FINAL_ID, "duration": -5}))
    # When it is enriched on demand
    error = assert_error(invoke(EVENTS["api-post-enrich"]), 422, "invalid-record")
    # Then the answer carries the failed state it stored
    assert error["details"]["reason"] == "invalid-record"
    assert error["details"]["call"]["state"] == "failed"
    assert error["details"]["call"]["failure"]["reason"] == "invalid-record"


@pytest.mark.parametrize("bad", ["a.b", "x" * 129, "%2e%2e"])
def test_invalid_path_call_id_is_422(harness: Harness, bad: str):
    for name in ("api-get-call", "api-post-enrich"):
        error = assert_error(invoke(for_call(name, bad)), 422, "validation-error")
        assert error["details"][0]["field"] == "path.callId"


def test_enrich_when_sinch_fails_is_502(harness: Harness):
    harness.sinch.on_call(FINAL_ID, *[Reply.error(503, 50300)] * 10)
    error = assert_error(invoke(EVENTS["api-post-enrich"]), 502, "upstream-error")
    assert error["details"]["reason"] == "sinch-unavailable"


def test_enrich_out_of_time_is_504(harness: Harness):
    context = FakeLambdaContext(remaining_ms=lambda: 100)
    assert_error(invoke(EVENTS["api-post-enrich"], context), 504, "deadline-exceeded")


def test_unknown_route_is_404_in_the_error_shape(harness: Harness):
    event = for_call("api-get-call", FINAL_ID)
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/nope"
    assert_error(invoke(event), 404, "not-found")


def test_openapi_route_serves_the_document(harness: Harness):
    event = for_call("api-get-call", FINAL_ID)
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/openapi.json"
    response = invoke(event)
    assert response["statusCode"] == 200
    assert set(body_of(response)["paths"]) >= {"/calls", "/calls/{callId}"}
