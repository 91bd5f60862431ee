"""The daily spend watch through the local stack: a burst crosses each threshold once.

The sandbox's risky calls (a premium-rate call, a satellite call and a burst of calls to LV,
all on one UTC day) go through the real queue handler and the real stream publisher, under a
small risk policy in SSM (``RiskPolicyParameterName``) with several thresholds per key kind.
Every stream record is delivered twice (the publisher's first invocation of each batch fails
after it published, so the poller bisects and retries it), and the whole stream is then
handed to the publisher once more, read back from the stream: still exactly one ``Spend
Threshold Crossed`` per key, day and threshold, and each aggregate counted once. Terminal
states are polled for with a generous overall timeout; nothing asserts on timing.

"Exactly once" is counted where the stream publisher decides it (:class:`PutEventsLedger`):
each crossing is published successfully once. On a loaded machine moto can answer
``PutEvents`` past the client's 5 s read timeout: botocore sends it again, and when that
fails too the stream record is retried and the crossing handed over again with the same
``eventId`` (the at-least-once window the design allows, EventBridge's own too). So a copy
a subscriber gets beyond the first is always one the wire carried again, never a second
announcement.
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from call_enricher.spend import number_key
from call_enricher_tools.local import runner
from call_enricher_tools.local.poller import LocalLambdaContext, load_function
from call_enricher_tools.local.runner import LocalPipeline, PipelineOptions
from call_enricher_tools.local.stack import REGION, LocalStack
from call_enricher_tools.local.streams import as_dynamodb_writes, stream_event_record
from call_enricher_tools.local.up import describe_event
from call_enricher_tools.sandbox.records import BURST_CALLS, risky_day
from tests.support.waiting import poll_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STREAM_APP = ROOT / "functions" / "stream_publisher" / "app.py"
OVERALL_TIMEOUT = 90.0
SEED = 1
CROSSED = "Spend Threshold Crossed"
POLICY = {
    "spend": {
        "total": {"calls": [5], "spend": {"EUR": ["200"]}},
        "country": {"calls": [4, 8], "spend": {"EUR": ["100", "250"]}},
        "number": {"calls": [], "spend": {"GBP": ["10"]}},
    }
}
"""Per day: every call (5 calls, EUR 200), per country (4 and 8 calls, EUR 100 and 250),
per called number (GBP 10: the premium-rate call's 18 GBP). Nothing else has a threshold."""


class PutEventsLedger:
    """Per ``Spend Threshold Crossed`` event ID: each time the stream publisher handed it to
    its EventBridge publisher and what came back (``outcomes``: ``None`` = accepted), and how
    many times it went over the wire (``sends``: the publisher's and botocore's resends
    included, from the events client's own hook)."""

    def __init__(self, client: Any) -> None:
        self.sends: Counter[str] = Counter()
        self.outcomes: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        client.meta.events.register("before-send.events.PutEvents", self._send)

    def watch(self, outbox: Any) -> None:
        """Count what ``outbox`` (an OutboxPublisher) hands to its EventBridge publisher."""
        publisher = outbox.publisher
        publish = publisher.publish

        def counted(events: Any) -> Any:
            results = publish(events)
            with self._lock:
                for event in events:
                    if event.detail_type == CROSSED:
                        self.outcomes.append((event.key, results.get(event.key)))
            return results

        publisher.publish = counted

    @staticmethod
    def _crossings(entries: list[dict[str, Any]]) -> list[str]:
        return [
            json.loads(entry["Detail"])["eventId"]
            for entry in entries
            if entry.get("DetailType") == CROSSED
        ]

    def _send(self, request: Any, **_: Any) -> None:
        body = json.loads(request.body or b"{}")
        with self._lock:
            self.sends.update(self._crossings(body.get("Entries", [])))

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        """(accepted handoffs, sends) per event ID."""
        with self._lock:
            accepted = Counter(key for key, error in self.outcomes if error is None)
            return accepted, Counter(self.sends)


wait_until = functools.partial(poll_until, timeout=OVERALL_TIMEOUT, interval=0.2)


class FirstDeliveryFails:
    """Wraps the stream publisher's handler: the first delivery of any stream record runs
    the real handler (which publishes and marks its crossings announced) and then fails the
    invocation, as a Lambda that dies after PutEvents; the poller retries the records."""

    def __init__(self, handler: Callable[..., Any]) -> None:
        self.handler = handler
        self.seen: set[str] = set()
        self.failed_invocations = 0
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        sequence_numbers = {r["dynamodb"]["SequenceNumber"] for r in event["Records"]}
        response = self.handler(event, context)
        with self._lock:
            fresh = sequence_numbers - self.seen
            self.seen |= sequence_numbers
            if fresh:
                self.failed_invocations += 1
                raise RuntimeError("the publisher died after PutEvents (injected)")
        return response


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPipeline]:
    wrappers: list[FirstDeliveryFails] = []
    real_load = load_function

    def load(app: Path, handler: str, *, instance: str) -> Any:
        loaded = real_load(app, handler, instance=instance)
        if instance.startswith("stream_"):
            wrapper = FirstDeliveryFails(loaded)
            wrappers.append(wrapper)
            return wrapper
        return loaded

    monkeypatch.setattr(runner, "load_function", load)
    stack_name = f"spend-{uuid.uuid4().hex[:8]}"  # moto's backends are process-wide
    parameter = f"/{stack_name}/risk-policy"
    running = LocalPipeline(
        PipelineOptions(
            api_port=0,
            parameters={"RiskPolicyParameterName": parameter},
            log_file=tmp_path / "handlers.log",
            stack_name=stack_name,
            sandbox_options={"seed": SEED, "records": 20, "ongoing_fraction": 0.0},
        )
    )
    running.start()
    try:
        # the handlers read the policy on first use (not at INIT, outside Lambda)
        running.require_stack().client("ssm").put_parameter(
            Name=parameter, Type="String", Value=json.dumps(POLICY)
        )
        running.wrappers = wrappers  # type: ignore[attr-defined]
        from call_enricher.outbox import get_outbox

        outbox = get_outbox()
        ledger = PutEventsLedger(outbox.publisher.client)
        ledger.watch(outbox)
        running.ledger = ledger  # type: ignore[attr-defined]
        yield running
    finally:
        running.stop()


