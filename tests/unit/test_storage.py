"""The calls table: one conditional write per outcome (a version or a failure), TTL, reads,
and the stream publisher's one write (:class:`call_enricher.items.FailureRecorder`).

DynamoDB is in-process moto (the real request/condition/expression semantics), with the
table's stream on (new and old images) so each test can see what a write announces: the
stream is the outbox, so "writes nothing" means "no stream record". Failures AWS produces
but moto does not are injected with botocore's Stubber or by wrapping the client.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from botocore.stub import Stubber
from pydantic import BaseModel, ConfigDict, Field

from call_enricher import aws, errors
from call_enricher.errors import AwsUnavailableError, ErrorClass, PermanentError
from call_enricher.events import events_for_change
from call_enricher.items import FailureRecorder, parse_item
from call_enricher.state import (
    MESSAGE_FAILURE_TTL_SECONDS,
    STORED_ITEM_SCHEMA_VERSION,
    Failure,
    RetryTrace,
    StoredCall,
    failure_from_error,
    message_key,
    retry_trace,
)
from call_enricher.storage import CallStore, WriteOutcome

from .conftest import CALLS_TABLE

CALL_ID = "4398599d1ba84ef3bde0a82dfb61abed"
T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


# -- a tiny stand-in for EnrichedCall: the attributes CallStore relies on ----------------------


class _Provenance(BaseModel):
    fingerprint: str


class FakeEnriched(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    call_id: str = Field(alias="callId")
    status: str
    duration: int = 0
    debit_amount: str = Field("0.0000", alias="debitAmount")
    rate: float = 0.25
    provenance: _Provenance


def enriched(
    status: str = "FINAL", fingerprint: str = "fp-1", *, call_id: str = CALL_ID, duration: int = 0
) -> FakeEnriched:
    return FakeEnriched(
        call_id=call_id,
        status=status,
        duration=duration,
        debit_amount="0.1234",
        provenance=_Provenance(fingerprint=fingerprint),
    )


def failure(
    error: errors.CallEnricherError | None = None,
    *,
    call_id: str | None = CALL_ID,
    failed_at: datetime = T0,
) -> Failure:
    return failure_from_error(
        error
        or errors.CallNotFoundError("Call not found", http_status=404, sinch_error_code=40400),
        failed_at=failed_at,
        call_id=call_id,
        attempts=1,
        source_id="msg-1",
    )


class Clock:
    """A clock that moves forward one minute per reading."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        current = self.now
        self.now += timedelta(minutes=1)
        return current


def _moto_key_only(record: dict[str, Any]) -> bool:
    """moto emits an extra INSERT holding only the key before the real INSERT of an
    UpdateItem that creates the item (DynamoDB emits one); the publisher ignores it anyway."""
    change = record["dynamodb"]
    return record["eventName"] == "INSERT" and set(change.get("NewImage", {})) == {"callId"}


