"""Hostile input catalogue: every case, its expected outcome, through the real handlers.

SQS bodies go through the real queue handler (in-process moto, the fake Sinch over HTTP). Each
hostile message sits in a batch next to a good one and must:

* be a permanent failure: not reported for retry, no exception escaping the handler;
* produce exactly one schema-valid ``Call Enrichment Failed`` event with the documented
  ``reason`` (``callId`` null: the message carried no valid one);
* never reach Sinch: the fake saw only the good neighbour's request, and every request it saw
  had a validated call ID in its path;
* not fail its neighbour.

SQS bodies are text (the API refuses invalid UTF-8 at the door), so "non-UTF-8" is modelled by
what can arrive: U+FFFD replacement characters left by a producer's lossy decoding, lone
surrogates from JSON ``\\ud800`` escapes, and C1 control characters.

Callbacks go through the real receiver (``functions/sinch_callbacks``) as API Gateway v2
events, signed as Sinch signs them unless the case says otherwise: each gets its documented
status (never a 5xx) in the one error shape, and only an authentic DiCE with a valid call ID
is enqueued.

API requests go through the real HTTP API handler (``functions/http_api``) as API Gateway v2
events, on each route: malformed JSON, oversize bodies, wrong content types, unknown fields,
101 IDs, duplicates, and IDs that fail validation in the body or the path. Each gets its
documented status (never a 5xx) in the one error shape; only validated IDs are enqueued or
sent to Sinch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from tests.support.fake_sinch import GET_CALL_PATH, FakeSinch, Reply
from tests.support.queue_harness import FINAL_ID, SAMPLES, Harness

VALID_PATH = re.compile(re.escape(GET_CALL_PATH) + r"[A-Za-z0-9_-]{1,128}")
MALFORMED = "malformed-message"
INVALID_ID = "invalid-call-id"


@dataclass(frozen=True)
class Case:
    name: str
    body: str
    reason: str
    reaches_sinch: bool = False
    """True only for well-formed bare IDs: they are validated, asked, and not found."""
    call_id: str | None = None
    """The call ID the failure event names: the message's own when that part was valid."""


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


