"""GET /calls?day=: the calls of one UTC day through the HTTP API handler (API Gateway v2
events), served by the calls table's ByDay index (in-process moto, created from
template.yaml's definition), after the real queue handler stored them."""

from __future__ import annotations

import base64
import copy
import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_sinch import Reply
from tests.support.handlers import load_handler
from tests.support.lambda_context import FakeLambdaContext
from tests.support.queue_harness import SAMPLES, Harness, call_id_of, queue_harness

ROOT = Path(__file__).resolve().parents[2]
GET_EVENT = json.loads((ROOT / "events/api-get-call.json").read_text())
UNKNOWN_IDS = [f"0000aaaa0000bbbb0000cccc0000ddd{i}" for i in range(3)]
RETRYING_ID = "503503503503503503503503503503ff"


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with queue_harness(monkeypatch) as started:
        yield started


@pytest.fixture
def stored(harness: Harness) -> dict[str, list[str]]:
    """Every sample record, three unknown calls (failed today) and a call Sinch keeps
    answering 503 (retrying only), through the queue handler. The calls by UTC day."""
    harness.sinch.on_call(RETRYING_ID, *[Reply.error(503, 50300)] * 20)
    ids = [call_id_of(record) for record in SAMPLES.values()]
    harness.invoke(*ids, *UNKNOWN_IDS, RETRYING_ID, "{not json")
    by_day: dict[str, list[str]] = defaultdict(list)
    for call_id in [*ids, *UNKNOWN_IDS]:
        item = harness.stack.item(call_id)
        assert item is not None
        by_day[item["searchDay"]].append(call_id)
    return by_day


def search(**query: Any) -> tuple[int, dict[str, Any]]:
    event = copy.deepcopy(GET_EVENT)
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/calls"
    event["routeKey"] = "GET /calls"
    event.pop("pathParameters", None)
    event["queryStringParameters"] = {key: str(value) for key, value in query.items()}
    event["rawQueryString"] = "&".join(f"{key}={value}" for key, value in query.items())
    response = load_handler("http_api").lambda_handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def every_page(**query: Any) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        status, body = search(**query, **({"cursor": cursor} if cursor else {}))
        assert status == 200, body
        assert body["count"] == len(body["calls"])
        calls.extend(body["calls"])
        cursor = body["nextCursor"]
        if cursor is None:
            return calls
    raise AssertionError("the pages never ended")


def moment(call: dict[str, Any]) -> str:
    record = call.get("record") or {}
    return (record.get("time") or {}).get("start") or call["failure"]["failedAt"]


@pytest.mark.slow  # every sample through the queue handler first
def test_a_day_lists_its_calls_in_time_order_with_their_state(
    stored: dict[str, list[str]],
) -> None:
    # Given the calls stored over several days
    assert len(stored) >= 3
    for day, call_ids in stored.items():
        # When a day is searched
        status, body = search(day=day)
        # Then exactly that day's calls come back, oldest first, each as GET /calls/{id} has it
        assert status == 200, body
        assert body["day"] == day
        assert sorted(c["callId"] for c in body["calls"]) == sorted(call_ids)
        times = [datetime.fromisoformat(moment(c)) for c in body["calls"]]
        assert times == sorted(times)
        assert body["nextCursor"] is None
        for call in body["calls"]:
            if call["state"] == "enriched":
                assert call["record"]["time"]["utcDay"] == day
                assert call["version"] == 1


@pytest.mark.slow  # every sample through the queue handler first
def test_a_failure_without_a_record_is_listed_on_the_day_it_failed(
    stored: dict[str, list[str]],
) -> None:
    # Given unknown calls that failed (Sinch 404), filed under the day they failed (one day,
    # or two when the batch ran across midnight UTC)
    days = {d for d, call_ids in stored.items() if set(UNKNOWN_IDS) & set(call_ids)}
    failed: list[dict[str, Any]] = []
    for day in days:
        # When that day is searched for failed calls
        status, body = search(day=day, state="failed")
        # Then each is there with its failure, on the day it failed, and nothing else is
        assert status == 200, body
        assert {c["failure"]["failedAt"][:10] for c in body["calls"]} == {day}
        failed += body["calls"]
    assert sorted((c["callId"], c["failure"]["reason"]) for c in failed) == [
        (call_id, "call-not-found") for call_id in UNKNOWN_IDS
    ]
    # ... while a call only being retried, and a message without a call ID, are not listed
    listed = {c["callId"] for day in stored for c in every_page(day=day)}
    assert RETRYING_ID not in listed
    assert not any(call_id.startswith("msg:") for call_id in listed)


