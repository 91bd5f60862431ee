"""The event contracts: committed JSON Schemas are current, and every event we build fits them.

Events are built the way the stream publisher builds them (Sinch sample -> enrichment ->
calls table in moto -> builder from the stored state, or from a change's two images) and
validated against the *committed* schema files with jsonschema (Draft 2020-12), so a model
change that is not regenerated and committed fails here, and so does a builder producing
something the schema does not allow.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from call_enricher import errors
from call_enricher.enrichment import EnrichedCall, enrich_json
from call_enricher.events import (
    DETAIL_TYPE_CALL_ENRICHED,
    DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
    EVENT_SCHEMA_VERSION,
    REASON_NOT_FINAL_IN_TIME,
    call_enriched_event,
    call_enrichment_failed_event,
    events_for_change,
)
from call_enricher.publishing import EventPublisher
from call_enricher.state import Failure, StoredCall, failure_from_error, message_key
from call_enricher.storage import CallStore, WriteOutcome
from call_enricher_tools import schemas

from .conftest import EVENT_SOURCE

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "events" / "schemas"
SAMPLES = sorted((ROOT / "events" / "sinch").glob("*.json"))
CALL_ID = "4398599d1ba84ef3bde0a82dfb61abed"
T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


def validator(filename: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / filename).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


ENRICHED = validator("call-enriched.schema.json")
FAILED = validator("call-enrichment-failed.schema.json")
STORED_ITEM = validator("stored-call-item.schema.json")


def assert_valid(schema: Draft202012Validator, detail: dict[str, Any]) -> None:
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in schema.iter_errors(detail)]
    assert problems == []


def sample(name: str) -> bytes:
    return (ROOT / "events" / "sinch" / name).read_bytes()


def failure(
    error: errors.CallEnricherError | None = None,
    *,
    call_id: str | None = CALL_ID,
    failed_at: datetime = T0,
    **facts: Any,
) -> Failure:
    return failure_from_error(
        error or errors.CallNotFoundError("Call not found", http_status=404),
        failed_at=failed_at,
        call_id=call_id,
        **facts,
    )


def stored_version(status: str = "FINAL", version: int = 1, **fields: Any) -> StoredCall:
    """A stored version of the busy-de sample (a real EnrichedCall record)."""
    record = enrich_json(sample("busy-de.json")).model_dump(mode="json", by_alias=True)
    return StoredCall(
        call_id=record["callId"],
        version=version,
        fingerprint=f"fp-{version}",
        status=status,
        record={**record, "status": status},
        created_at=T0,
        updated_at=T0 + timedelta(minutes=version),
        **fields,
    )


# -- the committed schemas -----------------------------------------------------------------------


def test_committed_schemas_are_generated_from_the_current_models():
    # Given the models and the committed files / When compared / Then nothing is stale
    stale = schemas.stale(SCHEMA_DIR)
    assert stale == [], "run: python -m call_enricher_tools.schemas, then commit"


@pytest.mark.parametrize("spec", schemas.specs(), ids=lambda spec: spec.filename)
def test_each_schema_is_a_valid_draft_2020_12_document_with_a_stable_id(spec):
    document = json.loads((SCHEMA_DIR / spec.filename).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == spec.schema_id
    assert document["title"] == spec.title


def test_the_stored_item_schema_is_the_state_model_of_item_schema_2():
    # Given the stored-item contract / Then it is generated from state.StoredCall, major v2
    (spec,) = [spec for spec in schemas.specs() if spec.filename == "stored-call-item.schema.json"]
    assert spec.model is StoredCall
    assert spec.schema_id.endswith(":v2")
    properties = json.loads((SCHEMA_DIR / spec.filename).read_text())["properties"]
    assert {"state", "failure", "version", "record"} <= set(properties)
    assert "publishedVersion" not in properties


def test_check_mode_fails_on_a_stale_file_and_regeneration_fixes_it(tmp_path, capsys):
    # Given a schema directory with one file hand-edited
    assert schemas.main(["--dir", str(tmp_path)]) == 0
    edited = tmp_path / "call-enriched.schema.json"
    edited.write_text(edited.read_text().replace("Deterministic", "Random"), encoding="utf-8")
    # When checked / Then it exits 1 naming the file
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "call-enriched.schema.json" in capsys.readouterr().err
    # And regenerating makes the check pass again
    assert schemas.main(["--dir", str(tmp_path)]) == 0
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 0


def test_schemas_reject_what_the_contract_forbids():
    # Given a valid failed-event detail
    good = call_enrichment_failed_event(CALL_ID, failure()).detail
    assert_valid(FAILED, good)
    # When required keys are missing or values are off / Then the schema says so
    assert not FAILED.is_valid({k: v for k, v in good.items() if k != "eventId"})
    assert not FAILED.is_valid({**good, "reason": "Not Kebab"})
    assert not FAILED.is_valid({**good, "errorClass": "maybe"})
    assert not FAILED.is_valid({**good, "schemaVersion": "2.0.0"})
    # And unknown keys are allowed (consumers ignore fields added by minor versions)
    assert FAILED.is_valid({**good, "addedInMinor": 1})


def test_the_failure_schema_lists_the_code_s_reasons_and_accepts_new_ones():
    # Given the committed failure schema's reason
    document = json.loads((SCHEMA_DIR / "call-enrichment-failed.schema.json").read_text())
    reason = document["properties"]["reason"]
    # Then its known codes are errors.FailureReason, in order, and the description names each
    (known,) = [branch["enum"] for branch in reason["anyOf"] if "enum" in branch]
    assert known == [r.value for r in errors.FailureReason]
    assert all(f"`{code}`" in reason["description"] for code in known)
    # And a detail with any of them, or with a kebab-case code added later, is valid
    good = call_enrichment_failed_event(CALL_ID, failure()).detail
    for code in [*known, "added-in-a-minor-version"]:
        assert_valid(FAILED, {**good, "reason": code})


# -- Call Enriched -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: path.stem)
def test_every_sample_stored_then_announced_fits_the_schema(path, calls_table):
    # Given a Sinch sample enriched and saved in the calls table
    enriched = enrich_json(path.read_bytes(), region="euc1")
    saved = CallStore(calls_table).save(enriched, context={"orderId": "o-1"}, entry_path="queue")
    # When its event is built from the stored state (as the stream's new image has it)
    stored = CallStore(calls_table).get(enriched.call_id)
    assert stored == saved.stored
    event = call_enriched_event(stored)
    # Then it fits the committed schema, and the record is exactly the enriched public JSON
    assert event.detail_type == DETAIL_TYPE_CALL_ENRICHED
    assert_valid(ENRICHED, event.detail)
    assert event.detail["record"] == enriched.model_dump(mode="json", by_alias=True)
    assert event.detail["eventId"] == event.key == f"{enriched.call_id}:v1"
    assert event.detail["schemaVersion"] == EVENT_SCHEMA_VERSION
    assert event.detail["previousStatus"] is None
    assert event.detail["context"] == {"orderId": "o-1"}
    assert event.detail["entryPath"] == "queue"
    # And the stored item, as plain JSON, fits the stored-item schema
    assert_valid(STORED_ITEM, stored_item_json(calls_table, enriched.call_id))


def stored_item_json(table: str, key: str) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    from call_enricher import aws

    raw = aws.client("dynamodb").get_item(TableName=table, Key={"callId": {"S": key}})["Item"]
    plain = {name: TypeDeserializer().deserialize(value) for name, value in raw.items()}
    return json.loads(json.dumps(plain, default=lambda d: int(d) if d == int(d) else float(d)))


def test_failed_items_fit_the_stored_item_schema(calls_table):
    # Given a call with a version then a failure, and a malformed message's failure
    store = CallStore(calls_table, ttl_days=7)
    store.save(enrich_json(sample("ongoing-in-app-to-pstn.json")))
    ongoing_id = json.loads(sample("ongoing-in-app-to-pstn.json"))["callId"]
    store.fail(ongoing_id, failure(call_id=ongoing_id, attempts=2, context={"k": [1, 2.5]}))
    bad = errors.MalformedMessageError("message body is empty")
    store.fail(message_key("m-1"), failure(bad, call_id=None, raw_call_id="+46701234567"))
    # When the items are read as plain JSON / Then they fit the stored-item schema
    for key in (ongoing_id, "msg:m-1"):
        item = stored_item_json(calls_table, key)
        assert item["state"] == "failed"
        assert_valid(STORED_ITEM, item)


def test_ongoing_then_final_events_carry_versions_and_previous_status(calls_table):
    # Given an ONGOING call, later FINAL
    ongoing_raw = json.loads(sample("ongoing-in-app-to-pstn.json"))
    final_raw = {
        **ongoing_raw,
        "status": "FINAL",
        "result": "ANSWERED",
        "reason": "CALLERHANGUP",
        "duration": 42,
    }
    store = CallStore(calls_table)
    # When both are saved and their events built
    first = store.save(enrich_json(ongoing_raw))
    second = store.save(enrich_json(final_raw))
    # Then they are versions 1 and 2, the second saying it was ONGOING before, both valid
    assert [r.outcome for r in (first, second)] == [WriteOutcome.CREATED, WriteOutcome.UPDATED]
    details = [call_enriched_event(r.stored).detail for r in (first, second)]
    assert [(d["version"], d["status"], d["previousStatus"]) for d in details] == [
        (1, "ONGOING", None),
        (2, "FINAL", "ONGOING"),
    ]
    assert details[1]["eventId"].endswith(":v2")
    assert details[1]["storedAt"] == second.stored.updated_at.isoformat().replace("+00:00", "Z")
    for detail in details:
        assert_valid(ENRICHED, detail)


def test_a_rebuilt_version_is_the_same_event(calls_table):
    # Given a stored version's event, and the same version read back later (a replay)
    store = CallStore(calls_table)
    saved = store.save(enrich_json(sample("busy-de.json")))
    again = store.save(enrich_json(sample("busy-de.json")))
    # Then nothing was written the second time, and the rebuilt event is identical
    assert again.outcome is WriteOutcome.UNCHANGED
    assert call_enriched_event(again.stored) == call_enriched_event(saved.stored)
    assert call_enriched_event(store.get(saved.stored.call_id)) == call_enriched_event(saved.stored)


def test_the_caller_key_tags_the_event_but_not_its_id():
    stored = stored_version()
    event = call_enriched_event(stored, key="seq-42")
    assert event.key == "seq-42"
    assert event.detail["eventId"] == f"{stored.call_id}:v1"


def test_a_state_without_a_version_has_no_call_enriched_event():
    # Given a call whose only state is a failure (no version) / Then it has no such event
    with pytest.raises(ValueError, match="holds no version"):
        call_enriched_event(StoredCall(call_id="c", state="failed", failure=failure(call_id="c")))


def test_a_stored_record_the_model_no_longer_accepts_is_permanent():
    stored = StoredCall(
        call_id="c", version=1, status="FINAL", record={"callId": "c"}, created_at=T0
    )
    with pytest.raises(errors.PermanentError, match="does not match the EnrichedCall model"):
        call_enriched_event(stored)


# -- Call Enrichment Failed ----------------------------------------------------------------------


def _error_classes() -> list[type[errors.CallEnricherError]]:
    found: list[type[errors.CallEnricherError]] = []
    pending = [errors.CallEnricherError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("error_class", _error_classes(), ids=lambda cls: cls.__name__)
def test_failed_event_of_every_error_class_fits_the_schema(error_class):
    # Given any error of the taxonomy, with Sinch diagnostics, stored as a failure state
    error = error_class(
        "Sinch said no", http_status=404, sinch_error_code=40400, sinch_reference="ref-1"
    )
    stored = failure(
        error, attempts=2, context={"ticket": 7}, source_id="msg-1", entry_path="queue"
    )
    # When its failure event is built
    event = call_enrichment_failed_event(CALL_ID, stored)
    # Then it fits the schema and carries the error's facts
    assert event.detail_type == DETAIL_TYPE_CALL_ENRICHMENT_FAILED
    assert_valid(FAILED, event.detail)
    detail = event.detail
    assert detail["callId"] == CALL_ID
    assert detail["reason"] == error.reason
    assert detail["errorClass"] == error.error_class.value
    assert (detail["sinchErrorCode"], detail["sinchReference"], detail["httpStatus"]) == (
        40400,
        "ref-1",
        404,
    )
    assert (detail["attempts"], detail["context"], detail["entryPath"]) == (
        2,
        {"ticket": 7},
        "queue",
    )
    assert detail["failedAt"] == "2026-11-26T10:00:00Z"
    assert detail["rawCallId"] is None
    assert event.key == detail["eventId"]


def test_not_final_in_time_overrides_the_reason():
    stored = failure(
        errors.CallNotFinalError("still ONGOING after 14400 s"),
        call_id="c",
        reason=REASON_NOT_FINAL_IN_TIME,
        attempts=12,
    )
    event = call_enrichment_failed_event("c", stored)
    assert_valid(FAILED, event.detail)
    assert event.detail["reason"] == "not-final-in-time"
    assert event.detail["errorClass"] == "not-final"
    assert event.detail["eventId"].startswith("c:failed:not-final-in-time:")


def test_failed_event_ids_follow_the_stored_state_change():
    def event_id(key: str, stored: Failure) -> str:
        return str(call_enrichment_failed_event(key, stored).detail["eventId"])

    # Given one stored failure, rebuilt (a replayed stream record)
    # Then it has the same ID, derived from the call, the reason and the state
    assert event_id("c", failure(call_id="c")) == event_id("c", failure(call_id="c"))
    assert event_id("c", failure(call_id="c")).startswith("c:failed:call-not-found:")
    # And the same failure stored again at another time (after a version superseded it),
    # another failure, or another key, is another state change: another ID
    later = failure(call_id="c", failed_at=T0 + timedelta(hours=1))
    assert event_id("c", later) != event_id("c", failure(call_id="c"))
    rejected = failure(errors.SinchRejectedError("no"), call_id="c")
    assert event_id("c", rejected) != event_id("c", failure(call_id="c"))
    assert event_id("d", failure(call_id="d")) != event_id("c", failure(call_id="c"))


def test_a_message_without_a_valid_call_id_shows_a_short_escaped_masked_prefix():
    # Given a message whose "call ID" is a phone number followed by junk and control chars
    raw = "+12125550123 é\n\x00" + "z" * 200
    stored = failure(
        errors.InvalidCallIdError("call id has a forbidden character U+0020 at index 12"),
        call_id=None,
        raw_call_id=raw,
        attempts=0,
    )
    # When its failure event is built from its message key
    event = call_enrichment_failed_event(message_key("m-1"), stored)
    # Then callId is null and rawCallId is a short, escaped prefix with the number masked
    detail = event.detail
    assert_valid(FAILED, detail)
    assert detail["callId"] is None
    assert detail["eventId"].startswith("unknown:failed:invalid-call-id:")
    shown = detail["rawCallId"]
    assert shown.startswith("+*********23 \\xe9\\n\\x00z")
    assert shown.endswith("...")
    assert shown.isascii()
    assert "2125550" not in shown
    assert len(shown) <= 80


def test_a_malformed_message_with_a_valid_call_id_names_the_call():
    # Given a message whose callId is valid but whose context is not, stored under its key
    stored = failure(errors.MalformedMessageError("invalid message: region"), call_id=CALL_ID)
    # When its event is built / Then it names the call (consumers can match it)
    detail = call_enrichment_failed_event(message_key("m-2"), stored).detail
    assert_valid(FAILED, detail)
    assert detail["callId"] == CALL_ID
    assert detail["rawCallId"] is None
    assert detail["eventId"].startswith(f"{CALL_ID}:failed:malformed-message:")


def test_phone_numbers_in_error_messages_are_masked_but_call_ids_are_not():
    error = errors.InvalidCallIdError("bad call id '+46701234567' near 4398599d1ba84ef3")
    detail = call_enrichment_failed_event("msg:k", failure(error, call_id=None)).detail
    assert "+*********67" in detail["message"]
    assert "4398599d1ba84ef3" in detail["message"]


# -- events_for_change: what one stream record announces -----------------------------------------


def test_a_new_version_announces_call_enriched():
    # Given version 1 replaced by version 2
    old, new = stored_version("ONGOING", 1), stored_version("FINAL", 2, previous_status="ONGOING")
    # When the change is turned into events / Then one Call Enriched of version 2
    (event,) = events_for_change(old, new)
    assert event.detail_type == DETAIL_TYPE_CALL_ENRICHED
    assert (event.detail["version"], event.detail["previousStatus"]) == (2, "ONGOING")
    assert_valid(ENRICHED, event.detail)
    # And a first version (INSERT: no old image) is announced the same way
    (first,) = events_for_change(None, old)
    assert first.detail["eventId"].endswith(":v1")


def test_a_new_failure_announces_call_enrichment_failed():
    # Given a stored version that then fails (its record kept)
    old = stored_version("ONGOING", 1)
    new = old.model_copy(update={"state": "failed", "failure": failure(call_id=old.call_id)})
    # When the change is turned into events / Then one failure event, no Call Enriched
    (event,) = events_for_change(old, new)
    assert event.detail_type == DETAIL_TYPE_CALL_ENRICHMENT_FAILED
    assert event.detail["callId"] == old.call_id
    assert_valid(FAILED, event.detail)


def test_a_failure_replaced_by_a_version_announces_only_the_version():
    # Given a failure, then a FINAL version (which removes the failure)
    old = StoredCall(call_id=CALL_ID, state="failed", failure=failure(), created_at=T0)
    new = stored_version("FINAL", 1).model_copy(update={"call_id": CALL_ID})
    # When / Then only Call Enriched
    assert [e.detail_type for e in events_for_change(old, new)] == [DETAIL_TYPE_CALL_ENRICHED]


def test_a_change_with_a_new_version_and_a_new_failure_announces_both_in_order():
    new = stored_version("FINAL", 1, state="failed")
    new = new.model_copy(update={"failure": failure(call_id=new.call_id)})
    events = events_for_change(None, new, key="seq-1")
    assert [e.detail_type for e in events] == [
        DETAIL_TYPE_CALL_ENRICHED,
        DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
    ]
    assert [e.key for e in events] == ["seq-1", "seq-1"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (stored_version(), None),  # REMOVE (the TTL expired the item)
        (stored_version(), stored_version()),  # a write that changed neither
        (
            stored_version(state="failed", failure=failure(call_id="x")),
            stored_version(state="failed", failure=failure(call_id="x"), expires_at=1),
        ),
        (None, None),
    ],
    ids=["removed", "same-version", "same-failure", "nothing"],
)
def test_a_change_of_neither_version_nor_failure_announces_nothing(old, new):
    assert events_for_change(old, new) == []


def test_a_replayed_change_gives_the_same_events():
    # Given one change (version 2 superseding a failure), turned into events twice
    old = stored_version("ONGOING", 1, state="failed", failure=failure(call_id="x"))
    new = stored_version("FINAL", 2, previous_status="ONGOING")
    # Then the events, IDs included, are identical: consumers dedupe the replay
    assert events_for_change(old, new) == events_for_change(old, new)


# -- on the wire ---------------------------------------------------------------------------------


def test_events_received_from_the_bus_fit_the_schemas(calls_table, event_bus):
    # Given one enriched and one failed event built as the stream publisher builds them
    store = CallStore(calls_table)
    saved = store.save(enrich_json(sample("answered-us-to-gb.json")))
    bad = failure(errors.MalformedMessageError("not JSON"), call_id=None, attempts=0)
    failed = store.fail(message_key("m-2"), bad)
    events = [
        *events_for_change(None, saved.stored, key="seq-1"),
        *events_for_change(None, failed.stored, key="seq-2"),
    ]
    # When they are published on the bus and received by a rule's SQS target
    published = EventPublisher(event_bus.bus_name, EVENT_SOURCE).publish(events)
    assert published == {"seq-1": None, "seq-2": None}
    received = {e["detail-type"]: e["detail"] for e in event_bus.received(expected=2)}
    # Then what consumers receive fits the committed schemas, and the record parses back
    assert_valid(ENRICHED, received[DETAIL_TYPE_CALL_ENRICHED])
    assert_valid(FAILED, received[DETAIL_TYPE_CALL_ENRICHMENT_FAILED])
    record = EnrichedCall.model_validate(received[DETAIL_TYPE_CALL_ENRICHED]["record"])
    assert record.call_id == saved.stored.call_id
    assert received[DETAIL_TYPE_CALL_ENRICHMENT_FAILED]["callId"] is None
