"""Sinch application authentication: Basic and Signed ("Application" HMAC) requests.

Standard library only (``hmac``, ``hashlib``, ``base64``, ``datetime``) so the callback
receiver and the local sandbox can import it without pulling in an HTTP client.

Signed request, as published by Sinch (Voice "Signed Request" / "Callback Request Signing")::

    Content-MD5  = Base64(MD5(body))                      # "" when there is no body
    StringToSign = VERB + "\\n" + Content-MD5 + "\\n" + Content-Type + "\\n"
                 + "x-timestamp:" + <x-timestamp header> + "\\n" + <URL path>
    Signature    = Base64(HMAC-SHA256(Base64Decode(applicationSecret), UTF8(StringToSign)))
    Authorization: Application <applicationKey>:<Signature>

Credentials never appear in a ``repr``, ``str``, log line or exception message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from call_enricher.errors import ConfigurationError

__all__ = [
    "SIGNED_SCHEME",
    "AuthScheme",
    "SignatureCheck",
    "SinchCredentials",
    "basic_authorization",
    "compute_signature",
    "content_md5",
    "format_timestamp",
    "parse_timestamp",
    "signed_headers",
    "string_to_sign",
    "verify_signature",
]

SIGNED_SCHEME = "Application"
"""Scheme of a signed ``Authorization`` header (Sinch's callbacks send it lower-case)."""

_MAX_TIMESTAMP_CHARS = 64


class AuthScheme(StrEnum):
    """How the client authenticates to Sinch."""

    BASIC = "basic"  # Sinch recommends it for testing only
    SIGNED = "signed"  # production default


@dataclass(frozen=True)
class SinchCredentials:
    """A Voice application's key and secret (the secret as the dashboard shows it: base64).

    ``repr()``/``str()`` show neither the secret nor the full key.
    """

    application_key: str
    application_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        key, secret = self.application_key, self.application_secret
        if not isinstance(key, str) or not key.strip():
            raise ConfigurationError("Sinch application key is missing")
        if not key.isascii() or not key.isprintable() or any(c in key for c in ": \t"):
            # It goes into "Application <key>:<sig>" and "Basic base64(key:secret)".
            raise ConfigurationError(
                "Sinch application key must be printable ASCII without ':' or spaces"
            )
        if not isinstance(secret, str) or not secret.strip():
            raise ConfigurationError("Sinch application secret is missing")

    def __repr__(self) -> str:
        return f"SinchCredentials(application_key={self.key_hint!r}, application_secret=***)"

    __str__ = __repr__

    @property
    def key_hint(self) -> str:
        """The first 4 characters of the key, enough to tell two keys apart in a log."""
        return f"{self.application_key[:4]}..."

    def decoded_secret(self) -> bytes:
        """The HMAC key: the base64-decoded secret.

        Surrounding whitespace is ignored and missing ``=`` padding tolerated.

        Raises:
            ConfigurationError: the secret is not valid base64 (never echoed).
        """
        text = self.application_secret.strip()
        text += "=" * (-len(text) % 4)
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                "Sinch application secret is not valid base64 (use it exactly as the "
                "dashboard shows it)"
            ) from None
        if not key:
            raise ConfigurationError("Sinch application secret decodes to nothing")
        return key


