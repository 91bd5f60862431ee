"""Enrichment: every rule of the mapping, the public JSON form, provenance and fingerprint."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from call_enricher.enrichment import (
    ENRICHMENT_SCHEMA_VERSION,
    EndedBy,
    EnrichedCall,
    OutcomeKind,
    PartyKind,
    enrich,
    enrich_json,
    fingerprint,
)
from call_enricher.errors import InvalidRecordError
from call_enricher.model import RECORD_MODEL_VERSION, loads_exact, parse_call_record

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "events" / "sinch").glob("*.json"))
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SCHEMA = EnrichedCall.model_json_schema(mode="serialization", by_alias=True)


def _enrich(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Enrich a body (given a call ID and start time unless it has them); return public JSON."""
    body = {"callId": "c0ffee", "timestamp": "2024-01-08T09:00:00", **body}
    enriched = enrich_json(body, enriched_at=NOW, **kwargs)
    return enriched.model_dump(mode="json", by_alias=True)


def _codes(public: dict[str, Any]) -> set[str]:
    return {warning["code"] for warning in public["warnings"]}


# --- samples --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_enriches_into_schema_valid_json(path: Path):
    # Given a realistic Get Call body
    body = path.read_bytes()
    # When it is enriched and serialised
    enriched = enrich_json(body, enriched_at=NOW, base_url="https://calling-euc1.api.sinch.com")
    public = enriched.model_dump(mode="json", by_alias=True)
    # Then the JSON matches the published schema, survives a strict JSON round trip...
    jsonschema.validate(public, SCHEMA)
    assert json.loads(json.dumps(public, allow_nan=False)) == public
    # ...carries the source fingerprint, and warns about nothing unexpected
    assert public["provenance"]["fingerprint"] == fingerprint(loads_exact(body))
    assert _codes(public) <= {"invalid-phone-number"}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_output_never_leaks_full_numbers_outside_the_party_data(path: Path):
    # Given an enriched sample
    public = enrich_json(path.read_bytes(), enriched_at=NOW).model_dump(mode="json")
    # Then warnings and masked forms hold no run of 6+ digits (no full number)
    log_safe = json.dumps(public["warnings"]) + json.dumps(
        [p["masked"] for p in public["parties"].values() if p]
    )
    assert not re.search(r"\d{6,}", log_safe)


def test_answered_us_to_gb_sample_in_full():
    # Given the answered US -> GB sample
    body = (SAMPLES[0].parent / "answered-us-to-gb.json").read_bytes()
    # When it is enriched
    public = enrich_json(
        body, enriched_at=NOW, base_url="https://calling-use1.api.sinch.com", region="use1"
    ).model_dump(mode="json", by_alias=True)
    # Then every section says what the call was
    assert public["schemaVersion"] == ENRICHMENT_SCHEMA_VERSION
    assert public["callId"] == "4398599d1ba84ef3bde0a82dfb61abed"
    assert (public["status"], public["isFinal"]) == ("FINAL", True)
    caller, callee = public["parties"]["from"], public["parties"]["to"]
    assert caller["kind"] == "pstn"
    assert caller["masked"] == "+1********23"
    assert caller["phone"]["country"] == "US"
    assert caller["phone"]["geoDescription"] == "New York, NY"
    assert callee["phone"]["country"] == "GB"
    assert callee["phone"]["geoDescription"] == "London"
    assert callee["phone"]["numberType"] == "fixed-line"
    assert callee["phone"]["timeZones"] == ["Europe/London"]
    assert public["outcome"] == {
        "answered": True,
        "outcome": "completed",
        "endedBy": "caller",
        "result": "ANSWERED",
        "reason": "CALLERHANGUP",
    }
    assert public["time"] == {
        "start": "2024-01-08T09:48:12Z",
        "end": "2024-01-08T09:51:17Z",
        "durationSeconds": 185,
        "billableMinutes": 4,
        "utcDay": "2024-01-08",
    }
    assert public["money"] == {
        "debit": {"currency": "USD", "amount": "0.1016"},
        "ratePerMinute": {"currency": "USD", "amount": "0.0254"},
    }
    assert public["custom"] == {"raw": "{}", "parsed": {}}
    assert public["provenance"]["sinchBaseUrl"] == "https://calling-use1.api.sinch.com"
    assert public["provenance"]["sinchRegion"] == "use1"
    assert public["provenance"]["enrichedAt"] == "2026-11-26T12:00:00Z"
    assert public["warnings"] == []


