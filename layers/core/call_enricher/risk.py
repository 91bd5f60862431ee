"""Per-call fraud and cost risk: one policy, one pure assessment (no I/O, no clock).

:func:`assess` looks at an enriched call (its parties, outcome, time and money) and answers
a :class:`Risk`: ``level`` (``none`` < ``low`` < ``medium`` < ``high``) and ``signals``,
each ``{code, level, detail, value}``. The level is the highest level of the signals, or
``none`` without any. Details and values never carry a phone number or a user name.

Signals (their level and thresholds are the :class:`RiskPolicy`'s; defaults in brackets)
    ``premium-rate-destination`` [high]
        the callee is a valid number of type ``premium-rate`` (libphonenumber).
    ``shared-cost-destination`` [medium]
        the callee is a valid number of type ``shared-cost``.
    ``international-network-destination`` [high]
        the callee's calling code is a satellite or international-network one
        (``callingCodes``, [870, 881, 882, 883]), valid number or not; value ``+882``.
    ``high-risk-country`` [high]
        the callee's country is in ``countries`` (ISO 3166-1 alpha-2; empty by default).
    ``high-rate`` [high]
        ``money.ratePerMinute`` is above the cap for its currency (``caps``: USD 0.50,
        EUR 0.50, GBP 0.40); a currency without a cap is not checked.
    ``short-call-high-cost`` [medium]
        answered, at most ``maxDurationSeconds`` long (30) and ``money.debit`` at least
        ``minDebit`` of its currency (USD 1.00, EUR 1.00, GBP 0.80).
    ``invalid-destination`` [medium]
        a billed call (debit > 0) to a PSTN number (or a SIP address whose user part is a
        number) that is not valid; value ``invalid`` (possible but not assigned) or
        ``impossible`` (wrong length for its country).
    ``cross-border`` [low, informational]
        caller and callee numbers are in two different countries; value ``SE->GB``.
    ``withheld-caller`` [low, informational]
        the caller's number is withheld (``private``, ``anonymous``...).

Every rule has ``enabled`` (true) and ``level``; a disabled rule yields no signal.

The policy
    :data:`DEFAULT_POLICY` ships with the library. An override is a JSON object
    (:func:`load_policy`, e.g. from the SSM parameter named by ``RISK_POLICY_PARAMETER``) in
    the camelCase form of :class:`RiskPolicy`: every key is optional and an omitted one keeps
    its default (objects are merged key by key; a map such as ``caps`` or a list such as
    ``countries``, when given, replaces the default one entirely). Unknown keys are errors,
    so a typo is never a silent default. Amounts are exact decimals (JSON numbers or
    strings). The ``spend`` section holds the daily spend watch's thresholds (see
    :mod:`call_enricher.spend`). Example::

        {"highRiskCountry": {"countries": ["CU", "LV"]},
         "highRate": {"caps": {"USD": "0.25"}},
         "crossBorder": {"enabled": false},
         "spend": {"country": {"spend": {"USD": ["100", "500"]}, "calls": [200]}}}

    ``Risk.policyDigest`` names the policy that assessed a call (a digest of its content),
    so two records assessed under different policies can be told apart. A stored version is
    not re-assessed when the policy changes; the next version of the call is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from call_enricher.errors import ConfigurationError
from call_enricher.model import format_decimal, loads_exact

if TYPE_CHECKING:
    from call_enricher.enrichment import Amount, EnrichedCall, PhoneDetails

__all__ = [
    "DEFAULT_POLICY",
    "Risk",
    "RiskLevel",
    "RiskPolicy",
    "RiskPolicyError",
    "RiskSignal",
    "SignalCode",
    "SpendLimits",
    "SpendPolicy",
    "assess",
    "load_policy",
    "max_level",
]


class RiskLevel(StrEnum):
    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RANKS[self]


_RANKS: Final = {RiskLevel.NONE: 0, RiskLevel.LOW: 1, RiskLevel.MEDIUM: 2, RiskLevel.HIGH: 3}


class SignalCode(StrEnum):
    PREMIUM_RATE_DESTINATION = "premium-rate-destination"
    SHARED_COST_DESTINATION = "shared-cost-destination"
    INTERNATIONAL_NETWORK_DESTINATION = "international-network-destination"
    HIGH_RISK_COUNTRY = "high-risk-country"
    HIGH_RATE = "high-rate"
    SHORT_CALL_HIGH_COST = "short-call-high-cost"
    INVALID_DESTINATION = "invalid-destination"
    CROSS_BORDER = "cross-border"
    WITHHELD_CALLER = "withheld-caller"


def max_level(levels: Any) -> RiskLevel:
    """The highest of ``levels`` (``none`` for none)."""
    return max(levels, key=lambda level: level.rank, default=RiskLevel.NONE)


# --- the assessment (part of the enriched record) ----------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


class RiskSignal(_Model):
    code: str = Field(description="Stable kebab-case code, e.g. premium-rate-destination")
    level: RiskLevel = Field(description="The level the policy gives this signal")
    detail: str = Field(description="Short human explanation (English; never a number)")
    value: str | None = Field(description="What triggered it, e.g. '+882', '2.5 USD/min'")


class Risk(_Model):
    """The call's risk: the highest level of its signals (``none`` without any)."""

    level: RiskLevel
    signals: tuple[RiskSignal, ...] = ()
    policy_digest: str = Field(description="Digest of the policy that assessed the call")


