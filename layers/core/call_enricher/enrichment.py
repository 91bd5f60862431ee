"""Enrichment: a validated :class:`~call_enricher.model.CallRecord` -> :class:`EnrichedCall`.

Pure: no I/O, no clock unless ``enriched_at`` is omitted, no logging. The public JSON form is
``enriched.model_dump(mode="json", by_alias=True)`` (camelCase keys, exact decimals as strings,
UTC timestamps with ``Z``). ``ENRICHMENT_SCHEMA_VERSION`` follows semver: a new optional field is
a minor bump, a removed/renamed field or a changed meaning a major one.

Parties (``parties.from`` / ``parties.to``; ``null`` when Sinch sent none)
    ``kind`` is decided in this order:

    1. ``withheld`` when the endpoint (or the user part of a SIP address) is one of
       ``private``, ``anonymous``, ``unknown``, ``withheld``, ``restricted``, ``unavailable``
       or empty (case-insensitive);
    2. from the type: ``number``/``did`` -> ``pstn``, ``username`` -> ``username``,
       ``sip`` -> ``sip``;
    3. for a missing or unknown type, inferred from the endpoint (``user@host`` or ``sip:`` ->
       ``sip``; digits -> ``pstn``; else ``unknown``), with a ``party-kind-inferred`` warning.

    ``pstn`` parties get ``phone`` (E.164, country, calling code, number type, validity,
    geography, carrier, time zones: see :mod:`call_enricher.phones`); ``sip`` parties get
    ``sip`` (user, host, port) and ``phone`` when the user part is a number. Every party has
    ``masked``, a form safe for logs.

Outcome (``answered`` is true iff ``result`` is ANSWERED)
    ==================================  =============  ================================
    status / result                     outcome        note
    ==================================  =============  ================================
    status ONGOING (any result)         in-progress    endedBy ``n/a``
    ANSWERED                            completed
    BUSY                                busy           endedBy ``callee`` if reason N/A
    NOANSWER + CANCEL or CALLERHANGUP   cancelled      the caller gave up while ringing
    NOANSWER (other reasons)            no-answer
    FAILED                              failed
    N/A, missing or unknown result      cancelled if reason CANCEL; failed if reason BLOCKED,
                                        NOCREDITPARTNER, GENERALERROR or INVALIDSVAMLACTION;
                                        else unknown
    ==================================  =============  ================================

    ``endedBy`` from ``reason``: CALLERHANGUP, CANCEL -> ``caller``; CALLEEHANGUP ->
    ``callee``; MANAGERHANGUP (the application/Sinch ended it), TIMEOUT, BLOCKED,
    NOCREDITPARTNER, GENERALERROR, INVALIDSVAMLACTION -> ``system``; N/A, missing, unknown ->
    ``n/a``.

Status
    ``status`` is Sinch's value (FINAL, ONGOING, or an unknown value kept as sent). When it is
    missing but ``reason`` says why the call ended (any known reason but N/A), the call is
    taken as FINAL (warning ``status-inferred``); otherwise it is ``UNKNOWN`` (warning
    ``status-missing``). ``isFinal`` is true only for FINAL.

Time
    ``start`` is Sinch's timestamp (the call's start, UTC); ``end`` = start + duration, for final
    calls only; ``durationSeconds`` is Sinch's duration, or 0 for a final unanswered call that
    has none; ``billableMinutes`` = ceil(duration / 60), so a 0-second call bills 0 minutes;
    ``utcDay`` is the start's UTC date (``YYYY-MM-DD``).

Money
    ``debit`` (total charged) and ``ratePerMinute`` (Sinch's ``userRate``), each
    ``{currency, amount}`` with the amount an exact decimal serialised as a JSON string
    (``"0.0123"``), never a float. A ``null`` currency stays ``null``.

Custom
    ``raw`` is Sinch's string; ``parsed`` the object when the string is a JSON object (at most
    64 KiB, nested at most 16 levels, no NaN/Infinity, valid Unicode), else ``null``.

Provenance
    schema and record-model versions, ``enrichedAt``, the Sinch base URL and region asked,
    ``fingerprint`` (see :func:`fingerprint`), ``isFinal``, ``extraKeys`` (unknown keys Sinch
    sent) and ``unknownEnumValues``.

Risk
    ``{level, signals, policyDigest}`` from :func:`call_enricher.risk.assess` under the
    policy given to :func:`enrich` (the library's default one when none is): premium-rate,
    shared-cost, satellite/international-network and high-risk-country destinations, rates
    above a cap, short costly calls, billed invalid numbers, cross-border and withheld
    callers. ``null`` only in records enriched before schema 1.1.0 (never assessed).

Warnings
    ``[{code, field, message}]``; messages never contain a phone number or user name.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from call_enricher import phones
from call_enricher.errors import InvalidRecordError
from call_enricher.model import (
    RECORD_MODEL_VERSION,
    CallReason,
    CallRecord,
    CallResult,
    CallStatus,
    Money,
    Party,
    PartyType,
    decode_and_parse,
    exceeds_depth,
    find_invalid_unicode,
    format_decimal,
    format_utc,
)
from call_enricher.risk import DEFAULT_POLICY, Risk, RiskPolicy, assess

__all__ = [
    "ENRICHMENT_SCHEMA_VERSION",
    "Amount",
    "CallTime",
    "CustomData",
    "EndedBy",
    "EnrichedCall",
    "EnrichmentWarning",
    "MoneyInfo",
    "OutcomeInfo",
    "OutcomeKind",
    "Parties",
    "PartyInfo",
    "PartyKind",
    "PhoneDetails",
    "Provenance",
    "SipAddress",
    "UnknownEnum",
    "enrich",
    "enrich_json",
    "fingerprint",
]

ENRICHMENT_SCHEMA_VERSION: Final = "1.1.0"
"""1.1.0: ``risk`` (see :mod:`call_enricher.risk`)."""

_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring  # C, non-ASCII kept
_MAX_CUSTOM_JSON_CHARS: Final = 64 * 1024
_FUTURE_TOLERANCE: Final = timedelta(minutes=5)
_MAX_WARNING_VALUE_CHARS: Final = 40
_DIGIT_RUN: Final = re.compile(r"\d{5,}")


class PartyKind(StrEnum):
    PSTN = "pstn"
    SIP = "sip"
    USERNAME = "username"
    WITHHELD = "withheld"
    UNKNOWN = "unknown"


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELLED = "cancelled"
    IN_PROGRESS = "in-progress"
    UNKNOWN = "unknown"


class EndedBy(StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    SYSTEM = "system"
    NOT_APPLICABLE = "n/a"


UtcDateTime = Annotated[datetime, PlainSerializer(format_utc, return_type=str, when_used="json")]
ExactDecimal = Annotated[
    Decimal, PlainSerializer(format_decimal, return_type=str, when_used="json")
]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


class PhoneDetails(_Model):
    """libphonenumber's view of a number (see :class:`call_enricher.phones.PhoneInfo`)."""

    e164: str | None
    country: str | None = Field(description="ISO 3166-1 alpha-2 region of a valid number")
    calling_code: int | None
    number_type: str
    valid: bool
    possible: bool
    geo_description: str | None = Field(description="English, e.g. 'New York, NY'")
    carrier: str | None = Field(description="carrier the range was allocated to")
    time_zones: tuple[str, ...]
    international: str | None = Field(description="international format, e.g. '+46 70 ...'")
    parsed_as: str


