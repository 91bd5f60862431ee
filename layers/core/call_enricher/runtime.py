"""Wiring of the functions: everything that does not depend on the event, built at INIT.

Lambda runs INIT (the handler module's import) with a full-CPU burst and gives each
invocation only MemorySize/1769 of a vCPU, so the handlers call one of these at import:

* :func:`init_service` (queue and API functions): settings validated (a bad value fails the
  INIT with :class:`~call_enricher.errors.ConfigurationError` naming the variable), the
  service and its collaborators built (boto3 session and clients, the Sinch client and its
  ``requests`` session, the credentials provider, the risk policy source), the modules of
  the per-record path imported, a rehearsal of parse -> enrich -> serialise on a built-in
  record (pydantic's and phonenumbers' lazy first-use work), and, in Lambda, the Sinch
  secret (and the risk policy) fetched once;
* :func:`call_enricher.outbox.init_publisher` (stream publisher): the same for the outbox
  publisher (it lives there so that the publisher imports nothing of the request path);
* the callback receiver wires itself (functions/sinch_callbacks/app.py: no pydantic there).

What they build is the process-wide object the handlers use (:func:`get_service`,
:func:`call_enricher.outbox.get_outbox`); tests and the local stack swap it with
:func:`set_service` / ``outbox.set_outbox`` (``None``: built again from the environment on
next use). When the environment is not complete (a handler imported without
``SINCH_SECRET_ID``, as unit tests do), only the settings are validated and the rest is
built on first use, as before. Fetching the secret needs the network: it happens only in
Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set) and a failure there is logged, not fatal (the
first invocation fetches it again and fails that record transiently).

SnapStart (:func:`register_snapstart_hooks`): before the snapshot, the secret, the cached
AWS credentials and every pooled connection are dropped; after a restore, credentials and
the secret are fetched again and the random state is reseeded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from call_enricher import snapstart
from call_enricher.observability import MetricName, dimensioned_count, logger, metrics
from call_enricher.settings import Settings, get_settings

if TYPE_CHECKING:
    from call_enricher.service import BatchReport, EnrichmentService

_lock = threading.Lock()
_service: EnrichmentService | None = None


def _log(level: str, message: str, **fields: Any) -> None:
    getattr(logger, level)(message, extra=fields)


def build_service(settings: Settings) -> EnrichmentService:
    """Build the production service from settings (AWS clients created lazily inside)."""
    from call_enricher.policy_source import policy_source
    from call_enricher.queueing import EnrichmentQueue
    from call_enricher.secrets import SecretsManagerCredentials
    from call_enricher.service import EnrichmentService, SinchClients
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


def _in_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def _quietly(what: str, action: Callable[[], object]) -> None:
    """Run an optional INIT step; a failure is logged (the first invocation redoes it)."""
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - optional: the request path redoes it
        logger.warning(f"INIT: could not {what}", extra={"error": type(exc).__name__})


def warm_service(service: EnrichmentService, *, fetch: bool) -> None:
    """Do now the one-off work the first record would do (no event needed).

    Clients (DynamoDB, SQS when a queue is configured, Secrets Manager, SSM with a risk
    policy), the Sinch client of the configured region and its session; the lazily imported
    modules of the per-record path; a rehearsal of the CPU path (:func:`rehearse`); with
    ``fetch``, the Sinch secret and the risk policy (network calls).
    """
    from call_enricher.policy_source import SsmRiskPolicySource
    from call_enricher.secrets import SecretsManagerCredentials
    from call_enricher.sinch.regions import resolve_base_url

    settings = service.settings
    service.store.client  # noqa: B018 - creates the DynamoDB client
    if service.queue is not None:
        service.queue.client  # noqa: B018

    client = service.sinch.for_base_url(
        resolve_base_url(region=settings.sinch_region, base_url=settings.sinch_base_url)
    )
    credentials = getattr(client, "_source", None)
    if isinstance(credentials, SecretsManagerCredentials):
        credentials.prepare()
    if isinstance(service.risk_policy, SsmRiskPolicySource):
        service.risk_policy._get_provider()
    rehearse()
    if fetch:
        if isinstance(credentials, SecretsManagerCredentials):
            _quietly("read the Sinch secret", credentials)
        if service.risk_policy is not None:
            _quietly("read the risk policy", service.risk_policy)


def rehearse() -> None:
    """Run one built-in record through parse -> enrich -> serialise (no I/O).

    The first use of the record model, the enrichment and phonenumbers does one-off work
    (validators' and serialisers' lazy parts, regexes, per-country metadata, the carrier and
    time zone indexes): done here at INIT it is not paid at the first invocation's CPU share.
    """
    from call_enricher import phones
    from call_enricher.enrichment import enrich
    from call_enricher.model import parse_call_record

    phones.preload()
    enrich(parse_call_record(REHEARSAL_RECORD)).model_dump_json(by_alias=True)


REHEARSAL_RECORD = (
    b'{"from":{"type":"number","endpoint":"+14155550123"},'
    b'"to":{"type":"number","endpoint":"+447700900123"},'
    b'"domain":"pstn","callId":"00000000000000000000000000000000",'
    b'"duration":61,"status":"FINAL","result":"ANSWERED","reason":"CALLERHANGUP",'
    b'"timestamp":"2025-01-01T00:00:00Z","custom":"",'
    b'"userRate":{"currencyId":"USD","amount":0.0109},'
    b'"debit":{"currencyId":"USD","amount":0.0218}}'
)
"""A FINAL PSTN call (US to GB, reserved fictional numbers) in Sinch's wire shape."""


def init_service() -> EnrichmentService | None:
    """INIT of the queue and API functions: the process-wide service, built and warmed.

    Settings are validated first (a bad value raises ``ConfigurationError`` naming it).
    Returns ``None`` (nothing built: on first use instead) when ``SINCH_SECRET_ID`` is not
    set.
    """
    global _service
    settings = get_settings()
    if not settings.sinch_secret_id:
        return None
    service = build_service(settings)
    warm_service(service, fetch=_in_lambda())
    with _lock:
        _service = service
    _snapstart_steps(service)
    return service


def _snapstart_steps(service: EnrichmentService) -> None:
    from call_enricher.secrets import SecretsManagerCredentials

    clients = list(getattr(service.sinch, "_clients", {}).values())
    secrets = [
        source
        for source in (getattr(client, "_source", None) for client in clients)
        if isinstance(source, SecretsManagerCredentials)
    ]

    def drop_secret_and_sinch_connections() -> None:
        for source in secrets:
            source.forget()
        for client in clients:
            client.close()  # requests' close empties the pools; the session stays usable

    def read_secret_again() -> None:
        for source in secrets:
            _quietly("read the Sinch secret", source)

    snapstart.before_snapshot(drop_secret_and_sinch_connections)
    snapstart.after_restore(read_secret_again)
    snapstart.register_snapstart_hooks()


def get_service() -> EnrichmentService:
    """The process-wide service (built at INIT by :func:`init_service`, else on first use)."""
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

    levels: dict[str, int] = {}  # the risk of each version stored now (not of one served)
    for result in report.results.values():
        if result.outcome.value == "enriched" and result.stored is not None:
            level = ((result.stored.record or {}).get("risk") or {}).get("level")
            if isinstance(level, str):
                levels[level] = levels.get(level, 0) + 1
    for level, count in levels.items():
        dimensioned_count(MetricName.CALLS_BY_RISK_LEVEL, count, "riskLevel", level)

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
