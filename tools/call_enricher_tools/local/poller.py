"""The SQS event source mapping, played locally for the real queue handler.

What Lambda's poller does for a queue trigger, and what :class:`SqsPoller` does here:

* ``concurrency`` pollers (``ScalingConfig.MaximumConcurrency``) each long-poll the queue
  with ``ReceiveMessage`` and gather up to ``BatchSize`` messages, waiting at most
  ``MaximumBatchingWindowInSeconds`` after the first one;
* each batch becomes a real SQS Lambda event (``messageId``, ``receiptHandle``, ``body``,
  ``attributes`` with ``ApproximateReceiveCount``..., ``messageAttributes``,
  ``md5OfBody``, ``eventSource``, ``eventSourceARN``, ``awsRegion``) and invokes the handler
  with a Lambda context whose deadline is the function's ``Timeout``;
* with ``ReportBatchItemFailures`` the messages not listed in ``batchItemFailures`` are
  deleted; the listed ones are left alone and reappear after the queue's visibility timeout.
  A response naming an unknown or empty ``itemIdentifier``, a raised exception or an
  invocation that ran past its timeout fails the whole batch (nothing is deleted), as in
  Lambda;
* message delays (``DelaySeconds``, used for ONGOING re-checks) and the redrive to the
  dead-letter queue after ``maxReceiveCount`` receives are SQS's own behaviour: moto applies
  both on ``ReceiveMessage``, exactly where SQS does.

moto's SQS backend is not thread-safe: concurrent ``ReceiveMessage`` / ``DeleteMessageBatch``
calls on one queue can corrupt its message list (``list.remove(x): x not in list``, then every
receive fails). The pollers of one :class:`SqsPoller` therefore make those calls one at a
time, and never hold that turn while waiting: long polling is played as short polls
(``WaitTimeSeconds=0``) with pauses between them, so a finished batch's delete never queues
behind another poller's idle wait (a late delete keeps messages invisible past their
visibility timeout, and a message redelivered while its first delivery is still at work is
handled twice). :attr:`Invocation.held_seconds` is how long each batch was held, from its
first receive to its delete: above the queue's visibility timeout, its messages may have been
handed out again meanwhile.

Each poller has its own copy of the handler module (its own "container"): module-level state
such as Powertools' ``BatchProcessor`` is per container in Lambda and must not be shared
between concurrent invocations. The library underneath (clients, the enrichment service) is
shared, as it is thread-safe by design.
"""

from __future__ import annotations

import base64
import importlib.util
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]

_RECEIVE_WAIT_SECONDS = 1  # long poll while idle; also bounds how fast stop() returns
_SHORT_POLL_PAUSE = 0.05
_IDLE_POLL_PAUSE = 0.1  # between the short polls that play a long poll


@dataclass
class LocalLambdaContext:
    """What the Lambda runtime passes as ``context`` (the attributes Powertools reads)."""

    function_name: str
    timeout_seconds: float
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    region: str = "eu-west-1"
    account_id: str = "123456789012"
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return time.strftime("%Y/%m/%d/[$LATEST]local")

    def get_remaining_time_in_millis(self) -> int:
        elapsed = time.monotonic() - self._started
        return max(0, int((self.timeout_seconds - elapsed) * 1000))


_METRICS_LOCK = threading.RLock()


def share_metrics_safely() -> None:
    """Serialise Powertools' metric set across this process's threads (once per process).

    On Lambda one process runs one invocation at a time. Here every "function instance"
    runs on a thread of one process and shares the library's one ``Metrics`` (its metric set
    is class-wide): one handler's flush could serialise a set another just cleared, and fail
    with ``SchemaValidationError: Must contain at least one metric``. Adding, flushing and
    clearing take one lock; an EMF document may then carry two invocations' counts, which a
    local log line can afford.
    """
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
        AmazonCloudWatchEMFProvider as Provider,
    )

    with _METRICS_LOCK:
        for name in ("add_metric", "add_dimension", "flush_metrics", "clear_metrics"):
            method = getattr(Provider, name)
            if getattr(method, "_call_enricher_locked", False):
                continue

            def locked(*args: Any, __method: Any = method, **kwargs: Any) -> Any:
                with _METRICS_LOCK:
                    return __method(*args, **kwargs)

            locked._call_enricher_locked = True  # type: ignore[attr-defined]
            setattr(Provider, name, locked)