def format_timestamp(moment: datetime) -> str:
    """``moment`` as the ``x-timestamp`` value: ISO-8601 UTC with milliseconds and ``Z``.

    Raises:
        ValueError: ``moment`` is naive (its time zone would be a guess).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("x-timestamp needs an aware datetime")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_timestamp(value: str) -> datetime | None:
    """Parse an ``x-timestamp`` (ISO-8601; no zone means UTC). ``None`` when unparseable."""
    if len(value) > _MAX_TIMESTAMP_CHARS:
        return None
    text = value.strip()
    if not text or not text.isascii():
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def content_md5(body: bytes) -> str:
    """Base64 of the MD5 digest of ``body``; ``""`` for an empty body (a GET)."""
    if not body:
        return ""
    digest = hashlib.md5(body, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def string_to_sign(
    *, method: str, content_md5: str, content_type: str, timestamp: str, path: str
) -> str:
    """The canonical text Sinch signs (see the module docstring)."""
    return f"{method.upper()}\n{content_md5}\n{content_type}\nx-timestamp:{timestamp}\n{path}"


def compute_signature(credentials: SinchCredentials, text: str) -> str:
    """Base64 HMAC-SHA256 of ``text`` keyed with the decoded secret."""
    mac = hmac.new(credentials.decoded_secret(), text.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def basic_authorization(credentials: SinchCredentials) -> str:
    """The ``Authorization`` value for Basic authentication (``Basic base64(key:secret)``)."""
    pair = f"{credentials.application_key}:{credentials.application_secret}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def signed_headers(
    credentials: SinchCredentials,
    *,
    method: str,
    path: str,
    body: bytes = b"",
    content_type: str = "",
    now: datetime | None = None,
) -> dict[str, str]:
    """The ``x-timestamp`` and ``Authorization`` headers of a signed request.

    ``path`` is the URL path exactly as sent (leading ``/``, percent-encoding kept, no host);
    ``content_type`` must equal the ``Content-Type`` header sent, ``""`` when none is.
    """
    timestamp = format_timestamp(now if now is not None else datetime.now(UTC))
    text = string_to_sign(
        method=method,
        content_md5=content_md5(body),
        content_type=content_type,
        timestamp=timestamp,
        path=path,
    )
    signature = compute_signature(credentials, text)
    return {
        "x-timestamp": timestamp,
        "Authorization": f"{SIGNED_SCHEME} {credentials.application_key}:{signature}",
    }


class SignatureCheck(StrEnum):
    """Outcome of :func:`verify_signature`: ``OK`` or why not.

    :attr:`sinch_error_code` gives the ``errorCode`` Sinch answers for the same problem
    (the sandbox replies with it; the callback receiver logs it).
    """

    OK = "ok"
    MISSING_AUTHORIZATION = "missing-authorization"
    MALFORMED_AUTHORIZATION = "malformed-authorization"
    BAD_SCHEME = "bad-scheme"
    MISSING_TIMESTAMP = "missing-timestamp"
    INVALID_TIMESTAMP = "invalid-timestamp"
    STALE_TIMESTAMP = "stale-timestamp"
    FUTURE_TIMESTAMP = "future-timestamp"
    WRONG_KEY = "wrong-key"
    BAD_SIGNATURE = "bad-signature"

    @property
    def ok(self) -> bool:
        return self is SignatureCheck.OK

    @property
    def sinch_error_code(self) -> int | None:
        """40100 header, 40101 x-timestamp, 40102 signature, 40108 credentials."""
        return _ERROR_CODES.get(self)


_ERROR_CODES: dict[SignatureCheck, int] = {
    SignatureCheck.MISSING_AUTHORIZATION: 40100,
    SignatureCheck.MALFORMED_AUTHORIZATION: 40100,
    SignatureCheck.BAD_SCHEME: 40100,
    SignatureCheck.MISSING_TIMESTAMP: 40101,
    SignatureCheck.INVALID_TIMESTAMP: 40101,
    SignatureCheck.STALE_TIMESTAMP: 40101,
    SignatureCheck.FUTURE_TIMESTAMP: 40101,
    SignatureCheck.BAD_SIGNATURE: 40102,
    SignatureCheck.WRONG_KEY: 40108,
}


def verify_signature(
    credentials: SinchCredentials,
    *,
    method: str,
    path: str,
    body: bytes,
    content_type: str,
    timestamp: str | None,
    authorization: str | None,
    now: datetime | None = None,
    max_skew_seconds: float = 300,
) -> SignatureCheck:
    """Check a signed request (a Sinch callback, or a request the sandbox received).

    Pass the values *as received*: the raw body bytes (never re-serialised JSON), the
    ``Content-Type`` header verbatim (``""`` when absent), the ``x-timestamp`` and
    ``Authorization`` headers (``None`` when absent) and the path Sinch signed (for a
    callback, the path of the callback URL configured at Sinch).

    The scheme is compared case-insensitively, key and signature in constant time. Order of
    checks: header shape, timestamp syntax, key, signature, then freshness, so STALE/FUTURE
    are only reported for authentic requests (a clock problem, not an attack).
    ``max_skew_seconds`` applies both ways (replays and clocks running ahead); ``now``
    defaults to the current time (a naive ``now`` is taken as UTC).

    Raises:
        ConfigurationError: our own secret is not valid base64.
    """
    if authorization is None or not authorization.strip():
        return SignatureCheck.MISSING_AUTHORIZATION
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != SIGNED_SCHEME.lower():
        return SignatureCheck.BAD_SCHEME
    key, colon, signature = credential.strip().partition(":")
    if not colon or not key or not signature:
        return SignatureCheck.MALFORMED_AUTHORIZATION
    if timestamp is None or not timestamp.strip():
        return SignatureCheck.MISSING_TIMESTAMP
    moment = parse_timestamp(timestamp)
    if moment is None:
        return SignatureCheck.INVALID_TIMESTAMP
    if not hmac.compare_digest(
        key.encode("utf-8", "surrogatepass"), credentials.application_key.encode("utf-8")
    ):
        return SignatureCheck.WRONG_KEY
    expected = compute_signature(
        credentials,
        string_to_sign(
            method=method,
            content_md5=content_md5(body),
            content_type=content_type,
            timestamp=timestamp,
            path=path,
        ),
    )
    if not hmac.compare_digest(signature.encode("utf-8", "surrogatepass"), expected.encode()):
        return SignatureCheck.BAD_SIGNATURE
    current = now if now is not None else datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    skew = (moment - current).total_seconds()
    if skew < -max_skew_seconds:
        return SignatureCheck.STALE_TIMESTAMP
    if skew > max_skew_seconds:
        return SignatureCheck.FUTURE_TIMESTAMP
    return SignatureCheck.OK
