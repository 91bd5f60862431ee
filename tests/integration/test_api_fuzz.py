"""Fuzzing: schemathesis against the API served by the local API (real HTTP, moto, fake Sinch).

Generated from the committed openapi.json, valid and invalid requests alike. No request may
produce a 5xx, and every response must conform to the document (status code, content type,
schema). Bounded (few examples per operation) so it runs in well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi import checks as openapi_checks  # noqa: E402

from call_enricher_tools.local_api import LocalApi  # noqa: E402
from call_enricher_tools.openapi import DOCUMENT  # noqa: E402
from tests.support.queue_harness import queue_harness  # noqa: E402

schema = schemathesis.openapi.from_path(str(DOCUMENT))
# Valid and invalid requests (wrong types, missing fields, bad path parameters).
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        queue_harness(monkeypatch),
        LocalApi(port=0) as api,
    ):
        yield api.base_url


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_never_fails_and_honours_its_document(case: Any, base_url: str) -> None:
    # When a generated request is sent over HTTP to the running API
    response = case.call(base_url=base_url, timeout=20)
    # Then no 5xx, and the response is one the OpenAPI document allows
    case.validate_response(response, checks=CHECKS)
