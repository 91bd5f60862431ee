"""The HTTP API on 127.0.0.1, like ``sam local start-api``: real HTTP in, real handlers called.

Each HTTP request becomes an API Gateway HTTP API payload v2.0 event (``rawPath``,
``rawQueryString``, lower-cased ``headers``, ``cookies``, ``isBase64Encoded`` for binary
bodies, ``requestContext.http``, ``routeKey``, ``pathParameters`` from the matched route) and
is passed to the function the template routes it to, loaded from ``functions/<name>/app.py``
under a unique module name. The handler's v2 response (status, headers, cookies, body,
base64 decoded when ``isBase64Encoded``) is written back. Routes come from the template's
``HttpApi`` events; unknown routes get API Gateway's ``404 {"message":"Not Found"}``.

Binds 127.0.0.1 only; port 3000 by default (``sam local start-api``'s), 0 in tests. A taken
port raises :class:`OSError` (EADDRINUSE), which :func:`serve` reports in plain words.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from call_enricher_tools.local.poller import load_function

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = ROOT / "functions"
DEFAULT_PORT = 3000
LOOPBACK = "127.0.0.1"
_TEXT_TYPES = ("application/json", "text/", "application/x-www-form-urlencoded", "+json")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class Route:
    """One ``HttpApi`` route: method, path template (``/calls/{callId}``) and function."""

    method: str
    path: str
    function: str  # folder under functions/
    timeout_seconds: float = 29.0
    pattern: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{([A-Za-z0-9_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        found = self.pattern.match(path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}


def routes_from_template() -> tuple[Route, ...]:
    """The template's ``HttpApi`` routes (functions by ``CodeUri`` folder, with timeouts)."""
    from call_enricher_tools.local.template import Template

    template = Template.load()
    routes = []
    for name in template.of_type("AWS::Serverless::Function"):
        properties = template.function_properties(name)
        folder = Path(str(properties["CodeUri"])).name
        timeout = float(properties.get("Timeout", 29))
        for event in properties.get("Events", {}).values():
            if event.get("Type") == "HttpApi":
                spec = event["Properties"]
                routes.append(
                    Route(str(spec["Method"]).upper(), str(spec["Path"]), folder, timeout)
                )
    if not routes:
        raise ValueError("template.yaml declares no HttpApi route")
    return tuple(routes)


