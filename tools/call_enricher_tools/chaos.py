"""The chaos run: N call IDs through the local stack under injected faults, then an accounting.

``python -m call_enricher_tools.chaos --ids 10000`` (``make chaos``) sends N call IDs to the
local stack's enrichment queue and lets the whole pipeline run as deployed: moto in server
mode built from ``template.yaml``, the SQS poller playing the queue function's event source
mapping (with its redrive to the DLQ) for the real queue handler, and the stream poller
(:class:`~call_enricher_tools.local.streams.StreamPoller`, configured from the template's
stream mapping: bisection, bounded retries, the on-failure queue) playing the calls table's
stream for the real stream publisher: the only way events reach the bus. Meanwhile

* a fault-injecting Sinch stand-in (:class:`ChaosSinch`, HTTP on 127.0.0.1, checking every
  request's signature) answers, per request, 10 % 5xx, 5 % 429 (half with ``Retry-After``),
  2 % hangs past the client's read timeout and 2 % bodies that are not JSON (transient:
  ``sinch-garbled-response``, retried); 5 % of the IDs are unknown (404) and 10 % are ONGOING
  calls that turn FINAL a little later;
* the queue function's DynamoDB client throttles ``UpdateItem`` (versions, failure states
  and retry traces) at ``ddb_throttle``;
* the stream publisher's EventBridge client fails ``PutEvents`` entries (``InternalFailure``)
  at ``put_events_entry_failure`` and throttles whole calls at ``put_events_throttle``
  (``--publisher-faults RATE`` sets both: RATE and RATE / 2).

AWS faults are injected *above* botocore, i.e. as failures that outlasted botocore's own
retries. Every decision comes from a seeded RNG keyed by (call or event ID, what, how many
times asked), so a run is reproducible whatever the thread interleaving. Sinch's timeouts
and the re-check delay are short so the run is fast; the function and visibility timeouts
are not (see :class:`ChaosConfig`).

It ends with an accounting (:class:`ChaosReport`), one ``name: value`` line per count, built
from the table (scanned at the end), the DLQ and every event the bus delivered to a
subscriber queue. The guarantees it checks:

* every stored version has exactly one ``Call Enriched`` event (``{callId}:v{n}`` for n = 1
  .. the stored version) and every stored failure state exactly one ``Call Enrichment
  Failed`` event (its ID rebuilt from the stored failure); no event announces a state the
  table never held (``events_missing``, ``events_unexpected``); the latest version's event
  carries exactly what the table holds;
* every ID ends in exactly one terminal state, the one its kind predicts: ``final`` (stored
  FINAL and announced; known and ONGOING IDs), ``failed`` (``call-not-found`` stored and
  announced; unknown IDs) or ``dlq`` (its message in the DLQ, the item's retry trace saying
  why; IDs Sinch always fails). ``lost`` (none), ``multiple`` (several) and
  ``unexpected_outcomes`` (not the predicted one) must be 0;
* no FINAL call goes back (``regressions``);
* events of other detail types (the spend watch's ``Spend Threshold Crossed``, when the
  template wires it) announce no calls-table state: they are counted (``events_other``)
  and held to the duplicate rule only;
* a duplicate event (an ``eventId`` delivered twice) is allowed only as the stream
  publisher's at-least-once retry after an injected publisher fault, with an identical
  detail, and is counted (``duplicates``); any other is ``unexplained_duplicates``. Without
  publisher faults there must be none at all;
* the queue drained, the stream was consumed, and the publisher's on-failure queue is empty.

The run exits 0 only when all of that holds (``balanced: yes``).
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
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

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

if TYPE_CHECKING:
    from call_enricher.state import StoredCall
    from call_enricher_tools.local.poller import Handler
    from call_enricher_tools.local.stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_BACKLOG = 200
"""Visible messages above which the chaos run's producer pauses."""
CHAOS_CREDENTIALS = SinchCredentials(
    application_key="c4a05000-0000-4000-8000-00000000c4a0",
    application_secret="Y2hhb3Mtc2VjcmV0LW5ldmVyLWxvZy10aGlzLTAxMjM=",  # noqa: S106 (local only)
)
DETAIL_TYPES = {
    "Call Enriched": "call_enriched",
    "Call Enrichment Failed": "call_enrichment_failed",
}
"""Detail types and their names in the report (``events.call_enriched: n``)."""
EXPECTED_STATE = {"final": "final", "ongoing": "final", "unknown": "failed", "dead": "dlq"}
"""The terminal state each kind of ID must end in (an unknown ID fails ``call-not-found``;
a body that is not JSON is transient now, so it never ends as a failure)."""
EXPECTED_FAILURE_REASON = "call-not-found"

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
    """``UpdateItem`` calls of the queue function throttled (versions, failures, traces)."""
    put_events_entry_failure: float = 0.05
    """``PutEvents`` entries of the stream publisher failed with ``InternalFailure``."""
    put_events_throttle: float = 0.025
    """Whole ``PutEvents`` calls of the stream publisher throttled."""
    read_timeout_seconds: float = 0.5
    connect_timeout_seconds: float = 0.5
    function_timeout_seconds: float = 30.0
    """The queue function's timeout. A batch that runs past it fails as a whole, as in Lambda
    (nothing is deleted, every message is redelivered and its work redone): harmless to the
    table and the events now (the redone work writes nothing new), but it spends receives
    towards the DLQ. What a batch takes is bounded by Sinch (3 attempts of at most
    0.5 + 0.5 s, a 1 s ``Retry-After``) plus its writes to moto, and moto is slow under load
    (one process, one GIL, shared with every poller): the last 10,000-ID run on 2 busy cores
    saw an 11 s batch, past the 10 s used then. 30 s is close to three times that."""
    deadline_margin_ms: int = 4000
    """``DEADLINE_MARGIN_MS``: no record starts later than this before the timeout, leaving
    time for its one write and its re-check or retry trace (slow under load; production:
    3 s of 60)."""
    visibility_timeout_seconds: int = 45
    """The enrichment queue's visibility timeout: a batch's messages must not be handed to
    another poller while the first still works on them (a duplicate delivery). A batch is
    held for the batching window (1 s), the handler (at most the function timeout when it
    keeps to it) and its delete (a moto call, slow under load): 30 + 1 + 14 s of slack, so an
    overrun of half the timeout is still covered (``max_batch_seconds`` and
    ``batches_held_past_visibility`` in the report show how close a run came). Not more: a
    retried message waits this long before its next delivery, and a message Sinch always
    fails MaxReceiveCount times that."""
    stream_wait_seconds: float = 120.0
    """After the queue drained: how long the stream publisher may take to catch up."""
    time_limit_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.visibility_timeout_seconds < self.function_timeout_seconds + 2:
            raise ValueError(
                "visibility_timeout_seconds must outlast function_timeout_seconds plus the"
                " batching window: a batch would be handed out twice while it is at work"
            )

    def with_publisher_faults(self, rate: float) -> ChaosConfig:
        """This configuration with the stream publisher's ``PutEvents`` faults at ``rate``
        (entries failed at ``rate``, whole calls throttled at ``rate / 2``)."""
        from dataclasses import replace

        if not 0.0 <= rate < 1.0:
            raise ValueError("the publisher fault rate is a fraction in [0, 1)")
        return replace(self, put_events_entry_failure=rate, put_events_throttle=rate / 2)

    @property
    def publisher_faults(self) -> bool:
        return self.put_events_entry_failure > 0 or self.put_events_throttle > 0


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