class Stream:
    """The calls table's stream: the records written since the last :meth:`read`."""

    def __init__(self, table: str) -> None:
        self.arn = aws.client("dynamodb").describe_table(TableName=table)["Table"][
            "LatestStreamArn"
        ]
        self._iterators: dict[str, str | None] = {}

    def read(self) -> list[dict[str, Any]]:
        streams = aws.client("dynamodbstreams")
        shards = streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        records: list[dict[str, Any]] = []
        for shard in shards:
            iterator = (
                self._iterators.get(shard["ShardId"])
                or streams.get_shard_iterator(
                    StreamArn=self.arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            )
            while iterator:
                page = streams.get_records(ShardIterator=iterator)
                records.extend(r for r in page.get("Records", []) if not _moto_key_only(r))
                iterator = page.get("NextShardIterator") or iterator
                self._iterators[shard["ShardId"]] = iterator
                if not page.get("Records"):
                    break
        return records

    def images(self) -> list[tuple[str, StoredCall | None, StoredCall | None]]:
        """(eventName, old, new) of each new record, images parsed as the publisher does."""
        out = []
        for record in self.read():
            change = record["dynamodb"]
            old, new = change.get("OldImage"), change.get("NewImage")
            out.append(
                (
                    record["eventName"],
                    parse_item(old) if old else None,
                    parse_item(new) if new else None,
                )
            )
        return out


@pytest.fixture
def calls_table(monkeypatch: pytest.MonkeyPatch, aws_mock: None) -> str:
    """The calls table as the template defines it, with its stream (new and old images)."""
    # botocore's account-based DynamoDB Streams endpoint is not one in-process moto routes.
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    aws.reset_clients()
    aws.client("dynamodb").create_table(
        TableName=CALLS_TABLE,
        KeySchema=[{"AttributeName": "callId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "callId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return CALLS_TABLE


@pytest.fixture
def stream(calls_table: str) -> Stream:
    return Stream(calls_table)


@pytest.fixture
def store(calls_table: str) -> CallStore:
    return CallStore(calls_table, clock=Clock())


def raw_item(table: str, key: str = CALL_ID) -> dict[str, Any]:
    return aws.client("dynamodb").get_item(
        TableName=table, Key={"callId": {"S": key}}, ConsistentRead=True
    )["Item"]


# -- save: the four outcomes --------------------------------------------------------------------


def test_first_save_creates_version_1_with_every_attribute(store, calls_table, stream):
    # Given an empty table
    call = enriched("ONGOING", "fp-1", duration=12)
    # When the call is saved, with the request's context and entry path
    result = store.save(call, context={"orderId": "o-1"}, entry_path="queue")
    # Then it is created as version 1, enriched, with no previous status and no failure
    assert result.outcome is WriteOutcome.CREATED
    assert result.outcome.wrote
    stored = result.stored
    assert (stored.version, stored.state, stored.status) == (1, "enriched", "ONGOING")
    assert stored.previous_status is None
    assert stored.failure is None
    assert stored.record == call.model_dump(mode="json", by_alias=True)
    assert (stored.context, stored.entry_path) == ({"orderId": "o-1"}, "queue")
    # And the item holds the documented attributes (and no TTL: ttl_days is 0)
    item = raw_item(calls_table)
    assert item["callId"] == {"S": CALL_ID}
    assert item["state"] == {"S": "enriched"}
    assert item["version"] == {"N": "1"}
    assert item["fingerprint"] == {"S": "fp-1"}
    assert item["status"] == {"S": "ONGOING"}
    assert item["schemaVersion"] == {"S": STORED_ITEM_SCHEMA_VERSION} == {"S": "2.0.0"}
    assert item["createdAt"] == item["updatedAt"] == {"S": "2026-11-26T10:00:00Z"}
    assert item["record"]["M"]["debitAmount"] == {"S": "0.1234"}
    assert item["record"]["M"]["duration"] == {"N": "12"}
    assert item["record"]["M"]["rate"] == {"N": "0.25"}  # a float reaches DynamoDB as a number
    assert item["entryPath"] == {"S": "queue"}
    assert "expiresAt" not in item
    assert "failure" not in item
    assert "publishedVersion" not in item
    # And the stream announces the new item, exactly as the write answered it
    assert stream.images() == [("INSERT", None, stored)]


def test_changed_fingerprint_updates_to_next_version(store, stream):
    # Given a stored ONGOING version
    first = store.save(enriched("ONGOING", "fp-1")).stored
    stream.read()
    # When a changed record arrives
    result = store.save(enriched("FINAL", "fp-2", duration=42))
    # Then it replaces the record as version 2, remembering the previous status
    assert result.outcome is WriteOutcome.UPDATED
    assert result.stored.version == 2
    assert result.stored.previous_status == "ONGOING"
    assert result.stored.created_at == T0
    assert result.stored.updated_at == T0 + timedelta(minutes=1)
    assert store.get(CALL_ID) == result.stored
    # And the stream carries the change from version 1 to version 2
    assert stream.images() == [("MODIFY", first, result.stored)]


def test_same_fingerprint_writes_nothing(store, calls_table, stream, spy):
    # Given a stored version
    store.save(enriched("FINAL", "fp-1"))
    before = raw_item(calls_table)
    stream.read()
    store._client = spy(store.client)
    # When the identical record is saved again (a redelivery, another entry path)
    result = store.save(enriched("FINAL", "fp-1"), context={"other": True}, entry_path="api")
    # Then nothing changes, with exactly one (refused) UpdateItem and no read
    assert result.outcome is WriteOutcome.UNCHANGED
    assert not result.outcome.wrote
    assert result.stored.version == 1
    assert raw_item(calls_table) == before
    assert [name for name, _ in store._client.calls] == ["update_item"]
    # And no stream record: nothing is announced twice
    assert stream.read() == []


def test_same_ongoing_record_writes_nothing(store, stream):
    # Given a stored ONGOING version
    store.save(enriched("ONGOING", "fp-1"))
    stream.read()
    # When a re-check finds the call unchanged
    result = store.save(enriched("ONGOING", "fp-1"))
    # Then nothing is written
    assert result.outcome is WriteOutcome.UNCHANGED
    assert result.stored.status == "ONGOING"
    assert stream.read() == []


@pytest.mark.parametrize("incoming", ["ONGOING", "UNKNOWN", "SOMETHING-NEW"])
def test_final_is_never_regressed(store, calls_table, stream, incoming):
    # Given a stored FINAL (version 2)
    store.save(enriched("ONGOING", "fp-1"))
    final = enriched("FINAL", "fp-2", duration=30)
    store.save(final)
    before = raw_item(calls_table)
    stream.read()
    # When any non-FINAL record arrives (an old re-check, a redelivery)
    result = store.save(enriched(incoming, "fp-3"))
    # Then the write is refused and answers the stored FINAL, record included
    assert result.outcome is WriteOutcome.REFUSED_REGRESSION
    assert not result.outcome.wrote
    assert (result.stored.status, result.stored.version) == ("FINAL", 2)
    assert result.stored.record == final.model_dump(mode="json", by_alias=True)
    # And nothing was written
    assert raw_item(calls_table) == before
    assert stream.read() == []


def test_final_with_a_different_fingerprint_is_a_correction(store):
    # Given a stored FINAL
    store.save(enriched("FINAL", "fp-1"))
    # When Sinch returns a corrected FINAL record
    result = store.save(enriched("FINAL", "fp-2"))
    # Then it is accepted as a new version
    assert result.outcome is WriteOutcome.UPDATED
    assert result.stored.version == 2
    assert result.stored.previous_status == "FINAL"


def test_versions_increment_by_one_per_change(store):
    # Given a call that progresses through several records
    records = [("ONGOING", "a"), ("ONGOING", "b"), ("ONGOING", "b"), ("FINAL", "c")]
    # When each is saved / Then versions are consecutive, unchanged records skip none
    versions = [store.save(enriched(status, fp)).stored.version for status, fp in records]
    assert versions == [1, 2, 2, 3]
    assert store.get(CALL_ID).version == 3


def test_each_write_is_exactly_one_update_item(store, spy):
    # Given a store counting its DynamoDB calls
    store._client = spy(store.client)
    # When a call is created, updated, left unchanged, refused a regression and failed
    for status, fp in [("ONGOING", "a"), ("ONGOING", "b"), ("ONGOING", "b")]:
        store.save(enriched(status, fp))
    store.fail(CALL_ID, failure())
    store.save(enriched("FINAL", "c"))
    store.save(enriched("ONGOING", "d"))
    store.fail(CALL_ID, failure())
    # Then each write cost one UpdateItem and nothing else (no read first)
    assert [name for name, _ in store._client.calls] == ["update_item"] * 7


# -- fail: failure states -----------------------------------------------------------------------


def test_failure_of_a_call_never_stored_creates_a_failed_item(store, calls_table, stream):
    # Given an empty table
    lost = failure()
    # When the call's failure is stored
    result = store.fail(CALL_ID, lost)
    # Then the item is in the failed state, with the failure and no version
    assert result.outcome is WriteOutcome.FAILED
    assert result.outcome.wrote
    assert result.stored.state == "failed"
    assert result.stored.failure == lost
    assert (result.stored.version, result.stored.record, result.stored.status) == (None, None, None)
    assert result.stored.created_at == T0
    item = raw_item(calls_table)
    assert item["failure"]["M"]["reason"] == {"S": "call-not-found"}
    assert item["failure"]["M"]["sinchErrorCode"] == {"N": "40400"}
    assert item["schemaVersion"] == {"S": STORED_ITEM_SCHEMA_VERSION}
    # And the stream announces it
    assert stream.images() == [("INSERT", None, result.stored)]


def test_a_failure_keeps_the_stored_record(store, stream):
    # Given a stored ONGOING version
    version = store.save(enriched("ONGOING", "fp-1", duration=5)).stored
    stream.read()
    # When a later attempt fails for good (say Sinch now answers 404)
    result = store.fail(CALL_ID, failure())
    # Then the failure is stored alongside the version, which stays as it was
    assert result.outcome is WriteOutcome.FAILED
    stored = result.stored
    assert stored.state == "failed"
    assert stored.failure == failure()
    assert (stored.version, stored.status, stored.fingerprint) == (1, "ONGOING", "fp-1")
    assert (stored.record, stored.updated_at) == (version.record, version.updated_at)
    assert stream.images() == [("MODIFY", version, stored)]


def test_the_same_failure_twice_writes_once(store, stream):
    # Given a stored failure
    store.fail(CALL_ID, failure())
    stream.read()
    # When the same failure happens again, later (a redelivered or re-posted message)
    again = failure(failed_at=T0 + timedelta(hours=1))
    assert again.fingerprint == failure().fingerprint
    result = store.fail(CALL_ID, again)
    # Then nothing is written: the stored failure (with its first time) stands
    assert result.outcome is WriteOutcome.UNCHANGED
    assert not result.outcome.wrote
    assert result.stored.failure == failure()
    assert stream.read() == []


def test_a_different_failure_replaces_the_stored_one(store, stream):
    # Given a stored not-found failure
    store.fail(CALL_ID, failure())
    stream.read()
    # When the call later fails differently
    other = failure(errors.InvalidRecordError("record does not validate"))
    result = store.fail(CALL_ID, other)
    # Then the new failure is stored (and announced)
    assert result.outcome is WriteOutcome.FAILED
    assert result.stored.failure == other
    assert [(name, new.failure) for name, _, new in stream.images()] == [("MODIFY", other)]


def test_a_failure_never_turns_a_final_call_back(store, calls_table, stream):
    # Given a stored FINAL version
    store.save(enriched("FINAL", "fp-1"))
    before = raw_item(calls_table)
    stream.read()
    # When an attempt for the call fails for good
    result = store.fail(CALL_ID, failure())
    # Then the FINAL stands: nothing written, the answer is the stored FINAL
    assert result.outcome is WriteOutcome.KEPT_FINAL
    assert not result.outcome.wrote
    assert result.stored.is_final
    assert (result.stored.state, result.stored.failure) == ("enriched", None)
    assert raw_item(calls_table) == before
    assert stream.read() == []


def test_a_later_final_version_supersedes_a_failure(store, calls_table, stream):
    # Given an ONGOING version, then a failure
    store.save(enriched("ONGOING", "fp-1"))
    failed = store.fail(CALL_ID, failure()).stored
    stream.read()
    # When the FINAL record is stored
    result = store.save(enriched("FINAL", "fp-2"))
    # Then it is version 2, enriched, and the failure is gone from the item
    assert result.outcome is WriteOutcome.UPDATED
    assert (result.stored.version, result.stored.state) == (2, "enriched")
    assert result.stored.failure is None
    assert "failure" not in raw_item(calls_table)
    # And the stream's change goes from the failure to the version
    assert stream.images() == [("MODIFY", failed, result.stored)]


def test_a_version_of_a_call_that_only_failed_is_version_1(store):
    # Given a call whose only state is a failure (no version)
    store.fail(CALL_ID, failure())
    # When it is later enriched
    result = store.save(enriched("FINAL", "fp-1"))
    # Then that is its first version, with no previous status, and the failure is removed
    assert result.outcome is WriteOutcome.CREATED
    assert (result.stored.version, result.stored.previous_status) == (1, None)
    assert (result.stored.state, result.stored.failure) == ("enriched", None)
    assert result.stored.created_at == T0  # the item's first write


def test_failure_of_a_message_without_a_call_id_gets_a_one_day_ttl(calls_table):
    # Given a store that keeps calls 30 days
    store = CallStore(calls_table, ttl_days=30, clock=Clock())
    key = message_key("m-1")
    bad = failure(errors.MalformedMessageError("message body is empty"), call_id=None)
    # When a malformed message's failure is stored under its message key
    result = store.fail(key, bad)
    # Then it expires one day later, whatever the calls' TTL
    assert key == "msg:m-1"
    assert result.outcome is WriteOutcome.FAILED
    expected = int(T0.timestamp()) + MESSAGE_FAILURE_TTL_SECONDS
    assert MESSAGE_FAILURE_TTL_SECONDS == 86_400
    assert raw_item(calls_table, key)["expiresAt"] == {"N": str(expected)}
    assert result.stored.expires_at == expected
    assert result.stored.failure == bad


def test_message_key_failure_expires_even_without_a_calls_ttl(store, calls_table):
    store.fail(message_key("m-2"), failure(call_id=None))
    expected = int(T0.timestamp()) + MESSAGE_FAILURE_TTL_SECONDS
    assert raw_item(calls_table, "msg:m-2")["expiresAt"] == {"N": str(expected)}


# -- note_retry: the trace a retried call leaves --------------------------------------------------


def trace(attempt: int = 2) -> RetryTrace:
    error = errors.SinchUnavailableError("Sinch answered 503", http_status=503)
    return retry_trace(error, at=T0, attempt=attempt, source_id="msg-1")


def test_a_retry_of_a_call_never_stored_leaves_a_trace_and_announces_nothing(store, stream):
    # Given an empty table / When a call is given back to SQS after a transient error
    assert store.note_retry(CALL_ID, trace()) is True
    # Then its item says why (state retrying), with no version and no failure
    stored = store.get(CALL_ID)
    assert (stored.state, stored.version, stored.failure) == ("retrying", None, None)
    assert stored.last_error == trace()
    # And its stream record announces nothing
    ((_, old, new),) = stream.images()
    assert events_for_change(old, new) == []


def test_a_retry_trace_keeps_a_stored_version_and_is_removed_by_the_next_outcome(store):
    # Given a stored ONGOING version, then a retry
    store.save(enriched("ONGOING", "fp-1"))
    store.note_retry(CALL_ID, trace())
    noted = store.get(CALL_ID)
    assert (noted.state, noted.version, noted.last_error) == ("enriched", 1, trace())
    # When the next version is stored / Then the trace is gone
    assert store.save(enriched("ONGOING", "fp-2")).stored.last_error is None
    # And a failure removes a later trace too
    store.note_retry(CALL_ID, trace(3))
    assert store.fail(CALL_ID, failure()).stored.last_error is None


def test_a_retry_never_touches_a_final_call(store, calls_table, stream):
    store.save(enriched("FINAL", "fp-1"))
    before = raw_item(calls_table)
    stream.read()
    assert store.note_retry(CALL_ID, trace()) is False
    assert raw_item(calls_table) == before
    assert stream.read() == []


# -- FailureRecorder.record_unpublishable: the publisher's only write --------------------------


@pytest.fixture
def recorder(calls_table: str) -> FailureRecorder:
    return FailureRecorder(calls_table)


def too_large(call_id: str = CALL_ID) -> Failure:
    return failure_from_error(
        errors.EventTooLargeError("Call Enriched event is 300000 bytes"),
        failed_at=T0,
        call_id=call_id,
    )


def test_an_unpublishable_version_becomes_the_calls_failure(store, recorder, stream):
    # Given a stored FINAL version
    version = store.save(enriched("FINAL", "fp-1")).stored
    stream.read()
    # When the publisher records that its event can never be published
    written = recorder.record_unpublishable(CALL_ID, 1, too_large())
    # Then the failure is stored next to the version, which stays
    assert written is True
    stored = store.get(CALL_ID)
    assert stored.state == "failed"
    assert stored.failure == too_large()
    assert (stored.version, stored.record) == (1, version.record)
    assert [(name, new.failure.reason) for name, _, new in stream.images()] == [
        ("MODIFY", "event-too-large")
    ]
    # And recording it again writes nothing
    assert recorder.record_unpublishable(CALL_ID, 1, too_large()) is False
    assert stream.read() == []


def test_an_unpublishable_version_that_was_superseded_is_not_recorded(store, recorder, stream):
    # Given version 2 stored after version 1
    store.save(enriched("ONGOING", "fp-1"))
    store.save(enriched("FINAL", "fp-2"))
    stream.read()
    # When the publisher reports version 1's event unpublishable (a late stream record)
    # Then nothing is written: version 2 is what the call now is
    assert recorder.record_unpublishable(CALL_ID, 1, too_large()) is False
    assert store.get(CALL_ID).failure is None
    assert stream.read() == []


def test_an_unpublishable_version_of_a_call_no_longer_stored_writes_nothing(store, recorder):
    # Given no item for the call (removed by its TTL, or by an operator, after its version's
    # stream record was written)
    # When the publisher reports that version's event unpublishable
    # Then nothing is written and the answer says so ("conditional on that version still
    # being stored"): not a transient error that would block the stream shard
    assert recorder.record_unpublishable(CALL_ID, 1, too_large()) is False
    assert store.get(CALL_ID) is None


# -- TTL -----------------------------------------------------------------------------------------


def test_ttl_attribute_only_when_configured(calls_table):
    # Given a store keeping records 30 days
    store = CallStore(calls_table, ttl_days=30, clock=Clock())
    # When a call is saved, then failed
    saved = store.save(enriched("ONGOING", "a"))
    # Then expiresAt is now + 30 days, in epoch seconds
    expected = int((T0 + timedelta(days=30)).timestamp())
    assert raw_item(calls_table)["expiresAt"] == {"N": str(expected)}
    assert saved.stored.expires_at == expected
    # And a failure of the call pushes it from its own time (not the one-day message TTL)
    failed = store.fail(CALL_ID, failure())
    assert failed.stored.expires_at == expected + 60


def test_turning_ttl_off_removes_it_on_the_next_write(calls_table):
    # Given a version stored with a TTL
    CallStore(calls_table, ttl_days=30, clock=Clock()).save(enriched("ONGOING", "a"))
    # When the next version is stored with the TTL turned off
    CallStore(calls_table, clock=Clock()).save(enriched("FINAL", "b"))
    # Then the item no longer expires
    assert "expiresAt" not in raw_item(calls_table)


def test_negative_ttl_is_refused():
    with pytest.raises(ValueError, match="ttl_days"):
        CallStore("test-calls", ttl_days=-1)


# -- reads ---------------------------------------------------------------------------------------


def test_get_round_trips_the_record(store):
    # Given a stored record with ints, strings, floats and nested maps
    call = enriched("FINAL", "a", duration=7)
    store.save(call, context={"nested": {"n": 1.5, "list": [1, "two", None]}})
    # When it is read back / Then the record and context are the same JSON
    stored = store.get(CALL_ID, consistent=True)
    assert isinstance(stored, StoredCall)
    assert stored.record == call.model_dump(mode="json", by_alias=True)
    assert stored.context == {"nested": {"n": 1.5, "list": [1, "two", None]}}
    assert stored.created_at.tzinfo is not None


def test_get_of_an_unknown_call_is_none(store):
    assert store.get("nope") is None


def test_get_many_pages_by_100_and_skips_records(store, spy):
    # Given 150 stored calls among 250 asked (with a duplicate)
    stored_ids = [f"call-{i:03d}" for i in range(150)]
    seed_items(store, stored_ids)
    asked = [f"call-{i:03d}" for i in range(250)] + ["call-000"]
    store._client = spy(store.client)
    # When they are read in one go
    found = store.get_many(asked)
    # Then the stored ones come back as summaries (no record, no failure), in 3 pages
    assert set(found) == set(stored_ids)
    assert all(call.record is None and call.version == 1 for call in found.values())
    assert store._client.count("batch_get_item") == 3
    pages = [kw["RequestItems"]["test-calls"] for _, kw in store._client.calls]
    assert [len(page["Keys"]) for page in pages] == [100, 100, 50]
    assert "#record" not in pages[0]["ProjectionExpression"]
    assert "#failure" not in pages[0]["ProjectionExpression"]


def test_get_many_tells_a_failed_call_from_an_enriched_one(store):
    # Given one FINAL call and one whose last outcome was a failure
    store.save(enriched("FINAL", "a", call_id="ok"))
    store.fail("lost", failure(call_id="lost"))
    # When both are read / Then their summaries carry their state
    found = store.get_many(["ok", "lost"])
    assert (found["ok"].state, found["ok"].is_final) == ("enriched", True)
    assert (found["lost"].state, found["lost"].version) == ("failed", None)
    assert found["lost"].failure is None  # a summary: the failure is not read


def test_get_many_of_nothing_asks_nothing(store, spy):
    store._client = spy(store.client)
    assert store.get_many([]) == {}
    assert store._client.calls == []


def seed_items(store: CallStore, call_ids: list[str]) -> None:
    """Store one call through the store, then copies of its item (fast: 25 per request)."""
    store.save(enriched("FINAL", "a", call_id=call_ids[0]))
    template = raw_item(store.table_name, call_ids[0])
    client = aws.client("dynamodb")
    rest = call_ids[1:]
    for start in range(0, len(rest), 25):
        puts = [
            {"PutRequest": {"Item": {**template, "callId": {"S": call_id}}}}
            for call_id in rest[start : start + 25]
        ]
        client.batch_write_item(RequestItems={store.table_name: puts})


class _Unprocessing:
    """Leaves the last ``hold`` keys of a BatchGetItem unprocessed, ``times`` times."""

    def __init__(self, inner: Any, *, hold: int, times: int) -> None:
        self.inner = inner
        self.hold = hold
        self.times = times
        self.requests: list[int] = []

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        (table, request), *_ = RequestItems.items()
        self.requests.append(len(request["Keys"]))
        if self.times == 0:
            return self.inner.batch_get_item(RequestItems=RequestItems)
        self.times -= 1
        keys, held = request["Keys"][: -self.hold], request["Keys"][-self.hold :]
        response: dict[str, Any] = {"Responses": {table: []}}
        if keys:
            response = self.inner.batch_get_item(RequestItems={table: {**request, "Keys": keys}})
        response["UnprocessedKeys"] = {table: {**request, "Keys": held}}
        return response


def test_get_many_retries_unprocessed_keys_with_backoff(calls_table):
    # Given 10 stored calls and a table that leaves 4 keys unprocessed twice
    ids = [f"call-{i}" for i in range(10)]
    seed_items(CallStore(calls_table, clock=Clock()), ids)
    client = _Unprocessing(aws.client("dynamodb"), hold=4, times=2)
    sleeps: list[float] = []
    store = CallStore(calls_table, client=client, sleep=sleeps.append, random=lambda: 1.0)
    # When they are read
    found = store.get_many(ids)
    # Then the unprocessed keys were asked again, after growing backoffs, and all found
    assert set(found) == set(ids)
    assert client.requests == [10, 4, 4]
    assert len(sleeps) == 2
    assert 0 < sleeps[0] < sleeps[1]


def test_get_many_gives_up_on_keys_left_unprocessed(calls_table):
    # Given a table that never processes the last key
    client = _Unprocessing(aws.client("dynamodb"), hold=1, times=100)
    sleeps: list[float] = []
    store = CallStore(calls_table, client=client, sleep=sleeps.append, batch_get_attempts=3)
    # When a batch is read / Then it fails transiently rather than pretend the key is absent
    with pytest.raises(AwsUnavailableError, match="1 keys unprocessed after 3 attempts"):
        store.get_many(["a", "b"])
    assert client.requests == [2, 1, 1]
    assert len(sleeps) == 2


# -- errors --------------------------------------------------------------------------------------


def _stubbed_store() -> tuple[CallStore, Stubber]:
    client = boto3.client("dynamodb", region_name="eu-west-1")
    return CallStore("test-calls", client=client, clock=Clock()), Stubber(client)


WRITES = {
    "save": lambda store: store.save(enriched()),
    "fail": lambda store: store.fail(CALL_ID, failure()),
    "record_unpublishable": lambda store: FailureRecorder(
        store.table_name, client=store.client
    ).record_unpublishable(CALL_ID, 1, too_large()),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ProvisionedThroughputExceededException", 400),
        ("ThrottlingException", 400),
        ("RequestLimitExceeded", 400),
        ("InternalServerError", 500),
        ("ServiceUnavailable", 503),
        ("ResourceNotFoundException", 400),  # a deployment fault: redrivable, not discarded
        ("AccessDeniedException", 400),
    ],
)
def test_dynamodb_failures_of_a_write_are_transient(code, status, write):
    # Given DynamoDB answering with an error (after botocore's own retries)
    store, stubber = _stubbed_store()
    stubber.add_client_error("update_item", service_error_code=code, http_status_code=status)
    # When a write is made
    with stubber, pytest.raises(AwsUnavailableError) as caught:
        write(store)
    # Then the failure is transient and names the operation and code
    assert caught.value.error_class is ErrorClass.TRANSIENT
    assert f"DynamoDB UpdateItem failed: {code}" in caught.value.message


@pytest.mark.parametrize(
    "exception",
    [
        ReadTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com"),
        ConnectTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com"),
    ],
)
def test_timeouts_are_transient(exception):
    # Given a client whose calls time out
    class TimingOut:
        def get_item(self, **_: Any) -> Any:
            raise exception

        def batch_get_item(self, **_: Any) -> Any:
            raise exception

        def update_item(self, **_: Any) -> Any:
            raise exception

    store = CallStore("test-calls", client=TimingOut())
    # When reading or writing / Then the error is AwsUnavailableError
    with pytest.raises(AwsUnavailableError, match="Timeout"):
        store.get(CALL_ID)
    with pytest.raises(AwsUnavailableError):
        store.get_many([CALL_ID])
    with pytest.raises(AwsUnavailableError):
        store.save(enriched())
    with pytest.raises(AwsUnavailableError):
        store.fail(CALL_ID, failure())


READS = {
    "get_item": lambda store: store.get(CALL_ID),
    "batch_get_item": lambda store: store.get_many([CALL_ID]),
}


@pytest.mark.parametrize(("operation", "read"), READS.items(), ids=READS.keys())
def test_throttled_reads_are_transient(operation, read):
    # Given DynamoDB throttling a read / When it is made / Then the error is transient
    store, stubber = _stubbed_store()
    stubber.add_client_error(operation, service_error_code="ProvisionedThroughputExceededException")
    with stubber, pytest.raises(AwsUnavailableError):
        read(store)


def test_item_over_400_kb_is_permanent(store):
    # Given a record too big for one DynamoDB item
    class Huge(FakeEnriched):
        custom: str = "x" * 450_000

    huge = Huge(call_id=CALL_ID, status="FINAL", provenance=_Provenance(fingerprint="big"))
    # When it is saved / Then DynamoDB's refusal is permanent: retrying cannot help
    with pytest.raises(PermanentError) as caught:
        store.save(huge)
    assert caught.value.error_class is ErrorClass.PERMANENT
    assert "ValidationException" in caught.value.message
    assert "xxxx" not in caught.value.message


@pytest.mark.parametrize(
    "attributes",
    [
        {"version": {"N": "0"}},  # versions start at 1
        {"state": {"S": "lost"}},  # enriched or failed only
        {"createdAt": {"S": "yesterday"}},
        {"failure": {"M": {"reason": {"S": "x"}}}},  # a failure without its facts
    ],
    ids=["version", "state", "createdAt", "failure"],
)
def test_a_corrupt_stored_item_is_reported_without_its_content(store, calls_table, attributes):
    # Given an item someone wrote by hand, with one bad attribute
    (name,) = attributes
    aws.client("dynamodb").put_item(
        TableName=calls_table,
        Item={"callId": {"S": "hand-made"}, "status": {"S": "FINAL"}, **attributes},
    )
    # When it is read / Then the error is permanent and names the call and the bad field
    with pytest.raises(PermanentError, match=rf"hand-made is invalid \(fields: {name}\)"):
        store.get("hand-made")


def test_parse_item_ignores_the_old_publish_marker():
    # Given an item of schema 1.x, with its publishedVersion
    item = {
        "callId": {"S": "old"},
        "version": {"N": "3"},
        "status": {"S": "FINAL"},
        "publishedVersion": {"N": "3"},
        "schemaVersion": {"S": "1.0.0"},
    }
    # When it is parsed / Then it reads as an enriched call, the marker ignored
    stored = parse_item(item)
    assert (stored.call_id, stored.version, stored.state) == ("old", 3, "enriched")
    assert not hasattr(stored, "published_version")


# -- the shared clients (call_enricher.aws) -----------------------------------------------------


def test_clients_are_created_once_even_under_concurrent_first_use():
    # Given 16 threads asking for the DynamoDB client at the same moment
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    barrier = Barrier(16)

    def first_use(_: int) -> int:
        barrier.wait()
        return id(aws.client("dynamodb"))

    with ThreadPoolExecutor(16) as pool:
        ids = set(pool.map(first_use, range(16)))
    # Then they all got the same, cached client
    assert len(ids) == 1
    assert id(aws.client("dynamodb")) in ids
    assert aws.client("events") is not aws.client("dynamodb")


def test_client_configuration_fits_the_worker_pool(monkeypatch):
    # Given 20 worker threads configured
    from call_enricher.settings import get_settings

    monkeypatch.setenv("WORKER_THREADS", "20")
    get_settings.cache_clear()
    try:
        config = aws.client("dynamodb").meta.config
    finally:
        get_settings.cache_clear()
    # Then the pool has room for every worker, retries are botocore's standard mode,
    # and the timeouts are short
    assert config.max_pool_connections == 20 + aws.POOL_MARGIN
    assert config.retries == {"mode": "standard", "total_max_attempts": aws.MAX_ATTEMPTS}
    assert config.connect_timeout == aws.CONNECT_TIMEOUT_SECONDS
    assert config.read_timeout == aws.READ_TIMEOUT_SECONDS


def test_clients_honour_aws_endpoint_url(monkeypatch):
    # Given the local stack's endpoint in the environment (no request is made)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5999")
    aws.reset_clients()
    # Then the clients point at it, in the configured region
    client = aws.client("dynamodb")
    assert client.meta.endpoint_url == "http://127.0.0.1:5999"
    assert client.meta.region_name == "eu-west-1"
