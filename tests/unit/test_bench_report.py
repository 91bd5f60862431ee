"""Tests of the benchmark machinery (bench/): the table, the JSON, the stand-ins' counting.

No timing assertions: figures are never checked against their goals here, only that the
machinery computes and reports them faithfully.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from moto import mock_aws

from bench import __main__ as bench_main
from bench.batch import fake_outbox, publish_stream, publisher_batch_size, stream_changes
from bench.latency import percentile, sent_at
from bench.report import check, figure, render, section, write_json
from bench.size import measure
from bench.standins import AwsServer, FakeAws, SinchProcess
from call_enricher import errors
from call_enricher.enrichment import enrich
from call_enricher.items import FailureRecorder, parse_item
from call_enricher.model import parse_call_record
from call_enricher.state import Failure, failure_from_error, retry_trace
from call_enricher.storage import CallStore, WriteOutcome

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


def test_a_failing_module_is_reported_and_the_others_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two modules, one of which raises
    import sys
    import types

    def broken(quick: bool = False) -> list[Any]:
        raise RuntimeError("no stand-in\nsecond line")

    def working(quick: bool = False) -> list[Any]:
        return [figure("fine", 1.0, "ms", "<= 2")]

    for name, run in (("broken", broken), ("working", working)):
        module = types.ModuleType(f"bench.{name}")
        module.run = run  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, f"bench.{name}", module)
    monkeypatch.setattr(bench_main, "MODULES", {"broken": "B", "working": "W"})
    target = tmp_path / "latest.json"
    # When both run
    code = bench_main.main(["--output", str(target)])
    # Then the failure is one unmeasured figure, the other module's figures are kept, exit 1
    figures = json.loads(target.read_text())["figures"]
    assert code == 1
    assert [f["name"] for f in figures] == ["broken: not measured", "fine"]
    assert figures[0]["value"] is None
    assert figures[0]["note"] == "RuntimeError: no stand-in"
    assert "modules that failed (1): broken: not measured" in capsys.readouterr().out


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


# -- stand-ins: the in-memory table answers as DynamoDB (moto) does -----------------------

RECORD: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "events" / "sinch" / "answered-us-to-gb.json").read_text()
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _enriched(record: dict[str, Any]) -> Any:
    return enrich(parse_call_record(record), enriched_at=T0)


class _Clock:
    """One second later at each reading (the same sequence for the fake and for moto)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def _failure(error: errors.CallEnricherError, call_id: str | None, at: datetime = T0) -> Failure:
    return failure_from_error(error, failed_at=at, call_id=call_id, attempts=1, source_id="m-1")


def _every_write(client: Any) -> tuple[list[Any], dict[str, Any]]:
    """Every write form the store and the publisher send, in the cases that matter: the
    answers, and the items they leave (as StoredCall, by key)."""
    store = CallStore("calls", client=client, clock=_Clock())
    recorder = FailureRecorder("calls", client=client)
    final = _enriched(RECORD)
    call_id = final.call_id
    ongoing = _enriched({**RECORD, "status": "ONGOING", "duration": 1})
    corrected = _enriched({**RECORD, "duration": RECORD["duration"] + 1})
    not_found = errors.CallNotFoundError("Call not found", http_status=404, sinch_error_code=40400)
    too_large = errors.EventTooLargeError("too large")
    transient = errors.TransientError("Sinch answered 503", http_status=503)
    at = T0 + timedelta(hours=1)
    answers: list[Any] = [
        store.note_retry("retried", retry_trace(transient, at=at, attempt=2)),  # new item
        store.save(_enriched({**RECORD, "callId": "retried"})).outcome,  # removes lastError
        store.save(ongoing).outcome,  # CREATED, ONGOING
        store.save(ongoing).outcome,  # UNCHANGED
        store.fail(call_id, _failure(not_found, call_id)).outcome,  # FAILED, record kept
        store.fail(call_id, _failure(not_found, call_id)).outcome,  # UNCHANGED
        store.note_retry(call_id, retry_trace(transient, at=at, attempt=3)),  # on ONGOING
        store.save(final).outcome,  # UPDATED to FINAL, failure and lastError removed
        store.save(final).outcome,  # UNCHANGED
        store.save(ongoing).outcome,  # REFUSED_REGRESSION
        store.fail(call_id, _failure(not_found, call_id, at)).outcome,  # KEPT_FINAL
        store.note_retry(call_id, retry_trace(transient, at=at, attempt=4)),  # not on FINAL
        store.save(corrected).outcome,  # UPDATED (a correction of a FINAL)
        recorder.record_unpublishable(call_id, 3, _failure(too_large, call_id)),
        recorder.record_unpublishable(call_id, 3, _failure(too_large, call_id)),  # recorded
        recorder.record_unpublishable(call_id, 2, _failure(too_large, call_id, at)),  # stale
        recorder.record_unpublishable("absent", 1, _failure(too_large, "absent")),
        store.fail("msg:m-2", _failure(errors.MalformedMessageError("bad"), None)).outcome,
    ]
    keys = [call_id, "retried", "msg:m-2", "absent"]
    items = {key: store.get(key) for key in keys}
    summaries = store.get_many(keys)
    answers.append({key: summary.model_dump() for key, summary in summaries.items()})
    return answers, items


