"""The chaos run: N call IDs through the local stack under injected faults, then an accounting.

``python -m call_enricher_tools.chaos --ids 10000`` (``make chaos``) sends N call IDs to the
local stack's enrichment queue (moto server built from ``template.yaml``, the SQS poller
playing the event source mapping with its redrive to the DLQ, the real queue handler) while

* a fault-injecting Sinch stand-in (:class:`ChaosSinch`, HTTP on 127.0.0.1, checking every
  request's signature) answers, per request, 10 % 5xx, 5 % 429 (half with ``Retry-After``),
  2 % hangs past the client's read timeout and 2 % malformed bodies; 5 % of the IDs are
  unknown (404) and 10 % are ONGOING calls that turn FINAL a little later;
* the AWS side fails too: the service's DynamoDB client throttles ``UpdateItem`` (record
  writes and publish markers) and its EventBridge client fails ``PutEvents`` entries
  (``InternalFailure``), each at a configured rate. Both are injected *above* botocore, i.e.
  as failures that outlasted botocore's own retries.

Every decision comes from a seeded RNG keyed by (call ID, what, how many times asked), so a
run is reproducible whatever the thread interleaving. Sinch's timeouts and the re-check delay
are short so the run is fast. The function timeout and the visibility timeout are not cut as
short: a batch that outlives either is handled twice (the first delivery's work is done, the
second repeats it), which is no fault of the service but breaks the accounting; the report
shows how close the run came (``batches_failed``, ``max_handler_seconds``,
``max_batch_seconds``, ``batches_held_past_visibility``).

It ends with an accounting (:class:`ChaosReport`), one ``name: value`` line per count. Every ID
must be in exactly one terminal state:

* ``final``: stored FINAL, and its stored version's ``Call Enriched`` event was seen;
* ``failed``: a ``Call Enrichment Failed`` event was seen for it;
* ``dlq``: its message is in the dead-letter queue.

``lost`` (no terminal state), ``multiple`` (more than one), ``regressions`` (a FINAL record
followed by a non-FINAL version, or stored non-FINAL after a FINAL event) and
``unexplained_duplicates`` (an ``eventId`` seen twice that no injected failure of the publish
marker explains: the one documented at-least-once window) must all be 0, and the queue must
have drained within the time limit, or the run exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from call_enricher.sinch.auth import SinchCredentials
from call_enricher_tools.sandbox.faults import keyed_rng as _rng
from call_enricher_tools.sinch_standin import (
    GET_CALL_PATH,
    Answerer,
    RecordedRequest,
    Reply,
    SinchStandIn,
    sinch_error,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
QUEUE_APP = REPO_ROOT / "functions" / "queue_enricher" / "app.py"
MAX_BACKLOG = 200
"""Visible messages above which the chaos run's producer pauses."""
CHAOS_CREDENTIALS = SinchCredentials(
    application_key="c4a05000-0000-4000-8000-00000000c4a0",
    application_secret="Y2hhb3Mtc2VjcmV0LW5ldmVyLWxvZy10aGlzLTAxMjM=",  # noqa: S106 (local only)
)

# Numbers of the stand-in's records: realistic shapes from several countries (Ofcom's and
# NANP's drama ranges where they exist). The last digits vary per call ID.
_NUMBER_PREFIXES = ("+4670123", "+4477009001", "+1202555", "+4930123", "+6140123", "+9198765")


