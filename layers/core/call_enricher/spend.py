"""The daily spend watch: spend and call counts per UTC day, from the calls table's stream.

What is counted (:func:`spend_deltas`, pure)
    Every FINAL version of a call counts once on its UTC day (``record.time.utcDay``; the
    item's ``createdAt`` day when the call has no start time) under three keys:

    * ``total`` / ``all``;
    * ``country`` / the callee's ISO country, or ``+{callingCode}`` for a number without
      one (``+882``, ``+881``: satellite and international networks count too);
    * ``number`` / HMAC-SHA256 of the callee's E.164 number under a secret key
      (``SPEND_NUMBER_KEY_SECRET_ID``), 32 hex digits: the table never holds a number,
      and whoever holds the key can compute the key of a number they suspect.

    A key gets one call and the call's ``money.debit`` in its currency (a debit without a
    currency counts the call only). A stream record (old and new image) adds the difference
    of the two versions' contributions: a corrected FINAL adds ``new debit - old debit``
    (and moves the call if its day, country or number changed); an ONGOING version, a
    failure state, a TTL deletion or a write that left the version unchanged add nothing.

Exactly once per stream record (:class:`SpendStore`)
    One ``TransactWriteItems`` per stream record: a marker item ``applied#{callId}#v{version}``
    put only if absent, and an ``UpdateItem ADD`` per key. A redelivered or replayed record
    finds its marker and adds nothing; a failed transaction adds nothing at all. Why markers
    per (call, version) rather than a "last applied version" per call or per key: deltas
    commute, so markers keep every record counted exactly once whatever the order (a
    record replayed from the on-failure queue after newer ones still counts), and nothing
    grows on the hot ``total`` item (a per-key list of applied calls would hit the 400 KB
    item limit on a busy day). Markers expire after :data:`MARKER_TTL_DAYS` (longer than the
    stream's 24 h plus the on-failure queue's 14 days); aggregates after
    :data:`AGGREGATE_TTL_DAYS`.

Crossings, once per key, day and threshold (:class:`SpendWatch`)
    After applying, the touched aggregates are read (strongly consistent) and each threshold
    of the policy's ``spend`` section (per key kind: spend per currency, call count) that the
    figure has reached and that is not yet announced is *claimed*: a conditional write of
    the item ``crossing#{day}#{kind}#{key}#{threshold}`` that only the first stream record
    gets (or the same record again, on its retry; or anyone once an unpublished claim is
    :data:`STALE_CLAIM_SECONDS` old, so a claim whose record was dropped is not lost). The
    claimer's ``Spend Threshold Crossed`` event goes out in the same ``PutEvents`` as the
    record's own events; once accepted, the threshold is marked announced on the crossing
    and the aggregate, and nothing announces it again. Event IDs are deterministic
    (``spend:{day}:{kind}:{key}:{threshold}``), so the one duplicate at-least-once delivery
    allows (published, then the mark failed) carries the same ID.

Table (``SPEND_TABLE_NAME``): partition key ``pk`` (S), no sort key, TTL on ``expiresAt``.
No scan, no query: every access is by key.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

from call_enricher import aws
from call_enricher.errors import AwsUnavailableError, CallEnricherError, ConfigurationError
from call_enricher.risk import DEFAULT_POLICY, RiskPolicy, SpendLimits
from call_enricher.state import FINAL, StoredCall

if TYPE_CHECKING:
    from call_enricher.events import OutgoingEvent
    from call_enricher.outbox import StreamChange

__all__ = [
    "AGGREGATE_TTL_DAYS",
    "KEY_KINDS",
    "MARKER_TTL_DAYS",
    "STALE_CLAIM_SECONDS",
    "Contribution",
    "Crossing",
    "Figures",
    "SecretNumberKey",
    "SpendDelta",
    "SpendStore",
    "SpendWatch",
    "contribution",
    "crossing_of",
    "crossings",
    "number_key",
    "spend_deltas",
]

KEY_KINDS: Final = ("total", "country", "number")
MARKER_TTL_DAYS: Final = 16
AGGREGATE_TTL_DAYS: Final = 400
STALE_CLAIM_SECONDS: Final = 900
_TOTAL_KEY: Final = "all"
_NUMBER_KEY_HEX: Final = 32


# --- pure: what one stream record adds -----------------------------------------------------------


@dataclass(frozen=True)
class Contribution:
    """What one stored FINAL version counts: one call (and its debit) on its day."""

    day: str
    country: str | None
    number: str | None  # E.164; hashed before it goes anywhere
    currency: str | None
    amount: Decimal


@dataclass(frozen=True)
class SpendDelta:
    """What to add to one aggregate (day, kind, key): calls and spend per currency."""

    day: str
    kind: str
    key: str
    calls: int
    spend: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def aggregate(self) -> tuple[str, str, str]:
        return (self.day, self.kind, self.key)


def number_key(e164: str, key: bytes) -> str:
    """The spend key of a called number: HMAC-SHA256 under ``key``, 32 hex digits."""
    return hmac.new(key, e164.encode("utf-8"), hashlib.sha256).hexdigest()[:_NUMBER_KEY_HEX]


def contribution(stored: StoredCall | None) -> Contribution | None:
    """What a stored version counts, or ``None`` (no FINAL version)."""
    if stored is None or stored.version is None or stored.status != FINAL or not stored.record:
        return None
    record = stored.record
    time = _mapping(record.get("time"))
    day = time.get("utcDay")
    if not isinstance(day, str) or not day:
        if stored.created_at is None:
            return None
        day = stored.created_at.astimezone(UTC).date().isoformat()
    to = _mapping(_mapping(record.get("parties")).get("to"))
    phone = _mapping(to.get("phone"))
    country = phone.get("country") if isinstance(phone.get("country"), str) else None
    calling_code = phone.get("callingCode")
    if country is None and isinstance(calling_code, int):
        country = f"+{calling_code}"
    e164 = phone.get("e164") if isinstance(phone.get("e164"), str) else None
    debit = _mapping(_mapping(record.get("money")).get("debit"))
    currency = debit.get("currency") if isinstance(debit.get("currency"), str) else None
    amount = _decimal(debit.get("amount"))
    return Contribution(day=day, country=country, number=e164, currency=currency, amount=amount)


def spend_deltas(
    old: StoredCall | None, new: StoredCall | None, *, key: bytes | Callable[[], bytes]
) -> list[SpendDelta]:
    """What a stream record (old image, new image) adds, per aggregate. Pure.

    Empty when the record adds nothing (see the module docstring). ``key``: the HMAC key of
    called numbers (or a callable giving it, called only when a number is counted).
    """
    if new is None or new.version is None:
        return []  # deleted (TTL) or never enriched: nothing is un-counted or counted
    if old is not None and old.version == new.version:
        return []
    totals: dict[tuple[str, str, str], tuple[int, dict[str, Decimal]]] = {}

    def put(found: Contribution | None, sign: int) -> None:
        if found is None:
            return
        keys = [(found.day, "total", _TOTAL_KEY)]
        if found.country is not None:
            keys.append((found.day, "country", found.country))
        if found.number is not None:
            secret = key() if callable(key) else key
            keys.append((found.day, "number", number_key(found.number, secret)))
        for aggregate in keys:
            calls, spend = totals.get(aggregate, (0, {}))
            if found.currency is not None and found.amount:
                spend[found.currency] = spend.get(found.currency, Decimal(0)) + sign * found.amount
            totals[aggregate] = (calls + sign, spend)

    put(contribution(old), -1)
    put(contribution(new), +1)
    deltas = []
    for (day, kind, name), (calls, spend) in totals.items():
        nonzero = {currency: amount for currency, amount in spend.items() if amount}
        if calls or nonzero:
            deltas.append(SpendDelta(day=day, kind=kind, key=name, calls=calls, spend=nonzero))
    return deltas


# --- pure: which thresholds a figure has reached -------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """An aggregate as it stands: calls, spend per currency, thresholds announced."""

    calls: int = 0
    spend: Mapping[str, Decimal] = field(default_factory=dict)
    announced: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Crossing:
    """A threshold an aggregate has reached: ``metric`` ``spend`` (with ``currency``) or
    ``calls``; ``label`` names it in IDs (``USD-100``, ``calls-50``)."""

    day: str
    kind: str
    key: str
    metric: str
    currency: str | None
    threshold: Decimal
    value: Decimal

    @property
    def label(self) -> str:
        amount = format(self.threshold.normalize(), "f")
        return f"calls-{amount}" if self.metric == "calls" else f"{self.currency}-{amount}"

    @property
    def event_id(self) -> str:
        return f"spend:{self.day}:{self.kind}:{self.key}:{self.label}"


def crossings(
    aggregate: tuple[str, str, str], figures: Figures, limits: SpendLimits
) -> list[Crossing]:
    """The thresholds of ``limits`` that ``figures`` reached and has not announced. Pure."""
    day, kind, key = aggregate
    found = [
        Crossing(day, kind, key, "calls", None, Decimal(limit), Decimal(figures.calls))
        for limit in limits.calls
        if figures.calls >= limit
    ]
    for currency, thresholds in limits.spend.items():
        value = figures.spend.get(currency, Decimal(0))
        found.extend(
            Crossing(day, kind, key, "spend", currency, threshold, value)
            for threshold in thresholds
            if value >= threshold
        )
    return [crossing for crossing in found if crossing.label not in figures.announced]


# --- the adapter ---------------------------------------------------------------------------------


def _aggregate_pk(day: str, kind: str, key: str) -> str:
    return f"agg#{day}#{kind}#{key}"


def _spend_attribute(currency: str) -> str:
    return f"spend{currency}"


class SpendStore:
    """The spend table (``pk`` string key): conditional, atomic writes by key; no scan."""

    def __init__(
        self,
        table_name: str,
        *,
        client: Any = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not table_name:
            raise ConfigurationError("SPEND_TABLE_NAME is empty")
        self.table_name = table_name
        self._client = client
        self._now = now

    client = aws.LazyClient("dynamodb")

    def apply(self, marker: str, deltas: Sequence[SpendDelta]) -> bool:
        """Add ``deltas`` once for ``marker``: True when applied now, False when the marker
        says they were already (nothing is added twice). One transaction: all or nothing."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not deltas:
            return False
        now = self._now()
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": {
                        "pk": {"S": marker},
                        "appliedAt": {"S": now.isoformat()},
                        "expiresAt": {"N": str(_epoch(now + timedelta(days=MARKER_TTL_DAYS)))},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
        for delta in deltas:
            names = {"#day": "day", "#kind": "kind", "#key": "key", "#calls": "calls"}
            values: dict[str, Any] = {
                ":day": {"S": delta.day},
                ":kind": {"S": delta.kind},
                ":key": {"S": delta.key},
                ":calls": {"N": str(delta.calls)},
                ":expires": {"N": str(_epoch(_day_start(delta.day, AGGREGATE_TTL_DAYS)))},
            }
            adds = ["#calls :calls"]
            for index, (currency, amount) in enumerate(sorted(delta.spend.items())):
                names[f"#s{index}"] = _spend_attribute(currency)
                values[f":s{index}"] = {"N": _number(amount)}
                adds.append(f"#s{index} :s{index}")
            items.append(
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": {"pk": {"S": _aggregate_pk(*delta.aggregate)}},
                        "UpdateExpression": "SET #day = :day, #kind = :kind, #key = :key,"
                        " expiresAt = if_not_exists(expiresAt, :expires) ADD " + ", ".join(adds),
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons") or []
            if reasons and (reasons[0] or {}).get("Code") == "ConditionalCheckFailed":
                return False  # the marker exists: this stream record was counted already
            raise self._error(exc, "DynamoDB TransactWriteItems") from None
        except BotoCoreError as exc:
            raise self._error(exc, "DynamoDB TransactWriteItems") from None
        return True

    def read(
        self, aggregates: Iterable[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], Figures]:
        """The figures of ``aggregates`` (strongly consistent; absent ones are zero)."""
        from botocore.exceptions import BotoCoreError, ClientError

        wanted = {_aggregate_pk(*aggregate): aggregate for aggregate in aggregates}
        found: dict[tuple[str, str, str], Figures] = dict.fromkeys(wanted.values(), Figures())
        pending: list[dict[str, Any]] = [{"pk": {"S": pk}} for pk in wanted]
        for _ in range(5):
            if not pending:
                break
            request = {self.table_name: {"Keys": pending, "ConsistentRead": True}}
            try:
                answer = self.client.batch_get_item(RequestItems=request)
            except (BotoCoreError, ClientError) as exc:
                raise self._error(exc, "DynamoDB BatchGetItem") from None
            for item in answer.get("Responses", {}).get(self.table_name, []):
                found[wanted[item["pk"]["S"]]] = _figures(item)
            pending = answer.get("UnprocessedKeys", {}).get(self.table_name, {}).get("Keys", [])
        if pending:
            raise AwsUnavailableError("DynamoDB BatchGetItem left keys unprocessed")
        return found

    def claim(self, crossing: Crossing, owner: str) -> bool:
        """Claim the announcement of ``crossing`` for ``owner`` (a stream sequence number).

        True for the first claimer, for the same owner again while unpublished, and for
        anyone once an unpublished claim is :data:`STALE_CLAIM_SECONDS` old.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        now = self._now()
        stale = now - timedelta(seconds=STALE_CLAIM_SECONDS)
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": f"crossing#{crossing.event_id.removeprefix('spend:')}"}},
                UpdateExpression="SET #owner = :owner, claimedAt = :now, published = :false,"
                " eventId = :id, expiresAt = if_not_exists(expiresAt, :expires)",
                ConditionExpression="attribute_not_exists(pk) OR (published = :false AND"
                " (#owner = :owner OR claimedAt < :stale))",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={
                    ":owner": {"S": owner},
                    ":now": {"S": now.isoformat()},
                    ":stale": {"S": stale.isoformat()},
                    ":false": {"BOOL": False},
                    ":id": {"S": crossing.event_id},
                    ":expires": {"N": str(_epoch(_day_start(crossing.day, AGGREGATE_TTL_DAYS)))},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise self._error(exc, "DynamoDB UpdateItem") from None
        except BotoCoreError as exc:
            raise self._error(exc, "DynamoDB UpdateItem") from None
        return True

    def mark_announced(self, crossing: Crossing) -> None:
        """Record that ``crossing``'s event was accepted: nobody claims it again."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": {
                                "pk": {"S": f"crossing#{crossing.event_id.removeprefix('spend:')}"}
                            },
                            "UpdateExpression": "SET published = :true",
                            "ExpressionAttributeValues": {":true": {"BOOL": True}},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": {
                                "pk": {
                                    "S": _aggregate_pk(crossing.day, crossing.kind, crossing.key)
                                }
                            },
                            "UpdateExpression": "ADD announced :label",
                            "ExpressionAttributeValues": {":label": {"SS": [crossing.label]}},
                        }
                    },
                ]
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "DynamoDB TransactWriteItems") from None

    @staticmethod
    def _error(exc: Exception, operation: str) -> CallEnricherError:
        return aws.translate_error(exc, operation)


