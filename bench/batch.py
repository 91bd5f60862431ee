"""Batch latency, speed-up over a naive handler, AWS calls per record, Sinch connections.

The real :class:`EnrichmentService` (thread pool, Sinch client, ``CallStore``; no publisher:
the calls table is the outbox) processes SQS-shaped work items against:

* Sinch: :class:`bench.standins.SinchProcess`, real HTTP in its own process, answering after
  100 ms and counting the TCP connections it accepts;
* AWS: :class:`bench.standins.FakeAws` in-process clients (no HTTP, no moto): what is
  measured is our code, and every AWS call is counted per operation. The fake table keeps
  its stream (old and new image of every change).

The stream publisher's share: the stream records the batch left are handed, as
:class:`~call_enricher.outbox.StreamChange` values in batches of the template's
``PublisherBatchSize``, to the real :class:`~call_enricher.outbox.OutboxPublisher`
(``EventPublisher`` and ``FailureRecorder`` on the same fakes), and its ``PutEvents`` calls
are counted per record.

The function is warm (one small batch first, as after a cold start); each figure uses fresh
call IDs unless it is about redelivery.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import uuid
from typing import Any

from bench.report import Figure, figure
from bench.standins import BENCH_KEY, BENCH_SECRET, FakeAws, SinchProcess, StreamRecord

DELAY = 0.1
THREADS = 10
REMAINING_MS = 900_000


def _ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


def _service(aws: FakeAws, sinch_url: str, **overrides: str) -> Any:
    from call_enricher.service import EnrichmentService, SinchClients
    from call_enricher.settings import Settings
    from call_enricher.sinch.auth import SinchCredentials
    from call_enricher.sinch.client import SinchClient
    from call_enricher.storage import CallStore

    settings = Settings.from_env(
        {
            "CALLS_TABLE_NAME": "calls",
            "EVENT_BUS_NAME": "bus",
            "SINCH_BASE_URL": sinch_url,
            "WORKER_THREADS": str(THREADS),
            **overrides,
        }
    )
    credentials = SinchCredentials(application_key=BENCH_KEY, application_secret=BENCH_SECRET)

    def source(force_refresh: bool = False) -> SinchCredentials:
        return credentials

    def make_client(base_url: str, on_attempt: Any) -> SinchClient:
        return SinchClient(
            source,
            base_url=base_url,
            auth=settings.sinch_auth_scheme,
            connect_timeout=settings.sinch_connect_timeout_seconds,
            read_timeout=settings.sinch_read_timeout_seconds,
            max_attempts=settings.sinch_max_attempts,
            pool_size=settings.worker_threads,
            on_attempt=on_attempt,
        )

    return EnrichmentService(
        settings,
        sinch=SinchClients(make_client),
        store=CallStore(settings.calls_table_name, client=aws.client("dynamodb")),
        queue=None,
    )


def fake_outbox(aws: FakeAws) -> Any:
    """The stream publisher's core on the fakes (what its function builds from settings)."""
    from call_enricher.items import FailureRecorder
    from call_enricher.outbox import OutboxPublisher
    from call_enricher.publishing import EventPublisher

    return OutboxPublisher(
        EventPublisher("bus", "call-enricher", client=aws.client("events")),
        FailureRecorder("calls", client=aws.client("dynamodb")),
    )


def stream_changes(records: list[StreamRecord]) -> list[Any]:
    """The fake table's stream records as the stream publisher gets them."""
    from call_enricher.items import parse_item
    from call_enricher.outbox import StreamChange

    return [
        StreamChange(
            key=record.sequence,
            item_key=record.key,
            old=parse_item(record.old) if record.old else None,
            new=parse_item(record.new) if record.new else None,
        )
        for record in records
    ]


