"""Generate or check the EventBridge Schema Registry block of template.yaml.

    python -m call_enricher_tools.registry           # (re)write the block in template.yaml
    python -m call_enricher_tools.registry --check   # exit 1 when the block is stale

The block is an ``AWS::EventSchemas::Registry`` and one ``AWS::EventSchemas::Schema`` per
detail type we publish, at the end of ``Resources:`` between the ``BEGIN GENERATED`` and
``END GENERATED`` comment lines; nothing else of the template is touched. Each schema is the
FULL event as EventBridge delivers it to a consumer (the envelope: ``version``, ``id``,
``detail-type``, ``source``, ``account``, ``time``, ``region``, ``resources``, and the
``detail``), as JSON Schema Draft 4 (``Type: JSONSchemaDraft4``; EventBridge's registry takes
OpenAPI 3 or Draft 4) in the layout of the schemas EventBridge exports itself (the detail
under ``definitions``, ``x-amazon-events-source`` / ``x-amazon-events-detail-type``), so
``aws schemas get-code-binding-source`` and the console work on it.

The detail schemas are the ones :mod:`call_enricher_tools.schemas` commits in
``events/schemas/`` (generated from the Pydantic models), converted to Draft 4 by
:func:`to_draft4`, which refuses a keyword it has no Draft 4 form for rather than emit a
schema EventBridge would read differently. ``Content`` is a ``!Sub`` block scalar: the
envelope's ``source`` is the stack's ``EventSource`` parameter (any other ``${`` is escaped).
The output is byte-identical when the models did not change.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from call_enricher_tools import schemas

DRAFT_4 = "http://json-schema.org/draft-04/schema#"
TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
BEGIN = "  # BEGIN GENERATED: EventBridge Schema Registry"
END = "  # END GENERATED: EventBridge Schema Registry"
REGISTRY_ID = "CallsEventSchemaRegistry"
SOURCE_PARAMETER = "EventSource"
ENVELOPE_KEYS = (
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
)
CONTENT_MAX_CHARS = 100_000
"""The Schemas API's limit on a schema's ``Content``."""

_SOURCE_MARK = "\x00event-source\x00"  # never in a generated schema; becomes ${EventSource}

# -- Draft 4 -------------------------------------------------------------------------------------

# Keywords Draft 4 has, by what their value is.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_SCHEMA_OR_BOOL = frozenset({"additionalProperties", "additionalItems"})
_DATA = frozenset(
    {
        "title",
        "description",
        "default",
        "enum",
        "type",
        "format",
        "pattern",
        "multipleOf",
        "maximum",
        "minimum",
        "maxLength",
        "minLength",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxProperties",
        "minProperties",
    }
)
# Annotations Draft 4 lacks (validation is the same without them), and the 2020-12 identity
# (a nested Draft 4 ``id`` would change how the ``$ref`` inside it resolve).
_DROPPED = frozenset({"$schema", "$id", "examples", "$comment", "deprecated", "readOnly"})


def to_draft4(schema: Mapping[str, Any] | bool) -> Any:
    """The JSON Schema Draft 4 form of a Draft 2020-12 ``schema`` (as Pydantic generates it).

    ``$defs`` become ``definitions`` (and ``$ref`` follow), ``const`` an ``enum`` of one,
    numeric ``exclusiveMinimum`` / ``exclusiveMaximum`` Draft 4's boolean form, boolean
    subschemas ``{}`` / ``{"not": {}}``; annotations Draft 4 lacks are dropped.

    Raises:
        ValueError: a keyword with no Draft 4 form (``prefixItems``, ``if``...): extend this
            function rather than publish a schema that validates differently.
    """
    if schema is True:
        return {}
    if schema is False:
        return {"not": {}}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED:
            continue
        if key == "$defs" or key in _SCHEMA_MAPS:
            name = "definitions" if key == "$defs" else key
            out[name] = {k: to_draft4(v) for k, v in value.items()}
        elif key == "$ref":
            out[key] = str(value).replace("#/$defs/", "#/definitions/")
        elif key in _SCHEMA_LISTS:
            out[key] = [to_draft4(item) for item in value]
        elif key == "not":
            out[key] = to_draft4(value)
        elif key in _SCHEMA_OR_BOOL:
            out[key] = value if isinstance(value, bool) else to_draft4(value)
        elif key == "items":
            out[key] = (
                [to_draft4(v) for v in value] if isinstance(value, list) else to_draft4(value)
            )
        elif key == "dependencies":
            out[key] = {k: v if isinstance(v, list) else to_draft4(v) for k, v in value.items()}
        elif key == "required":
            if value:  # Draft 4 wants at least one name
                out[key] = list(value)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out[key.replace("exclusiveM", "m")] = value
            out[key] = True
        elif key in _DATA:
            out[key] = value
        else:
            raise ValueError(f"no JSON Schema Draft 4 form for the keyword {key!r}")
    return out


# -- the full events -----------------------------------------------------------------------------


def event_specs() -> tuple[schemas.SchemaSpec, ...]:
    """The committed schemas that are event details, one per detail type."""
    return tuple(spec for spec in schemas.specs() if spec.detail_type is not None)


def pascal(detail_type: str) -> str:
    """``"Call Enriched"`` -> ``"CallEnriched"`` (schema names, titles, logical IDs)."""
    return "".join(word[:1].upper() + word[1:] for word in detail_type.split())


def detail_type_of(spec: schemas.SchemaSpec) -> str:
    """``spec``'s detail type (a :class:`ValueError` for a schema that is no event detail)."""
    if spec.detail_type is None:
        raise ValueError(f"{spec.filename} is not an event detail")
    return spec.detail_type


