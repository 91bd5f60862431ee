"""The chaos run, small: a few hundred call IDs through the local stack under every fault.

The same code as ``make chaos`` (``call_enricher_tools.chaos``): moto server built from the
template, the SQS poller with its redrive to the DLQ and the real queue handler, the stream
poller with the real stream publisher (the table is the outbox), a fault-injecting Sinch
stand-in over HTTP, throttled DynamoDB writes and failing or throttled ``PutEvents`` calls
of the publisher. Seeded: the same seed injects the same faults into the same call IDs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from call_enricher_tools.chaos import (
    CHAOS_CREDENTIALS,
    ChaosConfig,
    ChaosReport,
    ChaosSinch,
    Observed,
    call_ids,
    run_chaos,
)

pytestmark = pytest.mark.slow

IDS = 300
SEED = 20261126
# 1 % of the IDs fail at Sinch every time, so the DLQ terminal state is exercised too.
# MaxReceiveCount 3 instead of the template's 5, and a 12 s function timeout with a 16 s
# visibility timeout instead of 30 s / 45 s, keep the run short (a dead ID reaches the DLQ
# after 3 visibility timeouts): a few hundred IDs never load moto as 10,000 do. Publisher
# faults at 20 % (3 in 5 of them outlast the publisher's own resends) so that the stream
# mapping's retries, and the duplicates they cause, happen in a run this small.
CONFIG = ChaosConfig(
    dead_ids=0.01,
    max_receive_count=3,
    function_timeout_seconds=12,
    visibility_timeout_seconds=16,
    time_limit_seconds=240,
).with_publisher_faults(0.2)


@pytest.fixture(scope="module")
def report() -> ChaosReport:
    return run_chaos(IDS, SEED, config=CONFIG, quiet=True)


def test_every_id_ends_in_exactly_one_terminal_state(report: ChaosReport) -> None:
    lines = "\n".join(report.lines())
    assert (report.drained, report.stream_idle) == (True, True), lines
    assert (report.lost, report.multiple, report.lost_ids) == (0, 0, []), lines
    assert report.unexpected_outcomes == 0, lines
    assert report.final + report.failed + report.dlq == IDS, lines
    assert report.balanced, lines


def test_every_stored_state_is_announced_exactly_once(report: ChaosReport) -> None:
    lines = "\n".join(report.lines())
    # One Call Enriched per stored version, one Call Enrichment Failed per failure state ...
    assert (report.events_missing, report.events_unexpected) == (0, 0), lines
    assert report.events - report.duplicates == report.versions + report.failure_states, lines
    assert report.versions > report.final  # ONGOING calls stored an ONGOING version first
    assert report.failure_states == report.failed
    # ... and nothing the publisher gave up on
    assert report.publisher_failure_queue == 0, lines


def test_no_final_record_goes_backwards(report: ChaosReport) -> None:
    assert report.regressions == 0, report.problems


def test_duplicates_only_from_the_publishers_retries(report: ChaosReport) -> None:
    # The publisher's faults outlasted its resends, so the mapping retried stream records and
    # re-sent events already accepted: same eventId, identical detail, counted ...
    assert report.stream_retries > 0
    assert report.duplicates > 0
    assert report.events == report.versions + report.failure_states + report.duplicates
    # ... and never any other kind of duplicate
    assert report.unexplained_duplicates == 0, report.problems
    # (the bus delivered what it accepted, plus what the SDK resent after a timed-out answer)
    assert report.events_sent <= report.events
    assert report.events_sent == report.events or report.put_events_sdk_resends > 0


def test_the_faults_were_really_injected_and_survived(report: ChaosReport) -> None:
    # Every kind of fault happened (so the accounting above means something) ...
    for fault in (
        "sinch-5xx",
        "sinch-429",
        "sinch-hang",
        "sinch-malformed",
        "dynamodb-throttled-save",
        "put-events-entry-failed",
        "put-events-throttled",
    ):
        assert report.injected[fault] > 0, fault
    # ... unknown IDs ended as call-not-found; bodies that are not JSON were retried, never
    # stored as a failure (sinch-garbled-response is transient) ...
    assert report.failed_by_reason["call-not-found"] > 0
    assert set(report.failed_by_reason) == {"call-not-found"}
    # ... transient faults were retried (by the client, and by SQS redelivery) ...
    assert max(report.sinch_requests) > 1
    assert max(report.receives) > 1
    # ... and the calls Sinch always fails reached the DLQ, their retry trace saying why
    stand_in = ChaosSinch(CHAOS_CREDENTIALS, SEED, CONFIG)
    dead = {call_id for call_id in call_ids(IDS, SEED) if stand_in.kind(call_id) == "dead"}
    assert dead
    assert dead == set(report.dlq_ids)
    assert report.dlq_by_reason["sinch-unavailable"] > 0
    assert set(report.dlq_by_reason) <= {"sinch-unavailable", "deadline-exceeded", "none"}


def test_the_report_has_one_line_per_count(report: ChaosReport) -> None:
    lines = report.lines()
    for name in (
        "lost",
        "regressions",
        "duplicates",
        "unexplained_duplicates",
        "final",
        "failed",
        "dlq",
        "versions",
        "failure_states",
        "events_missing",
        "publisher_failure_queue",
        "batches_failed",
    ):
        assert f"{name}: {getattr(report, name)}" in lines
    assert f"events.call_enriched: {report.events_by_type['Call Enriched']}" in lines
    assert "publisher_faults: yes" in lines
    assert "balanced: yes" in lines


# --- the accounting itself can fail ---------------------------------------------------------


def _stored(call_id: str, version: int, status: str, **fields: Any) -> Any:
    from call_enricher.state import StoredCall

    return StoredCall.model_validate(
        {"callId": call_id, "version": version, "status": status, **fields}
    )


def _enriched(call_id: str, version: int, status: str, **detail: Any) -> dict[str, Any]:
    body = {"eventId": f"{call_id}:v{version}", "callId": call_id, "version": version,
            "status": status, **detail}  # fmt: skip
    return {"detail-type": "Call Enriched", "detail": body}


def _failed_state(call_id: str) -> tuple[Any, dict[str, Any]]:
    """A stored call-not-found failure and the event that announces it."""
    from datetime import UTC, datetime

    from call_enricher import errors
    from call_enricher.events import call_enrichment_failed_event
    from call_enricher.state import StoredCall, failure_from_error

    failure = failure_from_error(
        errors.CallNotFoundError("no such call"), failed_at=datetime.now(UTC), call_id=call_id
    )
    item = StoredCall(call_id=call_id, state="failed", failure=failure)
    event = call_enrichment_failed_event(call_id, failure)
    return item, {"detail-type": event.detail_type, "detail": event.detail}


def _account(observed: Observed, *, publisher_faults: bool = False) -> ChaosReport:
    from call_enricher_tools import chaos

    report = ChaosReport(ids=len(observed.ids), seed=0, drained=True, stream_idle=True)
    report.publisher_faults = publisher_faults
    chaos._account(report, observed)
    return report


def test_the_accounting_catches_lost_ids_regressions_and_missing_events() -> None:
    a, b, c, d, e = ("a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32)
    failed_item, failed_event = _failed_state(e)
    envelopes = [
        _enriched(a, 1, "FINAL"),
        _enriched(b, 1, "FINAL"),
        _enriched(b, 2, "ONGOING"),  # b went backwards
        _enriched(c, 2, "FINAL"),  # c's version 1 was never announced
        failed_event,
    ]
    items = {
        a: _stored(a, 1, "FINAL"),
        b: _stored(b, 2, "ONGOING"),
        c: _stored(c, 2, "FINAL"),
        e: failed_item,
    }
    observed = Observed(ids=[a, b, c, d, e], kinds={e: "unknown"}, envelopes=envelopes, items=items)
    report = _account(observed)
    # a is final; e failed (its kind predicts it); b regressed and is lost; d never stored
    assert (report.final, report.failed, report.lost, report.lost_ids) == (2, 1, 2, [b, d])
    assert report.regressions == 1
    assert (report.versions, report.failure_states) == (5, 1)
    assert report.events_missing == 1  # c:v1
    assert any("never announced: " + c + ":v1" in p for p in report.problems)
    assert report.duplicates == 0
    assert not report.balanced


def test_the_accounting_allows_only_the_publishers_duplicates() -> None:
    a, c = ("a" * 32, "c" * 32)
    items = {a: _stored(a, 1, "FINAL"), c: _stored(c, 1, "FINAL")}
    twice = [_enriched(a, 1, "FINAL"), _enriched(c, 1, "FINAL"), _enriched(c, 1, "FINAL")]

    def observed(envelopes: list[dict[str, Any]], sent: int = 2) -> Observed:
        return Observed(ids=[a, c], kinds={}, envelopes=envelopes, items=items,
                        sent=Counter({f"{a}:v1": 1, f"{c}:v1": sent}))  # fmt: skip

    # The same eventId with an identical detail, re-sent by the publisher: counted, and
    # allowed after publisher faults ...
    report = _account(observed(twice), publisher_faults=True)
    assert (report.duplicates, report.unexplained_duplicates, report.balanced) == (1, 0, True)
    # ... never without them
    report = _account(observed(twice), publisher_faults=False)
    assert (report.duplicates, report.unexplained_duplicates, report.balanced) == (1, 0, False)
    # Not one the publisher sent once (something else duplicated it) ...
    report = _account(observed(twice, sent=1), publisher_faults=True)
    assert (report.unexplained_duplicates, report.balanced) == (1, False)
    assert any("delivered 2 times but sent 1 times" in p for p in report.problems)
    # ... nor one whose detail differs
    other = [*twice[:2], _enriched(c, 1, "FINAL", entryPath="api")]
    report = _account(observed(other), publisher_faults=True)
    assert (report.unexplained_duplicates, report.balanced) == (1, False)
    # ... nor one the stream itself announced twice (two stream records of one change)
    double = observed(twice)
    double.announced = {f"{a}:v1": ["1"], f"{c}:v1": ["2", "3"]}
    report = _account(double, publisher_faults=True)
    assert (report.announced_twice, report.unexplained_duplicates) == (1, 1)
    assert f"{c}:v1 announced by stream records 2, 3" in report.problems


def test_the_accounting_holds_each_id_to_the_outcome_its_kind_predicts() -> None:
    # An unknown ID that ended FINAL, a known one that failed, a dead one stored FINAL
    a, b, c = ("a" * 32, "b" * 32, "c" * 32)
    failed_item, failed_event = _failed_state(b)
    envelopes = [_enriched(a, 1, "FINAL"), failed_event, _enriched(c, 1, "FINAL")]
    items = {a: _stored(a, 1, "FINAL"), b: failed_item, c: _stored(c, 1, "FINAL")}
    kinds = {a: "unknown", b: "final", c: "dead"}
    report = _account(Observed(ids=[a, b, c], kinds=kinds, envelopes=envelopes, items=items))
    assert (report.final, report.failed, report.lost) == (2, 1, 0)
    assert report.unexpected_outcomes == 3
    assert not report.balanced


def test_the_accounting_catches_events_of_states_never_stored() -> None:
    a = "a" * 32
    envelopes = [_enriched(a, 1, "FINAL"), _enriched(a, 2, "FINAL")]  # v2 was never stored
    report = _account(
        Observed(ids=[a], kinds={}, envelopes=envelopes, items={a: _stored(a, 1, "FINAL")})
    )
    assert report.events_unexpected == 1
    assert not report.balanced
    # An event of another detail type (the spend watch's) announces no calls-table state
    spend = {"detail-type": "Spend Threshold Crossed",
             "detail": {"eventId": "spend:2026-11-26:total:all:calls-1000"}}  # fmt: skip
    items = {a: _stored(a, 1, "FINAL")}
    report = _account(Observed(ids=[a], kinds={}, envelopes=[envelopes[0], spend], items=items))
    assert (report.events_other, report.events_unexpected, report.balanced) == (1, 0, True)
    assert "events.Spend Threshold Crossed: 1" in report.lines()


def test_the_command_exits_non_zero_when_the_accounting_does_not_balance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse
    import io

    from call_enricher_tools import chaos

    seen: list[ChaosConfig] = []

    def fake(report: ChaosReport) -> Any:
        def run(*_a: Any, config: ChaosConfig, **_k: Any) -> ChaosReport:
            seen.append(config)
            return report

        return run

    unbalanced = ChaosReport(ids=3, seed=5, final=2, lost=1, drained=True, stream_idle=True,
                             lost_ids=["x" * 32])  # fmt: skip
    monkeypatch.setattr(chaos, "run_chaos", fake(unbalanced))
    out = io.StringIO()
    args = argparse.Namespace(ids=3, seed=5, time_limit=10.0, verbose=False, publisher_faults=0.0)
    assert chaos.cmd_chaos(args, out, io.StringIO()) == 1
    assert "lost: 1" in out.getvalue().splitlines()
    assert "balanced: NO" in out.getvalue().splitlines()
    assert not seen[-1].publisher_faults  # --publisher-faults 0
    balanced = ChaosReport(ids=3, seed=5, final=2, failed=1, drained=True, stream_idle=True)
    monkeypatch.setattr(chaos, "run_chaos", fake(balanced))
    assert chaos.cmd_chaos(args, io.StringIO(), io.StringIO()) == 0
    # Without publisher faults a duplicate unbalances the run, whatever explains it
    balanced.duplicates = 1
    assert chaos.cmd_chaos(args, io.StringIO(), io.StringIO()) == 1


def test_publisher_faults_from_the_command_line() -> None:
    import argparse

    from call_enricher_tools import chaos

    parser = argparse.ArgumentParser()
    chaos._add_arguments(parser)
    assert parser.parse_args([]).publisher_faults == ChaosConfig().put_events_entry_failure
    assert parser.parse_args(["--publisher-faults", "0.1"]).publisher_faults == 0.1
    config = ChaosConfig().with_publisher_faults(0.1)
    assert (config.put_events_entry_failure, config.put_events_throttle) == (0.1, 0.05)
    with pytest.raises(SystemExit):
        parser.parse_args(["--publisher-faults", "1.5"])
    # A visibility timeout shorter than a batch may take is refused
    with pytest.raises(ValueError, match="visibility"):
        ChaosConfig(function_timeout_seconds=30, visibility_timeout_seconds=20)
