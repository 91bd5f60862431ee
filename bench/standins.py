"""Fast local stand-ins for the benchmarks: Sinch over real HTTP, and AWS in memory or HTTP.

* :class:`SinchStandIn`: the project's one Sinch stand-in
  (:mod:`call_enricher_tools.sinch_standin`: HTTP/1.1 keep-alive, no Nagle stall) answering
  ``GET /calling/v1/calls/id/{callId}`` after ``delay`` seconds with a varied, per-call-ID
  stable record (:class:`BenchRecords`). It counts the TCP connections it accepts and the
  requests: reuse is counted at the server, not assumed. Auth headers are not checked (not
  what is measured).
* :class:`FakeAws`: in-memory DynamoDB / EventBridge / SQS / Secrets Manager clients with the
  boto3 low-level method names and wire shapes, counting calls per operation. The DynamoDB
  fake evaluates the conditional ``UpdateItem`` expressions the store sends (save, fail,
  note_retry, the publisher's record_unpublishable: :mod:`bench.expressions`) with their real
  semantics, and keeps the table's stream (old and new image of each change), so redelivery,
  "nothing changed" and what the stream publisher gets behave as on DynamoDB.
* :class:`AwsServer`: the same fakes behind the AWS JSON protocol on 127.0.0.1, for fresh
  processes (cold start, memory) through ``AWS_ENDPOINT_URL``; much lighter than moto.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from bench import expressions
from bench.records import RecordFactory
from call_enricher_tools import sinch_standin
from call_enricher_tools.sinch_standin import GET_CALL_PATH, Answerer, RecordedRequest, Reply

LOOPBACK = "127.0.0.1"
# The test-only Sinch credentials of events/README.md (the sample callback is signed with
# them). The Sinch stand-in does not check them; the callback receivers do.
BENCH_KEY = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
BENCH_SECRET = "Y2FsbC1lbnJpY2hlciB0ZXN0IHNlY3JldCwgbmV2ZXIgcmVhbA=="  # noqa: S105 - test only


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__((LOOPBACK, 0), handler)
        self.connections = 0
        self.requests = 0
        self.lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client closing its keep-alive connection is not an error here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Running:
    server: _Server

    def start(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = _Server(handler)
        self.server.owner = self  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    @property
    def connections(self) -> int:
        return self.server.connections

    @property
    def requests(self) -> int:
        return self.server.requests

    def reset_counts(self) -> None:
        with self.server.lock:
            self.server.connections = 0
            self.server.requests = 0

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BenchRecords(Answerer):
    """Get Call answered after ``delay`` with a stable record per call ID; ``/__stats`` gives
    the counts so far (the asking connection excluded), ``/__reset`` zeroes them."""

    control_prefix = "/__"

    def __init__(self, delay: float, seed: int, *, pstn_only: bool) -> None:
        self.delay = delay
        self._factory = RecordFactory(seed, pstn_only=pstn_only)
        self._bodies: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def body(self, call_id: str) -> bytes:
        with self._lock:
            body = self._bodies.get(call_id)
            if body is None:
                body = self._bodies[call_id] = json.dumps(self._factory.record(call_id)).encode()
            return body

    def answer(self, request: RecordedRequest) -> Reply:
        if not request.path.startswith(GET_CALL_PATH):
            return Reply.error(404, 40400, "not found")
        return Reply(200, self.body(request.path[len(GET_CALL_PATH) :]), delay=self.delay)

    def control(self, request: RecordedRequest, standin: sinch_standin.SinchStandIn[Any]) -> Reply:
        if request.path == "/__stats":
            stats = {"connections": standin.connections - 1, "requests": standin.request_count}
            return Reply.json(stats)
        if request.path == "/__reset":  # this connection included
            standin.reset_counts()
            return Reply.json({})
        return super().control(request, standin)


class SinchStandIn(sinch_standin.SinchStandIn[BenchRecords]):
    """:class:`BenchRecords` served (already started); ``url`` is where."""

    def __init__(self, delay: float = 0.1, seed: int = 3, *, pstn_only: bool = False) -> None:
        super().__init__(BenchRecords(delay, seed, pstn_only=pstn_only), record=False)
        self.start()

    @property
    def url(self) -> str:
        return self.base_url


# -- AWS --------------------------------------------------------------------------------


class AwsError(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra


class _Fake:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def _count(self, operation: str) -> None:
        with self.lock:
            self.calls[operation] += 1


class Client:
    """A fake as an in-process boto3-like client: :class:`AwsError` becomes ``ClientError``."""

    def __init__(self, fake: _Fake) -> None:
        self.fake = fake

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.fake, name)

        def call(**kwargs: Any) -> Any:
            from botocore.exceptions import ClientError

            try:
                return method(**kwargs)
            except AwsError as error:
                response: Any = {"Error": {"Code": error.code, "Message": error.message}}
                response.update(error.extra)
                raise ClientError(response, name) from None

        return call


@dataclass(frozen=True)
class StreamRecord:
    """One change of the fake table (a ``NEW_AND_OLD_IMAGES`` stream record)."""

    sequence: str
    key: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None


class FakeDynamoDB(_Fake):
    """The calls table in memory: ``GetItem``, ``BatchGetItem``, ``PutItem`` and conditional
    ``UpdateItem`` (:mod:`bench.expressions`: the condition, ``SET``/``REMOVE``,
    ``ReturnValues`` and ``ReturnValuesOnConditionCheckFailure`` as DynamoDB has them), and
    the table's stream: every write that changed an item appends a :class:`StreamRecord`
    (a refused condition or a write that changed nothing appends none, as on DynamoDB)."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, dict[str, Any]] = {}
        self.stream: list[StreamRecord] = []

    def get_item(
        self,
        *,
        Key: dict[str, Any],
        ProjectionExpression: str | None = None,
        ExpressionAttributeNames: dict[str, str] | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        self._count("GetItem")
        item = self.items.get(Key["callId"]["S"])
        if item is None:
            return {}
        return {"Item": _project(item, ProjectionExpression, ExpressionAttributeNames or {})}

    def batch_get_item(self, *, RequestItems: dict[str, Any], **_: Any) -> dict[str, Any]:
        self._count("BatchGetItem")
        responses = {}
        for table, request in RequestItems.items():
            found = [self.items.get(k["callId"]["S"]) for k in request["Keys"]]
            expression = request.get("ProjectionExpression")
            names = request.get("ExpressionAttributeNames") or {}
            responses[table] = [_project(i, expression, names) for i in found if i]
        return {"Responses": responses, "UnprocessedKeys": {}}

    def put_item(self, *, Item: dict[str, Any], **_: Any) -> dict[str, Any]:
        self._count("PutItem")
        key = Item["callId"]["S"]
        with self.lock:
            self._write(key, self.items.get(key), dict(Item))
        return {}

    def update_item(
        self,
        *,
        Key: dict[str, Any],
        UpdateExpression: str,
        ConditionExpression: str | None = None,
        ExpressionAttributeNames: dict[str, str] | None = None,
        ExpressionAttributeValues: dict[str, Any] | None = None,
        ReturnValues: str = "NONE",
        ReturnValuesOnConditionCheckFailure: str = "NONE",
        **_: Any,
    ) -> dict[str, Any]:
        self._count("UpdateItem")
        names, values = ExpressionAttributeNames or {}, ExpressionAttributeValues or {}
        try:
            action = expressions.update(UpdateExpression)
            test = expressions.condition(ConditionExpression) if ConditionExpression else None
            expressions.check_placeholders(
                action.names | (test.names if test else frozenset()),
                action.values | (test.values if test else frozenset()),
                names,
                values,
            )
        except expressions.ExpressionError as exc:
            raise AwsError("ValidationException", str(exc)) from None
        if ReturnValues not in ("NONE", "ALL_NEW", "ALL_OLD"):
            raise AwsError("ValidationException", f"ReturnValues {ReturnValues} not supported")
        key = Key["callId"]["S"]
        with self.lock:
            old = self.items.get(key)
            if test is not None and not test.holds(old or {}, names, values):
                answer = old if ReturnValuesOnConditionCheckFailure == "ALL_OLD" else None
                raise _condition_failed(answer)
            try:
                new = action.apply(old or {}, names, values)
            except expressions.ExpressionError as exc:
                raise AwsError("ValidationException", str(exc)) from None
            new["callId"] = Key["callId"]
            self._write(key, old, new)
        if ReturnValues == "ALL_NEW":
            return {"Attributes": dict(new)}
        if ReturnValues == "ALL_OLD" and old:
            return {"Attributes": dict(old)}
        return {}

    def _write(self, key: str, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """Store ``new`` (the lock held); a change is appended to the stream."""
        self.items[key] = new
        if new != old:
            sequence = f"{len(self.stream) + 1:021d}"
            self.stream.append(StreamRecord(sequence, key, old, new))

    def stream_since(self, position: int) -> list[StreamRecord]:
        """The stream records from ``position`` (0: the whole stream) on, in order."""
        with self.lock:
            return self.stream[position:]


def _project(item: dict[str, Any], expression: str | None, names: dict[str, str]) -> dict[str, Any]:
    if not expression:
        return dict(item)
    wanted = {names[path[0]] for path in expressions.cached_projection(expression)}
    return {name: value for name, value in item.items() if name in wanted}


def _condition_failed(item: dict[str, Any] | None) -> AwsError:
    extra = {"Item": dict(item)} if item else {}
    return AwsError("ConditionalCheckFailedException", "The conditional request failed", **extra)


class FakeEvents(_Fake):
    def __init__(self) -> None:
        super().__init__()
        self.entries = 0

    def put_events(self, *, Entries: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
        self._count("PutEvents")
        with self.lock:
            self.entries += len(Entries)
        return {
            "FailedEntryCount": 0,
            "Entries": [{"EventId": str(uuid.uuid4())} for _ in Entries],
        }


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - SQS's own checksum


class FakeSqs(_Fake):
    def send_message(self, *, MessageBody: str, **_: Any) -> dict[str, Any]:
        self._count("SendMessage")
        return {"MessageId": str(uuid.uuid4()), "MD5OfMessageBody": _md5(MessageBody)}

    def send_message_batch(self, *, Entries: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
        self._count("SendMessageBatch")
        return {
            "Successful": [
                {
                    "Id": e["Id"],
                    "MessageId": str(uuid.uuid4()),
                    "MD5OfMessageBody": _md5(e["MessageBody"]),
                }
                for e in Entries
            ],
            "Failed": [],
        }


class FakeSecrets(_Fake):
    SECRET: ClassVar[dict[str, str]] = {
        "applicationKey": BENCH_KEY,
        "applicationSecret": BENCH_SECRET,
    }

    def get_secret_value(self, *, SecretId: str, **_: Any) -> dict[str, Any]:
        self._count("GetSecretValue")
        return {
            "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{SecretId}",
            "Name": SecretId,
            "VersionId": "v1",
            "SecretString": json.dumps(self.SECRET),
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": datetime.now(UTC).timestamp(),
        }


class FakeAws:
    """One of each fake; ``calls()`` merges their per-operation counts."""

    def __init__(self) -> None:
        self.dynamodb = FakeDynamoDB()
        self.events = FakeEvents()
        self.sqs = FakeSqs()
        self.secretsmanager = FakeSecrets()

    def calls(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for fake in (self.dynamodb, self.events, self.sqs, self.secretsmanager):
            total.update(fake.calls)
        return total

    def client(self, service: str) -> Client:
        """An in-process client of ``service`` ("dynamodb", "events", "sqs", "secretsmanager")."""
        return Client(getattr(self, service))

    def reset_counts(self) -> None:
        for fake in (self.dynamodb, self.events, self.sqs, self.secretsmanager):
            fake.calls.clear()


_TARGET_PREFIXES = {
    "DynamoDB_20120810": "dynamodb",
    "AWSEvents": "events",
    "AmazonSQS": "sqs",
    "secretsmanager": "secretsmanager",
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class AwsServer(_Running):
    """The fakes behind the AWS JSON protocols (set ``AWS_ENDPOINT_URL`` to :attr:`url`)."""

    def __init__(self, aws: FakeAws | None = None) -> None:
        self.aws = aws or FakeAws()
        self.start(_AwsHandler)


class _AwsHandler(_Handler):
    def do_POST(self) -> None:
        owner: AwsServer = self.server.owner  # type: ignore[attr-defined]
        with self.server.lock:
            self.server.requests += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        prefix, _, operation = (self.headers.get("X-Amz-Target") or "").partition(".")
        content_type = self.headers.get("Content-Type") or "application/x-amz-json-1.0"
        fake = getattr(owner.aws, _TARGET_PREFIXES.get(prefix, ""), None)
        method = getattr(fake, _snake(operation), None) if fake else None
        if method is None:
            self.reply(400, json.dumps({"__type": "UnknownOperationException"}).encode())
            return
        try:
            result = method(**body)
        except AwsError as error:
            payload = {"__type": error.code, "message": error.message, **error.extra}
            self.reply(400, json.dumps(payload).encode(), content_type)
            return
        self.reply(200, json.dumps(result).encode(), content_type)


# -- the Sinch stand-in in its own process (no GIL shared with the code measured) ---------


class SinchProcess:
    """``python -m bench.standins sinch DELAY`` as a child process; stats over HTTP."""

    def __init__(self, delay: float, *, pstn_only: bool = False) -> None:
        import subprocess
        import sys

        args = ["sinch", str(delay)] + (["pstn"] if pstn_only else [])
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.standins", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError("the Sinch stand-in did not start")

    def _get(self, path: str) -> dict[str, Any]:
        from urllib.request import urlopen

        with urlopen(self.url + path, timeout=5) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def stats(self) -> dict[str, int]:
        """Connections accepted and call requests served since the last reset."""
        return {k: int(v) for k, v in self._get("/__stats").items()}

    def reset(self) -> None:
        self._get("/__reset")

    def stop(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()  # the child exits when its stdin closes
            try:
                self._process.wait(timeout=5)
            except Exception:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> SinchProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve_until_stdin_closes(server: _Running | SinchStandIn) -> None:
    import sys

    print(server.url, flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["sinch"]:
        pstn = sys.argv[3:4] == ["pstn"]
        _serve_until_stdin_closes(SinchStandIn(delay=float(sys.argv[2]), pstn_only=pstn))
    elif sys.argv[1:2] == ["aws"]:
        _serve_until_stdin_closes(AwsServer())
    else:
        sys.exit("usage: python -m bench.standins sinch DELAY [pstn] | aws")
