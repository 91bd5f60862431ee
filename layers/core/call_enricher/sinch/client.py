"""HTTP client for Sinch Voice ``GET /calling/v1/calls/id/{callId}``.

The only module of the library that imports ``requests``. One :class:`SinchClient` is built
per Lambda execution environment (at cold start) and shared by the worker threads of a batch:

* one ``requests.Session`` whose connection pool holds ``pool_size`` connections, so every
  worker thread keeps its own warm TLS connection; requests go straight to the connection
  adapter (no cookies, no ``.netrc``, no automatic redirects, no urllib3 retries);
* explicit ``(connect, read)`` timeouts; with a ``deadline`` (a value of ``clock()``, e.g.
  tied to the Lambda's remaining time) each attempt's timeouts shrink to fit it, and a body
  still arriving at the deadline is abandoned (checked between 16 KiB chunks: the read
  timeout bounds each socket read, not a whole body trickled byte by byte; the Lambda
  timeout is the backstop for that pathological case);
* errors classified once, into :mod:`call_enricher.errors`, as the Sinch notes' table says:

  ======================  =========================  ===================================
  answer                  error                      retried
  ======================  =========================  ===================================
  2xx, JSON object        (success)                  -
  2xx, not JSON at all    ``SinchGarbledResponse..`` yes (empty, cut short, HTML page)
  2xx, JSON not a record  ``InvalidRecordError``     no
  400, 403, other 4xx     ``SinchRejectedError``     no
  401                     ``SinchAuthError``         once, after a credentials refresh
  404                     ``CallNotFoundError``      no
  408, timeouts           ``SinchTimeoutError``      yes
  429                     ``SinchRateLimitedError``  yes (Retry-After honoured)
  5xx, connection errors  ``SinchUnavailableError``  yes (Retry-After honoured)
  ======================  =========================  ===================================

* transient failures are retried up to ``max_attempts`` attempts in all, sleeping with
  full-jitter exponential backoff ``random() * min(cap, base * 2**n)`` (n = 0 after the
  first failure). A ``Retry-After`` (seconds or HTTP-date) is honoured when it fits the
  deadline (without a deadline: when it is at most :data:`MAX_RETRY_AFTER_SECONDS`);
  otherwise the error is raised at once with ``retry_after`` set, for the caller to delay
  the message instead. A backoff that would not leave time for another attempt before the
  deadline also ends the loop with the last error;
* redirects (the global host answers with a redirect to the call's region) are followed by
  hand, at most :data:`MAX_REDIRECTS`, and only to ``https://*.api.sinch.com`` or to the
  configured base URL's own host (the sandbox); each hop is signed again for its own path.
  ``requests`` would drop ``Authorization`` on a cross-host redirect, and a redirect to any
  other host must never receive our credentials: it raises ``SinchRejectedError``.

Credentials, ``Authorization`` values and bodies never reach logs or exception messages;
the call ID does (it is validated, so it is short and plain).
"""

from __future__ import annotations

import email.utils
import json
import logging
import random as _random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.cookiejar import DefaultCookiePolicy
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from call_enricher import __version__, errors
from call_enricher.callid import validate_call_id
from call_enricher.sinch.auth import (
    AuthScheme,
    SinchCredentials,
    basic_authorization,
    signed_headers,
)
from call_enricher.sinch.regions import resolve_base_url

__all__ = [
    "GET_CALL_PATH",
    "MAX_REDIRECTS",
    "MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER_SECONDS",
    "NOT_FOUND_HINT",
    "USER_AGENT",
    "AttemptInfo",
    "CredentialsSource",
    "SinchClient",
    "SinchResponse",
    "parse_retry_after",
]

logger = logging.getLogger("call_enricher.sinch")

GET_CALL_PATH: Final = "/calling/v1/calls/id/"
MAX_REDIRECTS: Final = 2
MAX_RESPONSE_BYTES: Final = 1 << 20
"""A Get Call record is about 1 KB; anything past 1 MiB is not one (and is not read)."""
MAX_RETRY_AFTER_SECONDS: Final = 60.0
"""Longest Retry-After waited for in-process when the caller gave no deadline."""
MIN_ATTEMPT_SECONDS: Final = 0.05
"""An attempt is not started with less time than this left before the deadline."""
USER_AGENT: Final = f"call-enricher/{__version__}"

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_SINCH_HOST_SUFFIX: Final = ".api.sinch.com"
_MAX_ERROR_BODY_PARSED: Final = 64 * 1024
_DECIMAL: Final = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,6})?")

