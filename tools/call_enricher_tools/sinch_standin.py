"""The one stand-in for Sinch Voice Get Call, served over real HTTP on 127.0.0.1.

:class:`SinchStandIn` is the server core every Sinch stand-in of the project runs on: the
tests' scripted fake (:class:`ScriptedSinch`, re-exported as ``tests.support.fake_sinch.
FakeSinch``), the sandbox users run (:class:`call_enricher_tools.sandbox.Sandbox`), the chaos
run's fault injector (:class:`call_enricher_tools.chaos.ChaosSinch`) and the benchmarks' fast
record server (``bench.standins.SinchStandIn``). What they answer is an :class:`Answerer`
plugged into the core; the core does the rest, the same for all:

* HTTP/1.1 keep-alive with Nagle off (headers and body go out in separate writes), bound to
  127.0.0.1 only (:class:`NonLoopbackHostError` otherwise), on an ephemeral port by default;
* counts: TCP connections accepted (so connection reuse is seen at the server, not assumed),
  requests, answers per ``"<METHOD> <route> <status>"`` and authentication failures per
  :class:`~call_enricher.sinch.auth.SignatureCheck`; :meth:`SinchStandIn.reset_counts`;
* authentication as Sinch does it when ``credentials`` are given (swap them at any time: key
  rotation): a Basic header must match, a signed one must pass
  :func:`~call_enricher.sinch.auth.verify_signature` over the raw path received. A failure
  is answered 401 with Sinch's ``errorCode`` (40100 header, 40101 x-timestamp, 40102
  signature, 40108 credentials) and kept on the request (``auth_check``);
* recording (``record=True``): every request as received (method, raw path, headers in
  arrival order, raw body, client port), for tests that check what went over the wire;
* timing: ``Reply(delay=...)`` answers late, ``Reply(hang=True)`` holds the connection
  ``hang_seconds`` and closes it unanswered; :meth:`SinchStandIn.stop` releases both at once
  and closes idle keep-alive connections;
* TLS: pass ``ssl_context`` (a server context with a certificate for 127.0.0.1).

An answerer's paths under its ``control_prefix`` (the sandbox's ``/_sandbox/``, the bench's
``/__stats``) go to :meth:`Answerer.control`: not authenticated, counted or recorded as
requests. Every other request goes, once authenticated, to :meth:`Answerer.answer`.

:class:`ScriptedAnswers` is the answerer of tests: replies queued per path, **the last one
repeating**, so ``on_call(cid, Reply.error(503), Reply.json(record))`` is "fail once, then
succeed" and ``on_call(cid, Reply.error(503))`` "always fail". An entry may also be a callable
``(RecordedRequest) -> Reply``. Unscripted paths get ``default`` (a Sinch-style 404).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import socket
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import quote, urlsplit

from call_enricher.sinch.auth import (
    AuthScheme,
    SignatureCheck,
    SinchCredentials,
    basic_authorization,
    verify_signature,
)

LOOPBACK = "127.0.0.1"
GET_CALL_PATH = "/calling/v1/calls/id/"
GET_CALL_ROUTE = GET_CALL_PATH + "{callId}"
MAX_BODY_BYTES = 1 << 20
"""Request bodies are read up to this size (Get Call has none)."""


class NonLoopbackHostError(ValueError):
    """A stand-in was asked to listen on something else than 127.0.0.1."""


def _status_text(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@dataclass(frozen=True)
class Reply:
    """One answer. ``body`` may be bytes, text, or a dict/list sent as JSON."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    delay: float = 0.0
    hang: bool = False

    @classmethod
    def json(cls, data: Any, status: int = 200, **kwargs: Any) -> Reply:
        return cls(status=status, body=json.dumps(data).encode(), **kwargs)

    @classmethod
    def error(
        cls,
        status: int,
        error_code: int | str | None = None,
        message: str | None = None,
        *,
        reference: str | None = None,
        **kwargs: Any,
    ) -> Reply:
        """A Sinch-style error body (``errorCode`` defaults to ``status * 100``)."""
        body: dict[str, Any] = {
            "status": f"{status} {_status_text(status)}",
            "errorCode": status * 100 if error_code is None else error_code,
            "message": message or _status_text(status),
        }
        if reference is not None:
            body["reference"] = reference
        return cls.json(body, status, **kwargs)

    @classmethod
    def redirect(cls, location: str, status: int = 307) -> Reply:
        return cls(status=status, headers={"Location": location}, body=b"")

    @classmethod
    def html(cls, status: int, text: str = "<html><body>Bad gateway</body></html>") -> Reply:
        return cls(status=status, body=text, content_type="text/html")

    def encoded(self) -> tuple[bytes, str | None]:
        if self.body is None:
            return b"", None
        if isinstance(self.body, bytes):
            return self.body, self.content_type or ("application/json" if self.body else None)
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), self.content_type or "application/json"


