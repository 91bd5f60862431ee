"""Sinch callbacks (ICE, ACE, DiCE, PIE, notify): verify, parse, turn a DiCE into a queue message.

Standard library only (plus :mod:`call_enricher.sinch.auth` and :mod:`call_enricher.errors`):
the callback receiver is what Sinch waits on, so its cold start must stay close to a naive
"verify an HMAC and send one SQS message" handler. That is why this module does not use
:mod:`call_enricher.settings` (pydantic) nor :class:`call_enricher.messages.EnrichmentRequest`
(pydantic): it reads its three variables itself (:meth:`CallbackConfig.from_env`) and writes
the queue message JSON by hand, parsed by ``messages.parse_message_body`` like any other
(``{"callId", "region"?, "entryPath": "callback"}``; a unit test keeps the two in step).

Verification (:func:`verify_callback`), per Sinch's "Callback Request Signing":

* the raw body as received (API Gateway's base64 bodies decoded first, never re-serialised);
* the callback path *as configured at Sinch* (``SINCH_CALLBACK_PATH``), not the path the
  function sees (stages and custom domains change it);
* the ``content-type`` header verbatim, ``x-timestamp`` and ``authorization``;
* a freshness window both ways (``CALLBACK_MAX_SKEW_SECONDS``, default 300 s);
* key and signature compared in constant time (:func:`call_enricher.sinch.auth.verify_signature`).

Any failure answers 401 with no detail (the reason is logged, never returned).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from call_enricher.callid import validate_call_id
from call_enricher.errors import CallEnricherError, ConfigurationError
from call_enricher.sinch.auth import SignatureCheck, SinchCredentials, verify_signature
from call_enricher.sinch.regions import region_for_base_url

__all__ = [
    "MAX_CALLBACK_BODY_BYTES",
    "CallbackConfig",
    "CallbackEvent",
    "Verification",
    "enqueue_body",
    "handle_callback",
    "header",
    "parse_callback",
    "raw_body",
    "verify_callback",
]

MAX_CALLBACK_BODY_BYTES = 64 * 1024
"""Largest callback body accepted (a DiCE is well under 2 KiB; API Gateway allows 10 MB)."""

_JSON_HEADERS = {"content-type": "application/json"}
_ACK = {"statusCode": 200, "headers": _JSON_HEADERS, "body": "{}"}


def _response(status: int, code: str, message: str) -> dict[str, Any]:
    body = {"error": {"code": code, "message": message, "details": None}}
    return {"statusCode": status, "headers": _JSON_HEADERS, "body": json.dumps(body)}


@dataclass(frozen=True)
class CallbackConfig:
    """What the receiver needs, read from the environment without pydantic (cold start)."""

    callback_path: str = "/sinch/callbacks"
    max_skew_seconds: int = 300
    queue_url: str = ""
    secret_id: str = ""
    secret_max_age_seconds: int = 300

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CallbackConfig:
        """``SINCH_CALLBACK_PATH``, ``CALLBACK_MAX_SKEW_SECONDS``, ``ENRICHMENT_QUEUE_URL``,
        ``SINCH_SECRET_ID`` and ``SINCH_SECRET_MAX_AGE_SECONDS``.

        The same names and rules as :class:`call_enricher.settings.Settings`.

        Raises:
            ConfigurationError: naming the bad variable.
        """
        env = os.environ if environ is None else environ
        path = env.get("SINCH_CALLBACK_PATH", "") or "/sinch/callbacks"
        if not path.startswith("/"):
            raise ConfigurationError(
                "invalid configuration: SINCH_CALLBACK_PATH: must start with '/'"
            )
        skew = _int_setting(env, "CALLBACK_MAX_SKEW_SECONDS", 300, 1, 3600)
        max_age = _int_setting(env, "SINCH_SECRET_MAX_AGE_SECONDS", 300, 0, 86_400)
        return cls(
            path,
            skew,
            env.get("ENRICHMENT_QUEUE_URL", ""),
            env.get("SINCH_SECRET_ID", ""),
            max_age,
        )


def _int_setting(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer variable within ``[low, high]`` (``default`` when unset or empty)."""
    raw = env.get(name, "") or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigurationError(f"invalid configuration: {name}: an integer from {low} to {high}")
    return value


def header(event: Mapping[str, Any], name: str) -> str | None:
    """A request header of an API Gateway v2 event, case-insensitively (``None`` if absent)."""
    headers = event.get("headers") or {}
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            return value if isinstance(value, str) else None
    return None


