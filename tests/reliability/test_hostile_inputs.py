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

The rows for the HTTP API and the Sinch callback receiver are to be added with their handlers
(``functions/http_api``, ``functions/sinch_callbacks``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

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
    Case("region-number", f'{{"callId": "{FINAL_ID}", "region": 1}}', MALFORMED),
    Case("region-unknown", f'{{"callId": "{FINAL_ID}", "region": "evil.example.com"}}', MALFORMED),
    Case("context-string", f'{{"callId": "{FINAL_ID}", "context": "x"}}', MALFORMED),
    Case("recheck-negative", f'{{"callId": "{FINAL_ID}", "recheck": -1}}', MALFORMED),
    Case(
        "first-seen-naive",
        f'{{"callId": "{FINAL_ID}", "firstSeenAt": "2026-01-01T00:00"}}',
        MALFORMED,
    ),
    Case("entry-path-unknown", f'{{"callId": "{FINAL_ID}", "entryPath": "admin"}}', MALFORMED),
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
    # And exactly one failure event names the documented reason, with no call ID
    if case.reaches_sinch:
        bare = case.body.strip()
        assert [(d["reason"], d["callId"], d["errorClass"]) for d in failed] == [
            (case.reason, bare, "not-found")
        ]
    else:
        assert [(d["reason"], d["callId"], d["errorClass"]) for d in failed] == [
            (case.reason, None, "permanent")
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


@pytest.mark.xfail(
    strict=True,
    raises=ValueError,
    reason=(
        "BUG (reported to the lead): a context nested ~255+ levels deep (2 KB, under the 8 KiB "
        "limit) passes parse_message_body, then pydantic's model_dump of the event detail raises "
        "'Maximum serialization depth exceeded' in EnrichmentService._decide: the exception "
        "escapes the handler and fails the WHOLE batch (its good neighbours too) on every "
        "delivery until the DLQ. Fix: bound the context's nesting in messages.py (permanent "
        "malformed-message), and keep per-record event building from escaping the batch."
    ),
)
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


@pytest.mark.xfail(
    strict=True,
    raises=BatchProcessingError,
    reason=(
        "BUG (reported to the lead): a record of ~256-400 KB (a huge `custom` from Sinch) is "
        "stored (under DynamoDB's 400 KB) but its Call Enriched event is over EventBridge's "
        "256 KB: the publisher fails it with a PermanentError, and EnrichmentService._publish "
        "turns every publish error into RETRY, so the message is redelivered maxReceiveCount "
        "times (Sinch asked each time) and ends in the DLQ, where a redrive cannot help. The "
        "pipeline's own policy says a permanent error publishes `Call Enrichment Failed`."
    ),
)
def test_a_record_too_large_for_an_event_fails_for_good(harness: Harness) -> None:
    # Given Sinch answers with a record whose `custom` is 300 KB
    huge = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"
    record = {**SAMPLES["answered-us-to-gb"], "callId": huge, "custom": "x" * 300_000}
    harness.sinch.on_call(huge, Reply.json(record))
    # When the message is handled
    response = harness.invoke(huge)
    # Then it is a permanent failure, announced, and not retried
    assert response == {"batchItemFailures": []}
    assert [e["detail-type"] for e in harness.events()] == ["Call Enrichment Failed"]