class SipAddress(_Model):
    user: str | None
    host: str | None
    port: int | None


class PartyInfo(_Model):
    kind: PartyKind
    type: str | None = Field(description="type as Sinch sent it, e.g. 'Number'")
    endpoint: str | None = Field(description="endpoint as Sinch sent it")
    masked: str = Field(description="endpoint safe for logs")
    phone: PhoneDetails | None = None
    sip: SipAddress | None = None


class Parties(_Model):
    from_: PartyInfo | None = Field(alias="from")
    to: PartyInfo | None


class OutcomeInfo(_Model):
    answered: bool
    outcome: OutcomeKind
    ended_by: EndedBy
    result: str | None = Field(description="Sinch's result, as sent")
    reason: str | None = Field(description="Sinch's reason, as sent")


class CallTime(_Model):
    start: UtcDateTime | None
    end: UtcDateTime | None
    duration_seconds: int | None
    billable_minutes: int | None
    utc_day: str | None


class Amount(_Model):
    currency: str | None
    amount: ExactDecimal | None


class MoneyInfo(_Model):
    debit: Amount | None
    rate_per_minute: Amount | None


class CustomData(_Model):
    raw: str | None
    parsed: dict[str, Any] | None


class UnknownEnum(_Model):
    field: str
    value: str


