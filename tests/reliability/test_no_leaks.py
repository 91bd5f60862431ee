"""No secret, Authorization value or full phone number in any log output.

Every channel a Lambda function's output can take is captured: the Powertools logger's
stream, ``sys.stdout`` / ``sys.stderr`` (EMF metrics, ``print``, the stdlib's last-resort
handler) and the stdlib ``logging`` root at DEBUG (the library's own loggers, requests,
urllib3, boto3/botocore). Then every line is searched for:

* the Sinch application secret, as configured (base64) and decoded;
* every ``Authorization`` header value the Sinch stand-ins received (and its signature part);
* every full phone number of the records served, with and without ``+``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from call_enricher.sinch.auth import SinchCredentials
from call_enricher_tools.chaos import CHAOS_CREDENTIALS, ChaosConfig, ChaosSinch, run_chaos
from tests.support.fake_sinch import Reply
from tests.support.queue_harness import (
    CREDENTIALS,
    FINAL_ID,
    SAMPLES,
    Harness,
    call_id_of,
)

ROOT = Path(__file__).resolve().parents[2]
_DIGITS = re.compile(r"\+?(\d{7,})")


def phone_numbers(value: Any, found: set[str] | None = None) -> set[str]:
    """The digits of every phone-like run of 7+ digits in the record's party fields."""
    found = set() if found is None else found
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("endpoint", "from", "to", "cli") and isinstance(item, str):
                found.update(_DIGITS.findall(item))
            phone_numbers(item, found)
    elif isinstance(value, list):
        for item in value:
            phone_numbers(item, found)
    return found


def forbidden_strings(
    credentials: list[SinchCredentials], authorizations: list[str], numbers: set[str]
) -> dict[str, str]:
    """{needle: what it is}; a needle found in the logs is a leak."""
    needles: dict[str, str] = {}
    for creds in credentials:
        needles[creds.application_secret] = "application secret"
        decoded = base64.b64decode(creds.application_secret).decode("utf-8", "replace")
        needles[decoded] = "decoded application secret"
    for value in authorizations:
        needles[value] = "Authorization header"
        if ":" in value:
            needles[value.rsplit(":", 1)[1]] = "request signature"
        if value.lower().startswith("basic "):
            needles[value.split(" ", 1)[1]] = "Basic credentials"
    for digits in numbers:
        needles[digits] = "phone number"
        needles["+" + digits] = "phone number"
    return needles


WIRE_LOGGERS = ("botocore", "boto3", "s3transfer")
"""Loggers that dump AWS requests and responses at DEBUG (see the xfail test below)."""


