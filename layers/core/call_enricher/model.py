"""The Sinch Get Call record (``GET /calling/v1/calls/id/{callId}``), validated tolerantly.

:func:`parse_call_record` turns a response body (bytes, text or an already-decoded mapping)
into a frozen :class:`CallRecord`, or raises :class:`~call_enricher.errors.InvalidRecordError`
whose ``details`` name every bad field (``[{"field": "duration", "problem": "must be >= 0"}]``)
and whose message never repeats a value from the body (values can be phone numbers).

Policies (``RECORD_MODEL_VERSION`` changes when one of them does):

* **Everything is optional.** Sinch marks no response field as required: an absent field and
  a JSON ``null`` both give ``None``. An empty string for ``callId``, ``timestamp`` or an enum
  field is treated as absent too.
* **Unknown keys are ignored but noted** in :attr:`CallRecord.extra_keys` as dotted paths
  (``"formatted"``, ``"debit.debitMinutes"``), so new Sinch fields never break parsing.
* **Open enums.** Like Sinch's official SDKs, ``status``, ``result``, ``reason``, ``domain`` and
  the party ``type`` are open: a known value is matched case-insensitively to its enum member;
  an unknown value is kept as sent (a plain ``str``, surrounding spaces stripped) and listed in
  :attr:`CallRecord.unknown_enum_values` (enrichment turns each into a warning). They are
  never a reason to reject a record. The party type additionally keeps the raw spelling
  (``"Number"``) in :attr:`Party.raw_type`; ``did`` (the callbacks' spelling) is known as PSTN.
* **JSON types are checked, not coerced**: a string field holding a number, a boolean
  duration, a non-object ``userRate``... is invalid. Two tolerances: ``duration`` accepts an
  integral number written as ``12.0``, and ``amount`` accepts a decimal string (``"0.0123"``),
  the usual way to carry exact money.
* **Money is exact.** Bodies are decoded with ``json.loads(parse_float=Decimal)``, so an
  ``amount`` never goes through ``float``. A mapping decoded elsewhere with floats is
  converted through ``repr`` (the shortest text that round-trips, i.e. the JSON text for any
  amount of up to 15 significant digits). Amounts must be finite, ``|amount| < 10**15`` and
  have at most 30 decimal places. Negative amounts are kept (a credit is conceivable);
  enrichment flags them. ``currencyId`` may be ``null``.
* **Timestamps** are ISO 8601 date-times, with or without fraction (any number of digits;
  microseconds kept) and zone. No zone means UTC (Sinch's documented convention); an offset is
  converted. The result is always an aware UTC ``datetime``. A date without a time is invalid.
* **duration** is an integer number of seconds, ``0 <= duration <= 31 days``.
* **callId / callid**: the Get Call response spells it ``callId``, callbacks ``callid``; both
  are accepted. When both are present they must agree, else the record is ambiguous (invalid).
* **from / to** are ``{type, endpoint}`` objects; a plain string (DiCE's ``from``) is accepted
  as an endpoint of unknown type.
* Bodies nested deeper than :data:`MAX_DEPTH` levels are rejected before anything else walks
  them (a Get Call record is 3 levels deep), and so are bodies holding a string or key that is
  not valid Unicode (a lone surrogate escape such as ``"\\ud800"``): nothing downstream
  (DynamoDB, EventBridge, JSON encoders) could store or send it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Final, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from call_enricher.errors import InvalidRecordError

__all__ = [
    "MAX_AMOUNT_EXCLUSIVE",
    "MAX_AMOUNT_PLACES",
    "MAX_DEPTH",
    "MAX_DURATION_SECONDS",
    "RECORD_MODEL_VERSION",
    "CallReason",
    "CallRecord",
    "CallResult",
    "CallStatus",
    "Domain",
    "Money",
    "Party",
    "PartyType",
    "UnknownEnumValue",
    "decode_and_parse",
    "decode_record_body",
    "exceeds_depth",
    "find_invalid_unicode",
    "format_decimal",
    "format_utc",
    "loads_exact",
    "parse_call_record",
]

#: Version of the parsing/validation policies above (stored in each enriched record's
#: provenance, so a change of policy is visible in the data).
RECORD_MODEL_VERSION: Final = "1"

MAX_DURATION_SECONDS: Final = 31 * 86_400
MAX_AMOUNT_EXCLUSIVE: Final = Decimal(10) ** 15
MAX_AMOUNT_PLACES: Final = 30
MAX_DEPTH: Final = 16
_MAX_TIMESTAMP_LENGTH: Final = 64


# --- enums (open: see the module docstring) ---------------------------------------------------


class PartyType(StrEnum):
    """Type of a ``from``/``to`` party. ``UNKNOWN``: missing or not one Sinch documents."""

    NUMBER = "number"  # PSTN; endpoint is a phone number (usually E.164)
    USERNAME = "username"  # in-app (data) endpoint; endpoint is the user name
    SIP = "sip"  # endpoint is a SIP address, e.g. "+19876543210@example.sip.sinch.com"
    DID = "did"  # callbacks' spelling of a PSTN number
    UNKNOWN = "unknown"


class CallStatus(StrEnum):
    ONGOING = "ONGOING"
    FINAL = "FINAL"


class CallResult(StrEnum):
    NA = "N/A"
    ANSWERED = "ANSWERED"
    BUSY = "BUSY"
    NOANSWER = "NOANSWER"
    FAILED = "FAILED"


class CallReason(StrEnum):
    NA = "N/A"
    TIMEOUT = "TIMEOUT"
    CALLERHANGUP = "CALLERHANGUP"
    CALLEEHANGUP = "CALLEEHANGUP"
    BLOCKED = "BLOCKED"
    NOCREDITPARTNER = "NOCREDITPARTNER"
    MANAGERHANGUP = "MANAGERHANGUP"
    CANCEL = "CANCEL"
    GENERALERROR = "GENERALERROR"
    INVALIDSVAMLACTION = "INVALIDSVAMLACTION"


class Domain(StrEnum):
    PSTN = "pstn"
    MXP = "mxp"  # data (in-app) clients, in older docs


class UnknownEnumValue(NamedTuple):
    """An enum value Sinch sent that this model does not know (kept, not rejected)."""

    field: str  # Sinch's name, dotted: "result", "from.type"
    value: str


# --- field validators ---------------------------------------------------------------------------


def _problem(message: str) -> PydanticCustomError:
    # The message is a fixed text: it must never embed the offending value.
    return PydanticCustomError("invalid_record_field", message)


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _problem("must be a string")
    return value


def _optional_nonempty_text(value: object) -> str | None:
    text = _optional_text(value)
    return text if text else None


def _open_enum[E: StrEnum](
    enum_type: type[E], *, upper: bool
) -> Callable[[object], E | str | None]:
    lookup = {
        member.value.upper() if upper else member.value.lower(): member for member in enum_type
    }

    def validate(value: object) -> E | str | None:
        if value is None or isinstance(value, enum_type):
            return value
        if not isinstance(value, str):
            raise _problem("must be a string")
        stripped = value.strip()
        if not stripped:
            return None
        key = stripped.upper() if upper else stripped.lower()
        return lookup.get(key, stripped)

    return validate


def _party_type(value: object) -> PartyType:
    if value is None:
        return PartyType.UNKNOWN
    if isinstance(value, PartyType):
        return value
    if not isinstance(value, str):
        raise _problem("must be a string")
    try:
        return PartyType(value.strip().lower())
    except ValueError:
        return PartyType.UNKNOWN


def _duration(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _problem("must be an integer number of seconds")
    if isinstance(value, float):
        value = Decimal(repr(value)) if math.isfinite(value) else Decimal("NaN")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _problem("must be an integer number of seconds")
    elif not isinstance(value, int):
        raise _problem("must be an integer number of seconds")
    if value < 0:
        raise _problem("must be >= 0")
    if value > MAX_DURATION_SECONDS:
        raise _problem(f"must be <= {MAX_DURATION_SECONDS} (31 days)")
    if isinstance(value, Decimal):
        if value != value.to_integral_value():
            raise _problem("must be an integer number of seconds")
        return int(value)
    return value


def _timestamp(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise _problem("must be an ISO 8601 date-time string")
    if not text:
        return None
    if len(text) > _MAX_TIMESTAMP_LENGTH or len(text) < 11 or text[10] not in "Tt ":
        raise _problem("must be an ISO 8601 date-time (date and time)")
    if text[-1] == "z":
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _problem("must be an ISO 8601 date-time (date and time)") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise _problem("is out of range once converted to UTC") from None


def _amount(value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _problem("must be a number")
    try:
        if isinstance(value, Decimal):
            amount = value
        elif isinstance(value, int):
            amount = Decimal(value)
        elif isinstance(value, float):
            amount = Decimal(repr(value))  # the shortest text that round-trips: no float drift
        elif isinstance(value, str):
            amount = Decimal(value.strip()) if len(value) <= 64 else Decimal("NaN")
        else:
            raise _problem("must be a number")
    except InvalidOperation:
        raise _problem("must be a number") from None
    if not amount.is_finite():
        raise _problem("must be a finite number")
    if abs(amount) >= MAX_AMOUNT_EXCLUSIVE:
        raise _problem("is out of range (|amount| must be < 10^15)")
    if amount == 0:
        return amount.copy_abs()  # no "-0"
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_AMOUNT_PLACES:
        raise _problem(f"has more than {MAX_AMOUNT_PLACES} decimal places")
    return amount


def format_decimal(value: Decimal) -> str:
    """Fixed-point text of an exact decimal, never in exponent form (``"0.0123"``)."""
    return format(value, "f")


def format_utc(value: datetime) -> str:
    """ISO 8601 text of an aware datetime in UTC with ``Z``, to the precision it carries.

    ``2024-01-08T09:48:12Z``, ``...12.120Z`` (milliseconds) or ``...12.123456Z``.
    """
    utc = value.astimezone(UTC)
    if utc.microsecond == 0:
        spec = "seconds"
    elif utc.microsecond % 1000 == 0:
        spec = "milliseconds"
    else:
        spec = "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _enum_text(value: StrEnum | str | None) -> str | None:
    return None if value is None else str(value)


def _json_decimal(value: Decimal | None) -> str | None:
    return None if value is None else format_decimal(value)


def _json_datetime(value: datetime | None) -> str | None:
    return None if value is None else format_utc(value)


OptionalText = Annotated[str | None, PlainValidator(_optional_text)]
ExactAmount = Annotated[
    Decimal | None,
    PlainValidator(_amount),
    PlainSerializer(_json_decimal, return_type=str | None, when_used="json"),
]
UtcTimestamp = Annotated[
    datetime | None,
    PlainValidator(_timestamp),
    PlainSerializer(_json_datetime, return_type=str | None, when_used="json"),
]
_EnumSerializer = PlainSerializer(_enum_text, return_type=str | None)


# --- models -------------------------------------------------------------------------------------


class Party(BaseModel):
    """A ``from``/``to`` party: ``{type, endpoint}``.

    ``type`` is the normalised :class:`PartyType` (case-insensitive; ``UNKNOWN`` when missing
    or undocumented), ``raw_type`` the spelling Sinch sent (``"Number"``), ``endpoint`` the
    number, user name or SIP address exactly as sent (may be ``"private"`` when withheld).
    """

    model_config = ConfigDict(
        frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    type: Annotated[PartyType, PlainValidator(_party_type), _EnumSerializer] = PartyType.UNKNOWN
    raw_type: Annotated[OptionalText, Field(alias="rawType")] = None
    endpoint: OptionalText = None

    @model_validator(mode="before")
    @classmethod
    def _keep_raw_type(cls, data: Any) -> Any:
        if isinstance(data, str):  # DiCE-style plain string party
            return {"endpoint": data}
        if isinstance(data, Mapping) and "raw_type" not in data and "rawType" not in data:
            raw = data.get("type")
            if isinstance(raw, str) and raw.strip():
                return {**data, "raw_type": raw}
        return data

    @property
    def has_unknown_type(self) -> bool:
        """True when Sinch sent a type this model does not know (kept in ``raw_type``)."""
        return self.type is PartyType.UNKNOWN and self.raw_type is not None


class Money(BaseModel):
    """``{currencyId, amount}``: ``userRate`` (per minute) or ``debit`` (total charged)."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    currency_id: Annotated[OptionalText, Field(alias="currencyId")] = None
    amount: ExactAmount = None