@pytest.fixture
def moto_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The calls table in in-process moto, with its stream (new and old images)."""
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        client.create_table(
            TableName="calls",
            KeySchema=[{"AttributeName": "callId", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "callId", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        yield client


def _moto_stream(client: Any) -> list[tuple[str, Any, Any]]:
    """(key, old, new) of each record of moto's stream, in order, images parsed (moto's
    extra key-only INSERT before an UpdateItem's INSERT dropped: DynamoDB has none)."""
    streams = boto3.client("dynamodbstreams", region_name="eu-west-1")
    arn = client.describe_table(TableName="calls")["Table"]["LatestStreamArn"]
    out = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
        for record in records:
            change = record["dynamodb"]
            old, new = change.get("OldImage"), change.get("NewImage")
            if record["eventName"] == "INSERT" and set(new or {}) == {"callId"}:
                continue
            out.append(
                (
                    change["Keys"]["callId"]["S"],
                    parse_item(old) if old else None,
                    parse_item(new) if new else None,
                )
            )
    return out


def test_fake_table_answers_every_write_as_moto_does(moto_table: Any) -> None:
    # Given the same sequence of every write form (save, fail, note_retry and the
    # publisher's record_unpublishable, each where its condition holds and where it does not)
    # When run on moto's DynamoDB and on the in-memory fake
    expected_answers, expected_items = _every_write(moto_table)
    aws = FakeAws()
    answers, items = _every_write(aws.client("dynamodb"))
    # Then every answer and every item left is the same
    assert answers == expected_answers
    assert items == expected_items
    # and they are what the store promises (the script's comments)
    assert answers[:13] == [
        True,
        WriteOutcome.CREATED,
        WriteOutcome.CREATED,
        WriteOutcome.UNCHANGED,
        WriteOutcome.FAILED,
        WriteOutcome.UNCHANGED,
        True,
        WriteOutcome.UPDATED,
        WriteOutcome.UNCHANGED,
        WriteOutcome.REFUSED_REGRESSION,
        WriteOutcome.KEPT_FINAL,
        False,
        WriteOutcome.UPDATED,
    ]
    assert answers[13:18] == [True, False, False, False, WriteOutcome.FAILED]
    assert items["absent"] is None
    assert items["retried"] is not None
    assert items["retried"].last_error is None
    # and the fake's stream holds the changes moto's does, with the same images
    fake_stream = [
        (r.key, parse_item(r.old) if r.old else None, parse_item(r.new) if r.new else None)
        for r in aws.dynamodb.stream
    ]
    assert fake_stream == _moto_stream(moto_table)
    assert len(fake_stream) == 9  # one per write that changed an item


def test_fake_table_refuses_placeholders_dynamodb_refuses() -> None:
    # Given the fake table
    client = FakeAws().client("dynamodb")
    update = {
        "TableName": "calls",
        "Key": {"callId": {"S": "a"}},
        "UpdateExpression": "SET #state = :s",
        "ExpressionAttributeNames": {"#state": "state"},
    }
    # When a value is defined but unused, or used but undefined / Then ValidationException
    for values in ({":s": {"S": "x"}, ":extra": {"S": "y"}}, {}):
        with pytest.raises(ClientError) as refused:
            client.update_item(**update, ExpressionAttributeValues=values)
        assert refused.value.response["Error"]["Code"] == "ValidationException"


