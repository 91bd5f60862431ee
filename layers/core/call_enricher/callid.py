"""Validation of Sinch call IDs before they reach a URL, a log line or a database key.

A call ID arrives from outside (SQS messages, HTTP paths, Sinch callbacks) and ends up in the
path of ``GET /calling/v1/calls/id/{callId}``. It is checked once, here, against a
conservative allow-list rather than a deny-list of dangerous characters.

Policy (what real Sinch call IDs look like decides it):

* Sinch Voice call IDs are 32 lowercase hex characters (``4398599d1ba84ef3bde0a82dfb61abed``);
  in-app and older call IDs are UUIDs, sometimes with a leg suffix
  (``822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257``, from Sinch's callback-signing example).
* Allowed characters: ASCII letters (both cases), digits, ``-`` and ``_``. Every one of them is
  "unreserved" in RFC 3986, so :func:`urllib.parse.quote` leaves an accepted ID unchanged and
  the ID cannot change the meaning of the URL it is put in.
* ``.`` is *not* allowed: no Sinch call ID has one, and ``.``/``..`` are dot-segments that
  URL normalisation (urllib3 included) would resolve, turning ``id/..`` into another resource.
* Rejected, among others: ``/``, ``%`` (so no ``%2F`` or double-encoding tricks), ``?``,
  ``#``, whitespace, control characters, NUL, and every non-ASCII character (Unicode
  look-alikes such as the fullwidth solidus or Cyrillic small a, U+0430).
* :data:`CALL_ID_MAX_LENGTH` is 128: four times the 32 characters of a Sinch ID and three
  times a suffixed UUID, so a future format with a prefix or a longer suffix still fits,
  while a hostile multi-megabyte "ID" is refused before any scan.

Error messages name the problem and show at most a short, escaped prefix of the input.
"""

from __future__ import annotations

import re

from call_enricher.errors import InvalidCallIdError

__all__ = ["ALLOWED_CALL_ID_CHARACTERS", "CALL_ID_MAX_LENGTH", "validate_call_id"]

CALL_ID_MAX_LENGTH = 128
"""Longest call ID accepted (Sinch IDs are 32 characters; see the module docstring)."""

ALLOWED_CALL_ID_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
)
"""The characters a call ID may contain (all RFC 3986 "unreserved")."""

_VALID = re.compile(r"[A-Za-z0-9_-]+")
_PREFIX_CHARS = 12


_DIGIT_RUN = re.compile(r"\d{5,}")


def _preview(value: str) -> str:
    """A short, escaped prefix of untrusted text, safe to put in a message or a log.

    Runs of five or more digits are masked but for their last two: a producer that puts a
    phone number where a call ID belongs must not get it into our logs and events.
    """
    prefix = _DIGIT_RUN.sub(
        lambda m: "*" * (len(m.group()) - 2) + m.group()[-2:], value[:_PREFIX_CHARS]
    )
    shown = ascii(prefix)
    return shown if len(value) <= _PREFIX_CHARS else f"{shown}..."


def validate_call_id(value: object) -> str:
    """Return ``value`` unchanged when it is a well-formed call ID.

    Raises:
        InvalidCallIdError: ``value`` is not a string, is empty, is longer than
            :data:`CALL_ID_MAX_LENGTH`, or has a character outside
            :data:`ALLOWED_CALL_ID_CHARACTERS` (the message gives the first bad one and its
            index). ``details`` carries the same facts as a dict.
    """
    if not isinstance(value, str):
        raise InvalidCallIdError(
            f"call id must be a string, not {type(value).__name__}",
            details={"problem": "not-a-string", "type": type(value).__name__},
        )
    if not value:
        raise InvalidCallIdError("call id is empty", details={"problem": "empty"})
    if len(value) > CALL_ID_MAX_LENGTH:
        raise InvalidCallIdError(
            f"call id is too long ({len(value)} characters, at most {CALL_ID_MAX_LENGTH}):"
            f" {_preview(value)}",
            details={"problem": "too-long", "length": len(value), "max": CALL_ID_MAX_LENGTH},
        )
    if _VALID.fullmatch(value) is None:
        index, char = next(
            (i, c) for i, c in enumerate(value) if c not in ALLOWED_CALL_ID_CHARACTERS
        )
        raise InvalidCallIdError(
            f"call id has a forbidden character U+{ord(char):04X} at index {index}:"
            f" {_preview(value)}",
            details={"problem": "forbidden-character", "index": index, "codepoint": ord(char)},
        )
    # A str subclass could override __str__/__eq__: hand back a plain str with the same text.
    return value if type(value) is str else str.__str__(value)
