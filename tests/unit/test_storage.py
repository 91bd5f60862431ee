"""The calls table: conditional monotonic upsert, publish marker, TTL, batch reads, errors.

DynamoDB is in-process moto (the real request/condition/expression semantics); failures AWS
produces but moto does not are injected with botocore's Stubber or by wrapping the client.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from botocore.stub import Stubber
from pydantic import BaseModel, ConfigDict, Field

from call_enricher import aws
from call_enricher.errors import AwsUnavailableError, ErrorClass, PermanentError
from call_enricher.storage import (
    STORED_ITEM_SCHEMA_VERSION,
    CallStore,
    SaveOutcome,
    StoredCall,
)

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


class Clock:
    """A clock that moves forward one minute per reading."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        current = self.now
        self.now += timedelta(minutes=1)
        return current


@pytest.fixture
def store(calls_table: str) -> CallStore:
    return CallStore(calls_table, clock=Clock())


def raw_item(table: str, call_id: str = CALL_ID) -> dict[str, Any]:
    return aws.client("dynamodb").get_item(
        TableName=table, Key={"callId": {"S": call_id}}, ConsistentRead=True
    )["Item"]


# -- save: the four outcomes --------------------------------------------------------------------


def test_first_save_creates_version_1_with_every_attribute(store, calls_table):
    # Given an empty table
    call = enriched("ONGOING", "fp-1", duration=12)
    # When the call is saved
    result = store.save(call)
    # Then it is created as version 1, not yet published, with no previous status
    assert result.outcome is SaveOutcome.CREATED
    assert result.stored.version == 1
    assert result.previous_status is None
    assert result.needs_publish is True
    assert result.stored.record == call.model_dump(mode="json", by_alias=True)
    # And the item holds the documented attributes (and no TTL: ttl_days is 0)
    item = raw_item(calls_table)
    assert item["callId"] == {"S": CALL_ID}
    assert item["version"] == {"N": "1"}
    assert item["fingerprint"] == {"S": "fp-1"}
    assert item["status"] == {"S": "ONGOING"}
    assert item["publishedVersion"] == {"N": "0"}
    assert item["schemaVersion"] == {"S": STORED_ITEM_SCHEMA_VERSION}
    assert item["createdAt"] == item["updatedAt"] == {"S": "2026-11-26T10:00:00.000Z"}
    assert item["record"]["M"]["debitAmount"] == {"S": "0.1234"}
    assert item["record"]["M"]["duration"] == {"N": "12"}
    assert "expiresAt" not in item


def test_changed_fingerprint_updates_to_next_version(store, calls_table):
    # Given a stored ONGOING version
    store.save(enriched("ONGOING", "fp-1"))
    # When a changed record arrives
    result = store.save(enriched("FINAL", "fp-2", duration=42))
    # Then it replaces the record as version 2, remembering the previous status
    assert result.outcome is SaveOutcome.UPDATED
    assert result.stored.version == 2
    assert result.previous_status == "ONGOING"
    assert result.stored.created_at == T0
    assert result.stored.updated_at == T0 + timedelta(minutes=1)
    assert result.needs_publish is True
    stored = store.get(CALL_ID)
    assert stored == result.stored


def test_same_fingerprint_is_a_no_op(store, calls_table, spy):
    # Given a stored version
    store.save(enriched("FINAL", "fp-1"))
    before = raw_item(calls_table)
    store._client = spy(store.client)
    # When the identical record is saved again
    result = store.save(enriched("FINAL", "fp-1"))
    # Then nothing changes, with exactly one (refused) UpdateItem and no read
    assert result.outcome is SaveOutcome.UNCHANGED
    assert result.stored.version == 1
    assert raw_item(calls_table) == before
    assert [name for name, _ in store._client.calls] == ["update_item"]


def test_final_is_never_regressed_by_a_stale_ongoing(store, calls_table):
    # Given a stored FINAL record (published)
    store.save(enriched("ONGOING", "fp-1"))
    store.save(enriched("FINAL", "fp-2"))
    store.mark_published(CALL_ID, 2)
    before = raw_item(calls_table)
    # When a stale ONGOING record arrives (an old re-check, a redelivery)
    result = store.save(enriched("ONGOING", "fp-3"))
    # Then the write is refused, the FINAL stays, and nothing needs publishing
    assert result.outcome is SaveOutcome.REFUSED_REGRESSION
    assert result.stored.status == "FINAL"
    assert result.stored.version == 2
    assert result.needs_publish is False
    assert raw_item(calls_table) == before


@pytest.mark.parametrize("incoming", ["ONGOING", "UNKNOWN", "SOMETHING-NEW"])
def test_no_non_final_status_replaces_a_final(store, incoming):
    # Given a stored FINAL
    store.save(enriched("FINAL", "fp-1"))
    # When any non-FINAL record arrives / Then it is refused
    assert store.save(enriched(incoming, "fp-2")).outcome is SaveOutcome.REFUSED_REGRESSION
    assert store.get(CALL_ID).status == "FINAL"


