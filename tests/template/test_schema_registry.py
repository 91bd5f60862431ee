"""template.yaml's EventBridge Schema Registry.

The registry block is generated (``python -m call_enricher_tools.registry``): here it must be
current, at the end of ``Resources:``, one Draft 4 schema of the full event per detail type
we publish (the sample events are checked against them in test_eventbridge_samples.py).
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft4Validator

from call_enricher.events import (
    DETAIL_TYPE_CALL_ENRICHED,
    DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
    DETAIL_TYPE_SPEND_THRESHOLD_CROSSED,
)
from call_enricher_tools import registry
from call_enricher_tools.local.template import load_cfn_yaml

from .conftest import TEMPLATE_PATH, Template

DETAIL_TYPES = {
    DETAIL_TYPE_CALL_ENRICHED,
    DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
    DETAIL_TYPE_SPEND_THRESHOLD_CROSSED,
}
SPECS = {spec.detail_type: spec for spec in registry.event_specs()}


def deployed_schema(template: Template, detail_type: str) -> dict[str, Any]:
    """A detail type's schema as CloudFormation deploys it with the default EventSource."""
    properties = template.resources[schema_id(detail_type)]["Properties"]
    source = template.parameters["EventSource"]["Default"]
    return registry.resolve_content(properties["Content"]["Fn::Sub"], source)


def schema_id(detail_type: str) -> str:
    return registry.schema_logical_id(SPECS[detail_type])


# -- the registry --------------------------------------------------------------------------------


def test_the_registry_block_is_generated_from_the_current_models() -> None:
    # Given template.yaml and the models / When the block is regenerated / Then nothing changes
    assert not registry.stale(TEMPLATE_PATH), "run: python -m call_enricher_tools.registry"


def test_the_block_is_the_end_of_the_resources_section() -> None:
    # Given template.yaml's lines
    lines = TEMPLATE_PATH.read_text(encoding="utf-8").splitlines()
    (begin,) = [i for i, line in enumerate(lines) if line.startswith(registry.BEGIN)]
    (end,) = [i for i, line in enumerate(lines) if line == registry.END]
    # Then the block is inside Resources, and the next non-blank line after it is a new section
    assert lines.index("Resources:") < begin < end
    after = next(line for line in lines[end + 1 :] if line.strip())
    assert after[:1].isalpha(), f"a resource after the generated block: {after!r}"
    # And it holds only the registry and its schemas (valid YAML on its own)
    block = load_cfn_yaml("Resources:\n" + "\n".join(lines[begin : end + 1]) + "\n")
    assert {spec["Type"] for spec in block["Resources"].values()} == {
        "AWS::EventSchemas::Registry",
        "AWS::EventSchemas::Schema",
    }


def test_one_registry_named_after_the_stack(template: Template) -> None:
    # Given the registries / Then one, named after the stack (two stages deploy side by side)
    (name,) = template.of_type("AWS::EventSchemas::Registry")
    assert name == registry.REGISTRY_ID
    properties = template.resources[name]["Properties"]
    assert properties["RegistryName"] == {"Fn::Sub": "${AWS::StackName}-events"}


def test_one_draft_4_schema_of_the_full_event_per_detail_type_we_publish(
    template: Template,
) -> None:
    # Given the template's schemas
    found = template.of_type("AWS::EventSchemas::Schema")
    # Then there is one per detail type, in the stack's registry, named {source}@{DetailType}
    assert set(SPECS) == DETAIL_TYPES
    assert set(found) == {schema_id(detail_type) for detail_type in DETAIL_TYPES}
    for detail_type in DETAIL_TYPES:
        properties = found[schema_id(detail_type)]["Properties"]
        assert properties["Type"] == "JSONSchemaDraft4"
        assert properties["RegistryName"] == {"Fn::GetAtt": [registry.REGISTRY_ID, "RegistryName"]}
        assert properties["SchemaName"] == {
            "Fn::Sub": "${EventSource}@" + detail_type.replace(" ", "")
        }
        assert len(properties["Description"]) <= 256  # the Schemas API's limit
        assert len(properties["Content"]["Fn::Sub"]) <= registry.CONTENT_MAX_CHARS
        # And its content is a Draft 4 schema of the whole envelope, source and detail type set
        document = deployed_schema(template, detail_type)
        Draft4Validator.check_schema(document)
        assert document["required"] == list(registry.ENVELOPE_KEYS)
        assert document["x-amazon-events-detail-type"] == detail_type
        assert document["x-amazon-events-source"] == "call-enricher"
