"""Webhook delivery on the local stack: what EventBridge's API destination does on AWS.

moto keeps the template's webhook rule (``WebhookRule``: its event pattern is matched by
moto, as written in ``template.yaml``) but never calls an API destination. So the local
stack points that rule at an *outbox* queue of its own, and :class:`WebhookDelivery` plays
the API destination from there, with the template's settings:

* ``POST`` of the whole event (envelope and detail) as JSON to the destination's
  ``InvocationEndpoint``, with the connection's authorization: the API key header, or HTTP
  basic auth, read from the secret the connection's dynamic references name (on AWS,
  CloudFormation resolves them into a secret EventBridge manages);
* at most ``InvocationRateLimitPerSecond`` requests per second;
* a timeout of 5 s; timeouts, connection errors and the answers EventBridge retries (401,
  407, 409, 429, 5xx) are retried with exponential backoff, ``MaximumRetryAttempts`` times
  within ``MaximumEventAgeInSeconds`` (the backoff is compressed locally: from
  ``retry_base_seconds``, capped at ``retry_cap_seconds``); another answer is final;
* what cannot be delivered goes to the target's ``DeadLetterConfig`` queue, the event as its
  body and EventBridge's message attributes (``RULE_ARN``, ``TARGET_ARN``, ``ERROR_CODE``,
  ``ERROR_MESSAGE``, ``EXHAUSTED_RETRY_CONDITION``, ``RETRY_ATTEMPTS``).

:class:`WebhookReceiver` is a local endpoint to deliver to (``call-enricher local up
--webhook``): it checks the API key, keeps every delivery and answers 200, or what a test
scripted (:meth:`WebhookReceiver.fail_next`). Both bind 127.0.0.1 only.

Local differences, on purpose: the endpoint is plain HTTP on 127.0.0.1 (the template
requires ``https://``), and deliveries are one at a time per rule, in the outbox's order
(EventBridge guarantees no order: receivers must not rely on one, and dedupe on
``detail.eventId``).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from botocore.exceptions import BotoCoreError, ClientError

from call_enricher_tools.sinch_standin import Answerer, RecordedRequest, Reply, SinchStandIn

logger = logging.getLogger(__name__)

RETRIED_STATUSES = frozenset({401, 407, 409, 429})
"""Besides 5xx: the answers EventBridge retries for an API destination."""
INVOCATION_TIMEOUT_SECONDS = 5.0
"""EventBridge gives an API destination endpoint 5 s to answer."""
USER_AGENT = "Amazon/EventBridge/ApiDestinations"
_HOLD_SECONDS = 43200  # SQS's longest visibility timeout
WEBHOOK_PATH = "/events"


@dataclass(frozen=True)
class WebhookTarget:
    """One rule target that is an API destination, resolved from the template."""

    rule_name: str
    rule_arn: str
    target_arn: str
    """The API destination's ARN (what EventBridge names in ``TARGET_ARN``)."""
    endpoint: str
    method: str
    rate_limit_per_second: float
    headers: Mapping[str, str]
    """The connection's authorization, as headers."""
    max_retry_attempts: int
    max_event_age_seconds: float
    outbox_url: str
    """The local queue the rule sends to instead of the API destination."""
    dead_letter_url: str | None


def authorization_headers(authorization_type: str, parameters: Mapping[str, Any]) -> dict[str, str]:
    """The headers an EventBridge connection sends, from its (resolved) ``AuthParameters``."""
    if authorization_type == "API_KEY":
        key = parameters["ApiKeyAuthParameters"]
        return {str(key["ApiKeyName"]): str(key["ApiKeyValue"])}
    if authorization_type == "BASIC":
        basic = parameters["BasicAuthParameters"]
        pair = f"{basic['Username']}:{basic['Password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    raise ValueError(f"the local stack cannot play a {authorization_type} connection")


@dataclass
class Delivery:
    """One request the receiver got."""

    event: dict[str, Any] | None
    status: int
    authorized: bool
    headers: dict[str, str] = field(default_factory=dict)


class _WebhookAnswerer(Answerer):
    """Checks the connection's authorization, keeps each delivery, answers as scripted."""

    def __init__(self, expected_headers: Mapping[str, str]) -> None:
        self.expected_headers = {k.lower(): v for k, v in expected_headers.items()}
        self.deliveries: list[Delivery] = []
        self.on_delivery: Callable[[Delivery], None] | None = None
        self._script: list[int] = []
        self._lock = threading.Lock()

    def authenticates(self, request: RecordedRequest) -> bool:
        return False  # no Sinch signature here: the webhook's own check is in answer()

    def answer(self, request: RecordedRequest) -> Reply:
        authorized = request.method == "POST" and all(
            hmac.compare_digest((request.header(name) or "").encode(), value.encode())
            for name, value in self.expected_headers.items()
        )
        try:
            event = json.loads(request.body)
        except ValueError:
            event = None
        with self._lock:
            if not authorized:
                status = 401
            elif event is None:
                status = 400
            elif self._script:
                status = self._script.pop(0)
            else:
                status = 200
            delivery = Delivery(
                event=event if isinstance(event, dict) else None,
                status=status,
                authorized=authorized,
                headers={k.lower(): v for k, v in request.headers},
            )
            self.deliveries.append(delivery)
        if self.on_delivery is not None:
            self.on_delivery(delivery)
        body = {"received": status < 300} if status != 401 else {"message": "unauthorized"}
        return Reply.json(body, status)

    def fail_next(self, *statuses: int) -> None:
        with self._lock:
            self._script.extend(statuses)


