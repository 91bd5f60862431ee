"""Sinch's side of callbacks: a signed DiCE (disconnected call event) POSTed to a URL.

The body carries the fields of the Sinch notes (``event`` ``"dice"``, ``callid``,
``timestamp``, ``reason``, ``result``, ``debit``, ``userRate``, ``to``, ``from`` as a plain
string, ``duration``, ``custom``, ``version``, ``applicationKey``), is sent with
``Content-Type: application/json; charset=utf-8`` and signed with the Application scheme
over the callback URL's path (``x-timestamp`` + ``Authorization: application key:sig``;
Sinch sends the scheme lower case, configurable). Failures (connection errors, non-2xx) are
retried a few times with a short backoff.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from call_enricher.sinch.auth import SinchCredentials, signed_headers

CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class CallbackOutcome:
    """What happened to one DiCE: delivered (a 2xx) or not, after how many attempts."""

    call_id: str
    delivered: bool
    attempts: int
    status: int | None
    """HTTP status of the last attempt (None: no answer)."""
    error: str | None = None


def dice_body(record: Mapping[str, Any], application_key: str) -> dict[str, Any]:
    """The DiCE Sinch would send for the FINAL Get Call ``record``."""
    call_id = record.get("callId") or record.get("callid")
    caller = record.get("from")
    timestamp = str(record.get("timestamp") or "")
    if timestamp and not timestamp.endswith("Z") and "+" not in timestamp[10:]:
        timestamp += "Z"
    body: dict[str, Any] = {
        "event": "dice",
        "callid": call_id,
        "timestamp": timestamp,
        "reason": record.get("reason", "N/A"),
        "result": record.get("result", "N/A"),
        "version": 1,
        "custom": record.get("custom", ""),
        "user": "",
        "debit": record.get("debit") or {"currencyId": None, "amount": 0},
        "userRate": record.get("userRate") or {"currencyId": None, "amount": 0},
        "to": record.get("to"),
        "applicationKey": application_key,
        "duration": record.get("duration", 0),
        "from": caller.get("endpoint", "") if isinstance(caller, Mapping) else "",
    }
    return body


class DiceSender:
    """POSTs signed DiCEs to ``url``. Thread-safe (no shared mutable state).

    Args:
        credentials: the Sinch application's (the receiver checks with the same).
        url: the callback URL.
        signed_path: the path to sign (default: ``url``'s path, as Sinch does).
        scheme: the Authorization scheme word (Sinch sends ``application``).
        attempts: deliveries tried in all; backoff doubles from ``backoff_seconds``.
        timeout: seconds per attempt.
    """

    def __init__(
        self,
        credentials: SinchCredentials,
        url: str,
        *,
        signed_path: str | None = None,
        scheme: str = "application",
        attempts: int = 3,
        backoff_seconds: float = 0.2,
        timeout: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"callback URL must be http(s)://host/...: {url!r}")
        self.credentials = credentials
        self.url = url
        self.signed_path = signed_path or parts.path or "/"
        self.scheme = scheme
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self.timeout = timeout
        self._sleep = sleep

    def signed_request(self, body: bytes, now: datetime | None = None) -> urllib.request.Request:
        headers = signed_headers(
            self.credentials,
            method="POST",
            path=self.signed_path,
            body=body,
            content_type=CONTENT_TYPE,
            now=now or datetime.now(UTC),
        )
        authorization = headers["Authorization"]
        _, _, credential = authorization.partition(" ")
        return urllib.request.Request(  # noqa: S310 - http(s) checked in __init__
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": CONTENT_TYPE,
                "x-timestamp": headers["x-timestamp"],
                "Authorization": f"{self.scheme} {credential}",
                "User-Agent": "Sinch-Callback/1.0 (call-enricher sandbox)",
                "Accept": "application/json",
            },
        )

    def send(self, record: Mapping[str, Any]) -> CallbackOutcome:
        """Deliver the DiCE of ``record``, retrying on failure (a fresh signature each time)."""
        payload = dice_body(record, self.credentials.application_key)
        call_id = str(payload["callid"])
        body = json.dumps(payload, separators=(",", ":")).encode()
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                with urllib.request.urlopen(  # noqa: S310 - http(s) checked in __init__
                    self.signed_request(body), timeout=self.timeout
                ) as response:
                    status = response.status
                    response.read()
                if 200 <= status < 300:
                    return CallbackOutcome(call_id, True, attempt, status)
                error = f"http-{status}"
            except urllib.error.HTTPError as exc:
                status, error = exc.code, f"http-{exc.code}"
                exc.close()
            except (OSError, ValueError) as exc:
                status, error = None, type(exc).__name__
            if attempt < self.attempts:
                self._sleep(self.backoff_seconds * 2 ** (attempt - 1))
        return CallbackOutcome(call_id, False, self.attempts, status, error)