def publish_stream(outbox: Any, records: list[StreamRecord], batch_size: int) -> dict[str, int]:
    """Hand ``records`` to the publisher in stream batches of ``batch_size``, as the event
    source mapping does; what it published, rejected and failed, in all."""
    totals = {"published": 0, "rejected": 0, "failed": 0, "invocations": 0}
    changes = stream_changes(records)
    for start in range(0, len(changes), batch_size):
        report = outbox.publish(changes[start : start + batch_size])
        totals["published"] += report.published
        totals["rejected"] += report.rejected
        totals["failed"] += len(report.failed)
        totals["invocations"] += 1
    return totals


def publisher_batch_size() -> int:
    """``PublisherBatchSize``: the template's default (the stream mapping's BatchSize)."""
    from call_enricher_tools.local.template import Template

    return int(Template.load().parameter_defaults()["PublisherBatchSize"])


def _process(service: Any, call_ids: list[str]) -> tuple[float, Any]:
    from call_enricher.service import work_item_from_message

    items = [work_item_from_message(uuid.uuid4().hex, f'{{"callId": "{c}"}}') for c in call_ids]
    t0 = time.perf_counter()
    report = service.process(items, remaining_ms=lambda: REMAINING_MS)
    elapsed = time.perf_counter() - t0
    outcomes = {r.outcome.value for r in report.results.values()}
    return elapsed, outcomes


def _naive_sequential(aws: FakeAws, sinch_url: str, call_ids: list[str]) -> float:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    for name, value in (
        ("SINCH_BASE_URL", sinch_url),
        ("SINCH_APPLICATION_KEY", BENCH_KEY),
        ("SINCH_APPLICATION_SECRET", BENCH_SECRET),
        ("CALLS_TABLE_NAME", "calls"),
        ("EVENT_BUS_NAME", "bus"),
    ):
        os.environ[name] = value
    from bench.naive import queue as naive

    naive.SINCH_URL = sinch_url
    naive.dynamodb = aws.client("dynamodb")
    naive.events = aws.client("events")
    event = {
        "Records": [
            {"messageId": uuid.uuid4().hex, "body": f'{{"callId": "{c}"}}'} for c in call_ids
        ]
    }
    t0 = time.perf_counter()
    result = naive.lambda_handler(event, None)
    elapsed = time.perf_counter() - t0
    if result["batchItemFailures"]:
        raise RuntimeError(f"naive handler failed {len(result['batchItemFailures'])} records")
    return elapsed


