"""Per-call risk: each signal, the level as the highest signal's, the policy and its source."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from call_enricher import aws
from call_enricher.enrichment import EnrichedCall, enrich_json
from call_enricher.errors import AwsUnavailableError, ConfigurationError
from call_enricher.policy_source import SsmRiskPolicySource, policy_source
from call_enricher.risk import (
    DEFAULT_POLICY,
    RiskLevel,
    RiskPolicy,
    RiskPolicyError,
    assess,
    load_policy,
    max_level,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CALL_ID = "0123456789abcdef0123456789abcdef"
SE_MOBILE = "+46701740605"
SE_MOBILE_2 = "+46701740606"
GB_PREMIUM = "+449098790123"  # 0909 879 xxxx: a UK premium-rate range
FR_SHARED_COST = "+33884012345"  # 0884: a French shared-cost range
SATELLITE = "+881631000000"  # +881: Global Mobile Satellite System
GB_FIXED = "+442079460123"


def call(
    *,
    to: str | None = SE_MOBILE,
    caller: str | None = SE_MOBILE_2,
    rate: str | None = "0.02",
    debit: str | None = "0.04",
    currency: str | None = "EUR",
    duration: int = 120,
    result: str = "ANSWERED",
    to_type: str = "number",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "callId": CALL_ID,
        "status": "FINAL",
        "result": result,
        "reason": "CALLERHANGUP",
        "duration": duration,
        "timestamp": "2026-11-26T10:00:00Z",
    }
    if to is not None:
        body["to"] = {"type": to_type, "endpoint": to}
    if caller is not None:
        body["from"] = {"type": "number", "endpoint": caller}
    if rate is not None:
        body["userRate"] = {"currencyId": currency, "amount": rate}
    if debit is not None:
        body["debit"] = {"currencyId": currency, "amount": debit}
    return body


def enriched(body: dict[str, Any], policy: RiskPolicy | None = None) -> EnrichedCall:
    return enrich_json(body, enriched_at=NOW, risk_policy=policy)


def codes(body: dict[str, Any], policy: RiskPolicy | None = None) -> dict[str, str]:
    risk = enriched(body, policy).risk
    assert risk is not None
    return {signal.code: signal.level.value for signal in risk.signals}


# -- the plain call ---------------------------------------------------------------------------


def test_a_plain_domestic_mobile_call_has_no_risk() -> None:
    risk = enriched(call()).risk
    assert risk is not None
    assert risk.level is RiskLevel.NONE
    assert risk.signals == ()
    assert risk.policy_digest == DEFAULT_POLICY.digest


def test_risk_is_in_the_public_record_and_its_schema_version_says_so() -> None:
    public = enriched(call(to=GB_PREMIUM, rate="1.5")).model_dump(mode="json", by_alias=True)
    assert public["schemaVersion"] == "1.1.0"
    assert public["risk"]["level"] == "high"
    assert public["risk"]["policyDigest"].startswith("sha256:")
    assert {"code", "level", "detail", "value"} == set(public["risk"]["signals"][0])


def test_a_record_stored_before_risk_existed_still_validates_with_null_risk() -> None:
    public = enriched(call()).model_dump(mode="json", by_alias=True)
    del public["risk"]
    public["schemaVersion"] = "1.0.0"
    assert EnrichedCall.model_validate(public).risk is None


# -- each signal ---------------------------------------------------------------------------------


def test_premium_rate_destination_is_high() -> None:
    assert codes(call(to=GB_PREMIUM, caller="+447400123456")) == {
        "premium-rate-destination": "high"
    }


def test_shared_cost_destination_is_medium() -> None:
    assert codes(call(to=FR_SHARED_COST, caller="+33612345678")) == {
        "shared-cost-destination": "medium"
    }


def test_international_network_destination_names_the_calling_code() -> None:
    risk = enriched(call(to=SATELLITE)).risk
    assert risk is not None
    (network,) = [s for s in risk.signals if s.code == "international-network-destination"]
    assert (network.level, network.value) == (RiskLevel.HIGH, "+881")
    # a +881 number has no country: no cross-border signal beside it
    assert [s.code for s in risk.signals] == ["international-network-destination"]


def test_an_international_network_range_counts_even_when_the_number_is_not_valid() -> None:
    found = codes(call(to="+88351000000", debit="0"))
    assert found == {"international-network-destination": "high"}


def test_high_risk_country_is_off_by_default_and_on_from_the_policy() -> None:
    body = call(to=GB_FIXED, caller="+442079460124", currency="GBP")
    assert codes(body) == {}
    policy = load_policy({"highRiskCountry": {"countries": ["gb"]}})
    risk = enriched(body, policy).risk
    assert risk is not None
    assert [(s.code, s.value) for s in risk.signals] == [("high-risk-country", "GB")]


def test_high_rate_is_a_rate_above_its_currency_cap() -> None:
    risk = enriched(call(rate="0.51", currency="USD")).risk
    assert risk is not None
    (signal,) = risk.signals
    assert (signal.code, signal.level, signal.value) == ("high-rate", "high", "0.51 USD/min")
    assert "0.50 USD/min" in signal.detail
    assert codes(call(rate="0.50", currency="USD")) == {}  # at the cap: not above it
    assert codes(call(rate="9.99", currency="SEK")) == {}  # a currency without a cap


def test_short_call_high_cost_needs_an_answered_short_costly_call() -> None:
    assert codes(call(duration=12, debit="1.20", rate="0.10")) == {"short-call-high-cost": "medium"}
    assert codes(call(duration=31, debit="1.20", rate="0.10")) == {}  # not short
    assert codes(call(duration=12, debit="0.99", rate="0.10")) == {}  # not costly
    assert codes(call(duration=0, debit="1.20", rate="0.10", result="NOANSWER")) == {}


@pytest.mark.parametrize(
    ("number", "value"),
    [("+447700900123", "invalid"), ("+44123", "impossible")],
)
def test_invalid_destination_is_a_billed_call_to_a_bad_number(number: str, value: str) -> None:
    risk = enriched(call(to=number, caller="+447400123456", currency="GBP")).risk
    assert risk is not None
    assert [(s.code, s.level, s.value) for s in risk.signals] == [
        ("invalid-destination", "medium", value)
    ]
    assert codes(call(to=number, debit="0", currency="GBP")) == {}  # not billed: no signal


def test_a_user_name_callee_is_never_an_invalid_destination() -> None:
    assert codes(call(to="alice", to_type="username")) == {}


def test_cross_border_and_withheld_caller_are_low() -> None:
    assert codes(call(to=GB_FIXED)) == {"cross-border": "low"}
    risk = enriched(call(to=GB_FIXED)).risk
    assert risk is not None
    assert risk.signals[0].value == "SE->GB"
    assert codes(call(caller="private")) == {"withheld-caller": "low"}


def test_details_and_values_never_carry_a_number() -> None:
    body = call(to=GB_PREMIUM, caller="private", rate="2.0", debit="2.0", duration=10)
    risk = enriched(body).risk
    assert risk is not None
    text = json.dumps(risk.model_dump(mode="json"))
    assert "9098790123" not in text
    assert "449098" not in text


# -- the level -------------------------------------------------------------------------------------


def test_the_level_is_the_highest_signals_level() -> None:
    body = call(to=GB_FIXED, caller="private", duration=10, debit="1.5", rate="0.2")
    risk = enriched(body).risk
    assert risk is not None
    assert {s.code: s.level.value for s in risk.signals} == {
        "short-call-high-cost": "medium",
        "withheld-caller": "low",
    }
    assert risk.level is RiskLevel.MEDIUM
    assert max_level([]) is RiskLevel.NONE
    assert max_level([RiskLevel.LOW, RiskLevel.HIGH, RiskLevel.MEDIUM]) is RiskLevel.HIGH


def test_premium_rate_at_a_high_rate_is_high_with_both_signals() -> None:
    risk = enriched(call(to=GB_PREMIUM, caller="+447400123456", rate="1.50", currency="GBP")).risk
    assert risk is not None
    assert risk.level is RiskLevel.HIGH
    assert {"premium-rate-destination", "high-rate"} <= {s.code for s in risk.signals}


def test_assess_ignores_a_risk_already_on_the_call() -> None:
    plain = enriched(call())
    flagged = enriched(call(to=GB_PREMIUM, caller="+447400123456"))
    assert assess(flagged.model_copy(update={"risk": plain.risk})) == flagged.risk


# -- the policy ------------------------------------------------------------------------------------


def test_a_policy_changes_levels_thresholds_and_switches_rules_off() -> None:
    policy = load_policy(
        json.dumps(
            {
                "crossBorder": {"enabled": False},
                "premiumRateDestination": {"level": "medium"},
                "highRate": {"caps": {"EUR": "0.01"}},
            }
        )
    )
    found = codes(call(to=GB_PREMIUM, rate="0.02"), policy)
    assert found == {"premium-rate-destination": "medium", "high-rate": "high"}
    # omitted keys keep their defaults; a given map replaces the default one
    assert policy.short_call_high_cost == DEFAULT_POLICY.short_call_high_cost
    assert set(policy.high_rate.caps) == {"EUR"}
    assert policy.digest != DEFAULT_POLICY.digest


def test_policy_amounts_are_exact() -> None:
    policy = load_policy('{"highRate": {"caps": {"USD": 0.1}}}')
    assert policy.high_rate.caps["USD"] == Decimal("0.1")


@pytest.mark.parametrize(
    ("document", "field", "problem"),
    [
        ('{"highRate": {"caps": {"USD": -1}}}', "highRate.caps.USD", "greater than 0"),
        ('{"highRate": {"caps": {"usd": 1}}}', "highRate.caps.usd", "pattern"),
        ('{"highRiskCountry": {"countries": ["GBR"]}}', "highRiskCountry.countries.0", "pattern"),
        ('{"crossBorder": {"level": "severe"}}', "crossBorder.level", "none"),
        ('{"highRiskCountrys": {}}', "highRiskCountrys", "not a known field"),
        ('{"spend": {"number": {"calls": [0]}}}', "spend.number.calls.0", "greater than"),
        ('{"shortCallHighCost": {"maxDurationSeconds": "x"}}', "shortCallHighCost", "integer"),
        ("[1]", "$", "JSON object"),
        ("{not json", "$", "not valid JSON"),
    ],
)
def test_a_bad_policy_is_a_clear_error_naming_the_field(
    document: str, field: str, problem: str
) -> None:
    with pytest.raises(RiskPolicyError) as caught:
        load_policy(document)
    error = caught.value
    assert isinstance(error, ConfigurationError)  # an operator must fix it: retried, then DLQ
    assert error.reason == "configuration-error"
    assert str(error).startswith("invalid risk policy: ")
    assert any(d["field"].startswith(field) and problem in d["problem"] for d in error.details), (
        error.details
    )
    assert field in str(error)


def test_the_default_policy_is_complete_and_round_trips() -> None:
    document = DEFAULT_POLICY.model_dump_json(by_alias=True)
    assert load_policy(document) == DEFAULT_POLICY
    assert DEFAULT_POLICY.high_risk_country.countries == ()
    assert DEFAULT_POLICY.international_network_destination.calling_codes == (870, 881, 882, 883)


# -- where the policy comes from -------------------------------------------------------------------

PARAMETER = "/call-enricher/test/risk-policy"


def test_no_parameter_is_the_default_policy() -> None:
    assert policy_source("")() is DEFAULT_POLICY


def test_the_policy_is_read_from_ssm_and_cached(aws_mock: None) -> None:
    ssm = aws.client("ssm")
    ssm.put_parameter(
        Name=PARAMETER, Type="String", Value='{"highRiskCountry": {"countries": ["CU"]}}'
    )
    source = SsmRiskPolicySource(PARAMETER, max_age_seconds=300)
    first = source()
    assert first.high_risk_country.countries == ("CU",)
    ssm.put_parameter(Name=PARAMETER, Type="String", Value="{}", Overwrite=True)
    assert source() is first  # cached for max_age_seconds


def test_a_bad_policy_in_ssm_is_an_operator_error(aws_mock: None) -> None:
    aws.client("ssm").put_parameter(
        Name=PARAMETER, Type="String", Value='{"highRate": {"caps": {"USD": "zero"}}}'
    )
    with pytest.raises(RiskPolicyError, match=r"highRate\.caps\.USD"):
        SsmRiskPolicySource(PARAMETER)()


def test_a_missing_parameter_is_a_configuration_error(aws_mock: None) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        SsmRiskPolicySource(PARAMETER)()


def test_an_unreachable_ssm_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def get_parameter(self, **_: Any) -> Any:
            raise OSError("connection refused")

    with pytest.raises(AwsUnavailableError):
        SsmRiskPolicySource(PARAMETER, client=Broken())()


# -- the service assesses under the policy its source gives ----------------------------------------


def test_the_service_assesses_each_call_under_the_policy_of_its_source() -> None:
    from tests.unit.test_service import OTHER_ID, FakeStore, message, run, service

    # Given a policy that flags the UK (the sample call goes from the US to the UK)
    store = FakeStore()
    svc = service(store=store)
    svc.risk_policy = lambda: load_policy({"highRiskCountry": {"countries": ["GB"]}})
    # When the call is enriched
    run(svc, message("m-1", OTHER_ID))
    # Then its stored record carries the signal, and the policy's digest
    record = store.items[OTHER_ID].record
    assert record is not None
    assert record["risk"]["level"] == "high"
    assert [s["code"] for s in record["risk"]["signals"]] == ["high-risk-country", "cross-border"]


def test_a_bad_policy_is_retried_never_stored() -> None:
    from call_enricher.service import Disposition
    from tests.unit.test_service import OTHER_ID, FakeStore, message, run, service

    def broken() -> RiskPolicy:
        return load_policy('{"highRate": 1}')

    store = FakeStore()
    svc = service(store=store)
    svc.risk_policy = broken
    report = run(svc, message("m-1", OTHER_ID))
    assert report.results["m-1"].disposition is Disposition.RETRY
    assert store.requests == []
