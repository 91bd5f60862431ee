"""``call-enricher export`` through the CLI against a local stack's moto server (the
template's calls table and its ByDay index), with calls stored by the real storage adapter
from the sample records."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from call_enricher import errors
from call_enricher.enrichment import enrich
from call_enricher.model import parse_call_record
from call_enricher.sinch.auth import SinchCredentials
from call_enricher.state import failure_from_error
from call_enricher.storage import CallStore
from call_enricher_tools import ops
from call_enricher_tools.cli import main as cli_main
from call_enricher_tools.export import CSV_COLUMNS
from call_enricher_tools.local.stack import LocalStack

pytestmark = pytest.mark.slow  # a moto server with the template's resources

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "events/sinch").glob("*.json"))
CREDENTIALS = SinchCredentials(
    application_key="0b5e7c2a-0000-4aaa-8bbb-0a5000000002",
    application_secret="ZXhwb3J0LXRlc3Qtc2VjcmV0LW5ldmVyLWxvZ2dlZA==",
)
UNKNOWN = "7d8e9f0a1b2c4d5e8f7a6b5c4d3e2f1a"
FAILED_AT = dt.datetime(2024, 1, 8, 23, 59, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(
        sinch_credentials=CREDENTIALS,
        sinch_base_url="http://127.0.0.1:1",
        stack_name=f"export-{uuid.uuid4().hex[:8]}",
    ) as started:
        yield started


@pytest.fixture(scope="module")
def stored(stack: LocalStack) -> dict[str, dict[str, Any]]:
    """Every sample record stored as version 1, and an unknown call failed on 2024-01-08:
    each call's record JSON (None for the failure) by call ID."""
    store = CallStore(
        stack.function_environment()["CALLS_TABLE_NAME"], client=stack.client("dynamodb")
    )
    records: dict[str, Any] = {}
    for path in SAMPLES:
        raw = json.loads(path.read_text())
        call_id = str(raw.get("callId") or raw.get("callid"))
        enriched = enrich(parse_call_record(raw), raw=raw, call_id=call_id, base_url=None)
        store.save(enriched, entry_path="queue")
        records[call_id] = enriched.model_dump(mode="json", by_alias=True)
    missing = errors.CallNotFoundError("Sinch does not know the call", http_status=404)
    store.fail(UNKNOWN, failure_from_error(missing, failed_at=FAILED_AT, call_id=UNKNOWN))
    records[UNKNOWN] = None
    return records


