"""The Sinch sandbox over real HTTP on 127.0.0.1, driven by the project's own SinchClient."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from call_enricher import errors
from call_enricher.enrichment import enrich
from call_enricher.model import parse_call_record
from call_enricher.sinch.auth import (
    SignatureCheck,
    SinchCredentials,
    signed_headers,
    verify_signature,
)
from call_enricher.sinch.client import GET_CALL_PATH, SinchClient
from call_enricher_tools.sandbox import (
    FaultProfile,
    NonLoopbackHostError,
    Sandbox,
    add_sandbox_command,
)
from call_enricher_tools.sandbox.records import (
    BURST_CALLS,
    PARTY_TYPES,
    REASONS,
    RESULTS,
    generate_records,
    risky_day,
)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(records=120, hang_seconds=5) as running:
        yield running


def client(sandbox: Sandbox, **kwargs: Any) -> SinchClient:
    options: dict[str, Any] = {"max_attempts": 1, "read_timeout": 2.0, **kwargs}
    return SinchClient(sandbox.credentials, base_url=sandbox.base_url, **options)


def raw_get(sandbox: Sandbox, path: str, headers: dict[str, str]) -> requests.Response:
    return requests.get(sandbox.base_url + path, headers=headers, timeout=5)


def wait_until(condition: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- records ----------------------------------------------------------------------------


def test_seeded_records_cover_every_shape_and_are_deterministic() -> None:
    # Given two generations with the same seed and one with another
    first, again, other = (
        generate_records(7, 400),
        generate_records(7, 400),
        generate_records(8, 400),
    )
    # Then the same seed gives the same records, another seed other generated ones
    assert [r.final for r in first] == [r.final for r in again]
    assert [r.final for r in first] != [r.final for r in other]
    bodies = [r.final for r in first]
    parties = [b[side] for b in bodies for side in ("from", "to") if side in b]
    # ... covering every type spelling, result and reason, withheld and absent callers
    assert {p["type"] for p in parties} >= set(PARTY_TYPES)
    assert {b.get("result") for b in bodies} >= set(RESULTS)
    assert {b.get("reason") for b in bodies} >= set(REASONS)
    assert any(b.get("from", {}).get("endpoint") == "private" for b in bodies)
    assert any("from" not in b for b in bodies)
    assert any(b.get("debit", {}).get("currencyId") is None for b in bodies)
    assert any(str(b.get("timestamp", "")).endswith("Z") for b in bodies)
    assert any("." in str(b.get("timestamp", "")) for b in bodies)
    assert any(r.ongoing for r in first)
    assert any(r.source.startswith("sample:") for r in first)


def test_the_risky_seeds_are_appended_deterministic_and_assessed_as_the_issue_says() -> None:
    # Given the records of one seed with and without the risky calls
    plain = generate_records(7, 60, risky=False)
    seeded = generate_records(7, 60)
    # Then the other calls keep their IDs and bodies, the risky ones come last ...
    assert [r.final for r in seeded[:60]] == [r.final for r in plain]
    risky = seeded[60:]
    assert [r.final for r in risky] == [r.final for r in generate_records(7, 60)[60:]]
    kinds = [r.source for r in risky]
    assert kinds == ["risky:premium-rate", "risky:satellite"] + ["risky:burst"] * BURST_CALLS
    # ... all FINAL on one UTC day
    enriched = [enrich(parse_call_record(json.dumps(r.final).encode())) for r in risky]
    assert {e.time.utc_day for e in enriched} == {risky_day(7)}
    assert not any(r.ongoing for r in risky)
    # and assessed: the premium-rate and satellite calls high with both of their signals
    codes = [(e.risk.level.value, [s.code for s in e.risk.signals]) for e in enriched]
    assert codes[0] == ("high", ["premium-rate-destination", "high-rate"])
    assert codes[1] == ("high", ["international-network-destination", "high-rate"])
    # ... the burst's calls ordinary one by one, to different LV numbers
    assert set(map(str, codes[2:])) == {str(("low", ["cross-border"]))}
    burst = enriched[2:]
    assert {e.parties.to.phone.country for e in burst} == {"LV"}
    assert len({e.parties.to.phone.e164 for e in burst}) == BURST_CALLS
    # ... each under the default policy's daily EUR 50 per number, together over EUR 250
    debits = [e.money.debit.amount for e in burst]
    assert max(debits) < 50
    assert sum(debits) >= 250


def test_every_seeded_record_fetched_with_signed_and_basic_auth_parses_and_enriches(
    sandbox: Sandbox,
) -> None:
    # Given the project's client with each auth scheme
    countries: set[str] = set()
    for auth in ("signed", "basic"):
        with client(sandbox, auth=auth) as sinch:
            # When every seeded call is fetched
            for call_id in sandbox.call_ids("all"):
                response = sinch.get_call(call_id)
                # Then it parses and enriches, and says what the sandbox says
                record = parse_call_record(response.body)
                enriched = enrich(record, raw=response.data, call_id=call_id)
                assert enriched.call_id == call_id
                expected = "ONGOING" if sandbox.is_ongoing(call_id) else "FINAL"
                assert response.data["status"] == expected
                for party in (enriched.parties.from_, enriched.parties.to):
                    country = getattr(getattr(party, "phone", None), "country", None)
                    if country:
                        countries.add(country)
    # ... with numbers from several countries
    assert len(countries) >= 5
    fetched = 2 * len(sandbox.call_ids("all"))  # 120 seeded, then the risky ones
    assert sandbox.stats["requests"]["GET /calling/v1/calls/id/{callId} 200"] == fetched


# -- authentication and errors ------------------------------------------------------------


def _assert_sinch_error(response: requests.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status
    body = response.json()
    assert body["errorCode"] == code
    assert body["status"].startswith(str(status))
    assert body["message"]
    assert len(body["reference"]) == 36
    return dict(body)


def test_401_wrong_key_bad_signature_and_stale_timestamp(sandbox: Sandbox) -> None:
    call_id = sandbox.call_ids("final")[0]
    path = GET_CALL_PATH + call_id
    wrong = SinchCredentials("not-the-key", sandbox.credentials.application_secret)
    other_secret = SinchCredentials(sandbox.credentials.application_key, "b3RoZXItc2VjcmV0")
    stale = datetime.now(UTC) - timedelta(minutes=20)
    cases = [
        (signed_headers(wrong, method="GET", path=path), 40108),
        (signed_headers(other_secret, method="GET", path=path), 40102),
        (signed_headers(sandbox.credentials, method="GET", path="/other" + path), 40102),
        (signed_headers(sandbox.credentials, method="GET", path=path, now=stale), 40101),
        ({"Authorization": "Basic " + "d3Jvbmc6d3Jvbmc="}, 40108),
        ({}, 40100),
    ]
    for headers, code in cases:
        # When a request arrives with bad credentials, Then Sinch's 401 and code
        _assert_sinch_error(raw_get(sandbox, path, headers), 401, code)
    # ... and the project's client classifies it as an auth error
    with (
        SinchClient(wrong, base_url=sandbox.base_url, max_attempts=1) as sinch,
        pytest.raises(errors.SinchAuthError),
    ):
        sinch.get_call(call_id)
    assert sandbox.stats["auth_failures"]["stale-timestamp"] == 1


def test_unknown_malformed_and_other_paths(sandbox: Sandbox) -> None:
    unknown = sandbox.call_ids("unknown")[0]
    assert unknown not in sandbox.call_ids("all")
    path = GET_CALL_PATH + unknown
    headers = signed_headers(sandbox.credentials, method="GET", path=path)
    body = _assert_sinch_error(raw_get(sandbox, path, headers), 404, 40400)
    assert body["message"] == "Call not found"
    with client(sandbox) as sinch, pytest.raises(errors.CallNotFoundError):
        sinch.get_call(unknown)
    bad = GET_CALL_PATH + "abc%2F..%2Fdef"
    headers = signed_headers(sandbox.credentials, method="GET", path=bad)
    _assert_sinch_error(raw_get(sandbox, bad, headers), 400, 40001)
    _assert_sinch_error(raw_get(sandbox, "/calling/v1/other", {}), 404, 40400)


# -- faults ---------------------------------------------------------------------------------

CHAOS = "5xx=0.10,429=0.05,hang=0.02,malformed=0.02"


def _outcomes(faults: str, seed: int, rounds: int = 3) -> tuple[list[str], dict[str, int]]:
    """What the client saw over ``rounds`` passes, and the faults the sandbox decided."""
    with Sandbox(records=100, seed=seed, faults=faults, hang_seconds=0.3) as box:
        sinch = SinchClient(
            box.credentials, base_url=box.base_url, max_attempts=1, read_timeout=0.2,
            pool_size=8,
        )  # fmt: skip
        seen = []
        with sinch:
            for _ in range(rounds):
                for call_id in box.call_ids("all"):
                    try:
                        sinch.get_call(call_id)
                        seen.append("ok")
                    except errors.CallEnricherError as exc:
                        seen.append(exc.reason)
        return seen, box.stats["faults"]


def test_fault_rates_are_reproducible_and_roughly_as_configured() -> None:
    # Given the chaos profile, twice with one seed and once with another
    (first, decided), (_, again) = _outcomes(CHAOS, seed=3), _outcomes(CHAOS, seed=3)
    _, other = _outcomes(CHAOS, seed=4)
    # Then one seed injects the same faults; another seed other ones
    assert decided == again
    assert decided != other
    total = len(first)  # 300 requests
    assert 0.04 * total <= decided.get("500", 0) + decided.get("503", 0) <= 0.18 * total
    assert 0.01 * total <= decided.get("429", 0) + decided.get("429-retry-after", 0) <= 0.1 * total
    assert 1 <= decided.get("hang", 0) <= 0.06 * total
    assert 1 <= decided.get("malformed", 0) <= 0.06 * total
    # ... and the client saw them as the matching error classes (generous bounds)
    counts = {k: first.count(k) for k in set(first)}
    assert counts.get("sinch-unavailable", 0) >= 0.04 * total, counts
    assert counts.get("sinch-rate-limited", 0) >= 0.01 * total, counts
    assert counts.get("sinch-timeout", 0) >= 1, counts
    assert counts.get("sinch-garbled-response", 0) >= 1, counts
    assert counts["ok"] >= 0.7 * total, counts


def test_per_request_faults_let_retries_recover_per_id_faults_do_not() -> None:
    profile = FaultProfile.parse("503=0.5")
    per_id = FaultProfile.parse("503=0.5,per-id=1")
    draws = [[profile.draw(1, f"id{i}", n).label for n in range(1, 6)] for i in range(40)]
    fixed = [[per_id.draw(1, f"id{i}", n).label for n in range(1, 6)] for i in range(40)]
    assert any(len(set(d)) > 1 for d in draws)  # per request: an ID can fail then succeed
    assert all(len(set(d)) == 1 for d in fixed)  # per ID: always the same answer
    assert any(d[0] == "503" for d in fixed)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultProfile.parse("teapot=0.1")


def test_scripted_sequence_and_retry_after(sandbox: Sandbox) -> None:
    call_id, other = sandbox.call_ids("final")[:2]
    # Given "fail twice with 503, then succeed", and a 429 with Retry-After
    sandbox.script(call_id, ["503", "503", "ok"])
    sandbox.script(other, ["429:7"])
    path = GET_CALL_PATH + call_id
    statuses = [
        raw_get(
            sandbox, path, signed_headers(sandbox.credentials, method="GET", path=path)
        ).status_code
        for _ in range(4)
    ]
    assert statuses == [503, 503, 200, 200]
    path = GET_CALL_PATH + other
    response = raw_get(sandbox, path, signed_headers(sandbox.credentials, method="GET", path=path))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["errorCode"] == 42900
    # ... and the client's own retries get through a scripted 503 pair
    sandbox.inject_fault(call_id, status=503, times=2)
    with client(sandbox, max_attempts=3, backoff_base=0.0) as sinch:
        assert sinch.get_call(call_id).attempts == 3
    assert sandbox.stats["faults"]["503"] == 4


def test_control_api_scripts_faults_and_lists_calls(sandbox: Sandbox) -> None:
    call_id = sandbox.call_ids("final")[0]

    def control(method: str, route: str, data: Any = None) -> Any:
        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(
            f"{sandbox.base_url}/_sandbox/{route}", data=body, method=method
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    listed = control("GET", "calls?kind=ongoing")["calls"]
    assert {c["callId"] for c in listed} == set(sandbox.call_ids("ongoing"))
    control("POST", f"calls/{call_id}/script", {"steps": ["500"]})
    faults = control("PUT", "faults", {"malformed": 1.0})["faults"]
    assert faults["rate_malformed"] == 1.0
    with client(sandbox) as sinch:
        with pytest.raises(errors.SinchUnavailableError):
            sinch.get_call(call_id)
        # a 200 that is not JSON is the transport's fault: retried, then transient
        with pytest.raises(errors.SinchGarbledResponseError):
            sinch.get_call(call_id)
    stats = control("GET", "stats")["faults"]
    assert stats["500"] == 1
    assert stats["malformed"] >= 1


def test_hang_holds_the_request_but_not_stop() -> None:
    box = Sandbox(records=20, faults="hang=1.0", hang_seconds=60).start()
    call_id = box.call_ids("final")[0]
    with client(box, read_timeout=0.3) as sinch, pytest.raises(errors.SinchTimeoutError):
        sinch.get_call(call_id)
    hung = threading.Thread(target=lambda: _swallow(box, call_id), daemon=True)
    hung.start()
    assert wait_until(lambda: box.stats["faults"].get("hang", 0) == 2)
    started = time.monotonic()
    box.stop()
    hung.join(timeout=5)
    assert not hung.is_alive()
    assert time.monotonic() - started < 10  # generous: 60 s if stop() waited for the hang


def _swallow(box: Sandbox, call_id: str) -> None:
    path = GET_CALL_PATH + call_id
    with contextlib.suppress(requests.RequestException):
        raw_get(box, path, signed_headers(box.credentials, method="GET", path=path))


def test_connections_are_counted_so_reuse_shows(sandbox: Sandbox) -> None:
    with client(sandbox) as sinch:
        for call_id in sandbox.call_ids("final")[:20]:
            sinch.get_call(call_id)
    assert sandbox.stats["connections"] == 1


# -- ONGOING -> FINAL and callbacks --------------------------------------------------------


class _Receiver:
    """A tiny callback receiver: records (path, headers, raw body); answers 200 {}."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_first = fail_first
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.received.append((self.path, headers, body))
                status = 503 if len(owner.received) <= owner.fail_first else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sinch/callbacks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_ongoing_turns_final_after_the_delay_and_sends_a_signed_dice() -> None:
    clock = FakeClock()
    receiver = _Receiver(fail_first=1)
    try:
        with Sandbox(records=60, ongoing_seconds=5, clock=clock, callback_url=receiver.url) as box:
            ongoing = box.call_ids("ongoing")
            assert ongoing
            call_id = ongoing[0]
            with client(box) as sinch:
                # Given an ONGOING call, When asked before the delay, Then ONGOING
                data = sinch.get_call(call_id).data
                assert (data["status"], data["result"], data["debit"]["amount"]) == (
                    "ONGOING", "N/A", 0,
                )  # fmt: skip
                clock.now += 5  # When the delay passes
                assert wait_until(lambda: len(box.callbacks) == len(ongoing))
                # Then it is FINAL with a duration and a debit
                data = sinch.get_call(call_id).data
                assert data["status"] == "FINAL"
                assert data["duration"] > 0
                assert data["debit"]["amount"] > 0
            assert not box.call_ids("ongoing")
            stats = box.stats
    finally:
        receiver.close()
    # ... and its DiCE reached the receiver, signed over the callback path (after a retry)
    assert stats["callbacks_delivered"] == len(ongoing)
    assert stats["callback_attempts"] == len(ongoing) + 1
    dice = [r for r in receiver.received if json.loads(r[2])["callid"] == call_id]
    path, headers, body = dice[-1]
    payload = json.loads(body)
    assert payload["event"] == "dice"
    assert isinstance(payload["from"], str)
    assert payload["applicationKey"] == box.credentials.application_key
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["authorization"].startswith("application ")
    check = verify_signature(
        box.credentials, method="POST", path="/sinch/callbacks", body=body,
        content_type=headers["content-type"], timestamp=headers["x-timestamp"],
        authorization=headers["authorization"],
    )  # fmt: skip
    assert check is SignatureCheck.OK
    assert path == "/sinch/callbacks"