class Provenance(_Model):
    enrichment_schema_version: str
    record_model_version: str
    enriched_at: UtcDateTime
    sinch_base_url: str | None
    sinch_region: str | None
    fingerprint: str
    is_final: bool
    extra_keys: tuple[str, ...]
    unknown_enum_values: tuple[UnknownEnum, ...]


class EnrichmentWarning(_Model):
    code: str
    field: str | None
    message: str


class EnrichedCall(_Model):
    """The enriched call record. Public JSON: ``model_dump(mode="json", by_alias=True)``."""

    schema_version: str = ENRICHMENT_SCHEMA_VERSION
    call_id: str
    status: str = Field(description="FINAL, ONGOING, UNKNOWN or an unknown value as sent")
    is_final: bool
    parties: Parties
    outcome: OutcomeInfo
    time: CallTime
    money: MoneyInfo
    custom: CustomData
    provenance: Provenance
    warnings: tuple[EnrichmentWarning, ...] = ()
    risk: Risk | None = Field(
        default=None,
        description="Fraud and cost risk (level and signals); null only in records enriched"
        " before schema 1.1.0",
    )


# --- enrichment ---------------------------------------------------------------------------------


def enrich(
    record: CallRecord,
    *,
    raw: Mapping[str, Any] | None = None,
    call_id: str | None = None,
    base_url: str | None = None,
    region: str | None = None,
    enriched_at: datetime | None = None,
    default_phone_region: str | None = None,
    risk_policy: RiskPolicy | None = None,
) -> EnrichedCall:
    """Enrich a validated record. Pure; never raises for a record ``parse_call_record`` made,
    except :class:`InvalidRecordError` when the call ID is missing or disagrees.

    ``raw``: the decoded body the record came from (its fingerprint is the record's; without
    it the fingerprint is computed from the record's known fields). ``call_id``: the ID that
    was asked for; it names the result, is used when the record has none, and must match the
    record's (case-insensitively). ``base_url``/``region``: the Sinch host asked (provenance).
    ``enriched_at``: the clock (default now; naive means UTC). ``default_phone_region``: ISO
    alpha-2 region for national-format numbers without ``+``. ``risk_policy``: the policy
    ``risk`` is assessed under (default :data:`call_enricher.risk.DEFAULT_POLICY`).
    """
    warnings: list[EnrichmentWarning] = []
    final_id = _call_id(record.call_id, call_id)
    now = _utc(enriched_at) if enriched_at is not None else datetime.now(UTC)

    status, is_final = _status(record, warnings)
    outcome = _outcome(record, status)
    warnings.extend(
        _warning(
            "unknown-enum-value",
            item.field,
            f"{item.field}: value {_show(item.value)} is not documented; kept as sent",
        )
        for item in record.unknown_enum_values
    )
    parties = Parties(
        from_=_party(record.from_, "from", default_phone_region, warnings),
        to=_party(record.to, "to", default_phone_region, warnings),
    )
    time = _time(record, is_final=is_final, answered=outcome.answered, now=now, warnings=warnings)
    money = MoneyInfo(
        debit=_amount(record.debit, "debit", warnings),
        rate_per_minute=_amount(record.user_rate, "userRate", warnings),
    )
    provenance = Provenance(
        enrichment_schema_version=ENRICHMENT_SCHEMA_VERSION,
        record_model_version=RECORD_MODEL_VERSION,
        enriched_at=now,
        sinch_base_url=base_url,
        sinch_region=region,
        fingerprint=fingerprint(raw if raw is not None else _sinch_form(record)),
        is_final=is_final,
        extra_keys=record.extra_keys,
        unknown_enum_values=tuple(
            UnknownEnum(field=item.field, value=item.value) for item in record.unknown_enum_values
        ),
    )
    call = EnrichedCall(
        call_id=final_id,
        status=status,
        is_final=is_final,
        parties=parties,
        outcome=outcome,
        time=time,
        money=money,
        custom=CustomData(raw=record.custom, parsed=_custom_object(record.custom)),
        provenance=provenance,
        warnings=tuple(warnings),
    )
    risk = assess(call, risk_policy if risk_policy is not None else DEFAULT_POLICY)
    return call.model_copy(update={"risk": risk})