type CredentialsSource = SinchCredentials | Callable[[bool], SinchCredentials]
"""Fixed credentials, or a provider called with ``force_refresh`` (True after a 401)."""


@dataclass(frozen=True, slots=True)
class SinchResponse:
    """A successful Get Call answer. ``data`` is the decoded JSON object, not yet validated.

    ``data`` and ``body`` hold phone numbers: they are left out of ``repr()``.
    """

    call_id: str
    status_code: int
    data: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False)
    attempts: int
    elapsed_ms: float
    base_url: str
    """The base URL that answered (the regional one after a redirect from global)."""


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One attempt (redirect hops included), as given to the ``on_attempt`` metrics hook."""

    call_id: str
    attempt: int
    """1-based number of the attempt within one ``get_call``."""
    outcome: str
    """``"ok"`` or the error's ``reason`` (``sinch-unavailable``, ``sinch-timeout``...)."""
    status_code: int | None
    """HTTP status of the last answer, ``None`` when no answer came (timeout, refused)."""
    error: str | None
    """``None`` on success, else the cause: ``http-503``, ``read-timeout``,
    ``connect-timeout``, ``connection``, ``body-deadline``, or the error's reason."""
    elapsed_ms: float
    redirects: int
    will_retry: bool
    host: str


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes
    truncated: bool
    headers: Mapping[str, str]
    url: str
    redirects: int


class _NoNetrcAuth(requests.auth.AuthBase):
    """Set as the session's auth so ``requests`` never reads credentials from ``~/.netrc``."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


def _clean(text: str, limit: int) -> str:
    """Untrusted text (a Sinch error message) made safe and short for a message or a log."""
    short = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return short + ("..." if len(text) > limit else "")


def _error_code(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 9:
        return int(value.strip())
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_error_body(body: bytes) -> tuple[int | None, str | None, str | None]:
    """``(errorCode, reference, message)`` from a Sinch error body; empty/HTML/junk -> Nones."""
    if not body or len(body) > _MAX_ERROR_BODY_PARSED:
        return None, None, None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    reference = data.get("reference")
    message = data.get("message")
    return (
        _error_code(data.get("errorCode")),
        _clean(reference, 100) if isinstance(reference, str) and reference else None,
        _clean(message, 200) if isinstance(message, str) and message else None,
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    A date in the past gives ``0.0``; an unparseable value gives ``None``.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _DECIMAL.fullmatch(text):
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (moment - current).total_seconds())


NOT_FOUND_HINT: Final = (
    " (Get Call serves only calls from an app to the PSTN or SIP;"
    " an app-to-app call is never found)"
)
"""Appended to a 404's message: Sinch's Get Call serves only calls terminating to PSTN or
SIP networks from an in-app call, so an app-to-app call's ID is never found."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


_STATUS_ERRORS: Final[dict[int, type[errors.CallEnricherError]]] = {
    400: errors.SinchRejectedError,
    401: errors.SinchAuthError,
    403: errors.SinchRejectedError,
    404: errors.CallNotFoundError,
    408: errors.SinchTimeoutError,
    429: errors.SinchRateLimitedError,
}


def _error_type(status: int) -> type[errors.CallEnricherError]:
    if status >= 500:
        return errors.SinchUnavailableError
    return _STATUS_ERRORS.get(status, errors.SinchRejectedError)


