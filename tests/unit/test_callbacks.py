"""Sinch callback verification and parsing (call_enricher.callbacks), on API Gateway v2 events."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from call_enricher.callbacks import (
    CallbackConfig,
    enqueue_body,
    handle_callback,
    parse_callback,
)
from call_enricher.errors import ConfigurationError, InvalidCallIdError
from call_enricher.messages import EnrichmentRequest, parse_message_body
from call_enricher.sinch.auth import SinchCredentials, signed_headers
from tests.support.fresh import fresh_stdout

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "events/sinch-dice-callback.json").read_text())
# The sample's real signature was made with these (events/README.md); its x-timestamp:
CREDENTIALS = SinchCredentials(
    "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", "Y2FsbC1lbnJpY2hlciB0ZXN0IHNlY3JldCwgbmV2ZXIgcmVhbA=="
)
SAMPLE_TIME = datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)
OTHER = SinchCredentials(CREDENTIALS.application_key, base64.b64encode(b"another").decode())
CALL_ID = "4398599d1ba84ef3bde0a82dfb61abed"
CONFIG = CallbackConfig("/sinch/callbacks", 300, "https://sqs.example/q")


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.logs: list[tuple[str, str, dict[str, Any]]] = []

    def send(self, body: str) -> None:
        self.sent.append(body)

    def log(self, level: str, message: str, **fields: Any) -> None:
        self.logs.append((level, message, fields))


def run(
    event: dict[str, Any],
    *,
    now: datetime = SAMPLE_TIME,
    credentials: SinchCredentials = CREDENTIALS,
    config: CallbackConfig = CONFIG,
) -> tuple[dict[str, Any], Recorder]:
    recorder = Recorder()
    response = handle_callback(
        event,
        credentials=lambda: credentials,
        send=recorder.send,
        config=config,
        log=recorder.log,
        now=now,
    )
    return response, recorder


def signed_event(
    body: bytes | str,
    *,
    path: str = "/sinch/callbacks",
    content_type: str = "application/json; charset=utf-8",
    credentials: SinchCredentials = CREDENTIALS,
    now: datetime = SAMPLE_TIME,
    base64_body: bool = False,
) -> dict[str, Any]:
    raw = body.encode() if isinstance(body, str) else body
    event = copy.deepcopy(SAMPLE)
    headers = signed_headers(
        credentials, method="POST", path=path, body=raw, content_type=content_type, now=now
    )
    event["headers"].update(
        {
            "content-type": content_type,
            "x-timestamp": headers["x-timestamp"],
            "authorization": headers["Authorization"].replace("Application", "application"),
        }
    )
    event["body"] = base64.b64encode(raw).decode() if base64_body else raw.decode()
    event["isBase64Encoded"] = base64_body
    return event


def test_the_sample_dice_with_its_real_signature_enqueues_its_call_id():
    # Given the sample event, signed by Sinch's algorithm with lowercase "application"
    # When it is handled at the time it was signed
    response, recorder = run(SAMPLE)
    # Then 200 {} and one queue message with the call ID and the callback entry path
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {}
    assert [json.loads(b) for b in recorder.sent] == [{"callId": CALL_ID, "entryPath": "callback"}]


def test_enqueue_body_is_what_the_queue_contract_parses():
    request = parse_message_body(enqueue_body(CALL_ID, "euc1"))
    assert request == EnrichmentRequest(call_id=CALL_ID, region="euc1", entry_path="callback")


@pytest.mark.parametrize("scheme", ["Application", "application", "APPLICATION"])
def test_scheme_is_case_insensitive(scheme: str):
    event = signed_event(SAMPLE["body"])
    event["headers"]["authorization"] = event["headers"]["authorization"].replace(
        "application", scheme, 1
    )
    assert run(event)[0]["statusCode"] == 200


def test_base64_encoded_body_is_verified_over_the_decoded_bytes():
    response, recorder = run(signed_event(SAMPLE["body"], base64_body=True))
    assert response["statusCode"] == 200
    assert len(recorder.sent) == 1


def mutate(event: dict[str, Any], what: str) -> dict[str, Any]:
    headers = event["headers"]
    if what == "wrong-key":
        return signed_event(event["body"], credentials=OTHER)
    if what == "altered-body":
        event["body"] = event["body"].replace("185", "186")
    elif what == "altered-path":
        return signed_event(event["body"], path="/prod/sinch/callbacks")
    elif what == "altered-content-type":
        headers["content-type"] = "application/json"
    elif what == "stale":
        return signed_event(event["body"], now=SAMPLE_TIME - timedelta(seconds=301))
    elif what == "future":
        return signed_event(event["body"], now=SAMPLE_TIME + timedelta(seconds=301))
    elif what == "no-authorization":
        del headers["authorization"]
    elif what == "no-timestamp":
        del headers["x-timestamp"]
    elif what == "other-scheme":
        headers["authorization"] = headers["authorization"].replace("application", "Basic", 1)
    elif what == "bad-base64":
        event["isBase64Encoded"] = True
        event["body"] = "***"
    return event


@pytest.mark.parametrize(
    "what",
    [
        "wrong-key",
        "altered-body",
        "altered-path",
        "altered-content-type",
        "stale",
        "future",
        "no-authorization",
        "no-timestamp",
        "other-scheme",
        "bad-base64",
    ],
)
def test_any_signature_failure_is_401_without_detail_and_nothing_is_sent(what: str):
    # Given a callback signed correctly, then altered
    event = mutate(signed_event(SAMPLE["body"]), what)
    # When it is handled
    response, recorder = run(event)
    # Then 401 with no hint of why, and nothing enqueued; the reason is only logged
    assert response["statusCode"] == 401
    assert json.loads(response["body"])["error"] == {
        "code": "unauthorized",
        "message": "Unauthorized.",
        "details": None,
    }
    assert recorder.sent == []
    assert recorder.logs[-1][2]["reason"] != "ok"


def test_the_configured_path_is_used_not_the_path_the_function_sees():
    # Given Sinch configured with https://api.example.com/v1/hooks/sinch behind a custom domain
    config = CallbackConfig("/v1/hooks/sinch", 300, "q")
    event = signed_event(SAMPLE["body"], path="/v1/hooks/sinch")
    # The function sees /sinch/callbacks; the signature covers the configured path
    assert run(event, config=config)[0]["statusCode"] == 200
    assert run(signed_event(SAMPLE["body"]), config=config)[0]["statusCode"] == 401


def test_timestamps_inside_the_window_both_ways_are_accepted():
    for seconds in (-299, 299):
        event = signed_event(SAMPLE["body"], now=SAMPLE_TIME + timedelta(seconds=seconds))
        assert run(event)[0]["statusCode"] == 200


def test_other_events_are_acknowledged_and_ignored():
    for kind in ("ice", "ace", "pie", "notify", ""):
        response, recorder = run(signed_event(json.dumps({"event": kind, "callid": CALL_ID})))
        assert response["statusCode"] == 200
        assert json.loads(response["body"]) == {}  # never call-control instructions
        assert recorder.sent == []


def test_callId_spelling_and_region_from_the_call_resource_url():
    body = json.dumps(
        {
            "event": "dice",
            "callId": CALL_ID,
            "callResourceUrl": f"https://calling-euc1.api.sinch.com/calling/v1/calls/id/{CALL_ID}",
        }
    )
    response, recorder = run(signed_event(body))
    assert response["statusCode"] == 200
    assert json.loads(recorder.sent[0]) == {
        "callId": CALL_ID,
        "region": "euc1",
        "entryPath": "callback",
    }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ('{"event": "dice"', 400, "malformed-json"),
        ("[1]", 400, "malformed-json"),
        ('{"event": "dice", "callid": "../x"}', 400, "invalid-call-id"),
        ('{"event": "dice"}', 400, "invalid-call-id"),
    ],
)
def test_authentic_but_unusable_bodies_are_400(body: str, status: int, code: str):
    response, recorder = run(signed_event(body))
    assert response["statusCode"] == status
    assert json.loads(response["body"])["error"]["code"] == code
    assert recorder.sent == []


def test_authentic_non_json_content_type_is_415():
    response, _ = run(signed_event("callid=x", content_type="application/x-www-form-urlencoded"))
    assert response["statusCode"] == 415


def test_oversize_body_is_413_before_any_work():
    response, recorder = run(signed_event(json.dumps({"event": "dice", "pad": "x" * 70_000})))
    assert response["statusCode"] == 413
    assert recorder.sent == []


def test_parse_callback_rejects_a_non_string_call_id():
    with pytest.raises(InvalidCallIdError):
        parse_callback(b'{"event": "DiCE", "callid": 12}')


def test_config_from_env_defaults_and_errors():
    assert CallbackConfig.from_env({}) == CallbackConfig("/sinch/callbacks", 300, "")
    assert CallbackConfig.from_env(
        {
            "SINCH_CALLBACK_PATH": "/x",
            "CALLBACK_MAX_SKEW_SECONDS": "60",
            "ENRICHMENT_QUEUE_URL": "u",
            "SINCH_SECRET_ID": "arn:s",
            "SINCH_SECRET_MAX_AGE_SECONDS": "0",
        }
    ) == CallbackConfig("/x", 60, "u", "arn:s", 0)
    with pytest.raises(ConfigurationError, match="SINCH_CALLBACK_PATH"):
        CallbackConfig.from_env({"SINCH_CALLBACK_PATH": "x"})
    with pytest.raises(ConfigurationError, match="CALLBACK_MAX_SKEW_SECONDS"):
        CallbackConfig.from_env({"CALLBACK_MAX_SKEW_SECONDS": "0"})
    for bad in ("soon", "-1", "86401"):
        with pytest.raises(ConfigurationError, match="SINCH_SECRET_MAX_AGE_SECONDS"):
            CallbackConfig.from_env({"SINCH_SECRET_MAX_AGE_SECONDS": bad})


def test_config_matches_the_settings_model_defaults():
    from call_enricher.settings import Settings

    settings = Settings.from_env({})
    config = CallbackConfig.from_env({})
    assert (config.callback_path, config.max_skew_seconds, config.secret_max_age_seconds) == (
        settings.sinch_callback_path,
        settings.callback_max_skew_seconds,
        settings.sinch_secret_max_age_seconds,
    )


def test_the_receiver_builds_its_clients_without_pydantic_and_from_one_session():
    # Given a fresh interpreter with the receiver's environment (no WORKER_THREADS)

    app = Path(__file__).resolve().parents[2] / "functions" / "sinch_callbacks" / "app.py"
    code = (
        "import importlib.util, os, sys\n"
        "os.environ.update(AWS_DEFAULT_REGION='eu-west-1', AWS_ACCESS_KEY_ID='testing',"
        " AWS_SECRET_ACCESS_KEY='testing', SINCH_SECRET_ID='sinch',"
        " ENRICHMENT_QUEUE_URL='https://sqs.eu-west-1.amazonaws.com/123456789012/q')\n"
        "os.environ.pop('WORKER_THREADS', None)\n"
        f"spec = importlib.util.spec_from_file_location('receiver', {str(app)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "config, sqs, credentials = module._state()\n"
        "from call_enricher import aws\n"
        "same = sqs is aws.client('sqs')\n"
        "print(same, 'pydantic' in sys.modules, 'call_enricher.settings' in sys.modules)\n"
    )
    # When the receiver has built its state (what its first invocation does)
    out = fresh_stdout(code)
    # Then its SQS client is the library's shared one, and pydantic was never imported
    assert out == "True False False"
