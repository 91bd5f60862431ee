"""The sample events of events/eventbridge/: one full event per detail type (envelope and
detail, as a rule's target receives it), each fitting the deployed full-event schema of
template.yaml's Schema Registry (Draft 4) and, for its detail, the committed detail schema of
events/schemas/ (Draft 2020-12); and what the model publishes, key for key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator, Draft202012Validator

from call_enricher.events import DETAIL_TYPE_CALL_ENRICHMENT_FAILED, call_enriched_event_id
from call_enricher_tools import registry

from .conftest import REPO, Template
from .test_schema_registry import DETAIL_TYPES, SPECS, deployed_schema

SAMPLES = REPO / "events" / "eventbridge"
SCHEMA_DIR = REPO / "events" / "schemas"


def problems(validator: Any, instance: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


def sample(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def test_there_is_one_sample_event_per_detail_type() -> None:
    # Given events/eventbridge/ / Then one sample per detail type, named after it
    by_type = {sample(path)["detail-type"]: path.name for path in sorted(SAMPLES.glob("*.json"))}
    assert set(by_type) == DETAIL_TYPES
    assert len(by_type) == len(list(SAMPLES.glob("*.json")))
    for detail_type, name in by_type.items():
        assert name == SPECS[detail_type].filename.replace(".schema", "")


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.json")), ids=lambda path: path.name)
def test_each_sample_fits_the_full_event_schema_and_its_detail_the_committed_one(
    path: Path, template: Template
) -> None:
    # Given a sample event as a consumer receives it
    event = sample(path)
    spec = SPECS[event["detail-type"]]
    # When validated against the deployed full-event schema (Draft 4)
    full = deployed_schema(template, event["detail-type"])
    checker = Draft4Validator(full, format_checker=Draft4Validator.FORMAT_CHECKER)
    # Then it fits, and it carries the schema's source and detail type
    assert problems(checker, event) == []
    assert event["source"] == full["x-amazon-events-source"]
    assert list(event) == list(registry.ENVELOPE_KEYS)
    # And its detail fits the committed detail schema (Draft 2020-12)
    detail_schema = json.loads((SCHEMA_DIR / spec.filename).read_text(encoding="utf-8"))
    detail = Draft202012Validator(detail_schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert problems(detail, event["detail"]) == []
    # And it is what the model publishes: every key present, values in their wire format
    parsed = spec.model.model_validate(event["detail"])
    assert parsed.model_dump(mode="json", by_alias=True) == event["detail"]


def test_the_call_enriched_sample_carries_its_deterministic_event_id() -> None:
    # Given the Call Enriched sample / Then its eventId is derived from the call and version
    detail = sample(SAMPLES / "call-enriched.json")["detail"]
    assert detail["eventId"] == call_enriched_event_id(detail["callId"], detail["version"])
    assert detail["record"]["callId"] == detail["callId"]


def test_a_sample_without_its_envelope_or_with_a_bad_detail_is_rejected(
    template: Template,
) -> None:
    # Given the failure sample and its full-event schema
    event = sample(SAMPLES / "call-enrichment-failed.json")
    checker = Draft4Validator(deployed_schema(template, DETAIL_TYPE_CALL_ENRICHMENT_FAILED))
    # When the envelope loses a key, or the detail breaks its contract / Then it is invalid
    assert not checker.is_valid({k: v for k, v in event.items() if k != "account"})
    assert not checker.is_valid({**event, "detail": {**event["detail"], "reason": "Not Kebab"}})
    assert not checker.is_valid({**event, "detail": {**event["detail"], "errorClass": "maybe"}})
    # And a reason added by a later minor version is still valid (the set is open)
    assert checker.is_valid({**event, "detail": {**event["detail"], "reason": "new-reason"}})


def test_the_samples_are_listed_in_the_events_readme() -> None:
    readme = (REPO / "events" / "README.md").read_text(encoding="utf-8")
    for path in SAMPLES.glob("*.json"):
        assert f"eventbridge/{path.name}" in readme
