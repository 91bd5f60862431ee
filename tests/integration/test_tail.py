"""``call-enricher events tail`` through the CLI against a local stack's moto server: it
subscribes its own queue and rule to the bus, prints the events of the stack's source (and
detail types asked), and removes both on the way out."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from call_enricher.sinch.auth import SinchCredentials
from call_enricher_tools import ops
from call_enricher_tools.cli import main as cli_main
from call_enricher_tools.local.stack import LocalStack

pytestmark = pytest.mark.slow  # a moto server with the template's resources

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = {
    name: json.loads((ROOT / f"events/eventbridge/{name}.json").read_text())
    for name in ("call-enriched", "call-enrichment-failed")
}
CREDENTIALS = SinchCredentials(
    application_key="0b5e7c2a-0000-4aaa-8bbb-0a5000000003",
    application_secret="dGFpbC10ZXN0LXNlY3JldC1uZXZlci1sb2dnZWQ=",
)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    with LocalStack(
        sinch_credentials=CREDENTIALS,
        sinch_base_url="http://127.0.0.1:1",
        stack_name=f"tail-{uuid.uuid4().hex[:8]}",
    ) as started:
        monkeypatch.setenv(ops.LOCAL_STATE_ENV, str(tmp_path / "local"))
        ops.write_local_state(started.stack_name, started.endpoint_url, started.outputs())
        yield started


def tail_rules(stack: LocalStack) -> list[str]:
    bus = stack.outputs()["EventBusName"]
    rules = stack.client("events").list_rules(EventBusName=bus)["Rules"]
    return [r["Name"] for r in rules if r["Name"].startswith(f"{stack.stack_name}-tail-")]


def publish(stack: LocalStack, *envelopes: dict[str, object], source: str | None = None) -> None:
    outputs = stack.outputs()
    stack.client("events").put_events(
        Entries=[
            {
                "EventBusName": outputs["EventBusName"],
                "Source": source or outputs["EventSource"],
                "DetailType": str(envelope["detail-type"]),
                "Detail": json.dumps(envelope["detail"]),
            }
            for envelope in envelopes
        ]
    )


def test_tail_prints_the_stacks_events_of_the_types_asked_then_cleans_up(
    stack: LocalStack,
) -> None:
    out, err = io.StringIO(), io.StringIO()
    result: list[int] = []
    # Given `events tail --detail-type "Call Enrichment Failed" --json --max 1` running
    thread = threading.Thread(
        target=lambda: result.append(
            cli_main(
                ["events", "tail", "--local", "--detail-type", "Call Enrichment Failed",
                 "--json", "--max", "1", "--seconds", "60"],
                stdout=out, stderr=err,
            )
        )
    )  # fmt: skip
    thread.start()
    ends = time.monotonic() + 30
    while "Ctrl-C stops" not in err.getvalue() and time.monotonic() < ends:
        time.sleep(0.1)  # subscribed: its rule has its target
    assert tail_rules(stack), err.getvalue()
    # When a Call Enriched, an event of another source and a failure are published
    publish(stack, SAMPLES["call-enriched"])
    publish(stack, SAMPLES["call-enrichment-failed"], source="someone-else")
    publish(stack, SAMPLES["call-enrichment-failed"])
    thread.join(timeout=60)
    # Then only the failure of the stack's source is printed, as its whole envelope
    assert result == [ops.EXIT_OK], err.getvalue()
    (line,) = out.getvalue().splitlines()
    envelope = json.loads(line)
    assert envelope["detail-type"] == "Call Enrichment Failed"
    assert envelope["detail"] == SAMPLES["call-enrichment-failed"]["detail"]
    # ... and its rule and queue are gone
    assert tail_rules(stack) == []
    queues = stack.client("sqs").list_queues(QueueNamePrefix=f"{stack.stack_name}-tail-")
    assert queues.get("QueueUrls", []) == []
    assert "1 event(s); the tail's rule and queue are removed" in err.getvalue()


def test_tail_prints_one_line_per_event_by_default(stack: LocalStack) -> None:
    out, err = io.StringIO(), io.StringIO()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            cli_main(["events", "tail", "--local", "--max", "2", "--seconds", "60"],
                     stdout=out, stderr=err)
        )
    )  # fmt: skip
    thread.start()
    ends = time.monotonic() + 30
    while "Ctrl-C stops" not in err.getvalue() and time.monotonic() < ends:
        time.sleep(0.1)
    publish(stack, SAMPLES["call-enriched"], SAMPLES["call-enrichment-failed"])
    thread.join(timeout=60)
    assert result == [ops.EXIT_OK], err.getvalue()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert any(line.startswith("[event] Call Enriched: ") for line in lines), lines
    assert any(line.startswith("[event] Call Enrichment Failed: ") for line in lines), lines