def test_end_call_on_demand_signs_the_configured_path() -> None:
    receiver = _Receiver()
    try:
        with Sandbox(records=20) as box:
            box.set_callback_url(receiver.url, signed_path="/prod/sinch/callbacks")
            outcome = box.end_call(box.call_ids("final")[0])
    finally:
        receiver.close()
    assert outcome is not None
    assert outcome.delivered
    _, headers, body = receiver.received[0]
    for path, expected in (("/prod/sinch/callbacks", True), ("/sinch/callbacks", False)):
        check = verify_signature(
            box.credentials, method="POST", path=path, body=body,
            content_type=headers["content-type"], timestamp=headers["x-timestamp"],
            authorization=headers["authorization"],
        )  # fmt: skip
        assert check.ok is expected


# -- the CLI sub-command --------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sandbox_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["sandbox", *argv])


def test_cli_starts_prints_and_stops() -> None:
    args = _parse(["--seed", "5", "--records", "30", "--faults", "503=0.1"])
    out, err, stop = io.StringIO(), io.StringIO(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(args.func(args, out, err, stop)))
    thread.start()
    try:
        assert wait_until(lambda: "Ctrl-C stops it." in out.getvalue())
        text = out.getvalue()
        assert "listening on http://127.0.0.1:" in text
        assert "SINCH_APPLICATION_SECRET=" in text
        url = text.split("listening on ", 1)[1].split()[0]
        with urllib.request.urlopen(f"{url}/_sandbox/stats", timeout=5) as response:
            assert response.status == 200
    finally:
        stop.set()
        thread.join(timeout=10)
    assert result == [0]
    assert out.getvalue().rstrip().endswith("Stopped.")


def test_cli_refuses_non_loopback_and_a_taken_port() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert _parse(["--host", "0.0.0.0"]).func(_parse(["--host", "0.0.0.0"]), out, err) == 2  # noqa: S104
    assert "127.0.0.1 only" in err.getvalue()
    with pytest.raises(NonLoopbackHostError):
        Sandbox(host="0.0.0.0")  # noqa: S104
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = _parse(["--port", str(port), "--records", "5"])
        err = io.StringIO()
        assert args.func(args, io.StringIO(), err) == 6
    assert f"port 127.0.0.1:{port} is already in use" in err.getvalue()