def sinch_error(status: int, error_code: int, message: str, **kwargs: Any) -> Reply:
    """The error Sinch sends: ``{status, errorCode, message, reference}`` (a fresh UUID)."""
    return Reply.error(status, error_code, message, reference=str(uuid.uuid4()), **kwargs)


def not_found_reply() -> Reply:
    return sinch_error(404, 40400, "Call not found")


def call_path(call_id: str) -> str:
    """The Get Call path of ``call_id`` (percent-encoded as the client sends it)."""
    return GET_CALL_PATH + quote(call_id, safe="")


@dataclass
class RecordedRequest:
    """What the server received, exactly (headers in arrival order, raw path, raw body)."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    server_port: int
    client_port: int = 0
    """The client's source port: equal ports on successive requests mean a reused connection."""
    auth_check: SignatureCheck | None = None

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None


Script = Reply | Callable[[RecordedRequest], Reply]
"""A scripted entry: a reply, or one computed from the request."""


class Answerer:
    """What a :class:`SinchStandIn` answers; subclasses implement :meth:`answer`."""

    control_prefix: str | None = None
    """Paths starting with it go to :meth:`control` (no auth, not counted as requests)."""

    def authenticates(self, request: RecordedRequest) -> bool:
        """Whether the stand-in checks this request's credentials (when it has some)."""
        return True

    def answer(self, request: RecordedRequest) -> Reply:
        """The reply to an (authentic, when checked) request."""
        raise NotImplementedError

    def control(self, request: RecordedRequest, standin: SinchStandIn[Any]) -> Reply:
        """The reply to a request under :attr:`control_prefix`."""
        return sinch_error(404, 40400, "Not found")


