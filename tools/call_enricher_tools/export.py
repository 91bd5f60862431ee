"""``call-enricher export``: the stored calls of one UTC day or several, as JSON Lines or CSV.

Reads the calls table's ByDay index (:class:`call_enricher.search.CallSearch`, what
``GET /calls?day=`` serves) of a deployed stack (``--stack NAME``, found through its
CloudFormation outputs, with your AWS configuration) or of the local stack (``--local``),
day after day, a page of 500 at a time. It needs ``dynamodb:Query`` on that index and
``cloudformation:DescribeStacks``.

* ``jsonl`` (default): one call per line, as ``GET /calls/{callId}`` answers it (the whole
  record, phone numbers included: treat the file as the call records it is).
* ``csv``: the columns an analyst picks (:data:`CSV_COLUMNS`), numbers masked
  (``+44********23``), money as exact decimals.

The file goes to ``--output`` (else stdout); a progress line on stderr (a terminal, or
``--progress``) and a count at the end. Exit codes as ``ops``: 0 done, 2 bad input (a date,
a range over :data:`MAX_DAYS` days, a stack without the table output), 3 AWS failed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final, TextIO

from call_enricher_tools.ops import (
    EXIT_AWS,
    EXIT_CODES_EPILOG,
    EXIT_OK,
    OpsError,
    Progress,
    StackTarget,
    bad_input,
    progress_enabled,
    run_command,
    target_options,
)

MAX_DAYS: Final = 366
PAGE_SIZE: Final = 500
CSV_COLUMNS: Final = (
    "callId",
    "state",
    "status",
    "version",
    "fromKind",
    "fromCountry",
    "fromNumberType",
    "fromMasked",
    "toKind",
    "toCountry",
    "toNumberType",
    "toMasked",
    "outcome",
    "answered",
    "endedBy",
    "start",
    "end",
    "durationSeconds",
    "billableMinutes",
    "cost",
    "currency",
    "ratePerMinute",
    "riskLevel",
    "riskSignals",
    "failureReason",
    "failedAt",
)
"""The CSV's columns: the call, both parties (kind, country, number type, masked number),
the outcome, timing, money, risk, and the failure of a failed call."""


def _day(text: str) -> date:
    try:
        parsed = date.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or len(text) != len("YYYY-MM-DD"):
        raise bad_input(f"not a day: {text!r} (YYYY-MM-DD, UTC)")
    return parsed


def days(first: str, last: str | None) -> list[str]:
    """Every UTC day from ``first`` to ``last`` (inclusive; default: ``first`` only)."""
    start = _day(first)
    end = _day(last) if last else start
    if end < start:
        raise bad_input(f"--to {last} is before --day {first}")
    count = (end - start).days + 1
    if count > MAX_DAYS:
        raise bad_input(f"{count} days asked: export at most {MAX_DAYS} at a time")
    return [(start + timedelta(days=offset)).isoformat() for offset in range(count)]


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def csv_row(call: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row of a call as ``GET /calls/{callId}`` answers it (numbers masked)."""
    record = call.get("record") or {}
    row: dict[str, Any] = {
        "callId": call.get("callId"),
        "state": call.get("state"),
        "status": call.get("status"),
        "version": call.get("version"),
    }
    for side, key in (("from", "from"), ("to", "to")):
        party = _get(record, "parties", key) or {}
        row[f"{side}Kind"] = party.get("kind")
        row[f"{side}Country"] = _get(party, "phone", "country")
        row[f"{side}NumberType"] = _get(party, "phone", "numberType")
        row[f"{side}Masked"] = party.get("masked")
    signals = _get(record, "risk", "signals") or []
    row |= {
        "outcome": _get(record, "outcome", "outcome"),
        "answered": _get(record, "outcome", "answered"),
        "endedBy": _get(record, "outcome", "endedBy"),
        "start": _get(record, "time", "start"),
        "end": _get(record, "time", "end"),
        "durationSeconds": _get(record, "time", "durationSeconds"),
        "billableMinutes": _get(record, "time", "billableMinutes"),
        "cost": _get(record, "money", "debit", "amount"),
        "currency": _get(record, "money", "debit", "currency"),
        "ratePerMinute": _get(record, "money", "ratePerMinute", "amount"),
        "riskLevel": _get(record, "risk", "level"),
        "riskSignals": " ".join(str(s.get("code")) for s in signals if isinstance(s, Mapping)),
        "failureReason": _get(call, "failure", "reason"),
        "failedAt": _get(call, "failure", "failedAt"),
    }
    return {name: _cell(value) for name, value in row.items()}


