"""The Sinch sandbox server: Get Call over real HTTP on 127.0.0.1 (see the package docstring)."""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from call_enricher.callid import validate_call_id
from call_enricher.errors import InvalidCallIdError
from call_enricher.sinch.auth import SinchCredentials, verify_signature
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

LOOPBACK = "127.0.0.1"
GET_CALL_PATH = "/calling/v1/calls/id/"
CONTROL_PREFIX = "/_sandbox/"
CALL_KINDS = ("all", "final", "ongoing", "unknown")

_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_ERROR_MESSAGES = {
    429: (42900, "Capacity exceeded"),
    500: (50000, "Internal server error"),
    503: (50300, "Service unavailable"),
}

type Answer = tuple[int, bytes, dict[str, str]]


class NonLoopbackHostError(ValueError):
    """The sandbox was asked to listen on something else than 127.0.0.1."""


def sandbox_credentials(seed: int) -> SinchCredentials:
    """The local test credentials of a seed (deterministic; never real ones)."""
    rng = keyed_rng(seed, "credentials")
    key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    secret = base64.b64encode(rng.getrandbits(256).to_bytes(32, "big")).decode()
    return SinchCredentials(application_key=key, application_secret=secret)


def error_body(status: int, code: int, message: str) -> bytes:
    """Sinch's error body: ``{status, errorCode, message, reference}``."""
    return json.dumps(
        {
            "status": f"{status} {_STATUS_TEXT.get(status, 'Error')}",
            "errorCode": code,
            "message": message,
            "reference": str(uuid.uuid4()),
        }
    ).encode()


def _json(status: int, data: Any) -> Answer:
    return status, json.dumps(data).encode(), {"Content-Type": "application/json"}


def _error(status: int, code: int, message: str) -> Answer:
    return status, error_body(status, code, message), {"Content-Type": "application/json"}


