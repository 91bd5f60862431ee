"""Generate or check the committed JSON Schemas of our contracts.

    python -m call_enricher_tools.schemas           # (re)write events/schemas/*.schema.json
    python -m call_enricher_tools.schemas --check   # exit 1 when a committed file is stale

The schemas are generated from the Pydantic models (``model_json_schema(by_alias=True,
mode="serialization")``: the JSON consumers actually receive), as JSON Schema Draft 2020-12
with a stable ``$id`` per contract and major version, and written with a fixed layout so a
regeneration without model changes is byte-identical.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "events" / "schemas"


@dataclass(frozen=True)
class SchemaSpec:
    """One committed schema: its file, the model it comes from, its ``$id`` and title, and
    for an event detail its EventBridge ``detail-type`` (the registry schemas of
    :mod:`call_enricher_tools.registry` are made of these)."""

    filename: str
    model: type[BaseModel]
    schema_id: str
    title: str
    detail_type: str | None = None


def specs() -> tuple[SchemaSpec, ...]:
    """Every contract with a committed schema."""
    from call_enricher.events import (
        DETAIL_TYPE_CALL_ENRICHED,
        DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
        DETAIL_TYPE_SPEND_THRESHOLD_CROSSED,
        CallEnrichedDetail,
        CallEnrichmentFailedDetail,
        SpendThresholdCrossedDetail,
    )
    from call_enricher.state import StoredCall

    return (
        SchemaSpec(
            "call-enriched.schema.json",
            CallEnrichedDetail,
            "urn:call-enricher:events:call-enriched:v1",
            "Call Enriched (EventBridge detail)",
            DETAIL_TYPE_CALL_ENRICHED,
        ),
        SchemaSpec(
            "call-enrichment-failed.schema.json",
            CallEnrichmentFailedDetail,
            "urn:call-enricher:events:call-enrichment-failed:v1",
            "Call Enrichment Failed (EventBridge detail)",
            DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
        ),
        SchemaSpec(
            "spend-threshold-crossed.schema.json",
            SpendThresholdCrossedDetail,
            "urn:call-enricher:events:spend-threshold-crossed:v1",
            "Spend Threshold Crossed (EventBridge detail)",
            DETAIL_TYPE_SPEND_THRESHOLD_CROSSED,
        ),
        SchemaSpec(
            "stored-call-item.schema.json",
            StoredCall,
            "urn:call-enricher:storage:stored-call-item:v2",
            "Stored call (calls table item, as plain JSON)",
        ),
    )


def schema_of(spec: SchemaSpec) -> dict[str, Any]:
    """The JSON Schema document of ``spec``."""
    generated = spec.model.model_json_schema(by_alias=True, mode="serialization")
    generated.pop("title", None)
    return {"$schema": DRAFT_2020_12, "$id": spec.schema_id, "title": spec.title, **generated}


def render(spec: SchemaSpec) -> str:
    """The file content for ``spec`` (2-space JSON, UTF-8, final newline)."""
    return json.dumps(schema_of(spec), indent=2, ensure_ascii=False) + "\n"


def stale(directory: Path = DEFAULT_DIR) -> list[Path]:
    """The schema files that are missing or differ from what the models generate."""
    out = []
    for spec in specs():
        path = directory / spec.filename
        if not path.is_file() or path.read_text(encoding="utf-8") != render(spec):
            out.append(path)
    return out


def write(directory: Path = DEFAULT_DIR) -> list[Path]:
    """(Re)write every schema file that changed; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for path in stale(directory):
        spec = next(s for s in specs() if s.filename == path.name)
        path.write_text(render(spec), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m call_enricher_tools.schemas",
        description="Generate (or --check) the committed JSON Schemas of events and items.",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a schema is stale")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="schema directory")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.dir)
        for path in outdated:
            print(f"stale: {path} (run: python -m call_enricher_tools.schemas)", file=sys.stderr)
        if not outdated:
            print(f"{len(specs())} schemas up to date in {args.dir}")
        return 1 if outdated else 0
    written = write(args.dir)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"{len(specs())} schemas already up to date in {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