def enrich_json(
    body: bytes | bytearray | str | Mapping[str, Any],
    *,
    call_id: str | None = None,
    base_url: str | None = None,
    region: str | None = None,
    enriched_at: datetime | None = None,
    default_phone_region: str | None = None,
    risk_policy: RiskPolicy | None = None,
) -> EnrichedCall:
    """Decode, validate and enrich a Get Call body in one step (see :func:`enrich`).

    Raises :class:`InvalidRecordError` when the body is not a valid record.
    """
    raw, record = decode_and_parse(body)
    return enrich(
        record,
        raw=raw,
        call_id=call_id,
        base_url=base_url,
        region=region,
        enriched_at=enriched_at,
        default_phone_region=default_phone_region,
        risk_policy=risk_policy,
    )


def _call_id(from_record: str | None, asked: str | None) -> str:
    if asked is not None and asked.strip():
        if from_record is not None and from_record.strip().lower() != asked.strip().lower():
            problem = {"field": "callId", "problem": "does not match the call ID asked for"}
            raise InvalidRecordError(
                "invalid Get Call record: callId: does not match the call ID asked for",
                details=[problem],
            )
        return asked.strip()
    if from_record is None:
        problem = {"field": "callId", "problem": "is missing (and no call ID was given)"}
        raise InvalidRecordError(
            "invalid Get Call record: callId: is missing (and no call ID was given)",
            details=[problem],
        )
    return from_record


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _warning(code: str, field: str | None, message: str) -> EnrichmentWarning:
    return EnrichmentWarning(code=code, field=field, message=message)


def _show(value: str) -> str:
    """A value for a warning message: truncated, and masked if it could be a number."""
    shown = value if len(value) <= _MAX_WARNING_VALUE_CHARS else value[:_MAX_WARNING_VALUE_CHARS]
    if _DIGIT_RUN.search(shown):
        shown = phones.mask_number(shown)
    return json.dumps(shown, ensure_ascii=True) + ("..." if len(value) > len(shown) else "")


# --- status and outcome -------------------------------------------------------------------------

_ENDED_BY: Final[Mapping[CallReason, EndedBy]] = {
    CallReason.CALLERHANGUP: EndedBy.CALLER,
    CallReason.CANCEL: EndedBy.CALLER,
    CallReason.CALLEEHANGUP: EndedBy.CALLEE,
    CallReason.MANAGERHANGUP: EndedBy.SYSTEM,
    CallReason.TIMEOUT: EndedBy.SYSTEM,
    CallReason.BLOCKED: EndedBy.SYSTEM,
    CallReason.NOCREDITPARTNER: EndedBy.SYSTEM,
    CallReason.GENERALERROR: EndedBy.SYSTEM,
    CallReason.INVALIDSVAMLACTION: EndedBy.SYSTEM,
}
_FAILURE_REASONS: Final = frozenset(
    {
        CallReason.BLOCKED,
        CallReason.NOCREDITPARTNER,
        CallReason.GENERALERROR,
        CallReason.INVALIDSVAMLACTION,
    }
)
_GAVE_UP_REASONS: Final = frozenset({CallReason.CANCEL, CallReason.CALLERHANGUP})