# --- the policy ---------------------------------------------------------------------------------

Currency = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Z]{3}$")]
Country = Annotated[
    str,
    BeforeValidator(lambda value: value.strip().upper() if isinstance(value, str) else value),
    StringConstraints(pattern=r"^[A-Z]{2}$"),
]
PositiveAmount = Annotated[
    Decimal,
    Field(gt=0, allow_inf_nan=False),
    PlainSerializer(format_decimal, return_type=str, when_used="json"),
]


class _PolicyModel(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


class PremiumRateRule(_PolicyModel):
    enabled: bool = True
    level: RiskLevel = RiskLevel.HIGH


class SharedCostRule(_PolicyModel):
    enabled: bool = True
    level: RiskLevel = RiskLevel.MEDIUM


class InternationalNetworkRule(_PolicyModel):
    enabled: bool = True
    level: RiskLevel = RiskLevel.HIGH
    calling_codes: tuple[Annotated[int, Field(ge=1, le=999)], ...] = (870, 881, 882, 883)


class HighRiskCountryRule(_PolicyModel):
    enabled: bool = True
    level: RiskLevel = RiskLevel.HIGH
    countries: tuple[Country, ...] = ()


class HighRateRule(_PolicyModel):
    enabled: bool = True
    level: RiskLevel = RiskLevel.HIGH
    caps: dict[Currency, PositiveAmount] = Field(
        default_factory=lambda: {
            "USD": Decimal("0.50"),
            "EUR": Decimal("0.50"),
            "GBP": Decimal("0.40"),
        },
        description="Highest normal rate per minute, per currency",
    )


class ShortCallHighCostRule(_PolicyModel):
    enabled: bool = True
    level: RiskLevel = RiskLevel.MEDIUM
    max_duration_seconds: Annotated[int, Field(ge=1, le=86_400)] = 30
    min_debit: dict[Currency, PositiveAmount] = Field(
        default_factory=lambda: {
            "USD": Decimal("1.00"),
            "EUR": Decimal("1.00"),
            "GBP": Decimal("0.80"),
        }
    )


class InvalidDestinationRule(_PolicyModel):
    enabled: bool = True
    level: RiskLevel = RiskLevel.MEDIUM


class CrossBorderRule(_PolicyModel):
    enabled: bool = True
    level: RiskLevel = RiskLevel.LOW


class WithheldCallerRule(_PolicyModel):
    enabled: bool = True
    level: RiskLevel = RiskLevel.LOW


class SpendLimits(_PolicyModel):
    """Daily thresholds of one key kind: spend per currency, and call count."""

    spend: dict[Currency, tuple[PositiveAmount, ...]] = Field(default_factory=dict)
    calls: tuple[Annotated[int, Field(ge=1)], ...] = ()


class SpendPolicy(_PolicyModel):
    """Thresholds of the daily spend watch, per key kind (UTC day)."""

    total: SpendLimits = Field(
        default_factory=lambda: SpendLimits(
            spend={"USD": (Decimal(1000),), "EUR": (Decimal(1000),), "GBP": (Decimal(800),)},
            calls=(10_000,),
        )
    )
    country: SpendLimits = Field(
        default_factory=lambda: SpendLimits(
            spend={"USD": (Decimal(250),), "EUR": (Decimal(250),), "GBP": (Decimal(200),)},
            calls=(1_000,),
        )
    )
    number: SpendLimits = Field(
        default_factory=lambda: SpendLimits(
            spend={"USD": (Decimal(50),), "EUR": (Decimal(50),), "GBP": (Decimal(40),)},
            calls=(100,),
        )
    )

    def limits(self, kind: str) -> SpendLimits:
        found: SpendLimits = getattr(self, kind)
        return found


class RiskPolicy(_PolicyModel):
    """Levels and thresholds of every signal, and the spend watch's thresholds."""

    premium_rate_destination: PremiumRateRule = Field(default_factory=PremiumRateRule)
    shared_cost_destination: SharedCostRule = Field(default_factory=SharedCostRule)
    international_network_destination: InternationalNetworkRule = Field(
        default_factory=InternationalNetworkRule
    )
    high_risk_country: HighRiskCountryRule = Field(default_factory=HighRiskCountryRule)
    high_rate: HighRateRule = Field(default_factory=HighRateRule)
    short_call_high_cost: ShortCallHighCostRule = Field(default_factory=ShortCallHighCostRule)
    invalid_destination: InvalidDestinationRule = Field(default_factory=InvalidDestinationRule)
    cross_border: CrossBorderRule = Field(default_factory=CrossBorderRule)
    withheld_caller: WithheldCallerRule = Field(default_factory=WithheldCallerRule)
    spend: SpendPolicy = Field(default_factory=SpendPolicy)

    @cached_property
    def digest(self) -> str:
        """``sha256:`` + 16 hex digits of the policy's canonical JSON."""
        canonical = json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()
        return "sha256:" + hashlib.sha256(canonical).hexdigest()[:16]


DEFAULT_POLICY: Final = RiskPolicy()


class RiskPolicyError(ConfigurationError):
    """The risk policy document is not valid (``details`` name each bad field)."""


def load_policy(document: str | bytes | bytearray | Mapping[str, Any]) -> RiskPolicy:
    """A :class:`RiskPolicy` from a JSON document (text or decoded), over the defaults.

    Raises :class:`RiskPolicyError` (an operator must fix it) whose message names every bad
    field by its dotted camelCase path, e.g. ``highRate.caps.USD: Input should be greater
    than 0``.
    """
    if isinstance(document, str | bytes | bytearray):
        try:
            decoded: Any = loads_exact(document)
        except (ValueError, RecursionError):
            raise _policy_error([{"field": "$", "problem": "is not valid JSON"}]) from None
    else:
        decoded = document
    if not isinstance(decoded, Mapping):
        raise _policy_error([{"field": "$", "problem": "must be a JSON object"}])
    try:
        return RiskPolicy.model_validate(decoded)
    except ValidationError as exc:
        problems = [
            {
                "field": ".".join(map(str, error["loc"])) or "$",
                "problem": "is not a known field (a typo?)"
                if error["type"] == "extra_forbidden"
                else error["msg"],
            }
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise _policy_error(problems) from None


def _policy_error(problems: list[dict[str, str]]) -> RiskPolicyError:
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return RiskPolicyError(f"invalid risk policy: {summary}", details=problems)


# --- assess ---------------------------------------------------------------------------------------

_NUMBER_KINDS: Final = frozenset({"pstn", "sip"})


def assess(call: EnrichedCall, policy: RiskPolicy = DEFAULT_POLICY) -> Risk:
    """The risk of ``call`` under ``policy`` (its ``risk`` field, if any, is ignored). Pure."""
    signals: list[RiskSignal] = []

    def add(rule: Any, code: SignalCode, detail: str, value: str | None) -> None:
        if rule.enabled:
            signal = RiskSignal(code=code.value, level=rule.level, detail=detail, value=value)
            signals.append(signal)

    callee = call.parties.to
    caller = call.parties.from_
    phone = callee.phone if callee is not None else None
    debit = _positive(call.money.debit)

    if phone is not None and phone.valid:
        if phone.number_type == "premium-rate":
            add(
                policy.premium_rate_destination,
                SignalCode.PREMIUM_RATE_DESTINATION,
                "the callee is a premium-rate number",
                phone.number_type,
            )
        elif phone.number_type == "shared-cost":
            add(
                policy.shared_cost_destination,
                SignalCode.SHARED_COST_DESTINATION,
                "the callee is a shared-cost number",
                phone.number_type,
            )
    network = policy.international_network_destination
    if phone is not None and phone.calling_code in network.calling_codes:
        add(
            network,
            SignalCode.INTERNATIONAL_NETWORK_DESTINATION,
            f"the callee is in a satellite or international network range (+{phone.calling_code})",
            f"+{phone.calling_code}",
        )
    countries = policy.high_risk_country
    if phone is not None and phone.country is not None and phone.country in countries.countries:
        add(
            countries,
            SignalCode.HIGH_RISK_COUNTRY,
            f"the callee's country {phone.country} is on the high-risk list",
            phone.country,
        )
    _rate_signal(call, policy, add)
    short = policy.short_call_high_cost
    duration = call.time.duration_seconds
    if (
        call.outcome.answered
        and duration is not None
        and duration <= short.max_duration_seconds
        and debit is not None
    ):
        currency, amount = debit
        floor = short.min_debit.get(currency)
        if floor is not None and amount >= floor:
            add(
                short,
                SignalCode.SHORT_CALL_HIGH_COST,
                f"an answered call of {duration} s cost {format_decimal(amount)} {currency}"
                f" (at least {format_decimal(floor)} {currency} in at most"
                f" {short.max_duration_seconds} s)",
                f"{format_decimal(amount)} {currency} in {duration} s",
            )
    if (
        callee is not None
        and callee.kind.value in _NUMBER_KINDS
        and phone is not None
        and not phone.valid
        and _billed(call.money.debit)
    ):
        what = "invalid" if phone.possible else "impossible"
        add(
            policy.invalid_destination,
            SignalCode.INVALID_DESTINATION,
            f"a billed call to an {what} number",
            what,
        )
    caller_country = _country(caller.phone if caller is not None else None)
    callee_country = _country(phone)
    if caller_country and callee_country and caller_country != callee_country:
        add(
            policy.cross_border,
            SignalCode.CROSS_BORDER,
            f"the caller ({caller_country}) and the callee ({callee_country}) are in"
            " different countries",
            f"{caller_country}->{callee_country}",
        )
    if caller is not None and caller.kind.value == "withheld":
        add(
            policy.withheld_caller,
            SignalCode.WITHHELD_CALLER,
            "the caller's number is withheld",
            (caller.endpoint or "").strip().lower() or "withheld",
        )
    return Risk(
        level=max_level(signal.level for signal in signals),
        signals=tuple(signals),
        policy_digest=policy.digest,
    )


def _rate_signal(call: EnrichedCall, policy: RiskPolicy, add: Any) -> None:
    rule = policy.high_rate
    rate = call.money.rate_per_minute
    if rate is None or rate.currency is None or rate.amount is None:
        return
    cap = rule.caps.get(rate.currency)
    if cap is None or rate.amount <= cap:
        return
    shown = format_decimal(rate.amount)
    add(
        rule,
        SignalCode.HIGH_RATE,
        f"the rate of {shown} {rate.currency}/min is above the cap of"
        f" {format_decimal(cap)} {rate.currency}/min",
        f"{shown} {rate.currency}/min",
    )


def _positive(amount: Amount | None) -> tuple[str, Decimal] | None:
    """``(currency, amount)`` of a debit above zero in a known currency, else ``None``."""
    if amount is None or amount.currency is None or amount.amount is None or amount.amount <= 0:
        return None
    return amount.currency, amount.amount


def _billed(amount: Amount | None) -> bool:
    return amount is not None and amount.amount is not None and amount.amount > 0


def _country(phone: PhoneDetails | None) -> str | None:
    return phone.country if phone is not None and phone.valid else None
