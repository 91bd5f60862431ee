"""Settings: one validated model from environment variables, clear errors naming the variable."""

import pytest

from call_enricher.errors import ConfigurationError
from call_enricher.settings import Settings, SinchAuthScheme


def test_defaults_are_valid_without_any_variable():
    # Given an empty environment / When settings are built
    settings = Settings.from_env({})
    # Then the documented defaults apply
    assert settings.sinch_auth_scheme is SinchAuthScheme.SIGNED
    assert settings.worker_threads == 10
    assert settings.record_ttl_days == 0


def test_variables_are_read_by_their_names():
    # Given the variables the template sets
    env = {
        "CALLS_TABLE_NAME": "dev-calls",
        "EVENT_BUS_NAME": "dev-bus",
        "WORKER_THREADS": "4",
        "SINCH_AUTH_SCHEME": "basic",
        "SINCH_BASE_URL": "",
        "UNRELATED": "x",
    }
    # When settings are built
    settings = Settings.from_env(env)
    # Then each lands in its field, typed
    assert settings.calls_table_name == "dev-calls"
    assert settings.worker_threads == 4
    assert settings.sinch_auth_scheme is SinchAuthScheme.BASIC
    assert settings.sinch_base_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKER_THREADS", "zero"),
        ("WORKER_THREADS", "0"),
        ("SINCH_AUTH_SCHEME", "digest"),
        ("RECHECK_BASE_DELAY_SECONDS", "901"),
        ("SINCH_CALLBACK_PATH", "sinch/callbacks"),
    ],
)
def test_bad_variable_fails_naming_it(name, value):
    # Given one bad variable / When settings are built
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({name: value})
    # Then the error names the variable
    assert name in str(caught.value)
    assert caught.value.details[0]["field"] == name


def test_env_var_names_lists_every_field():
    assert "CALLS_TABLE_NAME" in Settings.env_var_names()
    assert len(Settings.env_var_names()) == len(Settings.model_fields)
