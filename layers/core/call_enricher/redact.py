"""Text that leaves the service (events, stored failures, logs) without phone numbers.

:func:`mask_phone_like` masks standalone phone-number-like digit runs in free text;
:func:`safe_raw_call_id` makes a short, escaped, masked preview of what a message carried
where a call ID belongs. (A known endpoint is masked by :func:`call_enricher.phones.mask_number`.)
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_TEXT_CHARS",
    "RAW_CALL_ID_CHARS",
    "mask_phone_like",
    "safe_raw_call_id",
    "safe_text",
]

MAX_TEXT_CHARS = 1000
RAW_CALL_ID_CHARS = 40

# A standalone run of 7 to 15 digits (optionally after "+"): what a phone number looks like.
# Digit runs inside an alphanumeric token (hex call IDs) are left alone.
_PHONE_LIKE = re.compile(r"(?<![0-9A-Za-z])\+?\d{7,15}(?![0-9A-Za-z])")


def mask_phone_like(text: str) -> str:
    """Mask standalone phone-number-like digit runs, keeping the last two digits."""
    return _PHONE_LIKE.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    run = match.group(0)
    plus = "+" if run.startswith("+") else ""
    digits = run.removeprefix("+")
    return plus + "*" * (len(digits) - 2) + digits[-2:]


def safe_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` masked and cut to ``limit`` characters (``...`` when cut)."""
    masked = mask_phone_like(text)
    return masked if len(masked) <= limit else masked[: limit - 3] + "..."


def safe_raw_call_id(raw: str | None) -> str | None:
    """A short prefix of an untrusted call ID: escaped, masked, ``...`` when cut."""
    if raw is None or raw == "":
        return None
    prefix = raw[:RAW_CALL_ID_CHARS]
    escaped = prefix.encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in escaped
    )
    escaped = mask_phone_like(escaped)
    cut = len(raw) > RAW_CALL_ID_CHARS
    limit = 2 * RAW_CALL_ID_CHARS - 3
    if len(escaped) > limit:
        escaped, cut = escaped[:limit], True
    return escaped + "..." if cut else escaped