@pytest.fixture(autouse=True)
def recorded(stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack recorded as running, as `local up` records it, so that --local finds it."""
    monkeypatch.setenv(ops.LOCAL_STATE_ENV, str(tmp_path / "local"))
    ops.write_local_state(stack.stack_name, stack.endpoint_url, stack.outputs())


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def day_of(record: dict[str, Any] | None) -> str | None:
    return FAILED_AT.date().isoformat() if record is None else record["time"]["utcDay"]


def test_jsonl_of_a_day_is_each_call_as_the_api_answers_it(
    stored: dict[str, dict[str, Any]],
) -> None:
    # Given the day that has both a stored record and a failure
    day = FAILED_AT.date().isoformat()
    expected = sorted(cid for cid, record in stored.items() if day_of(record) == day)
    assert len(expected) >= 2
    # When it is exported as JSON Lines
    code, out, err = run("export", "--local", "--day", day)
    # Then each of its calls is one line, with its state and record (or failure)
    assert code == ops.EXIT_OK, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["callId"] for line in lines) == expected
    by_id = {line["callId"]: line for line in lines}
    assert by_id[UNKNOWN]["state"] == "failed"
    assert by_id[UNKNOWN]["failure"]["reason"] == "call-not-found"
    enriched = next(line for cid, line in by_id.items() if cid != UNKNOWN)
    assert enriched["record"] == stored[enriched["callId"]]
    # ... and a count at the end, on stderr
    assert f"exported {len(expected)} calls of {day} (1 enriched, 1 failed)" in err


def test_csv_of_every_day_has_the_analysts_columns_and_masked_numbers(
    stored: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    # Given the days of 2024 (most samples fall on them)
    all_days = ["2024-01-01", "2024-12-31"]
    stored = {c: r for c, r in stored.items() if str(day_of(r)).startswith("2024-")}
    assert len(stored) >= 5
    target = tmp_path / "calls.csv"
    # When they are exported as CSV to a file, in one range
    code, out, err = run(
        "export", "--local", "--day", all_days[0], "--to", all_days[-1],
        "--format", "csv", "--output", str(target), "--progress",
    )  # fmt: skip
    # Then the file holds every call once, with the columns in order
    assert code == ops.EXIT_OK, err
    assert out == ""
    text = target.read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert sorted(r["callId"] for r in rows) == sorted(stored)
    assert f"exported {len(stored)} calls of {all_days[0]} to {all_days[-1]}" in err
    # ... with the figures of each record
    for row in rows:
        record = stored[row["callId"]]
        if record is None:
            assert (row["state"], row["failureReason"]) == ("failed", "call-not-found")
            continue
        debit = record["money"]["debit"] or {}
        assert row["cost"] == (debit.get("amount") or "")
        assert row["currency"] == (debit.get("currency") or "")
        assert row["start"] == (record["time"]["start"] or "")
        assert row["toMasked"] == ((record["parties"].get("to") or {}).get("masked") or "")
        assert row["riskLevel"] == record["risk"]["level"]
        assert row["answered"] == str(record["outcome"]["answered"]).lower()  # as in the JSON
    # ... and no full phone number anywhere in it
    numbers = {
        ((record["parties"].get(side) or {}).get("phone") or {}).get("e164")
        for record in stored.values()
        if record is not None
        for side in ("from", "to")
    } - {None}
    assert numbers
    assert not [number for number in numbers if number in text]


def test_filters_narrow_the_export(stored: dict[str, dict[str, Any]]) -> None:
    # Given the ONGOING calls stored, each on its day
    ongoing = {
        c: day_of(r) for c, r in stored.items() if r is not None and r["status"] == "ONGOING"
    }
    assert ongoing
    for call_id, day in ongoing.items():
        # When its day is exported for ONGOING calls only
        code, out, err = run("export", "--local", "--day", str(day), "--status", "ONGOING")
        # Then only the ONGOING calls of that day are in it
        assert code == ops.EXIT_OK, err
        assert call_id in {json.loads(line)["callId"] for line in out.splitlines()}
        assert {json.loads(line)["status"] for line in out.splitlines()} == {"ONGOING"}
    # ... and failed ones only with --state failed
    code, out, _ = run(
        "export", "--local", "--day", FAILED_AT.date().isoformat(), "--state", "failed"
    )
    assert [json.loads(line)["callId"] for line in out.splitlines()] == [UNKNOWN]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--day", "2024-1-8"), "not a day: '2024-1-8'"),
        (("--day", "2024-01-08", "--to", "2024-01-07"), "--to 2024-01-07 is before --day"),
        (("--day", "2024-01-01", "--to", "2025-12-31"), "export at most 366"),
    ],
)
def test_bad_days_are_bad_input_in_one_line(arguments: tuple[str, ...], message: str) -> None:
    code, out, err = run("export", "--local", *arguments)
    assert code == ops.EXIT_BAD_INPUT
    assert out == ""
    assert err.count("\n") == 1
    assert message in err


def test_the_documented_csv_columns_are_the_exported_ones() -> None:
    text = (ROOT / "docs/cli.md").read_text()
    paragraph = text.split("`export --format csv` columns:", 1)[1].split("\n\n", 1)[0]
    assert tuple(re.findall(r"`(\w+)`", paragraph)) == CSV_COLUMNS
