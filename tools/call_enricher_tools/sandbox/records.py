"""The sandbox's seeded, realistic Get Call records.

:func:`generate_records` returns the same records for the same ``(seed, count)``: the sample
bodies of ``events/sinch/`` first (real shapes, kept verbatim), then generated ones that cycle
through every ``type`` spelling (``number``/``Number``/``username``/``Username``/``sip``),
every ``result`` and ``reason``, withheld (``private``) callers, absent ``from``, absent
optional fields, timestamps without zone / with milliseconds / with ``Z``, money in several
currencies with a ``null`` currency and an integer ``0`` amount, and valid phone numbers of
several countries (``phonenumbers``' example numbers with varied last digits, kept only when
still valid).

After them come a few *risky* calls (:func:`risky_records`, on by default, IDs of their own so
the others keep theirs), all FINAL and all on one UTC day (:func:`risky_day`):

* ``risky:premium-rate``: a GB mobile calling a UK premium-rate number (``+44 909 ...``) at
  1.50 GBP/min for 12 minutes (risk ``high``: ``premium-rate-destination``, ``high-rate``);
* ``risky:satellite``: a US number calling an Iridium satellite number (``+881 6...``) at
  2.80 USD/min (risk ``high``: ``international-network-destination``, ``high-rate``);
* ``risky:burst``: :data:`BURST_CALLS` long calls from one SE number to different LV mobiles
  within an hour, each ordinary on its own (``low``: ``cross-border``; rate under the cap,
  each number under its daily threshold) but together above the default policy's daily
  EUR 250 for one country: the spend watch's ``Spend Threshold Crossed`` for ``country/LV``.

A :class:`SeedRecord` is FINAL or ONGOING. An ONGOING one is served with ``status ONGOING``,
``result``/``reason`` ``N/A``, no duration and a zero debit until it ends; then its FINAL
body (:attr:`SeedRecord.final`) is served.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from call_enricher_tools.sandbox.faults import keyed_rng

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLES_DIR = REPO_ROOT / "events" / "sinch"

PARTY_TYPES = ("number", "Number", "username", "Username", "sip")
RESULTS = ("N/A", "ANSWERED", "BUSY", "NOANSWER", "FAILED")
REASONS = (
    "N/A",
    "TIMEOUT",
    "CALLERHANGUP",
    "CALLEEHANGUP",
    "BLOCKED",
    "NOCREDITPARTNER",
    "MANAGERHANGUP",
    "CANCEL",
    "GENERALERROR",
    "INVALIDSVAMLACTION",
)
# Plausible (result, reason) pairs; every result and every reason appears at least once.
OUTCOMES: tuple[tuple[str, str], ...] = (
    ("ANSWERED", "CALLERHANGUP"),
    ("ANSWERED", "CALLEEHANGUP"),
    ("ANSWERED", "MANAGERHANGUP"),
    ("ANSWERED", "INVALIDSVAMLACTION"),
    ("BUSY", "N/A"),
    ("BUSY", "CALLEEHANGUP"),
    ("NOANSWER", "TIMEOUT"),
    ("NOANSWER", "CALLERHANGUP"),
    ("NOANSWER", "CANCEL"),
    ("FAILED", "BLOCKED"),
    ("FAILED", "NOCREDITPARTNER"),
    ("FAILED", "GENERALERROR"),
    ("N/A", "N/A"),
)
COUNTRIES = ("US", "GB", "DE", "SE", "FR", "BR", "IN", "AU", "SG", "JP", "ZA", "NL", "ES", "MX")
CURRENCIES = ("USD", "EUR", "GBP", "SEK", "EUR", "USD", None)
USERNAMES = ("alice.k", "bob_77", "support-desk", "myUserName", "agent.042", "kiosk-3")
SIP_DOMAINS = ("example.sip.sinch.com", "pbx.example.net", "trunk.example.org")


@dataclass(frozen=True)
class SeedRecord:
    """One seeded call: its FINAL body, and whether it starts ONGOING."""

    call_id: str
    final: dict[str, Any]
    ongoing: bool = False
    source: str = "generated"
    """``generated``, or ``sample:<file name>`` for the bodies of ``events/sinch/``."""

    def ongoing_body(self, elapsed_seconds: float = 0.0) -> dict[str, Any]:
        """The body served while the call is ONGOING."""
        body = dict(self.final)
        body.update(status="ONGOING", result="N/A", reason="N/A")
        body.pop("duration", None)
        rate = self.final.get("userRate") or {}
        currency = rate.get("currencyId") if isinstance(rate, dict) else None
        body["debit"] = {"currencyId": currency, "amount": 0}
        return body


def make_call_id(seed: int, index: int, salt: str = "call") -> str:
    """A Sinch-shaped call ID (32 lowercase hex characters), deterministic."""
    return hashlib.md5(f"{salt}:{seed}:{index}".encode(), usedforsecurity=False).hexdigest()


def unknown_call_ids(seed: int, count: int) -> list[str]:
    """``count`` well-formed call IDs that are never seeded (the sandbox answers 404)."""
    return [make_call_id(seed, i, "unknown") for i in range(count)]


class _Numbers:
    """Valid phone numbers per country, derived from phonenumbers' example numbers."""

    def __init__(self) -> None:
        import phonenumbers

        self._pn = phonenumbers
        self._examples: dict[str, list[Any]] = {}
        for country in COUNTRIES:
            found = []
            for kind in (
                phonenumbers.PhoneNumberType.MOBILE,
                phonenumbers.PhoneNumberType.FIXED_LINE,
            ):
                example = phonenumbers.example_number_for_type(country, kind)
                if example is not None:
                    found.append(example)
            self._examples[country] = found

    def number(self, rng: random.Random, country: str) -> str:
        pn = self._pn
        example = rng.choice(self._examples[country])
        digits = str(example.national_number)
        for _ in range(8):
            tail = f"{rng.randrange(1000):03d}"
            candidate = pn.PhoneNumber(
                country_code=example.country_code, national_number=int(digits[:-3] + tail)
            )
            if pn.is_valid_number(candidate):
                return str(pn.format_number(candidate, pn.PhoneNumberFormat.E164))
        return str(pn.format_number(example, pn.PhoneNumberFormat.E164))


