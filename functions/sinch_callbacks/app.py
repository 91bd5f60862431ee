"""Sinch callback receiver: POST /sinch/callbacks -> verify the signature -> enqueue a DiCE.

Lean on purpose (Sinch waits on it; cold start goal <= 1.2x a naive verify-and-enqueue
handler): stdlib, boto3 (SQS), the Powertools Logger and :mod:`call_enricher.callbacks`. No
pydantic, no event handler/resolver, no X-Ray SDK. Settings are read by
``CallbackConfig.from_env`` instead of the pydantic settings model for the same reason.
The SQS and Secrets Manager clients both come from :func:`call_enricher.aws.client`: one
botocore session (its loaded endpoint and model data shared), one client configuration
(timeouts, standard retries) and the wire loggers pinned to INFO.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger

from call_enricher import aws
from call_enricher.callbacks import CallbackConfig, handle_callback
from call_enricher.sinch.auth import SinchCredentials

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "call-enricher"))

_config: CallbackConfig | None = None
_sqs: Any = None
_credentials: Any = None


def _state() -> tuple[CallbackConfig, Any, Any]:
    """Config, SQS client and cached credentials provider, built on the first invocation."""
    global _config, _sqs, _credentials
    if _config is None:
        _config = CallbackConfig.from_env()
    if _sqs is None:
        _sqs = aws.client("sqs")
    if _credentials is None:
        from call_enricher.secrets import SecretsManagerCredentials

        _credentials = SecretsManagerCredentials(
            _config.secret_id, max_age_seconds=_config.secret_max_age_seconds
        )
    return _config, _sqs, _credentials


def _log(level: str, message: str, **fields: Any) -> None:
    getattr(logger, level)(message, extra=fields)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config, sqs, credentials = _state()

    def credentials_now() -> SinchCredentials:
        result: SinchCredentials = credentials()
        return result

    def send(body: str) -> None:
        sqs.send_message(QueueUrl=config.queue_url, MessageBody=body)

    return handle_callback(event, credentials=credentials_now, send=send, config=config, log=_log)
