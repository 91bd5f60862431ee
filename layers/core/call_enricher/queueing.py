"""The enrichment queue (SQS): sending requests, one at a time or in batches of 10.

Used by the queue handler (delayed re-checks of ONGOING calls), the HTTP API (``POST /calls``)
and the callback receiver. A request is reported sent only once SQS confirmed it: failed
batch entries are retried with full-jitter backoff, and what still fails is returned to the
caller per entry, never dropped silently.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from call_enricher import aws
from call_enricher.errors import AwsUnavailableError, CallEnricherError, MalformedMessageError
from call_enricher.messages import EnrichmentRequest

SQS_BATCH_LIMIT = 10
_RETRYABLE_ENTRY_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "ThrottlingException", "RequestThrottled"}
)


class EnrichmentQueue:
    def __init__(
        self,
        queue_url: str,
        *,
        client: Any = None,
        max_attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not queue_url:
            from call_enricher.errors import ConfigurationError

            raise ConfigurationError("ENRICHMENT_QUEUE_URL is not set")
        self.queue_url = queue_url
        self._client = client
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._jitter = jitter

    client = aws.LazyClient("sqs")

    def send(self, request: EnrichmentRequest, *, delay_seconds: int = 0) -> None:
        """Send one request (optionally delayed, at most 900 s). Raises AwsUnavailableError."""
        try:
            self.client.send_message(
                QueueUrl=self.queue_url,
                MessageBody=request.to_body(),
                DelaySeconds=max(0, min(900, int(delay_seconds))),
            )
        except Exception as exc:  # noqa: BLE001 (classified once, by aws.translate_error)
            raise aws.translate_error(exc, "SQS SendMessage") from None

    def send_many(self, requests: Sequence[EnrichmentRequest]) -> list[CallEnricherError | None]:
        """Send requests in batches of 10; per request ``None`` (confirmed) or the error.

        A request that cannot be serialised (a context nested too deep) is never sent: its
        error is a permanent :class:`MalformedMessageError`; the others go on."""
        results: list[CallEnricherError | None] = [None] * len(requests)
        bodies: dict[int, str] = {}
        for index, request in enumerate(requests):
            try:
                bodies[index] = request.to_body()
            except ValueError as exc:  # e.g. a context nested too deep to serialise
                results[index] = MalformedMessageError(
                    f"the request cannot be serialised: {type(exc).__name__}"
                )
        for start in range(0, len(requests), SQS_BATCH_LIMIT):
            pending = {
                str(i): i
                for i in range(start, min(start + SQS_BATCH_LIMIT, len(requests)))
                if i in bodies
            }
            if not pending:
                continue
            last_error: dict[str, CallEnricherError] = {}
            for attempt in range(self._max_attempts):
                if attempt:
                    self._sleep(aws.backoff_delay(attempt, self._jitter))
                entries = [
                    {"Id": entry_id, "MessageBody": bodies[index]}
                    for entry_id, index in pending.items()
                ]
                try:
                    response = self.client.send_message_batch(
                        QueueUrl=self.queue_url, Entries=entries
                    )
                except Exception as exc:  # noqa: BLE001 (classified by aws.translate_error)
                    error = aws.translate_error(exc, "SQS SendMessageBatch")
                    last_error = dict.fromkeys(pending, error)
                    if not error.retryable:
                        break
                    continue
                for ok in response.get("Successful", []):
                    pending.pop(ok["Id"], None)
                    last_error.pop(ok["Id"], None)
                for failed in response.get("Failed", []):
                    entry_id = failed["Id"]
                    if entry_id not in pending:
                        continue  # not ours (or already settled): ignore
                    code = failed.get("Code", "Unknown")
                    error = AwsUnavailableError(f"SQS rejected the message: {code}")
                    last_error[entry_id] = error
                    if failed.get("SenderFault") and code not in _RETRYABLE_ENTRY_CODES:
                        results[pending.pop(entry_id)] = error  # retrying cannot help
                # whatever is still pending (retryable failures, or entries SQS did not
                # mention at all) is sent again: only confirmed entries count as sent
                if not pending:
                    break
            for entry_id, index in pending.items():
                results[index] = last_error.get(entry_id) or AwsUnavailableError("SQS send failed")
        return results
