"""call_enricher.aws: the wire loggers are pinned, the client configuration stays light."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from call_enricher import aws
from call_enricher.settings import Settings
from tests.support.fresh import fresh_stdout


@pytest.fixture
def wire_levels() -> Iterator[None]:
    """Restore the wire loggers' and the root's levels after the test."""
    saved = {name: logging.getLogger(name).level for name in aws.WIRE_LOGGERS}
    root_level = logging.getLogger().level
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().setLevel(root_level)


@pytest.mark.usefixtures("wire_levels")
def test_wire_loggers_stay_at_info_under_a_debug_root():
    # Given the root logger at DEBUG (the template's LogLevel=DEBUG) and the wire loggers
    # back at NOTSET, as a library that reset them would leave them
    logging.getLogger().setLevel(logging.DEBUG)
    for name in aws.WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    # When they are pinned
    aws.pin_wire_loggers()
    # Then none of them passes DEBUG records, and INFO still goes through
    for name in ("botocore", "botocore.endpoint", "botocore.parsers", "boto3", "urllib3"):
        wire = logging.getLogger(name)
        assert not wire.isEnabledFor(logging.DEBUG), name
        assert wire.isEnabledFor(logging.INFO), name


@pytest.mark.usefixtures("wire_levels")
def test_pinning_keeps_a_stricter_level():
    # Given botocore set to WARNING by the operator
    logging.getLogger("botocore").setLevel(logging.WARNING)
    # When the loggers are pinned
    aws.pin_wire_loggers()
    # Then botocore stays at WARNING
    assert logging.getLogger("botocore").level == logging.WARNING


def test_importing_the_module_pins_the_wire_loggers():
    # Given a fresh interpreter whose root logger is at DEBUG before the import
    code = (
        "import logging\n"
        "logging.getLogger().setLevel(logging.DEBUG)\n"
        "import call_enricher.aws\n"
        "print(','.join(str(logging.getLogger(n).getEffectiveLevel())"
        " for n in ('botocore', 'boto3', 's3transfer', 'urllib3')))\n"
    )
    # When the module is imported
    out = fresh_stdout(code)
    # Then every wire logger is at INFO
    assert out == ",".join([str(logging.INFO)] * 4)


def test_default_pool_size_matches_the_settings_default(monkeypatch: pytest.MonkeyPatch):
    # Given no WORKER_THREADS variable
    monkeypatch.delenv("WORKER_THREADS", raising=False)
    # When the client configuration is built
    config = aws.client_config()
    # Then it is sized for the settings' default worker threads
    assert Settings().worker_threads == aws.DEFAULT_WORKER_THREADS
    assert config.max_pool_connections == aws.DEFAULT_WORKER_THREADS + aws.POOL_MARGIN


def test_pool_size_follows_worker_threads(monkeypatch: pytest.MonkeyPatch):
    # Given WORKER_THREADS=3 (validated by the settings model)
    from call_enricher.settings import get_settings

    monkeypatch.setenv("WORKER_THREADS", "3")
    get_settings.cache_clear()
    try:
        # When the client configuration is built
        config = aws.client_config()
    finally:
        get_settings.cache_clear()
    # Then the pool has room for 3 workers and the margin
    assert config.max_pool_connections == 3 + aws.POOL_MARGIN


def test_client_configuration_does_not_import_pydantic_without_worker_threads():
    # Given a fresh interpreter without WORKER_THREADS (the callback receiver's environment)
    code = (
        "import os, sys\n"
        "os.environ.pop('WORKER_THREADS', None)\n"
        "from call_enricher import aws\n"
        "aws.client_config()\n"
        "print('pydantic' in sys.modules, 'call_enricher.settings' in sys.modules)\n"
    )
    # When the client configuration is built
    out = fresh_stdout(code)
    # Then neither the settings model nor pydantic was imported
    assert out == "False False"