class Sandbox:
    """A Sinch Get Call sandbox. ``start()``/``stop()`` or ``with Sandbox() as sandbox:``.

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
        ongoing_from: str = "start",
        dice_on_ongoing_end: bool = True,
        hang_seconds: float = 30.0,
        max_skew_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if host not in (LOOPBACK, "localhost"):
            raise NonLoopbackHostError(
                f"the sandbox listens on {LOOPBACK} only, not {host!r} "
                "(it accepts a test secret and serves phone numbers)"
            )
        if ongoing_from not in ("start", "first-request"):
            raise ValueError("ongoing_from must be 'start' or 'first-request'")
        self.host = LOOPBACK
        self.port = port
        self.seed = seed
        self.credentials = credentials or sandbox_credentials(seed)
        self.latency = latency if isinstance(latency, Latency) else Latency.parse(latency)
        self.faults = faults if isinstance(faults, FaultProfile) else FaultProfile.parse(faults)
        self.callback_path = callback_path
        self.callback_scheme = callback_scheme
        self.callback_attempts = callback_attempts
        self.ongoing_seconds = ongoing_seconds
        self.ongoing_from = ongoing_from
        self.dice_on_ongoing_end = dice_on_ongoing_end
        self.hang_seconds = hang_seconds
        self.max_skew_seconds = max_skew_seconds
        self.clock = clock
        self._records: dict[str, SeedRecord] = {
            r.call_id: r for r in generate_records(seed, records, ongoing_fraction=ongoing_fraction)
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
        self._release = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._executor: ThreadPoolExecutor | None = None
        self.set_callback_url(callback_url)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind and serve in background threads. Raises ``OSError`` when the port is taken."""
        if self._server is not None:
            return self
        owner = self

        class Handler(_Handler):
            sandbox = owner

        server = _Server((self.host, self.port), Handler)
        server.owner = self
        self._server = server
        self._release.clear()
        now = self.clock()
        with self._lock:
            if self.ongoing_from == "start":
                for call_id, record in self._records.items():
                    if record.ongoing:
                        self._started_at.setdefault(call_id, now)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sandbox-dice")
        serve = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sandbox-http",
            daemon=True,
        )
        ticker = threading.Thread(target=self._tick_loop, name="sandbox-ticker", daemon=True)
        self._threads = [serve, ticker]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging requests are released; idle connections are closed."""
        self._release.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
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
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    # -- what is seeded --------------------------------------------------------------------

    def call_ids(self, kind: str = "all") -> list[str]:
        """Seeded call IDs: ``all``, ``final`` (FINAL now), ``ongoing`` (ONGOING now) or
        ``unknown`` (well-formed IDs the sandbox answers 404 for)."""
        if kind not in CALL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CALL_KINDS)}")
        if kind == "unknown":
            return list(self._unknown)
        if kind == "all":
            return list(self._records)
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
        while not self._release.wait(0.05):
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
        server = self._server
        return {
            "requests": {k[4:]: v for k, v in counts.items() if k.startswith("req:")},
            "faults": {k[6:]: v for k, v in counts.items() if k.startswith("fault:")},
            "auth_failures": {k[5:]: v for k, v in counts.items() if k.startswith("auth:")},
            "connections": server.connections_accepted if server else counts.get("conn", 0),
            "callbacks_delivered": counts.get("callbacks-delivered", 0),
            "callbacks_failed": counts.get("callbacks-failed", 0),
            "callback_attempts": counts.get("callback-attempts", 0),
            "calls_ended": counts.get("calls-ended", 0),
        }

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    # -- answering (called by the handler) -------------------------------------------------

    def check_auth(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        """0 when authentic, else Sinch's 401 ``errorCode``."""
        authorization = headers.get("authorization")
        if authorization and authorization.strip().lower().startswith("basic "):
            expected = "Basic " + base64.b64encode(
                f"{self.credentials.application_key}:{self.credentials.application_secret}".encode()
            ).decode("ascii")
            given = authorization.strip()
            if given.split(" ", 1)[1:] and hmac.compare_digest(
                given.split(" ", 1)[1].encode("latin-1", "replace"),
                expected.split(" ", 1)[1].encode(),
            ):
                return 0
            self._count("auth:basic-wrong-credentials")
            return 40108
        check = verify_signature(
            self.credentials,
            method=method,
            path=path,
            body=body,
            content_type=headers.get("content-type", ""),
            timestamp=headers.get("x-timestamp"),
            authorization=authorization,
            max_skew_seconds=self.max_skew_seconds,
        )
        if check.ok:
            return 0
        self._count(f"auth:{check.value}")
        return check.sinch_error_code or 40100

    def answer_get_call(self, raw_id: str) -> tuple[Answer | None, float]:
        """(answer or None to hang, delay in seconds) for an authentic Get Call."""
        try:
            call_id = validate_call_id(unquote(raw_id))
        except InvalidCallIdError:
            return _error(400, 40001, "Invalid call id"), 0.0
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
            return None, 0.0
        if fault.kind == "status":
            if fault.status == 404:
                return _error(404, 40400, "Call not found"), delay
            code, message = _ERROR_MESSAGES.get(fault.status, (fault.status * 100, "Error"))
            status, payload, headers = _error(fault.status, code, message)
            if fault.retry_after:
                headers["Retry-After"] = fault.retry_after
            return (status, payload, headers), delay
        body = self.current_body(call_id)
        if body is None:
            return _error(404, 40400, "Call not found"), delay
        encoded = json.dumps(body).encode()
        if fault.kind == "malformed":
            encoded = encoded[: max(1, len(encoded) // 2)]
        return (200, encoded, {"Content-Type": "application/json"}), delay

    def answer_control(self, method: str, target: str, body: bytes) -> Answer:
        """The ``/_sandbox/`` control API (see the package docstring)."""
        parts = urlsplit(target)
        segments = [unquote(s) for s in parts.path[len(CONTROL_PREFIX) :].split("/") if s]
        query = parse_qs(parts.query)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return _json(400, {"error": "body is not JSON"})
        try:
            return self._control(method, segments, query, data)
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
        except KeyError as exc:
            return _json(404, {"error": f"unknown call {exc}"})

    def _control(
        self, method: str, segments: list[str], query: dict[str, list[str]], data: Any
    ) -> Answer:
        if segments == ["stats"] and method == "GET":
            return _json(200, self.stats)
        if segments == ["faults"]:
            if method in ("PUT", "POST"):
                if "latency_ms" in data:
                    self.set_latency(data.pop("latency_ms"))
                self.set_faults(data.get("profile", data) if isinstance(data, dict) else data)
            return _json(200, {"faults": self.faults.as_dict(), "latency": str(self.latency)})
        if segments == ["calls"] and method == "GET":
            kind = query.get("kind", ["all"])[0]
            return _json(
                200,
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
            return _json(200, body)
        if len(segments) == 3 and segments[0] == "calls" and method == "POST":
            call_id, action = segments[1], segments[2]
            if action == "script":
                steps = data.get("steps") if isinstance(data, dict) else data
                if not isinstance(steps, list):
                    raise ValueError('send {"steps": ["503", "ok", ...]}')
                self.script(call_id, steps)
                return _json(200, {"callId": call_id, "steps": steps})
            if action == "end":
                outcome = self.end_call(call_id)
                return _json(
                    200,
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
        return _json(404, {"error": "unknown control route", "see": "GET /_sandbox/stats"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # the default 5 drops SYNs under a burst
    allow_reuse_address = True
    owner: Sandbox

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.connections_accepted = 0
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self.connections_accepted += 1
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open connection (idle keep-alive ones included)."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are part of the game


class _Handler(BaseHTTPRequestHandler):
    sandbox: Sandbox
    protocol_version = "HTTP/1.1"  # keep-alive: connection reuse is visible in the stats
    disable_nagle_algorithm = True
    server_version = "sinch-sandbox"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _serve(self) -> None:
        sandbox = self.sandbox
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1 << 20)) if length > 0 else b""
        path = urlsplit(self.path).path
        delay = 0.0
        answer: Answer | None
        if path.startswith(CONTROL_PREFIX):
            route = "/_sandbox"
            answer = sandbox.answer_control(self.command, self.path, body)
        elif path.startswith(GET_CALL_PATH):
            route = "/calling/v1/calls/id/{callId}"
            headers = {k.lower(): v for k, v in self.headers.items()}
            code = sandbox.check_auth(self.command, self.path, headers, body)
            if code:
                answer = _error(401, code, "Unauthorized")
            elif self.command != "GET":
                answer = _error(405, 40500, "Method not allowed")
            else:
                answer, delay = sandbox.answer_get_call(path[len(GET_CALL_PATH) :])
        else:
            route = "other"
            answer = _error(404, 40400, "Not found")
        status = answer[0] if answer is not None else 0
        sandbox._count(f"req:{self.command} {route} {status or 'hang'}")
        if answer is None:
            sandbox._release.wait(sandbox.hang_seconds)
            self.close_connection = True
            return
        if delay > 0:
            sandbox._release.wait(delay)
        code, payload, extra = answer
        try:
            self.send_response(code, _STATUS_TEXT.get(code))
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:
            self.close_connection = True
