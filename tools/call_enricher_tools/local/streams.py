"""The DynamoDB stream event source mapping, played locally for the real stream publisher.

moto (server mode) keeps a table's stream and answers ``DescribeStream``,
``GetShardIterator`` and ``GetRecords``, but never runs a Lambda trigger. What Lambda's
poller does for a DynamoDB stream trigger, and what :class:`StreamPoller` does here:

* one poller per shard (``ParallelizationFactor`` 1): the records of a shard are handed over
  strictly in order, one batch at a time; a child shard starts once its parent is consumed;
* reading starts at ``StartingPosition`` (``TRIM_HORIZON``: everything the stream holds) and
  gathers up to ``BatchSize`` records, waiting at most ``MaximumBatchingWindowInSeconds``
  after the first one (0: invoke with what one read returned), and no more than Lambda's
  6 MB invocation payload;
* each batch becomes a real Lambda DynamoDB Streams event (``eventID``, ``eventName``,
  ``eventVersion`` 1.1, ``eventSource`` ``aws:dynamodb``, ``awsRegion``, ``dynamodb`` with
  ``ApproximateCreationDateTime`` in epoch seconds, ``Keys``, ``NewImage``, ``OldImage``,
  ``SequenceNumber``, ``SizeBytes``, ``StreamViewType``, and ``eventSourceARN``) and invokes
  the handler with a Lambda context whose deadline is the function's ``Timeout``;
* with ``ReportBatchItemFailures`` the checkpoint moves to just before the lowest
  ``SequenceNumber`` in ``batchItemFailures`` and the rest of the batch is retried. A raised
  exception, an invocation past its timeout or an invalid response (not an object, an empty
  or unknown ``itemIdentifier``) fails the whole batch;
* with ``BisectBatchOnFunctionError`` a batch that failed whole is split in two and each
  half is retried, first half first; splitting uses up no retry. Otherwise (or once a batch
  is down to one record) the failed records are retried, and each retry counts against
  ``MaximumRetryAttempts`` (-1: no limit). Records older than ``MaximumRecordAgeInSeconds``
  are not handed over again;
* when retries run out (or records are too old) the batch's position is sent to the
  ``DestinationConfig.OnFailure`` queue as Lambda's on-failure record for stream sources
  (``requestContext``, ``responseContext``, ``version``, ``timestamp``,
  ``DDBStreamBatchInfo`` with the shard, first and last sequence number, batch size and
  stream ARN) and the shard moves on.

Retries are not delayed as on AWS: a short pause (``retry_pause_seconds``) keeps local runs
quick. :meth:`StreamPoller.stop` returns within one pause or the invocation in flight.

Two differences between moto's stream and DynamoDB's are evened out (see
:func:`as_dynamodb_writes`), so the handler sees what AWS would send: moto records an
``UpdateItem`` that creates an item as two ``INSERT`` records (the bare key, then the item),
and it records a write that changes nothing as a ``MODIFY`` whose images are equal (DynamoDB
writes no stream record for it). A failed condition writes no record, in both.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from call_enricher_tools.local.poller import (
    Handler,
    LocalLambdaContext,
    invocation_error,
    reported_failures,
)

if TYPE_CHECKING:
    from call_enricher_tools.local.stack import LocalStack

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
GET_RECORDS_LIMIT = 1000  # DynamoDB Streams' maximum per GetRecords
_IDLE_POLL_PAUSE = 0.1  # between reads of a shard that had nothing new (Lambda: 4 per second)
_ERROR_PAUSE = 0.5  # after a failed read (moto stopping, connection reset)
_HOLD_BARE_KEY_SECONDS = 0.25  # see _ShardReader._read


@dataclass(frozen=True)
class StreamInvocation:
    """One invocation of the handler by a shard's poller, and what became of its records."""

    shard_id: str
    sequence_numbers: list[str]
    attempt: int
    """0 for the first delivery of these records, n for the n-th retry."""
    bisected: bool
    """This batch is a half (of a half...) of a batch that failed whole."""
    failed_sequence_numbers: list[str]
    """Reported in ``batchItemFailures``, or the whole batch when ``error`` is set."""
    error: str | None
    elapsed_seconds: float