# --- outcome --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "result", "reason", "outcome", "ended_by", "answered"),
    [
        ("ONGOING", "N/A", "N/A", "in-progress", "n/a", False),
        ("ONGOING", "ANSWERED", "N/A", "in-progress", "n/a", True),
        ("FINAL", "ANSWERED", "CALLERHANGUP", "completed", "caller", True),
        ("FINAL", "ANSWERED", "CALLEEHANGUP", "completed", "callee", True),
        ("FINAL", "ANSWERED", "MANAGERHANGUP", "completed", "system", True),
        ("FINAL", "ANSWERED", "TIMEOUT", "completed", "system", True),
        ("FINAL", "ANSWERED", "N/A", "completed", "n/a", True),
        ("FINAL", "BUSY", "N/A", "busy", "callee", False),
        ("FINAL", "BUSY", "CALLEEHANGUP", "busy", "callee", False),
        ("FINAL", "NOANSWER", "TIMEOUT", "no-answer", "system", False),
        ("FINAL", "NOANSWER", "N/A", "no-answer", "n/a", False),
        ("FINAL", "NOANSWER", "CALLEEHANGUP", "no-answer", "callee", False),
        ("FINAL", "NOANSWER", "CANCEL", "cancelled", "caller", False),
        ("FINAL", "NOANSWER", "CALLERHANGUP", "cancelled", "caller", False),
        ("FINAL", "FAILED", "BLOCKED", "failed", "system", False),
        ("FINAL", "FAILED", "GENERALERROR", "failed", "system", False),
        ("FINAL", "FAILED", "INVALIDSVAMLACTION", "failed", "system", False),
        ("FINAL", "FAILED", "NOCREDITPARTNER", "failed", "system", False),
        ("FINAL", "N/A", "NOCREDITPARTNER", "failed", "system", False),
        ("FINAL", "N/A", "BLOCKED", "failed", "system", False),
        ("FINAL", "N/A", "CANCEL", "cancelled", "caller", False),
        ("FINAL", "N/A", "N/A", "unknown", "n/a", False),
        ("FINAL", None, None, "unknown", "n/a", False),
        ("FINAL", "VOICEMAIL", "SPAM", "unknown", "n/a", False),
    ],
)
def test_outcome_mapping(status, result, reason, outcome, ended_by, answered):
    # Given a record with this status, result and reason
    public = _enrich({"status": status, "result": result, "reason": reason})
    # Then the outcome follows the documented table
    assert public["outcome"]["outcome"] == outcome
    assert public["outcome"]["endedBy"] == ended_by
    assert public["outcome"]["answered"] is answered
    assert public["outcome"]["result"] == result
    assert public["outcome"]["reason"] == reason


def test_outcome_enums_are_the_documented_ones():
    assert {k.value for k in OutcomeKind} == {
        "completed",
        "busy",
        "no-answer",
        "failed",
        "cancelled",
        "in-progress",
        "unknown",
    }
    assert {e.value for e in EndedBy} == {"caller", "callee", "system", "n/a"}


# --- status ---------------------------------------------------------------------------------------


def test_missing_status_with_an_ending_reason_is_inferred_final():
    public = _enrich({"result": "ANSWERED", "reason": "CALLEEHANGUP", "duration": 5})
    assert (public["status"], public["isFinal"]) == ("FINAL", True)
    assert _codes(public) == {"status-inferred"}


def test_missing_status_without_an_ending_reason_is_not_final():
    public = _enrich({"result": "ANSWERED", "reason": "N/A"})
    assert (public["status"], public["isFinal"]) == ("UNKNOWN", False)
    assert public["provenance"]["isFinal"] is False
    assert "status-missing" in _codes(public)