def _status(record: CallRecord, warnings: list[EnrichmentWarning]) -> tuple[str, bool]:
    if record.status is not None:
        return str(record.status), record.status is CallStatus.FINAL
    if isinstance(record.reason, CallReason) and record.reason is not CallReason.NA:
        warnings.append(
            _warning("status-inferred", "status", "status missing; FINAL inferred from reason")
        )
        return CallStatus.FINAL.value, True
    warnings.append(_warning("status-missing", "status", "status missing; treated as not final"))
    return "UNKNOWN", False


def _outcome(record: CallRecord, status: str) -> OutcomeInfo:
    result, reason = record.result, record.reason
    answered = result is CallResult.ANSWERED
    known_reason = reason if isinstance(reason, CallReason) else None
    ended_by = EndedBy.NOT_APPLICABLE
    if known_reason is not None:
        ended_by = _ENDED_BY.get(known_reason, EndedBy.NOT_APPLICABLE)
    if status == CallStatus.ONGOING:
        kind, ended_by = OutcomeKind.IN_PROGRESS, EndedBy.NOT_APPLICABLE
    elif result is CallResult.ANSWERED:
        kind = OutcomeKind.COMPLETED
    elif result is CallResult.BUSY:
        kind = OutcomeKind.BUSY
        if ended_by is EndedBy.NOT_APPLICABLE:
            ended_by = EndedBy.CALLEE
    elif result is CallResult.NOANSWER:
        kind = OutcomeKind.CANCELLED if known_reason in _GAVE_UP_REASONS else OutcomeKind.NO_ANSWER
    elif result is CallResult.FAILED:
        kind = OutcomeKind.FAILED
    elif known_reason is CallReason.CANCEL:
        kind = OutcomeKind.CANCELLED
    elif known_reason in _FAILURE_REASONS:
        kind = OutcomeKind.FAILED
    else:
        kind = OutcomeKind.UNKNOWN
    return OutcomeInfo(
        answered=answered,
        outcome=kind,
        ended_by=ended_by,
        result=None if result is None else str(result),
        reason=None if reason is None else str(reason),
    )


# --- parties ------------------------------------------------------------------------------------


def _party(
    party: Party | None, role: str, region: str | None, warnings: list[EnrichmentWarning]
) -> PartyInfo | None:
    if party is None:
        return None
    endpoint = party.endpoint
    field = f"{role}.endpoint"
    kind = _kind(party, warnings, role)
    phone: PhoneDetails | None = None
    sip: SipAddress | None = None
    if kind is PartyKind.SIP and endpoint is not None:
        sip = _sip_address(endpoint)
        if sip.user is not None and phones.is_withheld(sip.user):
            kind = PartyKind.WITHHELD
        elif sip.user is not None and phones.looks_like_phone_number(sip.user):
            phone = _phone(sip.user, region)
    elif kind is PartyKind.PSTN and endpoint is not None:
        phone = _phone(endpoint, region)
        if not phone.valid:
            warnings.append(
                _warning("invalid-phone-number", field, f"{field} is not a valid phone number")
            )
    if endpoint is None and kind is not PartyKind.UNKNOWN:
        warnings.append(_warning("endpoint-missing", field, f"{field} is missing"))
    return PartyInfo(
        kind=kind,
        type=party.raw_type,
        endpoint=endpoint,
        masked=phones.mask_number(endpoint),
        phone=phone,
        sip=sip,
    )


