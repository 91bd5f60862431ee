"""The Get Call record model: tolerant parsing, open enums, exact money, precise errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from call_enricher.errors import ErrorClass, InvalidRecordError
from call_enricher.model import (
    MAX_DEPTH,
    MAX_DURATION_SECONDS,
    RECORD_MODEL_VERSION,
    CallReason,
    CallRecord,
    CallResult,
    CallStatus,
    Domain,
    Party,
    PartyType,
    UnknownEnumValue,
    decode_and_parse,
    exceeds_depth,
    loads_exact,
    parse_call_record,
)

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "events" / "sinch").glob("*.json"))


def _problems(data: Any) -> list[dict[str, str]]:
    with pytest.raises(InvalidRecordError) as caught:
        parse_call_record(data)
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert caught.value.reason == "invalid-record"
    details = caught.value.details
    assert isinstance(details, list)
    assert details, "an invalid record must say what is wrong"
    return details


def _fields(data: Any) -> dict[str, str]:
    return {item["field"]: item["problem"] for item in _problems(data)}


# --- samples --------------------------------------------------------------------------------------


def test_there_are_enough_samples():
    # Given the sample Get Call bodies shipped in events/sinch
    # Then there are at least a dozen of them
    assert len(SAMPLES) >= 12


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_parses(path: Path):
    # Given a realistic Get Call body
    body = path.read_bytes()
    # When it is parsed
    record = parse_call_record(body)
    # Then it has a call ID, a known status, and no unknown enum value
    assert record.call_id
    assert record.status in (CallStatus.FINAL, CallStatus.ONGOING)
    assert record.unknown_enum_values == ()


def test_samples_cover_every_documented_enum_value():
    # Given all samples
    records = [parse_call_record(path.read_bytes()) for path in SAMPLES]
    raw_types = {
        party.raw_type
        for record in records
        for party in (record.from_, record.to)
        if party is not None
    }
    # Then every documented result, reason, status and type spelling appears at least once
    assert {r.result for r in records} == set(CallResult)
    assert {r.reason for r in records} == set(CallReason)
    assert {r.status for r in records} == set(CallStatus)
    assert {"number", "Number", "username", "Username", "sip"} <= raw_types


# --- parties --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_type", "expected"),
    [
        ("number", PartyType.NUMBER),
        ("Number", PartyType.NUMBER),
        ("NUMBER", PartyType.NUMBER),
        ("username", PartyType.USERNAME),
        ("Username", PartyType.USERNAME),
        ("sip", PartyType.SIP),
        ("SIP", PartyType.SIP),
        ("did", PartyType.DID),
    ],
)
def test_party_type_is_case_insensitive_and_keeps_the_raw_spelling(raw_type, expected):
    # Given a party whose type is spelled in some case
    record = parse_call_record({"to": {"type": raw_type, "endpoint": "+12125550123"}})
    # Then the type is normalised, the spelling kept, and nothing is flagged
    assert record.to is not None
    assert record.to.type is expected
    assert record.to.raw_type == raw_type
    assert record.unknown_enum_values == ()


def test_unknown_party_type_is_kept_and_flagged():
    # Given a party type Sinch does not document
    record = parse_call_record({"from": {"type": "carrierPigeon", "endpoint": "coop-7"}})
    # Then the record parses, the type is UNKNOWN with the raw value kept, and it is flagged
    assert record.from_ is not None
    assert record.from_.type is PartyType.UNKNOWN
    assert record.from_.raw_type == "carrierPigeon"
    assert record.unknown_enum_values == (UnknownEnumValue("from.type", "carrierPigeon"),)


def test_missing_or_blank_party_type_is_unknown_but_not_flagged():
    # Given parties without a type, or with a blank one
    record = parse_call_record(
        {"from": {"endpoint": "+12125550123"}, "to": {"type": " ", "endpoint": "x"}}
    )
    # Then their type is UNKNOWN, no raw type, and nothing is flagged (no value was sent)
    assert record.from_ is not None
    assert record.to is not None
    assert (record.from_.type, record.from_.raw_type) == (PartyType.UNKNOWN, None)
    assert (record.to.type, record.to.raw_type) == (PartyType.UNKNOWN, None)
    assert record.unknown_enum_values == ()


def test_plain_string_party_is_an_endpoint_of_unknown_type():
    # Given a DiCE-style plain string `from`
    record = parse_call_record({"from": "+46701740605"})
    # Then it is an endpoint of unknown type
    assert record.from_ == Party(endpoint="+46701740605")
    assert record.from_.type is PartyType.UNKNOWN


def test_absent_and_null_parties_are_none():
    # Given a record without `from` and with a null `to`
    record = parse_call_record({"to": None, "callId": "abc"})
    # Then both are None
    assert record.from_ is None
    assert record.to is None


@pytest.mark.parametrize(
    ("party", "field", "problem"),
    [
        (5, "from", "must be an object {type, endpoint} or a string"),
        ([], "from", "must be an object {type, endpoint} or a string"),
        ({"type": 3, "endpoint": "x"}, "from.type", "must be a string"),
        ({"type": "number", "endpoint": 46701740605}, "from.endpoint", "must be a string"),
    ],
)
def test_party_of_the_wrong_json_type_is_invalid(party, field, problem):
    # Given a `from` of the wrong shape
    # When it is parsed
    problems = _fields({"from": party})
    # Then the error names the field and the problem
    assert problems == {field: problem}


# --- enums ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", list(CallStatus))
def test_known_status_values_become_members(value):
    record = parse_call_record({"status": value.value})
    assert record.status is value


@pytest.mark.parametrize("value", list(CallResult))
def test_known_result_values_become_members(value):
    record = parse_call_record({"result": value.value})
    assert record.result is value


@pytest.mark.parametrize("value", list(CallReason))
def test_known_reason_values_become_members(value):
    record = parse_call_record({"reason": value.value})
    assert record.reason is value


def test_enum_values_match_case_insensitively():
    # Given enum values in unusual case and with spaces
    record = parse_call_record(
        {"status": "final", "result": " Answered ", "reason": "callerHangup", "domain": "PSTN"}
    )
    # Then they are the known members
    assert record.status is CallStatus.FINAL
    assert record.result is CallResult.ANSWERED
    assert record.reason is CallReason.CALLERHANGUP
    assert record.domain is Domain.PSTN
    assert record.is_final


def test_unknown_enum_values_are_kept_as_sent_and_flagged():
    # Given values Sinch does not document (yet)
    record = parse_call_record(
        {"status": "ARCHIVED", "result": "VOICEMAIL", "reason": "SPAM", "domain": "webrtc"}
    )
    # Then they are kept as plain strings and each is listed
    assert (record.status, record.result, record.reason, record.domain) == (
        "ARCHIVED",
        "VOICEMAIL",
        "SPAM",
        "webrtc",
    )
    assert not isinstance(record.status, CallStatus)
    assert set(record.unknown_enum_values) == {
        UnknownEnumValue("status", "ARCHIVED"),
        UnknownEnumValue("result", "VOICEMAIL"),
        UnknownEnumValue("reason", "SPAM"),
        UnknownEnumValue("domain", "webrtc"),
    }
    assert not record.is_final


def test_empty_enum_strings_are_absent():
    record = parse_call_record({"status": "", "result": "  ", "reason": None})
    assert (record.status, record.result, record.reason) == (None, None, None)
    assert record.unknown_enum_values == ()


def test_enum_of_the_wrong_json_type_is_invalid():
    assert _fields({"status": 1, "result": True, "reason": ["N/A"]}) == {
        "status": "must be a string",
        "result": "must be a string",
        "reason": "must be a string",
    }


# --- timestamp ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-08T09:48:12", datetime(2024, 1, 8, 9, 48, 12, tzinfo=UTC)),
        ("2024-01-08T09:48:12.123", datetime(2024, 1, 8, 9, 48, 12, 123000, tzinfo=UTC)),
        ("2024-01-08T09:48:12Z", datetime(2024, 1, 8, 9, 48, 12, tzinfo=UTC)),
        ("2024-01-08T09:48:12z", datetime(2024, 1, 8, 9, 48, 12, tzinfo=UTC)),
        ("2024-01-08T09:48:12.5Z", datetime(2024, 1, 8, 9, 48, 12, 500000, tzinfo=UTC)),
        ("2024-01-08T09:48:12.1234567Z", datetime(2024, 1, 8, 9, 48, 12, 123456, tzinfo=UTC)),
        ("2024-01-08 09:48:12", datetime(2024, 1, 8, 9, 48, 12, tzinfo=UTC)),
        ("2024-01-08T10:48:12+01:00", datetime(2024, 1, 8, 9, 48, 12, tzinfo=UTC)),
        ("2024-01-08T04:48:12-0500", datetime(2024, 1, 8, 9, 48, 12, tzinfo=UTC)),
    ],
)
def test_timestamps_become_aware_utc(text, expected):
    # Given a timestamp in one of the shapes Sinch sends
    record = parse_call_record({"timestamp": text})
    # Then it is an aware UTC datetime (no zone means UTC; offsets are converted)
    assert record.timestamp == expected
    assert record.timestamp is not None
    assert record.timestamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "value",
    ["yesterday", "2024-01-08", "2024-13-01T00:00:00", "2024-01-08T24:00:00", "x" * 100],
)
def test_unparseable_timestamps_are_invalid(value):
    problems = _fields({"timestamp": value})
    assert problems == {"timestamp": "must be an ISO 8601 date-time (date and time)"}


def test_timestamp_must_be_a_string():
    assert _fields({"timestamp": 1704707292}) == {
        "timestamp": "must be an ISO 8601 date-time string"
    }


def test_timestamp_out_of_range_in_utc_is_invalid():
    assert _fields({"timestamp": "0001-01-01T00:00:00+01:00"}) == {
        "timestamp": "is out of range once converted to UTC"
    }


def test_empty_timestamp_is_absent():
    assert parse_call_record({"timestamp": ""}).timestamp is None


def test_aware_datetime_given_programmatically_is_converted():
    value = datetime(2024, 1, 8, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert CallRecord(timestamp=value).timestamp == datetime(2024, 1, 8, 9, 0, tzinfo=UTC)


# --- duration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (62, 62), (12.0, 12), (MAX_DURATION_SECONDS,) * 2]
)
def test_valid_durations(value, expected):
    assert parse_call_record({"duration": value}).duration == expected


def test_integral_duration_written_with_a_fraction_is_accepted_from_json_text():
    assert parse_call_record(b'{"duration": 12.0}').duration == 12


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1, "must be >= 0"),
        (MAX_DURATION_SECONDS + 1, f"must be <= {MAX_DURATION_SECONDS} (31 days)"),
        (1.5, "must be an integer number of seconds"),
        (True, "must be an integer number of seconds"),
        ("12", "must be an integer number of seconds"),
        (float("inf"), "must be an integer number of seconds"),
        (Decimal("1E+999999"), f"must be <= {MAX_DURATION_SECONDS} (31 days)"),
    ],
)
def test_invalid_durations_name_the_problem(value, problem):
    assert _fields({"duration": value}) == {"duration": problem}


# --- money ----------------------------------------------------------------------------------------


def test_amounts_from_json_text_are_exact_decimals():
    # Given a body whose amounts have no exact float representation
    body = b'{"userRate": {"currencyId": "USD", "amount": 0.1}, "debit": {"amount": 0.2}}'
    # When it is parsed
    record = parse_call_record(body)
    # Then the amounts are the exact decimals written, and add up exactly
    assert record.user_rate is not None
    assert record.debit is not None
    assert record.user_rate.amount == Decimal("0.1")
    assert record.debit.amount == Decimal("0.2")
    assert record.user_rate.amount + record.debit.amount == Decimal("0.3")


def test_amount_keeps_the_scale_written():
    record = parse_call_record(b'{"debit": {"amount": 0.0100}}')
    assert record.debit is not None
    assert str(record.debit.amount) == "0.0100"


def test_float_amounts_from_a_decoded_mapping_are_converted_without_drift():
    # Given a mapping decoded elsewhere with floats
    record = parse_call_record({"debit": {"currencyId": "EUR", "amount": 0.1 + 0.2}})
    # Then the amount is the float's shortest round-trip text, not its binary expansion
    assert record.debit is not None
    assert record.debit.amount == Decimal("0.30000000000000004")
    assert parse_call_record({"debit": {"amount": 0.0123}}).debit.amount == Decimal("0.0123")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, Decimal(0)),
        (2, Decimal(2)),
        ("0.0123", Decimal("0.0123")),
        (" 1.5 ", Decimal("1.5")),
        (Decimal("-0"), Decimal(0)),
        (-0.5, Decimal("-0.5")),
        (None, None),
    ],
)
def test_amount_tolerances(value, expected):
    record = parse_call_record({"userRate": {"amount": value}})
    assert record.user_rate is not None
    assert record.user_rate.amount == expected
    if expected == 0:
        assert not record.user_rate.amount.is_signed()


def test_null_currency_and_missing_amount_are_kept_as_none():
    record = parse_call_record({"debit": {"currencyId": None}})
    assert record.debit is not None
    assert (record.debit.currency_id, record.debit.amount) == (None, None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (True, "must be a number"),
        ("ten", "must be a number"),
        ([1], "must be a number"),
        (float("nan"), "must be a finite number"),
        ("Infinity", "must be a finite number"),
        (Decimal("1E+15"), "is out of range (|amount| must be < 10^15)"),
        (10**20, "is out of range (|amount| must be < 10^15)"),
        (Decimal("1E-31"), "has more than 30 decimal places"),
    ],
)
def test_invalid_amounts_name_the_problem(value, problem):
    assert _fields({"debit": {"currencyId": "USD", "amount": value}}) == {"debit.amount": problem}


def test_money_of_the_wrong_shape_is_invalid():
    assert _fields({"userRate": 0.01, "debit": {"currencyId": 978}}) == {
        "userRate": "must be an object {currencyId, amount}",
        "debit.currencyId": "must be a string",
    }


# --- call ID --------------------------------------------------------------------------------------


def test_lowercase_callid_alias_is_accepted():
    assert parse_call_record({"callid": "abc123"}).call_id == "abc123"


def test_callid_spellings_that_agree_are_fine():
    assert parse_call_record({"callId": "abc", "callid": "abc"}).call_id == "abc"


def test_empty_callId_falls_back_to_callid():
    assert parse_call_record({"callId": "", "callid": "abc"}).call_id == "abc"


def test_callid_spellings_that_disagree_are_ambiguous():
    assert _fields({"callId": "abc", "callid": "def"}) == {"callid": "disagrees with callId"}


def test_call_id_must_be_a_string():
    assert _fields({"callId": 123}) == {"callId": "must be a string"}


def test_empty_call_id_is_absent():
    assert parse_call_record({"callId": ""}).call_id is None


# --- custom ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("custom", ["{}", '{"a": 1}', "plain text", "", " padded "])
def test_custom_is_kept_exactly(custom):
    assert parse_call_record({"custom": custom}).custom == custom


def test_custom_must_be_a_string():
    assert _fields({"custom": {"a": 1}}) == {"custom": "must be a string"}


# --- unknown keys ---------------------------------------------------------------------------------


def test_unknown_keys_are_ignored_and_noted_as_dotted_paths():
    # Given a legacy body with extra keys at several levels
    body = {
        "callId": "abc",
        "debitMinutes": 2,
        "formatted": "x",
        "debit": {"currencyId": "USD", "amount": 0, "formatted": "0.00 USD"},
        "to": {"type": "number", "endpoint": "+12125550123", "carrier": "?"},
        "extraKeys": ["injected"],
        "call_id": "not-a-sinch-key",
    }
    # When it is parsed
    record = parse_call_record(body)
    # Then it parses, and every unknown key is listed, sorted, by its path
    assert record.call_id == "abc"
    assert record.extra_keys == (
        "call_id",
        "debit.formatted",
        "debitMinutes",
        "extraKeys",
        "formatted",
        "to.carrier",
    )


# --- whole-body problems --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "body is not valid JSON"),
        (b"", "body is not valid JSON"),
        (b"\xff\xfe\x00garbage", "body is not valid JSON"),
        (b'{"debit": {"amount": NaN}}', "body is not valid JSON"),
        ("[1, 2]", "body must be a JSON object"),
        (b"null", "body must be a JSON object"),
        (b'"a string"', "body must be a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON"),
        (42, "body must be JSON text or a mapping"),
    ],
)
def test_bodies_that_are_not_objects_are_invalid(body, problem):
    assert _problems(body) == [{"field": "$", "problem": problem}]


def test_bodies_nested_too_deep_are_invalid():
    # Given a body with an unknown key nested deeper than the limit
    nested: dict[str, Any] = {}
    cursor = nested
    for _ in range(MAX_DEPTH + 1):
        cursor["x"] = {}
        cursor = cursor["x"]
    # Then it is rejected before anything walks it recursively
    assert _problems({"callId": "a", "extra": nested}) == [
        {"field": "$", "problem": f"nested deeper than {MAX_DEPTH} levels"}
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"custom": "\\ud800"}', "custom"),
        (b'{"to": {"type": "number", "endpoint": "+1\\udfff"}}', "to.endpoint"),
        (b'{"x": [1, {"\\udc00k": 1}]}', "x[1].\\udc00k"),
        ({"callId": "a\udc80"}, "callId"),
    ],
)
def test_strings_that_are_not_valid_unicode_are_invalid(body, field):
    # Given a body with a lone UTF-16 surrogate (JSON allows the escape; UTF-8 cannot hold it)
    # Then it is rejected, naming where, in printable form
    assert _problems(body) == [
        {
            "field": field,
            "problem": "is not valid Unicode (a lone surrogate escape such as \\ud800)",
        }
    ]


def test_escaped_surrogate_pairs_are_fine():
    record = parse_call_record(b'{"to": {"endpoint": "\\ud83d\\ude00"}, "custom": "caf\\u00e9"}')
    assert record.to is not None
    assert record.to.endpoint == "\U0001f600"
    assert record.custom == "café"


def test_exceeds_depth_counts_containers():
    assert not exceeds_depth({"a": {"b": [1, 2]}}, limit=3)
    assert exceeds_depth({"a": {"b": [[1]]}}, limit=3)
    assert not exceeds_depth({}, limit=1)


def test_every_problem_is_reported_at_once_and_the_message_names_them():
    # Given a record with several bad fields, and a phone number elsewhere
    body = {
        "from": {"type": "number", "endpoint": "+46701740605"},
        "duration": -5,
        "timestamp": "soon",
        "debit": {"amount": "lots"},
    }
    # When it is parsed
    with pytest.raises(InvalidRecordError) as caught:
        parse_call_record(body)
    # Then every problem is listed, the message names each field and problem...
    error = caught.value
    assert error.details == [
        {"field": "duration", "problem": "must be >= 0"},
        {"field": "timestamp", "problem": "must be an ISO 8601 date-time (date and time)"},
        {"field": "debit.amount", "problem": "must be a number"},
    ]
    assert str(error) == (
        "invalid Get Call record: duration: must be >= 0; "
        "timestamp: must be an ISO 8601 date-time (date and time); "
        "debit.amount: must be a number"
    )
    # ...and no value from the body leaks into it
    assert "46701740605" not in json.dumps(error.to_dict())
    assert "soon" not in str(error)


def test_invalid_values_never_appear_in_the_error():
    # Given a wrong-typed endpoint holding a number
    with pytest.raises(InvalidRecordError) as caught:
        parse_call_record({"to": {"type": "number", "endpoint": ["+46701740605"]}})
    # Then the number is not in the error
    assert "46701740605" not in json.dumps(caught.value.to_dict())


# --- the model itself -----------------------------------------------------------------------------


def test_records_are_frozen():
    record = parse_call_record({"callId": "abc"})
    with pytest.raises(ValidationError):
        record.call_id = "other"  # type: ignore[misc]


def test_records_can_be_built_by_field_name():
    # Given a record built in code (tests, tools)
    record = CallRecord(
        call_id="abc",
        from_=Party(type="Number", endpoint="+12125550123"),
        status="FINAL",
        duration=3,
    )
    # Then it is validated like a parsed one
    assert record.from_ is not None
    assert record.from_.type is PartyType.NUMBER
    assert record.from_.raw_type == "Number"
    assert record.status is CallStatus.FINAL


def test_record_json_form_keeps_sinch_names_exact_amounts_and_utc():
    record = parse_call_record(
        b'{"callId": "a", "timestamp": "2024-01-08T09:48:12.120", "userRate": {"amount": 1E-7},'
        b' "from": {"type": "Number", "endpoint": "+1"}, "status": "odd"}'
    )
    dumped = record.model_dump(mode="json", by_alias=True)
    assert dumped["callId"] == "a"
    assert dumped["timestamp"] == "2024-01-08T09:48:12.120Z"
    assert dumped["userRate"] == {"currencyId": None, "amount": "0.0000001"}
    assert dumped["from"] == {"type": "number", "rawType": "Number", "endpoint": "+1"}
    assert dumped["status"] == "odd"


def test_decode_and_parse_returns_the_decoded_body_with_exact_numbers():
    raw, record = decode_and_parse(b'{"callId": "a", "debit": {"amount": 0.1}}')
    assert raw == {"callId": "a", "debit": {"amount": Decimal("0.1")}}
    assert record.call_id == "a"


def test_loads_exact_rejects_non_json_constants():
    with pytest.raises(ValueError, match="NaN"):
        loads_exact("NaN")
    assert loads_exact("1.10") == Decimal("1.10")


def test_record_model_version_is_documented():
    assert RECORD_MODEL_VERSION == "1"
