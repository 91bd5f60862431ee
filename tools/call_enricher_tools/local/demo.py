"""``make demo``: the whole pipeline on one machine, through every entry path.

Starts the local pipeline (Sinch sandbox, moto with the template's resources, the HTTP API,
the SQS poller, the stream poller that plays the publisher's DynamoDB stream mapping) on free
ports of 127.0.0.1, then sends call IDs through each way in:

* ``queue``: SQS messages sent straight to the enrichment queue (as a producer would);
* ``api``: ``POST /calls`` (enqueued) and ``POST /calls/{id}/enrich`` (synchronous);
* ``callback``: a sandbox call ends and the sandbox sends its signed DiCE to
  ``/sinch/callbacks``, which enqueues the call ID.

The mix includes an unknown call posted twice (one failure state, so one ``Call Enrichment
Failed``, reason ``call-not-found``, and ``GET /calls/{id}`` answers 200 with that failure), a
call whose first Sinch answers are 503 so that its message fails, reappears after the local
visibility timeout and then succeeds, and an ONGOING call that turns FINAL (re-checked after
``RECHECK_BASE_DELAY_SECONDS=1``), and the sandbox's risky calls: a premium-rate and a
satellite destination (flagged ``high`` with their signal codes) and a burst of calls to one
country that crosses the default policy's daily spend threshold for it (one ``Spend
Threshold Crossed``). Every event comes from the calls table's stream (the table is the
outbox). Progress is printed as the events arrive on the subscriber queue; then
a table of the records (masked numbers only) and the events, and everything is stopped. Exit
status 0 when every ID reached its expected terminal state with one event per state change,
the premium-rate call was flagged ``high`` and exactly one ``Spend Threshold Crossed`` came.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from call_enricher_tools.demo import render_table, row
from call_enricher_tools.local.poller import Invocation
from call_enricher_tools.local.runner import LocalPipeline, PipelineOptions
from call_enricher_tools.local.up import FLAGGED_LEVELS, describe_crossing, risk_flag

DEMO_TIMEOUT_SECONDS = 60.0
DEMO_VISIBILITY_TIMEOUT = 8
"""Seconds before a failed message reappears: longer than a batch takes on a loaded 2-core
machine (a shorter one hands a slow batch's messages out again while it still runs)."""
DEMO_SANDBOX = {"seed": 1, "records": 40}
"""The sandbox's seed and size: the same seeded calls (and local test credentials) each run."""
COLUMNS = (
    "call",
    "from",
    "to",
    "outcome",
    "ended by",
    "duration",
    "cost",
    "status",
    "entry",
    "risk",
)
SPEND_CROSSED = "Spend Threshold Crossed"


@dataclass
class Tracked:
    """One call ID of the demo: how it was sent and what became of it."""

    call_id: str
    entry: str
    expect: str  # "FINAL" or a failure reason
    note: str = ""
    final_detail: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    failure_events: int = 0
    statuses: list[str] = field(default_factory=list)
    risky: str = ""
    """The sandbox's kind of a risky call (``premium-rate``, ``satellite``, ``burst``)."""

    @property
    def done(self) -> bool:
        return self.final_detail is not None or self.failure is not None

    @property
    def as_expected(self) -> bool:
        if self.expect == "FINAL":
            return self.final_detail is not None
        return self.failure is not None and self.failure.get("reason") == self.expect

    @property
    def risk(self) -> dict[str, Any]:
        """The FINAL record's ``risk`` (empty before it came)."""
        detail = self.final_detail or {}
        return dict((detail.get("record") or {}).get("risk") or {})


class DemoError(Exception):
    """The demo could not run (a request failed); the message says what."""


def run_demo(
    *,
    stdout: TextIO,
    stderr: TextIO,
    timeout_seconds: float = DEMO_TIMEOUT_SECONDS,
    api_port: int = 0,
    log_file: Path | None = None,
) -> int:
    """Run the full local pipeline demo; 0 when every call ended as expected.

    The handlers' own logs go to ``log_file`` (default: a file in the temporary directory),
    so the console shows the demo's progress and tables only."""
    started = time.monotonic()
    if log_file is None:
        from call_enricher_tools.local.up import default_log_file

        log_file = default_log_file("demo")
        log_file.unlink(missing_ok=True)
    invocations: list[Invocation] = []
    options = PipelineOptions(
        api_port=api_port,
        parameters={"RecheckBaseDelaySeconds": "1"},
        visibility_timeout_seconds=DEMO_VISIBILITY_TIMEOUT,
        log_file=log_file,
        on_invocation=invocations.append,
        stack_name="call-enricher-demo",
        # ONGOING calls turn FINAL 2 s after they are first asked about; only the calls the
        # demo ends itself send DiCEs (no unrelated callbacks in the output).
        sandbox_options={
            **DEMO_SANDBOX,
            "ongoing_seconds": 2.0,
            "ongoing_from": "first-request",
            "dice_on_ongoing_end": False,
        },
    )
    pipeline = LocalPipeline(options)
    print(
        "Starting the local stack (Sinch sandbox, moto, HTTP API, SQS and stream pollers)...",
        file=stdout,
    )
    try:
        pipeline.start()
    except OSError as exc:
        print(f"error: {exc}", file=stderr)
        return 1
    try:
        _banner(pipeline, stdout, time.monotonic() - started)
        tracked = _send_everything(pipeline, stdout)
        events = _follow(pipeline, tracked, stdout, started, timeout_seconds)
        events += _settle(pipeline, stdout, started)
        _report(tracked, events, invocations, stdout)
        _show_failed_state(pipeline, tracked, events, stdout)
    except DemoError as exc:
        print(f"error: {exc}", file=stderr)
        return 1
    finally:
        pipeline.stop()
    failed = [t for t in tracked if not t.as_expected or t.failure_events > 1]
    elapsed = time.monotonic() - started
    problems = [f"{t.call_id} did not end as expected ({t.expect})" for t in failed]
    problems += _risk_problems(tracked, events)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=stderr)
        return 1
    print(
        f"\nAll {len(tracked)} calls reached their terminal state in {elapsed:.1f} s;"
        " the risky calls flagged and one spend threshold crossed, as expected.",
        file=stdout,
    )
    print(f"Stopped everything. The handlers' own logs are in {log_file}.", file=stdout)
    print("`call-enricher local up` runs the same stack until Ctrl-C.", file=stdout)
    return 0


