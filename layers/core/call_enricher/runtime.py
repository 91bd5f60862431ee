"""Wiring of the queue and API functions: one lazily built, process-wide enrichment service.

Created on first use and reused by every later invocation of a warm function. Tests and the
local stack swap it with :func:`set_service`. (The stream publisher's wiring is in
:mod:`call_enricher.outbox`: it needs none of this.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from call_enricher.observability import MetricName, dimensioned_count, logger, metrics
from call_enricher.service import BatchReport, EnrichmentService, SinchClients
from call_enricher.settings import Settings, get_settings

_lock = threading.Lock()
_service: EnrichmentService | None = None


def _log(level: str, message: str, **fields: Any) -> None:
    getattr(logger, level)(message, extra=fields)


def build_service(settings: Settings) -> EnrichmentService:
    """Build the production service from settings (AWS clients created lazily inside)."""
    from call_enricher.policy_source import policy_source
    from call_enricher.queueing import EnrichmentQueue
    from call_enricher.secrets import SecretsManagerCredentials
    from call_enricher.sinch.client import AttemptInfo, SinchClient
    from call_enricher.storage import CallStore

    credentials = SecretsManagerCredentials(
        settings.sinch_secret_id, max_age_seconds=settings.sinch_secret_max_age_seconds
    )

    def make_client(base_url: str, on_attempt: Callable[[AttemptInfo], None]) -> SinchClient:
        return SinchClient(
            credentials,
            base_url=base_url,
            auth=settings.sinch_auth_scheme,
            connect_timeout=settings.sinch_connect_timeout_seconds,
            read_timeout=settings.sinch_read_timeout_seconds,
            max_attempts=settings.sinch_max_attempts,
            pool_size=settings.worker_threads,
            on_attempt=on_attempt,
        )

    return EnrichmentService(
        settings,
        sinch=SinchClients(make_client),
        store=CallStore(settings.calls_table_name, ttl_days=settings.record_ttl_days),
        queue=EnrichmentQueue(settings.enrichment_queue_url)
        if settings.enrichment_queue_url
        else None,
        log=_log,
        risk_policy=policy_source(settings.risk_policy_parameter)
        if settings.risk_policy_parameter
        else None,
    )


def get_service() -> EnrichmentService:
    """The process-wide service, built on first use."""
    global _service
    with _lock:
        if _service is None:
            _service = build_service(get_settings())
        return _service


def set_service(service: EnrichmentService | None) -> None:
    """Replace the process-wide service (tests, local stack)."""
    global _service
    with _lock:
        _service = service


def emit_batch_metrics(report: BatchReport) -> None:
    """Aggregate a batch's figures into EMF metrics (emitted when the handler returns)."""
    from aws_lambda_powertools.metrics import MetricUnit

    counters = report.counters
    for name, counter_key in (
        (MetricName.RECORDS_ENRICHED, "enriched"),
        (MetricName.RECORDS_UNCHANGED, "unchanged"),
        (MetricName.RECORDS_SERVED_FROM_STORE, "served-from-store"),
        (MetricName.RECORDS_RETRIED, "retry"),
        (MetricName.RECORDS_NOT_STARTED, "not-started"),
        (MetricName.ONGOING_RECHECKS, "recheck-scheduled"),
    ):
        if counters.get(counter_key):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=counters[counter_key])

    failures: dict[str, int] = {}
    sinch_failures = 0
    for result in report.results.values():
        if result.error is None:
            continue
        if result.outcome.value == "failed":
            failures[result.error.reason] = failures.get(result.error.reason, 0) + 1
        if result.error.reason.startswith("sinch-"):
            sinch_failures += 1
    for reason, count in failures.items():
        dimensioned_count(MetricName.ENRICHMENT_FAILED, count, "reason", reason)
    if sinch_failures:
        metrics.add_metric(
            name=MetricName.SINCH_FAILURES, unit=MetricUnit.Count, value=sinch_failures
        )

    statuses: dict[str, int] = {}
    retries = 0
    for attempt in report.sinch_attempts:
        metrics.add_metric(
            name=MetricName.SINCH_LATENCY, unit=MetricUnit.Milliseconds, value=attempt.elapsed_ms
        )
        label = str(attempt.status_code or attempt.error or "error")
        statuses[label] = statuses.get(label, 0) + 1
        if attempt.attempt > 1:
            retries += 1
    if retries:
        metrics.add_metric(name=MetricName.SINCH_RETRIES, unit=MetricUnit.Count, value=retries)
    for label, count in statuses.items():
        dimensioned_count(MetricName.SINCH_RESPONSES, count, "statusCode", label)