class SinchClient:
    """Fetches Get Call records from Sinch; safe to share between threads.

    Args:
        credentials: fixed :class:`SinchCredentials`, or a callable ``(force_refresh) ->
            SinchCredentials`` asked on every ``get_call`` (it caches) and asked again with
            ``force_refresh=True`` once after a 401, so a rotated secret is picked up without
            a redeploy.
        base_url: from :func:`~call_enricher.sinch.regions.resolve_base_url` (validated again).
        auth: ``SIGNED`` (default, production) or ``BASIC``.
        connect_timeout, read_timeout: seconds, per attempt (shrunk to fit a deadline).
        max_attempts: attempts in all for transient failures (1 = no retry).
        backoff_base, backoff_cap: full-jitter exponential backoff parameters (seconds).
        pool_size: connections kept per host; at least the number of threads sharing it.
        on_attempt: called after every attempt with an :class:`AttemptInfo` (metrics);
            its exceptions are logged and swallowed.
        sleep, clock, random: injectable for tests (``clock`` is also the deadline's clock).
        now: the wall clock (an aware UTC ``datetime``) a ``Retry-After`` HTTP-date is
            measured against; injectable for tests.

    Raises:
        ConfigurationError: invalid base URL, parameters or (fixed) credentials.
    """

    def __init__(
        self,
        credentials: CredentialsSource,
        *,
        base_url: str,
        auth: AuthScheme | str = AuthScheme.SIGNED,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        pool_size: int = 10,
        on_attempt: Callable[[AttemptInfo], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        problems = [
            name
            for name, ok in (
                ("connect_timeout must be > 0", connect_timeout > 0),
                ("read_timeout must be > 0", read_timeout > 0),
                ("max_attempts must be between 1 and 20", 1 <= max_attempts <= 20),
                ("backoff_base must be >= 0", backoff_base >= 0),
                ("backoff_cap must be >= 0", backoff_cap >= 0),
                ("pool_size must be >= 1", pool_size >= 1),
            )
            if not ok
        ]
        if problems:
            raise errors.ConfigurationError("invalid Sinch client settings: " + "; ".join(problems))
        try:
            self._auth = AuthScheme(auth)
        except ValueError:
            raise errors.ConfigurationError(
                "Sinch auth scheme must be 'signed' or 'basic'"
            ) from None
        if isinstance(credentials, SinchCredentials):
            if self._auth is AuthScheme.SIGNED:
                credentials.decoded_secret()  # fail at cold start, not on the first call
        elif not callable(credentials):
            raise errors.ConfigurationError(
                "Sinch credentials must be SinchCredentials or a callable"
            )
        self._source = credentials
        self._base_url = resolve_base_url(base_url=base_url)
        self._base = urlsplit(self._base_url)
        self._connect_timeout = float(connect_timeout)
        self._read_timeout = float(read_timeout)
        self._max_attempts = max_attempts
        self._backoff_base = float(backoff_base)
        self._backoff_cap = float(backoff_cap)
        self._on_attempt = on_attempt
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._now = now or _utc_now
        self._session = self._new_session(pool_size)

    @staticmethod
    def _new_session(pool_size: int) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        session.auth = _NoNetrcAuth()
        return session

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def auth_scheme(self) -> AuthScheme:
        return self._auth

    def __repr__(self) -> str:
        return f"SinchClient(base_url={self._base_url!r}, auth={self._auth.value!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections. The client must not be used afterwards."""
        self._session.close()

    # --- public API ----------------------------------------------------------------------

    def get_call(
        self,
        call_id: str,
        *,
        deadline: float | None = None,
        on_attempt: Callable[[AttemptInfo], None] | None = None,
    ) -> SinchResponse:
        """Fetch one call's record.

        Args:
            call_id: checked with :func:`~call_enricher.callid.validate_call_id` before any
                URL is built, then percent-encoded into the path.
            deadline: value of ``clock()`` by which the call must be over (None: no limit
                other than the timeouts and retry budget).
            on_attempt: an extra per-call hook, called after the client's own ``on_attempt``
                (e.g. to collect one batch's attempts).

        Raises:
            InvalidCallIdError, CallNotFoundError, SinchAuthError, SinchRejectedError,
            InvalidRecordError: permanent.
            SinchRateLimitedError, SinchUnavailableError, SinchTimeoutError,
            DeadlineExceededError: transient (``retry_after`` set when Sinch asked for it).
            ConfigurationError: bad secret, or the credentials provider's own errors.
        """
        call_id = validate_call_id(call_id)
        url = self._base_url + GET_CALL_PATH + quote(call_id, safe="")
        started = self._clock()
        credentials = self._credentials(force_refresh=False)
        hooks = tuple(hook for hook in (self._on_attempt, on_attempt) if hook is not None)
        refreshed = False
        failures = 0
        attempt = 0
        while True:
            attempt += 1
            attempt_started = self._clock()
            reply: _Reply | None = None
            error: errors.CallEnricherError
            try:
                reply = self._fetch(url, credentials, deadline, call_id)
                if 200 <= reply.status < 300:
                    data = self._decode_record(reply, call_id)
                    self._report(hooks, call_id, attempt, attempt_started, reply, None, False)
                    logger.debug(
                        "Sinch answered call %s with HTTP %d (attempt %d)",
                        call_id,
                        reply.status,
                        attempt,
                        extra={"call_id": call_id, "attempt": attempt},
                    )
                    return SinchResponse(
                        call_id=call_id,
                        status_code=reply.status,
                        data=data,
                        body=reply.body,
                        attempts=attempt,
                        elapsed_ms=(self._clock() - started) * 1000.0,
                        base_url=self._answering_base_url(reply.url, url),
                    )
                error = self._error_for(reply, call_id)
            except errors.CallEnricherError as exc:
                error = exc

            if isinstance(error, errors.SinchAuthError) and not refreshed and self._refreshable:
                refreshed = True
                self._report(hooks, call_id, attempt, attempt_started, reply, error, True)
                logger.warning(
                    "Sinch rejected the credentials for call %s (HTTP 401, errorCode %s);"
                    " refreshing them and retrying once",
                    call_id,
                    error.sinch_error_code,
                    extra={"call_id": call_id, "attempt": attempt},
                )
                credentials = self._credentials(force_refresh=True)
                continue

            delay: float | None = None
            if error.retryable and not isinstance(error, errors.DeadlineExceededError):
                failures += 1
                delay = self._retry_delay(error, failures, deadline)
            self._report(hooks, call_id, attempt, attempt_started, reply, error, delay is not None)
            if delay is None:
                logger.debug(
                    "Sinch call %s failed after %d attempt(s): %s",
                    call_id,
                    attempt,
                    error.reason,
                    extra={"call_id": call_id, "attempt": attempt, "reason": error.reason},
                )
                raise error
            logger.warning(
                "Sinch call %s attempt %d failed (%s, HTTP %s); retrying in %.3f s",
                call_id,
                attempt,
                error.reason,
                error.http_status or "-",
                delay,
                extra={"call_id": call_id, "attempt": attempt, "reason": error.reason},
            )
            self._sleep(delay)

    # --- attempts ------------------------------------------------------------------------

    @property
    def _refreshable(self) -> bool:
        return not isinstance(self._source, SinchCredentials)

    def _credentials(self, *, force_refresh: bool) -> SinchCredentials:
        source = self._source
        if isinstance(source, SinchCredentials):
            return source
        credentials = source(force_refresh)
        if not isinstance(credentials, SinchCredentials):
            raise errors.ConfigurationError(
                f"Sinch credentials provider returned {type(credentials).__name__},"
                " not SinchCredentials"
            )
        return credentials

    def _retry_delay(
        self, error: errors.CallEnricherError, failures: int, deadline: float | None
    ) -> float | None:
        """Seconds to sleep before the next attempt, or None to give up with ``error``."""
        if failures >= self._max_attempts:
            return None
        delay = self._random() * min(self._backoff_cap, self._backoff_base * 2.0 ** (failures - 1))
        if error.retry_after is not None:
            if deadline is None and error.retry_after > MAX_RETRY_AFTER_SECONDS:
                return None
            delay = max(delay, error.retry_after)
        if deadline is not None and self._clock() + delay + MIN_ATTEMPT_SECONDS > deadline:
            return None
        return delay

    def _timeouts(self, deadline: float | None, call_id: str) -> tuple[float, float]:
        if deadline is None:
            return self._connect_timeout, self._read_timeout
        remaining = deadline - self._clock()
        if remaining < MIN_ATTEMPT_SECONDS:
            raise errors.DeadlineExceededError(
                f"no time left before the deadline to ask Sinch for call {call_id}"
            )
        return min(self._connect_timeout, remaining), min(self._read_timeout, remaining)

    def _auth_headers(self, credentials: SinchCredentials, path: str) -> dict[str, str]:
        if self._auth is AuthScheme.BASIC:
            return {"Authorization": basic_authorization(credentials)}
        return signed_headers(credentials, method="GET", path=path)

    def _fetch(
        self, url: str, credentials: SinchCredentials, deadline: float | None, call_id: str
    ) -> _Reply:
        """One attempt: GET ``url``, following allowed redirects by hand."""
        current = url
        for hop in range(MAX_REDIRECTS + 1):
            reply = self._exchange(current, credentials, deadline, call_id, hop)
            location = reply.headers.get("Location")
            if reply.status not in _REDIRECT_STATUSES or not location:
                return reply
            target = urljoin(current, location.strip())
            if not self._redirect_allowed(target):
                host = urlsplit(target).hostname or "?"
                raise errors.SinchRejectedError(
                    f"Sinch redirected call {call_id} to a host that is not allowed"
                    f" ({_clean(host, 60)}); only https://*{_SINCH_HOST_SUFFIX} is followed",
                    http_status=reply.status,
                )
            logger.debug(
                "Sinch redirected call %s to %s",
                call_id,
                urlsplit(target).hostname,
                extra={"call_id": call_id},
            )
            current = target
        raise errors.SinchRejectedError(
            f"Sinch redirected call {call_id} more than {MAX_REDIRECTS} times",
            http_status=reply.status,
        )

    def _redirect_allowed(self, target: str) -> bool:
        try:
            parts = urlsplit(target)
            host = (parts.hostname or "").lower()
        except ValueError:
            return False
        if not host or parts.username is not None or parts.password is not None:
            return False
        if parts.scheme == "https" and host.endswith(_SINCH_HOST_SUFFIX):
            return True
        return parts.scheme == self._base.scheme and host == (self._base.hostname or "")

    def _exchange(
        self,
        url: str,
        credentials: SinchCredentials,
        deadline: float | None,
        call_id: str,
        hop: int,
    ) -> _Reply:
        """One HTTP request/response; network failures become transient domain errors."""
        timeout = self._timeouts(deadline, call_id)
        prepared = self._session.prepare_request(requests.Request("GET", url))
        # Sign the path exactly as it goes on the wire (after requests' own quoting).
        prepared.headers.update(self._auth_headers(credentials, prepared.path_url))
        url_sent = prepared.url or url
        # Proxy and CA-bundle settings from the environment, as requests.Session.request does.
        settings = self._session.merge_environment_settings(url_sent, {}, True, None, None)
        verify: bool | str = True if settings["verify"] is None else settings["verify"]
        try:
            # Straight to the adapter: Session.send would look for a redirect to follow (and
            # read a redirect's whole body to do so); redirects are handled in _fetch.
            response = self._session.get_adapter(url_sent).send(
                prepared,
                stream=True,
                timeout=timeout,
                verify=verify,
                cert=settings["cert"],
                proxies=settings["proxies"],
            )
            with response:
                body, truncated = self._read_body(response, deadline, call_id)
                return _Reply(
                    status=response.status_code,
                    body=body,
                    truncated=truncated,
                    headers=response.headers,
                    url=url,
                    redirects=hop,
                )
        except requests.exceptions.ConnectTimeout as exc:
            raise errors.SinchTimeoutError(
                f"Sinch did not accept a connection in time for call {call_id}",
                details={"kind": "connect-timeout"},
            ) from exc
        except requests.exceptions.ReadTimeout as exc:
            raise self._read_timeout_error(call_id) from exc
        except requests.exceptions.ConnectionError as exc:
            # A read timeout while streaming the body arrives wrapped in a ConnectionError.
            if any(isinstance(arg, ReadTimeoutError) for arg in exc.args):
                raise self._read_timeout_error(call_id) from exc
            raise errors.SinchUnavailableError(
                f"could not reach Sinch for call {call_id} ({type(exc).__name__})",
                details={"kind": "connection"},
            ) from exc
        except requests.RequestException as exc:
            raise errors.SinchUnavailableError(
                f"the exchange with Sinch failed for call {call_id} ({type(exc).__name__})",
                details={"kind": "protocol"},
            ) from exc

    @staticmethod
    def _read_timeout_error(call_id: str) -> errors.SinchTimeoutError:
        return errors.SinchTimeoutError(
            f"Sinch did not answer in time for call {call_id}", details={"kind": "read-timeout"}
        )

    def _read_body(
        self, response: requests.Response, deadline: float | None, call_id: str
    ) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=16 * 1024):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                return b"".join(chunks), True
            chunks.append(chunk)
            if deadline is not None and self._clock() > deadline:
                raise errors.SinchTimeoutError(
                    f"Sinch's answer for call {call_id} was still arriving at the deadline",
                    details={"kind": "body-deadline"},
                )
        return b"".join(chunks), False

    # --- answers -------------------------------------------------------------------------

    @staticmethod
    def _decode_record(reply: _Reply, call_id: str) -> dict[str, Any]:
        def invalid(problem: str) -> errors.InvalidRecordError:
            return errors.InvalidRecordError(
                f"Sinch answered HTTP {reply.status} for call {call_id} with {problem}",
                http_status=reply.status,
                details=[{"field": "$", "problem": problem}],
            )

        if reply.truncated:
            raise invalid(f"a body larger than {MAX_RESPONSE_BYTES} bytes")

        def garbled(problem: str) -> errors.SinchGarbledResponseError:
            return errors.SinchGarbledResponseError(
                f"Sinch answered HTTP {reply.status} for call {call_id} with {problem}",
                http_status=reply.status,
            )

        if not reply.body.strip():
            raise garbled("an empty body")
        try:
            # Exact decimals (money never goes through float); NaN/Infinity are not JSON.
            data = json.loads(reply.body, parse_float=Decimal, parse_constant=_reject_constant)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise garbled("a body that is not JSON") from None
        except (ValueError, RecursionError):  # NaN/Infinity, or nested too deeply
            raise invalid("JSON that is not a record") from None
        if not isinstance(data, dict):
            raise invalid(f"JSON that is not an object ({type(data).__name__})")
        return data

    def _error_for(self, reply: _Reply, call_id: str) -> errors.CallEnricherError:
        code, reference, message = _parse_error_body(reply.body)
        error_type = _error_type(reply.status)
        retry_after = None
        if issubclass(error_type, errors.TransientError):
            retry_after = parse_retry_after(reply.headers.get("Retry-After"), now=self._now())
        text = f"Sinch answered HTTP {reply.status}"
        if code is not None:
            text += f" (errorCode {code})"
        if message:
            text += f": {message}"
        text += f" for call {call_id}"
        if retry_after is not None:
            text += f" (Retry-After {retry_after:g} s)"
        if error_type is errors.CallNotFoundError:
            text += NOT_FOUND_HINT
        return error_type(
            text,
            http_status=reply.status,
            sinch_error_code=code,
            sinch_reference=reference,
            retry_after=retry_after,
        )

    def _answering_base_url(self, final_url: str, first_url: str) -> str:
        if final_url == first_url:
            return self._base_url
        parts = urlsplit(final_url)
        marker = parts.path.rfind(GET_CALL_PATH)
        prefix = parts.path[:marker] if marker >= 0 else ""
        return f"{parts.scheme}://{parts.netloc}{prefix}"

    def _report(
        self,
        hooks: tuple[Callable[[AttemptInfo], None], ...],
        call_id: str,
        attempt: int,
        attempt_started: float,
        reply: _Reply | None,
        error: errors.CallEnricherError | None,
        will_retry: bool,
    ) -> None:
        if not hooks:
            return
        kind: str | None = None
        if error is not None:
            if error.http_status is not None and reply is not None:
                kind = f"http-{error.http_status}"
            elif isinstance(error.details, dict):
                kind = str(error.details.get("kind", error.reason))
            else:
                kind = error.reason
        if reply is not None:
            host = urlsplit(reply.url).hostname or ""
        else:
            host = self._base.hostname or ""
        info = AttemptInfo(
            call_id=call_id,
            attempt=attempt,
            outcome="ok" if error is None else error.reason,
            status_code=reply.status if reply is not None else None,
            error=kind,
            elapsed_ms=(self._clock() - attempt_started) * 1000.0,
            redirects=reply.redirects if reply is not None else 0,
            will_retry=will_retry,
            host=host,
        )
        for hook in hooks:
            try:
                hook(info)
            except Exception:
                logger.warning("an on_attempt hook raised; ignored", exc_info=True)
