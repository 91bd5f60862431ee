"""Fault injection for the sandbox: latency, error statuses, hangs, malformed bodies.

Two mechanisms, checked in this order for every Get Call request that passed auth:

1. **Scripts** (per call ID): a queue of steps, one consumed per request; when it is empty
   the ID behaves normally again. Steps: ``"ok"``, a status (``"500"``, ``"503"``,
   ``"429"``; ``"429:2"`` = 429 with ``Retry-After: 2``), ``"404"``, ``"hang"``,
   ``"malformed"``. ``["503", "503", "ok"]`` = fail twice, then succeed.
2. **Rates** (:class:`FaultProfile`): fractions of requests answered ``500``/``503``
   (``5xx`` splits evenly), ``429`` (half of them with ``Retry-After: 1``), ``hang``
   (the connection is held ``hang_seconds`` then closed unanswered) and ``malformed``
   (200 with a truncated JSON body). Each draw comes from an RNG keyed by
   ``(seed, call ID, n-th request for that ID)``, so a run is reproducible whatever the
   thread interleaving. ``per_id=True`` keys it by ``(seed, call ID)`` only: an ID that
   draws a fault fails *every* time (a permanently broken call).

The profile text form (CLI ``--faults``, control API) is
``"5xx=0.10,429=0.05,hang=0.02,malformed=0.02"``; keys: ``5xx 500 503 429 429-retry-after
hang malformed``, plus ``per-id=1``.

Latency (:class:`Latency`, CLI ``--latency-ms``): ``100`` (fixed), ``50-150`` (uniform) or
``lognormal:50:400`` (lognormal with median 50 ms and p99 400 ms).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, fields
from typing import Any

FAULT_KINDS = ("500", "503", "429", "429-retry-after", "hang", "malformed")
_Z99 = 2.3263478740408408  # the 99th percentile of the standard normal


def keyed_rng(seed: int, *parts: object) -> random.Random:
    """A ``random.Random`` determined by ``seed`` and ``parts`` only."""
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class Fault:
    """What to do with one request. ``kind`` is ``ok``, ``status``, ``hang`` or ``malformed``."""

    kind: str = "ok"
    status: int = 200
    retry_after: str | None = None

    @property
    def label(self) -> str:
        """A short name for the statistics (``ok``, ``503``, ``429-retry-after``, ``hang``...)."""
        if self.kind == "status":
            return f"{self.status}-retry-after" if self.retry_after else str(self.status)
        return self.kind


OK = Fault()


def parse_step(step: str | int) -> Fault:
    """A script step (see the module docstring) as a :class:`Fault`.

    Raises:
        ValueError: unknown step.
    """
    text = str(step).strip().lower()
    if text in ("ok", "200"):
        return OK
    if text in ("hang", "malformed"):
        return Fault(kind=text)
    status, _, retry_after = text.partition(":")
    if status.isdigit() and 400 <= int(status) <= 599:
        if retry_after and not retry_after.isdigit():
            raise ValueError(f"bad Retry-After in script step {step!r}")
        return Fault(kind="status", status=int(status), retry_after=retry_after or None)
    raise ValueError(
        f"unknown script step {step!r} (ok, 404, 429, 429:<seconds>, 500, 503, hang, malformed)"
    )


@dataclass(frozen=True)
class FaultProfile:
    """Fault rates (fractions of requests, summing to at most 1)."""

    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_429: float = 0.0
    """429 without Retry-After."""
    rate_429_retry_after: float = 0.0
    rate_hang: float = 0.0
    rate_malformed: float = 0.0
    per_id: bool = False
    """Decide once per call ID (a permanently failing ID) instead of per request."""

    def __post_init__(self) -> None:
        rates = [getattr(self, f.name) for f in fields(self) if f.name.startswith("rate_")]
        if any(not 0 <= r <= 1 for r in rates) or sum(rates) > 1 + 1e-9:
            raise ValueError("fault rates must be in [0, 1] and sum to at most 1")

    @classmethod
    def parse(cls, text: str | dict[str, Any] | None) -> FaultProfile:
        """From ``"5xx=0.1,429=0.05,hang=0.02,malformed=0.02"`` or the same as a dict.

        Raises:
            ValueError: unknown key or a value that is not a number.
        """
        if text is None or text == "" or text == {}:
            return cls()
        if isinstance(text, str):
            items: dict[str, Any] = {}
            for part in text.split(","):
                key, eq, value = part.partition("=")
                if not eq:
                    raise ValueError(f"fault profile entry {part!r} is not key=value")
                items[key.strip().lower()] = value.strip()
        else:
            items = {str(k).lower(): v for k, v in text.items()}
        values: dict[str, Any] = {}
        for key, raw in items.items():
            if key in ("per-id", "per_id"):
                values["per_id"] = str(raw).lower() in ("1", "true", "yes")
                continue
            try:
                rate = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"fault rate {key}={raw!r} is not a number") from None
            if key == "5xx":
                values["rate_500"] = values.get("rate_500", 0.0) + rate / 2
                values["rate_503"] = values.get("rate_503", 0.0) + rate / 2
            elif key == "429":
                values["rate_429"] = values.get("rate_429", 0.0) + rate / 2
                values["rate_429_retry_after"] = values.get("rate_429_retry_after", 0.0) + rate / 2
            elif key in (
                "500",
                "503",
                "hang",
                "malformed",
                "429-retry-after",
                "429-no-retry-after",
            ):
                name = {
                    "429-retry-after": "rate_429_retry_after",
                    "429-no-retry-after": "rate_429",
                }.get(key, f"rate_{key}")
                values[name] = values.get(name, 0.0) + rate
            else:
                raise ValueError(
                    f"unknown fault {key!r} (5xx, 500, 503, 429, 429-retry-after, "
                    "429-no-retry-after, hang, malformed, per-id)"
                )
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def draw(self, seed: int, call_id: str, request_number: int) -> Fault:
        """The fault for the ``request_number``-th request (1-based) for ``call_id``."""
        parts: tuple[object, ...] = (call_id, "fault")
        if not self.per_id:
            parts = (*parts, request_number)
        draw = keyed_rng(seed, *parts).random()
        for fault, rate in (
            (Fault("status", 500), self.rate_500),
            (Fault("status", 503), self.rate_503),
            (Fault("status", 429), self.rate_429),
            (Fault("status", 429, retry_after="1"), self.rate_429_retry_after),
            (Fault("hang"), self.rate_hang),
            (Fault("malformed"), self.rate_malformed),
        ):
            if draw < rate:
                return fault
            draw -= rate
        return OK


@dataclass(frozen=True)
class Latency:
    """Added delay per answered request: fixed, uniform or lognormal (milliseconds)."""

    kind: str = "none"
    low_ms: float = 0.0
    high_ms: float = 0.0

    @classmethod
    def parse(cls, text: str | float | None) -> Latency:
        """``100``, ``50-150`` or ``lognormal:<median>:<p99>`` (ms); ``None``/``0``: none.

        Raises:
            ValueError: unparseable, negative, or p99 below the median.
        """
        if text is None:
            return cls()
        value = str(text).strip().lower()
        try:
            if value.startswith("lognormal:"):
                _, median, p99 = value.split(":")
                low, high = float(median), float(p99)
                if low <= 0 or high < low:
                    raise ValueError
                return cls("lognormal", low, high)
            if "-" in value:
                low_text, high_text = value.split("-", 1)
                low, high = float(low_text), float(high_text)
                if low < 0 or high < low:
                    raise ValueError
                return cls("uniform", low, high)
            fixed = float(value)
            if fixed < 0:
                raise ValueError
            return cls("fixed", fixed, fixed) if fixed else cls()
        except ValueError:
            raise ValueError(
                f"bad latency {text!r}: use 100, 50-150 or lognormal:<median>:<p99> (ms)"
            ) from None

    def sample_seconds(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.low_ms / 1000
        if self.kind == "uniform":
            return rng.uniform(self.low_ms, self.high_ms) / 1000
        if self.kind == "lognormal":
            sigma = math.log(self.high_ms / self.low_ms) / _Z99
            return rng.lognormvariate(math.log(self.low_ms), sigma) / 1000
        return 0.0

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.low_ms:g} ms"
        if self.kind == "uniform":
            return f"{self.low_ms:g}-{self.high_ms:g} ms"
        if self.kind == "lognormal":
            return f"lognormal median {self.low_ms:g} ms, p99 {self.high_ms:g} ms"
        return "none"