SQS_CASES = [
    # empty and blank
    Case("empty", "", MALFORMED),
    Case("blank", " \n\t ", MALFORMED),
    # a bare text that is a well-formed ID (the contract's "bare call ID"): asked, not found
    Case("json-null-literal", "null", "call-not-found", reaches_sinch=True),
    Case("json-true-literal", "true", "call-not-found", reaches_sinch=True),
    Case("json-empty-object", "{}", MALFORMED),
    Case("json-empty-string", '""', INVALID_ID),
    # not JSON, or not the contract
    Case("truncated-json", '{"callId": "4398599d', MALFORMED),
    Case("json-array", f'["{FINAL_ID}"]', MALFORMED),
    Case("json-number", "12.5e3", INVALID_ID),
    # "non-UTF-8" as SQS can deliver it (see the module docstring)
    Case("replacement-chars", "4398599d1ba84ef3\ufffd\ufffd0a82dfb61abed", INVALID_ID),
    Case("lone-surrogate-escape", '{"callId": "abc\\ud800def"}', INVALID_ID),
    Case("lone-surrogate-bare", "abc\udcffdef", INVALID_ID),
    Case("c1-control", "4398599d1ba8\x854ef3", INVALID_ID),
    # sizes
    Case("256-kib-bare", "a" * 262_144, INVALID_ID),
    Case(
        "256-kib-context",
        json.dumps({"callId": FINAL_ID, "context": {"x": "y" * 262_000}}),
        MALFORMED,
        call_id=FINAL_ID,
    ),
    Case("10000-chars-id", "b" * 10_000, INVALID_ID),
    Case("10000-chars-json-id", json.dumps({"callId": "c" * 10_000}), INVALID_ID),
    Case("129-chars-id", "d" * 129, INVALID_ID),
    # deeply nested JSON
    Case("nested-100k-arrays", "[" * 100_000 + "]" * 100_000, MALFORMED),
    Case("nested-100k-objects", _nested(100_000), MALFORMED),
    Case("nested-unclosed", '{"callId":' + "[" * 50_000, MALFORMED),
    # wrong types
    Case("callid-number", '{"callId": 4398599}', INVALID_ID),
    Case("callid-null", '{"callId": null}', INVALID_ID),
    Case("callid-list", f'{{"callId": ["{FINAL_ID}"]}}', INVALID_ID),
    Case("callid-object", '{"callId": {"$ne": null}}', INVALID_ID),
    Case("callid-bool", '{"callId": true}', INVALID_ID),
    Case("region-number", f'{{"callId": "{FINAL_ID}", "region": 1}}', MALFORMED, call_id=FINAL_ID),
    Case(
        "region-unknown",
        f'{{"callId": "{FINAL_ID}", "region": "evil.example.com"}}',
        MALFORMED,
        call_id=FINAL_ID,
    ),
    Case(
        "context-string", f'{{"callId": "{FINAL_ID}", "context": "x"}}', MALFORMED, call_id=FINAL_ID
    ),
    Case(
        "recheck-negative",
        f'{{"callId": "{FINAL_ID}", "recheck": -1}}',
        MALFORMED,
        call_id=FINAL_ID,
    ),
    Case(
        "first-seen-naive",
        f'{{"callId": "{FINAL_ID}", "firstSeenAt": "2026-01-01T00:00"}}',
        MALFORMED,
        call_id=FINAL_ID,
    ),
    Case(
        "entry-path-unknown",
        f'{{"callId": "{FINAL_ID}", "entryPath": "admin"}}',
        MALFORMED,
        call_id=FINAL_ID,
    ),
    Case("no-call-id", '{"region": "euc1"}', MALFORMED),
    # path traversal and URL tricks
    Case("traversal-bare", "../../etc/passwd", INVALID_ID),
    Case("traversal-dotdot", "..", INVALID_ID),
    Case("traversal-json", '{"callId": "../../../calling/v1/callouts"}', INVALID_ID),
    Case("traversal-backslash", "..\\..\\windows", INVALID_ID),
    Case("slash-inside", "4398599d/../4ef3bde0", INVALID_ID),
    Case("query", "4398599d?x=1", INVALID_ID),
    Case("fragment", "4398599d#frag", INVALID_ID),
    Case("absolute-url", "http://evil.example.com/x", INVALID_ID),
    Case("crlf-header-injection", "4398599d\r\nX-Injected: 1", INVALID_ID),
    # percent-encoding
    Case("percent-slash", "abc%2Fdef", INVALID_ID),
    Case("percent-dotdot", "%2e%2e%2f%2e%2e", INVALID_ID),
    Case("percent-double", "abc%252Fdef", INVALID_ID),
    Case("percent-null", "abc%00def", INVALID_ID),
    # unicode look-alikes
    Case("cyrillic-a", "4398599d1b\u0430" + "84ef3bde0a82dfb61abed", INVALID_ID),
    Case("fullwidth-digits", "\uff14\uff13\uff19\uff18599d1ba84ef3bde0a82dfb61abed", INVALID_ID),
    Case("fullwidth-solidus", "abc\uff0fdef", INVALID_ID),
    Case("division-slash", "abc\u2215def", INVALID_ID),
    Case("zero-width-space", "4398599d\u200b1ba84ef3", INVALID_ID),
    Case("rtl-override", "4398599d\u202e1ba84ef3", INVALID_ID),
    Case("arabic-indic-digits", "\u0664\u0663\u0669\u0668", INVALID_ID),
    # null bytes
    Case("null-byte-bare", "4398599d\x001ba84ef3", INVALID_ID),
    Case("null-byte-json", '{"callId": "4398599d\\u00001ba84ef3"}', INVALID_ID),
    Case("null-only", "\x00", INVALID_ID),
    # a phone number where the call ID belongs (must not be echoed in full either)
    Case("phone-number", "+46701234567", INVALID_ID),
]


