"""Sinch Voice (Calling API v1) regions and the base URL the client talks to.

A call belongs to one region and the regional host is the right one to ask; the global host
redirects to a region (the client follows that redirect itself, see ``client.py``). An
explicit base URL (the local sandbox, a test server, a proxy) always wins over the region.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urlsplit

from call_enricher.errors import ConfigurationError

__all__ = ["DEFAULT_REGION", "REGION_BASE_URLS", "region_for_base_url", "resolve_base_url"]

DEFAULT_REGION = "global"

REGION_BASE_URLS: Mapping[str, str] = MappingProxyType(
    {
        "global": "https://calling.api.sinch.com",
        "euc1": "https://calling-euc1.api.sinch.com",  # Europe
        "use1": "https://calling-use1.api.sinch.com",  # North America
        "sae1": "https://calling-sae1.api.sinch.com",  # South America
        "apse1": "https://calling-apse1.api.sinch.com",  # South East Asia 1
        "apse2": "https://calling-apse2.api.sinch.com",  # South East Asia 2
    }
)
"""Region name -> HTTPS base URL (no trailing slash) of the Calling API."""

_REGION_BY_HOST = {urlsplit(url).hostname: name for name, url in REGION_BASE_URLS.items()}


def _validate_base_url(base_url: str) -> str:
    # Never echo the URL itself: an operator may have pasted credentials into it.
    try:
        parts = urlsplit(base_url.strip())
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        raise ConfigurationError("Sinch base URL is not a valid URL") from None
    problems: list[str] = []
    if parts.scheme not in ("http", "https"):
        problems.append("scheme must be http or https")
    if not parts.hostname:
        problems.append("host is missing")
    if parts.username is not None or parts.password is not None:
        problems.append("must not contain user info (credentials belong in the secret)")
    if parts.query or parts.fragment or base_url.rstrip().endswith(("?", "#")):
        problems.append("must not have a query or a fragment")
    if problems:
        raise ConfigurationError(
            "invalid Sinch base URL: " + "; ".join(problems),
            details=[{"field": "base_url", "problem": p} for p in problems],
        )
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def resolve_base_url(*, region: str | None = None, base_url: str | None = None) -> str:
    """The base URL to call: ``base_url`` when given, else the region's (default global).

    ``base_url`` must be an absolute http(s) URL without user info, query or fragment; an
    optional path prefix is kept, the trailing ``/`` is stripped and the host lower-cased.
    ``region`` is matched case-insensitively against :data:`REGION_BASE_URLS`.

    Raises:
        ConfigurationError: invalid ``base_url`` or unknown ``region`` (the message lists the
            valid regions).
    """
    if base_url is not None and base_url.strip():
        return _validate_base_url(base_url)
    name = (region or DEFAULT_REGION).strip().lower() or DEFAULT_REGION
    try:
        return REGION_BASE_URLS[name]
    except KeyError:
        valid = ", ".join(REGION_BASE_URLS)
        raise ConfigurationError(
            f"unknown Sinch region {name[:20]!a}; valid regions: {valid}",
            details=[{"field": "region", "problem": f"must be one of: {valid}"}],
        ) from None


def region_for_base_url(base_url: str) -> str | None:
    """The region whose Sinch host ``base_url`` points at, or ``None`` (sandbox, proxy...).

    Only the scheme (https) and host are compared, so a full resource URL such as the
    ``callResourceUrl`` of an ICE callback works too.
    """
    try:
        parts = urlsplit(base_url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() != "https" or parts.hostname is None:
        return None
    return _REGION_BY_HOST.get(parts.hostname.lower())
