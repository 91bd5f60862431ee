"""The Sinch sandbox: seeded records, faults and control routes answered by the one Sinch
stand-in (:mod:`call_enricher_tools.sinch_standin`); see the package docstring."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from call_enricher.callid import validate_call_id
from call_enricher.errors import InvalidCallIdError
from call_enricher.sinch.auth import SinchCredentials
from call_enricher_tools.sandbox.callbacks import CallbackOutcome, DiceSender
from call_enricher_tools.sandbox.faults import (
    OK,
    Fault,
    FaultProfile,
    Latency,
    keyed_rng,
    parse_step,
)
from call_enricher_tools.sandbox.records import SeedRecord, generate_records, unknown_call_ids
from call_enricher_tools.sinch_standin import (
    GET_CALL_PATH,
    LOOPBACK,
    Answerer,
    NonLoopbackHostError,
    RecordedRequest,
    Reply,
    SinchStandIn,
    sinch_error,
)

__all__ = ["NonLoopbackHostError", "Sandbox", "sandbox_credentials"]

CONTROL_PREFIX = "/_sandbox/"
CALL_KINDS = ("all", "final", "ongoing", "unknown", "risky")

_ERROR_MESSAGES = {
    429: (42900, "Capacity exceeded"),
    500: (50000, "Internal server error"),
    503: (50300, "Service unavailable"),
}


def sandbox_credentials(seed: int) -> SinchCredentials:
    """The local test credentials of a seed (deterministic; never real ones)."""
    rng = keyed_rng(seed, "credentials")
    key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    secret = base64.b64encode(rng.getrandbits(256).to_bytes(32, "big")).decode()
    return SinchCredentials(application_key=key, application_secret=secret)


class Sandbox(Answerer):
    """A Sinch Get Call sandbox. ``start()``/``stop()`` or ``with Sandbox() as sandbox:``.

    It is the :class:`~call_enricher_tools.sinch_standin.Answerer` of its own stand-in
    (which binds, authenticates, counts connections and holds hangs).

    Args:
        host: must be ``127.0.0.1`` (or ``localhost``); anything else raises
            :class:`NonLoopbackHostError`.
        port: 0 for any free port.
        seed: decides the records, the credentials (unless given) and every fault draw.
        records: how many calls to seed (the ``events/sinch`` samples included).
        credentials: the application key/secret to accept (default: from the seed).
        latency: ``"100"``, ``"50-150"``, ``"lognormal:50:400"`` (ms) or a :class:`Latency`.
        faults: a profile text / dict / :class:`FaultProfile` (rates per request).
        callback_url: where DiCEs go when calls end (None: no callbacks).
        callback_path: the path to sign (default: the URL's path).
        callback_scheme: the Authorization scheme word of callbacks (``application``).
        ongoing_seconds: how long an ONGOING call stays ONGOING.
        ongoing_fraction: the share of generated calls that start ONGOING.
        risky: also seed the risky calls (a premium-rate destination, a satellite number, a
            burst to one country; see :func:`~.records.risky_records`).
        ongoing_from: ``"start"`` (the clock starts when the sandbox starts) or
            ``"first-request"`` (when the call is first asked about; for long runs).
        dice_on_ongoing_end: send a DiCE when an ONGOING call turns FINAL by itself
            (``end_call()`` always sends one when a callback URL is set).
        hang_seconds: how long a ``hang`` holds the connection (released by ``stop()``).
        max_skew_seconds: accepted ``x-timestamp`` skew, both ways.
        clock: monotonic seconds (inject a fake one in tests).
    """

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        seed: int = 1,
        records: int = 300,
        credentials: SinchCredentials | None = None,
        latency: str | float | Latency | None = None,
        faults: str | dict[str, Any] | FaultProfile | None = None,
        callback_url: str | None = None,
        callback_path: str | None = None,
        callback_scheme: str = "application",
        callback_attempts: int = 3,
        ongoing_seconds: float = 10.0,
        ongoing_fraction: float = 0.1,
        risky: bool = True,
        ongoing_from: str = "start",
        dice_on_ongoing_end: bool = True,
        hang_seconds: float = 30.0,
        max_skew_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ongoing_from not in ("start", "first-request"):
            raise ValueError("ongoing_from must be 'start' or 'first-request'")
        self.credentials = credentials or sandbox_credentials(seed)
        self._standin = SinchStandIn(
            self,
            host=host,
            port=port,
            credentials=self.credentials,
            max_skew_seconds=max_skew_seconds,
            hang_seconds=hang_seconds,
            record=False,
        )
        self.host = LOOPBACK
        self.seed = seed
        self.latency = latency if isinstance(latency, Latency) else Latency.parse(latency)
        self.faults = faults if isinstance(faults, FaultProfile) else FaultProfile.parse(faults)
        self.callback_path = callback_path
        self.callback_scheme = callback_scheme
        self.callback_attempts = callback_attempts
        self.ongoing_seconds = ongoing_seconds
        self.ongoing_from = ongoing_from
        self.dice_on_ongoing_end = dice_on_ongoing_end
        self.clock = clock
        self._records: dict[str, SeedRecord] = {
            r.call_id: r
            for r in generate_records(seed, records, ongoing_fraction=ongoing_fraction, risky=risky)
        }
        self._unknown = unknown_call_ids(seed, max(10, records // 20))
        self._lock = threading.RLock()
        self._ended: set[str] = set()
        self._started_at: dict[str, float] = {}
        self._requests_per_id: Counter[str] = Counter()
        self._scripts: dict[str, list[Fault]] = {}
        self._stats: Counter[str] = Counter()
        self._callbacks: list[CallbackOutcome] = []
        self._callback_url: str | None = None
        self._sender: DiceSender | None = None
        self._ticker: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.set_callback_url(callback_url)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind and serve in background threads. Raises ``OSError`` when the port is taken."""
        if self._ticker is not None:
            return self
        self._standin.start()
        now = self.clock()
        with self._lock:
            if self.ongoing_from == "start":
                for call_id, record in self._records.items():
                    if record.ongoing:
                        self._started_at.setdefault(call_id, now)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sandbox-dice")
        self._ticker = threading.Thread(target=self._tick_loop, name="sandbox-ticker", daemon=True)
        self._ticker.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging requests are released; idle connections are closed."""
        self._standin.stop()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (the SinchClient's ``base_url``)."""
        return self._standin.base_url

    # -- what is seeded --------------------------------------------------------------------

    def call_ids(self, kind: str = "all") -> list[str]:
        """Seeded call IDs: ``all``, ``final`` (FINAL now), ``ongoing`` (ONGOING now),
        ``unknown`` (well-formed IDs the sandbox answers 404 for) or ``risky`` (the risky
        calls, last of ``all`` and ``final``; their :attr:`SeedRecord.source` says which)."""
        if kind not in CALL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CALL_KINDS)}")
        if kind == "unknown":
            return list(self._unknown)
        if kind == "all":
            return list(self._records)
        if kind == "risky":
            return [cid for cid, r in self._records.items() if r.source.startswith("risky:")]
        want_ongoing = kind == "ongoing"
        return [cid for cid in self._records if self.is_ongoing(cid) == want_ongoing]

    def phone_numbers(self) -> set[str]:
        """Every PSTN/SIP endpoint of the seeded records (for no-leak checks of logs)."""
        numbers: set[str] = set()
        for record in self._records.values():
            for side in ("from", "to"):
                party = record.final.get(side)
                if (
                    isinstance(party, dict)
                    and party.get("endpoint") not in (None, "private")
                    and str(party.get("type", "")).lower() != "username"
                ):
                    numbers.add(str(party["endpoint"]))
        return numbers

    def record(self, call_id: str) -> SeedRecord | None:
        return self._records.get(call_id)

    def is_ongoing(self, call_id: str) -> bool:
        """Whether ``call_id`` is ONGOING now (its delay not yet over, not ended)."""
        record = self._records.get(call_id)
        if record is None or not record.ongoing:
            return False
        with self._lock:
            if call_id in self._ended:
                return False
            started = self._started_at.get(call_id)
        if started is None:
            return True  # not started ("first-request" and never asked)
        return self.clock() - started < self.ongoing_seconds

    def current_body(self, call_id: str) -> dict[str, Any] | None:
        """The Get Call body served for ``call_id`` now (None: unknown)."""
        record = self._records.get(call_id)
        if record is None:
            return None
        return record.ongoing_body() if self.is_ongoing(call_id) else dict(record.final)

    # -- faults ----------------------------------------------------------------------------

    def set_faults(self, faults: str | dict[str, Any] | FaultProfile | None) -> FaultProfile:
        """Replace the fault rates (see :mod:`.faults`); returns the new profile."""
        profile = faults if isinstance(faults, FaultProfile) else FaultProfile.parse(faults)
        with self._lock:
            self.faults = profile
        return profile

    def set_latency(self, latency: str | float | Latency | None) -> Latency:
        value = latency if isinstance(latency, Latency) else Latency.parse(latency)
        with self._lock:
            self.latency = value
        return value

    def script(self, call_id: str, steps: Iterable[str | int]) -> None:
        """Answer the next requests for ``call_id`` with ``steps`` (then normally)."""
        parsed = [parse_step(step) for step in steps]
        with self._lock:
            if parsed:
                self._scripts[call_id] = parsed
            else:
                self._scripts.pop(call_id, None)

    def inject_fault(
        self,
        call_id: str,
        *,
        status: int | str = 503,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Answer ``status`` (or ``"hang"``/``"malformed"``) ``times`` times, then normally."""
        step = f"{status}:{retry_after}" if retry_after is not None else str(status)
        self.script(call_id, [step] * times)

    # -- calls ending and callbacks --------------------------------------------------------

    @property
    def callback_url(self) -> str | None:
        return self._callback_url

    @callback_url.setter
    def callback_url(self, url: str | None) -> None:
        self.set_callback_url(url)

    def set_callback_url(self, url: str | None, *, signed_path: str | None = None) -> None:
        """Send DiCEs to ``url`` from now on (None: stop sending)."""
        sender = None
        if url:
            sender = DiceSender(
                self.credentials,
                url,
                signed_path=signed_path or self.callback_path,
                scheme=self.callback_scheme,
                attempts=self.callback_attempts,
            )
        with self._lock:
            self._callback_url, self._sender = url, sender

    def end_call(self, call_id: str) -> CallbackOutcome | None:
        """End ``call_id`` now (FINAL from now on) and send its DiCE, synchronously.

        Returns the delivery outcome, or None without a callback URL.

        Raises:
            KeyError: ``call_id`` is not seeded.
        """
        record = self._records.get(call_id)
        if record is None:
            raise KeyError(call_id)
        with self._lock:
            self._ended.add(call_id)
            self._stats["calls-ended"] += 1
        return self._send_dice(call_id)

    def tick(self) -> list[str]:
        """End the ONGOING calls whose delay is over and send their DiCEs in the background;
        returns their IDs. Runs every 50 ms while started; call it after moving a fake clock.
        """
        now = self.clock()
        due: list[str] = []
        with self._lock:
            for call_id, started in self._started_at.items():
                if call_id not in self._ended and now - started >= self.ongoing_seconds:
                    due.append(call_id)
            self._ended.update(due)
            self._stats["calls-ended"] += len(due)
        executor = self._executor
        if self._sender is not None and executor is not None and self.dice_on_ongoing_end:
            for call_id in due:
                executor.submit(self._send_dice, call_id)
        return due

    def _tick_loop(self) -> None:
        while not self._standin.wait(0.05):
            self.tick()

    def _send_dice(self, call_id: str) -> CallbackOutcome | None:
        sender = self._sender
        if sender is None:
            return None
        outcome = sender.send(self._records[call_id].final)
        with self._lock:
            self._callbacks.append(outcome)
            self._stats["callbacks-delivered" if outcome.delivered else "callbacks-failed"] += 1
            self._stats["callback-attempts"] += outcome.attempts
        return outcome

    @property
    def callbacks(self) -> list[CallbackOutcome]:
        with self._lock:
            return list(self._callbacks)

    # -- statistics ------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: ``requests`` per ``"<METHOD> <route> <status>"``, ``faults`` per
        kind, ``connections`` (TCP connections accepted), callbacks and calls ended."""
        with self._lock:
            counts = dict(self._stats)
        standin = self._standin
        return {
            "requests": standin.answered,
            "faults": {k[6:]: v for k, v in counts.items() if k.startswith("fault:")},
            "auth_failures": standin.auth_failures,
            "connections": standin.connections,
            "callbacks_delivered": counts.get("callbacks-delivered", 0),
            "callbacks_failed": counts.get("callbacks-failed", 0),
            "callback_attempts": counts.get("callback-attempts", 0),
            "calls_ended": counts.get("calls-ended", 0),
        }

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    # -- answering (called by the stand-in) ------------------------------------------------

    control_prefix = CONTROL_PREFIX

    def authenticates(self, request: RecordedRequest) -> bool:
        """Get Call is authenticated; other paths are answered 404 without a check."""
        return urlsplit(request.path).path.startswith(GET_CALL_PATH)

    def answer(self, request: RecordedRequest) -> Reply:
        path = urlsplit(request.path).path
        if not path.startswith(GET_CALL_PATH):
            return sinch_error(404, 40400, "Not found")
        if request.method != "GET":
            return sinch_error(405, 40500, "Method not allowed")
        return self.answer_get_call(path[len(GET_CALL_PATH) :])

    def answer_get_call(self, raw_id: str) -> Reply:
        """The reply to an authentic Get Call for the raw (percent-encoded) ``raw_id``."""
        try:
            call_id = validate_call_id(unquote(raw_id))
        except InvalidCallIdError:
            return sinch_error(400, 40001, "Invalid call id")
        with self._lock:
            self._requests_per_id[call_id] += 1
            asked = self._requests_per_id[call_id]
            script = self._scripts.get(call_id)
            fault = script.pop(0) if script else None
            if script is not None and not script:
                del self._scripts[call_id]
            profile, latency = self.faults, self.latency
            record = self._records.get(call_id)
            if record is not None and record.ongoing and self.ongoing_from == "first-request":
                self._started_at.setdefault(call_id, self.clock())
        if fault is None:
            fault = profile.draw(self.seed, call_id, asked)
        delay = latency.sample_seconds(keyed_rng(self.seed, call_id, "latency", asked))
        if fault is not OK:
            self._count(f"fault:{fault.label}")
        if fault.kind == "hang":
            return Reply(hang=True)
        if fault.kind == "status" and fault.status != 404:
            code, message = _ERROR_MESSAGES.get(fault.status, (fault.status * 100, "Error"))
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return sinch_error(fault.status, code, message, headers=headers, delay=delay)
        body = None if fault.kind == "status" else self.current_body(call_id)
        if body is None:
            return sinch_error(404, 40400, "Call not found", delay=delay)
        encoded = json.dumps(body).encode()
        if fault.kind == "malformed":
            encoded = encoded[: max(1, len(encoded) // 2)]
        return Reply(200, encoded, delay=delay)

    def control(self, request: RecordedRequest, standin: SinchStandIn[Any]) -> Reply:
        return self.answer_control(request.method, request.path, request.body)

    def answer_control(self, method: str, target: str, body: bytes) -> Reply:
        """The ``/_sandbox/`` control API (see the package docstring)."""
        parts = urlsplit(target)
        segments = [unquote(s) for s in parts.path[len(CONTROL_PREFIX) :].split("/") if s]
        query = parse_qs(parts.query)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return Reply.json({"error": "body is not JSON"}, 400)
        try:
            return self._control(method, segments, query, data)
        except (ValueError, TypeError) as exc:
            return Reply.json({"error": str(exc)}, 400)
        except KeyError as exc:
            return Reply.json({"error": f"unknown call {exc}"}, 404)

    def _control(
        self, method: str, segments: list[str], query: dict[str, list[str]], data: Any
    ) -> Reply:
        if segments == ["stats"] and method == "GET":
            return Reply.json(self.stats)
        if segments == ["faults"]:
            if method in ("PUT", "POST"):
                if "latency_ms" in data:
                    self.set_latency(data.pop("latency_ms"))
                self.set_faults(data.get("profile", data) if isinstance(data, dict) else data)
            return Reply.json({"faults": self.faults.as_dict(), "latency": str(self.latency)})
        if segments == ["calls"] and method == "GET":
            kind = query.get("kind", ["all"])[0]
            return Reply.json(
                {
                    "kind": kind,
                    "calls": [
                        {"callId": cid, "status": "UNKNOWN"}
                        if kind == "unknown"
                        else {
                            "callId": cid,
                            "status": "ONGOING" if self.is_ongoing(cid) else "FINAL",
                            "source": self._records[cid].source,
                        }
                        for cid in self.call_ids(kind)
                    ],
                },
            )
        if len(segments) == 2 and segments[0] == "calls" and method == "GET":
            body = self.current_body(segments[1])
            if body is None:
                raise KeyError(segments[1])
            return Reply.json(body)
        if len(segments) == 3 and segments[0] == "calls" and method == "POST":
            call_id, action = segments[1], segments[2]
            if action == "script":
                steps = data.get("steps") if isinstance(data, dict) else data
                if not isinstance(steps, list):
                    raise ValueError('send {"steps": ["503", "ok", ...]}')
                self.script(call_id, steps)
                return Reply.json({"callId": call_id, "steps": steps})
            if action == "end":
                outcome = self.end_call(call_id)
                return Reply.json(
                    {
                        "callId": call_id,
                        "callback": None
                        if outcome is None
                        else {
                            "delivered": outcome.delivered,
                            "attempts": outcome.attempts,
                            "status": outcome.status,
                            "error": outcome.error,
                        },
                    },
                )
        return Reply.json({"error": "unknown control route", "see": "GET /_sandbox/stats"}, 404)
