"""A scriptable fake of the Sinch Calling API, served over real HTTP on 127.0.0.1.

Built for tests (and reusable by the sandbox in ``tools/``): it binds an ephemeral port on
the loopback interface only, answers each request from a per-path script, and records every
request (method, raw path, headers, body) so a test can check what went over the wire,
including the signature the server saw.

Scripts: ``fake.on_call(call_id, reply1, reply2, ...)`` (or ``on_path``) queues replies for
one path; each request takes the next one and the **last reply repeats**, so
``on_call(cid, Reply.error(503), Reply.json(record))`` is "fail once, then succeed" and
``on_call(cid, Reply.error(503))`` is "always fail". An entry may also be a callable
``(RecordedRequest) -> Reply`` for answers computed from the request. Unscripted paths get
``default`` (a Sinch-style 404).

Authentication: give ``credentials`` and the server checks every request before the script,
like Sinch: a Basic header must match, a signed one must pass
:func:`call_enricher.sinch.auth.verify_signature` over the raw path it received. Failures
are answered 401 with Sinch's error code (40100 header, 40101 x-timestamp, 40102 signature,
40108 credentials) and the result is kept on the recorded request (``auth_check``).
``credentials`` can be swapped at any time (key rotation).

TLS: pass ``ssl_context`` (a server context with a certificate for 127.0.0.1) and the fake
serves HTTPS; see :func:`self_signed_tls` for one made with ``openssl``.

Timing: ``Reply(delay=...)`` answers late, ``Reply(hang=True)`` never answers (the handler
waits until the server stops), both without holding up ``stop()``.
"""

from __future__ import annotations

import hmac
import json
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

from call_enricher.sinch.auth import (
    AuthScheme,
    SignatureCheck,
    SinchCredentials,
    basic_authorization,
    verify_signature,
)

GET_CALL_PATH = "/calling/v1/calls/id/"
LOOPBACK = "127.0.0.1"

_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``body`` may be bytes, text, or a dict/list sent as JSON."""

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
            "status": f"{status} {_STATUS_TEXT.get(status, 'Error')}",
            "errorCode": status * 100 if error_code is None else error_code,
            "message": message or _STATUS_TEXT.get(status, "Error"),
        }
        if reference is not None:
            body["reference"] = reference
        return cls(status=status, body=json.dumps(body).encode(), **kwargs)

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


Script = Reply | Callable[["RecordedRequest"], Reply]


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


def not_found_reply() -> Reply:
    return Reply.error(404, 40400, "Call not found", reference=str(uuid.uuid4()))


class FakeSinch:
    """The fake server. Use as a context manager, or call :meth:`start`/:meth:`stop`."""

    def __init__(
        self,
        *,
        credentials: SinchCredentials | None = None,
        accepted_schemes: frozenset[AuthScheme] = frozenset(AuthScheme),
        default: Script | None = None,
        max_skew_seconds: float = 300,
        hang_limit_seconds: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.credentials = credentials
        self.ssl_context = ssl_context
        self.accepted_schemes = accepted_schemes
        self.default: Script = default or not_found_reply()
        self.max_skew_seconds = max_skew_seconds
        self.hang_limit_seconds = hang_limit_seconds
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Script]] = {}
        self._requests: list[RecordedRequest] = []
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeSinch:
        fake = self

        class Handler(_Handler):
            owner = fake

        server = _Server((LOOPBACK, 0), Handler)
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._release.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let hanging/delayed handlers finish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeSinch:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeSinch is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    # --- scripting -----------------------------------------------------------------------

    @staticmethod
    def call_path(call_id: str) -> str:
        return GET_CALL_PATH + quote(call_id, safe="")

    def on_path(self, path: str, *replies: Script) -> None:
        """Answer requests for the raw ``path`` with ``replies`` in order (last repeats)."""
        if not replies:
            raise ValueError("at least one reply")
        with self._lock:
            self._scripts[path] = list(replies)

    def on_call(self, call_id: str, *replies: Script) -> None:
        """Script ``GET /calling/v1/calls/id/{call_id}``."""
        self.on_path(self.call_path(call_id), *replies)

    def add_call(self, call_id: str, record: Mapping[str, Any]) -> None:
        """Serve ``record`` (``callId`` filled in) for ``call_id``, always."""
        self.on_call(call_id, Reply.json({"callId": call_id, **record}))

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            queue = self._scripts.get(request.path)
            script = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else self.default
        return script(request) if callable(script) else script

    # --- inspection ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, in order."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # --- authentication ------------------------------------------------------------------

    def check_auth(self, request: RecordedRequest) -> SignatureCheck:
        """Check a request as Sinch would (requires ``credentials``)."""
        credentials = self.credentials
        assert credentials is not None
        authorization = request.header("Authorization")
        if authorization and authorization.strip().lower().startswith("basic "):
            if AuthScheme.BASIC not in self.accepted_schemes:
                return SignatureCheck.BAD_SCHEME
            expected = basic_authorization(credentials)
            same = hmac.compare_digest(
                authorization.strip().encode("latin-1", "replace"), expected.encode()
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

    def _wait(self, seconds: float) -> None:
        self._release.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default 5 drops SYNs under a burst: 1 s client stalls

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up are part of the tests: stay quiet.
        pass

    # A failed TLS handshake in accept() raises ssl.SSLError, an OSError, which
    # socketserver already drops without stopping the serving thread.


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path] | None:
    """A server context for 127.0.0.1 and its certificate file (the CA to trust).

    Made with the ``openssl`` command line; ``None`` when it is not installed.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "fake-sinch.crt", directory / "fake-sinch.key"
    subprocess.run(  # noqa: S603 - fixed argv, no shell
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert


class _Handler(BaseHTTPRequestHandler):
    owner: FakeSinch
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is exercised
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=list(self.headers.items()),
            body=body,
            server_port=self.server.server_address[1],
            client_port=self.client_address[1],
        )
        if owner.credentials is not None:
            request.auth_check = owner.check_auth(request)
        owner._record(request)
        if request.auth_check is not None and not request.auth_check.ok:
            code = request.auth_check.sinch_error_code or 40100
            reply = Reply.error(401, code, f"Unauthorized ({request.auth_check.value})")
        else:
            reply = owner._next_reply(request)
        if reply.hang:
            owner._wait(owner.hang_limit_seconds)
            self.close_connection = True
            return
        if reply.delay:
            owner._wait(reply.delay)
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
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


@contextmanager
def running(**kwargs: Any) -> Iterator[FakeSinch]:
    """``with running(credentials=...) as fake:`` a started :class:`FakeSinch`."""
    fake = FakeSinch(**kwargs)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
