"""moto, made to behave as AWS does where the local stack and the tests rely on it.

:func:`patch_moto` (idempotent; the local stack calls it before moto starts, its child moto
process too, and the test suite at import) applies:

**Atomic DynamoDB writes.** moto serves concurrent requests on several threads (its server,
or in-process ``mock_aws`` under our worker threads), but its DynamoDB backend takes no lock.
Two writes at once could:

* both pass a condition that only one should (``attribute_not_exists``, ``version < :v``), so
  a conditional write is no longer the single decision the service relies on;
* give two stream records the same sequence number (``StreamShard.add`` numbers a record
  ``len(items)`` before appending it). A reader's next iterator is then "after" a number that
  is also the last record's, and ``get_records`` hands the same records back for ever: a
  test or the local stream poller spins at full CPU (seen in CI: a run that never ended).

The backend's operations and the stream's append and reads run under one re-entrant lock (a
transaction's items are written through the same methods): a read never iterates a table
another thread is changing (moto would answer 500, "dictionary changed size during
iteration"), nor sees a transaction half applied, nor stream records a refused transaction
is about to take back. moto was never faster than one interpreter anyway.

**Transactions that cost what they touch.** moto's ``TransactWriteItems`` deep-copies every
table it touches before it starts, to roll back on failure: each transaction costs the size
of the table, and a long run (the spend watch writes one marker per stream record) slows
down quadratically. The patched one keeps a copy of the items it touches only, and puts those
back on failure (with the stream records the attempt appended removed), under the lock.

**SQS calls that do not count the queue.** moto computes a queue's attributes (message
counts included: a scan of every message) where it needs one: ``ReceiveMessage`` for every
message it hands out (the retention period), ``SendMessage`` for every message (whether a
FIFO queue dedupes by content: every event an EventBridge rule forwards, to a queue nobody
drains, costs the queue's length), and ``GetQueueAttributes`` once more per attribute asked.
Patched: the retention period and the deduplication flag are read directly, and
``GetQueueAttributes`` computes them once.

**Event targets that do not build a parser per event.** For every event a rule delivers,
moto's ``EventTemplateParser`` parses its JSONPath expressions with ``jsonpath_ng``, which
builds a new yacc parser each time (a third of moto's CPU in a long run). Parsed expressions
are immutable: they are cached by text. Likewise the server's list of its own service
modules, which it read from disk (a directory listing and ~200 ``isdir``) for every request.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable
from typing import Any, Final

WRITE_OPERATIONS: Final = (
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "execute_statement",
    "execute_transaction",
    "batch_execute_statement",
)
"""``DynamoDBBackend`` methods that write (``BatchWriteItem`` goes through put/delete)."""
READ_OPERATIONS: Final = ("get_item", "query", "scan", "describe_table")
"""``DynamoDBBackend`` methods that read items (``BatchGetItem`` goes through get_item)."""

_LOCK: Final = threading.RLock()
_MARK: Final = "_call_enricher_patched"
_transaction = threading.local()
"""``active`` is True in the thread running the patched TransactWriteItems (under
:data:`_LOCK`): a Table it deep-copies is moto's own whole-table backup, which the item
snapshots replace. Any other thread's copy (a backup, say) is a real copy."""


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def atomic(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    setattr(atomic, _MARK, True)
    return atomic


def _table_deepcopy(table: Any, memo: dict[int, Any]) -> Any:
    """``Table.__deepcopy__``: itself inside the patched transaction (its backup is kept
    per item), a full copy otherwise (what ``copy.deepcopy`` does for a plain object)."""
    if getattr(_transaction, "active", False):
        return table
    clone = table.__class__.__new__(table.__class__)
    memo[id(table)] = clone
    for name, value in table.__dict__.items():
        setattr(clone, name, copy.deepcopy(value, memo))
    return clone


def _snapshot(backend: Any, transact_items: list[dict[str, Any]]) -> list[Callable[[], None]]:
    """For each item a transaction touches, how to put it back as it is now."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    undo: list[Callable[[], None]] = []
    shards: dict[int, tuple[Any, int]] = {}
    for entry in transact_items:
        _, operation = next(iter(entry.items()))
        table = backend.tables.get(operation.get("TableName"))
        attributes = operation.get("Key") or operation.get("Item") or {}
        if table is None or table.hash_key_attr not in attributes:
            continue  # moto refuses the transaction before writing anything
        hash_key = DynamoType(attributes[table.hash_key_attr])
        range_attr = table.range_key_attr
        range_key = DynamoType(attributes[range_attr]) if range_attr in attributes else None
        if range_attr and range_key is None:
            continue
        before = copy.deepcopy(table.get_item(hash_key, range_key))
        undo.append(functools.partial(_restore, table, hash_key, range_key, before))
        if table.stream_shard is not None and id(table) not in shards:
            shards[id(table)] = (table.stream_shard, len(table.stream_shard.items))
    for shard, length in shards.values():
        undo.append(functools.partial(_truncate, shard, length))
    return undo


def _restore(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    if range_key is not None:
        bucket = table.items[hash_key]
        if item is None:
            bucket.pop(range_key, None)
        else:
            bucket[range_key] = item
    elif item is None:
        table.items.pop(hash_key, None)
    else:
        table.items[hash_key] = item


def _truncate(shard: Any, length: int) -> None:
    del shard.items[length:]


def _cheap_transactions(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        with _LOCK:
            undo = _snapshot(self, transact_items) if len(transact_items) <= 100 else []
            _transaction.active = True
            try:
                return method(self, transact_items)
            except BaseException:
                for step in undo:
                    step()
                raise
            finally:
                _transaction.active = False

    setattr(transact_write_items, _MARK, True)
    return transact_write_items


def _retention_check(backend: Any, queue_name: str, message: Any) -> bool:
    """``is_message_valid_based_on_retention_period`` without computing every attribute."""
    from moto.core.utils import unix_time

    retention = int(backend.get_queue(queue_name).message_retention_period)
    return bool(retention + message.sent_timestamp / 1000 > unix_time())


_sqs = threading.local()
"""Per moto request thread: ``mode`` "send" (only what SendMessage reads) or "memo" (each
queue's attributes computed once, ``memo``), else moto's own property."""


def _queue_attributes(original: Any) -> property:
    def attributes(queue: Any) -> dict[str, Any]:
        mode = getattr(_sqs, "mode", None)
        if mode == "send":
            if not queue.fifo_queue:
                return {}
            value = getattr(queue, "content_based_deduplication", None)
            return {"ContentBasedDeduplication": str(value).lower() if value else "false"}
        if mode == "memo":
            memo: dict[int, dict[str, Any]] = _sqs.memo
            if id(queue) not in memo:
                memo[id(queue)] = original.fget(queue)
            return memo[id(queue)]
        result: dict[str, Any] = original.fget(queue)
        return result

    return property(attributes)


def _in_mode(mode: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = getattr(_sqs, "mode", None)
        _sqs.mode, _sqs.memo = mode, {}
        try:
            return method(*args, **kwargs)
        finally:
            _sqs.mode, _sqs.memo = previous, {}

    return wrapper


def patch_moto() -> None:
    """Apply the patches above, once per process."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard, Table
    from moto.sqs.models import Queue, SQSBackend

    with _LOCK:
        if is_patched():
            return
        for name in WRITE_OPERATIONS + READ_OPERATIONS:
            method = getattr(DynamoDBBackend, name, None)
            if method is None:
                continue
            if name == "transact_write_items":
                method = _cheap_transactions(method)
            setattr(DynamoDBBackend, name, _serialised(method))
        Table.__deepcopy__ = _table_deepcopy  # type: ignore[attr-defined]
        SQSBackend.is_message_valid_based_on_retention_period = _retention_check  # type: ignore[method-assign,assignment]
        Queue.attributes = _queue_attributes(Queue.attributes)  # type: ignore[method-assign,assignment]
        SQSBackend.send_message = _in_mode("send", SQSBackend.send_message)  # type: ignore[method-assign]
        SQSBackend.get_queue_attributes = _in_mode("memo", SQSBackend.get_queue_attributes)  # type: ignore[method-assign]
        StreamShard.add = _serialised(StreamShard.add)  # type: ignore[method-assign]
        StreamShard.get = _serialised(StreamShard.get)  # type: ignore[method-assign]
        import moto.backends

        modules = tuple(moto.backends.list_of_moto_modules())
        setattr(moto.backends, "list_of_moto_modules", lambda: modules)  # noqa: B010
        import jsonpath_ng.ext

        parse = functools.lru_cache(maxsize=512)(jsonpath_ng.ext.parse)  # type: ignore[attr-defined]
        setattr(jsonpath_ng.ext, "parse", parse)  # noqa: B010 - a module attribute, on purpose


def is_patched() -> bool:
    """Whether :func:`patch_moto` has run in this process."""
    from moto.dynamodb.models.table import StreamShard

    return bool(getattr(StreamShard.add, _MARK, False))
