"""Tests of the benchmark machinery (bench/): the table, the JSON, the stand-ins' counting.

No timing assertions: figures are never checked against their goals here, only that the
machinery computes and reports them faithfully.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from bench import __main__ as bench_main
from bench.report import check, figure, render, section, write_json
from bench.size import measure
from bench.standins import AwsServer, FakeAws, SinchProcess
from call_enricher.enrichment import enrich
from call_enricher.model import parse_call_record
from call_enricher.storage import CallStore, SaveOutcome

# -- report ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "goal", "met"),
    [
        (1.25, "<= 1.25", True),
        (1.26, "<= 1.25", False),
        (8.0, ">= 8", True),
        (7.9, ">= 8", False),
        (0.0, "== 0", True),
        (1.0, "== 0", False),
        (0.4, "< 0.5", True),
        (0.5, "< 0.5", False),
        (math.nan, "<= 1", False),
    ],
)
def test_check_compares_the_value_with_the_goal(value: float, goal: str, met: bool) -> None:
    # Given a value and a goal / When checked / Then met is the comparison (NaN never meets)
    assert check(value, goal) is met


@pytest.mark.parametrize("goal", ["1.5", "=< 1.5", "<= x"])
def test_check_rejects_a_malformed_goal(goal: str) -> None:
    # Given a goal without a known operator or number / When checked / Then it is refused
    with pytest.raises(ValueError, match="bad goal"):
        check(1.0, goal)


def test_figure_without_goal_is_informational() -> None:
    # Given figures with and without a goal / Then met is None only without one
    assert figure("a", 3, "ms").met is None
    assert figure("b", 3, "ms", "<= 2").met is False


def test_render_marks_missed_goals_and_titles_sections() -> None:
    # Given a section, a met, a missed and an informational figure
    figures = [
        section("1. cold start"),
        figure("ratio", 1.1, "ratio", "<= 1.5", "fine"),
        figure("writes", 2, "calls", "<= 1.0"),
        figure("info", 12.3456, "MB"),
        figure("absent", math.nan, "ratio", note="missing"),
    ]
    # When rendered
    lines = render(figures).splitlines()
    # Then the header comes first, the section is a title, and each figure says yes/NO/blank
    assert lines[0].split() == ["figure", "value", "unit", "goal", "met", "note"]
    assert lines[2] == "[1. cold start]"
    assert lines[3].split()[:6] == ["ratio", "1.1", "ratio", "<=", "1.5", "yes"]
    assert lines[4].split()[:6] == ["writes", "2", "calls", "<=", "1.0", "NO"]
    assert lines[5].split() == ["info", "12.35", "MB"]
    assert lines[6].split()[:3] == ["absent", "n/a", "ratio"]
    # and the columns are aligned: every value starts at the same offset
    offsets = {line.index(line.split()[1], len(line.split()[0])) for line in lines[3:6]}
    assert len(offsets) == 1


def test_write_json_keeps_figures_with_their_group_and_the_machine(tmp_path: Path) -> None:
    # Given figures in two sections, one value not measured
    figures = [
        section("A"),
        figure("x", 1.0, "ms", "<= 2"),
        section("B"),
        figure("y", math.nan, "ratio", note="missing"),
    ]
    target = tmp_path / "out" / "latest.json"
    # When written
    write_json(figures, target, quick=True, seconds=1.5)
    document = json.loads(target.read_text())
    # Then sections are not figures, NaN is null, each figure has value/unit/goal/met
    assert [f["name"] for f in document["figures"]] == ["x", "y"]
    x, y = document["figures"]
    assert x == {
        "name": "x",
        "value": 1.0,
        "unit": "ms",
        "goal": "<= 2",
        "met": True,
        "note": "",
        "group": "A",
    }
    assert y["value"] is None
    assert y["met"] is None
    assert y["group"] == "B"
    assert document["quick"] is True
    assert document["machine"]["python"].startswith("3.")
    assert datetime.fromisoformat(document["generatedAt"]).tzinfo is not None


def test_main_refuses_unknown_modules(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a module name that does not exist / When run / Then argparse stops with usage
    with pytest.raises(SystemExit) as stopped:
        bench_main.main(["--only", "cpu,nope"])
    assert stopped.value.code == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_cpu_module_runs_quick_and_writes_its_figures(tmp_path: Path) -> None:
    # Given --quick --only cpu / When run / Then the table's figures are in the JSON
    target = tmp_path / "latest.json"
    assert bench_main.main(["--quick", "--only", "cpu", "--output", str(target)]) == 0
    names = [f["name"] for f in json.loads(target.read_text())["figures"]]
    assert "cpu/record, cold phone cache" in names
    assert all(isinstance(f, dict) for f in json.loads(target.read_text())["figures"])


def test_every_module_has_a_run_function() -> None:
    # Given the registry of modules / Then each one imports and exposes run(quick)
    import importlib
    import inspect

    for name in bench_main.MODULES:
        module = importlib.import_module(f"bench.{name}")
        assert "quick" in inspect.signature(module.run).parameters


# -- stand-ins ------------------------------------------------------------------------------

RECORD: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "events" / "sinch" / "answered-us-to-gb.json").read_text()
)


def _enriched(record: dict[str, Any]) -> Any:
    return enrich(parse_call_record(record), enriched_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_fake_dynamodb_behaves_like_the_table_for_call_store() -> None:
    # Given the call store on the in-memory fake
    aws = FakeAws()
    store = CallStore("calls", client=aws.client("dynamodb"))
    first = _enriched(RECORD)
    # When a record is saved twice, published, then changed
    created = store.save(first)
    again = store.save(first)
    store.mark_published(first.call_id, 1)
    store.mark_published(first.call_id, 1)  # a repeated mark is a no-op
    changed = store.save(_enriched({**RECORD, "duration": RECORD["duration"] + 1}))
    # Then the outcomes are those of the real conditional writes
    assert created.outcome is SaveOutcome.CREATED
    assert again.outcome is SaveOutcome.UNCHANGED
    assert changed.outcome is SaveOutcome.UPDATED
    assert changed.stored.version == 2
    assert changed.needs_publish
    stored = store.get_many([first.call_id, "absent"])
    assert list(stored) == [first.call_id]
    assert stored[first.call_id].published_version == 1
    # and every call was counted per operation
    assert aws.calls() == {"UpdateItem": 5, "BatchGetItem": 1}


def test_fake_dynamodb_refuses_a_final_to_ongoing_regression() -> None:
    # Given a FINAL record stored
    aws = FakeAws()
    store = CallStore("calls", client=aws.client("dynamodb"))
    store.save(_enriched(RECORD))
    # When an ONGOING version arrives / Then it is refused
    ongoing = _enriched({**RECORD, "status": "ONGOING", "duration": 1})
    assert store.save(ongoing).outcome is SaveOutcome.REFUSED_REGRESSION


@pytest.fixture
def sinch() -> Iterator[SinchProcess]:
    with SinchProcess(0.0) as process:
        yield process


def test_sinch_stand_in_counts_connections_at_the_server(sinch: SinchProcess) -> None:
    # Given the counts reset
    sinch.reset()
    url = sinch.url + "/calling/v1/calls/id/abc"
    # When three requests share one session and two more use no session
    with requests.Session() as session:
        bodies = [session.get(url, timeout=5).json() for _ in range(3)]
    for _ in range(2):
        requests.get(url, timeout=5).raise_for_status()
    # Then the server saw 5 requests on 3 connections, and the record is stable per call ID
    assert sinch.stats() == {"connections": 3, "requests": 5}
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["callId"] == "abc"
    parse_call_record(bodies[0])


def test_aws_server_answers_boto3_over_the_json_protocols(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given boto3 clients pointed at the AWS stand-in
    with AwsServer() as server:
        kwargs = {
            "endpoint_url": server.url,
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        store = CallStore("calls", client=boto3.client("dynamodb", **kwargs))
        events = boto3.client("events", **kwargs)
        sqs = boto3.client("sqs", **kwargs)
        secrets = boto3.client("secretsmanager", **kwargs)
        # When the store writes twice, and the other services are called once each
        first = _enriched(RECORD)
        store.save(first)
        unchanged = store.save(first)
        put = events.put_events(Entries=[{"Source": "s", "DetailType": "d", "Detail": "{}"}])
        sqs.send_message(QueueUrl=server.url + "/1/q", MessageBody="hello")
        secret = secrets.get_secret_value(SecretId="sinch")
        # Then the answers parse as AWS's (conditional failures included) and are counted
        assert unchanged.outcome is SaveOutcome.UNCHANGED
        assert put["FailedEntryCount"] == 0
        assert json.loads(secret["SecretString"])["applicationKey"]
        assert server.aws.calls() == {
            "UpdateItem": 2,
            "PutEvents": 1,
            "SendMessage": 1,
            "GetSecretValue": 1,
        }


# -- size -------------------------------------------------------------------------------------


def test_size_attributes_files_to_distributions(tmp_path: Path) -> None:
    # Given a layer tree with one distribution (and its RECORD) and the library
    tree = tmp_path / "python"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("x = 1\n" * 1000)
    info = tree / "pkg_dist-1.0.dist-info"
    info.mkdir()
    (info / "RECORD").write_text("pkg/__init__.py,sha256=x,6000\npkg_dist-1.0.dist-info/RECORD,,\n")
    (tree / "call_enricher").mkdir()
    (tree / "call_enricher" / "m.py").write_text("y = 2\n")
    # When measured
    total, zipped, unzipped, zipped_by = measure(tree)
    # Then every byte is attributed, and the zip is smaller than the tree
    assert unzipped["pkg-dist"] == 6000 + len((info / "RECORD").read_bytes())
    assert unzipped["call-enricher"] == 6
    assert total == sum(unzipped.values())
    assert 0 < zipped < total
    assert zipped_by["pkg-dist"] < unzipped["pkg-dist"]