def _cell(value: Any) -> Any:
    """A CSV cell: empty for null, ``true``/``false`` for booleans (as in the JSON)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def exported_calls(
    target: StackTarget, day_list: list[str], *, state: str | None, status: str | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(day, call as the API presents it)`` for every stored call of ``day_list``."""
    from call_enricher.api_models import call_resource
    from call_enricher.errors import CallEnricherError
    from call_enricher.search import CallSearch

    search = CallSearch(target.output("CallsTableName"), client=target.client("dynamodb"))
    for day in day_list:
        cursor: str | None = None
        while True:
            try:
                page = search.page(day, state=state, status=status, limit=PAGE_SIZE, cursor=cursor)
            except CallEnricherError as exc:  # CallSearch translates botocore's errors
                raise OpsError(f"DynamoDB Query failed: {exc}", EXIT_AWS) from None
            for stored in page.calls:
                yield day, call_resource(stored).model_dump(mode="json", by_alias=True)
            cursor = page.cursor
            if cursor is None:
                break


def cmd_export(target: StackTarget, out: TextIO, err: TextIO, args: argparse.Namespace) -> int:
    day_list = days(args.day, args.to)
    counts: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        output = out
        if args.output is not None:
            try:
                output = stack.enter_context(
                    Path(args.output).open("w", encoding="utf-8", newline="")
                )
            except OSError as exc:
                raise bad_input(f"cannot write {args.output}: {exc.strerror}") from None
        progress = Progress(err, "export", enabled=progress_enabled(args, err))
        stack.callback(progress.close)
        writer = (
            csv.DictWriter(output, fieldnames=CSV_COLUMNS, lineterminator="\n")
            if args.format == "csv"
            else None
        )
        if writer is not None:
            writer.writeheader()
        calls = exported_calls(target, day_list, state=args.state, status=args.status)
        for index, (day, call) in enumerate(calls, 1):
            if writer is not None:
                writer.writerow(csv_row(call))
            else:
                output.write(json.dumps(call, separators=(",", ":")) + "\n")
            counts[str(call.get("state"))] += 1
            if index % 100 == 0:
                progress.update(index, None, f"calls (at {day})")
        output.flush()
    total = sum(counts.values())
    span = day_list[0] if len(day_list) == 1 else f"{day_list[0]} to {day_list[-1]}"
    by_state = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
    where = f" to {args.output}" if args.output else ""
    print(
        f"exported {total} calls of {span} ({by_state}) from {target.describe}{where}",
        file=err,
    )
    return EXIT_OK


def add_export_command(subparsers: Any) -> None:
    """Register ``export`` on the CLI's subparsers."""
    export: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        parents=[target_options()],
        help="the stored calls of a day or several, as JSON Lines or CSV",
        description=(
            "The stored calls of one UTC day or several (their start day; a failure without"
            " a record: the day it failed), from a deployed stack (--stack NAME, your AWS"
            " configuration; needs dynamodb:Query on the calls table's ByDay index) or the"
            " local stack (--local). jsonl: one call per line as GET /calls/{callId} answers"
            " it (full numbers included); csv: the analyst's columns, numbers masked. A count"
            " at the end on stderr."
        ),
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--day", required=True, help="the first UTC day (YYYY-MM-DD)")
    export.add_argument("--to", default=None, help="the last UTC day (default: --day only)")
    export.add_argument("--state", choices=("enriched", "failed"), help="only calls in this state")
    export.add_argument("--status", choices=("FINAL", "ONGOING"), help="only this call status")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="(jsonl)")
    export.add_argument("--output", "-o", default=None, help="write here (default: stdout)")
    export.set_defaults(func=run_command(cmd_export))