# -- sending -----------------------------------------------------------------------------


def _banner(pipeline: LocalPipeline, out: TextIO, elapsed: float) -> None:
    stack = pipeline.require_stack()
    print(f"  up in {elapsed:.1f} s", file=out)
    print(f"  Sinch sandbox   {pipeline.sandbox.base_url}", file=out)
    print(f"  AWS (moto)      {stack.endpoint_url}", file=out)
    print(f"  HTTP API        {pipeline.api_url}  (IAM auth is not enforced locally)", file=out)
    trigger = stack.trigger
    print(
        f"  SQS poller      batch {trigger.batch_size}, window "
        f"{trigger.batching_window_seconds:g} s, concurrency {trigger.max_concurrency}, "
        f"visibility timeout {stack.visibility_timeout_seconds} s (local)",
        file=out,
    )
    stream = stack.require_stream_trigger()
    print(
        f"  stream poller   batch {stream.batch_size}, bisect "
        f"{'on' if stream.bisect_batch_on_function_error else 'off'}, "
        f"{stream.maximum_retry_attempts} retries, then the on-failure queue",
        file=out,
    )
    print(file=out)


def _send_everything(pipeline: LocalPipeline, out: TextIO) -> list[Tracked]:
    sandbox = pipeline.sandbox
    stack = pipeline.require_stack()
    final_ids = list(sandbox.call_ids("final"))
    ongoing_ids = list(sandbox.call_ids("ongoing"))
    unknown_ids = list(sandbox.call_ids("unknown"))
    if len(final_ids) < 6 or not ongoing_ids or not unknown_ids:
        raise DemoError("the sandbox has too few seeded calls for the demo")
    flaky = final_ids[3]
    sandbox.inject_fault(flaky, status=503, times=4)  # > the client's 3 attempts: one SQS retry
    tracked = [
        Tracked(final_ids[0], "queue", "FINAL"),
        Tracked(final_ids[1], "queue", "FINAL"),
        Tracked(flaky, "queue", "FINAL", note="503 x4, retried by SQS"),
        Tracked(unknown_ids[0], "queue", "call-not-found", note="unknown to Sinch"),
        Tracked(final_ids[2], "api", "FINAL", note="POST /calls"),
        Tracked(ongoing_ids[0], "api", "FINAL", note="ONGOING, then FINAL"),
        Tracked(final_ids[4], "api", "FINAL", note="POST /calls/{id}/enrich"),
        Tracked(final_ids[5], "callback", "FINAL", note="signed DiCE"),
    ]
    sqs = stack.client("sqs")
    queue_ids = [t.call_id for t in tracked if t.entry == "queue"]
    sqs.send_message_batch(
        QueueUrl=stack.queue_url,
        Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"callId": cid, "context": {"demo": True}})}
            for i, cid in enumerate(queue_ids)
        ],
    )
    print(f"queue     SendMessageBatch: {len(queue_ids)} call IDs", file=out)

    status, body = _http(
        "POST",
        f"{pipeline.api_url}/calls",
        {"callIds": [final_ids[2], ongoing_ids[0], unknown_ids[0]], "context": {"demo": True}},
    )
    if status != 202:
        raise DemoError(f"POST /calls answered {status}: {body}")
    accepted = body.get("accepted", [])
    print(
        f"api       POST /calls -> {status}, accepted {len(accepted)}"
        f" (the unknown {_short(unknown_ids[0])} a second time)",
        file=out,
    )

    status, body = _http("POST", f"{pipeline.api_url}/calls/{final_ids[4]}/enrich", {})
    if status != 200:
        raise DemoError(f"POST /calls/{{id}}/enrich answered {status}: {body}")
    print(
        f"api       POST /calls/{_short(final_ids[4])}/enrich -> {status}, "
        f"status {body.get('status', '?')}",
        file=out,
    )

    sandbox.end_call(final_ids[5])
    print(f"callback  sandbox call {_short(final_ids[5])} ended -> signed DiCE sent", file=out)

    risky = _send_risky(pipeline)
    burst = [t for t in risky if t.risky == "burst"]
    print(
        f"queue     SendMessageBatch: {len(risky)} risky calls (a premium-rate number,"
        f" a satellite number, a burst of {len(burst)} calls to one country)",
        file=out,
    )
    print(file=out)
    return tracked + risky


