"""Property tests: parsing never fails unexpectedly, enrichment never fails on a parsed record,
money stays exact, fingerprints are canonical, masks never reveal a number."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from call_enricher.enrichment import enrich, fingerprint
from call_enricher.errors import InvalidRecordError
from call_enricher.model import loads_exact, parse_call_record
from call_enricher.phones import analyse_number, mask_number

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# --- strategies -----------------------------------------------------------------------------------

# Lone surrogates: valid Python strings (JSON can escape them) that UTF-8 cannot encode.
surrogate_text = st.text(
    st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, categories=None), max_size=4
)
keys = st.text(max_size=10) | surrogate_text
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    surrogate_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
custom_json = st.recursive(  # what json.dumps can write (NaN/Infinity, lone surrogates too)
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), surrogate_text
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
endpoints = st.one_of(
    st.sampled_from(
        [
            "+12125550123",
            "+46701740605",
            "46701740605",
            "private",
            "",
            "+19876543210@example.sip.sinch.com",
            "sip:alice@pbx.test:5060",
            "myUserName",
        ]
    ),
    st.from_regex(r"\+?[0-9 ()-]{0,20}", fullmatch=True),
    st.text(max_size=40),
)
parties = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(
                st.sampled_from(["number", "Number", "username", "Username", "sip", "did", "x"]),
                json_scalars,
            ),
            "endpoint": st.one_of(endpoints, json_scalars),
            "formatted": json_values,
        },
    ),
    endpoints,
    json_values,
)
money = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "currencyId": st.one_of(st.sampled_from(["USD", "EUR", None]), json_scalars),
            "amount": st.one_of(
                st.decimals(allow_nan=False, allow_infinity=False, places=6),
                st.integers(min_value=-5, max_value=10**6),
                json_scalars,
            ),
            "formatted": json_values,
        },
    ),
    json_values,
)
timestamps = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["2024-01-08T09:48:12", "2024-01-08T09:48:12.123", "2024-01-08T09:48:12Z"]),
    json_scalars,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "callId": st.one_of(st.text(max_size=40), json_scalars),
        "callid": st.one_of(st.text(max_size=40), json_scalars),
        "from": parties,
        "to": parties,
        "domain": st.one_of(st.sampled_from(["pstn", "mxp", "PSTN"]), json_scalars),
        "duration": st.one_of(st.integers(min_value=-10, max_value=5_000_000), json_scalars),
        "status": st.one_of(st.sampled_from(["FINAL", "ONGOING", "final"]), json_scalars),
        "result": st.one_of(
            st.sampled_from(["N/A", "ANSWERED", "BUSY", "NOANSWER", "FAILED"]), json_scalars
        ),
        "reason": st.one_of(
            st.sampled_from(["N/A", "TIMEOUT", "CALLERHANGUP", "CANCEL", "BLOCKED"]), json_scalars
        ),
        "timestamp": timestamps,
        "custom": st.one_of(
            st.text(max_size=40), custom_json.map(json.dumps), st.just("{}"), json_scalars
        ),
        "userRate": money,
        "debit": money,
        "debitMinutes": json_values,
    },
)

# Values of the right JSON types (mostly valid): nearly every draw parses, so enrichment runs.
plausible_parties = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["number", "Number", "username", "Username", "sip", "did", "x"]),
        "endpoint": endpoints,
    },
)
plausible_money = st.fixed_dictionaries(
    {},
    optional={
        "currencyId": st.sampled_from(["USD", "EUR", "SEK", None]),
        "amount": st.one_of(
            st.decimals(min_value=-1, max_value=10**6, places=8), st.integers(0, 10**6)
        ),
    },
)
plausible_records = st.fixed_dictionaries(
    {},
    optional={
        "callId": st.text(max_size=40),
        "from": st.one_of(plausible_parties, endpoints),
        "to": plausible_parties,
        "domain": st.sampled_from(["pstn", "mxp", "PSTN", "webrtc"]),
        "duration": st.integers(min_value=0, max_value=31 * 86_400),
        "status": st.sampled_from(["FINAL", "ONGOING", "final", "PAUSED"]),
        "result": st.sampled_from(["N/A", "ANSWERED", "BUSY", "NOANSWER", "FAILED", "ODD"]),
        "reason": st.sampled_from(
            ["N/A", "TIMEOUT", "CALLERHANGUP", "CALLEEHANGUP", "CANCEL", "BLOCKED", "ODD"]
        ),
        "timestamp": st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)
        ).map(lambda d: d.isoformat()),
        "custom": st.one_of(st.text(max_size=40), custom_json.map(json.dumps)),
        "userRate": plausible_money,
        "debit": plausible_money,
    },
)


def _enrich_parsed(record_body: Any) -> None:
    """Parse; when it parses, enrich and serialise strictly. Only InvalidRecordError may escape."""
    try:
        record = parse_call_record(record_body)
    except InvalidRecordError as exc:
        details = exc.details
    else:
        details = None
    if details is not None:
        assert details
        assert all({"field", "problem"} == set(item) for item in details)
        return
    call_id = None if record.call_id else "asked-for"
    raw = record_body if isinstance(record_body, dict) else None
    enriched = enrich(record, raw=raw, call_id=call_id, enriched_at=NOW)
    public = enriched.model_dump(mode="json", by_alias=True)
    json.dumps(public, allow_nan=False)  # strict JSON: no NaN, no Decimal, no datetime
    enriched.model_dump_json().encode("utf-8")  # valid Unicode throughout


# --- never fails unexpectedly ---------------------------------------------------------------------


@SETTINGS
@given(records)
def test_schema_shaped_dicts_parse_or_fail_cleanly_and_always_enrich(body):
    _enrich_parsed(body)


@SETTINGS
@given(plausible_records)
def test_plausible_records_always_parse_and_enrich(body):
    # Given a record with values of the right JSON types
    record = parse_call_record(body)
    # Then it parses, and enriches into strict JSON
    enriched = enrich(record, raw=body, call_id=record.call_id or "asked-for", enriched_at=NOW)
    public = enriched.model_dump(mode="json", by_alias=True)
    json.dumps(public, allow_nan=False)
    assert public["isFinal"] is (public["status"] == "FINAL")
    assert public["provenance"]["fingerprint"] == fingerprint(body)


@SETTINGS
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_arbitrary_json_objects_parse_or_fail_cleanly(body):
    _enrich_parsed(body)


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_raise_invalid_record(data):
    _enrich_parsed(data)


@SETTINGS
@given(records)
def test_json_text_of_records_parses_or_fails_cleanly(body):
    # Given a record serialised as JSON text (decimals written as strings)
    text = json.dumps(body, default=str)
    # Then parsing the text never fails unexpectedly either
    _enrich_parsed(text)


@SETTINGS
@given(st.text(max_size=80))
def test_phone_analysis_never_raises(text):
    info = analyse_number(text)
    assert info.valid in (True, False)
    assert analyse_number(text, default_region="SE").possible in (True, False)


# --- money stays exact ----------------------------------------------------------------------------


@SETTINGS
@given(
    st.decimals(
        min_value=Decimal("-999999999"),
        max_value=Decimal("999999999"),
        places=12,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_amounts_written_in_json_come_out_exactly(amount):
    # Given an amount written as a JSON number in a body
    text = format(amount, "f")
    body = (
        '{"callId": "a", "status": "FINAL", "debit": {"currencyId": "USD", "amount": ' + text + "}}"
    )
    # When it is parsed and enriched
    record = parse_call_record(body)
    enriched = enrich(record, enriched_at=NOW)
    # Then the amount is the exact decimal written, and the public JSON has it as a string
    assert record.debit is not None
    assert record.debit.amount == amount
    public_amount = enriched.model_dump(mode="json")["money"]["debit"]["amount"]
    assert isinstance(public_amount, str)
    assert Decimal(public_amount) == amount
    assert "e" not in public_amount.lower()


@SETTINGS
@given(st.lists(st.decimals(places=4, min_value=0, max_value=100), min_size=2, max_size=5))
def test_sums_of_parsed_amounts_are_exact(amounts):
    parsed = [
        parse_call_record('{"debit": {"amount": ' + format(a, "f") + "}}").debit for a in amounts
    ]
    assert sum(p.amount for p in parsed if p is not None and p.amount is not None) == sum(amounts)


# --- fingerprint ----------------------------------------------------------------------------------


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


finite_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@SETTINGS
@given(st.dictionaries(st.text(max_size=8), finite_json, max_size=6), st.randoms())
def test_fingerprint_is_stable_under_key_order_and_whitespace(body, rng):
    # Given the same JSON object written compactly, indented, and with keys reordered
    compact = json.dumps(body, separators=(",", ":"))
    indented = json.dumps(_shuffled(body, rng), indent=3)
    # Then all decodings (exact or float) give the same fingerprint
    prints = {
        fingerprint(loads_exact(compact)),
        fingerprint(loads_exact(indented)),
        fingerprint(json.loads(indented)),
        fingerprint(body),
    }
    assert len(prints) == 1
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", prints.pop())


@SETTINGS
@given(st.dictionaries(st.text(max_size=8), finite_json, min_size=1, max_size=6), st.data())
def test_fingerprint_changes_when_a_value_changes(body, data):
    key = data.draw(st.sampled_from(sorted(body)))
    changed = {**body, key: [body[key]]}  # wrapping a value always changes the document
    assert fingerprint(changed) != fingerprint(body)


# --- masking --------------------------------------------------------------------------------------


@SETTINGS
@given(st.from_regex(r"\+?[0-9]{3,15}", fullmatch=True))
def test_masked_number_never_contains_the_full_number(number):
    masked = mask_number(number)
    digits = re.sub(r"\D", "", number)
    assert digits not in masked
    assert len(re.sub(r"\D", "", masked)) < len(digits)


@SETTINGS
@given(st.from_regex(r"\+?[0-9]{5,15}", fullmatch=True), st.sampled_from(["", "sip:", "sips:"]))
def test_masked_sip_address_never_contains_the_full_number(number, scheme):
    masked = mask_number(f"{scheme}{number}@example.sip.sinch.com")
    assert re.sub(r"\D", "", number) not in masked
    assert masked.endswith("@example.sip.sinch.com")


@SETTINGS
@given(st.text(min_size=4, max_size=40))
def test_masking_any_text_never_returns_it_unchanged_unless_withheld(text):
    masked = mask_number(text)
    withheld = text.strip().lower() in {
        "",
        "private",
        "anonymous",
        "unknown",
        "withheld",
        "restricted",
        "unavailable",
    }
    if not withheld and "@" not in text and re.search(r"\w", text):
        assert masked != text.strip() or set(text.strip()) <= {"*"}
