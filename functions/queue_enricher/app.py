"""Queue handler: a batch of enrichment requests from SQS -> the pipeline -> partial failures.

Thin by design: parse each message, run the batch through the pipeline (concurrently, within
the invocation's remaining time), and report only the messages to retry. Everything else
(classification, the one write per outcome, re-checks) lives in the `call_enricher` layer;
events come from the calls table's stream (functions/stream_publisher), never from here.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from call_enricher.observability import logger, metrics, tracer
from call_enricher.runtime import emit_batch_metrics, get_service, init_service
from call_enricher.service import Disposition, work_item_from_message

processor = BatchProcessor(event_type=EventType.SQS)
init_service()  # INIT: settings, clients, Sinch session, secret (call_enricher.runtime)


class RetryLater(Exception):
    """Raised for a message SQS must redeliver (transient failure or not started in time)."""


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    items = [
        work_item_from_message(
            record["messageId"],
            record.get("body"),
            int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1),
        )
        for record in event.get("Records", [])
    ]
    report = get_service().process(items, remaining_ms=context.get_remaining_time_in_millis)
    emit_batch_metrics(report)
    for result in report.results.values():
        logger.info(
            "record processed",
            extra={
                "messageId": result.key,
                "callId": result.call_id,
                "outcome": result.outcome.value,
                "reason": result.error.reason if result.error else None,
            },
        )

    def record_handler(record: SQSRecord) -> None:
        result = report.results[record.message_id]
        if result.disposition is Disposition.RETRY:
            raise RetryLater(result.error.reason if result.error else result.outcome.value)

    # When every record must be retried, Powertools raises BatchProcessingError on purpose:
    # the invocation fails and SQS redelivers the whole batch. It is not caught here.
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