def _figures(item: Mapping[str, Any]) -> Figures:
    spend = {
        name.removeprefix("spend"): Decimal(value["N"])
        for name, value in item.items()
        if name.startswith("spend") and len(name) == 8 and "N" in value
    }
    calls = item.get("calls", {}).get("N")
    announced = item.get("announced", {}).get("SS", [])
    return Figures(
        calls=int(Decimal(calls)) if calls is not None else 0,
        spend=spend,
        announced=frozenset(announced),
    )


# --- the key of called numbers -------------------------------------------------------------------


class SecretNumberKey:
    """``callable() -> bytes``: the HMAC key of called numbers, from a Secrets Manager secret
    (its SecretString, at least 16 characters), cached by Powertools for ``max_age_seconds``."""

    def __init__(self, secret_id: str, *, max_age_seconds: int = 3600, client: Any = None) -> None:
        if not secret_id:
            raise ConfigurationError(
                "SPEND_NUMBER_KEY_SECRET_ID is not set (the spend watch hashes called numbers)"
            )
        self._secret_id = secret_id
        self._max_age = max_age_seconds
        self._client = client
        self._lock = threading.Lock()
        self._provider: Any = None

    def __call__(self) -> bytes:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        with self._lock:
            if self._provider is None:
                self._provider = SecretsProvider(
                    boto3_client=self._client or aws.client("secretsmanager")
                )
            try:
                value = self._provider.get(self._secret_id, max_age=self._max_age)
            except GetParameterError as exc:
                raise AwsUnavailableError(
                    f"could not read the number key secret {self._secret_id!r}:"
                    f" {type(exc.__context__ or exc).__name__}"
                ) from None
        text = value.decode() if isinstance(value, bytes) else str(value)
        if len(text) < 16:
            raise ConfigurationError(
                f"the number key secret {self._secret_id!r} must hold at least 16 characters"
            )
        return text.encode("utf-8")