def test_refused_regression_reports_an_unpublished_stored_final(store):
    # Given a stored FINAL whose event was never published (crash after the write)
    store.save(enriched("ONGOING", "fp-1"))
    final = enriched("FINAL", "fp-2", duration=30)
    store.save(final)
    # When a stale ONGOING record arrives
    result = store.save(enriched("ONGOING", "fp-3"))
    # Then it is refused, but the stored FINAL (with its record) is reported unpublished
    assert result.outcome is SaveOutcome.REFUSED_REGRESSION
    assert result.needs_publish is True
    assert result.stored.version == 2
    assert result.stored.record == final.model_dump(mode="json", by_alias=True)
    assert result.previous_status == "ONGOING"


def test_final_with_a_different_fingerprint_is_a_correction(store):
    # Given a stored FINAL
    store.save(enriched("FINAL", "fp-1"))
    # When Sinch returns a corrected FINAL record
    result = store.save(enriched("FINAL", "fp-2"))
    # Then it is accepted as a new version
    assert result.outcome is SaveOutcome.UPDATED
    assert result.stored.version == 2
    assert result.previous_status == "FINAL"


def test_versions_increment_by_one_per_change(store):
    # Given a call that progresses through several records
    fingerprints = [("ONGOING", "a"), ("ONGOING", "b"), ("ONGOING", "b"), ("FINAL", "c")]
    # When each is saved / Then versions are consecutive, unchanged records skip none
    versions = [store.save(enriched(status, fp)).stored.version for status, fp in fingerprints]
    assert versions == [1, 2, 2, 3]
    assert store.get(CALL_ID).version == 3


def test_each_save_is_exactly_one_update_item(store, spy):
    # Given a store counting its DynamoDB calls
    store._client = spy(store.client)
    # When a call is created, updated, left unchanged and refused a regression
    for status, fp in [("ONGOING", "a"), ("FINAL", "b"), ("FINAL", "b"), ("ONGOING", "c")]:
        store.save(enriched(status, fp))
    # Then each save cost one UpdateItem and nothing else
    assert [name for name, _ in store._client.calls] == ["update_item"] * 4


# -- the publish marker --------------------------------------------------------------------------


def test_crash_between_save_and_publish_is_published_on_redelivery(store):
    # Given a record stored but never published (the process died before PutEvents)
    store.save(enriched("FINAL", "fp-1"))
    # When the redelivered message saves the same record
    result = store.save(enriched("FINAL", "fp-1"))
    # Then the save is a no-op that still asks for the event: no lost events
    assert result.outcome is SaveOutcome.UNCHANGED
    assert result.needs_publish is True
    assert result.previous_status is None


def test_already_published_version_is_not_published_again(store):
    # Given a stored and published record
    store.save(enriched("FINAL", "fp-1"))
    store.mark_published(CALL_ID, 1)
    # When the same record is saved again (redelivery, another entry path)
    result = store.save(enriched("FINAL", "fp-1"))
    # Then no event is needed: no duplicate events
    assert result.outcome is SaveOutcome.UNCHANGED
    assert result.needs_publish is False
    assert result.stored.published_version == 1


def test_publish_marker_never_goes_down(store):
    # Given versions 1 and 2, with version 2 marked published
    store.save(enriched("ONGOING", "a"))
    store.save(enriched("FINAL", "b"))
    store.mark_published(CALL_ID, 2)
    # When a late marker for version 1 arrives (a slow concurrent worker)
    store.mark_published(CALL_ID, 1)
    store.mark_published(CALL_ID, 2)
    # Then the marker stays at 2
    assert store.get(CALL_ID).published_version == 2


def test_publish_marker_survives_a_new_version(store):
    # Given version 1 published
    store.save(enriched("ONGOING", "a"))
    store.mark_published(CALL_ID, 1)
    # When version 2 is stored
    result = store.save(enriched("FINAL", "b"))
    # Then version 2 needs publishing and the marker still says 1
    assert result.needs_publish is True
    assert result.stored.published_version == 1


def test_marking_a_version_that_is_not_stored_is_a_caller_bug(store):
    # Given version 1 only
    store.save(enriched("FINAL", "a"))
    # When version 2 is marked / Then it is refused loudly and the marker is untouched
    with pytest.raises(PermanentError, match="only version 1 is stored"):
        store.mark_published(CALL_ID, 2)
    assert store.get(CALL_ID).published_version == 0


def test_marking_a_call_no_longer_stored_is_a_no_op(store):
    # Given no item (expired by TTL, say) / When it is marked / Then nothing happens
    store.mark_published("unknown-call", 1)
    assert store.get("unknown-call") is None


# -- TTL -----------------------------------------------------------------------------------------