def read_stream(stack: LocalStack) -> list[dict[str, Any]]:
    """Every record the calls table's stream holds, as Lambda would hand them over."""
    streams = stack.client("dynamodbstreams")
    arn = stack.calls_stream_arn
    raw: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            answer = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not answer.get("Records"):
                break
            raw.extend(answer["Records"])
            iterator = answer.get("NextShardIterator")
    return [
        stream_event_record(record, stream_arn=arn, region=REGION)
        for record in as_dynamodb_writes(raw)
    ]


def stream_summary(stack: LocalStack) -> Counter[tuple[str, ...]]:
    """(event, call, version, state) of the stream's records, counted: what a stuck
    stream holds."""
    summary: Counter[tuple[str, ...]] = Counter()
    for record in read_stream(stack):
        image = record["dynamodb"].get("NewImage") or {}
        summary[
            (
                record["eventName"],
                record["dynamodb"]["Keys"]["callId"]["S"][:8],
                str(image.get("version", {}).get("N")),
                str(image.get("state", {}).get("S")),
            )
        ] += 1
    return summary


def aggregate(stack: LocalStack, day: str, kind: str, key: str) -> dict[str, Any]:
    table = stack.function_environment()["SPEND_TABLE_NAME"]
    item = stack.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": f"agg#{day}#{kind}#{key}"}}, ConsistentRead=True
    )["Item"]
    return {
        "calls": int(item["calls"]["N"]),
        "spend": {
            name.removeprefix("spend"): Decimal(value["N"])
            for name, value in item.items()
            if name.startswith("spend")
        },
        "announced": set(item.get("announced", {}).get("SS", [])),
    }


def crossing_ids(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["detail"]["eventId"] for e in events if e["detail-type"] == CROSSED)


