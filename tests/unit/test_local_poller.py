"""The local queue trigger (``call_enricher_tools.local.poller``): receives and deletes one at a
time (moto's SQS backend is not thread-safe), idle waits outside that turn."""

from __future__ import annotations

import threading
import time
from typing import Any

from call_enricher_tools.local.poller import Invocation, SqsPoller


class RecordingSqs:
    """An in-memory queue that records how many receive/delete calls overlap."""

    def __init__(self, bodies: list[str]) -> None:
        self._lock = threading.Lock()
        self.visible = [
            {"MessageId": f"m-{i}", "ReceiptHandle": f"r-{i}", "Body": body, "Attributes": {}}
            for i, body in enumerate(bodies)
        ]
        self.deleted: list[str] = []
        self.active = 0
        self.most_active = 0
        self.waits: list[int] = []

    def _enter(self) -> None:
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(0.002)  # widen the window an overlap would need

    def _leave(self) -> None:
        with self._lock:
            self.active -= 1

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self._enter()
        try:
            with self._lock:
                self.waits.append(int(kwargs["WaitTimeSeconds"]))
                count = int(kwargs["MaxNumberOfMessages"])
                taken, self.visible = self.visible[:count], self.visible[count:]
            return {"Messages": taken} if taken else {}
        finally:
            self._leave()

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self._enter()
        try:
            entries = kwargs["Entries"]
            with self._lock:
                self.deleted.extend(e["ReceiptHandle"] for e in entries)
            return {"Successful": [{"Id": e["Id"]} for e in entries]}
        finally:
            self._leave()


def test_pollers_never_overlap_their_receives_and_deletes() -> None:
    # Given 60 messages and four concurrent pollers with a handler that works a little
    sqs = RecordingSqs([f"body-{i}" for i in range(60)])
    invocations: list[Invocation] = []
    done = threading.Event()

    def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        time.sleep(0.01)
        return {"batchItemFailures": []}

    def on_invocation(invocation: Invocation) -> None:
        invocations.append(invocation)
        if sum(len(i.deleted_ids) for i in invocations) >= 60:
            done.set()

    poller = SqsPoller(
        sqs_client=sqs,
        queue_url="local-queue",
        queue_arn="arn:aws:sqs:eu-west-1:123456789012:local-queue",
        handler_factory=lambda _i: handler,
        function_name="fn",
        function_timeout_seconds=5,
        batch_size=5,
        batching_window_seconds=0,
        concurrency=4,
        on_invocation=on_invocation,
    )
    # When they drain the queue
    with poller:
        done.wait(30)
    # Then every message was handled and deleted once
    assert sorted(sqs.deleted) == sorted(f"r-{i}" for i in range(60))
    # And no two SQS calls were ever in flight at once, and none waited on the server side
    assert sqs.most_active == 1
    assert set(sqs.waits) == {0}
    # And each batch reports how long it was held, at least as long as its handler ran
    assert all(i.held_seconds >= i.elapsed_seconds > 0 for i in invocations)
