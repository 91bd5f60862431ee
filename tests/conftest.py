"""Suite-wide test configuration: the hypothesis profile and the ``slow`` marker's split.

``make check`` runs ``pytest -m "not slow"`` (the inner loop: unit and fast integration
tests); ``make test`` runs everything. A test is slow when it is marked ``@pytest.mark.slow``
itself, or when it lives in a directory of :data:`SLOW_DIRECTORIES` (every test there starts
servers or whole stacks), or when it is named in :data:`SLOW_TESTS` (measured with
``pytest --durations=40``: a second or more each on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from call_enricher_tools.local.moto_patches import patch_moto

# moto's DynamoDB backend takes no lock: under the handlers' worker threads two writes could
# both pass one condition, or share a stream sequence number (and a stream reader then loops
# for ever). Every test gets DynamoDB's atomic writes, as the local stack does.
patch_moto()

# Property tests: no per-example deadline (a loaded CI machine must not turn a slow example
# into a failure), and no "too slow" health check for the same reason. Tests that set their
# own @settings keep them; this profile is what every other @given runs with.
settings.register_profile(
    "call-enricher",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("call-enricher")

TESTS = Path(__file__).resolve().parent
SLOW_DIRECTORIES = ("e2e", "reliability")
"""Directories (under tests/) whose every test is slow: the local stack end to end, and the
reliability suites (chaos, crash windows, hostile inputs, leaks, credentials: each test drives
the real handlers through a fresh moto stack, seconds apiece)."""

SLOW_TESTS: frozenset[str] = frozenset(
    {
        "integration/test_queue_handler.py::test_every_sample_record_goes_through",
        "integration/test_sandbox.py::test_fault_rates_are_reproducible_and_roughly_as_configured",
        "integration/test_ops.py::test_a_deployed_stack_is_found_through_its_cloudformation_outputs",
        "integration/test_api_fuzz.py::test_api_never_fails_and_honours_its_document",
        "integration/test_http_api.py::test_post_calls_with_100_ids_enqueues_all",
        "unit/test_phones.py::test_geo_description_matches_phonenumbers_geocoder_for_thousands_of_numbers",
    }
)
"""``file::test`` (the file relative to tests/, without parameters) of individual slow tests."""


def _is_slow(item: pytest.Item) -> bool:
    try:
        relative = Path(str(item.path)).resolve().relative_to(TESTS)
    except ValueError:
        return False
    if relative.parts and relative.parts[0] in SLOW_DIRECTORIES:
        return True
    name = item.nodeid.split("::", 1)[1].split("[", 1)[0] if "::" in item.nodeid else ""
    return f"{relative.as_posix()}::{name}" in SLOW_TESTS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow directories' and the listed tests ``slow``."""
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