class LocalLambdaContext:
    """The context Lambda passes: remaining time counts down from the function's timeout."""

    def __init__(self, function_name: str, timeout_seconds: float, memory_mb: int = 512) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = (
            f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _is_text(content_type: str) -> bool:
    lowered = content_type.lower()
    return any(marker in lowered for marker in _TEXT_TYPES)


class LocalApi:
    """A threaded HTTP server on 127.0.0.1 that invokes the real handlers."""

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int = DEFAULT_PORT,
        routes: tuple[Route, ...] | None = None,
        handlers: dict[str, Handler] | None = None,
    ) -> None:
        if host not in (LOOPBACK, "localhost"):
            raise ValueError("the local API binds 127.0.0.1 only")
        self.host = LOOPBACK
        self.requested_port = port
        self.routes = routes if routes is not None else routes_from_template()
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalApi:
        """Bind and serve in a daemon thread. Raises OSError (EADDRINUSE) if the port is taken."""
        api = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _handle(self) -> None:
                api._serve(self)

            def __getattr__(self, name: str) -> Any:
                # Every method (TRACE, PROPFIND...) is routed: an unknown one gets API
                # Gateway's 404, not http.server's 501.
                if name.startswith("do_"):
                    return self._handle
                raise AttributeError(name)

        server = ThreadingHTTPServer((self.host, self.requested_port), RequestHandler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="local-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalApi:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- requests --------------------------------------------------------------------------

    def handler_for(self, function: str) -> Handler:
        with self._lock:
            handler = self._handlers.get(function)
            if handler is None:
                app = FUNCTIONS_DIR / function / "app.py"
                handler = load_function(app, instance=f"api_{function}_{uuid.uuid4().hex[:8]}")
                self._handlers[function] = handler
            return handler

    def build_event(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, peer: str
    ) -> tuple[dict[str, Any], Route | None]:
        """The payload v2.0 event API Gateway would send, and the route it matched."""
        parts = urlsplit(target)
        path = parts.path or "/"
        lowered: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in headers:
            key = name.lower()
            if key == "cookie":
                cookies.extend(c.strip() for c in value.split(";") if c.strip())
                continue
            lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
        route, params = None, None
        for candidate in self.routes:
            params = candidate.match(method, path)
            if params is not None:
                route = candidate
                break
        now = datetime.now(UTC)
        is_text = not body or _is_text(lowered.get("content-type", ""))
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.route_key if route else "$default",
            "rawPath": path,
            "rawQueryString": parts.query,
            "headers": lowered,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "local",
                "domainName": lowered.get("host", f"{self.host}:{self.port}"),
                "domainPrefix": "local",
                "http": {
                    "method": method,
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": peer,
                    "userAgent": lowered.get("user-agent", ""),
                },
                "requestId": uuid.uuid4().hex,
                "routeKey": route.route_key if route else "$default",
                "stage": "$default",
                "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "timeEpoch": int(now.timestamp() * 1000),
            },
            "isBase64Encoded": not is_text,
        }
        if cookies:
            event["cookies"] = cookies
        if parts.query:
            query: dict[str, str] = {}
            for pair in parts.query.split("&"):
                key, _, value = pair.partition("=")
                key, value = unquote(key.replace("+", " ")), unquote(value.replace("+", " "))
                query[key] = f"{query[key]},{value}" if key in query else value
            event["queryStringParameters"] = query
        if params:
            event["pathParameters"] = params
        if body:
            event["body"] = (
                body.decode("utf-8", "surrogateescape")
                if is_text
                else base64.b64encode(body).decode()
            )
        return event, route

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length) if length > 0 else b""
        event, route = self.build_event(
            request.command,
            request.path,
            list(request.headers.items()),
            body,
            request.client_address[0],
        )
        if route is None:
            self._write(
                request, 404, {"content-type": "application/json"}, [], b'{"message":"Not Found"}'
            )
            return
        context = LocalLambdaContext(f"local-{route.function}", route.timeout_seconds)
        try:
            response = self.handler_for(route.function)(event, context)
        except Exception:  # noqa: BLE001 (what API Gateway answers when the function fails)
            self._write(
                request,
                500,
                {"content-type": "application/json"},
                [],
                b'{"message":"Internal Server Error"}',
            )
            return
        status, headers, cookies, payload = _unpack(response)
        self._write(request, status, headers, cookies, payload)

    @staticmethod
    def _write(
        request: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        cookies: list[str],
        payload: bytes,
    ) -> None:
        request.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                request.send_header(name, value)
        for cookie in cookies:
            request.send_header("Set-Cookie", cookie)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if request.command != "HEAD" and payload:
            request.wfile.write(payload)


def _unpack(response: Any) -> tuple[int, dict[str, str], list[str], bytes]:
    """A v2 handler result -> (status, headers, cookies, body bytes), as API Gateway does."""
    if not isinstance(response, dict) or "statusCode" not in response:
        # API Gateway v2 treats any other value as a 200 JSON body.
        return 200, {"content-type": "application/json"}, [], json.dumps(response).encode()
    headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ",".join(str(v) for v in values)
    body = response.get("body") or ""
    payload = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()
    return int(response["statusCode"]), headers, list(response.get("cookies") or []), payload


def serve(port: int = DEFAULT_PORT) -> None:
    """Run the local API in the foreground until Ctrl-C (environment from the caller)."""
    api = LocalApi(port=port)
    try:
        api.start()
    except OSError as exc:
        if exc.errno in (98, 48, 10048):
            raise SystemExit(
                f"port {port} on {LOOPBACK} is already in use: stop what uses it "
                "(another `sam local start-api`?) or pass another port"
            ) from None
        raise
    print(f"local API on {api.base_url}: " + ", ".join(r.route_key for r in api.routes))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()


if __name__ == "__main__":
    import sys

    serve(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PORT)
