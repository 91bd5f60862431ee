"""The local API: real HTTP on 127.0.0.1 -> payload v2 events -> the real handlers (moto)."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from call_enricher.sinch.auth import signed_headers
from call_enricher_tools.local_api import LocalApi, Route, routes_from_template
from call_enricher_tools.openapi import DOCUMENT
from tests.support.queue_harness import CREDENTIALS, FINAL_ID, Harness, queue_harness

UNKNOWN_ID = "0000aaaa0000bbbb0000cccc0000dddd"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalApi, Harness]]:
    with queue_harness(monkeypatch) as harness, LocalApi(port=0) as local:
        yield local, harness


def test_routes_come_from_the_template():
    keys = {(r.route_key, r.function) for r in routes_from_template()}
    assert keys >= {
        ("POST /calls", "http_api"),
        ("GET /calls", "http_api"),
        ("GET /calls/{callId}", "http_api"),
        ("POST /calls/{callId}/enrich", "http_api"),
        ("GET /openapi.json", "http_api"),
        ("POST /sinch/callbacks", "sinch_callbacks"),
    }


def test_path_parameters_are_matched_and_decoded():
    route = Route("GET", "/calls/{callId}", "http_api")
    assert route.match("GET", "/calls/abc") == {"callId": "abc"}
    assert route.match("GET", "/calls/a/b") is None
    assert route.match("POST", "/calls/abc") is None


def test_build_event_is_payload_v2(api: tuple[LocalApi, Harness]):
    local, _ = api
    event, route = local.build_event(
        "POST",
        "/calls/x1/enrich?a=1&a=2",
        [("Content-Type", "application/octet-stream"), ("Cookie", "s=1; t=2")],
        b"\x00\xff",
        "127.0.0.1",
    )
    assert route is not None
    assert route.route_key == "POST /calls/{callId}/enrich"
    assert event["version"] == "2.0"
    assert event["rawPath"] == "/calls/x1/enrich"
    assert event["rawQueryString"] == "a=1&a=2"
    assert event["queryStringParameters"] == {"a": "1,2"}
    assert event["headers"] == {"content-type": "application/octet-stream"}
    assert event["cookies"] == ["s=1", "t=2"]
    assert event["isBase64Encoded"] is True
    assert event["body"] == "AP8="
    assert event["pathParameters"] == {"callId": "x1"}
    assert event["requestContext"]["http"]["method"] == "POST"


def test_enrich_and_get_over_http(api: tuple[LocalApi, Harness]):
    local, _ = api
    # When a call is enriched over HTTP
    enriched = requests.post(f"{local.base_url}/calls/{FINAL_ID}/enrich", timeout=20)
    # Then it answers the state it produced, and GET the same state with an ETag (then 304)
    assert enriched.status_code == 200, enriched.text
    assert (enriched.json()["state"], enriched.json()["version"]) == ("enriched", 1)
    got = requests.get(f"{local.base_url}/calls/{FINAL_ID}", timeout=10)
    assert got.status_code == 200
    assert got.json()["state"] == "enriched"
    assert got.json()["record"] == enriched.json()["record"]
    cached = requests.get(
        f"{local.base_url}/calls/{FINAL_ID}",
        headers={"If-None-Match": got.headers["ETag"]},
        timeout=10,
    )
    assert cached.status_code == 304


def test_search_a_day_over_http(api: tuple[LocalApi, Harness]):
    local, _ = api
    # Given a call enriched over HTTP, on its UTC start day
    enriched = requests.post(f"{local.base_url}/calls/{FINAL_ID}/enrich", timeout=20)
    assert enriched.status_code == 200, enriched.text
    day = enriched.json()["record"]["time"]["utcDay"]
    # When that day is searched, with a query string as a client sends it
    found = requests.get(
        f"{local.base_url}/calls", params={"day": day, "state": "enriched"}, timeout=10
    )
    # Then the call is listed as GET /calls/{callId} answers it
    assert found.status_code == 200, found.text
    body = found.json()
    assert (body["day"], body["count"], body["nextCursor"]) == (day, 1, None)
    assert body["calls"][0]["record"] == enriched.json()["record"]
    # ... and a bad day is the one error shape, naming the parameter
    bad = requests.get(f"{local.base_url}/calls", params={"day": "yesterday"}, timeout=10)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "query.day"


def test_a_failed_call_over_http(api: tuple[LocalApi, Harness]):
    local, harness = api
    # Given a call ID never processed, Then GET is 404
    never = requests.get(f"{local.base_url}/calls/{UNKNOWN_ID}", timeout=10)
    assert never.status_code == 404
    assert never.json()["error"]["code"] == "call-not-found"
    # When it is enriched and Sinch does not know it
    enriched = requests.post(f"{local.base_url}/calls/{UNKNOWN_ID}/enrich", timeout=20)
    # Then 404 call-not-found, carrying the failed state it stored
    assert enriched.status_code == 404, enriched.text
    error = enriched.json()["error"]
    assert (error["code"], error["details"]["reason"]) == ("call-not-found", "call-not-found")
    assert error["details"]["call"]["state"] == "failed"
    # And GET now answers 200 with that state and an ETag; If-None-Match gives 304
    got = requests.get(f"{local.base_url}/calls/{UNKNOWN_ID}", timeout=10)
    assert got.status_code == 200
    body = got.json()
    assert (body["state"], body["version"], body["failure"]["reason"]) == (
        "failed",
        None,
        "call-not-found",
    )
    cached = requests.get(
        f"{local.base_url}/calls/{UNKNOWN_ID}",
        headers={"If-None-Match": got.headers["ETag"]},
        timeout=10,
    )
    assert cached.status_code == 304
    # And the stream announced the failure once
    assert [e["detail"]["reason"] for e in harness.events()] == ["call-not-found"]


def test_the_api_serves_the_committed_openapi_document(api: tuple[LocalApi, Harness]):
    # Given the local API routing the template's routes
    local, _ = api
    # When its OpenAPI route is asked
    served = requests.get(f"{local.base_url}/openapi.json", timeout=10)
    # Then it answers the document committed at the repository root
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("application/json")
    assert served.json() == json.loads(DOCUMENT.read_text(encoding="utf-8"))


def test_post_calls_and_errors_over_http(api: tuple[LocalApi, Harness]):
    local, _ = api
    ok = requests.post(f"{local.base_url}/calls", json={"callIds": [FINAL_ID]}, timeout=10)
    assert ok.status_code == 202
    assert ok.json()["accepted"] == [{"callId": FINAL_ID}]
    rejected = requests.post(f"{local.base_url}/calls", json={"callIds": ["a.b"]}, timeout=10)
    assert rejected.status_code == 422
    assert rejected.json()["error"]["code"] == "validation-error"
    assert [r["callId"] for r in rejected.json()["error"]["details"]] == ["a.b"]
    bad = requests.post(
        f"{local.base_url}/calls",
        data=b"{",
        timeout=10,
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "malformed-json"
    missing = requests.get(f"{local.base_url}/nowhere", timeout=10)
    assert missing.status_code == 404


def test_signed_callback_over_http(api: tuple[LocalApi, Harness]):
    local, _ = api
    body = json.dumps({"event": "dice", "callid": FINAL_ID}).encode()
    headers: dict[str, Any] = signed_headers(
        CREDENTIALS,
        method="POST",
        path="/sinch/callbacks",
        body=body,
        content_type="application/json",
    )
    headers["content-type"] = "application/json"
    answer = requests.post(
        f"{local.base_url}/sinch/callbacks", data=body, headers=headers, timeout=10
    )
    assert answer.status_code == 200
    assert answer.json() == {}
    unsigned = requests.post(
        f"{local.base_url}/sinch/callbacks",
        data=body,
        timeout=10,
        headers={"content-type": "application/json"},
    )
    assert unsigned.status_code == 401


def test_a_taken_port_is_reported():
    with LocalApi(port=0, routes=()) as first:
        with pytest.raises(OSError, match="in use") as raised:
            LocalApi(port=first.port, routes=()).start()
        assert raised.value.errno == errno.EADDRINUSE