def load_function(app_path: Path, handler: str = "app.lambda_handler", *, instance: str) -> Handler:
    """Import ``app_path`` as a fresh module named after ``instance``; return its handler."""
    share_metrics_safely()  # several instances run at once, on threads of this process
    module_name = f"call_enricher_local_{instance}"
    spec = importlib.util.spec_from_file_location(module_name, app_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {app_path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    function: Handler = getattr(module, handler.rsplit(".", 1)[1])
    return function


@dataclass(frozen=True)
class Invocation:
    """One invocation of the handler by a poller, and what became of its messages."""

    poller: int
    message_ids: list[str]
    receive_counts: dict[str, int]
    failed_ids: list[str]
    deleted_ids: list[str]
    error: str | None
    elapsed_seconds: float
    """How long the handler ran."""
    held_seconds: float = 0.0
    """From the batch's first receive to the end of its delete: how long its messages were
    held (compare with the queue's visibility timeout)."""


@dataclass
class PollerStats:
    """Counters over the poller's lifetime (read them any time; updated under a lock)."""

    invocations: int = 0
    messages: int = 0
    deleted: int = 0
    reported_failures: int = 0
    failed_invocations: int = 0
    redeliveries: int = 0
    """Messages received with ApproximateReceiveCount > 1 (retries)."""


def sqs_event_record(message: dict[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """One ``Records[]`` entry of an SQS Lambda event, from a ReceiveMessage message."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    binary = value.get("BinaryValue")
    return {
        "stringValue": value.get("StringValue"),
        "binaryValue": base64.b64encode(binary).decode() if binary is not None else None,
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [
            base64.b64encode(b).decode() for b in value.get("BinaryListValues", [])
        ],
        "dataType": value.get("DataType", "String"),
    }


def invocation_error(exc: BaseException) -> str:
    """One console-readable line for an invocation that raised ``exc``.

    Powertools raises ``BatchProcessingError`` on purpose when every record of a batch fails
    (an expected outcome: a Sinch 503 for the only call of a batch); its message embeds each
    record's traceback. It is summarised by its records' exceptions instead, counted, e.g.
    ``every record failed: RetryLater: sinch-unavailable (x3)``. Anything else is its type
    and the first line of its message.
    """

    def first_line(error: BaseException) -> str:
        text = str(error).strip().splitlines()
        return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__

    children = getattr(exc, "child_exceptions", None)
    if children:
        counted: dict[str, int] = {}
        for child in children:
            error = child[1] if isinstance(child, tuple) and len(child) > 1 else child
            if isinstance(error, BaseException):
                counted[first_line(error)] = counted.get(first_line(error), 0) + 1
        parts = [f"{text} (x{n})" if n > 1 else text for text, n in counted.items()]
        return f"every record failed: {'; '.join(parts) or type(exc).__name__}"
    return first_line(exc)


def reported_failures(
    response: Any, ids: list[str], *, report_batch_item_failures: bool
) -> tuple[list[str], str | None]:
    """The item identifiers a handler's response reports as failed, per Lambda's partial batch
    response rules (the same for SQS message IDs and stream sequence numbers), and the error
    when the response fails the whole batch (then every ID is returned)."""
    if not report_batch_item_failures or response is None:
        return [], None
    if not isinstance(response, dict):
        return list(ids), "invalid response (not an object): whole batch failed"
    items = response.get("batchItemFailures") or []
    failed: list[str] = []
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in ids:
            return list(ids), f"invalid itemIdentifier {identifier!r}: whole batch failed"
        failed.append(str(identifier))
    return failed, None


class SqsPoller:
    """Plays the queue trigger: ``start()`` the pollers, ``stop()`` them."""

    def __init__(
        self,
        *,
        sqs_client: Any,
        queue_url: str,
        queue_arn: str,
        handler_factory: Callable[[int], Handler],
        function_name: str,
        function_timeout_seconds: float,
        batch_size: int = 10,
        batching_window_seconds: float = 0.0,
        concurrency: int = 2,
        report_batch_item_failures: bool = True,
        region: str = "eu-west-1",
        on_invocation: Callable[[Invocation], None] | None = None,
    ) -> None:
        """``handler_factory(i)`` returns poller ``i``'s handler (its own module copy);
        ``sqs_client`` is a boto3 SQS client for the local endpoint (its receives and deletes
        are made one at a time, see the module docstring)."""
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.sqs = sqs_client
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.handler_factory = handler_factory
        self.function_name = function_name
        self.function_timeout_seconds = function_timeout_seconds
        self.batch_size = batch_size
        self.batching_window_seconds = batching_window_seconds
        self.concurrency = concurrency
        self.report_batch_item_failures = report_batch_item_failures
        self.region = region
        self.on_invocation = on_invocation
        self.stats = PollerStats()
        self._lock = threading.Lock()
        self._sqs_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> SqsPoller:
        """Create each poller's handler (cold start), then start polling."""
        self._stop.clear()
        handlers = [self.handler_factory(i) for i in range(self.concurrency)]
        for index, handler in enumerate(handlers):
            thread = threading.Thread(
                target=self._run, args=(index, handler), name=f"sqs-poller-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling; in-flight invocations finish (messages not yet handed over simply
        become visible again after the visibility timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._threads = []

    def __enter__(self) -> SqsPoller:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- one poller ----------------------------------------------------------------------

    def _run(self, index: int, handler: Handler) -> None:
        while not self._stop.is_set():
            try:
                batch, first_received = self._gather()
            except Exception:  # noqa: BLE001 - moto stopping, connection reset: retry
                if self._stop.wait(0.5):
                    return
                continue
            if batch:
                self._invoke(index, handler, batch, first_received)

    def _receive(self, count: int, wait_seconds: float) -> tuple[list[dict[str, Any]], float]:
        """Up to ``count`` messages, polling for at most ``wait_seconds`` (short polls: see
        the module docstring), and when the last ``ReceiveMessage`` was sent."""
        deadline = time.monotonic() + wait_seconds
        while True:
            with self._sqs_lock:
                sent = time.monotonic()
                response = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=max(1, min(10, count)),
                    WaitTimeSeconds=0,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            messages: list[dict[str, Any]] = response.get("Messages", [])
            left = deadline - time.monotonic()
            if messages or left <= 0 or self._stop.wait(min(_IDLE_POLL_PAUSE, left)):
                return messages, sent

    def _gather(self) -> tuple[list[dict[str, Any]], float]:
        """Up to ``batch_size`` messages, waiting at most the batching window after the
        first one (the first one itself is long-polled for), and when the first arrived."""
        batch: list[dict[str, Any]] = []
        window_ends: float | None = None
        first_received = time.monotonic()
        while not self._stop.is_set() and len(batch) < self.batch_size:
            if window_ends is None:
                wait = float(_RECEIVE_WAIT_SECONDS)
            else:
                remaining = window_ends - time.monotonic()
                if remaining <= 0:
                    break
                wait = remaining
            received, sent = self._receive(self.batch_size - len(batch), wait)
            if received:
                batch.extend(received)
                if window_ends is None:
                    first_received = sent
                    window_ends = time.monotonic() + self.batching_window_seconds
            elif window_ends is not None:
                self._stop.wait(_SHORT_POLL_PAUSE)
        return batch, first_received

    def _invoke(
        self,
        index: int,
        handler: Handler,
        batch: list[dict[str, Any]],
        first_received: float,
    ) -> None:
        records = [sqs_event_record(m, queue_arn=self.queue_arn, region=self.region) for m in batch]
        ids = [r["messageId"] for r in records]
        counts = {
            r["messageId"]: int(r["attributes"].get("ApproximateReceiveCount", 1)) for r in records
        }
        context = LocalLambdaContext(self.function_name, self.function_timeout_seconds)
        started = time.monotonic()
        error: str | None = None
        failed: list[str] = list(ids)
        try:
            response = handler({"Records": records}, context)
            elapsed = time.monotonic() - started
            if elapsed > self.function_timeout_seconds:
                error = f"timed out after {self.function_timeout_seconds:g} s"
            else:
                failed, error = reported_failures(
                    response, ids, report_batch_item_failures=self.report_batch_item_failures
                )
        except Exception as exc:  # noqa: BLE001 - a failed invocation, as Lambda sees it
            error = invocation_error(exc)
        elapsed = time.monotonic() - started
        failed_set = set(failed)
        to_delete = [m for m in batch if m["MessageId"] not in failed_set]
        deleted = self._delete(to_delete)
        held = time.monotonic() - first_received
        with self._lock:
            self.stats.invocations += 1
            self.stats.messages += len(batch)
            self.stats.deleted += len(deleted)
            self.stats.redeliveries += sum(1 for c in counts.values() if c > 1)
            if error is None:
                self.stats.reported_failures += len(failed)
            else:
                self.stats.failed_invocations += 1
        if self.on_invocation is not None:
            self.on_invocation(
                Invocation(index, ids, counts, failed, deleted, error, elapsed, held)
            )

    def _delete(self, messages: list[dict[str, Any]]) -> list[str]:
        deleted: list[str] = []
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            try:
                with self._sqs_lock:
                    response = self.sqs.delete_message_batch(
                        QueueUrl=self.queue_url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                            for i, m in enumerate(chunk)
                        ],
                    )
            except Exception:  # noqa: BLE001, S112 - not deleted: SQS redelivers (at least once)
                continue
            deleted.extend(
                chunk[int(ok["Id"])]["MessageId"] for ok in response.get("Successful", [])
            )
        return deleted