def raw_body(event: Mapping[str, Any]) -> bytes | None:
    """The body bytes as the client sent them; ``None`` when a base64 body does not decode."""
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        return None
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return None
    return body.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Verification:
    check: SignatureCheck
    body: bytes

    @property
    def ok(self) -> bool:
        return self.check.ok


def verify_callback(
    event: Mapping[str, Any],
    credentials: SinchCredentials,
    *,
    callback_path: str,
    max_skew_seconds: float = 300,
    now: datetime | None = None,
) -> Verification:
    """Check a callback's ``Application`` signature (see the module docstring)."""
    body = raw_body(event)
    if body is None:
        return Verification(SignatureCheck.BAD_SIGNATURE, b"")
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method", "POST")
    check = verify_signature(
        credentials,
        method=str(method),
        path=callback_path,
        body=body,
        content_type=header(event, "content-type") or "",
        timestamp=header(event, "x-timestamp"),
        authorization=header(event, "authorization"),
        now=now,
        max_skew_seconds=max_skew_seconds,
    )
    return Verification(check, body)


@dataclass(frozen=True)
class CallbackEvent:
    """The part of a callback we use: its type, and for a DiCE its call ID and region."""

    event_type: str
    call_id: str | None = None
    region: str | None = None


def parse_callback(body: bytes) -> CallbackEvent:
    """Parse a verified callback body.

    ``callid`` or ``callId``; the region from ``callResourceUrl``'s host when present.

    Raises:
        ValueError: not a JSON object.
        InvalidCallIdError: a DiCE whose call ID is missing or malformed.
    """
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("callback body is not a JSON object")
    event_type = data.get("event")
    event_type = event_type.lower() if isinstance(event_type, str) else ""
    if event_type != "dice":
        return CallbackEvent(event_type)
    call_id = validate_call_id(data.get("callid", data.get("callId")))
    resource_url = data.get("callResourceUrl")
    region = region_for_base_url(resource_url) if isinstance(resource_url, str) else None
    return CallbackEvent(event_type, call_id, region)


def enqueue_body(call_id: str, region: str | None = None) -> str:
    """The queue message for a DiCE (parses to the ``EnrichmentRequest`` it stands for)."""
    message: dict[str, str] = {"callId": call_id}
    if region is not None:
        message["region"] = region
    message["entryPath"] = "callback"
    return json.dumps(message, separators=(",", ":"))


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def handle_callback(
    event: Mapping[str, Any],
    *,
    credentials: Callable[[], SinchCredentials],
    send: Callable[[str], None],
    config: CallbackConfig,
    log: Callable[..., None],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Answer one callback (API Gateway v2 event in, v2 response out).

    401 on any signature failure (no detail), 413 too large, 415 not JSON, 400 malformed or a
    DiCE without a valid call ID; a DiCE is enqueued (``send(body)``) and acknowledged with
    ``200 {}``; any other event is acknowledged with ``200 {}`` and ignored. A failure to
    enqueue raises (the runtime answers 5xx and Sinch retries the callback).
    """
    body = raw_body(event)
    if body is not None and len(body) > MAX_CALLBACK_BODY_BYTES:
        log("warning", "callback rejected", reason="body-too-large", size=len(body))
        return _response(413, "payload-too-large", "Request body is too large.")
    verification = verify_callback(
        event,
        credentials(),
        callback_path=config.callback_path,
        max_skew_seconds=config.max_skew_seconds,
        now=now,
    )
    if not verification.ok:
        log(
            "warning",
            "callback rejected",
            reason=verification.check.value,
            sinchErrorCode=verification.check.sinch_error_code,
        )
        return _response(401, "unauthorized", "Unauthorized.")
    if not _is_json(header(event, "content-type")):
        log("warning", "callback rejected", reason="unsupported-media-type")
        return _response(415, "unsupported-media-type", "Content-Type must be application/json.")
    try:
        parsed = parse_callback(verification.body)
    except CallEnricherError as exc:
        log("warning", "callback rejected", reason=exc.reason)
        return _response(400, "invalid-call-id", "The DiCE has no valid call ID.")
    except (ValueError, RecursionError):
        log("warning", "callback rejected", reason="malformed-json")
        return _response(400, "malformed-json", "The body is not a JSON object.")
    if parsed.call_id is None:
        log("info", "callback ignored", eventType=parsed.event_type[:20])
        return dict(_ACK)
    send(enqueue_body(parsed.call_id, parsed.region))
    log("info", "callback enqueued", callId=parsed.call_id, region=parsed.region)
    return dict(_ACK)