_KIND_BY_TYPE: Final[Mapping[PartyType, PartyKind]] = {
    PartyType.NUMBER: PartyKind.PSTN,
    PartyType.DID: PartyKind.PSTN,
    PartyType.USERNAME: PartyKind.USERNAME,
    PartyType.SIP: PartyKind.SIP,
}


def _kind(party: Party, warnings: list[EnrichmentWarning], role: str) -> PartyKind:
    endpoint = party.endpoint
    if endpoint is not None and phones.is_withheld(endpoint):
        return PartyKind.WITHHELD
    by_type = _KIND_BY_TYPE.get(party.type)
    if by_type is not None:
        return by_type
    if endpoint is None:
        return PartyKind.UNKNOWN
    stripped = endpoint.strip()
    if "@" in stripped or stripped.lower().startswith(("sip:", "sips:")):
        inferred = PartyKind.SIP
    elif phones.looks_like_phone_number(stripped):
        inferred = PartyKind.PSTN
    else:
        return PartyKind.UNKNOWN
    warnings.append(
        _warning(
            "party-kind-inferred",
            f"{role}.type",
            f"{role}.type missing or unknown; kind '{inferred.value}' inferred from the endpoint",
        )
    )
    return inferred


def _phone(text: str, region: str | None) -> PhoneDetails:
    info = phones.analyse_number(text, default_region=region)
    return _phone_details(info)


def _phone_details(info: phones.PhoneInfo) -> PhoneDetails:
    return PhoneDetails(
        e164=info.e164,
        country=info.country,
        calling_code=info.calling_code,
        number_type=info.number_type.value,
        valid=info.valid,
        possible=info.possible,
        geo_description=info.geo_description,
        carrier=info.carrier,
        time_zones=info.time_zones,
        international=info.international,
        parsed_as=info.parsed_as,
    )


def _sip_address(endpoint: str) -> SipAddress:
    """``[sip:|sips:]user[:password]@host[:port][;params][?headers]``, leniently."""
    text = endpoint.strip()
    lowered = text.lower()
    for scheme in ("sips:", "sip:"):
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    user: str | None
    if "@" in text:
        user_part, _, host_part = text.partition("@")
        user = user_part.split(";", 1)[0].split(":", 1)[0] or None
    else:
        user_part, host_part = "", text
        user = None
    host_part = host_part.split(";", 1)[0].split("?", 1)[0]
    host, port = _host_port(host_part)
    if user is None and host is not None and phones.looks_like_phone_number(host):
        user, host = host, None  # a bare number given as a SIP endpoint
    return SipAddress(user=user, host=host, port=port)


def _host_port(text: str) -> tuple[str | None, int | None]:
    host: str = text
    port: int | None = None
    if text.startswith("["):  # IPv6 literal
        close = text.find("]")
        if close != -1:
            host, rest = text[: close + 1], text[close + 1 :]
            if rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6:
                port = int(rest[1:])
    elif text.count(":") == 1:
        name, _, digits = text.partition(":")
        if digits.isdigit() and len(digits) <= 5:
            host, port = name, int(digits)
    if port is not None and not 0 < port < 65536:
        port = None
    return host.strip().lower() or None, port


# --- time and money -----------------------------------------------------------------------------


def _time(
    record: CallRecord,
    *,
    is_final: bool,
    answered: bool,
    now: datetime,
    warnings: list[EnrichmentWarning],
) -> CallTime:
    start = record.timestamp
    duration = record.duration
    if duration is None and is_final:
        if answered:
            warnings.append(
                _warning("duration-missing", "duration", "duration missing for an answered call")
            )
        else:
            duration = 0
    end: datetime | None = None
    if start is None:
        if is_final:
            warnings.append(_warning("timestamp-missing", "timestamp", "timestamp missing"))
    else:
        if start > now + _FUTURE_TOLERANCE:
            warnings.append(
                _warning("timestamp-in-future", "timestamp", "timestamp is after enrichedAt")
            )
        if is_final and duration is not None:
            try:
                end = start + timedelta(seconds=duration)
            except OverflowError:
                warnings.append(
                    _warning("end-out-of-range", "duration", "start + duration is out of range")
                )
    return CallTime(
        start=start,
        end=end,
        duration_seconds=duration,
        billable_minutes=None if duration is None else math.ceil(duration / 60),
        utc_day=None if start is None else start.date().isoformat(),
    )