def test_fake_table_counts_each_call_per_operation() -> None:
    # Given the store on the fake / When it saves twice and reads a summary
    aws = FakeAws()
    store = CallStore("calls", client=aws.client("dynamodb"))
    store.save(_enriched(RECORD))
    store.save(_enriched(RECORD))
    store.get_many([RECORD["callId"], "absent"])
    # Then each call is counted, and only the write that changed the item is on the stream
    assert aws.calls() == {"UpdateItem": 2, "BatchGetItem": 1}
    assert [r.key for r in aws.dynamodb.stream] == [RECORD["callId"]]
    aws.reset_counts()
    assert aws.calls() == {}


# -- the stream publisher's share (bench.batch) ---------------------------------------------


def test_stream_records_become_the_changes_the_publisher_announces() -> None:
    # Given 23 new versions, a re-save that changed nothing and a failure state on the fake
    aws = FakeAws()
    store = CallStore("calls", client=aws.client("dynamodb"))
    ids = [f"{i:032x}" for i in range(23)]
    for call_id in ids:
        store.save(_enriched({**RECORD, "callId": call_id}))
    store.save(_enriched({**RECORD, "callId": ids[0]}))
    store.fail("msg:m-9", _failure(errors.MalformedMessageError("bad"), None))
    records = aws.dynamodb.stream_since(0)
    # When they are handed to the real outbox publisher in stream batches of 10
    aws.reset_counts()
    totals = publish_stream(fake_outbox(aws), records, 10)
    # Then each change is one event, sent in PutEvents requests of at most 10 entries
    assert len(records) == 24
    assert [c.item_key for c in stream_changes(records)] == [*ids, "msg:m-9"]
    assert totals == {"published": 24, "rejected": 0, "failed": 0, "invocations": 3}
    assert aws.calls() == {"PutEvents": 3}
    assert aws.events.entries == 24


def test_publisher_batch_size_is_the_template_default() -> None:
    # Given the template / Then the stream batch is its PublisherBatchSize default
    assert publisher_batch_size() >= 10


# -- end-to-end latency (bench.latency): the pure parts ------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"), [(50, 50.0), (99, 99.0), (100, 100.0), (1, 1.0), (0.5, 1.0)]
)
def test_percentile_is_the_nearest_rank(q: float, expected: float) -> None:
    # Given 1..100 shuffled / When the q-th percentile is taken / Then the nearest rank
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, q) == expected


def test_percentile_of_nothing_is_nan_and_q_is_checked() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 0)


def test_sent_at_reads_the_bench_stamp_of_call_enriched_events_only() -> None:
    # Given the envelope of a Call Enriched event carrying the bench's send time
    envelope = {
        "detail-type": "Call Enriched",
        "detail": {
            "callId": "c1",
            "storedAt": "2026-01-01T00:00:01.500Z",
            "context": {"benchSentAt": T0.timestamp()},
        },
    }
    # Then the call, the send time and the store time are read; other events are ignored
    assert sent_at(envelope) == ("c1", T0.timestamp(), T0.timestamp() + 1.5)
    assert sent_at({**envelope, "detail-type": "Call Enrichment Failed"}) is None
    assert sent_at({**envelope, "detail": {**envelope["detail"], "context": None}}) is None


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
        # When the store writes three times, and the other services are called once each
        first = _enriched(RECORD)
        store.save(first)
        unchanged = store.save(first)
        kept = store.fail(first.call_id, _failure(errors.CallNotFoundError("gone"), "x"))
        put = events.put_events(Entries=[{"Source": "s", "DetailType": "d", "Detail": "{}"}])
        sqs.send_message(QueueUrl=server.url + "/1/q", MessageBody="hello")
        secret = secrets.get_secret_value(SecretId="sinch")
        # Then the answers parse as AWS's (conditional failures included) and are counted
        assert unchanged.outcome is WriteOutcome.UNCHANGED
        assert kept.outcome is WriteOutcome.KEPT_FINAL
        assert kept.stored.version == 1
        assert put["FailedEntryCount"] == 0
        assert json.loads(secret["SecretString"])["applicationKey"]
        assert server.aws.calls() == {
            "UpdateItem": 3,
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
