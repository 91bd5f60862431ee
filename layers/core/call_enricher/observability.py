"""Logger, Metrics and Tracer: created once, here, and imported by every handler.

* ``logger``: Powertools JSON logger. Log lines about a record carry ``callId`` and
  ``messageId`` (passed as ``extra``: Powertools' appended keys are process-wide, and records
  are processed on worker threads). Phone numbers are only ever logged masked.
* ``metrics``: Powertools EMF metrics (namespace from ``POWERTOOLS_METRICS_NAMESPACE``).
  Metric names are the :class:`MetricName` values; the template's alarms use them.
* ``tracer``: a real Powertools ``Tracer`` only when tracing is on. When
  ``POWERTOOLS_TRACE_DISABLED`` is true, or when not running in Lambda, a no-op stand-in with
  the same decorator API is used so ``aws_xray_sdk`` is never imported (it costs cold start).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "call-enricher")
METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "CallEnricher")

F = TypeVar("F", bound=Callable[..., Any])


class MetricName(StrEnum):
    RECORDS_ENRICHED = "RecordsEnriched"
    RECORDS_UNCHANGED = "RecordsUnchanged"
    RECORDS_SERVED_FROM_STORE = "RecordsServedFromStore"
    ENRICHMENT_FAILED = "EnrichmentFailed"  # with a `reason` dimension
    RECORDS_RETRIED = "RecordsRetried"  # reported to SQS as batch item failures
    RECORDS_NOT_STARTED = "RecordsNotStarted"  # skipped: the invocation was running out of time
    ONGOING_RECHECKS = "OngoingRechecks"
    SINCH_LATENCY = "SinchLatency"
    SINCH_RESPONSES = "SinchResponses"  # with a `statusCode` dimension
    SINCH_RETRIES = "SinchRetries"
    SINCH_FAILURES = "SinchFailures"  # alarmed on: transient Sinch failures after retries
    EVENTS_PUBLISHED = "EventsPublished"  # by the stream publisher only
    EVENTS_PUBLISHED_BY_TYPE = "EventsPublishedByType"  # with a `detailType` dimension
    EVENTS_REJECTED = "EventsRejected"  # alarmed on: EventBridge can never accept the event


class TracerLike(Protocol):
    def capture_lambda_handler(self, lambda_handler: F | None = None, **kwargs: Any) -> Any: ...
    def capture_method(self, method: F | None = None, **kwargs: Any) -> Any: ...
    def put_annotation(self, key: str, value: str | float | bool) -> None: ...


class _NoopTracer:
    """Same decorator surface as Powertools' Tracer, without importing the X-Ray SDK."""

    def capture_lambda_handler(self, lambda_handler: F | None = None, **_: Any) -> Any:
        if lambda_handler is None:
            return lambda fn: fn
        return lambda_handler

    def capture_method(self, method: F | None = None, **_: Any) -> Any:
        if method is None:
            return lambda fn: fn
        return method

    def put_annotation(self, key: str, value: str | float | bool) -> None:
        return None


def tracing_enabled(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    disabled = env.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in {"1", "true", "yes"}
    in_lambda = bool(env.get("AWS_LAMBDA_FUNCTION_NAME")) and not env.get("AWS_SAM_LOCAL")
    return in_lambda and not disabled


def _make_tracer() -> TracerLike:
    if not tracing_enabled():
        return _NoopTracer()
    from aws_lambda_powertools import Tracer  # imports aws_xray_sdk: only when tracing is on

    return cast(TracerLike, Tracer(service=SERVICE_NAME))


logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
tracer: TracerLike = _make_tracer()


def dimensioned_count(name: MetricName, count: int, dimension: str, value: str) -> None:
    """A count with one extra dimension (its own EMF document, flushed at once)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(
        name=name,
        unit=MetricUnit.Count,
        value=count,
        namespace=metrics.namespace,
        default_dimensions={**metrics.default_dimensions, dimension: value},
    ):
        pass