@pytest.mark.parametrize("case", SQS_CASES, ids=[case.name for case in SQS_CASES])
def test_hostile_sqs_body(harness: Harness, case: Case) -> None:
    # Given a hostile message next to a good one
    # When the batch is handled (no exception may escape)
    response = harness.invoke(case.body, FINAL_ID)
    # Then neither is retried: the hostile one failed for good, the good one succeeded
    assert response == {"batchItemFailures": []}
    events = harness.events()  # schema-checked
    failed = [e["detail"] for e in events if e["detail-type"] == "Call Enrichment Failed"]
    enriched = [e["detail"]["callId"] for e in events if e["detail-type"] == "Call Enriched"]
    # And exactly one failure event names the documented reason, and the call ID only when
    # the message carried a valid one
    if case.reaches_sinch:
        bare = case.body.strip()
        assert [(d["reason"], d["callId"], d["errorClass"]) for d in failed] == [
            (case.reason, bare, "not-found")
        ]
    else:
        assert [(d["reason"], d["callId"], d["errorClass"]) for d in failed] == [
            (case.reason, case.call_id, "permanent")
        ]
    assert enriched == [FINAL_ID]
    # And no raw phone number, and never more than a short escaped preview of the input
    detail_text = json.dumps(failed[0])
    assert "46701234567" not in detail_text
    assert len(failed[0].get("rawCallId") or "") <= 128
    # And only the good call reached Sinch, with a validated ID in the path
    paths = [request.path for request in harness.sinch.requests]
    expected = [FakeSinch.call_path(FINAL_ID)]
    if case.reaches_sinch:
        expected.append(FakeSinch.call_path(case.body.strip()))
    assert sorted(paths) == sorted(expected)
    assert all(VALID_PATH.fullmatch(path) for path in paths)