def run(quick: bool = False) -> list[Figure]:
    runs = 1 if quick else 3
    batch = 100
    figures: list[Figure] = []
    with SinchProcess(DELAY) as sinch:
        aws = FakeAws()
        service = _service(aws, sinch.url)
        _process(service, _ids(THREADS))  # warm function: pools and clients exist

        # 2. Latency of 100 IDs at concurrency 10, connections and AWS calls per record.
        walls, connections = [], []
        for i in range(runs):
            sinch.reset()
            aws.reset_counts()
            position = len(aws.dynamodb.stream)
            ids = _ids(batch)
            wall, outcomes = _process(service, ids)
            if outcomes != {"enriched"}:
                raise RuntimeError(f"unexpected outcomes in the batch: {outcomes}")
            walls.append(wall)
            connections.append(sinch.stats()["connections"])
            if i == 0:
                first_ids, calls = ids, aws.calls()
                first_records = aws.dynamodb.stream_since(position)
        ideal = math.ceil(batch / THREADS) * DELAY
        wall = statistics.median(walls)
        figures.append(
            figure(
                "batch 100 IDs @10: wall / ideal",
                wall / ideal,
                "ratio",
                "<= 1.25",
                f"{wall * 1000:.0f} ms vs ideal {ideal * 1000:.0f} ms, median of {runs}",
            )
        )
        small = statistics.median(_process(service, _ids(THREADS))[0] for _ in range(runs + 2))
        figures.append(
            figure(
                "batch 10 IDs @10: wall / 100 ms",
                small / DELAY,
                "ratio",
                "<= 1.25",
                f"{small * 1000:.0f} ms, median of {runs + 2}",
            )
        )

        # 3. Naive sequential handler, same batch, same stand-ins (fresh AWS fakes).
        naive_wall = _naive_sequential(
            FakeAws(), sinch.url, first_ids if not quick else first_ids[:30]
        )
        naive_per_batch = naive_wall * (batch / (batch if not quick else 30))
        figures.append(
            figure(
                "speed-up over naive sequential",
                naive_per_batch / wall,
                "x",
                ">= 8",
                f"naive {naive_per_batch * 1000:.0f} ms per {batch}"
                + (" (extrapolated from 30 in --quick)" if quick else "")
                + "; it also calls PutEvents per record",
            )
        )

        # 5. AWS calls per record, steady state (new FINAL records, first delivery).
        writes = calls["UpdateItem"] + calls["PutItem"] + calls["BatchWriteItem"]
        figures.append(
            figure(
                "DynamoDB write calls / record, first delivery",
                writes / batch,
                "calls",
                "<= 1.0",
                f"one conditional UpdateItem per new FINAL record; "
                f"{len(first_records)} stream records for {batch} records",
            )
        )
        figures.append(
            figure(
                "PutEvents calls in the queue function",
                calls["PutEvents"],
                "calls",
                "== 0",
                f"per batch of {batch}: events come from the table's stream only",
            )
        )
        # The stream publisher's share: the batch's stream records, published.
        size = publisher_batch_size()
        aws.reset_counts()
        published = publish_stream(fake_outbox(aws), first_records, size)
        outbox_calls = aws.calls()
        figures.append(
            figure(
                "stream publisher: PutEvents calls / record",
                outbox_calls["PutEvents"] / max(1, len(first_records)),
                "calls",
                "<= 0.1",
                f"{len(first_records)} stream records -> {published['published']} events in "
                f"{outbox_calls['PutEvents']} PutEvents ({published['invocations']} invocations "
                f"of <= {size} records, <= 10 entries per request); "
                f"{outbox_calls['UpdateItem']} table writes, {published['failed']} failed",
            )
        )
        figures.append(
            figure(
                "DynamoDB reads / record, first delivery",
                (calls["GetItem"] + calls["BatchGetItem"]) / batch,
                "calls",
                note=f"{calls['BatchGetItem']} BatchGetItem per batch (fresh-FINAL pre-read)",
            )
        )
        # Redelivery of the same IDs: stored FINAL and fresh, served from the table.
        aws.reset_counts()
        sinch.reset()
        position = len(aws.dynamodb.stream)
        _, outcomes = _process(service, first_ids)
        again = aws.calls()
        figures.append(
            figure(
                "redelivered batch: extra reads / record",
                again["GetItem"] / batch,
                "calls",
                "<= 0",
                f"{again['BatchGetItem']} BatchGetItem for the batch, "
                f"{sinch.stats()['requests']} Sinch GETs, {again['UpdateItem']} writes, "
                f"{len(aws.dynamodb.stream_since(position))} stream records; "
                f"{','.join(sorted(outcomes))}",
            )
        )
        # Same IDs past the freshness window: Sinch asked, record unchanged.
        stale = _service(aws, sinch.url, FINAL_FRESHNESS_SECONDS="0")
        aws.reset_counts()
        position = len(aws.dynamodb.stream)
        _, outcomes = _process(stale, first_ids)
        unchanged = aws.calls()
        figures.append(
            figure(
                "unchanged record re-fetched: reads / record",
                (unchanged["GetItem"] + unchanged["BatchGetItem"]) / batch,
                "calls",
                "<= 0",
                f"{unchanged['UpdateItem'] / batch:.2f} conditional UpdateItem/record (refused), "
                f"{len(aws.dynamodb.stream_since(position))} stream records, "
                f"{unchanged['PutEvents']} PutEvents; {','.join(sorted(outcomes))}",
            )
        )

        # 6. New TCP connections to Sinch per 100 records on the warm function.
        figures.append(
            figure(
                "new Sinch connections / 100 records (warm)",
                max(connections),
                "conns",
                f"<= {THREADS}",
                f"counted at the server, max of {runs} batches; {THREADS} threads",
            )
        )
    return figures