def test_a_burst_crosses_each_threshold_once_also_when_stream_records_are_redelivered(
    pipeline: LocalPipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = pipeline.require_stack()
    sandbox = pipeline.sandbox
    risky = sandbox.call_ids("risky")
    kinds = {cid: sandbox.record(cid).source.removeprefix("risky:") for cid in risky}
    assert Counter(kinds.values()) == {"premium-rate": 1, "satellite": 1, "burst": BURST_CALLS}
    day = risky_day(SEED)
    premium = next(cid for cid, kind in kinds.items() if kind == "premium-rate")
    secret = stack.client("secretsmanager").get_secret_value(
        SecretId=stack.function_environment()["SPEND_NUMBER_KEY_SECRET_ID"]
    )["SecretString"]
    premium_key = number_key(sandbox.record(premium).final["to"]["endpoint"], secret.encode())
    expected = {
        f"spend:{day}:total:all:calls-5",
        f"spend:{day}:total:all:EUR-200",
        f"spend:{day}:country:LV:calls-4",
        f"spend:{day}:country:LV:calls-8",
        f"spend:{day}:country:LV:EUR-100",
        f"spend:{day}:country:LV:EUR-250",
        f"spend:{day}:number:{premium_key}:GBP-10",
    }

    # Given the risky calls sent to the enrichment queue, as a producer would
    stack.client("sqs").send_message_batch(
        QueueUrl=stack.queue_url,
        Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"callId": cid})}
            for i, cid in enumerate(risky)
        ],
    )
    # When every call is enriched and the stream published (each record delivered twice)
    events: list[dict[str, Any]] = []

    def arrived() -> bool:
        events.extend(stack.receive_events(wait_seconds=1))
        finals = {
            e["detail"]["callId"]
            for e in events
            if e["detail-type"] == "Call Enriched" and e["detail"]["status"] == "FINAL"
        }
        return finals >= set(risky) and set(crossing_ids(events)) >= expected

    assert wait_until(arrived), (sorted(crossing_ids(events)), len(events))
    poller = pipeline.stream_poller
    assert poller is not None
    idle = pipeline.wait_stream_idle(OVERALL_TIMEOUT)
    assert idle, (poller.stats, stream_summary(stack))
    events.extend(stack.receive_events(wait_seconds=2))

    # Then the publisher did fail after publishing, and the records were delivered again
    (wrapper,) = pipeline.wrappers  # type: ignore[attr-defined]
    assert wrapper.failed_invocations >= 1
    assert pipeline.stream_poller is not None
    assert pipeline.stream_poller.stats.retries + pipeline.stream_poller.stats.bisections >= 1
    enriched = Counter(
        e["detail"]["eventId"] for e in events if e["detail-type"] == "Call Enriched"
    )
    assert max(enriched.values()) >= 2  # re-sent with the same ID, as at-least-once allows
    # ... and yet each threshold of each key was announced exactly once
    ledger: PutEventsLedger = pipeline.ledger  # type: ignore[attr-defined]
    accepted, sends = ledger.snapshot()
    assert accepted == dict.fromkeys(expected, 1), (accepted, ledger.outcomes)
    # ... a handoff more only after a publication that failed (same ID, retried) ...
    failed = Counter(key for key, error in ledger.outcomes if error is not None)
    assert all(sends[key] >= 1 + failed[key] for key in expected), (sends, failed)
    # ... and a subscriber got each once, or again only for a resend of that same entry
    delivered = crossing_ids(events)
    assert set(delivered) == expected
    assert all(delivered[key] <= sends[key] for key in expected), (delivered, sends)
    # ... with the figures of the day, each call counted once
    lv = aggregate(stack, day, "country", "LV")
    assert lv["calls"] == BURST_CALLS
    burst_spend = sum(
        Decimal(str(sandbox.record(cid).final["debit"]["amount"]))
        for cid, kind in kinds.items()
        if kind == "burst"
    )
    assert lv["spend"] == {"EUR": burst_spend}
    assert lv["announced"] == {"calls-4", "calls-8", "EUR-100", "EUR-250"}
    total = aggregate(stack, day, "total", "all")
    assert total["calls"] == len(risky)
    assert total["announced"] == {"calls-5", "EUR-200"}
    crossed = {e["detail"]["eventId"]: e["detail"] for e in events if e["detail-type"] == CROSSED}
    last = crossed[f"spend:{day}:country:LV:EUR-250"]
    assert Decimal(last["value"]) >= 250
    assert last["keyKind"] == "country"
    assert last["callId"] in risky
    # ... and a called number is named by its keyed hash only
    number = crossed[f"spend:{day}:number:{premium_key}:GBP-10"]
    assert number["callId"] == premium
    assert sandbox.record(premium).final["to"]["endpoint"] not in json.dumps(crossed)

    # When the whole stream is handed to the publisher once more (read back from the stream)
    records = read_stream(stack)
    assert len(records) >= len(risky)
    handler = load_function(STREAM_APP, "app.lambda_handler", instance="stream_replay")
    from call_enricher.outbox import get_outbox

    ledger.watch(get_outbox())  # its INIT built the process-wide publisher again
    context = LocalLambdaContext("replay", 60.0, region=REGION)
    response = handler({"Records": records}, context)
    # Then every record is processed, the Call Enriched events go out again (same IDs) ...
    assert response == {"batchItemFailures": []}
    again: list[dict[str, Any]] = []

    def republished() -> bool:
        again.extend(stack.receive_events(wait_seconds=1))
        return sum(1 for e in again if e["detail-type"] == "Call Enriched") >= len(risky)

    assert wait_until(republished)
    again.extend(stack.receive_events(wait_seconds=2))
    # ... but no threshold is announced again, and nothing is counted twice
    assert crossing_ids(again) == {}
    assert ledger.snapshot() == (accepted, sends)
    assert aggregate(stack, day, "country", "LV") == lv
    assert aggregate(stack, day, "total", "all") == total

    # and the queue path counted each new version once by its risk level
    levels: Counter[str] = Counter()
    emitted = capsys.readouterr().out + (tmp_path / "handlers.log").read_text()
    for line in emitted.splitlines():  # EMF documents, wherever Powertools printed them
        if '"CallsByRiskLevel"' in line and line.startswith("{"):
            document = json.loads(line)
            levels[document["riskLevel"]] += int(sum(document["CallsByRiskLevel"]))
    assert levels == {"high": 2, "low": BURST_CALLS}


