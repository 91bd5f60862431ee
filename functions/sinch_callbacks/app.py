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

from call_enricher import aws, snapstart
from call_enricher.callbacks import CallbackConfig, handle_callback
from call_enricher.secrets import SecretsManagerCredentials
from call_enricher.sinch.auth import SinchCredentials

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "call-enricher"))

_config: CallbackConfig | None = None
_sqs: Any = None
_credentials: SecretsManagerCredentials | None = None


def _state() -> tuple[CallbackConfig, Any, SecretsManagerCredentials]:
    """Config, SQS client and cached credentials provider (built at INIT by :func:`_init`;
    tests reset them to ``None`` to have them built again from the environment)."""
    global _config, _sqs, _credentials
    if _config is None:
        _config = CallbackConfig.from_env()
    if _sqs is None:
        _sqs = aws.client("sqs")
    if _credentials is None:
        _credentials = SecretsManagerCredentials(
            _config.secret_id, max_age_seconds=_config.secret_max_age_seconds
        )
        _credentials.prepare()
    return _config, _sqs, _credentials


def _read_secret() -> None:
    try:
        _state()[2]()
    except Exception as exc:  # noqa: BLE001 - optional here: the first invocation retries
        logger.warning("INIT: could not read the Sinch secret", extra={"error": type(exc).__name__})


def _init() -> None:
    """INIT: config validated, clients built, and in Lambda the secret read (SnapStart: the
    secret is dropped before the snapshot and read again after a restore)."""
    config = CallbackConfig.from_env()  # a bad value fails INIT, naming the variable
    if not (config.secret_id and config.queue_url):
        return  # imported without its environment (tests): built on first use
    _state()
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        _read_secret()
    snapstart.before_snapshot(lambda: _credentials.forget() if _credentials else None)
    snapstart.after_restore(_read_secret)
    snapstart.register_snapstart_hooks()


_init()


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