@dataclass(frozen=True)
class ChaosConfig:
    """Fault rates (fractions) and the run's timing knobs."""

    sinch_5xx: float = 0.10
    sinch_429: float = 0.05
    sinch_hang: float = 0.02
    sinch_malformed: float = 0.02
    unknown_ids: float = 0.05
    ongoing_ids: float = 0.10
    dead_ids: float = 0.0
    """IDs Sinch always fails with 503: retried maxReceiveCount times, then the DLQ."""
    max_receive_count: int | None = None
    """Override the template's MaxReceiveCount (None: the template's default)."""
    ongoing_seconds: float = 2.0
    """How long an ONGOING call stays ONGOING after Sinch was first asked about it."""
    ddb_throttle: float = 0.03
    put_events_failure: float = 0.05
    read_timeout_seconds: float = 0.5
    connect_timeout_seconds: float = 0.5
    function_timeout_seconds: float = 10.0
    """The queue function's timeout. A batch that runs past it fails as a whole, as in Lambda
    (nothing is deleted): every message of it is redelivered although its work is done, so
    its failure events come out twice, or a call ends both failed and FINAL when Sinch
    answers differently the second time. So the timeout, with :attr:`deadline_margin_ms`,
    must cover the slowest batch: moto slows down under load (one process, one GIL), and with
    5 s and a 0.5 s margin batches ran up to 9.9 s in a 3,000-ID run on a busy machine."""
    deadline_margin_ms: int = 4000
    """``DEADLINE_MARGIN_MS``: no record starts later than this before the timeout, leaving
    the time to store, publish, mark and re-check (slow under load; production: 3 s of 60)."""
    visibility_timeout_seconds: int = 31
    """Three function timeouts plus the batching window (1 s): a batch must never be handed to
    a second poller while the first still works on it (that is a duplicate delivery). Locally
    the handler is not stopped at its timeout, so this leaves room for an overrun as well
    (see ``max_batch_seconds`` and ``batches_held_past_visibility`` in the report)."""
    time_limit_seconds: float = 600.0


# --- the Sinch stand-in ---------------------------------------------------------------------


def call_ids(n: int, seed: int) -> list[str]:
    """N distinct, well-formed (32 hex characters) call IDs derived from the seed."""
    return [
        hashlib.md5(f"{seed}:{i}".encode(), usedforsecurity=False).hexdigest() for i in range(n)
    ]


def chaos_record(call_id: str, seed: int, *, status: str = "FINAL") -> dict[str, Any]:
    """The Get Call record the stand-in serves for ``call_id`` (deterministic)."""
    rng = _rng(seed, call_id, "record")
    caller = rng.choice(_NUMBER_PREFIXES) + f"{rng.randrange(10_000):04d}"
    callee = rng.choice(_NUMBER_PREFIXES) + f"{rng.randrange(10_000):04d}"
    final = status == "FINAL"
    duration = rng.randrange(1, 900) if final else 0
    return {
        "callId": call_id,
        "from": {"type": "number", "endpoint": caller},
        "to": {"type": "number", "endpoint": callee},
        "domain": "pstn",
        "duration": duration,
        "status": status,
        "result": "ANSWERED" if final else "N/A",
        "reason": rng.choice(("CALLERHANGUP", "CALLEEHANGUP")) if final else "N/A",
        "timestamp": "2026-11-26T10:00:00",
        "custom": "{}",
        "userRate": {"currencyId": "EUR", "amount": 0.0123},
        "debit": {"currencyId": "EUR", "amount": round(0.0123 * duration / 60, 4)},
    }


