"""INIT wiring: settings validated at import, the service built and warmed before the first
event, the X-Ray SDK only on the operator's opt-in."""

from __future__ import annotations

import pytest

from call_enricher import observability, runtime, snapstart
from call_enricher.errors import ConfigurationError
from call_enricher.settings import get_settings
from tests.support.fresh import fresh_stdout


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(snapstart, "BEFORE_SNAPSHOT", [])
    monkeypatch.setattr(snapstart, "AFTER_RESTORE", [])
    get_settings.cache_clear()
    runtime.set_service(None)
    yield
    get_settings.cache_clear()
    runtime.set_service(None)


def test_a_bad_value_fails_init_naming_the_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WORKER_THREADS", "0")
    with pytest.raises(ConfigurationError, match="WORKER_THREADS"):
        runtime.init_service()


def test_without_the_environment_nothing_is_built_until_first_use(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("SINCH_SECRET_ID", raising=False)
    assert runtime.init_service() is None


def test_init_builds_the_service_and_its_clients_and_tests_can_swap_it(
    monkeypatch: pytest.MonkeyPatch, aws_mock: None
):
    monkeypatch.setenv("SINCH_SECRET_ID", "sinch")
    monkeypatch.setenv("ENRICHMENT_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/q")
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)  # no secret fetch
    service = runtime.init_service()
    assert service is not None
    assert runtime.get_service() is service
    assert service.store._client is not None
    assert service.queue is not None
    assert service.queue._client is not None
    assert service.sinch._clients  # the configured region's client and its session
    assert snapstart.BEFORE_SNAPSHOT
    assert snapstart.AFTER_RESTORE
    runtime.set_service(None)  # the swap: rebuilt from the environment on next use
    assert runtime.get_service() is not service


@pytest.mark.parametrize(
    ("env", "loaded"),
    [
        ({}, False),
        ({"AWS_LAMBDA_FUNCTION_NAME": "f"}, False),
        ({"AWS_LAMBDA_FUNCTION_NAME": "f", "XRAY_SDK": "enabled"}, True),
        (
            {
                "AWS_LAMBDA_FUNCTION_NAME": "f",
                "XRAY_SDK": "enabled",
                "POWERTOOLS_TRACE_DISABLED": "true",
            },
            False,
        ),
        ({"XRAY_SDK": "enabled"}, False),
    ],
)
def test_the_xray_sdk_is_an_opt_in(env: dict[str, str], loaded: bool):
    assert observability.xray_sdk_enabled(env) is loaded


def test_tracing_as_deployed_never_imports_the_xray_sdk():
    code = (
        "import os, sys\n"
        "os.environ.update(AWS_LAMBDA_FUNCTION_NAME='f', POWERTOOLS_TRACE_DISABLED='false',"
        " _X_AMZN_TRACE_ID='Root=1-6745a2c0-0123456789abcdef01234567;Sampled=1')\n"
        "from call_enricher import observability\n"
        "print('aws_xray_sdk' in sys.modules, type(observability.tracer).__name__)\n"
    )
    assert fresh_stdout(code) == "False _NoopTracer"


def test_the_request_path_does_not_build_the_event_models():
    # Given a fresh interpreter importing what the queue and API handlers build at INIT
    code = (
        "import sys\n"
        "import call_enricher.runtime, call_enricher.service, call_enricher.storage\n"
        "print('call_enricher.events' in sys.modules)\n"
    )
    # Then the event models (the stream publisher's: ~10 ms of pydantic classes) are not
    # among them
    assert fresh_stdout(code) == "False"