def _client_error(code: str, operation: str) -> Exception:
    from botocore.exceptions import ClientError

    error: Any = {
        "Error": {"Code": code, "Message": "injected by the chaos run"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(error, operation)


class _FaultyClient:
    """A boto3 client whose chosen operations fail at a seeded rate; the rest pass through."""

    def __init__(self, client: Any, seed: int, rate: float) -> None:
        self._client = client
        self._seed = seed
        self._rate = rate
        self._lock = threading.Lock()
        self._asked: Counter[tuple[str, str]] = Counter()
        self.injected: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _fails(self, what: str, key: str, rate: float | None = None) -> bool:
        with self._lock:
            self._asked[(what, key)] += 1
            asked = self._asked[(what, key)]
        threshold = self._rate if rate is None else rate
        return _rng(self._seed, key, what, asked).random() < threshold

    def _outage(self, what: str, key: str, rate: float) -> bool:
        """Whether the ``what`` of ``key`` fails this time, as a fault that lasts: a fraction
        ``rate`` of the keys fails its first 1 to 4 asks (seeded; 2 in 5 of them 3 times or
        more, outlasting the publisher's own resends), the others never."""
        rng = _rng(self._seed, key, what, "outage")
        lasts = rng.choice((1, 1, 2, 3, 4)) if rng.random() < rate else 0
        with self._lock:
            self._asked[(what, key)] += 1
            return self._asked[(what, key)] <= lasts

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self.injected[name] += n


def write_kind(update_expression: str) -> str:
    """Which of the queue function's writes an ``UpdateItem`` is: ``save`` (a version),
    ``fail`` (a failure state), ``trace`` (a retry trace) or ``other``."""
    if "#lastError = :trace" in update_expression:
        return "trace"
    if "#record = :record" in update_expression:
        return "save"
    if "#failure = :failure" in update_expression:
        return "fail"
    return "other"


class FaultyDynamoDB(_FaultyClient):
    """Throttles ``UpdateItem`` (versions, failure states, retry traces) at the rate."""

    calls = 0
    """``UpdateItem`` calls made through this client."""

    def update_item(self, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
        call_id = str(kwargs.get("Key", {}).get("callId", {}).get("S", ""))
        what = write_kind(str(kwargs.get("UpdateExpression", "")))
        if self._fails(what, call_id):
            self._count(f"dynamodb-throttled-{what}")
            raise _client_error("ProvisionedThroughputExceededException", "UpdateItem")
        return self._client.update_item(**kwargs)


def _entry_event_id(entry: dict[str, Any]) -> str:
    try:
        detail = json.loads(entry.get("Detail") or "{}")
    except ValueError:
        return "?"
    return str(detail.get("eventId") or detail.get("callId") or "?")


class FaultyEventBridge(_FaultyClient):
    """The stream publisher's EventBridge client: throttles whole ``PutEvents`` calls (keyed
    by their first entry) at ``throttle_rate`` and fails entries (``InternalFailure``) at
    ``rate``, each fault lasting 1 to 4 sends (:meth:`_outage`: one that outlasts the
    publisher's resends fails its stream record, which the mapping retries); sends the others.

    Per ``eventId``, :attr:`accepted` counts the entries EventBridge said it accepted (a
    re-sent one counts twice) and :attr:`sent` the times an entry went over the wire, the SDK's
    own retries included (botocore resends a call whose answer timed out, which moto may well
    have accepted: under load it answers past the client's read timeout); :attr:`sdk_resends`
    counts those resends."""

    def __init__(self, client: Any, seed: int, rate: float, throttle_rate: float = 0.0) -> None:
        super().__init__(client, seed, rate)
        self._throttle_rate = throttle_rate
        self.accepted: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self._calls = 0
        self._calls_made = 0
        self._requests = 0
        emitter = getattr(getattr(client, "meta", None), "events", None)
        if emitter is not None:
            emitter.register("before-send.eventbridge.PutEvents", self._on_send)

    def _on_send(self, request: Any = None, **_: Any) -> None:
        """botocore's hook before each HTTP request of ``PutEvents`` (retries included)."""
        try:
            entries = json.loads(request.body or b"{}").get("Entries", [])
        except (AttributeError, TypeError, ValueError):
            entries = []
        with self._lock:
            self._requests += 1
            self.sent.update(_entry_event_id(entry) for entry in entries)

    @property
    def calls(self) -> int:
        """``PutEvents`` calls made through this client."""
        with self._lock:
            return self._calls_made

    @property
    def sdk_resends(self) -> int:
        """``PutEvents`` requests botocore sent again (its retries, after a timeout or 5xx)."""
        with self._lock:
            return max(0, self._requests - self._calls)

    @property
    def faults(self) -> int:
        """Faults injected so far (throttled calls and failed entries)."""
        with self._lock:
            return sum(self.injected.values())

    def put_events(self, **kwargs: Any) -> Any:
        entries = kwargs["Entries"]
        keys = [_entry_event_id(entry) for entry in entries]
        with self._lock:
            self._calls_made += 1
        if keys and self._outage("put-events-call", keys[0], self._throttle_rate):
            self._count("put-events-throttled")
            raise _client_error("ThrottlingException", "PutEvents")
        failing = [self._outage("put-events-entry", key, self._rate) for key in keys]
        keep = [entry for entry, fails in zip(entries, failing, strict=True) if not fails]
        if keep:
            with self._lock:
                self._calls += 1
        response = self._client.put_events(**{**kwargs, "Entries": keep}) if keep else {}
        results = iter(response.get("Entries", []))
        merged: list[dict[str, Any]] = []
        accepted: list[str] = []
        for key, fails in zip(keys, failing, strict=True):
            if fails:
                merged.append({"ErrorCode": "InternalFailure", "ErrorMessage": "injected"})
                continue
            result = next(results, {"ErrorCode": "InternalFailure"})
            merged.append(result)
            if result.get("EventId") and not result.get("ErrorCode"):
                accepted.append(key)
        self._count("put-events-entry-failed", sum(failing))
        with self._lock:
            self.accepted.update(accepted)
        failed = sum(1 for result in merged if result.get("ErrorCode"))
        return {"FailedEntryCount": failed, "Entries": merged}


# --- the report ------------------------------------------------------------------------------


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
    unexpected_outcomes: int = 0
    """IDs that ended in a terminal state other than the one their kind predicts."""
    regressions: int = 0
    versions: int = 0
    """Versions the table says were stored: each needs one ``Call Enriched`` event."""
    failure_states: int = 0
    """Failure states the table holds: each needs one ``Call Enrichment Failed`` event."""
    events: int = 0
    """Events delivered to the subscriber (duplicates included)."""
    events_by_type: Counter[str] = field(default_factory=Counter)
    events_sent: int = 0
    """Entries EventBridge accepted from the stream publisher (re-sends included)."""
    put_events_sdk_resends: int = 0
    """``PutEvents`` requests the SDK sent again (a timed-out answer: moto may have accepted
    the first one, so its entries may be delivered twice)."""
    events_missing: int = 0
    """Events of stored states never delivered."""
    events_unexpected: int = 0
    """Events of states the table does not hold (or with another detail than it holds)."""
    events_other: int = 0
    """Distinct events of other detail types (the spend watch's ``Spend Threshold Crossed``):
    not states of the calls table, so only the duplicate rule holds them."""
    events_out_of_order: int = 0
    """Calls whose versions' events first arrived out of version order (not a promise of
    the subscriber queue; reported only)."""
    announced_twice: int = 0
    """``eventId`` values the stream itself announced more than once (several stream records
    for one state change): a duplicate that is no re-send."""
    duplicates: int = 0
    """Extra deliveries of an ``eventId`` (all of them; allowed only with publisher faults)."""
    unexplained_duplicates: int = 0
    """Extra deliveries with a different detail, or more often than the publisher sent the
    entry (its retries of stream records and its SDK's resends of a call: the one
    at-least-once window)."""
    publisher_faults: bool = False
    """Whether publisher faults were configured (without them, no duplicate is allowed)."""
    publisher_failure_queue: int = 0
    """Stream batches the publisher's mapping gave up on (their events are lost)."""
    drained: bool = False
    stream_idle: bool = False
    faults_reached: bool = True
    """The functions used the run's fault-injecting clients (a function building its own at
    INIT would otherwise run the whole run without AWS faults, unnoticed)."""
    elapsed_seconds: float = 0.0
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    dlq_by_reason: Counter[str] = field(default_factory=Counter)
    """The reason of each DLQ'd ID's last retry, from its item's retry trace (``lastError``;
    ``none`` when no trace was stored)."""
    receives: Counter[int] = field(default_factory=Counter)
    sinch_requests: Counter[int] = field(default_factory=Counter)
    latency_seconds: list[float] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
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
    stream_invocations: int = 0
    stream_retries: int = 0
    """Stream publisher invocations that retried records after a failure."""
    stream_failed_invocations: int = 0
    stream_errors: Counter[str] = field(default_factory=Counter)
    """Why stream publisher invocations failed as a whole (bisected and retried)."""
    max_stream_seconds: float = 0.0
    lost_ids: list[str] = field(default_factory=list)
    dlq_ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        """True when every ID has exactly one terminal state, every stored state exactly one
        event, and nothing broke a promise."""
        return (
            self.drained
            and self.stream_idle
            and self.faults_reached
            and self.final + self.failed + self.dlq == self.ids
            and self.lost == 0
            and self.multiple == 0
            and self.unexpected_outcomes == 0
            and self.regressions == 0
            and self.events_missing == 0
            and self.events_unexpected == 0
            and self.unexplained_duplicates == 0
            and (self.publisher_faults or self.duplicates == 0)
            and self.publisher_failure_queue == 0
        )

    def lines(self) -> list[str]:
        lat = sorted(self.latency_seconds)

        def pct(p: float) -> str:
            return f"{lat[min(len(lat) - 1, int(p * len(lat)))]:.2f}" if lat else "n/a"

        def dist(counter: Counter[int]) -> str:
            return " ".join(f"{k}={counter[k]}" for k in sorted(counter)) or "none"

        def yes(flag: bool) -> str:
            return "yes" if flag else "no"

        out = [
            f"ids: {self.ids}",
            f"final: {self.final}",
            f"failed: {self.failed}",
            f"dlq: {self.dlq}",
            f"lost: {self.lost}",
            f"multiple: {self.multiple}",
            f"unexpected_outcomes: {self.unexpected_outcomes}",
            f"regressions: {self.regressions}",
            f"versions: {self.versions}",
            f"failure_states: {self.failure_states}",
            f"events: {self.events}",
        ]
        out += [
            f"events.{name}: {self.events_by_type.get(detail_type, 0)}"
            for detail_type, name in DETAIL_TYPES.items()
        ]
        out += [
            f"events.{name}: {n}"
            for name, n in sorted(self.events_by_type.items())
            if name not in DETAIL_TYPES
        ]
        out += [
            f"events_sent: {self.events_sent}",
            f"put_events_sdk_resends: {self.put_events_sdk_resends}",
            f"events_missing: {self.events_missing}",
            f"events_unexpected: {self.events_unexpected}",
            f"events_other: {self.events_other}",
            f"events_out_of_order: {self.events_out_of_order}",
            f"announced_twice: {self.announced_twice}",
            f"duplicates: {self.duplicates}",
            f"unexplained_duplicates: {self.unexplained_duplicates}",
            f"publisher_faults: {yes(self.publisher_faults)}",
            f"publisher_failure_queue: {self.publisher_failure_queue}",
            f"drained: {yes(self.drained)}",
            f"stream_idle: {yes(self.stream_idle)}",
            f"faults_reached: {yes(self.faults_reached)}",
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
            f"stream_invocations: {self.stream_invocations}",
            f"stream_retries: {self.stream_retries}",
            f"stream_failed_invocations: {self.stream_failed_invocations}",
            f"max_stream_seconds: {self.max_stream_seconds:.1f}",
            f"elapsed_seconds: {self.elapsed_seconds:.1f}",
            f"seed: {self.seed}",
            f"balanced: {'yes' if self.balanced else 'NO'}",
        ]
        out += [f"problem: {problem}" for problem in self.problems[:20]]
        if len(self.problems) > 20:
            out.append(f"problems_not_shown: {len(self.problems) - 20}")
        return out


# --- the run -------------------------------------------------------------------------------


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
    from call_enricher import aws, outbox, runtime
    from call_enricher.observability import logger
    from call_enricher.publishing import EventPublisher
    from call_enricher.settings import get_settings
    from call_enricher.storage import CallStore
    from call_enricher_tools.local.poller import Invocation, SqsPoller
    from call_enricher_tools.local.stack import LocalStack
    from call_enricher_tools.local.streams import StreamInvocation, StreamPoller

    config = config or ChaosConfig()
    ids = call_ids(n, seed)
    report = ChaosReport(ids=n, seed=seed, publisher_faults=config.publisher_faults)
    started = time.monotonic()
    deadline = started + config.time_limit_seconds
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
            moto_process=True,  # moto is most of the run's CPU: give it the second core
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

        # The queue function's service, its table writes throttled ...
        dynamodb = FaultyDynamoDB(_table_client(), seed, config.ddb_throttle)
        settings = get_settings()
        service = runtime.build_service(settings)
        service.store = CallStore(
            settings.calls_table_name, ttl_days=settings.record_ttl_days, client=dynamodb
        )
        runtime.set_service(service)
        exits.callback(runtime.set_service, None)
        # ... and the stream publisher, its PutEvents failing (the only PutEvents caller)
        events = FaultyEventBridge(
            aws.client("events"),
            seed,
            config.put_events_entry_failure,
            config.put_events_throttle,
        )
        publisher = outbox.build_outbox(settings)
        publisher.publisher = EventPublisher(
            settings.event_bus_name, settings.event_source, client=events
        )
        outbox.set_outbox(publisher)
        exits.callback(outbox.set_outbox, None)
        install_lock = threading.Lock()

        def installing(factory: Callable[[int], Handler]) -> Callable[[int], Handler]:
            """A handler's INIT (on import) builds and installs its own service or outbox
            publisher: put the fault-injecting ones back once it has run."""

            def load(index: int) -> Handler:
                handler = factory(index)
                with install_lock:
                    runtime.set_service(service)
                    outbox.set_outbox(publisher)
                return handler

            return load

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

        def on_stream_invocation(invocation: StreamInvocation) -> None:
            with lock:
                report.stream_invocations += 1
                report.stream_retries += invocation.attempt > 0
                if invocation.error is not None:
                    report.stream_failed_invocations += 1
                    report.stream_errors[invocation.error[:120]] += 1
                report.max_stream_seconds = max(
                    report.max_stream_seconds, invocation.elapsed_seconds
                )

        stream_trigger = stack.require_stream_trigger()
        stream = StreamPoller.from_stack(
            stack,
            installing(_handler_factory(stack, stream_trigger.function, f"chaos_{seed}_stream")),
            on_invocation=on_stream_invocation,
        )
        stream.start()
        exits.callback(stream.stop)
        trigger = stack.trigger
        poller = SqsPoller(
            sqs_client=stack.client("sqs"),  # the poller serialises its receives/deletes
            queue_url=stack.queue_url,
            queue_arn=stack.queue_arn,
            handler_factory=installing(
                _handler_factory(stack, trigger.function, f"chaos_{seed}_queue")
            ),
            function_name=f"{stack.stack_name}-{trigger.function}",
            function_timeout_seconds=config.function_timeout_seconds,
            batch_size=trigger.batch_size,
            batching_window_seconds=trigger.batching_window_seconds,
            concurrency=trigger.max_concurrency,
            report_batch_item_failures=trigger.report_batch_item_failures,
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
                stack, sender, envelopes, seen_at, deadline, progress, n
            )
        # Nothing writes to the table any more: the publisher catches up with the stream.
        wait = max(config.stream_wait_seconds, deadline - time.monotonic())
        report.stream_idle = _wait_stream_idle(stream, stack, envelopes, seen_at, wait, progress)
        _collect_events(stack, envelopes, seen_at)
        stream.stop()
        if len(submitted) < n:
            report.problems.append(f"only {len(submitted)} of {n} IDs could be submitted")
        dlq_bodies = _drain_queue(stack.client("sqs"), stack.dead_letter_queue_url)
        report.publisher_failure_queue = stack.queue_depth(stack.publisher_failure_queue_url)
        items = _scan(stack.client("dynamodb"), settings.calls_table_name)
        announced = _announcements(stack)

        report.injected.update(sinch.injected)
        report.injected.update(dynamodb.injected)
        report.injected.update(events.injected)
        report.sinch_requests.update(Counter(sinch.requests_per_id[i] for i in ids))
        report.receives.update(Counter(receives.get(mid, 0) for mid in message_ids if mid))
        observed = Observed(
            ids=ids,
            kinds={call_id: sinch.kind(call_id) for call_id in ids},
            envelopes=envelopes,
            items=items,
            dlq_bodies=dlq_bodies,
            accepted=Counter(events.accepted),
            sent=Counter(events.sent),
            announced=announced,
            seen_at=seen_at,
            submitted=submitted,
        )
        _account(report, observed)
        report.put_events_sdk_resends = events.sdk_resends
        # The faults must have reached the functions (not bypassed by clients of their own)
        report.faults_reached = dynamodb.calls > 0 and (events.calls > 0 or report.events == 0)
        if not report.faults_reached:
            problems = report.problems
            problems.append("the functions did not use the chaos run's fault-injecting clients")
    report.elapsed_seconds = time.monotonic() - started
    return report


MOTO_READ_TIMEOUT_SECONDS = 60.0
"""Read timeout of the queue function's DynamoDB client in the chaos run (5 s deployed)."""


def _table_client() -> Any:
    """The queue function's DynamoDB client, configured as deployed but for a longer read
    timeout. Under load moto answers past the deployed 5 s: botocore then resends the
    request while moto still works on the first one. moto's writes are made atomic
    (:mod:`~call_enricher_tools.local.moto_patches`), so the resend is refused by its condition
    as DynamoDB would refuse it, but a run full of timed-out writes measures moto, not the
    service."""
    import boto3.session
    from botocore.config import Config

    from call_enricher import aws

    config = aws.client_config().merge(Config(read_timeout=MOTO_READ_TIMEOUT_SECONDS))
    return boto3.session.Session().client("dynamodb", config=config)


def _handler_factory(stack: LocalStack, function: str, prefix: str) -> Callable[[int], Handler]:
    """The template's handler of ``function``, loaded afresh per poller (its "container")."""
    from call_enricher_tools.local.poller import load_function

    properties = stack.template.function_properties(function)
    app = REPO_ROOT / "functions" / Path(str(properties["CodeUri"])).name / "app.py"
    handler = str(properties.get("Handler", "app.lambda_handler"))
    return lambda i: load_function(app, handler, instance=f"{prefix}_{i}")


class _Discard(io.TextIOBase):
    """A text stream that keeps nothing (a long run's log lines are not held in memory)."""

    def write(self, text: str) -> int:
        return len(text)


@contextlib.contextmanager
def _silenced(logger: Any) -> Iterator[None]:
    """Discard the handlers' JSON log lines, EMF output, the library's stdlib log records
    and Python warnings."""
    handler = logger.registered_handler
    stream = handler.stream
    library = logging.getLogger("call_enricher")
    level = library.level
    handler.stream = _Discard()
    library.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(_Discard()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Powertools' "No application metrics to publish"
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
        _collect_events(stack, envelopes, seen_at)
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


def _wait_stream_idle(
    stream: Any,
    stack: Any,
    envelopes: list[dict[str, Any]],
    seen_at: dict[str, float],
    timeout: float,
    progress: TextIO | None,
) -> bool:
    """Wait until the stream publisher has consumed the stream, collecting events meanwhile
    (and saying so every 5 s); False after ``timeout`` seconds."""
    ends = time.monotonic() + timeout
    while True:
        left = ends - time.monotonic()
        if stream.wait_idle(max(0.0, min(5.0, left))):
            return True
        _collect_events(stack, envelopes, seen_at)
        if left <= 5.0:
            return False
        if progress is not None:
            print(f"chaos: {len(envelopes)} events, the stream publisher catching up",
                  file=progress, flush=True)  # fmt: skip


def _collect_events(stack: Any, envelopes: list[dict[str, Any]], seen_at: dict[str, float]) -> None:
    """Drain the subscriber queue into ``envelopes``; ``seen_at``: when each ``eventId``
    first arrived."""
    for envelope in stack.receive_events():
        envelopes.append(envelope)
        event_id = str((envelope.get("detail") or {}).get("eventId"))
        seen_at.setdefault(event_id, time.monotonic())


def _announcements(stack: LocalStack) -> dict[str, list[str]]:
    """Read the calls table's whole stream back: per ``eventId``, the sequence numbers of the
    stream records (as DynamoDB would have written them) that announce it. One each, or the
    table's writes announced a state twice (then a duplicate is no re-send)."""
    from call_enricher import errors
    from call_enricher.events import events_for_change
    from call_enricher.outbox import change_from_record
    from call_enricher_tools.local.streams import as_dynamodb_writes, stream_event_record

    streams = stack.client("dynamodbstreams")
    arn = stack.calls_stream_arn
    region = stack.resolver.pseudo["AWS::Region"]
    found: dict[str, list[str]] = defaultdict(list)
    description = streams.describe_stream(StreamArn=arn)["StreamDescription"]
    for shard in description.get("Shards", []):
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        raw: list[dict[str, Any]] = []
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page.get("Records"):
                break  # an open shard: nothing more (yet)
            raw.extend(page["Records"])
            iterator = page.get("NextShardIterator")
        for record in as_dynamodb_writes(raw):
            change = change_from_record(stream_event_record(record, stream_arn=arn, region=region))
            try:
                events = events_for_change(change.old, change.new)
            except (ValueError, errors.CallEnricherError):
                continue
            for event in events:
                found[str(event.detail["eventId"])].append(change.key)
    return found


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


def _scan(dynamodb: Any, table: str) -> dict[str, StoredCall]:
    """Every item of the calls table, parsed (what the accounting holds the events against)."""
    from call_enricher.items import parse_item

    items: dict[str, StoredCall] = {}
    arguments: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = dynamodb.scan(**arguments)
        for raw in page.get("Items", []):
            item = parse_item(raw)
            items[item.call_id] = item
        if "LastEvaluatedKey" not in page:
            return items
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _dlq_call_id(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip() or None
    return str(data.get("callId")) if isinstance(data, dict) else None


# --- the accounting --------------------------------------------------------------------------


@dataclass
class Observed:
    """What a run left behind, for :func:`_account`."""

    ids: list[str]
    kinds: dict[str, str]
    """Each ID's kind (``final``, ``ongoing``, ``unknown``, ``dead``): its expected fate."""
    envelopes: list[dict[str, Any]]
    """Every event the subscriber received, in arrival order."""
    items: dict[str, StoredCall]
    """The calls table at the end, by key."""
    dlq_bodies: list[str] = field(default_factory=list)
    accepted: Counter[str] = field(default_factory=Counter)
    """Entries EventBridge accepted from the publisher, per ``eventId``."""
    sent: Counter[str] = field(default_factory=Counter)
    """Entries the publisher sent over the wire, per ``eventId`` (SDK resends included)."""
    seen_at: dict[str, float] = field(default_factory=dict)
    submitted: dict[str, float] = field(default_factory=dict)
    announced: dict[str, list[str]] = field(default_factory=dict)
    """The stream read back: per ``eventId``, the stream records announcing it (empty: not
    read)."""


def _canonical(detail: Any) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


def _expected_events(
    items: dict[str, StoredCall], problems: list[str]
) -> dict[str, dict[str, Any] | None]:
    """The events the table's states call for: ``eventId`` -> its detail when the table
    still holds what it was built from (the latest version, the stored failure), else None."""
    from call_enricher import errors
    from call_enricher.events import (
        call_enriched_event,
        call_enriched_event_id,
        call_enrichment_failed_event,
    )

    expected: dict[str, dict[str, Any] | None] = {}
    for key, item in items.items():
        if item.version is not None:
            for version in range(1, item.version + 1):
                expected[call_enriched_event_id(item.call_id, version)] = None
            try:
                latest = call_enriched_event(item).detail
            except (ValueError, errors.CallEnricherError) as exc:
                problems.append(f"stored version of {key} cannot be announced: {exc}")
            else:
                expected[latest["eventId"]] = latest
        if item.failure is not None:
            failure = call_enrichment_failed_event(key, item.failure).detail
            expected[failure["eventId"]] = failure
    return expected


def _account(report: ChaosReport, observed: Observed) -> None:
    """Fill ``report`` from what the run left behind (see the module docstring)."""
    from call_enricher.events import call_enrichment_failed_event

    problems = report.problems
    report.events = len(observed.envelopes)
    report.events_sent = sum(observed.accepted.values())
    delivered: dict[str, list[dict[str, Any]]] = defaultdict(list)  # eventId -> details
    other_types: set[str] = set()  # eventIds of events that announce no calls-table state
    enriched: dict[str, list[dict[str, Any]]] = defaultdict(list)  # callId -> first copies
    for envelope in observed.envelopes:
        detail_type = str(envelope.get("detail-type"))
        detail = envelope.get("detail") or {}
        event_id = str(detail.get("eventId"))
        report.events_by_type[detail_type] += 1
        if detail_type not in DETAIL_TYPES:
            other_types.add(event_id)
        if detail_type == "Call Enriched" and event_id not in delivered:
            enriched[str(detail.get("callId"))].append(detail)
        delivered[event_id].append(detail)

    # Duplicates: only as the publisher's re-sends (same detail); none without its faults
    for event_id, details in delivered.items():
        extra = len(details) - 1
        if extra <= 0:
            continue
        report.duplicates += extra
        why = None
        if any(_canonical(d) != _canonical(details[0]) for d in details[1:]):
            why = "with different details"
        elif observed.sent[event_id] < len(details):
            why = f"but sent {observed.sent[event_id]} times by the publisher"
        elif len(observed.announced.get(event_id, ())) > 1:
            why = "as the stream announced it more than once (no re-send)"
        if why is not None:
            report.unexplained_duplicates += extra
            problems.append(f"eventId {event_id} delivered {len(details)} times {why}")

    for event_id, records in sorted(observed.announced.items()):
        if len(records) > 1:
            report.announced_twice += 1
            problems.append(f"{event_id} announced by stream records {', '.join(records)}")
    if report.duplicates and not report.publisher_faults:
        problems.append(f"{report.duplicates} duplicate deliveries without publisher faults")
    problems.extend(
        f"stream publisher invocation failed {n} times: {error}"
        for error, n in report.stream_errors.most_common(3)
    )

    # One event per stored state, none for a state the table never held
    expected = _expected_events(observed.items, problems)
    report.versions = sum(item.version or 0 for item in observed.items.values())
    report.failure_states = sum(item.failure is not None for item in observed.items.values())
    for event_id, detail in expected.items():
        copies = delivered.get(event_id)
        if not copies:
            report.events_missing += 1
            problems.append(f"never announced: {event_id}")
        elif detail is not None and _canonical(copies[0]) != _canonical(detail):
            report.events_unexpected += 1
            problems.append(f"{event_id} announced with another detail than the table holds")
    for event_id in delivered:
        if event_id not in expected and event_id not in other_types:
            report.events_unexpected += 1
            problems.append(f"announced, but no such state is stored: {event_id}")

    report.events_other = len(other_types)

    # Regressions: a FINAL version followed by a non-FINAL one, or a FINAL call stored non-FINAL
    for call_id, details in enriched.items():
        ordered = sorted(details, key=lambda d: int(d.get("version") or 0))
        versions = [int(d.get("version") or 0) for d in details]
        if versions != sorted(versions):
            report.events_out_of_order += 1
        first_final = next((i for i, d in enumerate(ordered) if d.get("status") == "FINAL"), None)
        if first_final is None:
            continue
        item = observed.items.get(call_id)
        if any(d.get("status") != "FINAL" for d in ordered[first_final:]) or (
            item is not None and not item.is_final
        ):
            report.regressions += 1
            problems.append(f"FINAL regression for {call_id}")

    # Exactly one terminal state per ID, the one its kind predicts
    in_dlq = Counter(_dlq_call_id(body) for body in observed.dlq_bodies)
    wanted = set(observed.ids)
    strangers = sorted(key for key in observed.items if key not in wanted)
    if strangers:
        problems.append(f"items for {len(strangers)} keys never sent, e.g. {strangers[0]}")
    for call_id in observed.ids:
        item = observed.items.get(call_id)
        states: list[str] = []
        terminal_event: str | None = None
        if item is not None and item.state == "enriched" and item.is_final and item.version:
            terminal_event = f"{call_id}:v{item.version}"
            if terminal_event in delivered:
                states.append("final")
        if item is not None and item.state == "failed" and item.failure is not None:
            terminal_event = call_enrichment_failed_event(call_id, item.failure).detail["eventId"]
            if terminal_event in delivered:
                states.append("failed")
                report.failed_by_reason[item.failure.reason] += 1
        if in_dlq.get(call_id):
            states.append("dlq")
            trace = item.last_error if item is not None else None
            report.dlq_by_reason[trace.reason if trace is not None else "none"] += 1
        if not states:
            report.lost += 1
            report.lost_ids.append(call_id)
            held = f"stored {item.state} {item.status or ''}".strip() if item else "nothing stored"
            problems.append(f"lost: {call_id} ({held})")
            continue
        if len(states) > 1:
            report.multiple += 1
            problems.append(f"{call_id} in several terminal states: {states}")
            continue
        state = states[0]
        setattr(report, state, getattr(report, state) + 1)
        if state == "dlq":
            report.dlq_ids.append(call_id)
        kind = observed.kinds.get(call_id, "final")
        reason = item.failure.reason if state == "failed" and item and item.failure else None
        if state != EXPECTED_STATE[kind] or (
            reason is not None and reason != EXPECTED_FAILURE_REASON
        ):
            report.unexpected_outcomes += 1
            ended = f"{state} ({reason})" if reason else state
            problems.append(f"{call_id} ({kind}) ended {ended}, not {EXPECTED_STATE[kind]}")
        if terminal_event is not None and terminal_event in observed.seen_at:
            sent = observed.submitted.get(call_id, observed.seen_at[terminal_event])
            report.latency_seconds.append(max(0.0, observed.seen_at[terminal_event] - sent))


# --- command line ----------------------------------------------------------------------------


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("a fraction in [0, 1), e.g. 0.05")
    return value


SECONDS_PER_ID = 0.5
"""The default time limit per call ID. moto is the run's bottleneck: 10,000 IDs took 1,468 s
on 2 cores beside a test run (0.15 s an ID, docs/reliability.md); this leaves 3x for a
slower machine."""
MIN_TIME_LIMIT_SECONDS = 600.0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ids", type=int, default=10_000, help="call IDs to send (10000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every injected fault (1)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help=f"give up after this many seconds (default: {SECONDS_PER_ID:g} s per ID, at least"
        f" {MIN_TIME_LIMIT_SECONDS:g})",
    )
    parser.add_argument(
        "--publisher-faults",
        type=_rate,
        default=ChaosConfig().put_events_entry_failure,
        metavar="RATE",
        help="fraction of the stream publisher's PutEvents entries failed (InternalFailure;"
        " whole calls throttled at RATE/2); 0: none, and then no duplicate event is allowed"
        " (0.05)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the handlers' log lines")


def cmd_chaos(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the chaos run and print its report; 0 when the accounting balances, else 1."""
    limit = args.time_limit
    if limit is None:
        limit = max(MIN_TIME_LIMIT_SECONDS, SECONDS_PER_ID * args.ids)
    config = ChaosConfig(time_limit_seconds=limit)
    rate = getattr(args, "publisher_faults", None)
    if rate is not None:
        config = config.with_publisher_faults(rate)
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
