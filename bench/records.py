"""Realistic, varied Get Call bodies for the benchmarks (seeded, reproducible).

Numbers come from libphonenumber's example numbers of many regions and number types with
their last digits randomised, so a few thousand records carry a few thousand distinct numbers
(the phone-analysis cache cannot make the figure trivially fast). Results, reasons, parties
(PSTN, SIP, username, withheld), durations, rates and timestamps vary too.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType

REGIONS = ("US", "GB", "DE", "FR", "SE", "BR", "IN", "SG", "AU", "ES", "IT", "NL", "MX", "JP")
TYPES = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE)
RESULTS = (
    ("ANSWERED", "CALLERHANGUP"),
    ("ANSWERED", "CALLEEHANGUP"),
    ("BUSY", "CALLEEBUSY"),
    ("NOANSWER", "TIMEOUT"),
    ("FAILED", "GENERALERROR"),
    ("FAILED", "BLOCKED"),
    ("NOANSWER", "CALLERHANGUP"),
)
CURRENCIES = ("USD", "EUR", "GBP", "SEK")


def _templates() -> list[str]:
    out = []
    for region in REGIONS:
        for kind in TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                out.append(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    return out


class RecordFactory:
    """Generates Get Call response bodies, deterministic per seed.

    ``pstn_only``: both parties are phone numbers (the common and the costliest case: the
    number analysis runs for both), for measurements of single records such as cold start.
    """

    def __init__(self, seed: int = 7, *, pstn_only: bool = False) -> None:
        self._random = random.Random(seed)
        self._pstn_only = pstn_only
        self._numbers = _templates()

    def number(self) -> str:
        template = self._random.choice(self._numbers)
        tail = "".join(self._random.choice("0123456789") for _ in range(4))
        return template[:-4] + tail

    def _party(self) -> dict[str, str]:
        roll = 0.0 if self._pstn_only else self._random.random()
        if roll < 0.75:
            return {"type": "number", "endpoint": self.number()}
        if roll < 0.87:
            user = self.number()[1:] if self._random.random() < 0.5 else f"agent{self._rand(999)}"
            return {"type": "sip", "endpoint": f"{user}@pbx{self._rand(9)}.example.com"}
        if roll < 0.95:
            return {"type": "username", "endpoint": f"user-{self._rand(99999)}"}
        return {"type": "number", "endpoint": "private"}

    def _rand(self, top: int) -> int:
        return self._random.randint(0, top)

    def record(self, call_id: str | None = None) -> dict[str, Any]:
        r = self._random
        result, reason = r.choice(RESULTS)
        duration = r.randint(1, 3600) if result == "ANSWERED" else 0
        currency = r.choice(CURRENCIES)
        rate = round(r.uniform(0.001, 0.3), 4)
        start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=r.randint(0, 300 * 86400))
        stamp = start.strftime("%Y-%m-%dT%H:%M:%S")
        if r.random() < 0.5:
            stamp += "Z"
        custom = (
            json.dumps({"orderId": r.randint(1, 10**6), "team": r.choice(["sales", "support"])})
            if r.random() < 0.4
            else "{}"
        )
        return {
            "from": self._party(),
            "to": self._party(),
            "domain": r.choice(["pstn", "mxp", "sip"]),
            "callId": call_id or uuid.UUID(int=r.getrandbits(128)).hex,
            "duration": duration,
            "status": "FINAL",
            "result": result,
            "reason": reason,
            "timestamp": stamp,
            "custom": custom,
            "userRate": {"currencyId": currency, "amount": rate},
            "debit": {"currencyId": currency, "amount": round(rate * (duration + 59) // 60, 4)},
        }

    def bodies(self, count: int) -> list[bytes]:
        """``count`` JSON bodies as Sinch sends them."""
        return [json.dumps(self.record()).encode() for _ in range(count)]
