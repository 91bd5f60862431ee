"""Stream publisher: the calls table's DynamoDB stream -> one event per state change.

The only function that calls ``PutEvents`` (the table is the outbox). Thin: each stream
record's images become a :class:`~call_enricher.outbox.StreamChange`; the batch is published
by :class:`~call_enricher.outbox.OutboxPublisher` (stream order, deterministic event IDs,
unpublishable events recorded); Powertools reports the records to retry, and the event
source mapping (ReportBatchItemFailures, BisectBatchOnFunctionError, bounded retries, an
on-failure queue) does the rest.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from call_enricher.observability import logger, metrics, tracer
from call_enricher.outbox import (
    change_from_record,
    emit_outbox_metrics,
    get_outbox,
    init_publisher,
)

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
init_publisher()  # INIT: settings, the publisher and its clients (call_enricher.outbox)


class RetryLater(Exception):
    """Raised for a stream record whose change could not be published yet."""


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    changes = [change_from_record(record) for record in event.get("Records", [])]
    report = get_outbox().publish(changes)
    emit_outbox_metrics(report)
    if report.failed:
        logger.warning(
            "stream records to retry",
            extra={
                "count": len(report.failed),
                "reasons": sorted({error.reason for error in report.failed.values()}),
            },
        )

    def record_handler(record: DynamoDBRecord) -> None:
        error = report.failed.get(str(record.dynamodb.sequence_number if record.dynamodb else ""))
        if error is not None:
            raise RetryLater(error.reason)

    # When every record must be retried, Powertools raises BatchProcessingError on purpose:
    # the invocation fails, and the mapping bisects the batch and retries it.
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