@pytest.mark.slow  # every sample through the queue handler first
def test_pages_of_a_day_cover_it_once_with_a_cursor(stored: dict[str, list[str]]) -> None:
    # Given the busiest day
    day, call_ids = max(stored.items(), key=lambda entry: len(entry[1]))
    assert len(call_ids) >= 3
    # When it is read one call per page
    pages = every_page(day=day, limit=1)
    # Then every call comes once, in the order of one big page
    assert [c["callId"] for c in pages] == [c["callId"] for c in search(day=day)[1]["calls"]]
    assert sorted(c["callId"] for c in pages) == sorted(call_ids)


@pytest.mark.slow  # every sample through the queue handler first
def test_filters_by_state_and_status_also_across_pages(
    harness: Harness, stored: dict[str, list[str]]
) -> None:
    everything = [c for day in stored for c in every_page(day=day)]
    ongoing = {c["callId"] for c in everything if c["status"] == "ONGOING"}
    assert ongoing  # the sample set has an ONGOING call
    # When each day is searched for ONGOING calls, two at a time
    found = {c["callId"] for day in stored for c in every_page(day=day, status="ONGOING", limit=2)}
    # Then exactly the ONGOING ones come back
    assert found == ongoing
    enriched = {c["callId"] for c in everything if c["state"] == "enriched"}
    assert {
        c["callId"] for day in stored for c in every_page(day=day, state="enriched", limit=1)
    } == enriched


BAD_QUERIES: list[tuple[dict[str, Any], str]] = [
    ({}, "query.day"),
    ({"day": "2026-4-13"}, "query.day"),
    ({"day": "2026-02-30"}, "query.day"),
    ({"day": "2026-04-13", "limit": 0}, "query.limit"),
    ({"day": "2026-04-13", "limit": 501}, "query.limit"),
    ({"day": "2026-04-13", "state": "retrying"}, "query.state"),
    ({"day": "2026-04-13", "status": "final"}, "query.status"),
    ({"day": "2026-04-13", "cursor": "not-a-cursor"}, "query.cursor"),
]


def test_a_bad_query_is_one_422_naming_the_parameter(harness: Harness) -> None:
    for query, field in BAD_QUERIES:
        status, body = search(**query)
        assert status == 422, (query, body)
        assert body["error"]["code"] == "validation-error"
        assert [d["field"] for d in body["error"]["details"]] == [field], query


@pytest.mark.slow  # every sample through the queue handler first
def test_a_cursor_only_continues_the_search_it_came_from(stored: dict[str, list[str]]) -> None:
    # Given a cursor handed out for one day's first page
    day, _ = max(stored.items(), key=lambda entry: len(entry[1]))
    cursor = search(day=day, limit=1)[1]["nextCursor"]
    assert cursor
    other_day = next(d for d in stored if d != day)
    # When it is used for another day, other filters, or altered
    forged = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    forged["key"][1] = other_day  # its keys point at another day, its scope still this one
    altered = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
    for query in (
        {"day": other_day, "cursor": cursor},
        {"day": day, "state": "failed", "cursor": cursor},
        {"day": day, "cursor": altered},
    ):
        status, body = search(**query)
        # Then it is refused, naming the cursor
        assert status == 422, (query, body)
        assert body["error"]["details"][0]["field"] == "query.cursor"


def test_a_failure_after_a_stored_record_stays_on_the_records_day(harness: Harness) -> None:
    from call_enricher import errors, runtime
    from call_enricher.state import failure_from_error

    # Given an ONGOING call stored with its record (its start day D; a failure never
    # replaces a FINAL one)
    call_id = call_id_of(SAMPLES["ongoing-in-app-to-pstn"])
    harness.invoke(call_id)
    item = harness.stack.item(call_id)
    assert item is not None
    day = item["record"]["time"]["utcDay"]
    # When a later attempt fails, on a day long after D
    later = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    error = errors.SinchRejectedError("Sinch refused the request", http_status=400)
    store = runtime.get_service().store
    store.fail(call_id, failure_from_error(error, failed_at=later, call_id=call_id))
    # Then the call is listed, failed, on D, and not on the day it failed
    status, body = search(day=day)
    assert status == 200, body
    (call,) = [c for c in body["calls"] if c["callId"] == call_id]
    assert (call["state"], call["failure"]["reason"]) == ("failed", "sinch-rejected")
    assert search(day="2030-01-02")[1]["calls"] == []