def test_unknown_status_is_kept_not_final_and_warned():
    public = _enrich({"status": "ARCHIVED"})
    assert (public["status"], public["isFinal"]) == ("ARCHIVED", False)
    assert public["warnings"] == [
        {
            "code": "unknown-enum-value",
            "field": "status",
            "message": 'status: value "ARCHIVED" is not documented; kept as sent',
        }
    ]
    assert public["provenance"]["unknownEnumValues"] == [{"field": "status", "value": "ARCHIVED"}]


def test_long_unknown_values_are_truncated_in_warnings():
    public = _enrich({"status": "FINAL", "reason": "X" * 500})
    (warning,) = public["warnings"]
    assert (
        warning["message"] == 'reason: value "' + "X" * 40 + '"... is not documented; kept as sent'
    )
    assert public["outcome"]["reason"] == "X" * 500  # the data itself is kept whole


# --- parties --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "party",
    [
        {"type": "number", "endpoint": "private"},
        {"type": "Number", "endpoint": "Anonymous"},
        {"type": "number", "endpoint": ""},
        {"type": "number", "endpoint": "  UNKNOWN "},
        {"type": "number", "endpoint": "withheld"},
        {"type": "sip", "endpoint": "sip:anonymous@anonymous.invalid"},
        {"endpoint": "private"},
    ],
)
def test_withheld_callers(party):
    # Given a caller that withheld its number
    public = _enrich({"status": "FINAL", "from": party})
    caller = public["parties"]["from"]
    # Then it is withheld, with nothing analysed and nothing to warn about
    assert caller["kind"] == "withheld"
    assert caller["phone"] is None
    assert public["warnings"] == []


def test_absent_from_is_null():
    public = _enrich({"status": "FINAL", "to": {"type": "number", "endpoint": "+12125550123"}})
    assert public["parties"]["from"] is None
    assert public["parties"]["to"]["kind"] == "pstn"


@pytest.mark.parametrize(
    ("endpoint", "user", "host", "port"),
    [
        ("+19876543210@example.sip.sinch.com", "+19876543210", "example.sip.sinch.com", None),
        (
            "sip:+12125550123@Example.SIP.sinch.com:5061",
            "+12125550123",
            "example.sip.sinch.com",
            5061,
        ),
        ("sips:alice@sip.example.com;transport=tls", "alice", "sip.example.com", None),
        ("sip:bob:secret@[2001:db8::1]:5060", "bob", "[2001:db8::1]", 5060),
        ("sip:carol@pbx.example.com?subject=x", "carol", "pbx.example.com", None),
        ("sip:pbx.example.com", None, "pbx.example.com", None),
        ("+12125550123", "+12125550123", None, None),
    ],
)
def test_sip_addresses_are_split(endpoint, user, host, port):
    public = _enrich({"status": "FINAL", "to": {"type": "sip", "endpoint": endpoint}})
    callee = public["parties"]["to"]
    assert callee["kind"] == "sip"
    assert callee["sip"] == {"user": user, "host": host, "port": port}
    assert callee["endpoint"] == endpoint


def test_sip_user_that_is_a_number_is_analysed():
    public = _enrich(
        {"status": "FINAL", "to": {"type": "sip", "endpoint": "+12125550123@example.sip.sinch.com"}}
    )
    callee = public["parties"]["to"]
    assert callee["phone"]["e164"] == "+12125550123"
    assert callee["phone"]["country"] == "US"
    assert callee["masked"] == "+1********23@example.sip.sinch.com"


def test_sip_user_that_is_a_name_is_not_analysed():
    public = _enrich({"status": "FINAL", "from": {"type": "sip", "endpoint": "alice@pbx.test"}})
    assert public["parties"]["from"]["phone"] is None
    assert public["parties"]["from"]["masked"] == "a***e@pbx.test"


def test_in_app_usernames():
    public = _enrich({"status": "FINAL", "from": {"type": "Username", "endpoint": "myUserName"}})
    caller = public["parties"]["from"]
    assert caller == {
        "kind": "username",
        "type": "Username",
        "endpoint": "myUserName",
        "masked": "m********e",
        "phone": None,
        "sip": None,
    }


