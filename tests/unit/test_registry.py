"""The Schema Registry generator: Draft 4 conversion, the full-event schemas, and the
template block it owns (spliced in, byte-identical when nothing changed, checked by --check).
template.yaml itself is checked in tests/template/test_schema_registry.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonschema import Draft4Validator

from call_enricher_tools import registry, schemas

MINI_TEMPLATE = """\
Resources:
  Queue:
    Type: AWS::SQS::Queue

Outputs:
  QueueUrl:
    Value: !Ref Queue
"""


# -- Draft 4 -------------------------------------------------------------------------------------


def test_draft_2020_12_constructs_get_their_draft_4_form():
    # Given a 2020-12 schema with $defs, a $ref, const, a numeric exclusive bound, examples,
    # a boolean subschema and an empty required
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:x",
        "type": "object",
        "required": [],
        "properties": {
            "a": {"$ref": "#/$defs/A", "description": "kept"},
            "b": {"const": "x", "examples": ["x"]},
            "c": {"type": "number", "exclusiveMinimum": 0},
            "d": {"anyOf": [True, {"type": "null"}]},
        },
        "additionalProperties": False,
        "$defs": {"A": {"type": "string", "examples": ["y"]}},
    }
    # When converted
    converted = registry.to_draft4(schema)
    # Then it is their Draft 4 form, and a valid Draft 4 schema
    assert converted == {
        "type": "object",
        "properties": {
            "a": {"$ref": "#/definitions/A", "description": "kept"},
            "b": {"enum": ["x"]},
            "c": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            "d": {"anyOf": [{}, {"type": "null"}]},
        },
        "additionalProperties": False,
        "definitions": {"A": {"type": "string"}},
    }
    Draft4Validator.check_schema(converted)


@pytest.mark.parametrize("keyword", ["prefixItems", "if", "unevaluatedProperties", "$anchor"])
def test_a_keyword_without_a_draft_4_form_is_refused(keyword):
    # Given a schema using a keyword Draft 4 does not have / When converted / Then it fails
    # naming it (a schema that validates differently is never published)
    with pytest.raises(ValueError, match=keyword.replace("$", r"\$")):
        registry.to_draft4({"type": "object", "properties": {"x": {keyword: {}}}})


# -- the full events -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", registry.event_specs(), ids=lambda spec: spec.detail_type)
def test_each_full_event_schema_embeds_its_detail_schema(spec):
    # Given the full-event schema of a detail type
    document = registry.event_schema(spec, "call-enricher")
    # Then it is Draft 4, requires the whole envelope, names its source and detail type
    Draft4Validator.check_schema(document)
    assert document["$schema"] == registry.DRAFT_4
    assert document["required"] == list(registry.ENVELOPE_KEYS)
    assert list(document["properties"]) == list(registry.ENVELOPE_KEYS)
    assert document["x-amazon-events-detail-type"] == spec.detail_type
    assert document["x-amazon-events-source"] == "call-enricher"
    # And its detail is the committed detail schema's, in Draft 4 form
    name = spec.model.__name__
    assert document["properties"]["detail"] == {"$ref": f"#/definitions/{name}"}
    detail = schemas.schema_of(spec)
    embedded = document["definitions"][name]
    assert embedded["required"] == detail["required"]
    assert list(embedded["properties"]) == list(detail["properties"])
    assert set(document["definitions"]) == {name, *detail.get("$defs", {})}


def test_the_only_substitution_in_a_content_is_the_event_source():
    # Given each schema's Content, as the template's !Sub string
    for spec in registry.event_specs():
        content = registry.schema_content(spec)
        # Then ${EventSource} is the only variable, and resolving it gives the full schema
        assert content.count("${") == content.count("${!") + 1
        assert registry.resolve_content(content, "acme.calls") == registry.event_schema(
            spec, "acme.calls"
        )
        assert len(content) <= registry.CONTENT_MAX_CHARS
        assert content.isascii()


# -- the template block --------------------------------------------------------------------------


def test_the_block_goes_at_the_end_of_resources_and_nothing_else_changes(tmp_path: Path):
    # Given a template without the block
    template = tmp_path / "template.yaml"
    template.write_text(MINI_TEMPLATE, encoding="utf-8")
    # When the block is written
    assert registry.write(template) is True
    text = template.read_text(encoding="utf-8")
    # Then it sits between the last resource and Outputs, the rest byte for byte as it was
    before, block_and_after = text.split(registry.BEGIN, 1)
    block, after = block_and_after.split(registry.END + "\n", 1)
    assert before == MINI_TEMPLATE.split("Outputs:")[0]
    assert after == "\nOutputs:" + MINI_TEMPLATE.split("Outputs:")[1]
    assert registry.BEGIN + block + registry.END + "\n" == registry.render_block()
    # And writing again changes nothing (byte-identical)
    assert registry.write(template) is False
    assert template.read_text(encoding="utf-8") == text


def test_check_mode_fails_on_an_edited_block_and_regeneration_restores_it(tmp_path, capsys):
    # Given a template whose block was edited by hand
    template = tmp_path / "template.yaml"
    template.write_text(MINI_TEMPLATE, encoding="utf-8")
    assert registry.main(["--template", str(template)]) == 0
    fresh = template.read_text(encoding="utf-8")
    template.write_text(fresh.replace("JSONSchemaDraft4", "OpenApi3", 1), encoding="utf-8")
    # When checked / Then it exits 1 naming the file
    assert registry.main(["--check", "--template", str(template)]) == 1
    assert str(template) in capsys.readouterr().err
    # And regenerating gives back the fresh file, which passes
    assert registry.main(["--template", str(template)]) == 0
    assert template.read_text(encoding="utf-8") == fresh
    assert registry.main(["--check", "--template", str(template)]) == 0


def test_a_template_with_a_broken_pair_of_markers_is_refused():
    # Given an END marker without its BEGIN / When spliced / Then nothing is guessed
    with pytest.raises(ValueError, match="marker"):
        registry.splice(MINI_TEMPLATE + registry.END + "\n", registry.render_block())
