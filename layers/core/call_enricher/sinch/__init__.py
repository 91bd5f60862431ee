"""Sinch Voice (Calling API v1) adapter: regions, authentication and the HTTP client.

``call_enricher.sinch.auth`` and ``.regions`` are standard library only; ``.client`` is the
only module of the library that imports ``requests``. Importing this package stays cheap:
the client names below are loaded on first access, so the callback receiver (which only
verifies signatures) never pays for ``requests``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from call_enricher.sinch.auth import (
    AuthScheme,
    SignatureCheck,
    SinchCredentials,
    signed_headers,
    verify_signature,
)
from call_enricher.sinch.regions import REGION_BASE_URLS, region_for_base_url, resolve_base_url

if TYPE_CHECKING:
    from call_enricher.sinch.client import (
        AttemptInfo,
        CredentialsSource,
        SinchClient,
        SinchResponse,
    )

__all__ = [
    "REGION_BASE_URLS",
    "AttemptInfo",
    "AuthScheme",
    "CredentialsSource",
    "SignatureCheck",
    "SinchClient",
    "SinchCredentials",
    "SinchResponse",
    "region_for_base_url",
    "resolve_base_url",
    "signed_headers",
    "verify_signature",
]

_LAZY = frozenset({"AttemptInfo", "CredentialsSource", "SinchClient", "SinchResponse"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from call_enricher.sinch import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