@dataclass
class StreamPollerStats:
    """Counters over the poller's lifetime (read them any time; updated under a lock)."""

    invocations: int = 0
    records_delivered: int = 0
    """Records handed to the handler (each retry hands them over again)."""
    records_succeeded: int = 0
    """Records the checkpoint moved past after the handler processed them."""
    retries: int = 0
    """Invocations that retried records after a failure (they count against the maximum)."""
    bisections: int = 0
    failed_invocations: int = 0
    reported_failures: int = 0
    records_sent_to_on_failure: int = 0
    on_failure_messages: int = 0


# -- stream records as Lambda hands them over -----------------------------------------------


def stream_event_record(record: dict[str, Any], *, stream_arn: str, region: str) -> dict[str, Any]:
    """One ``Records[]`` entry of a Lambda DynamoDB Streams event, from a GetRecords record
    as boto3 returns it (timestamps as datetimes, binary values as bytes)."""
    source = record["dynamodb"]
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": _epoch_seconds(source.get("ApproximateCreationDateTime")),
        "Keys": _wire_item(source.get("Keys", {})),
    }
    for image in ("NewImage", "OldImage"):
        if image in source:
            dynamodb[image] = _wire_item(source[image])
    dynamodb["SequenceNumber"] = str(source["SequenceNumber"])
    dynamodb["SizeBytes"] = int(source.get("SizeBytes", 0))
    dynamodb["StreamViewType"] = source.get("StreamViewType", "NEW_AND_OLD_IMAGES")
    event: dict[str, Any] = {
        "eventID": record.get("eventID") or uuid.uuid4().hex,
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,  # moto always says us-east-1
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }
    if "userIdentity" in record:  # TTL deletions
        event["userIdentity"] = dict(record["userIdentity"])
    return event


def as_dynamodb_writes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """moto's stream records as DynamoDB would have written them (module docstring): an
    ``INSERT`` of the bare key directly followed by an ``INSERT`` of the same key is dropped,
    and so is a ``MODIFY`` whose old and new images are equal."""
    kept: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        data = record["dynamodb"]
        name = record["eventName"]
        if name == "MODIFY" and "NewImage" in data and data.get("OldImage") == data["NewImage"]:
            continue
        following = records[index + 1] if index + 1 < len(records) else None
        if (
            name == "INSERT"
            and data.get("NewImage") == data.get("Keys")
            and following is not None
            and following["eventName"] == "INSERT"
            and following["dynamodb"].get("Keys") == data.get("Keys")
        ):
            continue
        kept.append(record)
    return kept


def _is_bare_key_insert(record: dict[str, Any]) -> bool:
    data = record["dynamodb"]
    return bool(record["eventName"] == "INSERT" and data.get("NewImage") == data.get("Keys"))


def _epoch_seconds(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return int(value.timestamp())
    if value is None:
        return int(time.time())
    return int(float(value))


def _wire_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _wire_value(value) for name, value in item.items()}


def _wire_value(value: dict[str, Any]) -> dict[str, Any]:
    """An attribute value in the event's JSON form (binary as base64, as Lambda sends it)."""
    ((kind, data),) = value.items()
    if kind == "B":
        return {"B": _b64(data)}
    if kind == "BS":
        return {"BS": [_b64(b) for b in data]}
    if kind == "M":
        return {"M": _wire_item(data)}
    if kind == "L":
        return {"L": [_wire_value(v) for v in data]}
    return {kind: data}


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data).decode() if isinstance(data, bytes) else data


def on_failure_record(
    records: list[dict[str, Any]],
    *,
    shard_id: str,
    stream_arn: str,
    function_arn: str,
    condition: str,
    invoke_count: int,
    function_error: bool,
) -> dict[str, Any]:
    """The JSON document Lambda sends to a stream mapping's OnFailure destination."""
    first, last = records[0]["dynamodb"], records[-1]["dynamodb"]
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if function_error:
        response["functionError"] = "Unhandled"
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": _iso(time.time()),
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": first["SequenceNumber"],
            "endSequenceNumber": last["SequenceNumber"],
            "approximateArrivalOfFirstRecord": _iso(first["ApproximateCreationDateTime"]),
            "approximateArrivalOfLastRecord": _iso(last["ApproximateCreationDateTime"]),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }


def _iso(epoch_seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch_seconds, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the poller -----------------------------------------------------------------------------


@dataclass
class _Batch:
    records: list[dict[str, Any]]  # Lambda event records, in stream order
    attempt: int = 0
    bisected: bool = False


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    index: int
    caught_up_at: float | None = None
    """When the read that found nothing new (and nothing left to hand over) was sent."""
    ended: bool = False
    thread: threading.Thread | None = field(default=None, repr=False)


class StreamPoller:
    """Plays a DynamoDB stream trigger: ``start()`` a poller per shard, ``stop()`` them."""

    def __init__(
        self,
        *,
        streams_client: Any,
        stream_arn: str,
        handler_factory: Callable[[int], Handler],
        function_name: str,
        function_timeout_seconds: float,
        batch_size: int = 100,
        batching_window_seconds: float = 0.0,
        starting_position: str = "TRIM_HORIZON",
        bisect_batch_on_function_error: bool = False,
        maximum_retry_attempts: int = -1,
        maximum_record_age_seconds: int = -1,
        report_batch_item_failures: bool = False,
        sqs_client: Any = None,
        on_failure_queue_url: str | None = None,
        region: str = "eu-west-1",
        retry_pause_seconds: float = 0.05,
        idle_pause_seconds: float = _IDLE_POLL_PAUSE,
        on_invocation: Callable[[StreamInvocation], None] | None = None,
    ) -> None:
        """``handler_factory(i)`` returns shard poller ``i``'s handler (its own module copy);
        ``streams_client`` is a boto3 ``dynamodbstreams`` client and ``sqs_client`` an SQS
        client for the OnFailure queue (without a queue, given-up batches are dropped)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError(f"unsupported StartingPosition {starting_position!r}")
        if on_failure_queue_url is not None and sqs_client is None:
            raise ValueError("an on-failure queue needs an sqs_client")
        self.streams = streams_client
        self.stream_arn = stream_arn
        self.handler_factory = handler_factory
        self.function_name = function_name
        self.function_timeout_seconds = function_timeout_seconds
        self.batch_size = batch_size
        self.batching_window_seconds = batching_window_seconds
        self.starting_position = starting_position
        self.bisect_batch_on_function_error = bisect_batch_on_function_error
        self.maximum_retry_attempts = maximum_retry_attempts
        self.maximum_record_age_seconds = maximum_record_age_seconds
        self.report_batch_item_failures = report_batch_item_failures
        self.sqs = sqs_client
        self.on_failure_queue_url = on_failure_queue_url
        self.region = region
        self.retry_pause_seconds = retry_pause_seconds
        self.idle_pause_seconds = idle_pause_seconds
        self.on_invocation = on_invocation
        self.stats = StreamPollerStats()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._shards: dict[str, _Shard] = {}

    @classmethod
    def from_stack(
        cls,
        stack: LocalStack,
        handler_factory: Callable[[int], Handler],
        **overrides: Any,
    ) -> StreamPoller:
        """A poller configured as the template's stream mapping (with the stack's parameter
        overrides) on the local stack's stream; ``overrides`` replace any argument."""
        trigger = stack.require_stream_trigger()
        arguments: dict[str, Any] = {
            "streams_client": stack.client("dynamodbstreams"),
            "stream_arn": stack.calls_stream_arn,
            "handler_factory": handler_factory,
            "function_name": f"{stack.stack_name}-{trigger.function}",
            "function_timeout_seconds": trigger.function_timeout_seconds,
            "batch_size": trigger.batch_size,
            "batching_window_seconds": trigger.batching_window_seconds,
            "starting_position": trigger.starting_position,
            "bisect_batch_on_function_error": trigger.bisect_batch_on_function_error,
            "maximum_retry_attempts": trigger.maximum_retry_attempts,
            "maximum_record_age_seconds": trigger.maximum_record_age_seconds,
            "report_batch_item_failures": trigger.report_batch_item_failures,
            "region": stack.resolver.pseudo["AWS::Region"],
        }
        if trigger.on_failure_logical_id is not None:
            arguments["sqs_client"] = stack.client("sqs")
            arguments["on_failure_queue_url"] = stack.publisher_failure_queue_url
        arguments.update(overrides)
        return cls(**arguments)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> StreamPoller:
        """Find the stream's shards and start a poller for each (its handler's cold start
        happens in its thread, before its first read)."""
        self._stop.clear()
        for shard in self._describe_shards():
            self._add_shard(shard)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling; an invocation in flight finishes (what it leaves unprocessed stays
        in the stream)."""
        self._stop.set()
        with self._progress:
            self._progress.notify_all()
            threads = [s.thread for s in self._shards.values() if s.thread is not None]
        for thread in threads:
            thread.join(timeout=timeout)
        with self._lock:
            self._shards = {}

    def __enter__(self) -> StreamPoller:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every shard has been consumed up to what the stream held when this was
        called (every record handed over and settled: processed, or given up on). True when
        that happened within ``timeout`` seconds."""
        asked = time.monotonic()

        def idle() -> bool:
            shards = list(self._shards.values())
            return bool(shards) and all(
                s.ended or (s.caught_up_at is not None and s.caught_up_at >= asked) for s in shards
            )

        with self._progress:
            return (
                self._progress.wait_for(lambda: idle() or self._stop.is_set(), timeout=timeout)
                and idle()
            )

    # -- shards ----------------------------------------------------------------------------

    def _describe_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        arguments: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = self.streams.describe_stream(**arguments)["StreamDescription"]
            shards.extend(description.get("Shards", []))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            arguments["ExclusiveStartShardId"] = last

    def _add_shard(self, description: dict[str, Any]) -> None:
        with self._lock:
            shard_id = description["ShardId"]
            if shard_id in self._shards or self._stop.is_set():
                return
            shard = _Shard(shard_id, description.get("ParentShardId"), len(self._shards))
            self._shards[shard_id] = shard
            shard.thread = threading.Thread(
                target=self._run, args=(shard,), name=f"stream-poller-{shard.index}", daemon=True
            )
        shard.thread.start()

    def _parent_pending(self, shard: _Shard) -> bool:
        parent = self._shards.get(shard.parent_id or "")
        return parent is not None and not parent.ended

    def _run(self, shard: _Shard) -> None:
        while self._parent_pending(shard):  # a child shard's records come after its parent's
            if self._stop.wait(self.idle_pause_seconds):
                return
        handler = self.handler_factory(shard.index)
        reader = _ShardReader(self, shard)
        while not self._stop.is_set():
            try:
                batch = reader.next_batch(self._stop)
            except Exception:  # noqa: BLE001 - moto stopping, connection reset: read again
                reader.reset()
                if self._stop.wait(_ERROR_PAUSE):
                    return
                continue
            if batch:
                self._deliver(shard, handler, batch)
                continue
            if reader.ended:
                self._shard_ended(shard)
                return
            self._stop.wait(self.idle_pause_seconds)

    def _shard_ended(self, shard: _Shard) -> None:
        with self._progress:
            shard.ended = True
            self._progress.notify_all()
        try:
            children = [
                s for s in self._describe_shards() if s.get("ParentShardId") == shard.shard_id
            ]
        except Exception:  # noqa: BLE001 - stopping: no children to start
            return
        for child in children:
            self._add_shard(child)

    def mark_caught_up(self, shard: _Shard, read_sent: float | None) -> None:
        """Record that the read sent at ``read_sent`` found nothing left to hand over (None:
        records were found, the shard is not caught up)."""
        with self._progress:
            shard.caught_up_at = read_sent
            if read_sent is not None:
                self._progress.notify_all()

    # -- one batch, with its retries -------------------------------------------------------

    def _deliver(self, shard: _Shard, handler: Handler, records: list[dict[str, Any]]) -> None:
        """Hand ``records`` over until each is processed or given up on (the checkpoint only
        moves past a record once one of the two happened: the shard waits meanwhile)."""
        work: deque[_Batch] = deque([_Batch(records)])
        while work and not self._stop.is_set():
            batch = work.popleft()
            batch.records = self._drop_expired(shard, batch)
            if not batch.records:
                continue
            failed_from, error = self._invoke(shard, handler, batch)
            if failed_from is None:
                continue
            whole = error is not None
            if whole and self.bisect_batch_on_function_error and len(batch.records) > 1:
                middle = len(batch.records) // 2
                work.appendleft(_Batch(batch.records[middle:], batch.attempt, bisected=True))
                work.appendleft(_Batch(batch.records[:middle], batch.attempt, bisected=True))
                with self._lock:
                    self.stats.bisections += 1
                continue
            rest = batch.records[failed_from:]
            limit = self.maximum_retry_attempts
            if 0 <= limit <= batch.attempt:
                self._give_up(
                    shard,
                    rest,
                    condition="RetryAttemptsExhausted",
                    invoke_count=batch.attempt + 1,
                    function_error=error is not None,
                )
                continue
            work.appendleft(_Batch(rest, batch.attempt + 1, batch.bisected))
            self._stop.wait(self.retry_pause_seconds)

    def _invoke(
        self, shard: _Shard, handler: Handler, batch: _Batch
    ) -> tuple[int | None, str | None]:
        """Invoke the handler once; the index of the first record to retry (None: all
        processed) and the error when the whole batch failed."""
        sequence_numbers = [r["dynamodb"]["SequenceNumber"] for r in batch.records]
        context = LocalLambdaContext(
            self.function_name, self.function_timeout_seconds, region=self.region
        )
        started = time.monotonic()
        error: str | None = None
        failed = list(sequence_numbers)
        try:
            response = handler({"Records": batch.records}, context)
            if time.monotonic() - started > self.function_timeout_seconds:
                error = f"timed out after {self.function_timeout_seconds:g} s"
            else:
                failed, error = reported_failures(
                    response,
                    sequence_numbers,
                    report_batch_item_failures=self.report_batch_item_failures,
                )
        except Exception as exc:  # noqa: BLE001 - a failed invocation, as Lambda sees it
            error = invocation_error(exc)
        elapsed = time.monotonic() - started
        failed_from: int | None = None
        if error is not None:
            failed_from = 0
        elif failed:
            failed_from = min(sequence_numbers.index(s) for s in failed)
        with self._lock:
            self.stats.invocations += 1
            self.stats.records_delivered += len(batch.records)
            self.stats.records_succeeded += (
                len(batch.records) if failed_from is None else failed_from
            )
            if batch.attempt > 0:
                self.stats.retries += 1
            if error is None:
                self.stats.reported_failures += len(failed)
            else:
                self.stats.failed_invocations += 1
        if self.on_invocation is not None:
            self.on_invocation(
                StreamInvocation(
                    shard.shard_id,
                    sequence_numbers,
                    batch.attempt,
                    batch.bisected,
                    failed,
                    error,
                    elapsed,
                )
            )
        return failed_from, error

    def _drop_expired(self, shard: _Shard, batch: _Batch) -> list[dict[str, Any]]:
        """The batch without its records older than MaximumRecordAgeInSeconds (those are
        given up on, as Lambda does, without invoking the function)."""
        if self.maximum_record_age_seconds < 0:
            return batch.records
        oldest_allowed = time.time() - self.maximum_record_age_seconds
        expired = [
            r
            for r in batch.records
            if r["dynamodb"]["ApproximateCreationDateTime"] < oldest_allowed
        ]
        if not expired:
            return batch.records
        self._give_up(
            shard,
            expired,
            condition="RecordAgeExceeded",
            invoke_count=batch.attempt,
            function_error=False,
        )
        gone = {id(r) for r in expired}
        return [r for r in batch.records if id(r) not in gone]

    def _give_up(
        self,
        shard: _Shard,
        records: list[dict[str, Any]],
        *,
        condition: str,
        invoke_count: int,
        function_error: bool,
    ) -> None:
        sent = False
        if self.on_failure_queue_url is not None:
            context = LocalLambdaContext(self.function_name, 0, region=self.region)
            body = on_failure_record(
                records,
                shard_id=shard.shard_id,
                stream_arn=self.stream_arn,
                function_arn=context.invoked_function_arn,
                condition=condition,
                invoke_count=invoke_count,
                function_error=function_error,
            )
            try:
                self.sqs.send_message(
                    QueueUrl=self.on_failure_queue_url, MessageBody=json.dumps(body)
                )
                sent = True
            except Exception:  # noqa: BLE001, S110 - as on AWS: the batch is discarded anyway
                pass
        with self._lock:
            if sent:
                self.stats.on_failure_messages += 1
                self.stats.records_sent_to_on_failure += len(records)


