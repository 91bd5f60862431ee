"""The calls table (DynamoDB, partition key ``callId``): the source of truth and the outbox.

Each request's outcome is **one** conditional ``UpdateItem`` on the call's item (no read
first), and the table's stream (new and old images) is what gets published
(:mod:`call_enricher.outbox`). The item holds the call's whole fate: its last stored version
(if any) and, when the last outcome was a failure, that failure.

Writes
------
:meth:`CallStore.save` stores an enriched record:

* **CREATED** / **UPDATED**: no version yet, or the fingerprint differs -> ``version`` + 1,
  the record replaced, ``state`` = ``enriched`` and any failure removed (a version
  supersedes a failure). ONGOING -> ONGOING, ONGOING -> FINAL and FINAL -> FINAL with a
  different fingerprint (Sinch corrected a final record) are all new versions.
* **UNCHANGED**: same fingerprint -> nothing is written (no stream record, no event).
* **REFUSED_REGRESSION**: the stored record is FINAL and the incoming one is not -> refused.
  A call never goes back from FINAL, whatever order messages arrive in.

:meth:`CallStore.fail` stores a failure state (:class:`Failure`) in the same item:

* **FAILED**: written; a stored version's record stays as it is.
* **UNCHANGED**: the same failure (same :attr:`Failure.fingerprint`) is stored already.
* **KEPT_FINAL**: a FINAL version is stored: a failure never turns a FINAL call back.

:meth:`call_enricher.items.FailureRecorder.record_unpublishable` is the publisher's only
write (in its own module, so the publisher's role grants nothing more): the stored version's
``Call Enriched`` event can never be accepted by EventBridge, which becomes the call's
failure (conditional on that version still being the stored one).

Each write answers with the item as it now is (``ALL_NEW``, or ``ALL_OLD`` when the
condition refused it), so its outcome is known from that single call. Concurrent writers
are serialised by DynamoDB's condition: versions are consecutive, never skipped or reused.

Item layout (:class:`StoredCall`, schema ``events/schemas/stored-call-item``): ``callId``,
``state``, ``version``, ``fingerprint``, ``status``, ``previousStatus``, ``record`` (the
enriched record's JSON as a DynamoDB map; no float ever reaches DynamoDB), ``context`` and
``entryPath`` (of the request that stored the version), ``createdAt``, ``updatedAt`` (when
the version was stored), ``failure`` (a map, absent while enriched), ``schemaVersion`` and,
only when a TTL applies, ``expiresAt`` (epoch seconds). A message that had no valid call ID
is stored under ``msg:{messageId}`` (:func:`message_key`) with a one-day TTL.

Errors
------
Conditional check failures are outcomes, not errors. Throttling, 5xx, connection and read
timeouts, and deployment faults (missing table, denied access) raise
:class:`~call_enricher.errors.AwsUnavailableError` (transient: SQS retries, then the DLQ). A
request DynamoDB rejects as invalid (``ValidationException``, e.g. an item over 400 KB)
raises :class:`~call_enricher.errors.PermanentError`. See :func:`call_enricher.aws.translate_error`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from call_enricher import aws
from call_enricher.errors import AwsUnavailableError
from call_enricher.items import conditional_update, json_of, names_used, parse_item, to_attribute
from call_enricher.model import format_utc
from call_enricher.state import (
    FINAL,
    MESSAGE_FAILURE_TTL_SECONDS,
    MESSAGE_KEY_PREFIX,
    STORED_ITEM_SCHEMA_VERSION,
    Failure,
    RetryTrace,
    StoredCall,
    search_keys,
)

__all__ = ["BATCH_GET_LIMIT", "CallStore", "WriteOutcome", "WriteResult", "parse_item"]

# parse_item is re-exported: the item codec lives in call_enricher.items (with the write
# primitive the stream publisher shares, without this module's reads).

BATCH_GET_LIMIT = 100
"""Keys per ``BatchGetItem`` request (DynamoDB's limit)."""


# Everything but the record: enough to decide whether a stored FINAL can be served.
_SUMMARY = "#callId, #state, #version, #fingerprint, #status, #updatedAt, #createdAt"


class WriteOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REFUSED_REGRESSION = "refused-regression"
    FAILED = "failed"
    KEPT_FINAL = "kept-final"

    @property
    def wrote(self) -> bool:
        return self in (WriteOutcome.CREATED, WriteOutcome.UPDATED, WriteOutcome.FAILED)


@dataclass(frozen=True)
class WriteResult:
    """What a write did, and the item as it now is."""

    outcome: WriteOutcome
    stored: StoredCall


class _ProvenanceLike(Protocol):
    @property
    def fingerprint(self) -> str: ...


class EnrichedLike(Protocol):
    """What :meth:`CallStore.save` needs from an enriched call (``EnrichedCall`` has it)."""

    @property
    def call_id(self) -> str: ...

    @property
    def provenance(self) -> _ProvenanceLike: ...

    @property
    def status(self) -> str: ...

    def model_dump(self, *, mode: str, by_alias: bool) -> dict[str, Any]: ...


def _record_start(record: Mapping[str, Any]) -> datetime | None:
    """The enriched record's start (``time.start``, ISO 8601 UTC), if Sinch gave one."""
    start = (record.get("time") or {}).get("start")
    if not isinstance(start, str):
        return None
    try:
        return datetime.fromisoformat(start)
    except ValueError:
        return None


# -- the one translation between items and models ---------------------------------------


class CallStore:
    """The calls table. Thread-safe (the boto3 client is; the store keeps no mutable state).

    Args:
        table_name: the table (``CALLS_TABLE_NAME``).
        ttl_days: when > 0, each write of a call gets ``expiresAt`` = now + ``ttl_days``.
        client: a DynamoDB client; default :func:`call_enricher.aws.client` ``("dynamodb")``.
        clock: the current time (aware), injectable for tests.
        batch_get_attempts: attempts of a ``BatchGetItem`` page that leaves unprocessed keys.
        sleep, random: backoff between those attempts (full jitter), injectable for tests.
    """

    def __init__(
        self,
        table_name: str,
        *,
        ttl_days: int = 0,
        client: Any | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch_get_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = random.random,
    ) -> None:
        if ttl_days < 0:
            raise ValueError("ttl_days must be >= 0")
        self.table_name = table_name
        self.ttl_days = ttl_days
        self._client = client
        self._clock = clock
        self._batch_get_attempts = max(1, batch_get_attempts)
        self._sleep = sleep
        self._random = random

    client = aws.LazyClient("dynamodb")

    # -- reads ------------------------------------------------------------------------------

    def get(self, call_id: str, *, consistent: bool = False) -> StoredCall | None:
        """The stored state with its record, or ``None``. Raises AwsUnavailableError."""
        try:
            response = self.client.get_item(
                TableName=self.table_name,
                Key={"callId": {"S": call_id}},
                ConsistentRead=consistent,
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws.translate_error(exc, "DynamoDB GetItem") from None
        item = response.get("Item")
        return parse_item(item) if item else None

    def get_many(self, call_ids: Iterable[str]) -> dict[str, StoredCall]:
        """Summaries (no record, no failure) of the stored calls among ``call_ids``.

        ``BatchGetItem`` in pages of 100 keys; keys DynamoDB leaves unprocessed are asked
        again with full-jitter backoff, up to ``batch_get_attempts``, then
        :class:`AwsUnavailableError`.
        """
        unique = list(dict.fromkeys(call_ids))
        found: dict[str, StoredCall] = {}
        for start in range(0, len(unique), BATCH_GET_LIMIT):
            keys = [{"callId": {"S": key}} for key in unique[start : start + BATCH_GET_LIMIT]]
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": keys,
                    "ProjectionExpression": _SUMMARY,
                    "ExpressionAttributeNames": names_used(_SUMMARY),
                }
            }
            for attempt in range(self._batch_get_attempts):
                if attempt:
                    self._sleep(aws.backoff_delay(attempt, self._random))
                try:
                    response = self.client.batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as exc:
                    raise aws.translate_error(exc, "DynamoDB BatchGetItem") from None
                for item in response.get("Responses", {}).get(self.table_name, []):
                    stored = parse_item(item)
                    found[stored.call_id] = stored
                request = response.get("UnprocessedKeys") or {}
                if not request.get(self.table_name, {}).get("Keys"):
                    break
            else:
                left = len(request[self.table_name]["Keys"])
                raise AwsUnavailableError(
                    f"DynamoDB BatchGetItem left {left} keys unprocessed after "
                    f"{self._batch_get_attempts} attempts"
                )
        return found

    # -- writes -----------------------------------------------------------------------------

    def save(
        self,
        enriched: EnrichedLike,
        *,
        context: Mapping[str, Any] | None = None,
        entry_path: str | None = None,
    ) -> WriteResult:
        """Store ``enriched`` as the call's next version (see the module docstring)."""
        status = enriched.status
        fingerprint = enriched.provenance.fingerprint
        now = self._now()
        record = enriched.model_dump(mode="json", by_alias=True)
        start = _record_start(record)
        day, sort = search_keys(start or now, enriched.call_id)
        values: dict[str, Any] = {
            ":null": {"NULL": True},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":enriched": {"S": "enriched"},
            ":fingerprint": {"S": fingerprint},
            ":status": {"S": status},
            ":record": to_attribute(record),
            ":searchDay": {"S": day},
            ":searchSort": {"S": sort},
            ":context": to_attribute(dict(context)) if context is not None else {"NULL": True},
            ":entryPath": {"S": entry_path} if entry_path else {"NULL": True},
            ":now": {"S": format_utc(now)},
            ":schemaVersion": {"S": STORED_ITEM_SCHEMA_VERSION},
        }
        # Right-hand operands read the item *before* the update.
        assignments = [
            "#previousStatus = if_not_exists(#status, :null)",
            "#version = if_not_exists(#version, :zero) + :one",
            "#createdAt = if_not_exists(#createdAt, :now)",
            "#state = :enriched",
            "#fingerprint = :fingerprint",
            "#status = :status",
            "#record = :record",
            "#context = :context",
            "#entryPath = :entryPath",
            "#updatedAt = :now",
            "#schemaVersion = :schemaVersion",
        ]
        if start is not None:  # the record's start day, whatever filed the call before
            assignments += ["#searchDay = :searchDay", "#searchSort = :searchSort"]
        else:  # no start (Sinch sent none): the day it was first filed under stays
            assignments += [
                "#searchDay = if_not_exists(#searchDay, :searchDay)",
                "#searchSort = if_not_exists(#searchSort, :searchSort)",
            ]
        removals = ["#failure", "#lastError"]
        self._ttl(assignments, removals, values, now)
        update = "SET " + ", ".join(assignments) + " REMOVE " + ", ".join(removals)
        condition = "attribute_not_exists(#fingerprint) OR #fingerprint <> :fingerprint"
        if status != FINAL:
            condition = (
                "attribute_not_exists(#fingerprint) OR "
                "(#fingerprint <> :fingerprint AND #status <> :final)"
            )
            values[":final"] = {"S": FINAL}
        answer = conditional_update(
            self.client, self.table_name, enriched.call_id, update, condition, values
        )
        if isinstance(answer, StoredCall):
            same = answer.fingerprint == fingerprint
            outcome = WriteOutcome.UNCHANGED if same else WriteOutcome.REFUSED_REGRESSION
            return WriteResult(outcome, answer)
        stored = parse_item(answer or {})
        first = stored.version == 1
        return WriteResult(WriteOutcome.CREATED if first else WriteOutcome.UPDATED, stored)

    def fail(self, key: str, failure: Failure) -> WriteResult:
        """Store ``failure`` as the state of ``key`` (a call ID or :func:`message_key`)."""
        now = self._now()
        values: dict[str, Any] = {
            ":failed": {"S": "failed"},
            ":failure": to_attribute(json_of(failure)),
            ":failureFingerprint": {"S": failure.fingerprint},
            ":final": {"S": FINAL},
            ":now": {"S": format_utc(now)},
            ":schemaVersion": {"S": STORED_ITEM_SCHEMA_VERSION},
        }
        assignments = [
            "#state = :failed",
            "#failure = :failure",
            "#createdAt = if_not_exists(#createdAt, :now)",
            "#schemaVersion = :schemaVersion",
        ]
        if not key.startswith(MESSAGE_KEY_PREFIX):
            # Searchable by the day it failed, unless a stored record already gave it a day.
            day, sort = search_keys(failure.failed_at, key)
            values[":searchDay"], values[":searchSort"] = {"S": day}, {"S": sort}
            assignments += [
                "#searchDay = if_not_exists(#searchDay, :searchDay)",
                "#searchSort = if_not_exists(#searchSort, :searchSort)",
            ]
        removals: list[str] = ["#lastError"]
        ttl = MESSAGE_FAILURE_TTL_SECONDS if key.startswith(MESSAGE_KEY_PREFIX) else None
        self._ttl(assignments, removals, values, now, seconds=ttl)
        update = "SET " + ", ".join(assignments)
        if removals:
            update += " REMOVE " + ", ".join(removals)
        condition = (
            "(attribute_not_exists(#status) OR #status <> :final) AND "
            "(attribute_not_exists(#failure) OR #failure.#fingerprint <> :failureFingerprint)"
        )
        old = conditional_update(self.client, self.table_name, key, update, condition, values)
        if isinstance(old, StoredCall):
            outcome = WriteOutcome.KEPT_FINAL if old.is_final else WriteOutcome.UNCHANGED
            return WriteResult(outcome, old)
        return WriteResult(WriteOutcome.FAILED, parse_item(old or {}))

    def note_retry(self, call_id: str, trace: RetryTrace) -> bool:
        """Leave ``trace`` on the item of a call SQS will retry: one small conditional write,
        on failure only, so a message in the DLQ can be explained from the table. Not on a
        stored FINAL call (nothing to explain: it stands). ``True`` when written. It changes
        neither a version nor a failure: the stream announces nothing for it."""
        values: dict[str, Any] = {
            ":trace": to_attribute(json_of(trace)),
            ":retrying": {"S": "retrying"},
            ":final": {"S": FINAL},
            ":now": {"S": format_utc(self._now())},
            ":schemaVersion": {"S": STORED_ITEM_SCHEMA_VERSION},
        }
        update = (
            "SET #lastError = :trace, #state = if_not_exists(#state, :retrying), "
            "#createdAt = if_not_exists(#createdAt, :now), #schemaVersion = :schemaVersion"
        )
        condition = "attribute_not_exists(#status) OR #status <> :final"
        answer = conditional_update(
            self.client, self.table_name, call_id, update, condition, values
        )
        return not isinstance(answer, StoredCall)

    # -- helpers ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock().astimezone(UTC)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)

    def _ttl(
        self,
        assignments: list[str],
        removals: list[str],
        values: dict[str, Any],
        now: datetime,
        *,
        seconds: int | None = None,
    ) -> None:
        if seconds is None and self.ttl_days > 0:
            seconds = int(timedelta(days=self.ttl_days).total_seconds())
        if seconds is None:
            removals.append("#expiresAt")
            return
        assignments.append("#expiresAt = :expiresAt")
        values[":expiresAt"] = {"N": str(int(now.timestamp()) + seconds)}
