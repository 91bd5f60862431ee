"""The chaos run, small: a few hundred call IDs through the local stack under every fault.

The same code as ``make chaos`` (``call_enricher_tools.chaos``): moto server built from the
template, the SQS poller with its redrive to the DLQ, the real queue handler, a
fault-injecting Sinch stand-in over HTTP, throttled DynamoDB writes and failing PutEvents
entries. Seeded: the same seed injects the same faults into the same call IDs.
"""

from __future__ import annotations

import pytest

from call_enricher_tools.chaos import (
    CHAOS_CREDENTIALS,
    ChaosConfig,
    ChaosReport,
    ChaosSinch,
    call_ids,
    run_chaos,
)

pytestmark = pytest.mark.slow

IDS = 300
SEED = 20261126
# 1 % of the IDs fail at Sinch every time, so the DLQ terminal state is exercised too
# (MaxReceiveCount 3 instead of the template's 5, and a visibility timeout of 15 s instead of
# the default 31 s, keep the run short: a few hundred IDs never keep a batch that long)
CONFIG = ChaosConfig(
    dead_ids=0.01, max_receive_count=3, visibility_timeout_seconds=15, time_limit_seconds=240
)


@pytest.fixture(scope="module")
def report() -> ChaosReport:
    return run_chaos(IDS, SEED, config=CONFIG, quiet=True)


def test_every_id_ends_in_exactly_one_terminal_state(report: ChaosReport) -> None:
    lines = "\n".join(report.lines())
    assert report.drained, lines
    assert (report.lost, report.multiple, report.lost_ids) == (0, 0, []), lines
    assert report.final + report.failed + report.dlq == IDS, lines
    assert report.balanced, lines


def test_no_final_record_goes_backwards(report: ChaosReport) -> None:
    assert report.regressions == 0, report.problems


def test_duplicates_only_in_the_documented_window(report: ChaosReport) -> None:
    # A duplicate event is only allowed where a publish marker write failed after PutEvents
    assert report.unexplained_duplicates == 0, report.problems
    assert report.duplicates <= report.injected["dynamodb-throttled-mark"]


def test_the_faults_were_really_injected_and_survived(report: ChaosReport) -> None:
    # Every kind of fault happened (so the accounting above means something) ...
    for fault in (
        "sinch-5xx",
        "sinch-429",
        "sinch-hang",
        "sinch-malformed",
        "dynamodb-throttled-save",
        "put-events-entry-failed",
    ):
        assert report.injected[fault] > 0, fault
    # ... unknown IDs and malformed bodies ended as failures with their reasons ...
    assert report.failed_by_reason["call-not-found"] > 0
    assert set(report.failed_by_reason) <= {"call-not-found", "invalid-record"}
    # ... transient faults were retried (by the client, and by SQS redelivery) ...
    assert max(report.sinch_requests) > 1
    assert max(report.receives) > 1
    # ... and the calls Sinch always fails reached the DLQ with their reason
    stand_in = ChaosSinch(CHAOS_CREDENTIALS, SEED, CONFIG)
    dead = {call_id for call_id in call_ids(IDS, SEED) if stand_in.kind(call_id) == "dead"}
    assert dead
    assert dead <= set(report.dlq_ids)
    assert report.dlq_by_reason["sinch-unavailable"] >= len(dead)


def test_the_report_has_one_line_per_count(report: ChaosReport) -> None:
    lines = report.lines()
    for name in ("lost", "regressions", "duplicates", "final", "failed", "dlq", "batches_failed"):
        assert f"{name}: {getattr(report, name)}" in lines
    assert "balanced: yes" in lines


# --- the accounting itself can fail ---------------------------------------------------------


def _enriched(call_id: str, version: int, status: str) -> dict[str, object]:
    detail = {"eventId": f"{call_id}:v{version}", "callId": call_id, "version": version,
              "status": status}  # fmt: skip
    return {"detail-type": "Call Enriched", "detail": detail}


def test_the_accounting_catches_lost_ids_regressions_and_duplicates() -> None:
    from call_enricher_tools.chaos import FaultyDynamoDB, _account

    a, b, c, d, e = ("a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32)
    envelopes = [
        _enriched(a, 1, "FINAL"),
        _enriched(b, 1, "FINAL"),
        _enriched(b, 2, "ONGOING"),  # b went backwards
        _enriched(c, 1, "FINAL"),
        _enriched(c, 1, "FINAL"),  # c published twice, no failed marker to explain it
        {"detail-type": "Call Enrichment Failed",
         "detail": {"eventId": f"{e}:failed", "callId": e, "reason": "call-not-found"}},
    ]  # fmt: skip
    items = {
        a: {"callId": a, "version": 1, "status": "FINAL"},
        b: {"callId": b, "version": 2, "status": "ONGOING"},
        c: {"callId": c, "version": 1, "status": "FINAL"},
        e: {"callId": e, "version": 1, "status": "FINAL"},  # stored, never announced: not final
    }
    report = ChaosReport(ids=5, seed=0, drained=True)
    marks = FaultyDynamoDB(client=None, seed=0, rate=0.0)
    _account(report, [a, b, c, d, e], envelopes, {}, {}, [], items, marks)
    assert (report.final, report.failed, report.lost, report.lost_ids) == (2, 1, 2, [b, d])
    assert report.regressions == 1
    assert (report.duplicates, report.unexplained_duplicates) == (1, 1)
    assert not report.balanced
    # A duplicate explained by a failed publish marker is counted but tolerated
    marks.failed_marks.add(c)
    report = ChaosReport(ids=1, seed=0, drained=True)
    _account(report, [c], envelopes[3:5], {}, {}, [], items, marks)
    assert (report.duplicates, report.unexplained_duplicates, report.balanced) == (1, 0, True)


def test_the_command_exits_non_zero_when_the_accounting_does_not_balance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse
    import io

    from call_enricher_tools import chaos

    unbalanced = ChaosReport(ids=3, seed=5, final=2, lost=1, drained=True, lost_ids=["x" * 32])
    monkeypatch.setattr(chaos, "run_chaos", lambda *_a, **_k: unbalanced)
    out = io.StringIO()
    args = argparse.Namespace(ids=3, seed=5, time_limit=10.0, verbose=False)
    assert chaos.cmd_chaos(args, out, io.StringIO()) == 1
    assert "lost: 1" in out.getvalue().splitlines()
    assert "balanced: NO" in out.getvalue().splitlines()
    balanced = ChaosReport(ids=3, seed=5, final=2, failed=1, drained=True)
    monkeypatch.setattr(chaos, "run_chaos", lambda *_a, **_k: balanced)
    assert chaos.cmd_chaos(args, io.StringIO(), io.StringIO()) == 0