def _amount(money: Money | None, field: str, warnings: list[EnrichmentWarning]) -> Amount | None:
    if money is None:
        return None
    if money.amount is not None and money.amount < 0:
        warnings.append(
            _warning("negative-amount", f"{field}.amount", f"{field}.amount is negative")
        )
    return Amount(currency=money.currency_id, amount=money.amount)


# --- custom -------------------------------------------------------------------------------------


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _custom_object(custom: str | None) -> dict[str, Any] | None:
    if custom is None or len(custom) > _MAX_CUSTOM_JSON_CHARS:
        return None
    text = custom.strip()
    if not text.startswith("{"):
        return None
    try:
        parsed = json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict) or exceeds_depth(parsed) or find_invalid_unicode(parsed):
        return None
    return parsed


# --- fingerprint --------------------------------------------------------------------------------


def fingerprint(raw: Mapping[str, Any]) -> str:
    """``"sha256:" + hex`` of the canonical JSON of a decoded source record.

    Canonical: object keys sorted, no whitespace, strings as JSON with non-ASCII kept, numbers
    in their shortest exact decimal form (``1.50``, ``1.5`` and a float ``1.5`` agree; ``2.0``
    and ``2`` agree). Key order and whitespace of the body therefore never change it; any
    change of a value does.
    """
    parts: list[str] = []
    _canonical(raw, parts)
    canonical = "".join(parts).encode("utf-8", "surrogatepass")  # never raises
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def _canonical(value: Any, out: list[str]) -> None:
    # Recursive: bodies that went through the record parser are at most MAX_DEPTH deep.
    kind = type(value)
    if kind is str:
        out.append(_encode_str(value))
    elif kind is dict or isinstance(value, Mapping):
        out.append("{")
        first = True
        for key in _sorted_keys(value):
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key if type(key) is str else str(key)))
            out.append(":")
            _canonical(value[key], out)
        out.append("}")
    elif kind is list or kind is tuple:
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _canonical(item, out)
        out.append("]")
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float | Decimal):
        out.append(_canonical_number(value))
    elif isinstance(value, datetime):
        out.append(_encode_str(format_utc(_utc(value))))
    else:
        out.append(_encode_str(str(value)))


def _sorted_keys(mapping: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(mapping)
    except TypeError:  # keys of mixed types (not from JSON)
        return sorted(mapping, key=str)


def _canonical_number(value: float | Decimal) -> str:
    number = Decimal(repr(value)) if isinstance(value, float) else value
    if not number.is_finite():
        return json.dumps(str(number))
    if number == 0:
        return "0"
    normal = number.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and -30 <= exponent <= 30:
        return format(normal, "f")
    return str(normal)


def _sinch_form(record: CallRecord) -> dict[str, Any]:
    """The record's known fields in Sinch's shape (for a fingerprint without the raw body)."""
    form: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if value is not None:
            form[key] = value

    put("callId", record.call_id)
    for key, party in (("from", record.from_), ("to", record.to)):
        if party is not None:
            put(key, {"type": party.raw_type, "endpoint": party.endpoint})
    put("domain", None if record.domain is None else str(record.domain))
    put("duration", record.duration)
    put("status", None if record.status is None else str(record.status))
    put("result", None if record.result is None else str(record.result))
    put("reason", None if record.reason is None else str(record.reason))
    put("timestamp", None if record.timestamp is None else format_utc(record.timestamp))
    put("custom", record.custom)
    for key, money in (("userRate", record.user_rate), ("debit", record.debit)):
        if money is not None:
            put(key, {"currencyId": money.currency_id, "amount": money.amount})
    return form