def schema_logical_id(spec: schemas.SchemaSpec) -> str:
    """``CallEnrichedEventSchema``: the template's logical ID of ``spec``'s schema."""
    return f"{pascal(detail_type_of(spec))}EventSchema"


def event_schema(spec: schemas.SchemaSpec, source: str) -> dict[str, Any]:
    """The Draft 4 schema of the full ``spec.detail_type`` event published with ``source``."""
    detail_type = detail_type_of(spec)
    detail = to_draft4(schemas.schema_of(spec))
    definitions = detail.pop("definitions", {})
    name = spec.model.__name__
    if name in definitions:
        raise ValueError(f"{name} is also the name of a model nested in it")
    described = (
        f"The `{detail_type}` event as a consumer receives it: EventBridge's envelope and"
        " the detail (`detail.schemaVersion` 1.x)."
    )
    text = {"type": "string"}
    return {
        "$schema": DRAFT_4,
        "title": pascal(detail_type),
        "description": described,
        "type": "object",
        "required": list(ENVELOPE_KEYS),
        "properties": {
            "version": {**text, "description": 'Envelope version: "0".'},
            "id": {
                **text,
                "description": (
                    "EventBridge's ID of this event: a republished event gets a new one."
                    " Dedupe on `detail.eventId` instead."
                ),
            },
            "detail-type": {**text, "description": f"`{detail_type}`."},
            "source": {
                **text,
                "description": "The stack's `EventSource` parameter (default `call-enricher`).",
            },
            "account": {
                **text,
                "pattern": "^[0-9]{12}$",
                "description": "The AWS account of the bus.",
            },
            "time": {
                **text,
                "format": "date-time",
                "description": "When the event was put on the bus (UTC, to the second).",
            },
            "region": {**text, "description": "The AWS Region of the bus."},
            "resources": {
                "type": "array",
                "items": text,
                "description": "ARNs the event names: none today (an empty list).",
            },
            "detail": {"$ref": f"#/definitions/{name}"},
        },
        "definitions": {name: {**detail, "title": name}, **definitions},
        "x-amazon-events-source": source,
        "x-amazon-events-detail-type": detail_type,
    }


def schema_content(spec: schemas.SchemaSpec) -> str:
    """``spec``'s schema as the template's ``!Sub`` string: 2-space JSON (ASCII only), the
    source ``${EventSource}``, every other ``${`` escaped as ``${!``."""
    text = json.dumps(event_schema(spec, _SOURCE_MARK), indent=2, ensure_ascii=True)
    mark = json.dumps(_SOURCE_MARK)[1:-1]
    if text.count(mark) != 1:
        raise ValueError(f"{spec.filename}: the source mark is in the schema itself")
    return text.replace("${", "${!").replace(mark, "${" + SOURCE_PARAMETER + "}") + "\n"