class WebhookReceiver:
    """A local webhook endpoint on 127.0.0.1 that checks the connection's authorization.

    ``auth_type`` is the template's ``WebhookAuthType``: ``API_KEY`` (a random key expected
    in the ``header`` header) or ``BASIC`` (a random user name and password). :attr:`secret`
    is the JSON the local stack stores as the webhook's secret (``WebhookSecretArn``), from
    which the connection, and so every delivery, takes its credentials.
    """

    def __init__(
        self, *, auth_type: str = "API_KEY", header: str = "x-api-key", port: int = 0
    ) -> None:
        self.auth_type = auth_type
        self.header = header if auth_type == "API_KEY" else "Authorization"
        self.api_key = secrets.token_urlsafe(24)
        if auth_type == "API_KEY":
            self.secret: dict[str, str] = {"apiKey": self.api_key}
            parameters: dict[str, Any] = {
                "ApiKeyAuthParameters": {"ApiKeyName": header, "ApiKeyValue": self.api_key}
            }
        else:
            self.secret = {"username": "call-enricher", "password": self.api_key}
            parameters = {
                "BasicAuthParameters": {"Username": "call-enricher", "Password": self.api_key}
            }
        self._answerer = _WebhookAnswerer(authorization_headers(auth_type, parameters))
        self._server = SinchStandIn(self._answerer, port=port, record=False)

    def start(self) -> WebhookReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._server.base_url + WEBHOOK_PATH

    @property
    def credentials_text(self) -> str:
        """What the connection must send, for a banner."""
        if self.auth_type == "API_KEY":
            return f"header {self.header}: {self.api_key}"
        return f"basic auth {self.secret['username']} / {self.secret['password']}"

    @property
    def deliveries(self) -> list[Delivery]:
        with self._answerer._lock:
            return list(self._answerer.deliveries)

    def events(self) -> list[dict[str, Any]]:
        """The events accepted (answered 2xx), in arrival order."""
        return [d.event for d in self.deliveries if d.status < 300 and d.event is not None]

    def fail_next(self, *statuses: int) -> None:
        """Answer the next deliveries with these statuses (then 200 again)."""
        self._answerer.fail_next(*statuses)

    def on_delivery(self, callback: Callable[[Delivery], None] | None) -> None:
        self._answerer.on_delivery = callback


@dataclass
class Attempt:
    """What one delivery of one event came to."""

    event_id: str
    status: int | None
    """The endpoint's HTTP status; None for a timeout or a connection error."""
    error: str | None
    attempts: int
    dead_lettered: bool