@pytest.mark.parametrize(
    ("party", "kind"),
    [
        ({"type": "fax", "endpoint": "+12125550123"}, "pstn"),
        ({"endpoint": "+12125550123"}, "pstn"),
        ({"type": "webrtc", "endpoint": "sip:alice@pbx.test"}, "sip"),
        ({"endpoint": "alice@pbx.test"}, "sip"),
    ],
)
def test_kind_is_inferred_from_the_endpoint_when_the_type_is_unknown(party, kind):
    public = _enrich({"status": "FINAL", "from": party})
    assert public["parties"]["from"]["kind"] == kind
    assert "party-kind-inferred" in _codes(public)


def test_plain_string_party_is_inferred():
    public = _enrich({"status": "FINAL", "from": "+46701740605"})
    caller = public["parties"]["from"]
    assert (caller["kind"], caller["type"], caller["phone"]["country"]) == ("pstn", None, "SE")


def test_unknown_type_with_an_unrecognisable_endpoint_stays_unknown():
    public = _enrich({"status": "FINAL", "from": {"type": "pigeon", "endpoint": "coop 7"}})
    assert public["parties"]["from"]["kind"] == "unknown"
    assert _codes(public) == {"unknown-enum-value"}


def test_missing_endpoint_is_warned():
    public = _enrich({"status": "FINAL", "to": {"type": "number"}})
    assert public["parties"]["to"]["kind"] == "pstn"
    assert public["parties"]["to"]["phone"] is None
    assert public["parties"]["to"]["masked"] == ""
    assert _codes(public) == {"endpoint-missing"}


def test_invalid_pstn_number_is_kept_and_warned():
    public = _enrich({"status": "FINAL", "to": {"type": "number", "endpoint": "+447700900123"}})
    callee = public["parties"]["to"]
    assert callee["phone"]["valid"] is False
    assert callee["phone"]["possible"] is True
    assert public["warnings"] == [
        {
            "code": "invalid-phone-number",
            "field": "to.endpoint",
            "message": "to.endpoint is not a valid phone number",
        }
    ]


def test_numbers_without_plus_get_their_e164():
    public = _enrich({"status": "FINAL", "from": {"type": "number", "endpoint": "46701740605"}})
    phone = public["parties"]["from"]["phone"]
    assert (phone["e164"], phone["parsedAs"]) == ("+46701740605", "e164-without-plus")


def test_default_phone_region_reads_national_numbers():
    body = {"status": "FINAL", "to": {"type": "number", "endpoint": "0701740605"}}
    assert _enrich(body)["parties"]["to"]["phone"]["valid"] is False
    phone = _enrich(body, default_phone_region="SE")["parties"]["to"]["phone"]
    assert (phone["e164"], phone["parsedAs"]) == ("+46701740605", "national")


# --- time -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "minutes"), [(0, 0), (1, 1), (59, 1), (60, 1), (61, 2), (3600, 60), (3601, 61)]
)
def test_billable_minutes_round_up(duration, minutes):
    public = _enrich({"status": "FINAL", "duration": duration, "timestamp": "2024-01-08T09:00:00"})
    assert public["time"]["billableMinutes"] == minutes
    assert public["time"]["durationSeconds"] == duration


def test_end_is_start_plus_duration_and_keeps_milliseconds():
    public = _enrich(
        {"status": "FINAL", "duration": 62, "timestamp": "2024-12-31T23:59:30.250+01:00"}
    )
    assert public["time"] == {
        "start": "2024-12-31T22:59:30.250Z",
        "end": "2024-12-31T23:00:32.250Z",
        "durationSeconds": 62,
        "billableMinutes": 2,
        "utcDay": "2024-12-31",
    }


def test_ongoing_call_has_no_end():
    public = _enrich({"status": "ONGOING", "duration": 42, "timestamp": "2026-11-26T11:59:00"})
    assert public["time"]["end"] is None
    assert public["time"]["durationSeconds"] == 42


def test_final_unanswered_call_without_duration_lasted_zero_seconds():
    public = _enrich({"status": "FINAL", "result": "NOANSWER", "timestamp": "2024-01-08T09:00:00"})
    assert public["time"]["durationSeconds"] == 0
    assert public["time"]["billableMinutes"] == 0
    assert public["time"]["end"] == "2024-01-08T09:00:00Z"
    assert public["warnings"] == []