def resolve_content(sub: str, source: str) -> dict[str, Any]:
    """A schema's ``Content`` (the ``Fn::Sub`` string read from the template) as CloudFormation
    deploys it for ``source``, parsed."""
    text = sub.replace("${" + SOURCE_PARAMETER + "}", source).replace("${!", "${")
    parsed: dict[str, Any] = json.loads(text)
    return parsed


# -- the template block --------------------------------------------------------------------------


def render_block() -> str:
    """The generated lines, markers included (each line ends with a newline)."""
    lines = [
        BEGIN,
        "  # Written by `python -m call_enricher_tools.registry` (`make openapi`) from the event",
        "  # models (layers/core/call_enricher/events.py); `make lint` fails when it is stale. Do",
        "  # not edit: change the models and regenerate. One schema per detail type, the full",
        "  # event a consumer receives (envelope + detail) as JSON Schema Draft 4, named",
        "  # {source}@{DetailType} like the schemas EventBridge discovers (docs/events.md).",
        f"  {REGISTRY_ID}:",
        "    Type: AWS::EventSchemas::Registry",
        "    Properties:",
        "      RegistryName: !Sub ${AWS::StackName}-events",
        "      Description: !Sub The events of ${AWS::StackName}'s bus, one schema a detail type.",
    ]
    for spec in event_specs():
        detail_type = detail_type_of(spec)
        content = schema_content(spec)
        if len(content) > CONTENT_MAX_CHARS:
            raise ValueError(f"{detail_type}: Content over the {CONTENT_MAX_CHARS} characters")
        description = f"The full {detail_type} event (envelope and detail)."
        lines += [
            f"  {schema_logical_id(spec)}:",
            "    Type: AWS::EventSchemas::Schema",
            "    Properties:",
            f"      RegistryName: !GetAtt {REGISTRY_ID}.RegistryName",
            f"      SchemaName: !Sub ${{{SOURCE_PARAMETER}}}@{pascal(detail_type)}",
            "      Type: JSONSchemaDraft4",
            f"      Description: {json.dumps(description)}",
            "      Content: !Sub |",
            *(f"        {line}" for line in content.splitlines()),
        ]
    lines.append(END)
    return "".join(f"{line}\n" for line in lines)


def splice(template: str, block: str) -> str:
    """``template`` with its generated block replaced by ``block`` (or, the first time, added
    at the end of ``Resources:``, before the next top-level key)."""
    lines = template.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.startswith(BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\n") == END]
    if begins or ends:
        if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
            raise ValueError("template.yaml: expected one BEGIN and then one END marker line")
        return "".join(lines[: begins[0]]) + block + "".join(lines[ends[0] + 1 :])
    start = lines.index("Resources:\n")
    after = next((i for i in range(start + 1, len(lines)) if lines[i][:1].isalpha()), len(lines))
    separator = "" if after == len(lines) else "\n"
    return "".join(lines[:after]) + block + separator + "".join(lines[after:])


def stale(path: Path = TEMPLATE_PATH) -> bool:
    """Whether the template's block differs from what the models generate."""
    text = path.read_text(encoding="utf-8")
    return splice(text, render_block()) != text


def write(path: Path = TEMPLATE_PATH) -> bool:
    """(Re)write the block when it changed; returns whether the file was written. The file is
    read right before it is written, and only the block's lines change."""
    block = render_block()
    text = path.read_text(encoding="utf-8")
    updated = splice(text, block)
    if updated == text:
        return False
    path.write_text(updated, encoding="utf-8")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m call_enricher_tools.registry",
        description="Generate (or --check) template.yaml's EventBridge Schema Registry block.",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the block is stale")
    parser.add_argument("--template", type=Path, default=TEMPLATE_PATH, help="template file")
    args = parser.parse_args(argv)
    count = len(event_specs())
    if args.check:
        if stale(args.template):
            print(
                f"stale: the Schema Registry block of {args.template}"
                " (run: python -m call_enricher_tools.registry)",
                file=sys.stderr,
            )
            return 1
        print(f"{count} registry schemas up to date in {args.template}")
        return 0
    if write(args.template):
        print(f"wrote the Schema Registry block ({count} schemas) of {args.template}")
    else:
        print(f"{count} registry schemas already up to date in {args.template}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