def test_a_batch_made_only_of_hostile_bodies_is_all_permanent(harness: Harness) -> None:
    # Given ten hostile messages in one batch (the SQS maximum per invocation by default)
    hostile = [case for case in SQS_CASES if not case.reaches_sinch]
    bodies = [case.body for case in hostile[:: max(1, len(hostile) // 10)]][:10]
    # When handled, Then none is retried, each has its own failure event, Sinch saw nothing
    assert harness.invoke(*bodies) == {"batchItemFailures": []}
    failed = [e for e in harness.events() if e["detail-type"] == "Call Enrichment Failed"]
    assert len({e["detail"]["eventId"] for e in failed}) == len(bodies)
    assert harness.sinch.requests == []


def test_deeply_nested_context_fails_alone(harness: Harness) -> None:
    # Given a valid call ID whose producer context is deeply nested (small in bytes)
    depth = 300
    context = '{"a":' * depth + "1" + "}" * depth
    body = f'{{"callId": "{FINAL_ID}", "context": {context}}}'
    good = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    # When it is handled next to a good message
    response = harness.invoke(body, good)
    # Then the hostile message fails for good, alone, and the good one goes through
    assert response == {"batchItemFailures": []}
    kinds = sorted((e["detail-type"], e["detail"].get("reason")) for e in harness.events())
    assert kinds == [("Call Enriched", None), ("Call Enrichment Failed", MALFORMED)]


def test_a_record_too_large_for_an_event_fails_for_good(harness: Harness) -> None:
    # Given Sinch answers with a record whose `custom` is 300 KB
    huge = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"
    record = {**SAMPLES["answered-us-to-gb"], "callId": huge, "custom": "x" * 300_000}
    harness.sinch.on_call(huge, Reply.json(record))
    # When the message is handled
    response = harness.invoke(huge)
    # Then it is a permanent failure, announced with its reason, and not retried
    assert response == {"batchItemFailures": []}
    events = harness.events()  # schema-checked
    assert [e["detail-type"] for e in events] == ["Call Enrichment Failed"]
    detail = events[0]["detail"]
    assert (detail["callId"], detail["reason"], detail["errorClass"]) == (
        huge,
        "event-too-large",
        "permanent",
    )
    assert "version 1 of the call is stored" in detail["message"]
    # And Sinch was asked once: the failure was not retried
    assert harness.sinch_requests(huge) == 1


def test_a_record_too_large_for_an_event_fails_alone(harness: Harness) -> None:
    # Given a huge record next to a good one, in one batch
    huge = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
    record = {**SAMPLES["answered-us-to-gb"], "callId": huge, "custom": "x" * 300_000}
    harness.sinch.on_call(huge, Reply.json(record))
    # When the batch is handled
    response = harness.invoke(huge, FINAL_ID)
    # Then nothing is retried: the huge one failed for good, the good one was announced
    assert response == {"batchItemFailures": []}
    kinds = sorted(
        (e["detail-type"], e["detail"]["callId"], e["detail"].get("reason"))
        for e in harness.events()
    )
    assert kinds == [
        ("Call Enriched", FINAL_ID, None),
        ("Call Enrichment Failed", huge, "event-too-large"),
    ]


def test_an_unexpected_error_in_one_record_fails_only_that_record(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import call_enricher.service as service

    # Given enriching one call raises something no one expected (a bug)
    other = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    enrich = service.enrich

    def flaky(record: object, **kwargs: object) -> object:
        if kwargs["call_id"] == FINAL_ID:
            raise RuntimeError("boom")
        return enrich(record, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "enrich", flaky)
    # When it is handled next to a good message
    response = harness.invoke(FINAL_ID, other)
    # Then only that record is reported for retry (SQS redelivers it; nothing is dropped)
    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}
    # And its neighbour went through
    assert [(e["detail-type"], e["detail"]["callId"]) for e in harness.events()] == [
        ("Call Enriched", other)
    ]
    # And once the bug is gone, the redelivery stores and announces it (nothing lost)
    monkeypatch.setattr(service, "enrich", enrich)
    assert harness.invoke(FINAL_ID) == {"batchItemFailures": []}
    assert [(e["detail-type"], e["detail"]["callId"]) for e in harness.events()] == [
        ("Call Enriched", FINAL_ID)
    ]


# --- Sinch callbacks (functions/sinch_callbacks, API Gateway v2 events) ---------------------

CALLBACK_PATH = "/sinch/callbacks"
DICE = {
    "event": "dice",
    "callid": FINAL_ID,
    "timestamp": "2024-01-08T09:48:12Z",
    "reason": "CALLERHANGUP",
    "result": "ANSWERED",
    "to": {"type": "number", "endpoint": "+442079460123"},
    "from": "+12125550123",
    "duration": 185,
}
JSON_TYPE = "application/json; charset=utf-8"


def _dice(**changes: object) -> bytes:
    return json.dumps({**DICE, **changes}).encode()


@dataclass(frozen=True)
class CallbackCase:
    name: str
    body: bytes = json.dumps(DICE).encode()
    content_type: str = JSON_TYPE
    sign_body: bytes | None = None  # sign this instead of the body (then alter it)
    sign_path: str = CALLBACK_PATH
    sign_with: str = "right"  # right | wrong-key
    skew_seconds: float = 0.0
    authorization: str | None = "signed"  # signed | None (absent) | a literal value
    scheme: str | None = None  # replace the scheme word of a signed header
    base64_body: str | None = None  # send this as a base64-encoded body
    status: int = 401
    enqueued: bool = False


CALLBACK_CASES = [
    CallbackCase("valid-dice", status=200, enqueued=True),
    CallbackCase("valid-lowercase-scheme", scheme="application", status=200, enqueued=True),
    CallbackCase("valid-uppercase-scheme", scheme="APPLICATION", status=200, enqueued=True),
    CallbackCase("valid-base64-body", base64_body="auto", status=200, enqueued=True),
    # authentication
    CallbackCase("missing-authorization", authorization=None),
    CallbackCase("empty-authorization", authorization=""),
    CallbackCase("garbled-no-colon", authorization="Application garbage"),
    CallbackCase("garbled-empty-parts", authorization="Application :"),
    CallbackCase("garbled-bearer", authorization="Bearer abc.def.ghi"),
    CallbackCase("garbled-basic", authorization="Basic Zm9vOmJhcg=="),
    CallbackCase("garbled-huge", authorization="Application " + "k" * 8000 + ":" + "s" * 8000),
    CallbackCase("garbled-non-ascii", authorization="Application \u043a\u043b\u044e\u0447:\u00e9"),
    CallbackCase("wrong-key", sign_with="wrong-key"),
    CallbackCase(
        "body-altered-after-signing", sign_body=json.dumps({**DICE, "duration": 1}).encode()
    ),
    CallbackCase("wrong-path", sign_path="/prod/sinch/callbacks"),
    CallbackCase("stale-timestamp", skew_seconds=-301),
    CallbackCase("replayed-hour-old", skew_seconds=-3600),
    CallbackCase("far-future-timestamp", skew_seconds=86_400),
    CallbackCase("bad-base64-body", base64_body="%%%not base64%%%"),
    # well signed, but not what we accept
    CallbackCase("wrong-content-type", content_type="text/plain", status=415),
    CallbackCase("form-content-type", content_type="application/x-www-form-urlencoded", status=415),
    CallbackCase(
        "oversize-body", body=b'{"event":"dice","pad":"' + b"x" * 70_000 + b'"}', status=413
    ),
    CallbackCase("malformed-json", body=b'{"event": "dice", "callid": ', status=400),
    CallbackCase("json-array", body=b"[1, 2]", status=400),
    CallbackCase("deeply-nested", body=b"[" * 20_000 + b"]" * 20_000, status=400),
    CallbackCase("empty-body", body=b"", status=400),
    CallbackCase("dice-without-call-id", body=json.dumps({"event": "dice"}).encode(), status=400),
    CallbackCase("dice-traversal-id", body=_dice(callid="../../x"), status=400),
    CallbackCase("dice-percent-id", body=_dice(callid="abc%2Fdef"), status=400),
    CallbackCase("dice-null-byte-id", body=_dice(callid="abc\x00def"), status=400),
    CallbackCase("dice-numeric-id", body=_dice(callid=12345), status=400),
    CallbackCase("dice-lookalike-id", body=_dice(callid="4398\u0430"), status=400),
    # other events: acknowledged and ignored, never answered with call-control instructions
    *[
        CallbackCase(f"non-dice-{kind}", body=_dice(event=kind), status=200)
        for kind in ("ice", "ace", "pie", "notify", "unknown-event")
    ],
]


def _callback_event(case: CallbackCase) -> dict[str, object]:
    from datetime import UTC, datetime, timedelta

    from call_enricher.sinch.auth import SinchCredentials, signed_headers
    from tests.support.queue_harness import CREDENTIALS, ROOT

    event: dict[str, object] = json.loads((ROOT / "events/sinch-dice-callback.json").read_text())
    creds = CREDENTIALS if case.sign_with == "right" else SinchCredentials("other-key", "b3RoZXI=")
    signed = signed_headers(
        creds,
        method="POST",
        path=case.sign_path,
        body=case.sign_body if case.sign_body is not None else case.body,
        content_type=case.content_type,
        now=datetime.now(UTC) + timedelta(seconds=case.skew_seconds),
    )
    headers = {"content-type": case.content_type, "x-timestamp": signed["x-timestamp"]}
    if case.authorization == "signed":
        value = signed["Authorization"]
        if case.scheme is not None:
            value = case.scheme + value[value.index(" ") :]
        headers["authorization"] = value
    elif case.authorization is not None:
        headers["authorization"] = case.authorization
    event["headers"] = headers
    if case.base64_body is not None:
        import base64

        encoded = base64.b64encode(case.body).decode()
        event["body"] = encoded if case.base64_body == "auto" else case.base64_body
        event["isBase64Encoded"] = True
    else:
        event["body"] = case.body.decode("utf-8")
        event["isBase64Encoded"] = False
    return event


@pytest.mark.parametrize("case", CALLBACK_CASES, ids=[case.name for case in CALLBACK_CASES])
def test_hostile_callback(harness: Harness, case: CallbackCase) -> None:
    from tests.support.handlers import load_handler
    from tests.support.lambda_context import FakeLambdaContext

    handler = load_handler("sinch_callbacks", fresh=True)
    # When the callback reaches the real receiver
    response = handler.lambda_handler(_callback_event(case), FakeLambdaContext())
    # Then it gets its documented status, never a 5xx, and a JSON body in the one error shape
    assert response["statusCode"] == case.status
    body = json.loads(response["body"])
    if case.status == 200:
        assert body == {}
    else:
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message", "details"}
        # 401s say nothing about why
        if case.status == 401:
            assert body["error"]["message"] == "Unauthorized."
    # And only an authentic DiCE with a valid call ID is enqueued; Sinch is never asked
    from call_enricher import aws

    messages = (
        aws.client("sqs")
        .receive_message(
            QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        .get("Messages", [])
    )
    expected = [{"callId": FINAL_ID, "entryPath": "callback"}] if case.enqueued else []
    assert [json.loads(m["Body"]) for m in messages] == expected
    assert harness.sinch.requests == []


# --- HTTP API (functions/http_api, API Gateway v2 events) -----------------------------------

VALID_2 = [FINAL_ID, "a1b2c3d4e5f60718293a4b5c6d7e8f90"]


@dataclass(frozen=True)
class ApiCase:
    name: str
    route: str  # post-calls | get-call | enrich
    body: str | None = None
    content_type: str | None = "application/json"
    path_id: str = FINAL_ID  # for the {callId} routes (sent percent-encoded in rawPath)
    base64: bool = False
    status: int = 400
    enqueued: tuple[str, ...] = ()
    rejected: int = 0  # POST /calls: how many IDs are reported rejected


def _calls(ids: list[object], **extra: object) -> str:
    return json.dumps({"callIds": ids, **extra})


API_CASES = [
    ApiCase("post-valid", "post-calls", _calls(VALID_2), status=202, enqueued=tuple(VALID_2)),
    ApiCase("post-malformed-json", "post-calls", '{"callIds": [', status=400),
    ApiCase("post-not-json", "post-calls", "callIds=abc", status=400),
    ApiCase("post-deeply-nested", "post-calls", "[" * 20_000 + "]" * 20_000, status=400),
    ApiCase("post-oversize", "post-calls", _calls(["a" * 1000] * 70), status=413),
    ApiCase(
        "post-text-plain", "post-calls", _calls(VALID_2), content_type="text/plain", status=415
    ),
    ApiCase("post-no-content-type", "post-calls", _calls(VALID_2), content_type=None, status=415),
    ApiCase("post-base64-body", "post-calls", _calls(VALID_2), base64=True, status=415),
    ApiCase("post-unknown-field", "post-calls", _calls(VALID_2, admin=True), status=422),
    ApiCase("post-101-ids", "post-calls", _calls([f"{i:032x}" for i in range(101)]), status=422),
    ApiCase("post-no-ids", "post-calls", _calls([]), status=422),
    ApiCase("post-ids-not-a-list", "post-calls", json.dumps({"callIds": FINAL_ID}), status=422),
    ApiCase("post-id-not-a-string", "post-calls", _calls([123]), status=422),
    ApiCase("post-array-body", "post-calls", json.dumps(VALID_2), status=422),
    ApiCase(
        "post-unknown-region", "post-calls", _calls(VALID_2, region="evil.example"), status=422
    ),
    ApiCase(
        "post-duplicates-collapsed",
        "post-calls",
        _calls([FINAL_ID, FINAL_ID, FINAL_ID]),
        status=202,
        enqueued=(FINAL_ID,),
    ),
    ApiCase(
        "post-invalid-ids-rejected",
        "post-calls",
        _calls(
            [
                FINAL_ID,
                "../../etc/passwd",
                "abc%2Fdef",
                "4398\u0430bed",
                "a\x00b",
                "\uff14\uff13",
                "c" * 129,
            ]
        ),
        status=202,
        enqueued=(FINAL_ID,),
        rejected=6,
    ),
    ApiCase("get-unknown", "get-call", path_id="0" * 32, status=404),
    ApiCase("get-percent-encoded", "get-call", path_id="abc%2Fdef", status=422),
    ApiCase("get-null-byte", "get-call", path_id="abc\x00def", status=422),
    ApiCase("get-lookalike", "get-call", path_id="4398\u0430bed", status=422),
    ApiCase("get-dotdot", "get-call", path_id="..", status=422),
    ApiCase("get-too-long", "get-call", path_id="e" * 200, status=422),
    ApiCase("enrich-invalid-id", "enrich", path_id="abc%2Fdef", status=422),
    ApiCase("enrich-lookalike", "enrich", path_id="\uff14\uff13\uff19\uff18", status=422),
    ApiCase("enrich-unknown", "enrich", path_id="0" * 31 + "4", status=404),
    ApiCase("enrich-text-body", "enrich", body="hello", content_type="text/plain", status=415),
]


def _api_event(case: ApiCase) -> dict[str, object]:
    import base64
    import copy
    from urllib.parse import quote

    from tests.support.queue_harness import ROOT

    name = {"post-calls": "api-post-calls", "get-call": "api-get-call", "enrich": "api-post-enrich"}
    event: dict[str, object] = copy.deepcopy(
        json.loads((ROOT / f"events/{name[case.route]}.json").read_text())
    )
    headers = dict(event["headers"])  # type: ignore[call-overload]
    headers.pop("content-type", None)
    if case.content_type is not None:
        headers["content-type"] = case.content_type
    event["headers"] = headers
    if case.route != "post-calls":
        suffix = "/enrich" if case.route == "enrich" else ""
        path = f"/calls/{quote(case.path_id, safe='')}{suffix}"
        event["rawPath"] = path
        event["requestContext"]["http"]["path"] = path  # type: ignore[index]
        event["pathParameters"] = {"callId": case.path_id}
    if case.body is None:
        event["body"] = None
        event["isBase64Encoded"] = False
    elif case.base64:
        event["body"] = base64.b64encode(case.body.encode()).decode()
        event["isBase64Encoded"] = True
    else:
        event["body"] = case.body
        event["isBase64Encoded"] = False
    return event


@pytest.mark.parametrize("case", API_CASES, ids=[case.name for case in API_CASES])
def test_hostile_api_request(harness: Harness, case: ApiCase) -> None:
    from call_enricher import aws
    from tests.support.handlers import load_handler
    from tests.support.lambda_context import FakeLambdaContext

    handler = load_handler("http_api")
    # When the request reaches the real API handler (no exception may escape)
    response = handler.lambda_handler(_api_event(case), FakeLambdaContext())
    # Then it gets its documented status, never a 5xx, errors in the one shape
    assert response["statusCode"] == case.status, response.get("body")
    body = json.loads(response["body"])
    if case.status >= 400:
        assert set(body) == {"error"}
        assert {"code", "message"} <= set(body["error"])
        assert "Traceback" not in response["body"]
    if case.route == "post-calls" and case.status == 202:
        assert len(body["rejected"]) == case.rejected
        assert all(r["reason"] == INVALID_ID for r in body["rejected"])
    # And only validated IDs were enqueued, or reached Sinch
    messages = (
        aws.client("sqs")
        .receive_message(
            QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        .get("Messages", [])
    )
    assert sorted(json.loads(m["Body"])["callId"] for m in messages) == sorted(case.enqueued)
    assert all(VALID_PATH.fullmatch(request.path) for request in harness.sinch.requests)
