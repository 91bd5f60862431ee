"""The offline demo: every sample Get Call body in events/sinch/ through parse -> enrich.

Prints a readable table (call, parties with country, outcome, duration, cost, status) and
the full enriched JSON of one record. No network, no AWS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from call_enricher.enrichment import EnrichedCall, PartyInfo, enrich
from call_enricher.errors import CallEnricherError
from call_enricher.model import parse_call_record

COLUMNS = ("call", "from", "to", "outcome", "ended by", "duration", "cost", "status")


def _party(party: PartyInfo | None) -> str:
    if party is None:
        return "-"
    country = party.phone.country if party.phone and party.phone.country else None
    label = party.masked or party.kind.value
    return f"{label} ({country})" if country else f"{label} [{party.kind.value}]"


def _cost(enriched: EnrichedCall) -> str:
    debit = enriched.money.debit if enriched.money else None
    if debit is None or debit.amount is None:
        return "-"
    return f"{debit.amount} {debit.currency or ''}".strip()


def row(enriched: EnrichedCall) -> tuple[str, ...]:
    duration = enriched.time.duration_seconds if enriched.time else None
    return (
        enriched.call_id[:12] + "…",
        _party(enriched.parties.from_),
        _party(enriched.parties.to),
        enriched.outcome.outcome.value,
        enriched.outcome.ended_by.value,
        "-" if duration is None else f"{duration} s",
        _cost(enriched),
        enriched.status,
    )


def render_table(rows: list[tuple[str, ...]], columns: tuple[str, ...] = COLUMNS) -> str:
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def run_offline_demo(samples: Path, *, stdout: TextIO, stderr: TextIO) -> int:
    paths = sorted(samples.glob("*.json"))
    if not paths:
        print(f"error: no sample records in {samples}", file=stderr)
        return 2
    enriched: list[EnrichedCall] = []
    for path in paths:
        body = path.read_bytes()
        try:
            raw: dict[str, Any] = json.loads(body)
            enriched.append(enrich(parse_call_record(body), raw=raw))
        except CallEnricherError as exc:
            print(f"error: {path.name}: {exc.reason}: {exc.message}", file=stderr)
            return 4
    print(f"Enriched {len(enriched)} sample Sinch records from {samples} (offline):\n", file=stdout)
    print(render_table([row(e) for e in enriched]), file=stdout)
    example = next((e for e in enriched if e.is_final and e.money and e.money.debit), enriched[0])
    print(f"\nOne enriched record in full ({example.call_id}):\n", file=stdout)
    print(json.dumps(example.model_dump(mode="json", by_alias=True), indent=2), file=stdout)
    return 0