class ChaosAnswers(Answerer):
    """Get Call answers with seeded per-request faults (the answerer of :class:`ChaosSinch`)."""

    def __init__(self, seed: int, config: ChaosConfig) -> None:
        self.seed = seed
        self.config = config
        self.injected: Counter[str] = Counter()
        self.requests_per_id: Counter[str] = Counter()
        self.records_served: set[str] = set()
        self._first_asked: dict[str, float] = {}
        self._lock = threading.Lock()

    def kind(self, call_id: str) -> str:
        """``unknown``, ``ongoing``, ``dead`` or ``final`` (decided once per ID, by the seed)."""
        draw = _rng(self.seed, call_id, "kind").random()
        for kind, rate in (
            ("unknown", self.config.unknown_ids),
            ("ongoing", self.config.ongoing_ids),
            ("dead", self.config.dead_ids),
        ):
            if draw < rate:
                return kind
            draw -= rate
        return "final"

    def answer(self, request: RecordedRequest) -> Reply:
        path = request.path
        if not path.startswith(GET_CALL_PATH):
            return sinch_error(404, 40400, "Not found")
        call_id = path.removeprefix(GET_CALL_PATH)
        with self._lock:
            self.requests_per_id[call_id] += 1
            asked = self.requests_per_id[call_id]
            first = self._first_asked.setdefault(call_id, time.monotonic())
        if self.kind(call_id) == "dead":
            self._count("sinch-dead-id")
            return sinch_error(503, 50300, "Service unavailable")
        draw = _rng(self.seed, call_id, "request", asked).random()
        config = self.config
        for name, rate in (
            ("sinch-5xx", config.sinch_5xx),
            ("sinch-429", config.sinch_429),
            ("sinch-hang", config.sinch_hang),
            ("sinch-malformed", config.sinch_malformed),
        ):
            if draw < rate:
                self._count(name)
                return self._fault(name, call_id, asked)
            draw -= rate
        kind = self.kind(call_id)
        if kind == "unknown":
            return sinch_error(404, 40400, "Call not found")
        status = "FINAL"
        if kind == "ongoing" and time.monotonic() - first < config.ongoing_seconds:
            status = "ONGOING"
        with self._lock:
            self.records_served.add(call_id)
        return Reply.json(chaos_record(call_id, self.seed, status=status))

    @staticmethod
    def _fault(name: str, call_id: str, asked: int) -> Reply:
        if name == "sinch-5xx":
            status = 503 if asked % 2 else 500
            return sinch_error(status, status * 100, "Service unavailable")
        if name == "sinch-429":
            headers = {"Retry-After": "1"} if asked % 2 else {}
            return sinch_error(429, 42900, "Too many requests", headers=headers)
        if name == "sinch-hang":
            return Reply(hang=True)
        return Reply(200, b'{"callId": "' + call_id.encode() + b'", "status": "FIN')

    def _count(self, name: str) -> None:
        with self._lock:
            self.injected[name] += 1


class ChaosSinch(SinchStandIn[ChaosAnswers]):
    """Get Call on 127.0.0.1 with seeded per-request faults, checking every request's
    signature. ``start()`` / ``stop()``; a hang holds past the client's read timeout."""

    def __init__(self, credentials: SinchCredentials, seed: int, config: ChaosConfig) -> None:
        super().__init__(
            ChaosAnswers(seed, config),
            credentials=credentials,
            hang_seconds=config.read_timeout_seconds + 0.5,
            record=False,
        )

    def kind(self, call_id: str) -> str:
        """``unknown``, ``ongoing``, ``dead`` or ``final`` (decided once per ID, by the seed)."""
        return self.answerer.kind(call_id)

    def phone_numbers(self, ids: Sequence[str]) -> set[str]:
        """Every endpoint the stand-in can serve for ``ids`` (for the log-leak checks)."""
        numbers: set[str] = set()
        for call_id in ids:
            record = chaos_record(call_id, self.answerer.seed)
            numbers.update({record["from"]["endpoint"], record["to"]["endpoint"]})
        return numbers

    @property
    def injected(self) -> Counter[str]:
        """Faults injected per name; ``auth-rejected``: requests that failed the check."""
        injected = Counter(self.answerer.injected)
        rejected = sum(self.auth_failures.values())
        if rejected:
            injected["auth-rejected"] = rejected
        return injected

    @property
    def requests_per_id(self) -> Counter[str]:
        return self.answerer.requests_per_id

    @property
    def records_served(self) -> set[str]:
        return self.answerer.records_served


# --- failing AWS clients ---------------------------------------------------------------------


class _FaultyClient:
    """A boto3 client whose chosen operations fail at a seeded rate; the rest pass through."""

    def __init__(self, client: Any, seed: int, rate: float) -> None:
        self._client = client
        self._seed = seed
        self._rate = rate
        self._lock = threading.Lock()
        self._asked: Counter[tuple[str, str]] = Counter()
        self.injected: Counter[str] = Counter()
        self.failed_marks: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _fails(self, what: str, call_id: str) -> bool:
        with self._lock:
            self._asked[(what, call_id)] += 1
            asked = self._asked[(what, call_id)]
        return _rng(self._seed, call_id, what, asked).random() < self._rate