RISKY_NOTES = {
    "premium-rate": "risky: a UK premium-rate number at 1.50 GBP/min",
    "satellite": "risky: a satellite number (+881) at 2.80 USD/min",
}


def _send_risky(pipeline: LocalPipeline) -> list[Tracked]:
    """The sandbox's risky calls, in one SendMessageBatch (at most 10 entries)."""
    sandbox = pipeline.sandbox
    stack = pipeline.require_stack()
    risky = [
        Tracked(
            call_id,
            "queue",
            "FINAL",
            note=RISKY_NOTES.get(kind, ""),
            risky=kind,
        )
        for call_id in sandbox.call_ids("risky")
        for kind in [sandbox.record(call_id).source.removeprefix("risky:")]
    ]
    if not any(t.risky == "premium-rate" for t in risky) or not risky or len(risky) > 10:
        raise DemoError("the sandbox does not seed the risky calls the demo expects")
    stack.client("sqs").send_message_batch(
        QueueUrl=stack.queue_url,
        Entries=[
            {
                "Id": str(i),
                "MessageBody": json.dumps({"callId": t.call_id, "context": {"demo": "risky"}}),
            }
            for i, t in enumerate(risky)
        ],
    )
    return risky


def _http(method: str, url: str, payload: dict[str, Any] | None) -> tuple[int, Any]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(  # noqa: S310 - a 127.0.0.1 URL we started
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except OSError as exc:
        raise DemoError(f"{method} {url}: {exc}") from None


# -- following ---------------------------------------------------------------------------


def _follow(
    pipeline: LocalPipeline,
    tracked: list[Tracked],
    out: TextIO,
    started: float,
    timeout_seconds: float,
) -> list[dict[str, Any]]:
    stack = pipeline.require_stack()
    by_id = {t.call_id: t for t in tracked}
    burst = [t for t in tracked if t.risky == "burst"]
    events: list[dict[str, Any]] = []
    print("Events on the bus (as a subscriber sees them):", file=out)
    deadline = started + timeout_seconds

    def finished() -> bool:
        crossed = any(e.get("detail-type") == SPEND_CROSSED for e in events)
        return all(t.done for t in tracked) and (crossed or not burst)

    while not finished() and time.monotonic() < deadline:
        for envelope in stack.receive_events(wait_seconds=1):
            events.append(envelope)
            detail = envelope.get("detail", {})
            call_id = detail.get("callId")
            item = by_id.get(call_id or "")
            kind = envelope.get("detail-type", "?")
            if kind == SPEND_CROSSED:
                print(_line(started, kind, "", describe_crossing(detail)), file=out)
                continue
            if kind == "Call Enriched":
                status = str(detail.get("status"))
                text = f"status {status}, version {detail.get('version', '?')}"
                flag = risk_flag(detail.get("record") or {})
                if flag:
                    text += f"  {flag}"
                if item is not None:
                    item.statuses.append(status)
                    if status == "FINAL":
                        item.final_detail = detail
                if item is not None and item.risky == "burst":
                    # the burst in one line, when its last call is in
                    if status == "FINAL" and all(t.final_detail for t in burst):
                        country = _callee_country(detail)
                        text = f"all {len(burst)} FINAL, to {country}"
                        print(
                            _line(started, f"Call Enriched x{len(burst)}", "burst", text), file=out
                        )
                    continue
            else:
                text = f"reason {detail.get('reason')}"
                if item is not None:
                    item.failure = detail
                    item.failure_events += 1
            print(_line(started, kind, _short(call_id) if call_id else "-", text), file=out)
    return events


def _line(started: float, kind: str, call: str, text: str) -> str:
    return f"  {time.monotonic() - started:5.1f} s  {kind:<23} {call:<14} {text}"


def _callee_country(detail: dict[str, Any]) -> str:
    to = ((detail.get("record") or {}).get("parties") or {}).get("to") or {}
    return str((to.get("phone") or {}).get("country") or "?")


def _settle(pipeline: LocalPipeline, out: TextIO, started: float) -> list[dict[str, Any]]:
    """Wait for the queues to empty and the stream to be published, so that a late
    duplicate (the unknown call's second message) would show; the events that still came."""
    stack = pipeline.require_stack()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and stack.queue_depth(stack.queue_url):
        time.sleep(0.2)
    pipeline.wait_stream_idle(10)
    late = stack.receive_events(wait_seconds=1)
    for envelope in late:
        detail = envelope.get("detail", {})
        kind = envelope.get("detail-type", "?")
        text = describe_crossing(detail) if kind == SPEND_CROSSED else ""
        call = "" if kind == SPEND_CROSSED else _short(str(detail.get("callId") or "-"))
        print(_line(started, kind, call, f"{text} (late)".strip()), file=out)
    return late


def _show_failed_state(
    pipeline: LocalPipeline, tracked: list[Tracked], events: list[dict[str, Any]], out: TextIO
) -> None:
    """What a backend that posted the unknown ID learns: its fate, through the API."""
    for t in tracked:
        if t.expect == "FINAL":
            continue
        t.failure_events = sum(
            1
            for e in events
            if e.get("detail-type") == "Call Enrichment Failed"
            and e.get("detail", {}).get("callId") == t.call_id
        )
        status, body = _http("GET", f"{pipeline.api_url}/calls/{t.call_id}", None)
        failure = body.get("failure") or {}
        print(
            f"\nGET /calls/{_short(t.call_id)} -> {status}, state {body.get('state')}, "
            f"reason {failure.get('reason')}; posted twice, "
            f"{t.failure_events} Call Enrichment Failed event(s)",
            file=out,
        )


# -- report ------------------------------------------------------------------------------


def _report(
    tracked: list[Tracked],
    events: list[dict[str, Any]],
    invocations: list[Invocation],
    out: TextIO,
) -> None:
    from call_enricher.enrichment import EnrichedCall

    rows: list[tuple[str, ...]] = []
    burst = [t for t in tracked if t.risky == "burst"]
    for t in tracked:
        if t.risky == "burst":
            continue  # summed up below the table
        if t.final_detail is not None:
            record = EnrichedCall.model_validate(t.final_detail["record"])
            rows.append((*row(record), t.entry, str(t.risk.get("level", "-"))))
        elif t.failure is not None:
            reason = str(t.failure.get("reason"))
            rows.append(
                (_short(t.call_id), "-", "-", f"failed: {reason}", "-", "-", "-", "-", t.entry, "-")
            )
        else:
            rows.append(
                (
                    _short(t.call_id),
                    "-",
                    "-",
                    "(no terminal state)",
                    "-",
                    "-",
                    "-",
                    "-",
                    t.entry,
                    "-",
                )
            )
    print("\nEnriched records (numbers masked):\n", file=out)
    print(render_table(rows, COLUMNS), file=out)
    if burst:
        print(f"  + {_burst_summary(burst)}", file=out)
    notes = [f"  {_short(t.call_id)}  {t.note}" for t in tracked if t.note]
    if notes:
        print("\nNotes:", file=out)
        print("\n".join(notes), file=out)
    flagged = [t for t in tracked if t.risk.get("level") in FLAGGED_LEVELS]
    if flagged:
        print("\nFlagged calls (risk medium or high; route on detail.record.risk.level):", file=out)
        for t in flagged:
            print(f"  {_short(t.call_id)}  {t.risk['level']}", file=out)
            for signal in t.risk.get("signals") or ():
                print(
                    f"    {signal.get('code'):<34} {signal.get('level'):<6} {signal.get('detail')}",
                    file=out,
                )
    crossings = [e["detail"] for e in events if e.get("detail-type") == SPEND_CROSSED]
    if crossings:
        print("\nDaily spend thresholds crossed (once per key, day and threshold):", file=out)
        for detail in crossings:
            print(f"  {detail.get('eventId')}", file=out)
            print(f"    {describe_crossing(detail)}", file=out)
    retried = sum(1 for i in invocations for c in i.receive_counts.values() if c > 1)
    reported = sum(len(i.failed_ids) for i in invocations if i.error is None)
    print(
        f"\n{len(events)} events received; queue handler invoked {len(invocations)} times, "
        f"{reported} message(s) reported for retry, {retried} redelivered.",
        file=out,
    )


def _burst_summary(burst: list[Tracked]) -> str:
    """``8 burst calls to LV, 282.15 EUR, each risk low (cross-border)``."""
    from decimal import Decimal

    spend: dict[str, Decimal] = {}
    countries: set[str] = set()
    levels: set[str] = set()
    codes: set[str] = set()
    for t in burst:
        record = (t.final_detail or {}).get("record") or {}
        debit = (record.get("money") or {}).get("debit") or {}
        if debit.get("amount") is not None and debit.get("currency"):
            currency = str(debit["currency"])
            spend[currency] = spend.get(currency, Decimal(0)) + Decimal(str(debit["amount"]))
        countries.add(_callee_country(t.final_detail or {}))
        levels.add(str(t.risk.get("level", "?")))
        codes.update(str(s.get("code")) for s in t.risk.get("signals") or ())
    money = ", ".join(f"{amount} {currency}" for currency, amount in spend.items())
    return (
        f"{len(burst)} burst calls to {', '.join(sorted(countries))} on one day, {money}"
        f" together; each risk {'/'.join(sorted(levels))} ({', '.join(sorted(codes)) or '-'})"
    )


def _risk_problems(tracked: list[Tracked], events: list[dict[str, Any]]) -> list[str]:
    """What the risk part of the demo missed: the flagged call, the one spend crossing."""
    problems = [
        f"the {t.risky} call {t.call_id} was not flagged high ({t.risk})"
        for t in tracked
        if t.risky in ("premium-rate", "satellite") and t.risk.get("level") != "high"
    ]
    ids = [e["detail"].get("eventId") for e in events if e.get("detail-type") == SPEND_CROSSED]
    if any(t.risky == "burst" for t in tracked) and len(ids) != 1:
        problems.append(f"expected one Spend Threshold Crossed event, got {len(ids)}: {ids}")
    return problems


def _short(call_id: str) -> str:
    return call_id[:12] + "…" if len(call_id) > 13 else call_id
