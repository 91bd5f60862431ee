"""The daily spend watch: deltas from stream images, exactly once per stream record, and one
``Spend Threshold Crossed`` per key, day and threshold (the spend table in moto)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from call_enricher import aws, errors
from call_enricher.enrichment import enrich_json
from call_enricher.events import DETAIL_TYPE_SPEND_THRESHOLD_CROSSED, SpendThresholdCrossedDetail
from call_enricher.outbox import OutboxPublisher, StreamChange, build_spend_watch
from call_enricher.risk import RiskPolicy, load_policy
from call_enricher.settings import Settings
from call_enricher.spend import (
    STALE_CLAIM_SECONDS,
    Crossing,
    SecretNumberKey,
    SpendStore,
    SpendWatch,
    number_key,
    spend_deltas,
)
from call_enricher.state import StoredCall
from tests.unit.test_outbox import FakePublisher, FakeRecorder

SPEND_TABLE = "test-spend"
KEY = b"0123456789abcdef-test-key"
DAY = "2026-11-26"
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
GB_MOBILE = "+447400123456"

# Thresholds of the tests: per country 3 calls and 1.00 USD; per number 5 calls; no total.
POLICY = load_policy(
    {
        "spend": {
            "total": {"spend": {}, "calls": []},
            "country": {"spend": {"USD": ["1.00"]}, "calls": [3]},
            "number": {"spend": {}, "calls": [5]},
        }
    }
)


@pytest.fixture
def spend_table(aws_mock: None) -> str:
    """The spend table as the template should define it: partition key ``pk`` (string)."""
    aws.client("dynamodb").create_table(
        TableName=SPEND_TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return SPEND_TABLE


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(hours=2)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(spend_table: str, clock: Clock) -> SpendStore:
    return SpendStore(spend_table, now=clock)


def watch(store: SpendStore, clock: Clock, policy: RiskPolicy = POLICY) -> SpendWatch:
    return SpendWatch(store, number_key=lambda: KEY, policy=lambda: policy, now=clock)


def stored(
    call_id: str,
    version: int = 1,
    *,
    to: str = GB_MOBILE,
    debit: str = "0.40",
    status: str = "FINAL",
    currency: str = "USD",
) -> StoredCall:
    body = {
        "callId": call_id,
        "status": status,
        "result": "ANSWERED" if status == "FINAL" else "N/A",
        "reason": "CALLERHANGUP" if status == "FINAL" else "N/A",
        "duration": 60,
        "timestamp": f"{DAY}T09:00:00Z",
        "from": {"type": "number", "endpoint": "+12125550123"},
        "to": {"type": "number", "endpoint": to},
        "userRate": {"currencyId": currency, "amount": debit},
        "debit": {"currencyId": currency, "amount": debit},
    }
    record = enrich_json(body, enriched_at=T0).model_dump(mode="json", by_alias=True)
    return StoredCall(
        call_id=call_id,
        version=version,
        status=status,
        fingerprint=record["provenance"]["fingerprint"],
        record=record,
        created_at=T0,
        updated_at=T0,
    )


def change(seq: int, old: StoredCall | None, new: StoredCall | None) -> StreamChange:
    item_key = (new or old).call_id if (new or old) else "?"  # type: ignore[union-attr]
    return StreamChange(key=f"{seq:021d}", item_key=item_key, old=old, new=new)


def call_id(index: int) -> str:
    return f"{index:032x}"


def burst(count: int, *, start: int = 0, to: str = GB_MOBILE) -> list[StreamChange]:
    return [change(start + i, None, stored(call_id(start + i), to=to)) for i in range(count)]


def figures(store: SpendStore, kind: str, key: str) -> Any:
    return store.read([(DAY, kind, key)])[(DAY, kind, key)]


def crossings_published(publisher: FakePublisher) -> list[dict[str, Any]]:
    return [
        event.detail
        for request in publisher.requests
        for event in request
        if event.detail_type == DETAIL_TYPE_SPEND_THRESHOLD_CROSSED
    ]


def outbox(publisher: FakePublisher, spend: SpendWatch | None) -> OutboxPublisher:
    return OutboxPublisher(publisher, FakeRecorder(), spend=spend)  # type: ignore[arg-type]


# -- pure: what a stream record adds ------------------------------------------------------------


def test_a_new_final_version_counts_one_call_and_its_debit_under_three_keys() -> None:
    deltas = spend_deltas(None, stored(call_id(1), debit="0.40"), key=KEY)
    by_kind = {delta.kind: delta for delta in deltas}
    assert set(by_kind) == {"total", "country", "number"}
    assert by_kind["total"].key == "all"
    assert by_kind["country"].key == "GB"
    assert by_kind["number"].key == number_key(GB_MOBILE, KEY)
    assert all(d.calls == 1 and d.spend == {"USD": Decimal("0.40")} for d in deltas)


def test_the_number_key_is_a_keyed_hash_never_the_number() -> None:
    key = number_key(GB_MOBILE, KEY)
    assert len(key) == 32
    assert "7400123456" not in key
    assert key != number_key(GB_MOBILE, b"another-key-of-16-chars")


def test_a_corrected_final_adds_only_the_difference() -> None:
    v1, v2 = stored(call_id(1), 1, debit="1.00"), stored(call_id(1), 2, debit="1.50")
    deltas = spend_deltas(v1, v2, key=KEY)
    assert {(d.kind, d.calls, d.spend["USD"]) for d in deltas} == {
        ("total", 0, Decimal("0.50")),
        ("country", 0, Decimal("0.50")),
        ("number", 0, Decimal("0.50")),
    }


def test_a_correction_to_another_country_moves_the_call() -> None:
    v1, v2 = stored(call_id(1), 1), stored(call_id(1), 2, to="+46701740605")
    deltas = {(d.kind, d.key): d.calls for d in spend_deltas(v1, v2, key=KEY)}
    assert deltas[("country", "GB")] == -1
    assert deltas[("country", "SE")] == 1
    assert ("total", "all") not in deltas  # same debit, same day: the total does not move


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (None, None),
        (stored(call_id(1)), None),  # removed by its TTL: never un-counted
        (stored(call_id(1)), stored(call_id(1))),  # the same version (e.g. a failure noted)
        (None, stored(call_id(1), status="ONGOING")),  # not final yet
        (None, StoredCall(call_id=call_id(1), state="failed")),  # never enriched
    ],
    ids=["nothing", "ttl-delete", "same-version", "ongoing", "failure-only"],
)
def test_changes_that_add_nothing(old: StoredCall | None, new: StoredCall | None) -> None:
    assert spend_deltas(old, new, key=KEY) == []


def test_a_satellite_destination_counts_under_its_calling_code() -> None:
    deltas = spend_deltas(None, stored(call_id(1), to="+881631000000"), key=KEY)
    assert {d.key for d in deltas if d.kind == "country"} == {"+881"}


def test_the_key_is_only_asked_for_when_a_number_is_counted() -> None:
    def no_key() -> bytes:
        raise AssertionError("not needed")

    assert spend_deltas(None, stored(call_id(1), status="ONGOING"), key=no_key) == []


# -- the store: exactly once per stream record ----------------------------------------------------


def test_a_redelivered_stream_record_adds_nothing_twice(store: SpendStore, clock: Clock) -> None:
    spend = watch(store, clock)
    record = change(1, None, stored(call_id(1), debit="0.40"))
    spend.observe(record)
    spend.observe(record)  # the same stream record again (a retried batch)
    again = change(7, None, stored(call_id(1), debit="0.40"))  # replayed: another sequence
    spend.observe(again)
    gb = figures(store, "country", "GB")
    assert (gb.calls, gb.spend) == (1, {"USD": Decimal("0.40")})
    assert figures(store, "total", "all").calls == 1


def test_a_corrected_final_version_adds_only_its_difference(
    store: SpendStore, clock: Clock
) -> None:
    spend = watch(store, clock)
    v1, v2 = stored(call_id(1), 1, debit="1.00"), stored(call_id(1), 2, debit="1.50")
    spend.observe(change(1, None, v1))
    spend.observe(change(2, v1, v2))
    spend.observe(change(2, v1, v2))  # redelivered
    for kind, key in (("total", "all"), ("country", "GB"), ("number", number_key(GB_MOBILE, KEY))):
        figure = figures(store, kind, key)
        assert (figure.calls, figure.spend) == (1, {"USD": Decimal("1.50")}), kind


def test_records_applied_out_of_order_still_count_once_each(
    store: SpendStore, clock: Clock
) -> None:
    spend = watch(store, clock)
    v1, v2 = stored(call_id(1), 1, debit="1.00"), stored(call_id(1), 2, debit="1.50")
    spend.observe(change(2, v1, v2))  # v2's record first (v1's came back from a DLQ)
    spend.observe(change(1, None, v1))
    gb = figures(store, "country", "GB")
    assert (gb.calls, gb.spend) == (1, {"USD": Decimal("1.50")})


def test_an_aws_failure_is_a_transient_error(clock: Clock, aws_mock: None) -> None:
    spend = watch(SpendStore("no-such-table", now=clock), clock)
    with pytest.raises(errors.AwsUnavailableError):
        spend.observe(change(1, None, stored(call_id(1))))


# -- crossings through the outbox publisher --------------------------------------------------------


def test_a_burst_to_one_country_crosses_once(store: SpendStore, clock: Clock) -> None:
    # Given 6 calls to one UK number at 0.40 USD: the country's 3-call and 1.00 USD
    # thresholds are reached by the 3rd call, the number's 5-call one by the 5th
    publisher = FakePublisher()
    publisher_outbox = outbox(publisher, watch(store, clock))
    # When the stream delivers them in two batches
    first = publisher_outbox.publish(burst(4))
    second = publisher_outbox.publish(burst(2, start=4))
    # Then each threshold is announced once, by the call that reached it
    assert first.failed == {}
    assert second.failed == {}
    details = crossings_published(publisher)
    assert sorted(d["eventId"] for d in details) == [
        f"spend:{DAY}:country:GB:USD-1",
        f"spend:{DAY}:country:GB:calls-3",
        f"spend:{DAY}:number:{number_key(GB_MOBILE, KEY)}:calls-5",
    ]
    by_id = {d["eventId"]: d for d in details}
    calls = by_id[f"spend:{DAY}:country:GB:calls-3"]
    assert (calls["metric"], calls["value"], calls["calls"]) == ("calls", "3", 3)
    assert calls["callId"] == call_id(2)
    assert calls["spend"] == {"USD": "1.20"}
    money = by_id[f"spend:{DAY}:country:GB:USD-1"]
    assert (money["currency"], money["threshold"], money["value"]) == ("USD", "1.00", "1.20")
    SpendThresholdCrossedDetail.model_validate(money)
    assert first.by_type[DETAIL_TYPE_SPEND_THRESHOLD_CROSSED] == 2
    assert second.by_type[DETAIL_TYPE_SPEND_THRESHOLD_CROSSED] == 1
    # and each crossing went out in the same PutEvents as its call's own event
    first_request = next(r for r in publisher.requests if any("spend:" in e.key for e in r))
    assert f"{call_id(2)}:v1" in [event.key for event in first_request]


def test_a_redelivered_batch_announces_nothing_again(store: SpendStore, clock: Clock) -> None:
    publisher = FakePublisher()
    spend = watch(store, clock)
    batch = burst(3)
    outbox(publisher, spend).publish(batch)
    outbox(publisher, spend).publish(batch)  # the whole batch redelivered
    outbox(publisher, watch(store, clock)).publish(batch)  # and by a fresh process
    assert len(crossings_published(publisher)) == 2
    assert figures(store, "country", "GB").calls == 3


def test_a_crossing_whose_publication_failed_is_announced_by_the_retry_and_only_by_it(
    store: SpendStore, clock: Clock
) -> None:
    # Given the crossing's PutEvents fails the first time
    crossing_id = f"spend:{DAY}:country:GB:calls-3"
    failing = FakePublisher(fail={crossing_id: errors.AwsUnavailableError("throttled")})
    spend = watch(store, clock)
    report = outbox(failing, spend).publish(burst(3))
    assert set(report.failed) == {f"{2:021d}"}  # the record that crossed is retried
    # When another call's record comes first (another shard), then the retry
    publisher = FakePublisher()
    outbox(publisher, spend).publish(burst(1, start=10))
    assert crossings_published(publisher) == []  # claimed by the failed record, not this one
    outbox(publisher, spend).publish(burst(3)[2:])
    # Then the retried record announces it, with the same ID, once
    assert [d["eventId"] for d in crossings_published(publisher)] == [crossing_id]
    outbox(publisher, spend).publish(burst(3)[2:])
    assert len(crossings_published(publisher)) == 1


def test_a_claim_left_by_a_dropped_record_is_taken_over_when_stale(
    store: SpendStore, clock: Clock
) -> None:
    crossing = Crossing(DAY, "country", "GB", "calls", None, Decimal(3), Decimal(3))
    assert store.claim(crossing, "seq-1")
    assert not store.claim(crossing, "seq-2")
    clock.now += timedelta(seconds=STALE_CLAIM_SECONDS + 1)
    assert store.claim(crossing, "seq-2")
    store.mark_announced(crossing)
    clock.now += timedelta(days=1)
    assert not store.claim(crossing, "seq-2")  # published: never again
    assert figures(store, "country", "GB").announced == frozenset({"calls-3"})


def test_a_spend_watch_failure_stops_the_batch_at_that_record(clock: Clock, aws_mock: None) -> None:
    publisher = FakePublisher()
    spend = watch(SpendStore("no-such-table", now=clock), clock)
    report = outbox(publisher, spend).publish(burst(2))
    assert set(report.failed) == {f"{0:021d}", f"{1:021d}"}
    assert publisher.requests == []  # nothing goes out ahead of a change not yet counted


def test_without_a_spend_table_the_publisher_has_no_spend_watch() -> None:
    assert build_spend_watch(Settings()) is None
    publisher = FakePublisher()
    report = outbox(publisher, None).publish(burst(3))
    assert report.by_type == {"Call Enriched": 3}


def test_a_spend_table_without_a_number_key_is_a_configuration_error() -> None:
    with pytest.raises(errors.ConfigurationError, match="SPEND_NUMBER_KEY_SECRET_ID"):
        build_spend_watch(Settings(SPEND_TABLE_NAME=SPEND_TABLE))


# -- the number key --------------------------------------------------------------------------------


@pytest.fixture
def secret(aws_mock: None) -> str:
    aws.client("secretsmanager").create_secret(
        Name="test/spend-number-key", SecretString="a-long-random-test-key-0123456789"
    )
    return "test/spend-number-key"


def test_the_number_key_comes_from_its_secret(secret: str) -> None:
    assert SecretNumberKey(secret)() == b"a-long-random-test-key-0123456789"


def test_a_short_number_key_is_refused(aws_mock: None) -> None:
    aws.client("secretsmanager").create_secret(Name="short", SecretString="tiny")
    with pytest.raises(errors.ConfigurationError, match="at least 16"):
        SecretNumberKey("short")()


def test_the_watch_built_from_settings_counts_through_moto(
    spend_table: str, secret: str, clock: Clock
) -> None:
    spend = build_spend_watch(
        Settings(SPEND_TABLE_NAME=spend_table, SPEND_NUMBER_KEY_SECRET_ID=secret)
    )
    assert spend is not None
    spend.observe(change(1, None, stored(call_id(1))))
    key = number_key(GB_MOBILE, b"a-long-random-test-key-0123456789")
    assert figures(SpendStore(spend_table), "number", key).calls == 1
    items = aws.client("dynamodb").scan(TableName=spend_table)["Items"]  # the test's own look
    assert "7400123456" not in json.dumps(items)