def test_final_answered_call_without_duration_is_warned():
    public = _enrich({"status": "FINAL", "result": "ANSWERED", "timestamp": "2024-01-08T09:00:00"})
    assert public["time"]["durationSeconds"] is None
    assert public["time"]["billableMinutes"] is None
    assert public["time"]["end"] is None
    assert _codes(public) == {"duration-missing"}


def test_final_call_without_timestamp_is_warned():
    public = _enrich({"status": "FINAL", "duration": 5, "timestamp": None})
    assert public["time"]["start"] is None
    assert public["time"]["utcDay"] is None
    assert _codes(public) == {"timestamp-missing"}


def test_timestamp_in_the_future_is_warned():
    future = (NOW + timedelta(hours=1)).replace(tzinfo=None).isoformat()
    public = _enrich({"status": "FINAL", "duration": 5, "timestamp": future})
    assert _codes(public) == {"timestamp-in-future"}


def test_end_beyond_the_calendar_is_warned_not_raised():
    public = _enrich(
        {"status": "FINAL", "duration": 3600, "timestamp": "9999-12-31T23:30:00"},
    )
    assert public["time"]["end"] is None
    assert "end-out-of-range" in _codes(public)


# --- money ----------------------------------------------------------------------------------------


def test_money_is_exact_and_serialised_as_strings():
    # Given amounts that floats cannot represent
    public = _enrich(
        {
            "status": "FINAL",
            "userRate": {"currencyId": "USD", "amount": Decimal("0.1")},
            "debit": {"currencyId": "USD", "amount": Decimal("0.2")},
        }
    )
    # Then they come out as exact decimal strings, never floats
    assert public["money"] == {
        "debit": {"currency": "USD", "amount": "0.2"},
        "ratePerMinute": {"currency": "USD", "amount": "0.1"},
    }
    total = Decimal(public["money"]["debit"]["amount"]) + Decimal(
        public["money"]["ratePerMinute"]["amount"]
    )
    assert total == Decimal("0.3")


def test_money_from_json_text_is_exact_end_to_end():
    body = (
        b'{"callId": "a", "status": "FINAL",'
        b' "debit": {"currencyId": "EUR", "amount": 0.30000000000000000001}}'
    )
    enriched = enrich_json(body, enriched_at=NOW)
    assert enriched.money.debit is not None
    assert enriched.money.debit.amount == Decimal("0.30000000000000000001")
    assert enriched.model_dump(mode="json")["money"]["debit"]["amount"] == "0.30000000000000000001"


def test_exponent_amounts_are_written_in_fixed_point():
    public = _enrich({"status": "FINAL", "userRate": {"amount": Decimal("1E-7")}})
    assert public["money"]["ratePerMinute"]["amount"] == "0.0000001"


def test_integer_zero_and_null_currency():
    public = _enrich({"status": "FINAL", "debit": {"currencyId": None, "amount": 0}})
    assert public["money"]["debit"] == {"currency": None, "amount": "0"}


def test_absent_money_is_null():
    public = _enrich({"status": "FINAL"})
    assert public["money"] == {"debit": None, "ratePerMinute": None}


def test_negative_amount_is_kept_and_warned():
    public = _enrich({"status": "FINAL", "debit": {"currencyId": "USD", "amount": -0.5}})
    assert public["money"]["debit"]["amount"] == "-0.5"
    assert public["warnings"] == [
        {"code": "negative-amount", "field": "debit.amount", "message": "debit.amount is negative"}
    ]


def test_python_dump_keeps_decimals():
    enriched = enrich_json(
        b'{"callId": "a", "status": "FINAL", "debit": {"amount": 1.10}}', enriched_at=NOW
    )
    assert enriched.model_dump()["money"]["debit"]["amount"] == Decimal("1.10")