class SinchStandIn[A: Answerer]:
    """The server core. ``start()``/``stop()``, or ``with SinchStandIn(answerer) as s:``.

    Args:
        answerer: what to answer (see :class:`Answerer`).
        host: must be ``127.0.0.1`` (or ``localhost``).
        port: 0 for any free port.
        credentials: check every request the answerer :meth:`~Answerer.authenticates`
            (None: check none).
        accepted_schemes: the Authorization schemes accepted (both by default).
        max_skew_seconds: accepted ``x-timestamp`` skew, both ways.
        hang_seconds: how long a ``Reply(hang=True)`` holds the connection.
        ssl_context: serve HTTPS with this server context.
        record: keep every request (:attr:`requests`).
    """

    def __init__(
        self,
        answerer: A,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        credentials: SinchCredentials | None = None,
        accepted_schemes: frozenset[AuthScheme] = frozenset(AuthScheme),
        max_skew_seconds: float = 300,
        hang_seconds: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        record: bool = True,
    ) -> None:
        if host not in (LOOPBACK, "localhost"):
            raise NonLoopbackHostError(
                f"the Sinch stand-in listens on {LOOPBACK} only, not {host!r} "
                "(it accepts a test secret and serves phone numbers)"
            )
        self.answerer = answerer
        self.credentials = credentials
        self.accepted_schemes = accepted_schemes
        self.max_skew_seconds = max_skew_seconds
        self.hang_seconds = hang_seconds
        self.ssl_context = ssl_context
        self.record = record
        self._requested_port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections = 0
        self._request_count = 0
        self._answered: Counter[str] = Counter()
        self._auth_failures: Counter[str] = Counter()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a background thread. Raises ``OSError`` when the port is taken."""
        if self._server is not None:
            return self
        server = _Server(self, (LOOPBACK, self._requested_port))
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._release.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="sinch-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: delayed and hanging requests are released, idle connections closed."""
        self._release.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less when the stand-in stops (then True)."""
        return self._release.wait(seconds)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Sinch stand-in is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:<port>`` (the SinchClient's ``base_url``)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    # --- inspection ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request recorded so far, in order."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    @property
    def connections(self) -> int:
        """TCP connections accepted."""
        with self._lock:
            return self._connections

    @property
    def request_count(self) -> int:
        """Requests received (control requests not included)."""
        with self._lock:
            return self._request_count

    @property
    def answered(self) -> dict[str, int]:
        """Answers per ``"<METHOD> <route> <status>"`` (status ``hang`` for a hang)."""
        with self._lock:
            return dict(self._answered)

    @property
    def auth_failures(self) -> dict[str, int]:
        """Rejected requests per :class:`SignatureCheck` value."""
        with self._lock:
            return dict(self._auth_failures)

    def reset_counts(self) -> None:
        with self._lock:
            self._connections = self._request_count = 0
            self._answered.clear()
            self._auth_failures.clear()

    # --- authentication ------------------------------------------------------------------

    def check_auth(self, request: RecordedRequest) -> SignatureCheck:
        """Check a request as Sinch would (requires ``credentials``)."""
        credentials = self.credentials
        if credentials is None:
            raise RuntimeError("the stand-in has no credentials to check requests against")
        authorization = request.header("Authorization")
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() == "basic" and given:
            if AuthScheme.BASIC not in self.accepted_schemes:
                return SignatureCheck.BAD_SCHEME
            expected = basic_authorization(credentials).partition(" ")[2]
            same = hmac.compare_digest(
                given.strip().encode("latin-1", "replace"), expected.encode()
            )
            return SignatureCheck.OK if same else SignatureCheck.WRONG_KEY
        if AuthScheme.SIGNED not in self.accepted_schemes:
            return (
                SignatureCheck.MISSING_AUTHORIZATION
                if authorization is None
                else SignatureCheck.BAD_SCHEME
            )
        return verify_signature(
            credentials,
            method=request.method,
            path=request.path,
            body=request.body,
            content_type=request.header("Content-Type") or "",
            timestamp=request.header("x-timestamp"),
            authorization=authorization,
            max_skew_seconds=self.max_skew_seconds,
        )

    # --- answering (called by the handler) -----------------------------------------------

    def _accepted(self) -> None:
        with self._lock:
            self._connections += 1

    def _reply_to(self, request: RecordedRequest) -> Reply:
        answerer = self.answerer
        path = urlsplit(request.path).path
        prefix = answerer.control_prefix
        if prefix is not None and path.startswith(prefix):
            route = prefix.rstrip("/")
            reply = answerer.control(request, self)
        else:
            route = GET_CALL_ROUTE if path.startswith(GET_CALL_PATH) else "other"
            if self.credentials is not None and answerer.authenticates(request):
                request.auth_check = self.check_auth(request)
            check = request.auth_check
            with self._lock:
                self._request_count += 1
                if self.record:
                    self._requests.append(request)
                if check is not None and not check.ok:
                    self._auth_failures[check.value] += 1
            if check is not None and not check.ok:
                reply = sinch_error(401, check.sinch_error_code or 40100, "Unauthorized")
            else:
                reply = answerer.answer(request)
        status = "hang" if reply.hang else reply.status
        with self._lock:
            self._answered[f"{request.method} {route} {status}"] += 1
        return reply


class ScriptedAnswers(Answerer):
    """Replies queued per raw path (the last one repeats); ``default`` for the others."""

    def __init__(self, default: Script | None = None) -> None:
        self.default: Script = default or not_found_reply()
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Script]] = {}

    def on_path(self, path: str, *replies: Script) -> None:
        """Answer requests for the raw ``path`` with ``replies`` in order (last repeats)."""
        if not replies:
            raise ValueError("at least one reply")
        with self._lock:
            self._scripts[path] = list(replies)

    def answer(self, request: RecordedRequest) -> Reply:
        with self._lock:
            queue = self._scripts.get(request.path)
            script = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else self.default
        return script(request) if callable(script) else script


class ScriptedSinch(SinchStandIn[ScriptedAnswers]):
    """A stand-in answering from per-path scripts (the tests' ``FakeSinch``)."""

    def __init__(self, *, default: Script | None = None, **options: Any) -> None:
        super().__init__(ScriptedAnswers(default), **options)

    call_path = staticmethod(call_path)

    def on_path(self, path: str, *replies: Script) -> None:
        """Answer requests for the raw ``path`` with ``replies`` in order (last repeats)."""
        self.answerer.on_path(path, *replies)

    def on_call(self, call_id: str, *replies: Script) -> None:
        """Script ``GET /calling/v1/calls/id/{call_id}``."""
        self.answerer.on_path(call_path(call_id), *replies)

    def add_call(self, call_id: str, record: Mapping[str, Any]) -> None:
        """Serve ``record`` (``callId`` filled in) for ``call_id``, always."""
        self.on_call(call_id, Reply.json({"callId": call_id, **record}))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # the default 5 drops SYNs under a burst: 1 s client stalls
    allow_reuse_address = True  # a fixed port can be bound again right after a stop

    def __init__(self, standin: SinchStandIn[Any], address: tuple[str, int]) -> None:
        self.standin = standin
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.standin._accepted()
        with self._open_lock:
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
        pass  # clients that time out and hang up are part of every use

    # A failed TLS handshake in accept() raises ssl.SSLError, an OSError, which
    # socketserver already drops without stopping the serving thread.


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is exercised
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "sinch-standin"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _serve(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, MAX_BODY_BYTES)) if length > 0 else b""
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=list(self.headers.items()),
            body=body,
            server_port=self.server.server_address[1],
            client_port=self.client_address[1],
        )
        reply = standin._reply_to(request)
        if reply.hang:
            standin.wait(standin.hang_seconds)
            self.close_connection = True
            return
        if reply.delay > 0:
            standin.wait(reply.delay)
        payload, content_type = reply.encoded()
        try:
            self.send_response(reply.status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:
            self.close_connection = True