class _ShardReader:
    """Reads one shard in order with GetShardIterator/GetRecords and cuts it into batches."""

    def __init__(self, poller: StreamPoller, shard: _Shard) -> None:
        self.poller = poller
        self.shard = shard
        self.iterator: str | None = None
        self.last_read: str | None = None  # sequence number of the last record read
        self.pending: deque[dict[str, Any]] = deque()  # read, in Lambda's form, not handed over
        self.held: dict[str, Any] | None = None  # a bare-key INSERT whose follow-up may come
        self.held_since = 0.0
        self.ended = False

    def reset(self) -> None:
        """Forget the iterator (expired, or the server went away); resume after the last
        record read."""
        self.iterator = None

    def next_batch(self, stop: threading.Event) -> list[dict[str, Any]]:
        """The next batch: up to BatchSize records, gathered for at most the batching window
        after the first one. Empty when the shard has nothing new (then the shard is marked
        caught up) or has ended."""
        poller = self.poller
        window_ends: float | None = time.monotonic() if self.pending else None
        while len(self.pending) < poller.batch_size and not stop.is_set():
            sent = time.monotonic()
            added, read = self._read(poller.batch_size - len(self.pending))
            if read:
                poller.mark_caught_up(self.shard, None)
            if added and window_ends is None:
                window_ends = time.monotonic() + poller.batching_window_seconds
            if not self.pending:
                if read:
                    continue  # all dropped (as_dynamodb_writes): read on at once
                if self.held is None and not self.ended:
                    poller.mark_caught_up(self.shard, sent)
                return []
            left = (window_ends or 0.0) - time.monotonic()
            if left <= 0 or self.ended:
                break
            if not read:
                stop.wait(min(poller.idle_pause_seconds, left))
        return self._cut()

    def _read(self, wanted: int) -> tuple[int, int]:
        """One GetRecords call: how many records it added to ``pending``, and how many it
        returned (a record dropped by :func:`as_dynamodb_writes` is read, not added)."""
        poller = self.poller
        if self.ended:
            return 0, 0
        if self.iterator is None:
            self.iterator = self._new_iterator()
        response = poller.streams.get_records(
            ShardIterator=self.iterator, Limit=max(1, min(GET_RECORDS_LIMIT, wanted))
        )
        raw: list[dict[str, Any]] = list(response.get("Records", []))
        following = response.get("NextShardIterator")
        if raw:
            self.iterator = following
            self.last_read = str(raw[-1]["dynamodb"]["SequenceNumber"])
        elif following is None:
            self.iterator = None
        # An empty read keeps its iterator (a fixed position): moto stores every iterator it
        # hands out, and an idle shard polled with fresh ones would grow its memory for ever.
        held, self.held = self.held, None
        records = as_dynamodb_writes([held, *raw] if held is not None else raw)
        now = time.monotonic()
        if records and following is not None and _is_bare_key_insert(records[-1]):
            # moto appends an UpdateItem's two INSERTs one after the other: a read can fall
            # between them. Hold the bare key back a moment for its item's INSERT to follow.
            fresh = records[-1] is not held
            if fresh or now - self.held_since < _HOLD_BARE_KEY_SECONDS:
                self.held = records.pop()
                self.held_since = now if fresh else self.held_since
        self.ended = following is None
        self.pending.extend(
            stream_event_record(r, stream_arn=poller.stream_arn, region=poller.region)
            for r in records
        )
        return len(records), len(raw)

    def _new_iterator(self) -> str:
        arguments: dict[str, Any] = {
            "StreamArn": self.poller.stream_arn,
            "ShardId": self.shard.shard_id,
        }
        if self.last_read is not None:
            arguments["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            arguments["SequenceNumber"] = self.last_read
        else:
            arguments["ShardIteratorType"] = self.poller.starting_position
        iterator: str = self.poller.streams.get_shard_iterator(**arguments)["ShardIterator"]
        return iterator

    def _cut(self) -> list[dict[str, Any]]:
        """Up to BatchSize pending records, within Lambda's payload limit (at least one)."""
        batch: list[dict[str, Any]] = []
        size = len('{"Records": []}')
        while self.pending and len(batch) < self.poller.batch_size:
            record_size = len(json.dumps(self.pending[0])) + 2
            if batch and size + record_size > MAX_PAYLOAD_BYTES:
                break
            batch.append(self.pending.popleft())
            size += record_size
        return batch