class FaultyDynamoDB(_FaultyClient):
    """Throttles ``UpdateItem`` (record writes and publish markers) at the rate."""

    def update_item(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        call_id = str(kwargs.get("Key", {}).get("callId", {}).get("S", ""))
        marker = kwargs.get("UpdateExpression") == "SET #publishedVersion = :version"
        what = "mark" if marker else "save"
        if self._fails(what, call_id):
            with self._lock:
                self.injected[f"dynamodb-throttled-{what}"] += 1
                if marker:
                    self.failed_marks.add(call_id)
            error: Any = {
                "Error": {
                    "Code": "ProvisionedThroughputExceededException",
                    "Message": "injected by the chaos run",
                },
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
            raise ClientError(error, "UpdateItem")
        return self._client.update_item(**kwargs)


class FaultyEventBridge(_FaultyClient):
    """Fails ``PutEvents`` entries (``InternalFailure``) at the rate; sends the others."""

    def put_events(self, **kwargs: Any) -> Any:
        entries = kwargs["Entries"]
        failing: list[bool] = []
        for entry in entries:
            try:
                detail = json.loads(entry.get("Detail") or "{}")
                key = str(detail.get("eventId") or detail.get("callId"))
            except ValueError:
                key = "?"
            failing.append(self._fails("put-events", key))
        keep = [entry for entry, fails in zip(entries, failing, strict=True) if not fails]
        response = self._client.put_events(**{**kwargs, "Entries": keep}) if keep else {}
        results = iter(response.get("Entries", []))
        merged: list[dict[str, Any]] = []
        for fails in failing:
            if fails:
                merged.append({"ErrorCode": "InternalFailure", "ErrorMessage": "injected"})
            else:
                merged.append(next(results, {"ErrorCode": "InternalFailure"}))
        failed = sum(1 for result in merged if result.get("ErrorCode"))
        with self._lock:
            self.injected["put-events-entry-failed"] += sum(failing)
        return {"FailedEntryCount": failed, "Entries": merged}


# --- the run -------------------------------------------------------------------------------


@dataclass
class ChaosReport:
    """The accounting of a chaos run. :meth:`lines` is the printed report."""

    ids: int
    seed: int
    final: int = 0
    failed: int = 0
    dlq: int = 0
    lost: int = 0
    multiple: int = 0
    regressions: int = 0
    duplicates: int = 0
    unexplained_duplicates: int = 0
    drained: bool = False
    elapsed_seconds: float = 0.0
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    dlq_by_reason: Counter[str] = field(default_factory=Counter)
    """The reason of each DLQ'd ID's last retry (SQS keeps the body only, not the reason)."""
    receives: Counter[int] = field(default_factory=Counter)
    sinch_requests: Counter[int] = field(default_factory=Counter)
    latency_seconds: list[float] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    events: int = 0
    batches: int = 0
    batches_failed: int = 0
    """Invocations that failed as a whole: past the function timeout (the work is redone),
    or every record of the batch retried (Powertools then raises, on purpose)."""
    max_handler_seconds: float = 0.0
    max_batch_seconds: float = 0.0
    """Longest a batch was held, from its first receive to its delete."""
    batches_held_past_visibility: int = 0
    """Batches held as long as the visibility timeout: their messages may have been handed
    out again while still at work (the window for duplicate deliveries)."""
    lost_ids: list[str] = field(default_factory=list)
    dlq_ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        """True when every ID has exactly one terminal state and nothing broke a promise."""
        return (
            self.drained
            and self.final + self.failed + self.dlq == self.ids
            and self.lost == 0
            and self.multiple == 0
            and self.regressions == 0
            and self.unexplained_duplicates == 0
        )

    def lines(self) -> list[str]:
        lat = sorted(self.latency_seconds)

        def pct(p: float) -> str:
            return f"{lat[min(len(lat) - 1, int(p * len(lat)))]:.2f}" if lat else "n/a"

        def dist(counter: Counter[int]) -> str:
            return " ".join(f"{k}={counter[k]}" for k in sorted(counter)) or "none"

        out = [
            f"ids: {self.ids}",
            f"final: {self.final}",
            f"failed: {self.failed}",
            f"dlq: {self.dlq}",
            f"lost: {self.lost}",
            f"multiple: {self.multiple}",
            f"regressions: {self.regressions}",
            f"duplicates: {self.duplicates}",
            f"unexplained_duplicates: {self.unexplained_duplicates}",
            f"drained: {'yes' if self.drained else 'no'}",
            f"events: {self.events}",
        ]
        out += [f"failed.{reason}: {n}" for reason, n in sorted(self.failed_by_reason.items())]
        out += [f"dlq.{reason}: {n}" for reason, n in sorted(self.dlq_by_reason.items())]
        out += [f"injected.{name}: {n}" for name, n in sorted(self.injected.items())]
        out += [
            f"receives_per_id: {dist(self.receives)}",
            f"sinch_requests_per_id: {dist(self.sinch_requests)}",
            f"latency_seconds: p50={pct(0.5)} p90={pct(0.9)} p99={pct(0.99)} max={pct(1.0)}",
            f"batches: {self.batches}",
            f"batches_failed: {self.batches_failed}",
            f"max_handler_seconds: {self.max_handler_seconds:.1f}",
            f"max_batch_seconds: {self.max_batch_seconds:.1f}",
            f"batches_held_past_visibility: {self.batches_held_past_visibility}",
            f"elapsed_seconds: {self.elapsed_seconds:.1f}",
            f"seed: {self.seed}",
            f"balanced: {'yes' if self.balanced else 'NO'}",
        ]
        out += [f"problem: {problem}" for problem in self.problems[:20]]
        return out


def run_chaos(
    n: int,
    seed: int = 1,
    *,
    config: ChaosConfig | None = None,
    progress: TextIO | None = None,
    quiet: bool = False,
    on_started: Callable[[ChaosSinch, list[str]], None] | None = None,
) -> ChaosReport:
    """Send ``n`` call IDs through the local stack under faults; return the accounting.

    ``quiet`` silences the handlers' log lines and EMF output (the CLI's default);
    ``progress`` gets a line every few seconds; ``on_started(sinch, ids)`` is called once the
    stand-in is up (tests use it to learn the phone numbers it serves).
    """
    from call_enricher import aws, runtime
    from call_enricher.observability import logger
    from call_enricher.publishing import EventPublisher
    from call_enricher.settings import get_settings
    from call_enricher.storage import CallStore
    from call_enricher_tools.local.poller import Invocation, SqsPoller, load_function
    from call_enricher_tools.local.stack import LocalStack

    config = config or ChaosConfig()
    ids = call_ids(n, seed)
    report = ChaosReport(ids=n, seed=seed)
    started = time.monotonic()
    receives: dict[str, int] = defaultdict(int)
    lock = threading.Lock()

    with contextlib.ExitStack() as exits:
        sinch = exits.enter_context(ChaosSinch(CHAOS_CREDENTIALS, seed, config))
        if on_started is not None:
            on_started(sinch, ids)
        stack = LocalStack(
            sinch_credentials=CHAOS_CREDENTIALS,
            sinch_base_url=sinch.base_url,
            stack_name=f"chaos-{seed}-{uuid.uuid4().hex[:6]}",
            visibility_timeout_seconds=config.visibility_timeout_seconds,
            parameters={
                "RecheckBaseDelaySeconds": "1",
                **(
                    {"MaxReceiveCount": str(config.max_receive_count)}
                    if config.max_receive_count
                    else {}
                ),
            },
            extra_environment={
                "SINCH_READ_TIMEOUT_SECONDS": str(config.read_timeout_seconds),
                "SINCH_CONNECT_TIMEOUT_SECONDS": str(config.connect_timeout_seconds),
                "DEADLINE_MARGIN_MS": str(config.deadline_margin_ms),
            },
        )
        exits.enter_context(stack)
        stack.apply_environment()
        if quiet:
            exits.enter_context(_silenced(logger))

        dynamodb = FaultyDynamoDB(aws.client("dynamodb"), seed, config.ddb_throttle)
        events = FaultyEventBridge(aws.client("events"), seed, config.put_events_failure)
        settings = get_settings()
        service = runtime.build_service(settings)
        service.store = CallStore(
            settings.calls_table_name, ttl_days=settings.record_ttl_days, client=dynamodb
        )
        service.publisher = EventPublisher(
            settings.event_bus_name, settings.event_source, client=events
        )
        last_retry_reason = _record_retry_reasons(service, lock)
        runtime.set_service(service)
        exits.callback(runtime.set_service, None)

        def on_invocation(invocation: Invocation) -> None:
            with lock:
                for message_id, count in invocation.receive_counts.items():
                    receives[message_id] = max(receives[message_id], count)
                report.batches += 1
                if invocation.error is not None:
                    report.batches_failed += 1
                report.max_handler_seconds = max(
                    report.max_handler_seconds, invocation.elapsed_seconds
                )
                report.max_batch_seconds = max(report.max_batch_seconds, invocation.held_seconds)
                if invocation.held_seconds >= config.visibility_timeout_seconds:
                    report.batches_held_past_visibility += 1

        trigger = stack.trigger
        poller = SqsPoller(
            sqs_client=stack.client("sqs"),  # the poller serialises its receives/deletes
            queue_url=stack.queue_url,
            queue_arn=stack.queue_arn,
            handler_factory=lambda i: load_function(QUEUE_APP, instance=f"chaos_{seed}_{i}"),
            function_name="chaos-queue-enricher",
            function_timeout_seconds=config.function_timeout_seconds,
            batch_size=trigger.batch_size,
            batching_window_seconds=trigger.batching_window_seconds,
            concurrency=trigger.max_concurrency,
            on_invocation=on_invocation,
        )
        message_ids: list[str] = [""] * n
        submitted: dict[str, float] = {}
        envelopes: list[dict[str, Any]] = []
        seen_at: dict[str, float] = {}
        # Producers send while the consumers work (as in production; moto's queues also slow
        # down when tens of thousands of messages wait in them).
        with poller:
            sender = threading.Thread(
                target=_submit,
                args=(stack.client("sqs"), stack.queue_url, ids, message_ids, submitted),
                name="chaos-submit",
                daemon=True,
            )
            sender.start()
            report.drained = _wait_until_drained(
                stack, sender, envelopes, seen_at, started + config.time_limit_seconds,
                progress, n,
            )  # fmt: skip
        if len(submitted) < n:
            report.problems.append(f"only {len(submitted)} of {n} IDs could be submitted")
        envelopes.extend(stack.receive_events())
        dlq_bodies = _drain_queue(stack.client("sqs"), stack.dead_letter_queue_url)
        items = _scan(stack.client("dynamodb"), settings.calls_table_name)

        report.injected.update(sinch.injected)
        report.injected.update(dynamodb.injected)
        report.injected.update(events.injected)
        report.sinch_requests.update(Counter(sinch.requests_per_id[i] for i in ids))
        report.receives.update(Counter(receives.get(mid, 0) for mid in message_ids if mid))
        _account(report, ids, envelopes, seen_at, submitted, dlq_bodies, items, dynamodb)
        for body in dlq_bodies:
            call_id = _dlq_call_id(body)
            report.dlq_by_reason[last_retry_reason.get(call_id or "", "unknown")] += 1
    report.elapsed_seconds = time.monotonic() - started
    return report


def _record_retry_reasons(service: Any, lock: threading.Lock) -> dict[str, str]:
    """Wrap ``service.process`` to remember, per call ID, why it was last retried."""
    from call_enricher.pipeline import Disposition

    reasons: dict[str, str] = {}
    process = service.process

    def recording(items: Any, *, remaining_ms: Callable[[], int]) -> Any:
        batch = process(items, remaining_ms=remaining_ms)
        with lock:
            for result in batch.results.values():
                if result.call_id and result.disposition is Disposition.RETRY:
                    reason = result.error.reason if result.error else result.outcome.value
                    reasons[result.call_id] = reason
        return batch

    service.process = recording
    return reasons


class _Discard(io.TextIOBase):
    """A text stream that keeps nothing (a long run's log lines are not held in memory)."""

    def write(self, text: str) -> int:
        return len(text)


@contextlib.contextmanager
def _silenced(logger: Any) -> Iterator[None]:
    """Discard the handlers' JSON log lines, EMF output and the library's stdlib warnings."""
    handler = logger.registered_handler
    stream = handler.stream
    library = logging.getLogger("call_enricher")
    level = library.level
    handler.stream = _Discard()
    library.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(_Discard()):
            yield
    finally:
        handler.stream = stream
        library.setLevel(level)


def _submit(
    sqs: Any, queue_url: str, ids: list[str], message_ids: list[str], sent_at: dict[str, float]
) -> None:
    """Send one JSON message per ID (batches of 10, failed entries resent); fills
    ``message_ids`` (same order as ``ids``) and ``sent_at`` (call ID -> monotonic time).

    Backpressure: while more than :data:`MAX_BACKLOG` messages wait, sending pauses (moto's
    receive scans the whole queue, so a deep local queue slows every poller down)."""
    for start in range(0, len(ids), 10):
        if start % 100 == 0:
            for _ in range(6000):  # at most ten minutes
                attributes = sqs.get_queue_attributes(
                    QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]
                if int(attributes.get("ApproximateNumberOfMessages", 0)) <= MAX_BACKLOG:
                    break
                time.sleep(0.1)
        pending = {str(i): i for i in range(start, min(start + 10, len(ids)))}
        for _attempt in range(5):
            response = sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": entry_id, "MessageBody": json.dumps({"callId": ids[index]})}
                    for entry_id, index in pending.items()
                ],
            )
            now = time.monotonic()
            for ok in response.get("Successful", []):
                index = pending.pop(ok["Id"])
                message_ids[index] = ok["MessageId"]
                sent_at[ids[index]] = now
            if not pending:
                break