def _timestamp(rng: random.Random, index: int) -> str:
    day = rng.randrange(1, 29)
    month = rng.randrange(1, 13)
    clock = f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
    base = f"2026-{month:02d}-{day:02d}T{clock}"
    style = index % 5
    if style == 3:
        return f"{base}.{rng.randrange(1000):03d}"
    if style == 4:
        return f"{base}Z"
    return base  # the usual shape: no zone (Sinch means UTC)


def _party(rng: random.Random, numbers: _Numbers, party_type: str) -> dict[str, str]:
    lowered = party_type.lower()
    if lowered == "number":
        number = numbers.number(rng, rng.choice(COUNTRIES))
        if rng.random() < 0.08:
            number = number.removeprefix("+")  # "sometimes without +"
        return {"type": party_type, "endpoint": number}
    if lowered == "username":
        return {"type": party_type, "endpoint": rng.choice(USERNAMES)}
    number = numbers.number(rng, rng.choice(COUNTRIES))
    return {"type": "sip", "endpoint": f"{number}@{rng.choice(SIP_DOMAINS)}"}


def generated_record(seed: int, index: int, numbers: _Numbers | None = None) -> dict[str, Any]:
    """The FINAL Get Call body of generated call number ``index`` (deterministic)."""
    numbers = numbers or _Numbers()
    rng = keyed_rng(seed, index, "record")
    call_id = make_call_id(seed, index)
    result, reason = OUTCOMES[index % len(OUTCOMES)]
    to_type = PARTY_TYPES[index % len(PARTY_TYPES)]
    from_type = PARTY_TYPES[(index // len(PARTY_TYPES)) % len(PARTY_TYPES)]
    body: dict[str, Any] = {
        "from": _party(rng, numbers, from_type),
        "to": _party(rng, numbers, to_type),
        "domain": "pstn",
        "callId": call_id,
    }
    if index % 11 == 4:
        body["from"] = {"type": "number", "endpoint": "private"}  # withheld caller
    answered = result == "ANSWERED"
    duration = rng.randrange(1, 1800) if answered else 0
    currency = CURRENCIES[index % len(CURRENCIES)]
    rate = round(rng.uniform(0.002, 0.09), 4)
    minutes = -(-duration // 60)
    debit: float | int = round(rate * minutes, 4) if duration else 0
    body.update(
        duration=duration,
        status="FINAL",
        result=result,
        reason=reason,
        timestamp=_timestamp(rng, index),
        custom=rng.choice(("{}", "", '{"orderId":"A-' + str(index) + '"}', "campaign=spring")),
        userRate={"currencyId": currency, "amount": rate},
        debit={"currencyId": currency, "amount": debit},
    )
    # Missing optional fields, as real records have them.
    variant = index % 13
    if variant == 5:
        del body["from"]
    elif variant == 6:
        for name in ("custom", "domain", "userRate"):
            del body[name]
    elif variant == 7 and not answered:
        del body["duration"]
    elif variant == 8:
        body["debit"]["formatted"] = f"{debit} {currency or ''}".strip()  # legacy extra key
    elif variant == 9:
        body["callid"] = body.pop("callId")  # the callback spelling
    return body


BURST_CALLS = 8
"""Calls of the seeded burst to one country (LV): about 288 EUR together, one threshold."""
BURST_COUNTRY = "LV"
RISKY_KINDS = ("premium-rate", "satellite", "burst")


def risky_day(seed: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of every risky call of ``seed``."""
    rng = keyed_rng(seed, "risky-day")
    return f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"


def _valid_number(rng: random.Random, prefix: str, digits: int, kind: Any = None) -> str:
    """A valid E.164 number: ``prefix`` and ``digits`` random digits (of type ``kind``)."""
    import phonenumbers

    for _ in range(200):
        candidate = prefix + "".join(str(rng.randrange(10)) for _ in range(digits))
        parsed = phonenumbers.parse(candidate)
        if phonenumbers.is_valid_number(parsed) and (
            kind is None or phonenumbers.number_type(parsed) == kind
        ):
            return candidate
    raise RuntimeError(f"no valid number found under {prefix}")  # never: the ranges are valid


def _risky_body(
    call_id: str,
    *,
    caller: str,
    callee: str,
    timestamp: str,
    minutes: int,
    currency: str,
    rate: str,
) -> dict[str, Any]:
    from decimal import Decimal

    debit = Decimal(rate) * minutes
    return {
        "from": {"type": "number", "endpoint": caller},
        "to": {"type": "number", "endpoint": callee},
        "domain": "pstn",
        "callId": call_id,
        "duration": minutes * 60 - 7,
        "status": "FINAL",
        "result": "ANSWERED",
        "reason": "CALLERHANGUP",
        "timestamp": timestamp,
        "custom": "",
        "userRate": {"currencyId": currency, "amount": float(rate)},
        "debit": {"currencyId": currency, "amount": float(debit)},
    }


def risky_records(seed: int) -> list[SeedRecord]:
    """The risky calls of ``seed`` (see the module docstring), deterministic."""
    import phonenumbers

    rng = keyed_rng(seed, "risky")
    day = risky_day(seed)
    out: list[SeedRecord] = []

    def add(kind: str, **fields: Any) -> None:
        call_id = make_call_id(seed, len(out), "risky")
        out.append(SeedRecord(call_id, _risky_body(call_id, **fields), source=f"risky:{kind}"))

    add(
        "premium-rate",
        caller=_valid_number(rng, "+4474", 8),
        callee=_valid_number(rng, "+44909", 7, phonenumbers.PhoneNumberType.PREMIUM_RATE),
        timestamp=f"{day}T01:12:09",
        minutes=12,
        currency="GBP",
        rate="1.50",
    )
    add(
        "satellite",
        caller=_valid_number(rng, "+1415", 7),
        callee=_valid_number(rng, "+8816", 8),
        timestamp=f"{day}T01:31:44",
        minutes=5,
        currency="USD",
        rate="2.80",
    )
    caller = _valid_number(rng, "+4670", 7)
    callees: list[str] = []
    while len(callees) < BURST_CALLS:
        number = _valid_number(rng, "+3712", 7)
        if number not in callees:
            callees.append(number)
    for index, callee in enumerate(callees):
        add(
            "burst",
            caller=caller,
            callee=callee,
            timestamp=f"{day}T03:{index * 7:02d}:{rng.randrange(60):02d}",
            minutes=75 + rng.randrange(11),  # 75-85 min at 0.45: 33.75-38.25 EUR each
            currency="EUR",
            rate="0.45",
        )
    return out


def load_samples(directory: Path = SAMPLES_DIR) -> list[tuple[str, dict[str, Any]]]:
    """The sample bodies of ``events/sinch/`` that carry a call ID, by file name."""
    samples = []
    for path in sorted(directory.glob("*.json")):
        body = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(body, dict) and (body.get("callId") or body.get("callid")):
            samples.append((path.name, body))
    return samples


def record_call_id(body: dict[str, Any]) -> str:
    return str(body.get("callId") or body.get("callid"))


def generate_records(
    seed: int = 1,
    count: int = 300,
    *,
    ongoing_fraction: float = 0.1,
    include_samples: bool = True,
    risky: bool = True,
) -> list[SeedRecord]:
    """``count`` seeded records (samples first), ``ongoing_fraction`` of them ONGOING, then
    (``risky``) the :func:`risky_records` of ``seed``."""
    if count < 0:
        raise ValueError("count must be >= 0")
    if not 0 <= ongoing_fraction <= 1:
        raise ValueError("ongoing_fraction must be between 0 and 1")
    out: list[SeedRecord] = []
    seen: set[str] = set()
    if include_samples:
        for name, body in load_samples()[:count]:
            call_id = record_call_id(body)
            if call_id in seen:
                continue
            seen.add(call_id)
            if body.get("status") == "ONGOING":
                final = dict(body, status="FINAL", result="ANSWERED", reason="CALLEEHANGUP")
                final["duration"] = duration = max(int(body.get("duration") or 0), 60)
                rate = body.get("userRate") or {}
                final["debit"] = {
                    "currencyId": rate.get("currencyId"),
                    "amount": round(float(rate.get("amount") or 0.01) * -(-duration // 60), 4),
                }
                out.append(SeedRecord(call_id, final, ongoing=True, source=f"sample:{name}"))
            else:
                out.append(SeedRecord(call_id, body, source=f"sample:{name}"))
    numbers = _Numbers()
    index = 0
    while len(out) < count:
        body = generated_record(seed, index, numbers)
        ongoing = keyed_rng(seed, index, "ongoing").random() < ongoing_fraction
        if ongoing and body["result"] != "ANSWERED":
            body.update(result="ANSWERED", reason="CALLEEHANGUP", duration=61)
            body["debit"] = {
                "currencyId": (body.get("userRate") or {}).get("currencyId"),
                "amount": round(2 * (body.get("userRate") or {}).get("amount", 0.01), 4),
            }
        out.append(SeedRecord(record_call_id(body), body, ongoing=ongoing))
        index += 1
    if risky:
        out.extend(risky_records(seed))
    return out
