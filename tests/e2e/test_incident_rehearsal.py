"""An incident rehearsed on the local stack, through the CLI, as an operator would.

`local up` runs (as the command runs it, on free ports, with MaxReceiveCount lowered so a
failing call reaches the DLQ after two deliveries); the sandbox is told to answer 503 for
one call (its fault injection: ``POST /_sandbox/calls/{id}/script``); the call is
submitted; `local up` prints the line saying it moved to the DLQ with its last error;
``ops status`` and ``ops dlq list`` show it and why; the fault is cleared ("the fix");
``ops dlq redrive`` sends it back; ``GET /calls/{id}`` ends FINAL without ``lastError``.

Everything is polled for with a generous timeout: nothing asserts on timing.
"""

from __future__ import annotations

import functools
import io
import json
import re
import threading
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from call_enricher_tools import ops
from call_enricher_tools.cli import main as cli_main
from call_enricher_tools.local.runner import PipelineOptions
from call_enricher_tools.local.up import run_local_up
from tests.support.console import Console
from tests.support.waiting import poll_until

pytestmark = pytest.mark.slow

OVERALL_TIMEOUT = 90.0


wait_until = functools.partial(poll_until, timeout=OVERALL_TIMEOUT, interval=0.2)


def http(method: str, url: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_a_call_failing_into_the_dlq_is_explained_fixed_redriven_and_ends_final(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given `local up` with MaxReceiveCount=2 (the DLQ after two deliveries)
    monkeypatch.setenv(ops.LOCAL_STATE_ENV, str(tmp_path / "local"))
    stack_name = f"drill-{uuid.uuid4().hex[:6]}"
    out, err = Console(), Console()
    stop = threading.Event()
    options = PipelineOptions(
        api_port=0,
        parameters={"MaxReceiveCount": "2"},
        visibility_timeout_seconds=5,  # outlasts a failing batch on a loaded machine
        log_file=tmp_path / "handlers.log",
        stack_name=stack_name,
    )
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(run_local_up(options, stdout=out, stderr=err, stop=stop))
    )
    thread.start()
    target = ("--local-stack", stack_name)
    try:
        assert wait_until(lambda: "Ctrl-C stops everything" in out.text() or not thread.is_alive())
        banner = out.text()
        sandbox = re.search(r"Sinch sandbox\s+(http://127\.0\.0\.1:\d+)", banner)
        api = re.search(r"HTTP API\s+(http://127\.0\.0\.1:\d+)", banner)
        queue_url = re.search(r"export QUEUE_URL=(\S+)", banner)
        assert sandbox, err.text()
        assert api
        assert queue_url
        assert "ops status --local" in banner
        _, calls = http("GET", f"{sandbox.group(1)}/_sandbox/calls?kind=final")
        call_id = calls["calls"][0]["callId"]

        # And the sandbox scripted to answer 503 for that call, far more often than retried
        status, _ = http(
            "POST", f"{sandbox.group(1)}/_sandbox/calls/{call_id}/script", {"steps": ["503"] * 500}
        )
        assert status == 200

        # When the call is submitted
        code, _, submit_err = cli("submit", "--queue-url", queue_url.group(1), call_id)
        assert code == 0, submit_err

        # Then `local up` prints that its message moved to the DLQ, with its last error
        assert wait_until(lambda: f"(call {call_id}) moved to the DLQ" in out.text()), out.text()
        moved = next(line for line in out.text().splitlines() if line.startswith("[dlq]"))
        assert re.search(r"retrying: sinch-unavailable, attempt \d+ \(HTTP 503", moved), moved
        # ... and each retried batch was one readable line, without a traceback
        retried = [line for line in out.text().splitlines() if "every record failed" in line]
        assert retried, out.text()
        assert all(
            re.fullmatch(
                r"\[poller \d+\] batch of 1( \(1 redelivered\))?: FAILED \(every record "
                r"failed: RetryLater: sinch-unavailable\); all 1 retried later in \d+ ms",
                line,
            )
            for line in retried
        ), retried
        assert "Traceback" not in out.text()

        # And `ops status` counts it, `ops dlq list` explains it from the table
        code, status_out, status_err = cli("ops", "status", *target)
        assert code == ops.EXIT_OK, status_err
        assert re.search(r"dead-letter queue\s+1 message", status_out), status_out
        code, listing, list_err = cli("ops", "dlq", "list", *target)
        assert code == ops.EXIT_OK, list_err
        row = next(line for line in listing.splitlines() if call_id in line)
        assert re.search(r"retrying: sinch-unavailable, attempt \d+ \(HTTP 503", row), row
        # (listing consumed nothing: it is still there)
        assert "1 listed of about 1" in listing
        _, before = http("GET", f"{api.group(1)}/calls/{call_id}")
        assert before["state"] == "retrying"
        assert before["lastError"]["reason"] == "sinch-unavailable"

        # When the cause is fixed (the sandbox answers normally again) and the DLQ redriven
        status, _ = http(
            "POST", f"{sandbox.group(1)}/_sandbox/calls/{call_id}/script", {"steps": []}
        )
        assert status == 200
        code, redrive, redrive_err = cli("ops", "dlq", "redrive", *target)
        assert code == ops.EXIT_OK, redrive_err
        assert "1 message(s) moved" in redrive

        # Then the call ends FINAL, its retry trace gone, and the DLQ is empty
        def final() -> bool:
            code, body = http("GET", f"{api.group(1)}/calls/{call_id}")
            return code == 200 and body.get("status") == "FINAL"

        assert wait_until(final), out.text()
        _, after = http("GET", f"{api.group(1)}/calls/{call_id}")
        assert after["state"] == "enriched"
        assert after.get("lastError") is None
        assert wait_until(lambda: f"Call Enriched: {call_id} FINAL" in out.text())
        code, listing, _ = cli("ops", "dlq", "list", *target)
        assert code == ops.EXIT_OK
        assert "is empty" in listing
    finally:
        stop.set()
        thread.join(timeout=60)
    # and `local up` stopped cleanly, taking its record for `ops --local` with it
    assert result == [0]
    assert list((tmp_path / "local").glob("*.json")) == []