def _wait_until_drained(
    stack: Any,
    sender: threading.Thread,
    envelopes: list[dict[str, Any]],
    seen_at: dict[str, float],
    deadline: float,
    progress: TextIO | None,
    n: int,
) -> bool:
    """Collect events until everything is sent and the queue is empty twice in a row (or the
    deadline passes)."""
    empty_in_a_row = 0
    last_progress = time.monotonic()
    while time.monotonic() < deadline:
        for envelope in stack.receive_events():
            envelopes.append(envelope)
            seen_at.setdefault(_terminal_key(envelope), time.monotonic())
        depth = stack.queue_depth(stack.queue_url)
        empty_in_a_row = empty_in_a_row + 1 if depth == 0 and not sender.is_alive() else 0
        if empty_in_a_row >= 2:
            return True
        if progress is not None and time.monotonic() - last_progress > 5:
            last_progress = time.monotonic()
            print(f"chaos: {len(envelopes)} events, {depth} messages queued ({n} IDs)",
                  file=progress, flush=True)  # fmt: skip
        time.sleep(0.3)
    return False


def _terminal_key(envelope: dict[str, Any]) -> str:
    detail = envelope.get("detail", {})
    return f"{envelope.get('detail-type')}|{detail.get('callId')}|{detail.get('status')}"


