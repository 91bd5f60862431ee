"""The calls table (DynamoDB, partition key ``callId``): conditional, monotonic upsert.

Product guarantees
------------------
Every :meth:`CallStore.save` is **one** conditional ``UpdateItem`` (no read first) with
``ReturnValues="ALL_OLD"`` and ``ReturnValuesOnConditionCheckFailure="ALL_OLD"``, so the
outcome is known from that single call, even when the write is refused:

* **CREATED**: no item yet -> the record is stored as version 1.
* **UPDATED**: the fingerprint differs -> the version is incremented and the record replaced.
  This covers ONGOING -> ONGOING (the call progressed), ONGOING -> FINAL, and
  FINAL -> FINAL with a different fingerprint: Sinch corrected a final record (a late debit,
  a fixed rate), which consumers must hear about, so it is accepted as a new version.
* **UNCHANGED**: same fingerprint -> nothing is written (no version, no timestamp change).
* **REFUSED_REGRESSION**: the stored record is FINAL and the incoming one is not (ONGOING, or
  any other non-FINAL status such as ``UNKNOWN``) -> the write is refused. A stored record
  never goes back from FINAL to ONGOING, whatever order messages arrive in (stale re-checks,
  redeliveries, concurrent writers).

Concurrent writers for one call are serialised by DynamoDB's condition: each save sees the
exact item it replaced (``ALL_OLD``), so versions are consecutive and never skipped or reused.

Publishing (write DynamoDB first, then publish)
-----------------------------------------------
The item carries ``publishedVersion``: the last version whose ``Call Enriched`` event was
delivered to EventBridge (0 until then), advanced by :meth:`CallStore.mark_published`, which is
conditional and monotonic (it never lowers the marker, never passes ``version``).
:attr:`SaveResult.needs_publish` is ``stored.version > stored.published_version``:

* a process that stored a version but crashed before publishing leaves it unpublished, so
  the redelivered message's save (UNCHANGED) says ``needs_publish``: no lost events;
* once published and marked, a redelivery (UNCHANGED) says no: no duplicate events in the
  normal path (a crash between PutEvents and the marker publishes twice, which is why event
  IDs are deterministic, ``{callId}:v{version}``, for consumers to dedupe);
* REFUSED_REGRESSION never publishes the stale incoming record; if the stored FINAL is itself
  unpublished, ``needs_publish`` is true *for the stored version*, returned in ``stored``.

Whatever the outcome, :attr:`SaveResult.stored` is the item as it now is in the table (with
its record) and :attr:`SaveResult.previous_status` is the status of the version before
``stored`` (``None`` for version 1). The item keeps that status as ``previousStatus``, so an
event rebuilt from the stored state after a crash is identical to the one first intended.

Item attributes (see :class:`StoredCallItem`, schema ``events/schemas/stored-call-item``):
``callId``, ``version``, ``fingerprint``, ``status``, ``previousStatus``, ``record`` (the
enriched record's public JSON as a DynamoDB map; its decimals are strings, so no float ever
reaches DynamoDB), ``createdAt`` / ``updatedAt`` (ISO 8601 UTC), ``publishedVersion``,
``schemaVersion`` and, only when ``ttl_days > 0``, ``expiresAt`` (epoch seconds, refreshed on
every new version; removed by a new version when the TTL is turned off).

Errors
------
Conditional check failures are outcomes, not errors. Throttling, 5xx, connection and read
timeouts raise :class:`~call_enricher.errors.AwsUnavailableError` (transient), as do
deployment faults such as a missing table or denied access (so messages reach the DLQ and can
be redriven). A request DynamoDB rejects as invalid (``ValidationException``, e.g. an item
over 400 KB) raises :class:`~call_enricher.errors.PermanentError`: it can never succeed.
See :func:`call_enricher.aws.translate_error`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Protocol

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from call_enricher import aws
from call_enricher.errors import AwsUnavailableError, PermanentError

__all__ = [
    "BATCH_GET_LIMIT",
    "STORED_ITEM_SCHEMA_VERSION",
    "CallStore",
    "EnrichedLike",
    "SaveOutcome",
    "SaveResult",
    "StoredCall",
    "StoredCallItem",
]

STORED_ITEM_SCHEMA_VERSION = "1.0.0"
"""Version of the item layout (``schemaVersion`` attribute)."""

BATCH_GET_LIMIT = 100
"""Keys per ``BatchGetItem`` request (DynamoDB's limit)."""

FINAL = "FINAL"
ONGOING = "ONGOING"

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()

# Attribute names. Every expression goes through ExpressionAttributeNames: `status` is a
# DynamoDB reserved word, and uniform placeholders keep the expressions readable.
_NAMES = {
    "#callId": "callId",
    "#version": "version",
    "#fingerprint": "fingerprint",
    "#status": "status",
    "#previousStatus": "previousStatus",
    "#record": "record",
    "#createdAt": "createdAt",
    "#updatedAt": "updatedAt",
    "#publishedVersion": "publishedVersion",
    "#schemaVersion": "schemaVersion",
    "#expiresAt": "expiresAt",
}
_SUMMARY_ATTRIBUTES = (
    "#callId, #version, #fingerprint, #status, #previousStatus, #createdAt, #updatedAt, "
    "#publishedVersion, #schemaVersion, #expiresAt"
)


class _ProvenanceLike(Protocol):
    @property
    def fingerprint(self) -> str: ...


class EnrichedLike(Protocol):
    """What :meth:`CallStore.save` needs from an enriched call (``EnrichedCall`` has it)."""

    @property
    def call_id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def provenance(self) -> _ProvenanceLike: ...

    def model_dump(self, *, mode: str, by_alias: bool) -> dict[str, Any]: ...


class StoredCallItem(BaseModel):
    """The calls table item, as plain JSON (the committed ``stored-call-item`` schema).

    Read side of the contract: items are validated with this model when read back.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    call_id: Annotated[str, Field(alias="callId", description="Sinch call ID (partition key).")]
    version: Annotated[
        int, Field(ge=1, description="Version of the stored record: 1, then +1 per change.")
    ]
    fingerprint: Annotated[
        str, Field(description="Fingerprint of the stored record; same record, same value.")
    ]
    status: Annotated[str, Field(description="Call status of the stored record (FINAL/ONGOING).")]
    previous_status: Annotated[
        str | None,
        Field(alias="previousStatus", description="Status of the previous version (null: v1)."),
    ] = None
    published_version: Annotated[
        int,
        Field(
            alias="publishedVersion",
            ge=0,
            description="Last version whose Call Enriched event was published (0: none).",
        ),
    ] = 0
    schema_version: Annotated[
        str, Field(alias="schemaVersion", description="Version of this item layout.")
    ] = STORED_ITEM_SCHEMA_VERSION
    created_at: Annotated[
        AwareDatetime, Field(alias="createdAt", description="When version 1 was stored (UTC).")
    ]
    updated_at: Annotated[
        AwareDatetime, Field(alias="updatedAt", description="When this version was stored (UTC).")
    ]
    expires_at: Annotated[
        int | None,
        Field(alias="expiresAt", description="DynamoDB TTL, epoch seconds (absent: no TTL)."),
    ] = None
    record: Annotated[
        dict[str, Any] | None,
        Field(description="The enriched record's public JSON (see the call-enriched schema)."),
    ] = None


@dataclass(frozen=True)
class StoredCall:
    """A call as stored. ``record`` is ``None`` when read without it (:meth:`get_many`)."""

    call_id: str
    version: int
    fingerprint: str
    status: str
    published_version: int
    created_at: datetime
    updated_at: datetime
    record: dict[str, Any] | None
    expires_at: int | None
    previous_status: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status == FINAL

    @property
    def needs_publish(self) -> bool:
        """True while this version's ``Call Enriched`` event has not been published."""
        return self.version > self.published_version


class SaveOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REFUSED_REGRESSION = "refused-regression"


@dataclass(frozen=True)
class SaveResult:
    """What :meth:`CallStore.save` did, and the item as it now is."""

    outcome: SaveOutcome
    stored: StoredCall
    previous_status: str | None
    needs_publish: bool


def _utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _to_attribute_value(value: Any) -> dict[str, Any]:
    """Serialise a JSON value for DynamoDB (floats, which boto3 refuses, become decimals)."""
    serialized: dict[str, Any] = dict(_SERIALIZER.serialize(_floats_to_decimals(value)))
    return serialized


def _floats_to_decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {key: _floats_to_decimals(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_floats_to_decimals(item) for item in value]
    return value


def _to_json(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal: integral ones become int, others float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    return value


def _parse_item(item: Mapping[str, Any]) -> StoredCall:
    plain = _to_json({key: _DESERIALIZER.deserialize(value) for key, value in item.items()})
    try:
        model = StoredCallItem.model_validate(plain)
    except ValidationError as exc:
        call_id = str(plain.get("callId", "?"))[:128]
        fields = sorted({str(err["loc"][0]) for err in exc.errors() if err["loc"]})
        raise PermanentError(
            f"stored item for call {call_id} is invalid (fields: {', '.join(fields)})"
        ) from None
    return StoredCall(
        call_id=model.call_id,
        version=model.version,
        fingerprint=model.fingerprint,
        status=model.status,
        published_version=model.published_version,
        created_at=model.created_at,
        updated_at=model.updated_at,
        record=model.record,
        expires_at=model.expires_at,
        previous_status=model.previous_status,
    )


class CallStore:
    """The calls table. Thread-safe (the boto3 client is; the store keeps no mutable state).

    Args:
        table_name: the table (``CALLS_TABLE_NAME``).
        ttl_days: when > 0, each new version gets ``expiresAt`` = now + ``ttl_days``.
        client: a DynamoDB client; default :func:`call_enricher.aws.client` ``("dynamodb")``,
            created on first use.
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

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb")
        return self._client

    # -- reads ------------------------------------------------------------------------------

    def get(self, call_id: str, *, consistent: bool = False) -> StoredCall | None:
        """The stored call with its record, or ``None``. Raises AwsUnavailableError."""
        try:
            response = self.client.get_item(
                TableName=self.table_name,
                Key={"callId": {"S": call_id}},
                ConsistentRead=consistent,
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws.translate_error(exc, "DynamoDB GetItem") from None
        item = response.get("Item")
        return _parse_item(item) if item else None

    def get_many(
        self, call_ids: Iterable[str], *, consistent: bool = False
    ) -> dict[str, StoredCall]:
        """The stored calls among ``call_ids`` (absent ones are left out), without records.

        ``BatchGetItem`` in pages of 100 keys, projecting everything but the record (strongly
        consistent when ``consistent``); keys DynamoDB leaves unprocessed (throttling, 16 MB
        pages) are asked again with full-jitter backoff, up to ``batch_get_attempts``, then
        :class:`AwsUnavailableError`.
        """
        unique = list(dict.fromkeys(call_ids))
        found: dict[str, StoredCall] = {}
        for start in range(0, len(unique), BATCH_GET_LIMIT):
            keys = [
                {"callId": {"S": call_id}} for call_id in unique[start : start + BATCH_GET_LIMIT]
            ]
            self._batch_get(keys, found, consistent=consistent)
        return found

    def _batch_get(
        self, keys: list[dict[str, Any]], found: dict[str, StoredCall], *, consistent: bool
    ) -> None:
        request: dict[str, Any] = {
            self.table_name: {
                "Keys": keys,
                "ProjectionExpression": _SUMMARY_ATTRIBUTES,
                "ExpressionAttributeNames": _names_used(_SUMMARY_ATTRIBUTES),
                **({"ConsistentRead": True} if consistent else {}),
            }
        }
        for attempt in range(self._batch_get_attempts):
            if attempt:
                self._sleep(self._random() * min(2.0, 0.05 * 2**attempt))
            try:
                response = self.client.batch_get_item(RequestItems=request)
            except (ClientError, BotoCoreError) as exc:
                raise aws.translate_error(exc, "DynamoDB BatchGetItem") from None
            for item in response.get("Responses", {}).get(self.table_name, []):
                stored = _parse_item(item)
                found[stored.call_id] = stored
            unprocessed = response.get("UnprocessedKeys") or {}
            if not unprocessed.get(self.table_name, {}).get("Keys"):
                return
            request = unprocessed
        left = len(request[self.table_name]["Keys"])
        raise AwsUnavailableError(
            f"DynamoDB BatchGetItem left {left} keys unprocessed after "
            f"{self._batch_get_attempts} attempts"
        )

    # -- writes -----------------------------------------------------------------------------

    def save(self, enriched: EnrichedLike) -> SaveResult:
        """Store ``enriched`` conditionally and monotonically (see the module docstring).

        One ``UpdateItem`` in every case. Raises AwsUnavailableError (transient) or
        PermanentError (the item can never be written, e.g. over 400 KB).
        """
        call_id = enriched.call_id
        status = enriched.status
        fingerprint = enriched.provenance.fingerprint
        record = enriched.model_dump(mode="json", by_alias=True)
        now = self._clock()
        now_iso = _utc_iso(now)
        expires_at = (
            int((now + timedelta(days=self.ttl_days)).timestamp()) if self.ttl_days > 0 else None
        )

        values: dict[str, Any] = {
            ":null": {"NULL": True},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":fingerprint": {"S": fingerprint},
            ":status": {"S": status},
            ":record": _to_attribute_value(record),
            ":now": {"S": now_iso},
            ":schemaVersion": {"S": STORED_ITEM_SCHEMA_VERSION},
        }
        # Right-hand operands read the item *before* the update: previousStatus gets the old
        # status, version the old version + 1.
        assignments = [
            "#previousStatus = if_not_exists(#status, :null)",
            "#version = if_not_exists(#version, :zero) + :one",
            "#createdAt = if_not_exists(#createdAt, :now)",
            "#publishedVersion = if_not_exists(#publishedVersion, :zero)",
            "#fingerprint = :fingerprint",
            "#status = :status",
            "#record = :record",
            "#updatedAt = :now",
            "#schemaVersion = :schemaVersion",
        ]
        if expires_at is not None:
            assignments.append("#expiresAt = :expiresAt")
            values[":expiresAt"] = {"N": str(expires_at)}
            update = "SET " + ", ".join(assignments)
        else:
            update = "SET " + ", ".join(assignments) + " REMOVE #expiresAt"
        # New item, or a different record that is not a FINAL -> ONGOING regression.
        condition = "attribute_not_exists(#callId) OR #fingerprint <> :fingerprint"
        if status != FINAL:
            condition = (
                "attribute_not_exists(#callId) OR "
                "(#fingerprint <> :fingerprint AND #status <> :final)"
            )
            values[":final"] = {"S": FINAL}

        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key={"callId": {"S": call_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=_names_used(update, condition),
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                return self._refused(exc, call_id, fingerprint)
            raise aws.translate_error(exc, "DynamoDB UpdateItem") from None
        except BotoCoreError as exc:
            raise aws.translate_error(exc, "DynamoDB UpdateItem") from None

        old_item = response.get("Attributes")
        old = _parse_item(old_item) if old_item else None
        stored = StoredCall(
            call_id=call_id,
            version=(old.version + 1) if old else 1,
            fingerprint=fingerprint,
            status=status,
            published_version=old.published_version if old else 0,
            created_at=old.created_at if old else _parse_iso(now_iso),
            updated_at=_parse_iso(now_iso),
            record=record,
            expires_at=expires_at,
            previous_status=old.status if old else None,
        )
        return SaveResult(
            outcome=SaveOutcome.UPDATED if old else SaveOutcome.CREATED,
            stored=stored,
            previous_status=stored.previous_status,
            needs_publish=stored.needs_publish,
        )

    def _refused(self, exc: ClientError, call_id: str, fingerprint: str) -> SaveResult:
        item = _failed_item(exc)
        if not item:
            # Only possible if the item vanished between the check and the answer.
            raise AwsUnavailableError(
                f"DynamoDB UpdateItem refused the write of call {call_id} without the item"
            )
        stored = _parse_item(item)
        outcome = (
            SaveOutcome.UNCHANGED
            if stored.fingerprint == fingerprint
            else SaveOutcome.REFUSED_REGRESSION
        )
        return SaveResult(
            outcome=outcome,
            stored=stored,
            previous_status=stored.previous_status,
            needs_publish=stored.needs_publish,
        )

    def mark_published(self, call_id: str, version: int) -> None:
        """Record that ``version``'s ``Call Enriched`` event was published.

        Conditional and monotonic: the marker only moves forward, and never past the stored
        version. Marking a version at or below the marker (a concurrent or repeated mark) is a
        no-op, as is marking a call that is no longer stored (expired by TTL).

        Raises:
            ValueError: ``version`` < 1.
            PermanentError: ``version`` is above the stored version (a caller bug, or the
                item was deleted and re-created meanwhile); the marker is left alone.
            AwsUnavailableError / PermanentError: as for :meth:`save`.
        """
        if version < 1:
            raise ValueError("version must be >= 1")
        condition = (
            "attribute_exists(#callId) AND #version >= :version AND "
            "(attribute_not_exists(#publishedVersion) OR #publishedVersion < :version)"
        )
        update = "SET #publishedVersion = :version"
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"callId": {"S": call_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=_names_used(update, condition),
                ExpressionAttributeValues={":version": {"N": str(version)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise aws.translate_error(exc, "DynamoDB UpdateItem") from None
            item = _failed_item(exc)
            if item and int(item["version"]["N"]) < version:
                raise PermanentError(
                    f"cannot mark version {version} of call {call_id} published: "
                    f"only version {item['version']['N']} is stored"
                ) from None
        except BotoCoreError as exc:
            raise aws.translate_error(exc, "DynamoDB UpdateItem") from None


def _failed_item(exc: ClientError) -> dict[str, Any] | None:
    """The item DynamoDB returned with a failed condition (ReturnValuesOnConditionCheckFailure)."""
    response: dict[str, Any] = dict(exc.response)
    item = response.get("Item")
    return item if isinstance(item, dict) and item else None


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _names_used(*expressions: str) -> dict[str, str]:
    """ExpressionAttributeNames limited to the placeholders used (DynamoDB rejects extras)."""
    return {
        placeholder: name
        for placeholder, name in _NAMES.items()
        if any(_uses(expression, placeholder) for expression in expressions)
    }


def _uses(expression: str, placeholder: str) -> bool:
    index = expression.find(placeholder)
    while index != -1:
        end = index + len(placeholder)
        if end == len(expression) or not (expression[end].isalnum() or expression[end] == "_"):
            return True
        index = expression.find(placeholder, end)
    return False
