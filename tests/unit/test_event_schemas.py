"""The event contracts: committed JSON Schemas are current, and every event we build fits them.

Events are built the way the pipeline builds them (Sinch sample -> enrichment -> calls table
in moto -> builder from the stored state) and validated against the *committed* schema files
with jsonschema (Draft 2020-12), so a model change that is not regenerated and committed
fails here, and so does a builder producing something the schema does not allow.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from call_enricher import errors
from call_enricher.enrichment import EnrichedCall, enrich_json
from call_enricher.events import (
    EVENT_SCHEMA_VERSION,
    REASON_NOT_FINAL_IN_TIME,
    call_enriched_event,
    call_enrichment_failed_event,
)
from call_enricher.publishing import (
    DETAIL_TYPE_CALL_ENRICHED,
    DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
    EventPublisher,
)
from call_enricher.storage import CallStore, SaveOutcome, StoredCall
from call_enricher_tools import schemas

from .conftest import EVENT_SOURCE

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "events" / "schemas"
SAMPLES = sorted((ROOT / "events" / "sinch").glob("*.json"))


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
    good = call_enrichment_failed_event(
        key="m-1", error=errors.CallNotFoundError("Call not found"), call_id="abc"
    ).detail
    assert_valid(FAILED, good)
    # When required keys are missing or values are off / Then the schema says so
    assert not FAILED.is_valid({k: v for k, v in good.items() if k != "eventId"})
    assert not FAILED.is_valid({**good, "reason": "Not Kebab"})
    assert not FAILED.is_valid({**good, "errorClass": "maybe"})
    assert not FAILED.is_valid({**good, "schemaVersion": "2.0.0"})
    # And unknown keys are allowed (consumers ignore fields added by minor versions)
    assert FAILED.is_valid({**good, "addedInMinor": 1})


# -- Call Enriched -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: path.stem)
def test_every_sample_stored_then_published_fits_the_schema(path, calls_table):
    # Given a Sinch sample enriched and saved in the calls table
    enriched = enrich_json(path.read_bytes(), region="euc1")
    result = CallStore(calls_table).save(enriched)
    # When the event is built from the stored state (as after a redelivery)
    stored = CallStore(calls_table).get(enriched.call_id)
    event = call_enriched_event(
        key="msg-1",
        stored=stored,
        previous_status=result.previous_status,
        context={"orderId": "o-1"},
        entry_path="queue",
    )
    # Then it fits the committed schema, and the record is exactly the enriched public JSON
    assert event.detail_type == DETAIL_TYPE_CALL_ENRICHED
    assert_valid(ENRICHED, event.detail)
    assert event.detail["record"] == enriched.model_dump(mode="json", by_alias=True)
    assert event.detail["eventId"] == f"{enriched.call_id}:v1"
    assert event.detail["schemaVersion"] == EVENT_SCHEMA_VERSION
    assert event.detail["previousStatus"] is None
    assert event.detail["context"] == {"orderId": "o-1"}
    # And the stored item, as plain JSON, fits the stored-item schema
    item = stored_item_json(calls_table, enriched.call_id)
    assert_valid(STORED_ITEM, item)


def stored_item_json(table: str, call_id: str) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    from call_enricher import aws

    raw = aws.client("dynamodb").get_item(TableName=table, Key={"callId": {"S": call_id}})["Item"]
    plain = {key: TypeDeserializer().deserialize(value) for key, value in raw.items()}
    return json.loads(json.dumps(plain, default=lambda d: int(d) if d == int(d) else float(d)))


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
    events = [
        call_enriched_event(key="k", stored=r.stored, previous_status=r.previous_status)
        for r in (first, second)
    ]
    # Then they are versions 1 and 2, the second saying it was ONGOING before, both valid
    assert [r.outcome for r in (first, second)] == [SaveOutcome.CREATED, SaveOutcome.UPDATED]
    details = [event.detail for event in events]
    assert [(d["version"], d["status"], d["previousStatus"]) for d in details] == [
        (1, "ONGOING", None),
        (2, "FINAL", "ONGOING"),
    ]
    assert details[1]["eventId"].endswith(":v2")
    for detail in details:
        assert_valid(ENRICHED, detail)


def test_a_republished_version_is_the_same_event(calls_table):
    # Given a stored version published once, then rebuilt from the table after a crash
    store = CallStore(calls_table)
    saved = store.save(enrich_json(sample("busy-de.json")))
    first = call_enriched_event(key="a", stored=saved.stored, previous_status=None)
    again = store.save(enrich_json(sample("busy-de.json")))
    rebuilt = call_enriched_event(
        key="b", stored=again.stored, previous_status=again.previous_status
    )
    # Then the detail is identical (same eventId), so consumers can dedupe it
    assert again.outcome is SaveOutcome.UNCHANGED
    assert rebuilt.detail == first.detail


def test_a_record_read_without_its_record_cannot_be_published():
    stored = StoredCall("c", 1, "fp", "FINAL", 0, datetime.now(UTC), datetime.now(UTC), None, None)
    with pytest.raises(ValueError, match="has no record"):
        call_enriched_event(key="k", stored=stored, previous_status=None)


def test_a_stored_record_the_model_no_longer_accepts_is_permanent():
    stored = StoredCall(
        "c", 1, "fp", "FINAL", 0, datetime.now(UTC), datetime.now(UTC), {"callId": "c"}, None
    )
    with pytest.raises(errors.PermanentError, match="does not match the EnrichedCall model"):
        call_enriched_event(key="k", stored=stored, previous_status=None)


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
    # Given any error of the taxonomy, with Sinch diagnostics
    error = error_class(
        "Sinch said no", http_status=404, sinch_error_code=40400, sinch_reference="ref-1"
    )
    # When its failure event is built
    event = call_enrichment_failed_event(
        key="msg-1",
        error=error,
        call_id="4398599d1ba84ef3bde0a82dfb61abed",
        attempts=2,
        context={"ticket": 7},
        source_id="msg-1",
        entry_path="queue",
    )
    # Then it fits the schema and carries the error's facts
    assert event.detail_type == DETAIL_TYPE_CALL_ENRICHMENT_FAILED
    assert_valid(FAILED, event.detail)
    detail = event.detail
    assert detail["reason"] == error.reason
    assert detail["errorClass"] == error.error_class.value
    assert (detail["sinchErrorCode"], detail["sinchReference"], detail["httpStatus"]) == (
        40400,
        "ref-1",
        404,
    )
    assert detail["attempts"] == 2
    assert detail["rawCallId"] is None


def test_not_final_in_time_overrides_the_reason():
    event = call_enrichment_failed_event(
        key="c",
        error=errors.CallNotFinalError("still ONGOING after 14400 s"),
        call_id="c",
        reason=REASON_NOT_FINAL_IN_TIME,
        attempts=12,
        source_id="msg-9",
    )
    assert_valid(FAILED, event.detail)
    assert event.detail["reason"] == "not-final-in-time"
    assert event.detail["errorClass"] == "not-final"
    assert event.detail["eventId"].startswith("c:failed:not-final-in-time:")


def test_failed_event_ids_are_deterministic_per_source_message():
    error = errors.CallNotFoundError("Call not found")

    def build(source: str) -> str:
        event = call_enrichment_failed_event(key="k", error=error, call_id="c", source_id=source)
        return str(event.detail["eventId"])

    # Given the same message twice (a redelivery) and another message
    # Then the redelivery has the same event ID, the other message a different one
    assert build("msg-1") == build("msg-1")
    assert build("msg-1") != build("msg-2")
    assert build("msg-1").startswith("c:failed:call-not-found:")


def test_a_message_without_a_valid_call_id_shows_a_short_escaped_masked_prefix():
    # Given a message whose "call ID" is a phone number followed by junk and control chars
    raw = "+12125550123 é\n\x00" + "z" * 200
    # When its failure event is built
    event = call_enrichment_failed_event(
        key="msg-1",
        error=errors.InvalidCallIdError("call id has a forbidden character U+0020 at index 12"),
        call_id=None,
        raw_call_id=raw,
        attempts=0,
    )
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


def test_phone_numbers_in_error_messages_are_masked_but_call_ids_are_not():
    error = errors.InvalidCallIdError("bad call id '+46701234567' near 4398599d1ba84ef3")
    detail = call_enrichment_failed_event(key="k", error=error, call_id=None).detail
    assert "+*********67" in detail["message"]
    assert "4398599d1ba84ef3" in detail["message"]


# -- on the wire ---------------------------------------------------------------------------------


def test_events_received_from_the_bus_fit_the_schemas(calls_table, event_bus):
    # Given one enriched and one failed event built as the pipeline builds them
    result = CallStore(calls_table).save(enrich_json(sample("answered-us-to-gb.json")))
    events = [
        call_enriched_event(key="m-1", stored=result.stored, previous_status=None),
        call_enrichment_failed_event(
            key="m-2", error=errors.MalformedMessageError("not JSON"), call_id=None, attempts=0
        ),
    ]
    # When they are published on the bus and received by a rule's SQS target
    assert EventPublisher(event_bus.bus_name, EVENT_SOURCE).publish(events) == {
        "m-1": None,
        "m-2": None,
    }
    received = {e["detail-type"]: e["detail"] for e in event_bus.received(expected=2)}
    # Then what consumers receive fits the committed schemas, and the record parses back
    assert_valid(ENRICHED, received[DETAIL_TYPE_CALL_ENRICHED])
    assert_valid(FAILED, received[DETAIL_TYPE_CALL_ENRICHMENT_FAILED])
    record = EnrichedCall.model_validate(received[DETAIL_TYPE_CALL_ENRICHED]["record"])
    assert record.call_id == result.stored.call_id
