"""Handlers of the local stack share one process (each "function instance" is a thread):
Powertools' metric set is class-wide, so the local pollers make adding and flushing take one
lock (call_enricher_tools.local.poller.share_metrics_safely). Many threads adding and
flushing at once then never flush a set another thread just emptied."""

from __future__ import annotations

import contextlib
import io
import threading
import warnings

from call_enricher.observability import metrics
from call_enricher_tools.local.poller import share_metrics_safely

THREADS = 6
ROUNDS = 300


def test_concurrent_handlers_flush_metrics_without_a_schema_error() -> None:
    # Given the local stack's metrics lock
    share_metrics_safely()
    errors: list[BaseException] = []

    def handler_like() -> None:
        for _ in range(ROUNDS):
            try:
                metrics.add_metric(name="RecordsProcessed", unit="Count", value=1)
                metrics.flush_metrics()
            except BaseException as exc:
                errors.append(exc)

    # When several threads add and flush at once, as concurrent invocations do
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        threads = [threading.Thread(target=handler_like) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # Then no flush failed, and every count reached an EMF document
    assert errors == []
    assert sink.getvalue().count('"RecordsProcessed"') >= 1
