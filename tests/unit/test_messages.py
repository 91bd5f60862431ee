"""The enrichment queue's message contract: JSON object or bare call ID; anything else permanent."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from call_enricher.errors import InvalidCallIdError, MalformedMessageError
from call_enricher.messages import (
    MAX_CONTEXT_DEPTH,
    EnrichmentRequest,
    check_context,
    context_depth,
    parse_message_body,
)

CALL_ID = "4398599d1ba84ef3bde0a82dfb61abed"


def test_bare_call_id():
    # Given a simple producer's plain-text body / When parsed
    request = parse_message_body(f" {CALL_ID}\n")
    # Then it is a request for that call with no region or context
    assert request == EnrichmentRequest(call_id=CALL_ID)
    assert request.entry_path == "queue"


def test_json_object_with_region_and_context():
    body = json.dumps({"callId": CALL_ID, "region": "euc1", "context": {"crmId": 42}})
    request = parse_message_body(body)
    assert (request.call_id, request.region, request.context) == (CALL_ID, "euc1", {"crmId": 42})


def test_callback_spelling_and_unknown_keys_are_accepted():
    request = parse_message_body(json.dumps({"callid": CALL_ID, "future": "field"}))
    assert request.call_id == CALL_ID


def test_json_string_body_is_a_bare_call_id():
    assert parse_message_body(json.dumps(CALL_ID)).call_id == CALL_ID


def test_round_trip_through_the_queue_body():
    # Given a re-check request / When serialised and parsed again
    request = parse_message_body(CALL_ID).model_copy(update={"recheck": 2})
    # Then nothing is lost
    assert parse_message_body(request.to_body()) == request


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (None, MalformedMessageError),
        ("", MalformedMessageError),
        ("   ", MalformedMessageError),
        ("{not json", MalformedMessageError),
        ("[1, 2]", MalformedMessageError),
        ('{"region": "euc1"}', MalformedMessageError),
        ('{"callId": 42}', InvalidCallIdError),
        ('{"callId": "../etc/passwd"}', InvalidCallIdError),
        ('{"callId": "abc%2Fdef"}', InvalidCallIdError),
        (json.dumps({"callId": CALL_ID, "context": "not an object"}), MalformedMessageError),
        (json.dumps({"callId": CALL_ID, "context": {"x": "y" * 9000}}), MalformedMessageError),
        ("[" * 100_000 + "]" * 100_000, MalformedMessageError),
        ("abc def", InvalidCallIdError),
    ],
)
def test_malformed_bodies_are_permanent_errors(body, error):
    # Given a body that is not a valid request / When parsed / Then a permanent error is raised
    with pytest.raises(error) as caught:
        parse_message_body(body)
    assert not caught.value.retryable


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("utf-8", "replace"))))
def test_arbitrary_bodies_raise_only_documented_errors(body):
    # Given any text at all / When parsed / Then it is a request or a documented permanent error
    try:
        request = parse_message_body(body)
    except (MalformedMessageError, InvalidCallIdError) as exc:
        assert not exc.retryable  # noqa: PT017 (hypothesis: both outcomes are valid)
    else:
        assert request.call_id in body


def test_unknown_region_is_malformed():
    with pytest.raises(MalformedMessageError) as caught:
        parse_message_body(json.dumps({"callId": CALL_ID, "region": "mars1"}))
    assert caught.value.details[0]["field"] == "region"


def _nested_context(depth: int) -> dict:
    context: dict = {"leaf": 1}
    for _ in range(depth - 1):
        context = {"a": context}
    return context


def test_context_nested_up_to_the_limit_is_accepted():
    # Given a context nested exactly MAX_CONTEXT_DEPTH levels
    context = _nested_context(MAX_CONTEXT_DEPTH)
    assert context_depth(context) == MAX_CONTEXT_DEPTH
    # When parsed / Then it is a request carrying the context unchanged
    request = parse_message_body(json.dumps({"callId": CALL_ID, "context": context}))
    assert request.context == context


@pytest.mark.parametrize("depth", [MAX_CONTEXT_DEPTH + 1, 300, 5000])
def test_context_nested_deeper_than_the_limit_is_malformed(depth):
    # Given a context one level too deep, or hundreds of levels (a few KB: under the size limit)
    body = '{"callId": "' + CALL_ID + '", "context": ' + '{"a":' * depth + "1" + "}" * depth + "}"
    # When parsed
    with pytest.raises(MalformedMessageError) as caught:
        parse_message_body(body)
    # Then it is a permanent malformed message that names the field and the problem
    assert not caught.value.retryable
    assert caught.value.details == [{"field": "context", "problem": "too deep"}]
    assert f"more than {MAX_CONTEXT_DEPTH}" in caught.value.message


def test_deep_arrays_inside_the_context_count_too():
    context = {"x": [[[[1]]]]}
    assert context_depth(context) == 5
    assert context_depth({}) == 1
    assert context_depth("scalar") == 0
    too_deep = {"x": json.loads("[" * MAX_CONTEXT_DEPTH + "]" * MAX_CONTEXT_DEPTH)}
    with pytest.raises(MalformedMessageError):
        check_context(too_deep)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"callId": "abc-123", "context": "not an object"}', "abc-123"),
        ('{"callid": "abc_123", "region": "mars"}', "abc_123"),
        ('{"callId": "../etc", "region": "mars"}', None),
        ('{"callId": 5}', None),
        ('["abc"]', None),
        ("{not json", None),
        ("", None),
        (None, None),
    ],
)
def test_a_rejected_message_names_its_call_id_only_when_valid(
    body: str | None, expected: str | None
) -> None:
    # Given a message that fails to parse
    # When it is parsed
    with pytest.raises((MalformedMessageError, InvalidCallIdError)) as caught:
        parse_message_body(body)
    # Then the error carries the message's call ID only when that ID is valid (a failure
    # event may name it)
    assert getattr(caught.value, "call_id", None) == expected
