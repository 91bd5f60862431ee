"""End-to-end latency on the local stack: SQS message sent -> its event on the bus.

The real :class:`~call_enricher_tools.local.runner.LocalPipeline` runs (the Sinch sandbox,
moto in server mode with the template's resources, the SQS poller playing the queue
function's event source mapping and the stream poller playing the stream publisher's, with
the template's defaults for both: ``BatchSize``, ``BatchingWindowSeconds``,
``MaxConcurrency``, ``PublisherBatchSize``, a batching window of 0 on the stream). After a
few warm-up messages (the handlers' first invocation imports them), ``count`` messages of
distinct FINAL sandbox calls are sent one by one at ``rate`` per second, each with its send
time in ``context`` (``{"benchSentAt": <epoch seconds>}``), which the ``Call Enriched``
event carries back. The stack's subscriber queue (a rule on the bus matching every event
of the service) is long-polled; each event's latency is the time its receive returned
minus its send time (one clock: everything runs on this machine).

What the figure includes: the SQS batching window (1 s by default: the poller waits up to
that long to fill a batch), Sinch (the sandbox, answering at once), the conditional write,
the stream poller's read interval (0.1 s idle pause, Lambda polls a shard 4 times a second)
and the publisher's PutEvents, moto's EventBridge -> SQS delivery and the subscriber's
receive. It is the local stack's figure: AWS's own poller and delivery latencies differ.
The rate is kept well below what the stack handles on a small machine (everything shares
one interpreter with moto), so that the figure is latency, not a growing backlog.

The measurement runs in a fresh process (``python -m bench.latency COUNT RATE``): moto's
state, the handlers' modules and the environment the pipeline installs are per process.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.report import Figure, figure

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 5
RATE = 5.0  # messages per second
WAIT_AFTER_LAST_SECONDS = 30.0

# (latency splits by call ID, the call IDs sent, the settings in words)
Measured = tuple[dict[str, list[list[float]]], list[str], str]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    if not 0 < q <= 100:
        raise ValueError("q must be in (0, 100]")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def sent_at(envelope: dict[str, Any]) -> tuple[str, float, float] | None:
    """(call ID, send time, store time) of a ``Call Enriched`` envelope this bench caused
    (epoch seconds; the store time is the detail's ``storedAt``); None for any other."""
    if envelope.get("detail-type") != "Call Enriched":
        return None
    detail = envelope.get("detail") or {}
    stamp = (detail.get("context") or {}).get("benchSentAt")
    call_id, stored = detail.get("callId"), detail.get("storedAt")
    if not isinstance(stamp, int | float) or not isinstance(call_id, str):
        return None
    if not isinstance(stored, str):
        return None
    stored_at = datetime.fromisoformat(stored.replace("Z", "+00:00")).timestamp()
    return call_id, float(stamp), stored_at


class _Subscriber:
    """Long-polls the subscriber queue on a thread; the time each envelope arrived."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs, self.queue_url = sqs, queue_url
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-subscriber", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            now = time.time()
            if not messages:
                continue
            with self.lock:
                self.received.extend((now, json.loads(m["Body"])) for m in messages)
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )

    def latencies(self, call_ids: set[str]) -> dict[str, list[list[float]]]:
        """Per call ID of ``call_ids``, each of its events: [sent -> on the bus, sent ->
        stored, stored -> on the bus] in seconds."""
        found: dict[str, list[list[float]]] = {}
        with self.lock:
            for at, envelope in self.received:
                stamped = sent_at(envelope)
                if stamped is not None and stamped[0] in call_ids:
                    _, sent, stored = stamped
                    found.setdefault(stamped[0], []).append([at - sent, stored - sent, at - stored])
        return found


def _send(sqs: Any, queue_url: str, call_ids: list[str], rate: float) -> None:
    """One message per call ID, paced at ``rate`` per second (open loop)."""
    start = time.monotonic()
    for index, call_id in enumerate(call_ids):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = {"callId": call_id, "context": {"benchSentAt": time.time()}}
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))


def _wait_for(subscriber: _Subscriber, call_ids: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(subscriber.latencies(call_ids)) < len(call_ids):
        time.sleep(0.1)


def measure(count: int, rate: float = RATE) -> Measured:
    """Run the pipeline and send ``count`` messages; (latencies by call ID, call IDs sent,
    a description of the settings)."""
    from call_enricher_tools.local.runner import LocalPipeline, PipelineOptions

    with tempfile.TemporaryDirectory() as tmp:
        options = PipelineOptions(
            api_port=0,
            log_file=Path(tmp) / "handlers.log",
            # moto keeps its state per process: a fresh name per run
            stack_name=f"call-enricher-bench-{uuid.uuid4().hex[:8]}",
            sandbox_options={"seed": 7, "records": count + WARM_UP + 40, "ongoing_fraction": 0.0},
        )
        with LocalPipeline(options) as pipeline:
            stack = pipeline.require_stack()
            finals = pipeline.sandbox.call_ids("final")
            if len(finals) < count + WARM_UP:
                raise RuntimeError(f"the sandbox has {len(finals)} FINAL calls, not enough")
            warm, ids = finals[:WARM_UP], finals[WARM_UP : WARM_UP + count]
            sqs = stack.client("sqs")
            subscriber = _Subscriber(stack.client("sqs"), stack.subscriber_queue_url)
            subscriber.thread.start()
            try:
                _send(sqs, stack.queue_url, warm, rate)
                _wait_for(subscriber, set(warm), WAIT_AFTER_LAST_SECONDS)
                _send(sqs, stack.queue_url, ids, rate)
                _wait_for(subscriber, set(ids), WAIT_AFTER_LAST_SECONDS)
            finally:
                subscriber.stop.set()
                subscriber.thread.join(timeout=5)
            trigger, stream = stack.trigger, stack.require_stream_trigger()
            settings = (
                f"{count} messages at {rate:g}/s; SQS batch {trigger.batch_size}, window "
                f"{trigger.batching_window_seconds:g} s, concurrency {trigger.max_concurrency}; "
                f"stream batch {stream.batch_size}, window {stream.batching_window_seconds:g} s"
            )
            return subscriber.latencies(set(ids)), ids, settings


def _measure_in_child(count: int, rate: float) -> Measured:
    done = subprocess.run(
        [sys.executable, "-m", "bench.latency", str(count), str(rate)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode or not lines:
        raise RuntimeError(f"latency run failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(lines[-1][len("BENCH ") :])
    return result["found"], result["ids"], result["settings"]


def run(quick: bool = False) -> list[Figure]:
    count = 50 if quick else 200
    found, ids, settings = _measure_in_child(count, RATE)
    firsts = [min(values) for values in found.values()]  # each call's first event
    events = sum(len(values) for values in found.values())
    missing = len(ids) - len(found)
    total, queue, stream = ([split[i] * 1000 for split in firsts] for i in range(3))
    p50, p99 = percentile(total, 50), percentile(total, 99)
    late = f"; {missing} never arrived within {WAIT_AFTER_LAST_SECONDS:g} s" if missing else ""
    return [
        figure(
            "end-to-end latency p50 (sent -> on the bus)",
            p50,
            "ms",
            note=f"sent -> stored {percentile(queue, 50):.0f} ms, stored -> on the bus "
            f"{percentile(stream, 50):.0f} ms (p50s); {settings}",
        ),
        figure(
            "end-to-end latency p99 (sent -> on the bus)",
            p99,
            "ms",
            note=f"sent -> stored {percentile(queue, 99):.0f} ms, stored -> on the bus "
            f"{percentile(stream, 99):.0f} ms (p99s); max {max(total, default=math.nan):.0f} ms"
            f" over {len(total)} calls' first events",
        ),
        figure(
            "Call Enriched events on the bus / message",
            events / len(ids),
            "events",
            "== 1",
            f"{events} events for {len(ids)} messages of distinct FINAL calls" + late,
        ),
    ]


if __name__ == "__main__":
    found, ids, settings = measure(int(sys.argv[1]), float(sys.argv[2]))
    result = {"found": found, "ids": ids, "settings": settings}
    print("BENCH " + json.dumps(result), flush=True)
