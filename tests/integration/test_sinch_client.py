"""SinchClient over real HTTP against the fake Sinch server on 127.0.0.1.

Backoff sleeps are injected (recorded, not slept) and ``random`` returns 0.5, so the full-jitter
delays are exact: 0.5 * min(cap, 0.2 * 2**n) = 0.1, 0.2, 0.4 ...
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import pytest

from call_enricher import __version__, errors
from call_enricher.sinch.auth import (
    AuthScheme,
    SignatureCheck,
    SinchCredentials,
    basic_authorization,
)
from call_enricher.sinch.client import (
    GET_CALL_PATH,
    NOT_FOUND_HINT,
    AttemptInfo,
    parse_retry_after,
)
from tests.integration.conftest import TEST_KEY, TEST_SECRET, TEST_SECRET_BYTES
from tests.support.fake_sinch import FakeSinch, RecordedRequest, Reply

CALL_ID = "4398599d1ba84ef3bde0a82dfb61abed"
PATH = GET_CALL_PATH + CALL_ID
RECORD = {
    "callId": CALL_ID,
    "from": {"type": "number", "endpoint": "+12125550123"},
    "to": {"type": "number", "endpoint": "+46700000001"},
    "domain": "pstn",
    "duration": 42,
    "status": "FINAL",
    "result": "ANSWERED",
    "reason": "CALLERHANGUP",
    "timestamp": "2024-01-08T09:48:12",
    "userRate": {"currencyId": "EUR", "amount": 0.02},
    "debit": {"currencyId": "EUR", "amount": 0.0149},
}
# What the client hands back: the same record, its numbers decoded as exact decimals.
EXACT_RECORD = json.loads(json.dumps(RECORD), parse_float=Decimal)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# --- success and what goes over the wire ------------------------------------------------


def test_signed_get_call_returns_the_record_and_the_server_accepts_the_signature(
    fake_sinch, make_client
):
    # Given Sinch knows the call
    fake_sinch.on_call(CALL_ID, Reply.json(RECORD))
    client = make_client()
    # When the client fetches it (Signed is the default)
    response = client.get_call(CALL_ID)
    # Then the record comes back as a dict (numbers as exact decimals), with the exchange's facts
    assert response.data == EXACT_RECORD
    assert response.data["debit"]["amount"] == Decimal("0.0149")
    assert response.status_code == 200
    assert response.call_id == CALL_ID
    assert response.attempts == 1
    assert response.base_url == fake_sinch.base_url
    assert response.elapsed_ms >= 0
    # And the server saw one GET on the documented path, signed correctly
    (seen,) = fake_sinch.requests
    assert (seen.method, seen.path) == ("GET", PATH)
    assert seen.auth_check is SignatureCheck.OK
    assert seen.header("Authorization").startswith(f"Application {TEST_KEY}:")
    assert TIMESTAMP.fullmatch(seen.header("x-timestamp"))
    # And a GET carries no body, hence no Content-Type / Content-MD5 to sign
    assert seen.body == b""
    assert not seen.has_header("Content-Type")
    assert not seen.has_header("Content-MD5")
    assert seen.header("Accept") == "application/json"
    assert seen.header("User-Agent") == f"call-enricher/{__version__}"
    # And the data is kept out of the response's repr (phone numbers)
    assert "+12125550123" not in repr(response)


def test_basic_auth_sends_the_documented_header(fake_sinch, make_client, sinch_credentials):
    # Given a server that only accepts Basic
    fake_sinch.accepted_schemes = frozenset({AuthScheme.BASIC})
    fake_sinch.on_call(CALL_ID, Reply.json(RECORD))
    # When a Basic client asks
    response = make_client(auth=AuthScheme.BASIC).get_call(CALL_ID)
    # Then the server got base64(key:secret) and accepted it
    (seen,) = fake_sinch.requests
    assert seen.header("Authorization") == basic_authorization(sinch_credentials)
    assert seen.auth_check is SignatureCheck.OK
    assert not seen.has_header("x-timestamp")
    assert response.data == EXACT_RECORD


def test_a_signature_with_the_wrong_secret_is_refused_by_the_server(fake_sinch, make_client):
    # Given a client whose secret differs from Sinch's
    other = SinchCredentials(
        application_key=TEST_KEY, application_secret="AAAAAAAAAAAAAAAAAAAAAA=="
    )
    fake_sinch.on_call(CALL_ID, Reply.json(RECORD))
    # When it asks, Then Sinch's 40102 comes back as a permanent auth error, not retried
    with pytest.raises(errors.SinchAuthError) as caught:
        make_client(credentials=other).get_call(CALL_ID)
    assert caught.value.sinch_error_code == 40102
    assert caught.value.http_status == 401
    assert [r.auth_check for r in fake_sinch.requests] == [SignatureCheck.BAD_SIGNATURE]


def test_invalid_call_id_is_refused_before_any_request(fake_sinch, make_client):
    # Given a hostile call id
    client = make_client()
    # When it is asked for, Then it fails validation and nothing is sent
    with pytest.raises(errors.InvalidCallIdError):
        client.get_call("../../admin")
    with pytest.raises(errors.InvalidCallIdError):
        client.get_call("abc%2Fdef")
    assert fake_sinch.requests == []


def test_the_call_id_is_sent_percent_encoded_and_signed_as_sent(fake_sinch, make_client):
    # Given a call id with the separators a real one may have
    call_id = "822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257"
    fake_sinch.on_call(call_id, Reply.json({"callId": call_id}))
    # When it is fetched
    make_client().get_call(call_id)
    # Then the server saw exactly quote(call_id, safe="") in the path, and that path was signed
    (seen,) = fake_sinch.requests
    assert seen.path == FakeSinch.call_path(call_id) == GET_CALL_PATH + call_id
    assert seen.auth_check is SignatureCheck.OK


# --- permanent errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "error_type"),
    [
        (400, 40003, errors.SinchRejectedError),
        (401, 40108, errors.SinchAuthError),
        (403, 40301, errors.SinchRejectedError),
        (404, 40400, errors.CallNotFoundError),
        (405, 40500, errors.SinchRejectedError),
    ],
)
def test_permanent_answers_are_mapped_and_not_retried(
    fake_sinch, make_client, sleeps, status, code, error_type
):
    # Given Sinch answers with an error body carrying a code and a reference
    fake_sinch.on_call(
        CALL_ID, Reply.error(status, code, "nope", reference="ref-1234"), Reply.json(RECORD)
    )
    # When the client asks
    with pytest.raises(error_type) as caught:
        make_client().get_call(CALL_ID)
    # Then the error keeps Sinch's diagnostics and names the call
    err = caught.value
    assert (err.http_status, err.sinch_error_code, err.sinch_reference) == (
        status,
        code,
        "ref-1234",
    )
    assert CALL_ID in str(err)
    assert not err.retryable
    # And exactly one request was made, with no backoff
    assert len(fake_sinch.requests) == 1
    assert sleeps.calls == []


def test_error_code_as_numeric_string_is_accepted(fake_sinch, make_client):
    # Given the schema's variant: errorCode as a string
    fake_sinch.on_call(CALL_ID, Reply.error(404, "40400", "Call not found"))
    # Then it is kept as an int
    with pytest.raises(errors.CallNotFoundError) as caught:
        make_client().get_call(CALL_ID)
    assert caught.value.sinch_error_code == 40400
    assert "Call not found" in str(caught.value)
    # And the message says why an app-to-app call is never found
    assert str(caught.value).endswith(NOT_FOUND_HINT)


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (Reply(status=404, body=b""), errors.CallNotFoundError),
        (Reply.html(404, "<html>not here</html>"), errors.CallNotFoundError),
        (Reply.html(502), errors.SinchUnavailableError),
        (Reply(status=503, body=b""), errors.SinchUnavailableError),
        (Reply(status=400, body=b"[1, 2]"), errors.SinchRejectedError),
        (Reply(status=302, body=b""), errors.SinchRejectedError),  # redirect without Location
        (Reply(status=408, body=b""), errors.SinchTimeoutError),
    ],
)
def test_empty_html_or_odd_error_bodies_are_classified_by_status(
    fake_sinch, make_client, reply, error_type
):
    # Given an error answer without a usable Sinch body
    fake_sinch.on_call(CALL_ID, reply)
    # Then the status alone decides the class, and no code is invented
    with pytest.raises(error_type) as caught:
        make_client(max_attempts=1).get_call(CALL_ID)
    assert caught.value.http_status == reply.status
    assert caught.value.sinch_error_code is None
    assert "<html>" not in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (Reply.json([RECORD]), "not an object"),
        (Reply.json("FINAL"), "not an object"),
    ],
)
def test_a_200_that_is_json_but_not_an_object_is_an_invalid_record(
    fake_sinch, make_client, reply, problem
):
    # Given a 200 whose body is JSON but not a record
    fake_sinch.on_call(CALL_ID, reply)
    # Then the client raises InvalidRecordError at once (retrying cannot fix it)
    with pytest.raises(errors.InvalidRecordError) as caught:
        make_client().get_call(CALL_ID)
    assert problem in str(caught.value)
    assert caught.value.http_status == 200
    assert len(fake_sinch.requests) == 1


GARBLED_200S = [
    pytest.param(Reply(status=200, body=b'{"callId": "x", '), "not JSON", id="cut-short"),
    pytest.param(
        Reply(status=200, body=b"<html>hi</html>", content_type="text/html"), "not JSON", id="html"
    ),
    pytest.param(Reply(status=200, body=b""), "empty", id="empty"),
    pytest.param(Reply(status=200, body=b"\xff\xfe\x00garbage"), "not JSON", id="binary"),
]


@pytest.mark.parametrize(("reply", "problem"), GARBLED_200S)
def test_a_200_that_is_not_json_at_all_is_a_garbled_response(
    fake_sinch, make_client, reply, problem
):
    # Given a 200 whose body is not JSON (the transport failed, not the record)
    fake_sinch.on_call(CALL_ID, reply)
    # Then the client raises the transient SinchGarbledResponseError
    with pytest.raises(errors.SinchGarbledResponseError) as caught:
        make_client(max_attempts=1).get_call(CALL_ID)
    assert problem in str(caught.value)
    assert caught.value.http_status == 200
    assert caught.value.retryable


@pytest.mark.parametrize(("reply", "problem"), GARBLED_200S)
def test_a_garbled_200_is_asked_again(fake_sinch, make_client, sleeps, reply, problem):
    fake_sinch.on_call(CALL_ID, reply, Reply.json(RECORD))
    assert make_client().get_call(CALL_ID).attempts == 2
    assert len(fake_sinch.requests) == 2


def test_an_oversized_200_body_is_not_read_into_memory(fake_sinch, make_client):
    # Given a 2 MiB "record"
    fake_sinch.on_call(CALL_ID, Reply(status=200, body=b"{" + b" " * (2 << 20) + b"}"))
    # Then it is refused as an invalid record
    with pytest.raises(errors.InvalidRecordError, match="larger than"):
        make_client().get_call(CALL_ID)


# --- transient errors and retries -------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_with_full_jitter_backoff_then_succeed(
    fake_sinch, make_client, sleeps, status
):
    # Given Sinch fails twice, then answers
    fake_sinch.on_call(CALL_ID, Reply.error(status), Reply.error(status), Reply.json(RECORD))
    attempts: list[AttemptInfo] = []
    # When the client asks (random() == 0.5, base 0.2)
    response = make_client(on_attempt=attempts.append).get_call(CALL_ID)
    # Then it succeeded on the third attempt after sleeping 0.5*0.2 and 0.5*0.4
    assert response.attempts == 3
    assert sleeps.calls == pytest.approx([0.1, 0.2])
    assert len(fake_sinch.requests) == 3
    # And every attempt was reported to the metrics hook
    assert [(a.attempt, a.status_code, a.outcome, a.will_retry) for a in attempts] == [
        (1, status, "sinch-unavailable", True),
        (2, status, "sinch-unavailable", True),
        (3, 200, "ok", False),
    ]
    assert attempts[0].error == f"http-{status}"
    assert attempts[2].error is None


def test_backoff_is_capped(fake_sinch, make_client, sleeps):
    # Given a server that keeps failing and a small cap
    fake_sinch.on_call(CALL_ID, Reply.error(503))
    client = make_client(max_attempts=6, backoff_base=1.0, backoff_cap=3.0, random=lambda: 1.0)
    # When the budget runs out
    with pytest.raises(errors.SinchUnavailableError):
        client.get_call(CALL_ID)
    # Then the delays doubled up to the cap: min(3, 1 * 2**n)
    assert sleeps.calls == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_retry_budget_exhausted_raises_the_last_transient_error(fake_sinch, make_client, sleeps):
    # Given Sinch is down for good
    fake_sinch.on_call(CALL_ID, Reply.error(503, 50301, "Service unavailable"))
    # When the client asks with 3 attempts
    with pytest.raises(errors.SinchUnavailableError) as caught:
        make_client(max_attempts=3).get_call(CALL_ID)
    # Then it gave up after 3 requests and 2 sleeps, keeping Sinch's diagnostics
    assert len(fake_sinch.requests) == 3
    assert len(sleeps.calls) == 2
    assert caught.value.retryable
    assert (caught.value.http_status, caught.value.sinch_error_code) == (503, 50301)


def test_429_with_retry_after_seconds_waits_that_long(fake_sinch, make_client, sleeps):
    # Given a rate limit asking for 2 seconds
    fake_sinch.on_call(
        CALL_ID, Reply.error(429, 42900, headers={"Retry-After": "2"}), Reply.json(RECORD)
    )
    # When the client asks
    response = make_client().get_call(CALL_ID)
    # Then it waited what Sinch asked (more than its own 0.1 s backoff), then succeeded
    assert sleeps.calls == [2.0]
    assert response.attempts == 2


def test_429_with_retry_after_http_date_is_honoured(fake_sinch, make_client, sleeps):
    # Given a client whose wall clock reads 07:28:00.25, and a Retry-After HTTP-date 30 s on
    now = datetime(2015, 10, 21, 7, 28, 0, 250000, tzinfo=UTC)
    when = format_datetime(datetime(2015, 10, 21, 7, 28, 30, tzinfo=UTC), usegmt=True)
    fake_sinch.on_call(
        CALL_ID, Reply.error(429, 42901, headers={"Retry-After": when}), Reply.json(RECORD)
    )
    # When the client asks (no deadline)
    make_client(now=lambda: now).get_call(CALL_ID)
    # Then it slept exactly until that date, measured on its own clock
    assert sleeps.calls == [29.75]


def test_a_retry_after_http_date_in_the_past_waits_only_the_backoff(
    fake_sinch, make_client, sleeps
):
    # Given a Retry-After HTTP-date 5 s before the client's wall clock
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    when = format_datetime(now - timedelta(seconds=5), usegmt=True)
    fake_sinch.on_call(CALL_ID, Reply.error(503, headers={"Retry-After": when}), Reply.json(RECORD))
    # When the client asks, Then it waits the jittered backoff (0.5 * 0.2 s), not the date
    make_client(now=lambda: now).get_call(CALL_ID)
    assert sleeps.calls == [0.1]


def test_503_retry_after_is_honoured_too(fake_sinch, make_client, sleeps):
    fake_sinch.on_call(CALL_ID, Reply.error(503, headers={"Retry-After": "1"}), Reply.json(RECORD))
    make_client().get_call(CALL_ID)
    assert sleeps.calls == [1.0]


def test_retry_after_beyond_the_deadline_fails_at_once_with_retry_after(
    fake_sinch, make_client, sleeps, deadline_in
):
    # Given a rate limit asking for 2 minutes while 5 seconds remain
    fake_sinch.on_call(
        CALL_ID, Reply.error(429, 42900, headers={"Retry-After": "120"}), Reply.json(RECORD)
    )
    # When the client asks
    with pytest.raises(errors.SinchRateLimitedError) as caught:
        make_client().get_call(CALL_ID, deadline=deadline_in(5))
    # Then it does not wait: the caller gets retry_after to delay the message itself
    assert caught.value.retry_after == 120.0
    assert caught.value.sinch_error_code == 42900
    assert sleeps.calls == []
    assert len(fake_sinch.requests) == 1


def test_huge_retry_after_without_deadline_is_not_waited_in_process(
    fake_sinch, make_client, sleeps
):
    fake_sinch.on_call(CALL_ID, Reply.error(429, headers={"Retry-After": "3600"}))
    with pytest.raises(errors.SinchRateLimitedError) as caught:
        make_client().get_call(CALL_ID)
    assert caught.value.retry_after == 3600.0
    assert sleeps.calls == []


def test_a_hanging_server_gives_a_timeout_after_each_attempt(fake_sinch, make_client, sleeps):
    # Given Sinch accepts the connection but never answers
    fake_sinch.on_call(CALL_ID, Reply(hang=True))
    attempts: list[AttemptInfo] = []
    # When the client asks with a short read timeout and 2 attempts
    with pytest.raises(errors.SinchTimeoutError) as caught:
        make_client(read_timeout=0.2, max_attempts=2, on_attempt=attempts.append).get_call(CALL_ID)
    # Then both attempts timed out, and the error is transient
    assert caught.value.retryable
    assert len(fake_sinch.requests) == 2
    assert len(sleeps.calls) == 1
    assert [(a.status_code, a.error) for a in attempts] == [(None, "read-timeout")] * 2


def test_the_read_timeout_shrinks_to_fit_the_deadline(fake_sinch, make_client, sleeps, deadline_in):
    # Given a hanging server, a 30 s read timeout, but only 0.3 s until the deadline
    fake_sinch.on_call(CALL_ID, Reply(hang=True))
    client = make_client(read_timeout=30.0, max_attempts=4)
    started = time.monotonic()
    # When the client asks
    with pytest.raises(errors.SinchTimeoutError):
        client.get_call(CALL_ID, deadline=deadline_in(0.3))
    # Then it gave up at the deadline (far before 30 s) without another attempt or sleep
    assert time.monotonic() - started < 15  # generous: proves the 30 s timeout was not used
    assert len(fake_sinch.requests) == 1
    assert sleeps.calls == []


def test_no_time_left_raises_deadline_exceeded_without_a_request(
    fake_sinch, make_client, deadline_in
):
    fake_sinch.on_call(CALL_ID, Reply.json(RECORD))
    with pytest.raises(errors.DeadlineExceededError):
        make_client().get_call(CALL_ID, deadline=deadline_in(-1))
    assert fake_sinch.requests == []


def test_a_backoff_that_does_not_fit_the_deadline_ends_with_the_last_error(
    fake_sinch, make_client, sleeps, deadline_in
):
    # Given a failure and a backoff (1 s) longer than the time left (0.5 s)
    fake_sinch.on_call(CALL_ID, Reply.error(500), Reply.json(RECORD))
    client = make_client(backoff_base=2.0)
    # Then the client does not sleep past the deadline: it raises the 500 at once
    with pytest.raises(errors.SinchUnavailableError):
        client.get_call(CALL_ID, deadline=deadline_in(0.5))
    assert sleeps.calls == []


def test_connection_refused_is_unavailable_and_retried(closed_port, make_client, sleeps):
    # Given nothing listens on the port
    client = make_client(base_url=f"http://127.0.0.1:{closed_port}", max_attempts=2)
    # Then the client reports Sinch unavailable after its attempts
    with pytest.raises(errors.SinchUnavailableError) as caught:
        client.get_call(CALL_ID)
    assert caught.value.http_status is None
    assert caught.value.details == {"kind": "connection"}
    assert len(sleeps.calls) == 1


# --- credentials refresh -----------------------------------------------------------------


def test_a_401_refreshes_the_credentials_once_and_retries(fake_sinch, make_client, sleeps):
    # Given the secret was rotated at Sinch, and our cached copy is the old one
    old = SinchCredentials(application_key=TEST_KEY, application_secret="b2xkLXNlY3JldA==")
    new = fake_sinch.credentials
    asked: list[bool] = []

    def provider(force_refresh: bool) -> SinchCredentials:
        asked.append(force_refresh)
        return new if force_refresh else old

    fake_sinch.on_call(CALL_ID, Reply.json(RECORD))
    # When the client asks
    response = make_client(credentials=provider).get_call(CALL_ID)
    # Then it refreshed once after the 401 and succeeded with the new secret, without backoff
    assert asked == [False, True]
    assert [r.auth_check for r in fake_sinch.requests] == [
        SignatureCheck.BAD_SIGNATURE,
        SignatureCheck.OK,
    ]
    assert response.attempts == 2
    assert sleeps.calls == []


def test_a_second_401_after_refresh_is_an_auth_error(fake_sinch, make_client):
    # Given credentials that stay wrong after a refresh
    wrong = SinchCredentials(application_key="wrong-key", application_secret=TEST_SECRET)
    asked: list[bool] = []

    def provider(force_refresh: bool) -> SinchCredentials:
        asked.append(force_refresh)
        return wrong

    # Then the client refreshes exactly once and gives up with Sinch's code
    with pytest.raises(errors.SinchAuthError) as caught:
        make_client(credentials=provider).get_call(CALL_ID)
    assert asked == [False, True]
    assert len(fake_sinch.requests) == 2
    assert caught.value.sinch_error_code == 40108


# --- redirects ---------------------------------------------------------------------------


def test_a_redirect_to_the_region_is_followed_and_re_signed(
    fake_sinch, sinch_credentials, make_client
):
    # Given a "global" host that redirects to a "regional" one (same loopback host)
    with FakeSinch(credentials=sinch_credentials) as regional:
        regional.on_path("/euc1" + PATH, Reply.json(RECORD))
        fake_sinch.on_call(CALL_ID, Reply.redirect(f"{regional.base_url}/euc1{PATH}"))
        attempts: list[AttemptInfo] = []
        # When the client asks the global host
        response = make_client(on_attempt=attempts.append).get_call(CALL_ID)
        # Then the regional host answered, and each host verified a signature over its own path
        assert response.data == EXACT_RECORD
        assert response.base_url == f"{regional.base_url}/euc1"
        assert [r.auth_check for r in fake_sinch.requests] == [SignatureCheck.OK]
        (seen,) = regional.requests
        assert seen.path == "/euc1" + PATH
        assert seen.auth_check is SignatureCheck.OK
        assert attempts[-1].redirects == 1
        assert attempts[-1].host == "127.0.0.1"


def test_a_redirect_to_a_foreign_host_is_refused_and_gets_no_credentials(fake_sinch, make_client):
    # Given a redirect to another host ("localhost" is not the configured 127.0.0.1)
    with FakeSinch() as elsewhere:
        fake_sinch.on_call(
            CALL_ID, Reply.redirect(f"http://localhost:{elsewhere.port}{PATH}", status=302)
        )
        # Then the client refuses to follow it
        with pytest.raises(errors.SinchRejectedError, match="not allowed") as caught:
            make_client().get_call(CALL_ID)
        assert caught.value.http_status == 302
        # And the other host never received a request
        assert elsewhere.requests == []


def test_a_redirect_loop_stops_after_two_hops(fake_sinch, make_client):
    fake_sinch.on_call(CALL_ID, Reply.redirect(PATH, status=308))
    with pytest.raises(errors.SinchRejectedError, match="more than 2"):
        make_client().get_call(CALL_ID)
    assert len(fake_sinch.requests) == 3


# --- secrets never leak ------------------------------------------------------------------


def test_secrets_never_appear_in_errors_reprs_or_logs(
    fake_sinch, make_client, caplog, closed_port, sinch_credentials
):
    # Given every kind of failure, with all loggers at DEBUG (urllib3's included)
    caplog.set_level(logging.DEBUG)
    fake_sinch.on_call("c401", Reply.error(401, 40102))
    fake_sinch.on_call("c503", Reply.error(503, headers={"Retry-After": "1"}))
    fake_sinch.on_call("c200", Reply(status=200, body=b"not json"))
    fake_sinch.on_call("cok", Reply.json(RECORD))
    client = make_client(max_attempts=2)
    raised: list[errors.CallEnricherError] = []
    for call_id in ("c401", "c503", "c200", "c404", "../x"):
        with pytest.raises(errors.CallEnricherError) as caught:
            client.get_call(call_id)
        raised.append(caught.value)
    with pytest.raises(errors.CallEnricherError) as caught:
        make_client(base_url=f"http://127.0.0.1:{closed_port}").get_call("cdown")
    raised.append(caught.value)
    client.get_call("cok")
    # Then neither the secret, its decoded form nor any Authorization value was written anywhere
    authorizations = [r.header("Authorization") for r in fake_sinch.requests]
    forbidden = [TEST_SECRET, TEST_SECRET_BYTES.decode(), *authorizations]
    forbidden += [a.split(":")[-1] for a in authorizations]  # the signatures alone
    texts = [caplog.text, repr(client), repr(sinch_credentials), str(sinch_credentials)]
    for err in raised:
        texts += [str(err), repr(err), str(err.to_dict()), str(err.__cause__)]
    for text in texts:
        for secret in forbidden:
            assert secret not in text
    # And the key itself is not logged either (only a hint in reprs)
    assert TEST_KEY not in caplog.text
    assert TEST_KEY not in repr(sinch_credentials)


# --- concurrency -------------------------------------------------------------------------


def test_one_client_serves_a_thread_pool_without_exhausting_its_connection_pool(
    fake_sinch, make_client, caplog
):
    # Given 40 calls and a pool of 10 threads sharing one client sized for them
    caplog.set_level(logging.WARNING, logger="urllib3")
    ids = [f"call{i:02d}" for i in range(40)]
    for call_id in ids:
        fake_sinch.on_call(call_id, Reply.json({"callId": call_id}, delay=0.01))
    client = make_client(pool_size=10)
    # When they are fetched concurrently
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(client.get_call, ids))
    # Then every answer matches its call, all signatures were valid
    assert [r.data["callId"] for r in responses] == ids
    assert all(r.auth_check is SignatureCheck.OK for r in fake_sinch.requests)
    # And urllib3 never had to discard a connection for lack of pool room
    assert "Connection pool is full" not in caplog.text


def test_successive_calls_reuse_one_kept_alive_connection(fake_sinch, make_client):
    # Given one client and several calls in a row
    for call_id in ("a1", "a2", "a3"):
        fake_sinch.add_call(call_id, {"status": "FINAL"})
    client = make_client()
    # When they are fetched one after the other
    for call_id in ("a1", "a2", "a3"):
        client.get_call(call_id)
    # Then they all went over the same TCP connection (same client port)
    assert len({r.client_port for r in fake_sinch.requests}) == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("-1", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date_is_relative_to_now():
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 30.0


def test_a_failing_metrics_hook_does_not_break_the_call(fake_sinch, make_client, caplog):
    fake_sinch.on_call(CALL_ID, Reply.json(RECORD))
    calls: list[AttemptInfo] = []

    def broken(info: AttemptInfo) -> None:
        raise RuntimeError("metrics backend down")

    response = make_client(on_attempt=broken).get_call(CALL_ID, on_attempt=calls.append)
    assert response.data == EXACT_RECORD
    assert len(calls) == 1  # the per-call hook still ran after the failing one
    assert "on_attempt hook raised" in caplog.text


def test_requests_made_are_recorded_with_headers_for_other_tests(fake_sinch, make_client):
    # The fake's own contract: a callable reply sees the recorded request
    seen: list[RecordedRequest] = []
    lock = threading.Lock()

    def answer(request: RecordedRequest) -> Reply:
        with lock:
            seen.append(request)
        return Reply.json({"callId": CALL_ID, "echo": request.header("x-timestamp")})

    fake_sinch.on_call(CALL_ID, answer)
    response = make_client().get_call(CALL_ID)
    assert response.data["echo"] == seen[0].header("x-timestamp")


# --- TLS and redirect policy ---------------------------------------------------------------


def test_https_with_a_trusted_certificate_works_and_is_signed(
    tls_server_material, sinch_credentials, make_client, monkeypatch
):
    # Given an HTTPS fake whose certificate is trusted through REQUESTS_CA_BUNDLE
    context, cert = tls_server_material
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    with FakeSinch(credentials=sinch_credentials, ssl_context=context) as secure:
        secure.on_call(CALL_ID, Reply.json(RECORD))
        # When the client asks over https
        response = make_client(base_url=secure.base_url).get_call(CALL_ID)
        # Then TLS was verified, the request signed, the record returned
        assert secure.base_url.startswith("https://")
        assert response.data == EXACT_RECORD
        assert [r.auth_check for r in secure.requests] == [SignatureCheck.OK]


def test_https_with_an_untrusted_certificate_sends_nothing(
    tls_server_material, sinch_credentials, make_client, monkeypatch
):
    # Given an HTTPS server whose certificate nobody vouches for
    context, _ = tls_server_material
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with FakeSinch(credentials=sinch_credentials, ssl_context=context) as suspicious:
        client = make_client(base_url=suspicious.base_url, max_attempts=1)
        # Then the connection fails before any request (and its signature) is sent
        with pytest.raises(errors.SinchUnavailableError, match="SSLError"):
            client.get_call(CALL_ID)
        assert suspicious.requests == []


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("https://calling-euc1.api.sinch.com/calling/v1/calls/id/x", True),
        ("https://CALLING-USE1.API.SINCH.COM/calling/v1/calls/id/x", True),
        ("https://calling-euc1.api.sinch.com:8443/x", True),
        ("http://calling-euc1.api.sinch.com/x", False),  # never downgrade to plain http
        ("https://api.sinch.com.evil.example/x", False),
        ("https://evilapi.sinch.com/x", False),
        ("https://calling.api.sinch.com@evil.example/x", False),
        ("https://user:pw@calling-euc1.api.sinch.com/x", False),
        ("https://127.0.0.1/x", False),  # base host, but another scheme
        ("http://127.0.0.1:1/x", True),  # the configured (sandbox) host
        ("http://localhost/x", False),
        ("ftp://calling.api.sinch.com/x", False),
    ],
)
def test_redirect_policy(make_client, target, allowed):
    # Given a client configured for http://127.0.0.1:<port>
    client = make_client()
    # Then only Sinch's https hosts and the configured host may receive our credentials
    assert client._redirect_allowed(target) is allowed