def test_ttl_attribute_only_when_configured(calls_table):
    # Given a store keeping records 30 days
    store = CallStore(calls_table, ttl_days=30, clock=Clock())
    # When a call is saved
    result = store.save(enriched("FINAL", "a"))
    # Then expiresAt is now + 30 days, in epoch seconds
    expected = int((T0 + timedelta(days=30)).timestamp())
    assert raw_item(calls_table)["expiresAt"] == {"N": str(expected)}
    assert result.stored.expires_at == expected


def test_turning_ttl_off_removes_it_on_the_next_version(calls_table):
    # Given a version stored with a TTL
    CallStore(calls_table, ttl_days=30, clock=Clock()).save(enriched("ONGOING", "a"))
    # When the next version is stored with the TTL turned off
    CallStore(calls_table, clock=Clock()).save(enriched("FINAL", "b"))
    # Then the item no longer expires
    assert "expiresAt" not in raw_item(calls_table)


# -- reads ---------------------------------------------------------------------------------------


def test_get_round_trips_the_record(store):
    # Given a stored record with ints, strings, nulls and nested maps
    call = enriched("FINAL", "a", duration=7)
    store.save(call)
    # When it is read back / Then the record is the same JSON
    stored = store.get(CALL_ID, consistent=True)
    assert isinstance(stored, StoredCall)
    assert stored.record == call.model_dump(mode="json", by_alias=True)
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
    # Then the stored ones come back, without their records, in 3 BatchGetItem pages
    assert set(found) == set(stored_ids)
    assert all(call.record is None and call.version == 1 for call in found.values())
    assert store._client.count("batch_get_item") == 3
    pages = [kw["RequestItems"]["test-calls"]["Keys"] for _, kw in store._client.calls]
    assert [len(keys) for keys in pages] == [100, 100, 50]
    assert (
        "#record"
        not in store._client.calls[0][1]["RequestItems"]["test-calls"]["ProjectionExpression"]
    )


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


def test_get_many_reads_consistently_when_asked(store, spy):
    # Given a stored call
    seed_items(store, ["call-001"])
    store._client = spy(store.client)
    # When it is read by default, then consistently
    assert set(store.get_many(["call-001"])) == {"call-001"}
    assert set(store.get_many(["call-001"], consistent=True)) == {"call-001"}
    # Then only the second BatchGetItem asked for a strongly consistent read
    requests = [kw["RequestItems"]["test-calls"] for _, kw in store._client.calls]
    assert [request.get("ConsistentRead", False) for request in requests] == [False, True]


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
    store = CallStore(calls_table, client=client, sleep=lambda _: None, batch_get_attempts=3)
    # When a batch is read / Then it fails transiently rather than pretend the key is absent
    with pytest.raises(AwsUnavailableError, match="1 keys unprocessed after 3 attempts"):
        store.get_many(["a", "b"])


# -- errors --------------------------------------------------------------------------------------


def _stubbed_store() -> tuple[CallStore, Stubber]:
    client = boto3.client("dynamodb", region_name="eu-west-1")
    return CallStore("test-calls", client=client), Stubber(client)


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
def test_dynamodb_failures_are_transient(code, status):
    # Given DynamoDB answering with an error (after botocore's own retries)
    store, stubber = _stubbed_store()
    stubber.add_client_error("update_item", service_error_code=code, http_status_code=status)
    # When a call is saved
    with stubber, pytest.raises(AwsUnavailableError) as caught:
        store.save(enriched())
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

    store = CallStore("test-calls", client=TimingOut())
    # When reading / Then the error is AwsUnavailableError
    with pytest.raises(AwsUnavailableError, match="Timeout"):
        store.get(CALL_ID)
    with pytest.raises(AwsUnavailableError):
        store.get_many([CALL_ID])


def test_throttled_batch_get_is_transient():
    store, stubber = _stubbed_store()
    stubber.add_client_error(
        "batch_get_item", service_error_code="ProvisionedThroughputExceededException"
    )
    with stubber, pytest.raises(AwsUnavailableError):
        store.get_many([CALL_ID])


def test_throttled_mark_published_is_transient():
    store, stubber = _stubbed_store()
    stubber.add_client_error("update_item", service_error_code="ThrottlingException")
    with stubber, pytest.raises(AwsUnavailableError):
        store.mark_published(CALL_ID, 1)


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


def test_a_corrupt_stored_item_is_reported_without_its_content(store, calls_table):
    # Given an item someone wrote by hand without a version
    aws.client("dynamodb").put_item(
        TableName=calls_table,
        Item={"callId": {"S": "hand-made"}, "status": {"S": "FINAL"}},
    )
    # When it is read / Then the error names the call and the bad fields
    with pytest.raises(PermanentError, match=r"hand-made is invalid \(fields: .*version"):
        store.get("hand-made")


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
