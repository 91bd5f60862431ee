"""Make moto's DynamoDB writes atomic, as DynamoDB's own are.

moto serves concurrent requests on several threads (its server, or in-process ``mock_aws``
under our worker threads), but its DynamoDB backend takes no lock. Two writes at once can:

* both pass a condition that only one should (``attribute_not_exists``, ``version < :v``), so
  a conditional write is no longer the single decision the service relies on;
* give two stream records the same sequence number (``StreamShard.add`` numbers a record
  ``len(items)`` before appending it). A reader's next iterator is then "after" a number that
  is also the last record's, and ``get_records`` hands the same records back for ever: a
  test or the local stream poller spins at full CPU (seen in CI: a run that never ended).

:func:`make_dynamodb_writes_atomic` serialises the backend's write operations and the
stream's append under one re-entrant lock (a transaction's items are written through the
same methods). Reads stay concurrent. Idempotent; the local stack calls it before moto
starts, and the test suite at import.
"""

from __future__ import annotations

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

_LOCK: Final = threading.RLock()
_MARK: Final = "_call_enricher_atomic"


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def atomic(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    setattr(atomic, _MARK, True)
    return atomic


def make_dynamodb_writes_atomic() -> None:
    """Patch moto (once per process) so each DynamoDB write and its stream record happen
    as one step."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard

    targets: list[tuple[type, str]] = [(DynamoDBBackend, name) for name in WRITE_OPERATIONS]
    targets.append((StreamShard, "add"))
    with _LOCK:
        for owner, name in targets:
            method = getattr(owner, name, None)
            if method is not None and not getattr(method, _MARK, False):
                setattr(owner, name, _serialised(method))


def is_patched() -> bool:
    """Whether :func:`make_dynamodb_writes_atomic` has run in this process."""
    from moto.dynamodb.models.table import StreamShard

    return bool(getattr(StreamShard.add, _MARK, False))