class WebhookDelivery:
    """Plays one API destination target: outbox queue -> endpoint (or its DLQ)."""

    def __init__(
        self,
        target: WebhookTarget,
        sqs_client: Any,
        *,
        retry_base_seconds: float = 0.05,
        retry_cap_seconds: float = 1.0,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.target = target
        self.sqs = sqs_client
        self.retry_base_seconds = retry_base_seconds
        self.retry_cap_seconds = retry_cap_seconds
        self.on_attempt = on_attempt
        self.session = requests.Session()
        self.delivered = 0
        self.dead_lettered = 0
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._receives_started = 0
        self._empty_since = 0
        self._thread: threading.Thread | None = None
        self._next_send = 0.0

    def start(self) -> WebhookDelivery:
        self._thread = threading.Thread(
            target=self._run, name=f"webhook-{self.target.rule_name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop; first wait up to ``drain_seconds`` for the outbox to be empty."""
        if drain_seconds > 0:
            self.wait_idle(drain_seconds)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=INVOCATION_TIMEOUT_SECONDS + 5)
            self._thread = None
        self.session.close()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until a receive that started after this call found the outbox empty; False
        after ``timeout`` seconds."""
        with self._idle:
            wanted = self._receives_started
            return self._idle.wait_for(lambda: self._empty_since > wanted, timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._idle:
                self._receives_started += 1
                receive = self._receives_started
            try:
                got = self.sqs.receive_message(
                    QueueUrl=self.target.outbox_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    # held while this thread retries (up to a day): never received twice
                    VisibilityTimeout=_HOLD_SECONDS,
                    AttributeNames=["SentTimestamp"],
                )
            except (BotoCoreError, ClientError):  # moto stopping under us: retry, or stop
                if self._stop.wait(0.2):
                    return
                continue
            messages = got.get("Messages", [])
            if not messages:
                with self._idle:
                    self._empty_since = receive
                    self._idle.notify_all()
                continue
            for index, message in enumerate(messages):
                if self._stop.is_set():
                    self._release(messages[index:])
                    return
                try:
                    self._handle(message)
                except Exception:
                    logger.exception("webhook delivery failed; the event goes back to the outbox")
                    self._release([message])

    def _handle(self, message: Mapping[str, Any]) -> None:
        sent = int(message.get("Attributes", {}).get("SentTimestamp", "0")) / 1000
        attempt = self.deliver(message["Body"], first_seen=sent or time.time())
        if attempt.dead_lettered or (attempt.status or 0) // 100 == 2:
            self.sqs.delete_message(
                QueueUrl=self.target.outbox_url, ReceiptHandle=message["ReceiptHandle"]
            )
        else:  # stopped mid-retry: the event stays in the outbox, visible again
            self._release([message])

    def _release(self, messages: list[Mapping[str, Any]]) -> None:
        """Make received, undelivered messages visible again (not held for 12 h)."""
        for message in messages:
            try:
                self.sqs.change_message_visibility(
                    QueueUrl=self.target.outbox_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
            except (BotoCoreError, ClientError):  # moto already stopped: nothing to keep
                logger.debug("could not release an outbox message", exc_info=True)

    def deliver(self, body: str, *, first_seen: float) -> Attempt:
        """Deliver one event (its JSON text), retrying as EventBridge would."""
        try:
            event_id = str(json.loads(body).get("detail", {}).get("eventId", ""))
        except (ValueError, AttributeError):
            event_id = ""
        attempts = 0
        while True:
            attempts += 1
            status, error = self._send(body)
            if status is not None and 200 <= status < 300:
                self.delivered += 1
                return self._report(Attempt(event_id, status, None, attempts, False))
            retryable = status is None or status in RETRIED_STATUSES or status >= 500
            exhausted: str | None = None
            if retryable and attempts > self.target.max_retry_attempts:
                exhausted = "MaximumRetryAttemptsExhausted"
            elif retryable and time.time() - first_seen > self.target.max_event_age_seconds:
                exhausted = "MaximumEventAgeExhausted"
            if not retryable or exhausted:
                message = error or f"the endpoint answered HTTP {status}"
                self._dead_letter(body, message, exhausted, attempts - 1)
                return self._report(Attempt(event_id, status, message, attempts, True))
            delay = min(self.retry_cap_seconds, self.retry_base_seconds * 2 ** (attempts - 1))
            if self._stop.wait(delay):
                # stopping mid-retry: the event stays undelivered, as a crash would leave it
                return self._report(Attempt(event_id, status, error, attempts, False))

    def _send(self, body: str) -> tuple[int | None, str | None]:
        self._pace()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            **self.target.headers,
        }
        try:
            response = self.session.request(
                self.target.method,
                self.target.endpoint,
                data=body.encode(),
                headers=headers,
                timeout=INVOCATION_TIMEOUT_SECONDS,
                allow_redirects=False,  # EventBridge follows none: a 3xx is an answer
            )
        except requests.Timeout:
            return None, f"no answer within {INVOCATION_TIMEOUT_SECONDS:g} s"
        except requests.RequestException as exc:
            return None, f"could not connect: {type(exc).__name__}"
        return response.status_code, None

    def _pace(self) -> None:
        """At most ``rate_limit_per_second`` requests a second."""
        now = time.monotonic()
        wait = self._next_send - now
        if wait > 0:
            self._stop.wait(wait)
        self._next_send = max(now, self._next_send) + 1.0 / self.target.rate_limit_per_second

    def _dead_letter(self, body: str, message: str, exhausted: str | None, retries: int) -> None:
        self.dead_lettered += 1
        if self.target.dead_letter_url is None:
            return  # no DeadLetterConfig: EventBridge drops it
        attributes = {
            "RULE_ARN": self.target.rule_arn,
            "TARGET_ARN": self.target.target_arn,
            "ERROR_CODE": "SDK_CLIENT_ERROR",
            "ERROR_MESSAGE": f"Unable to invoke ApiDestination endpoint: {message}",
            "RETRY_ATTEMPTS": str(retries),
            **({"EXHAUSTED_RETRY_CONDITION": exhausted} if exhausted else {}),
        }
        self.sqs.send_message(
            QueueUrl=self.target.dead_letter_url,
            MessageBody=body,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            },
        )

    def _report(self, attempt: Attempt) -> Attempt:
        if self.on_attempt is not None:
            self.on_attempt(attempt)
        return attempt