def _drain_queue(sqs: Any, queue_url: str) -> list[str]:
    bodies: list[str] = []
    for _ in range(100_000):
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            break
        bodies.extend(message["Body"] for message in messages)
    return bodies


def _scan(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    items: dict[str, dict[str, Any]] = {}
    arguments: dict[str, Any] = {
        "TableName": table,
        "ProjectionExpression": "callId, version, #s, publishedVersion",
        "ExpressionAttributeNames": {"#s": "status"},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.scan(**arguments)
        for raw in page.get("Items", []):
            item = {key: deserializer.deserialize(value) for key, value in raw.items()}
            items[str(item["callId"])] = item
        if "LastEvaluatedKey" not in page:
            return items
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _dlq_call_id(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip() or None
    return str(data.get("callId")) if isinstance(data, dict) else None


def _account(
    report: ChaosReport,
    ids: list[str],
    envelopes: list[dict[str, Any]],
    seen_at: dict[str, float],
    submitted: dict[str, float],
    dlq_bodies: list[str],
    items: dict[str, dict[str, Any]],
    dynamodb: FaultyDynamoDB,
) -> None:
    report.events = len(envelopes)
    by_event_id = Counter(str(e["detail"].get("eventId")) for e in envelopes)
    enriched: dict[str, list[dict[str, Any]]] = defaultdict(list)
    failed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for envelope in envelopes:
        detail = envelope["detail"]
        target = enriched if envelope["detail-type"] == "Call Enriched" else failed
        target[str(detail.get("callId"))].append(detail)
    in_dlq = Counter(_dlq_call_id(body) for body in dlq_bodies)
    wanted = set(ids)
    strangers = {cid for cid in [*enriched, *failed] if cid not in wanted}
    if strangers:
        report.problems.append(f"events for {len(strangers)} IDs that were never sent")

    for event_id, count in by_event_id.items():
        if count < 2:
            continue
        report.duplicates += count - 1
        call_id = event_id.split(":", 1)[0]
        if call_id not in dynamodb.failed_marks:
            report.unexplained_duplicates += count - 1
            report.problems.append(f"eventId {event_id} seen {count} times")

    for call_id in ids:
        item = items.get(call_id)
        versions = sorted(enriched.get(call_id, []), key=lambda d: int(d["version"]))
        final_version = next((int(d["version"]) for d in versions if d["status"] == "FINAL"), None)
        if final_version is not None and (
            any(int(d["version"]) > final_version and d["status"] != "FINAL" for d in versions)
            or (item is not None and item.get("status") != "FINAL")
        ):
            report.regressions += 1
            report.problems.append(f"FINAL regression for {call_id}")
        states = []
        if (
            item is not None
            and item.get("status") == "FINAL"
            and any(
                int(d["version"]) == int(item["version"]) and d["status"] == "FINAL"
                for d in versions
            )
        ):
            states.append("final")
        if failed.get(call_id):
            states.append("failed")
            for reason in {d["reason"] for d in failed[call_id]}:
                report.failed_by_reason[reason] += 1
        if in_dlq.get(call_id):
            states.append("dlq")
        if len(states) == 1:
            setattr(report, states[0], getattr(report, states[0]) + 1)
            if states[0] == "dlq":
                report.dlq_ids.append(call_id)
            for key in (f"Call Enriched|{call_id}|FINAL", f"Call Enrichment Failed|{call_id}|None"):
                if key in seen_at:
                    sent = submitted.get(call_id, seen_at[key])
                    report.latency_seconds.append(max(0.0, seen_at[key] - sent))
                    break
        elif not states:
            report.lost += 1
            report.lost_ids.append(call_id)
            report.problems.append(f"lost: {call_id}")
        else:
            report.multiple += 1
            report.problems.append(f"{call_id} in several terminal states: {states}")


# --- command line ----------------------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ids", type=int, default=10_000, help="call IDs to send (10000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every injected fault (1)")
    parser.add_argument(
        "--time-limit", type=float, default=1800.0, help="give up after this many seconds"
    )
    parser.add_argument("--verbose", action="store_true", help="show the handlers' log lines")


def cmd_chaos(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the chaos run and print its report; 0 when the accounting balances, else 1."""
    config = ChaosConfig(time_limit_seconds=args.time_limit)
    report = run_chaos(args.ids, args.seed, config=config, progress=err, quiet=not args.verbose)
    for line in report.lines():
        print(line, file=out)
    return 0 if report.balanced else 1


def add_chaos_command(subparsers: Any) -> None:
    """Add ``chaos`` to the ``call-enricher`` CLI (``func`` is set to :func:`cmd_chaos`)."""
    parser = subparsers.add_parser(
        "chaos", help="N call IDs through the local stack under injected faults, then accounting"
    )
    _add_arguments(parser)
    parser.set_defaults(func=cmd_chaos)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m call_enricher_tools.chaos", description=(__doc__ or "").split("\n")[0]
    )
    _add_arguments(parser)
    return cmd_chaos(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