_StatusValue = Annotated[
    CallStatus | str | None, PlainValidator(_open_enum(CallStatus, upper=True)), _EnumSerializer
]
_ResultValue = Annotated[
    CallResult | str | None, PlainValidator(_open_enum(CallResult, upper=True)), _EnumSerializer
]
_ReasonValue = Annotated[
    CallReason | str | None, PlainValidator(_open_enum(CallReason, upper=True)), _EnumSerializer
]
_DomainValue = Annotated[
    Domain | str | None, PlainValidator(_open_enum(Domain, upper=False)), _EnumSerializer
]


class CallRecord(BaseModel):
    """A Get Call response, validated. Every field is optional (see the module docstring).

    Enum-typed fields hold the enum member for a known value and the raw ``str`` otherwise
    (both compare equal to strings: ``record.status == "FINAL"``).
    """

    model_config = ConfigDict(
        frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    call_id: Annotated[
        str | None, PlainValidator(_optional_nonempty_text), Field(alias="callId")
    ] = None
    from_: Annotated[Party | None, Field(alias="from")] = None
    to: Party | None = None
    domain: _DomainValue = None
    duration: Annotated[int | None, PlainValidator(_duration)] = None
    status: _StatusValue = None
    result: _ResultValue = None
    reason: _ReasonValue = None
    timestamp: UtcTimestamp = None
    custom: OptionalText = None
    user_rate: Annotated[Money | None, Field(alias="userRate")] = None
    debit: Money | None = None
    extra_keys: Annotated[tuple[str, ...], Field(alias="extraKeys")] = ()

    @property
    def unknown_enum_values(self) -> tuple[UnknownEnumValue, ...]:
        """Enum values kept as-is because this model does not know them (policy: open enums)."""
        found: list[UnknownEnumValue] = []
        for name, enum_type, value in (
            ("domain", Domain, self.domain),
            ("status", CallStatus, self.status),
            ("result", CallResult, self.result),
            ("reason", CallReason, self.reason),
        ):
            if value is not None and not isinstance(value, enum_type):
                found.append(UnknownEnumValue(name, value))
        for name, party in (("from", self.from_), ("to", self.to)):
            if party is not None and party.has_unknown_type and party.raw_type is not None:
                found.append(UnknownEnumValue(f"{name}.type", party.raw_type))
        return tuple(found)

    @property
    def is_final(self) -> bool:
        """True when Sinch says the call is over (``status`` FINAL)."""
        return self.status is CallStatus.FINAL


# --- parsing ------------------------------------------------------------------------------------

# Sinch key -> model field name, per object.
_RECORD_KEYS: Final[Mapping[str, str]] = {
    "callId": "call_id",
    "from": "from_",
    "to": "to",
    "domain": "domain",
    "duration": "duration",
    "status": "status",
    "result": "result",
    "reason": "reason",
    "timestamp": "timestamp",
    "custom": "custom",
    "userRate": "user_rate",
    "debit": "debit",
}
_PARTY_KEYS: Final[Mapping[str, str]] = {"type": "type", "endpoint": "endpoint"}
_MONEY_KEYS: Final[Mapping[str, str]] = {"currencyId": "currency_id", "amount": "amount"}
_NESTED_KEYS: Final[Mapping[str, Mapping[str, str]]] = {
    "from": _PARTY_KEYS,
    "to": _PARTY_KEYS,
    "userRate": _MONEY_KEYS,
    "debit": _MONEY_KEYS,
}
# model field name -> Sinch name, for error locations.
_SINCH_NAMES: Final[Mapping[str, str]] = {
    field: key for keys in (_RECORD_KEYS, _MONEY_KEYS) for key, field in keys.items()
}


def parse_call_record(data: bytes | bytearray | str | Mapping[str, Any]) -> CallRecord:
    """Validate a Get Call response body into a :class:`CallRecord`.

    ``data`` is the raw body (bytes or text, decoded with exact decimals) or an already
    decoded JSON object. Raises :class:`InvalidRecordError` (permanent) when the body is not
    JSON, not an object, or a field is invalid; ``details`` lists
    ``{"field": <Sinch name, dotted>, "problem": <text>}`` for every problem found.
    """
    return decode_and_parse(data)[1]


def decode_and_parse(
    data: bytes | bytearray | str | Mapping[str, Any],
) -> tuple[Mapping[str, Any], CallRecord]:
    """Like :func:`parse_call_record`, also returning the decoded body (for a fingerprint)."""
    mapping = decode_record_body(data)
    problems: list[dict[str, str]] = []
    clean, extra = _clean(mapping, problems)
    if problems:
        raise _invalid(problems)
    clean["extra_keys"] = tuple(sorted(extra))
    try:
        return mapping, CallRecord.model_validate(clean)
    except ValidationError as exc:
        raise _invalid(_problems_from(exc)) from None


def loads_exact(data: bytes | bytearray | str) -> Any:
    """``json.loads`` with exact decimals; ``NaN``/``Infinity`` rejected (not JSON).

    Raises ``ValueError`` (including ``UnicodeDecodeError``) or ``RecursionError``.
    """
    return json.loads(data, parse_float=Decimal, parse_constant=_reject_constant)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_record_body(data: bytes | bytearray | str | Mapping[str, Any]) -> Mapping[str, Any]:
    """Decode a body (exact decimals) and check it is a JSON object of bounded depth.

    A mapping is only checked. Raises :class:`InvalidRecordError` (field ``$``).
    """
    if isinstance(data, Mapping):
        decoded: Any = data
    elif isinstance(data, bytes | bytearray | str):
        try:
            decoded = loads_exact(data)
        except (ValueError, RecursionError):
            raise _invalid([{"field": "$", "problem": "body is not valid JSON"}]) from None
    else:
        raise _invalid([{"field": "$", "problem": "body must be JSON text or a mapping"}])
    if not isinstance(decoded, Mapping):
        raise _invalid([{"field": "$", "problem": "body must be a JSON object"}])
    if exceeds_depth(decoded):
        raise _invalid([{"field": "$", "problem": f"nested deeper than {MAX_DEPTH} levels"}])
    bad = find_invalid_unicode(decoded)
    if bad is not None:
        problem = "is not valid Unicode (a lone surrogate escape such as \\ud800)"
        raise _invalid([{"field": bad, "problem": problem}])
    return decoded


def find_invalid_unicode(root: Any) -> str | None:
    """The dotted path of the first key or string that is not valid Unicode, else ``None``.

    JSON's ``\\uXXXX`` escapes can encode lone UTF-16 surrogates, which decode to Python
    strings that cannot be encoded as UTF-8 (DynamoDB, EventBridge and ``model_dump_json``
    would all fail on them later). The path is printable even when a key is the culprit.
    """
    stack: list[tuple[str, Any]] = [("", root)]
    while stack:
        path, node = stack.pop()
        items = node.items() if isinstance(node, Mapping) else enumerate(node)
        for key, child in items:
            if type(key) is int:
                child_path = f"{path}[{key}]"
            else:
                key_text = key if type(key) is str else str(key)
                child_path = f"{path}.{key_text}" if path else key_text
                if not key_text.isascii() and not _is_utf8_encodable(key_text):
                    return _printable(child_path)
            if type(child) is str:
                if not child.isascii() and not _is_utf8_encodable(child):
                    return _printable(child_path)
            elif isinstance(child, _CONTAINER_TYPES):
                stack.append((child_path, child))
    return None


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(path: str) -> str:
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


_LEAF_TYPES: Final = frozenset({str, int, float, Decimal, bool, type(None)})
_CONTAINER_TYPES: Final = (Mapping, list, tuple)


def exceeds_depth(root: Any, limit: int = MAX_DEPTH) -> bool:
    """True when objects/arrays nest deeper than ``limit`` levels (``root`` is level 1).

    Iterative, so it is safe on any input, however deep.
    """
    level: list[Any] = [root]
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for node in level:
            children = node.values() if type(node) is dict or isinstance(node, Mapping) else node
            below.extend(
                child
                for child in children
                if type(child) not in _LEAF_TYPES and isinstance(child, _CONTAINER_TYPES)
            )
        level = below
        depth += 1
    return False


def _clean(
    mapping: Mapping[str, Any], problems: list[dict[str, str]]
) -> tuple[dict[str, Any], list[str]]:
    """Keep known keys (renamed to field names), collect unknown ones as dotted paths."""
    clean: dict[str, Any] = {}
    extra: list[str] = []
    for key, value in mapping.items():
        name = _RECORD_KEYS.get(key) if isinstance(key, str) else None
        if name is None:
            if key != "callid":
                extra.append(str(key))
            continue
        nested = _NESTED_KEYS.get(key)
        if nested is not None and isinstance(value, Mapping):
            inner: dict[str, Any] = {}
            for sub_key, sub_value in value.items():
                sub_name = nested.get(sub_key) if isinstance(sub_key, str) else None
                if sub_name is None:
                    extra.append(f"{key}.{sub_key}")
                else:
                    inner[sub_name] = sub_value
            value = inner
        clean[name] = value
    _merge_callid(mapping, clean, problems)
    return clean, extra


def _merge_callid(
    mapping: Mapping[str, Any], clean: dict[str, Any], problems: list[dict[str, str]]
) -> None:
    if "callid" not in mapping:
        return
    lower = mapping["callid"]
    upper = clean.get("call_id")
    if upper in (None, ""):
        clean["call_id"] = lower
    elif lower not in (None, "") and lower != upper:
        problems.append({"field": "callid", "problem": "disagrees with callId"})


_MODEL_TYPE_PROBLEMS: Final[Mapping[str, str]] = {
    "from": "must be an object {type, endpoint} or a string",
    "to": "must be an object {type, endpoint} or a string",
    "userRate": "must be an object {currencyId, amount}",
    "debit": "must be an object {currencyId, amount}",
}


def _problems_from(exc: ValidationError) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = [_SINCH_NAMES.get(str(part), str(part)) for part in error["loc"]]
        problem = error["msg"]
        if error["type"] == "model_type":
            problem = _MODEL_TYPE_PROBLEMS.get(loc[-1] if loc else "", "must be an object")
        problems.append({"field": ".".join(loc) or "$", "problem": problem})
    return problems


def _invalid(problems: list[dict[str, str]]) -> InvalidRecordError:
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return InvalidRecordError(f"invalid Get Call record: {summary}", details=problems)
