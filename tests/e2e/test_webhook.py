"""Webhook delivery through ``call-enricher local up --webhook``: sandbox calls go through the
real queue handler and stream publisher, the template's webhook rule picks the events its
filters name, and the delivery POSTs them with the connection's key to the local receiver.
Terminal states are polled for with a generous overall timeout; nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import functools
import io
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from call_enricher_tools.cli import build_parser
from call_enricher_tools.local import up
from call_enricher_tools.local.runner import PipelineOptions
from call_enricher_tools.local.submit import cmd_submit
from call_enricher_tools.sandbox.records import make_call_id
from tests.support.console import Console
from tests.support.waiting import poll_until

pytestmark = pytest.mark.slow

wait_until = functools.partial(poll_until, timeout=60.0, interval=0.1)


def test_local_up_webhook_delivers_the_filtered_events_with_the_key(tmp_path: Path) -> None:
    # Given `local up --webhook` (the template's default filters: FINAL records and failures)
    options = PipelineOptions(
        api_port=0,
        log_file=tmp_path / "handlers.log",
        stack_name=f"hook-{uuid.uuid4().hex[:6]}",
        webhook=True,
        sandbox_options={"ongoing_seconds": 3600},  # the ONGOING call stays ONGOING
    )
    out, err = Console(), Console()
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(up.run_local_up(options, stdout=out, stderr=err, stop=stop))
    )
    thread.start()
    try:
        assert wait_until(lambda: "Ctrl-C stops everything" in out.text() or not thread.is_alive())
        banner = out.text()
        # Then the banner says where events go, which ones, and the key the receiver expects
        hook = re.search(
            r"webhook\s+(http://127\.0\.0\.1:\d+/events) \(a local receiver; header x-api-key: "
            r"(\S+)\)",
            banner,
        )
        assert hook, banner + err.text()
        assert "delivers Call Enriched,Call Enrichment Failed (Call Enriched when FINAL)" in banner
        assert "WebhookDeadLetterQueue" in banner
        queue_url = re.search(r"export QUEUE_URL=(\S+)", banner)
        assert queue_url
        # When a FINAL call, an ONGOING call and an unknown call are submitted
        final = re.search(r"submit --queue-url \$QUEUE_URL (\w+)", banner)
        assert final
        final_id = final.group(1)
        ongoing_id = "7d8e9f0a1b2c3d4e5f60718293a4b5c6"  # the sandbox's seeded ONGOING call
        unknown_id = make_call_id(999, 1, salt="nobody")
        args = argparse.Namespace(
            call_ids=[final_id, ongoing_id, unknown_id], file=None,
            queue_url=queue_url.group(1), region=None, endpoint_url=None,
        )  # fmt: skip
        assert cmd_submit(args, io.StringIO(), io.StringIO()) == 0
        # Then the FINAL record's event and the failure's are delivered (the receiver
        # answers 401 without the key), each announced by one [webhook] line
        assert wait_until(lambda: f"[webhook] {final_id}:v1: delivered, HTTP 200" in out.text())
        assert wait_until(
            lambda: (
                re.search(rf"\[webhook\] {unknown_id}:failed:\S+: delivered, HTTP 200", out.text())
                is not None
            )
        )
        # ... and the ONGOING call's event reaches the bus, but not the webhook
        assert wait_until(lambda: f"Call Enriched: {ongoing_id}" in out.text())
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result == [0], err.text()
    webhook_lines = [line for line in out.text().splitlines() if line.startswith("[webhook]")]
    assert not [line for line in webhook_lines if ongoing_id in line]
    assert len(webhook_lines) == 2, webhook_lines


def test_the_webhook_flag_turns_the_delivery_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the parser `call-enricher` runs
    seen: list[PipelineOptions] = []

    def fake_run(options: PipelineOptions, **_: Any) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(up, "run_local_up", fake_run)
    for argv, expected in ((["local", "up", "--webhook"], True), (["local", "up"], False)):
        args = build_parser().parse_args(argv)
        # When `local up` is run with or without --webhook
        assert args.func(args, io.StringIO(), io.StringIO()) == 0
        # Then the pipeline is asked for the webhook exactly then
        assert seen.pop().webhook is expected