class _NotFrom(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self._prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(self._prefixes)


class Capture:
    """Every output channel, as text. ``exclude`` drops stdlib records of those loggers."""

    def __init__(
        self,
        capsys: pytest.CaptureFixture[str],
        powertools: io.StringIO,
        exclude: tuple[str, ...] = (),
    ) -> None:
        self._capsys = capsys
        self._powertools = powertools
        self._stdlib = io.StringIO()
        self.handler = logging.StreamHandler(self._stdlib)
        self.handler.setLevel(logging.DEBUG)
        self.handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        if exclude:
            self.handler.addFilter(_NotFrom(exclude))
        self.lines: list[str] = []

    def collect(self) -> list[str]:
        captured = self._capsys.readouterr()
        for text in (captured.out, captured.err, self._powertools.getvalue(),
                     self._stdlib.getvalue()):  # fmt: skip
            self.lines.extend(text.splitlines())
        self._powertools.seek(0)
        self._powertools.truncate()
        self._stdlib.seek(0)
        self._stdlib.truncate()
        return self.lines


@pytest.fixture(params=[WIRE_LOGGERS, ()], ids=["root-debug", "root-debug-with-botocore"])
def capture(
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Capture]:
    """Every channel, the stdlib root at DEBUG; with botocore's wire logs, or without them."""
    from call_enricher.observability import logger

    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    result = Capture(capsys, stream, exclude=request.param)
    root = logging.getLogger()
    level = root.level
    root.addHandler(result.handler)
    root.setLevel(logging.DEBUG)
    try:
        yield result
    finally:
        root.removeHandler(result.handler)
        root.setLevel(level)


def assert_no_leak(lines: list[str], needles: dict[str, str]) -> None:
    assert lines, "nothing was captured: the capture is broken"
    leaks = []
    for line in lines:
        what = next((what for needle, what in needles.items() if needle in line), None)
        if what is not None:
            leaks.append((what, line[:200]))
    assert leaks == [], f"{len(leaks)} leaking lines, e.g. {leaks[:3]}"


def run_queue_scenarios(harness: Harness) -> None:
    """A queue batch over every sample record, failures, retries and a key rotation."""
    # every sample record, plus permanent failures (a phone number as a call ID included)
    unknown = "00000000000000000000000000000404"
    bad = "badbadbadbadbadbadbadbadbadbad00"
    invalid = {"callId": bad, "duration": -5, "status": "FINAL",
               "from": {"type": "number", "endpoint": "+46701740605"}}  # fmt: skip
    harness.sinch.on_call(bad, Reply.json(invalid))
    bodies = [call_id_of(r) for r in SAMPLES.values()]
    bodies += [unknown, bad, "+46701740605", json.dumps({"callId": "46846500400@x"}), "{oops"]
    harness.invoke(*bodies)
    # transient failures retried in-call and by redelivery
    flaky = "f1a2f1a2f1a2f1a2f1a2f1a2f1a2f1a2"
    record = {**SAMPLES["busy-de"], "callId": flaky}
    harness.sinch.on_call(
        flaky, Reply.error(503, 50300), Reply.error(429, 42900), Reply.json(record)
    )
    harness.invoke(flaky)
    harness.invoke(flaky)
    # a 401 after a key rotation forces one refresh
    rotated = SinchCredentials(
        application_key="rotated-key-0001",
        application_secret="cm90YXRlZC1zZWNyZXQtZm9yLXRlc3RzLW9ubHk=",
    )
    harness.stack.rotate_secret(rotated)
    harness.sinch.credentials = rotated
    harness.invoke("a1b2c3d4e5f60718293a4b5c6d7e8f90")
    # and a key Sinch rejects even after the refresh
    harness.sinch.credentials = SinchCredentials("other-key", rotated.application_secret)
    with pytest.raises(BatchProcessingError):  # the whole batch fails: SQS redelivers it
        harness.invoke(FINAL_ID.replace("4", "5"))
    harness.events()


def run_callback_scenarios(harness: Harness) -> list[str]:
    """Signed DiCEs and rejected callbacks through the real receiver; its Authorization values."""
    from tests.reliability.test_hostile_inputs import CALLBACK_CASES, _callback_event
    from tests.support.handlers import load_handler
    from tests.support.lambda_context import FakeLambdaContext

    handler = load_handler("sinch_callbacks", fresh=True)
    authorizations: list[str] = []
    for case in CALLBACK_CASES:
        event = _callback_event(case)
        handler.lambda_handler(event, FakeLambdaContext())
        if case.authorization == "signed":
            authorizations.append(event["headers"]["authorization"])  # type: ignore[index]
    return authorizations


def test_queue_path_logs_leak_nothing(harness: Harness, capture: Capture) -> None:
    # When the queue handler runs every scenario, and the callback receiver every callback
    # case, with every channel captured at DEBUG
    run_queue_scenarios(harness)
    callback_authorizations = run_callback_scenarios(harness)
    lines = capture.collect()
    # Then no line holds a secret, an Authorization value or a full phone number
    authorizations = [value for r in harness.sinch.requests if (value := r.header("Authorization"))]
    authorizations += callback_authorizations
    assert len(callback_authorizations) > 10
    numbers = set().union(*(phone_numbers(r) for r in SAMPLES.values()))
    numbers.add("46701740605")
    rotated = SinchCredentials("rotated-key-0001", "cm90YXRlZC1zZWNyZXQtZm9yLXRlc3RzLW9ubHk=")
    needles = forbidden_strings([CREDENTIALS, rotated], authorizations, numbers)
    assert len(authorizations) > len(SAMPLES)
    assert_no_leak(lines, needles)


def test_the_capture_would_see_a_leak(harness: Harness, capture: Capture) -> None:
    # The check itself can fail: a number logged by any channel is caught
    from call_enricher.observability import logger

    logger.info("oops", extra={"to": "+46701740605"})
    logging.getLogger("some.library").debug("secret %s", CREDENTIALS.application_secret)
    print("+12025550173")
    lines = capture.collect()
    needles = forbidden_strings([CREDENTIALS], [], {"46701740605", "12025550173"})
    with pytest.raises(AssertionError, match="3 leaking lines"):
        assert_no_leak(lines, needles)


@pytest.mark.slow
def test_chaos_run_logs_leak_nothing(capture: Capture) -> None:
    # When a small chaos run goes through the local stack with its logs on (not quiet): the
    # queue function and the stream publisher, whose events carry every number served
    seen: dict[str, Any] = {}

    def started(sinch: ChaosSinch, ids: list[str]) -> None:
        seen["numbers"] = {n.lstrip("+") for n in sinch.phone_numbers(ids)}

    config = ChaosConfig(time_limit_seconds=120).with_publisher_faults(0.0)
    report = run_chaos(40, 7, config=config, on_started=started)
    lines = capture.collect()
    # Then it balanced (without publisher faults: not one duplicate event) ...
    assert report.balanced, report.lines()
    assert (report.duplicates, report.events_missing) == (0, 0), report.lines()
    assert report.events_by_type["Call Enriched"] == report.versions > 0
    # ... and no line holds the secret or a phone number it served
    needles = forbidden_strings([CHAOS_CREDENTIALS], [], seen["numbers"])
    assert_no_leak(lines, needles)