# -- the console's lines ------------------------------------------------------------------


def test_local_up_marks_flagged_calls_and_prints_crossings() -> None:
    def enriched(level: str, *codes: str) -> dict[str, Any]:
        risk = {"level": level, "signals": [{"code": code} for code in codes]}
        record = {"outcome": {"outcome": "completed"}, "risk": risk}
        detail = {"callId": "c" * 32, "status": "FINAL", "version": 1, "record": record}
        return {"detail-type": "Call Enriched", "detail": {**detail, "entryPath": "queue"}}

    flagged = describe_event(enriched("high", "premium-rate-destination", "high-rate"))
    assert flagged.endswith(
        "FINAL v1 completed [risk high: premium-rate-destination, high-rate] (entry queue)"
    )
    assert "[risk" not in describe_event(enriched("low", "cross-border"))
    assert "[risk" not in describe_event(enriched("none"))
    crossing = {
        "detail-type": CROSSED,
        "detail": {
            "day": "2026-04-13",
            "keyKind": "number",
            "key": "0123456789abcdef0123456789abcdef",
            "metric": "spend",
            "currency": "GBP",
            "threshold": "10",
            "value": "18",
            "calls": 1,
            "spend": {"GBP": "18"},
            "callId": "d" * 32,
            "version": 1,
        },
    }
    line = describe_event(crossing)
    assert line.startswith("[event] Spend Threshold Crossed: number 01234567… reached 10 GBP")
    assert "on 2026-04-13 (18 GBP, 1 calls; call dddddddd… v1)" in line
    assert "0123456789abcdef0123456789abcdef" not in line