# --- custom ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("custom", "parsed"),
    [
        ("{}", {}),
        (
            ' {"orderId": "A-1", "n": 2, "f": 1.5, "x": null} ',
            {"orderId": "A-1", "n": 2, "f": 1.5, "x": None},
        ),
        ('{"nested": {"list": [1, {"a": true}]}}', {"nested": {"list": [1, {"a": True}]}}),
        ("plain text", None),
        ("[1, 2]", None),
        ('"{}"', None),
        ("{not json", None),
        ('{"a": NaN}', None),
        ('{"a": 1e999}', None),
        ("{" * 20 + "}" * 20, None),
        ('{"a":' * 17 + "1" + "}" * 17, None),
        ('{"pad": "' + "x" * 70_000 + '"}', None),
        ('{"lone": "\\ud800"}', None),
        ('{"pair": "\\ud83d\\ude00"}', {"pair": "\U0001f600"}),
        ("", None),
        (None, None),
    ],
)
def test_custom_is_parsed_only_when_it_is_a_json_object(custom, parsed):
    public = _enrich({"status": "FINAL", "custom": custom})
    assert public["custom"] == {"raw": custom, "parsed": parsed}


# --- provenance and call ID -----------------------------------------------------------------------


def test_provenance():
    public = _enrich(
        {"status": "FINAL", "debitMinutes": 1, "debit": {"amount": 0, "formatted": "0"}},
        base_url="https://calling-euc1.api.sinch.com",
        region="euc1",
    )
    provenance = public["provenance"]
    assert provenance["enrichmentSchemaVersion"] == ENRICHMENT_SCHEMA_VERSION
    assert provenance["recordModelVersion"] == RECORD_MODEL_VERSION
    assert provenance["enrichedAt"] == "2026-11-26T12:00:00Z"
    assert provenance["sinchBaseUrl"] == "https://calling-euc1.api.sinch.com"
    assert provenance["sinchRegion"] == "euc1"
    assert provenance["isFinal"] is True
    assert provenance["extraKeys"] == ["debit.formatted", "debitMinutes"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", provenance["fingerprint"])


def test_naive_enriched_at_is_utc_and_default_is_now():
    record = parse_call_record({"callId": "a", "status": "FINAL"})
    naive = enrich(record, enriched_at=datetime(2026, 1, 1, 8, 0))
    assert naive.provenance.enriched_at == datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    before = datetime.now(UTC)
    fresh = enrich(record)
    assert before <= fresh.provenance.enriched_at <= datetime.now(UTC)


def test_call_id_given_names_the_result_and_fills_a_missing_one():
    record = parse_call_record({"status": "FINAL"})
    assert enrich(record, call_id="asked-for", enriched_at=NOW).call_id == "asked-for"


def test_call_id_must_match_the_one_asked_for_case_insensitively():
    record = parse_call_record({"callId": "ABC123", "status": "FINAL"})
    assert enrich(record, call_id="abc123", enriched_at=NOW).call_id == "abc123"
    with pytest.raises(InvalidRecordError) as caught:
        enrich(record, call_id="other", enriched_at=NOW)
    assert caught.value.details == [
        {"field": "callId", "problem": "does not match the call ID asked for"}
    ]


def test_call_id_missing_everywhere_is_invalid():
    with pytest.raises(InvalidRecordError) as caught:
        enrich(parse_call_record({"status": "FINAL"}), enriched_at=NOW)
    assert caught.value.details == [
        {"field": "callId", "problem": "is missing (and no call ID was given)"}
    ]


def test_attributes_other_modules_rely_on():
    # Given an enriched call
    enriched = enrich_json(
        (SAMPLES[0].parent / "ongoing-in-app-to-pstn.json").read_bytes(), enriched_at=NOW
    )
    # Then storage/publishing find what they need under the agreed names
    assert enriched.call_id == "7d8e9f0a1b2c3d4e5f60718293a4b5c6"
    assert enriched.status == "ONGOING"
    assert enriched.is_final is False
    assert enriched.provenance.fingerprint.startswith("sha256:")
    assert enriched.parties.from_ is not None
    assert enriched.parties.from_.kind is PartyKind.USERNAME
    public = enriched.model_dump(mode="json", by_alias=True)
    assert set(public) == {
        "schemaVersion",
        "callId",
        "status",
        "isFinal",
        "parties",
        "outcome",
        "time",
        "money",
        "custom",
        "provenance",
        "warnings",
        "risk",
    }
    assert public["outcome"]["outcome"] == "in-progress"


def test_enriched_calls_are_frozen_and_round_trip():
    enriched = enrich_json(
        (SAMPLES[0].parent / "answered-us-to-gb.json").read_bytes(), enriched_at=NOW
    )
    with pytest.raises(ValidationError):
        enriched.status = "ONGOING"  # type: ignore[misc]
    # The public JSON validates back into an equal model (consumers can use the class)
    assert EnrichedCall.model_validate(enriched.model_dump(mode="json")) == enriched


def test_enrichment_is_deterministic():
    body = (SAMPLES[0].parent / "answered-us-to-gb.json").read_bytes()
    assert enrich_json(body, enriched_at=NOW) == enrich_json(body, enriched_at=NOW)


def test_enrich_json_rejects_invalid_bodies():
    with pytest.raises(InvalidRecordError):
        enrich_json(b"<html>502 Bad Gateway</html>")


# --- fingerprint ----------------------------------------------------------------------------------


def test_fingerprint_ignores_key_order_and_whitespace():
    compact = b'{"callId":"a","debit":{"amount":0.1,"currencyId":"USD"},"status":"FINAL"}'
    spaced = (
        b'{\n  "status" : "FINAL",\n  "debit": {"currencyId": "USD", "amount": 0.1},'
        b'\n  "callId": "a"\n}'
    )
    assert fingerprint(loads_exact(compact)) == fingerprint(loads_exact(spaced))


def test_fingerprint_agrees_across_number_decodings():
    # Given the same body decoded with exact decimals and with floats
    text = '{"debit": {"amount": 0.1}, "duration": 2.0, "x": [1.50, 1e2]}'
    # Then the fingerprints agree
    assert fingerprint(loads_exact(text)) == fingerprint(json.loads(text))


def test_fingerprint_changes_with_any_value():
    base = {"callId": "a", "debit": {"amount": Decimal("0.10")}, "custom": "{}"}
    assert fingerprint(base) != fingerprint({**base, "custom": "{ }"})
    assert fingerprint(base) != fingerprint({**base, "debit": {"amount": Decimal("0.11")}})
    assert fingerprint(base) != fingerprint({**base, "debit": {"amount": "0.10"}})
    assert fingerprint({"a": None}) != fingerprint({"a": False})
    assert fingerprint({"a": 1}) != fingerprint({"a": True})


def test_fingerprint_is_sha256_of_canonical_json():
    import hashlib

    expected = hashlib.sha256('{"a":[1,"é",null],"b":0.5}'.encode()).hexdigest()
    assert fingerprint({"b": Decimal("0.50"), "a": [1, "é", None]}) == f"sha256:{expected}"


def test_fingerprint_without_raw_uses_the_records_known_fields():
    # Given a record enriched without its raw body
    body = {"callId": "a", "status": "FINAL", "debit": {"amount": Decimal("1")}, "junk": 1}
    record = parse_call_record(body)
    enriched = enrich(record, enriched_at=NOW)
    # Then the fingerprint is stable and follows the known values only
    assert enriched.provenance.fingerprint == enrich(record, enriched_at=NOW).provenance.fingerprint
    other = parse_call_record({**body, "debit": {"amount": Decimal("2")}})
    assert enrich(other, enriched_at=NOW).provenance.fingerprint != enriched.provenance.fingerprint
    same_known = parse_call_record({**body, "junk": 2})
    assert (
        enrich(same_known, enriched_at=NOW).provenance.fingerprint
        == enriched.provenance.fingerprint
    )


def test_unknown_values_that_look_like_numbers_are_masked_in_warnings():
    # Given a number where Sinch documents an enum (a malformed record)
    public = _enrich({"status": "FINAL", "result": "+46701740605"})
    # Then the data keeps it, but the warning shows it masked
    assert public["outcome"]["result"] == "+46701740605"
    (warning,) = public["warnings"]
    assert warning["message"] == 'result: value "+46*******05" is not documented; kept as sent'
