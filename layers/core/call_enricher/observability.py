"""Logger, Metrics and Tracer: created once, here, and imported by every handler.

* ``logger``: Powertools JSON logger. Log lines about a record carry ``callId`` and
  ``messageId`` (passed as ``extra``: Powertools' appended keys are process-wide, and records
  are processed on worker threads). Phone numbers are only ever logged masked.
* ``metrics``: Powertools EMF metrics (namespace from ``POWERTOOLS_METRICS_NAMESPACE``).
  Metric names are the :class:`MetricName` values; the template's alarms use them.
* ``tracer``: a no-op stand-in with Powertools Tracer's decorator API by default, so
  ``aws_xray_sdk`` is never imported (about 280 ms of cold start; the X-Ray SDKs are in
  maintenance since February 2026, end of support February 2027). Lambda's active tracing
  (``Tracing: Active``) needs no SDK in the function: Lambda records the function's
  segments and passes the trace header (``_X_AMZN_TRACE_ID``) on; Powertools Logger puts its
  root in every log line as ``xray_trace_id``. The SDK (Powertools ``Tracer``: subsegments
  for boto3/requests calls, annotations) loads only when an operator opts in with
  ``XRAY_SDK=enabled`` (the template's ``XRaySdk`` parameter) and tracing is on
  (``POWERTOOLS_TRACE_DISABLED`` not true) in Lambda: :func:`xray_sdk_enabled`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
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
    CALLS_BY_RISK_LEVEL = "CallsByRiskLevel"  # new FINAL versions, with a `riskLevel` dimension


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


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    disabled = env.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in {"1", "true", "yes"}
    in_lambda = bool(env.get("AWS_LAMBDA_FUNCTION_NAME")) and not env.get("AWS_SAM_LOCAL")
    return in_lambda and not disabled


XRAY_SDK_VARIABLE = "XRAY_SDK"
"""``enabled`` loads the X-Ray SDK (Powertools Tracer); anything else, or unset, does not."""


def xray_sdk_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the X-Ray SDK is loaded: tracing on (:func:`tracing_enabled`) and the operator's
    opt-in ``XRAY_SDK=enabled``. Without it Lambda's active tracing still records the
    function's segments and the trace ID is in every log line."""
    env = os.environ if environ is None else environ
    opted_in = env.get(XRAY_SDK_VARIABLE, "").strip().lower() in {"enabled", "true", "1"}
    return opted_in and tracing_enabled(env)


def _make_tracer() -> TracerLike:
    if not xray_sdk_enabled():
        return _NoopTracer()
    from aws_lambda_powertools import Tracer  # imports aws_xray_sdk: only on the opt-in

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