# --- the service ---------------------------------------------------------------------------------


class SpendWatch:
    """Applies each stream record's deltas and claims the thresholds they cross."""

    def __init__(
        self,
        store: SpendStore,
        *,
        number_key: Callable[[], bytes],
        policy: Callable[[], RiskPolicy] = lambda: DEFAULT_POLICY,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self._number_key = number_key
        self._policy = policy
        self._now = now

    def observe(self, change: StreamChange) -> list[OutgoingEvent]:
        """Count ``change`` (once) and return the ``Spend Threshold Crossed`` events it owns.

        Raises :class:`~call_enricher.errors.CallEnricherError` when it cannot (the stream
        record is then retried: applying again adds nothing).
        """
        from call_enricher.events import spend_threshold_crossed_event

        new = change.new
        deltas = spend_deltas(change.old, new, key=self._number_key)
        if not deltas or new is None or new.version is None:
            return []
        self.store.apply(f"applied#{new.call_id}#v{new.version}", deltas)
        policy = self._policy().spend
        touched = {delta.aggregate for delta in deltas if delta.calls > 0 or _adds(delta)}
        watched = [aggregate for aggregate in touched if _has_limits(policy.limits(aggregate[1]))]
        if not watched:
            return []
        figures = self.store.read(watched)
        events: list[OutgoingEvent] = []
        at = self._now()
        for aggregate in sorted(watched):
            figure = figures[aggregate]
            for crossing in crossings(aggregate, figure, policy.limits(aggregate[1])):
                if not self.store.claim(crossing, change.key):
                    continue
                event = spend_threshold_crossed_event(
                    crossing,
                    calls=figure.calls,
                    spend=figure.spend,
                    call_id=new.call_id,
                    version=new.version,
                    crossed_at=at,
                )
                events.append(event)
        return events

    def announced(self, event: OutgoingEvent) -> None:
        """``event`` (a ``Spend Threshold Crossed`` one) was accepted by the bus: mark its
        threshold announced, so that no later record claims it again."""
        self.store.mark_announced(crossing_of(event.detail))


def crossing_of(detail: Mapping[str, Any]) -> Crossing:
    """The :class:`Crossing` a ``Spend Threshold Crossed`` detail announces."""
    return Crossing(
        day=str(detail["day"]),
        kind=str(detail["keyKind"]),
        key=str(detail["key"]),
        metric=str(detail["metric"]),
        currency=detail.get("currency"),
        threshold=Decimal(str(detail["threshold"])),
        value=Decimal(str(detail["value"])),
    )


def _adds(delta: SpendDelta) -> bool:
    return any(amount > 0 for amount in delta.spend.values())


def _has_limits(limits: SpendLimits) -> bool:
    return bool(limits.calls) or any(limits.spend.values())


# --- helpers -------------------------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _decimal(value: Any) -> Decimal:
    if value is None or isinstance(value, bool):
        return Decimal(0)
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
    return amount if amount.is_finite() else Decimal(0)


def _number(amount: Decimal) -> str:
    return format(amount, "f")


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _day_start(day: str, plus_days: int) -> datetime:
    try:
        start = date.fromisoformat(day)
    except ValueError:
        start = datetime.now(UTC).date()
    return datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=plus_days)
