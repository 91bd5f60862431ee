"""Cost per million calls and the throughput ceiling of one stack, from the cold-start run.

Not a module of its own in ``python -m bench``: :func:`figures` turns what
:func:`bench.coldstart.measure` measured (warm CPU per one-record invocation of each
function, AWS operations per invocation from the stand-ins' counters, the stored item's
size) into figures, at the template's defaults (:data:`DEFAULTS`) and the prices below.

Every price is here, in one place, with its source and the date it was read. The model
(``bench/README.md``): a call enters through SQS (one ``SendMessage`` by a producer), the
queue function processes it in a batch of ``BatchSize`` on ``WorkerThreads`` threads, its
one conditional write goes to the table, the stream record is published by the stream
publisher in batches of ``PublisherBatchSize`` (10 entries per ``PutEvents``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench.report import Figure, figure, section

if TYPE_CHECKING:
    from bench.coldstart import Measured

PRICES_AS_OF = "2025-06"
"""When the prices below were read: the AWS pricing pages, us-east-1, on-demand, list
prices without free tier (https://aws.amazon.com/lambda/pricing/,
https://aws.amazon.com/dynamodb/pricing/on-demand/, https://aws.amazon.com/sqs/pricing/,
https://aws.amazon.com/eventbridge/pricing/). Check them again before quoting a figure."""

LAMBDA_ARM_PER_GB_S = 0.0000133334  # Lambda, arm64, first 7.5 billion GB-s a month
LAMBDA_PER_REQUEST = 0.20 / 1e6
DYNAMODB_PER_WRITE_UNIT = 0.625 / 1e6  # on-demand write request unit (1 KB)
DYNAMODB_PER_READ_UNIT = 0.125 / 1e6  # on-demand read request unit (4 KB strongly consistent)
SQS_PER_REQUEST = 0.40 / 1e6  # standard queue, per 64 KB chunk
EVENTBRIDGE_PER_EVENT = 1.00 / 1e6  # custom events put on a bus, per 64 KB chunk
# DynamoDB Streams reads by a Lambda trigger are free; Secrets Manager reads are once per
# container per SINCH_SECRET_MAX_AGE_SECONDS (negligible per call).

DEFAULTS = {
    "BatchSize": 10,
    "WorkerThreads": 10,
    "MaxConcurrency": 5,
    "PublisherBatchSize": 100,
    "ApiThrottlingRateLimit": 50,
}
"""The template's parameter defaults this model uses (template.yaml)."""

SINCH_LATENCY_S = 0.2
"""Assumed Sinch answer time (GET /calling/v1/calls/id): the queue function's I/O wait."""

AWS_LATENCY_S = 0.01
"""Assumed in-region DynamoDB/EventBridge request time."""

STREAM_SHARDS = 1
"""Shards of the calls table's stream for a new, small on-demand table (DynamoDB adds
shards as partitions split; one publisher invocation per shard at a time)."""

PUTEVENTS_QUOTA_SMALL_REGION = 400
"""PutEvents requests per second in the smallest regions (10,000 in us-east-1, us-west-2 and
eu-west-1); each request carries up to 10 entries."""


def _units(size_bytes: float, unit_bytes: int) -> int:
    return max(1, math.ceil(size_bytes / unit_bytes))


def figures(measured: Measured) -> list[Figure]:
    from bench.coldstart import CPU_PER_VCPU_MB, phase

    by_name = {v.name: v for v in measured.variants}
    if "queue" not in by_name or "publisher" not in by_name:
        return []
    mem = measured.memory
    batch, threads = DEFAULTS["BatchSize"], DEFAULTS["WorkerThreads"]
    pub_batch = DEFAULTS["PublisherBatchSize"]

    def duration_s(name: str, io_s: float) -> float:
        """Billed seconds per record: CPU at the function's share + its share of I/O wait."""
        cpu_s = phase(by_name[name], 1) / 1000 * CPU_PER_VCPU_MB / mem[name]
        return cpu_s + io_s

    queue_s = duration_s("queue", (SINCH_LATENCY_S + AWS_LATENCY_S) / min(batch, threads))
    pub_s = duration_s("publisher", AWS_LATENCY_S / 10)  # one PutEvents per 10 records
    per_million = 1e6
    lambda_queue = per_million * (
        queue_s * mem["queue"] / 1024 * LAMBDA_ARM_PER_GB_S + LAMBDA_PER_REQUEST / batch
    )
    lambda_pub = per_million * (
        pub_s * mem["publisher"] / 1024 * LAMBDA_ARM_PER_GB_S + LAMBDA_PER_REQUEST / pub_batch
    )
    calls = measured.calls.get("queue", {})
    writes = calls.get("UpdateItem", 1.0) + calls.get("PutItem", 0.0)
    reads = calls.get("BatchGetItem", 0.0) + calls.get("GetItem", 0.0)
    write_units = writes * _units(measured.item_bytes, 1024)
    read_units = reads * 0.5 * _units(measured.item_bytes, 4096)  # eventually consistent
    dynamodb = per_million * (
        write_units * DYNAMODB_PER_WRITE_UNIT + read_units * DYNAMODB_PER_READ_UNIT
    )
    # producer SendMessage + the poller's ReceiveMessage and DeleteMessageBatch per batch
    sqs = per_million * SQS_PER_REQUEST * (1 + 2 / batch)
    events = per_million * EVENTBRIDGE_PER_EVENT
    total = lambda_queue + lambda_pub + dynamodb + sqs + events
    note = f"per million calls, prices of {PRICES_AS_OF} (bench/cost.py)"
    out = [
        section("cost per million calls (template defaults, us-east-1 list prices)"),
        figure("cost: total", total, "USD", note=note),
        figure(
            "  cost: queue function (Lambda)",
            lambda_queue,
            "USD",
            note=f"{queue_s * 1000:.1f} ms billed per record at {mem['queue']} MB: warm CPU "
            f"x{CPU_PER_VCPU_MB / mem['queue']:.2f} + Sinch {SINCH_LATENCY_S * 1000:.0f} ms "
            f"shared by {min(batch, threads)} threads; 1 request per {batch} records",
        ),
        figure(
            "  cost: stream publisher (Lambda)",
            lambda_pub,
            "USD",
            note=f"{pub_s * 1000:.2f} ms billed per record at {mem['publisher']} MB, "
            f"1 request per {pub_batch} records",
        ),
        figure(
            "  cost: DynamoDB",
            dynamodb,
            "USD",
            note=f"{writes:.1f} writes x {_units(measured.item_bytes, 1024)} WRU "
            f"(item {measured.item_bytes / 1024:.1f} KB) + {reads:.1f} reads per call, "
            "measured; stream reads by Lambda are free",
        ),
        figure("  cost: SQS", sqs, "USD", note=f"SendMessage + (Receive + Delete)/{batch}"),
        figure("  cost: EventBridge", events, "USD", note="one Call Enriched event per call"),
    ]
    queue_ceiling = DEFAULTS["MaxConcurrency"] * threads / (SINCH_LATENCY_S + AWS_LATENCY_S)
    pub_invocation_s = pub_batch * pub_s + 0.25  # + the poller's interval per shard
    shard_ceiling = STREAM_SHARDS * pub_batch / pub_invocation_s
    putevents_ceiling = PUTEVENTS_QUOTA_SMALL_REGION * 10
    out += [
        section("throughput ceiling of one stack (template defaults)"),
        figure(
            "ceiling: queue function",
            queue_ceiling,
            "calls/s",
            note=f"MaxConcurrency {DEFAULTS['MaxConcurrency']} x WorkerThreads {threads} / "
            f"Sinch {SINCH_LATENCY_S * 1000:.0f} ms; raise MaxConcurrency (and WorkerThreads "
            "up to BatchSize); Sinch's own rate limit is the next bound",
        ),
        figure(
            "ceiling: stream publisher",
            shard_ceiling,
            "calls/s",
            note=f"{STREAM_SHARDS} shard(s) x {pub_batch} records per invocation of "
            f"{pub_invocation_s:.2f} s; raise ParallelizationFactor (up to 10 per shard: "
            "order per call is kept) or PublisherBatchSize; shards grow with the table",
        ),
        figure(
            "ceiling: PutEvents quota (small region)",
            putevents_ceiling,
            "events/s",
            note=f"{PUTEVENTS_QUOTA_SMALL_REGION} requests/s x 10 entries; a Service Quotas "
            "increase raises it",
        ),
        figure(
            "ceiling: HTTP API",
            DEFAULTS["ApiThrottlingRateLimit"],
            "requests/s",
            note="ApiThrottlingRateLimit (POST /calls takes up to 100 IDs per request)",
        ),
    ]
    return out
