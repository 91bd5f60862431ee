"""Sinch regions and base URL resolution."""

from __future__ import annotations

import pytest

from call_enricher import errors
from call_enricher.sinch.regions import (
    REGION_BASE_URLS,
    region_for_base_url,
    resolve_base_url,
)


def test_every_documented_region_has_an_https_sinch_host():
    # Given the table of the Sinch notes
    assert REGION_BASE_URLS == {
        "global": "https://calling.api.sinch.com",
        "euc1": "https://calling-euc1.api.sinch.com",
        "use1": "https://calling-use1.api.sinch.com",
        "sae1": "https://calling-sae1.api.sinch.com",
        "apse1": "https://calling-apse1.api.sinch.com",
        "apse2": "https://calling-apse2.api.sinch.com",
    }


def test_the_table_is_read_only():
    with pytest.raises(TypeError):
        REGION_BASE_URLS["evil"] = "https://evil.example"  # type: ignore[index]


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        (None, "https://calling.api.sinch.com"),
        ("", "https://calling.api.sinch.com"),
        ("euc1", "https://calling-euc1.api.sinch.com"),
        (" EUC1 ", "https://calling-euc1.api.sinch.com"),
        ("apse2", "https://calling-apse2.api.sinch.com"),
    ],
)
def test_region_resolves_to_its_base_url(region, expected):
    assert resolve_base_url(region=region) == expected


def test_an_explicit_base_url_wins_and_is_normalised():
    # Given both a region and a base URL (the sandbox)
    url = resolve_base_url(region="euc1", base_url="http://127.0.0.1:8765/sandbox/")
    # Then the base URL is used, without its trailing slash
    assert url == "http://127.0.0.1:8765/sandbox"
    assert resolve_base_url(base_url="HTTPS://Calling-USE1.api.sinch.com/") == (
        "https://calling-use1.api.sinch.com"
    )
    assert resolve_base_url(base_url="http://[::1]:8080") == "http://[::1]:8080"


def test_an_empty_base_url_falls_back_to_the_region():
    assert resolve_base_url(region="sae1", base_url="") == "https://calling-sae1.api.sinch.com"


def test_an_unknown_region_lists_the_valid_ones():
    with pytest.raises(errors.ConfigurationError) as caught:
        resolve_base_url(region="mars1")
    message = str(caught.value)
    assert "mars1" in message
    for name in REGION_BASE_URLS:
        assert name in message


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("ftp://calling.api.sinch.com", "scheme"),
        ("calling.api.sinch.com", "scheme"),
        ("https://", "host"),
        ("https://calling.api.sinch.com/?x=1", "query"),
        ("https://calling.api.sinch.com/#frag", "fragment"),
        ("https://calling.api.sinch.com?", "query"),
        ("https://calling.api.sinch.com:99999", "not a valid URL"),
    ],
)
def test_invalid_base_urls_are_configuration_errors(base_url, problem):
    with pytest.raises(errors.ConfigurationError, match=problem):
        resolve_base_url(base_url=base_url)


def test_credentials_in_a_base_url_are_refused_and_not_echoed():
    with pytest.raises(errors.ConfigurationError) as caught:
        resolve_base_url(base_url="https://key:hunter2@calling.api.sinch.com")
    assert "hunter2" not in str(caught.value)
    assert "user info" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://calling.api.sinch.com", "global"),
        ("https://calling-euc1.api.sinch.com/", "euc1"),
        ("https://CALLING-APSE1.api.sinch.com:443", "apse1"),
        # an ICE callback's callResourceUrl names the call's region too
        ("https://calling-use1.api.sinch.com/calling/v1/calls/id/abc", "use1"),
        ("http://calling-euc1.api.sinch.com", None),
        ("http://127.0.0.1:8765", None),
        ("https://calling-euc1.api.sinch.com.evil.example", None),
        ("not a url", None),
        ("http://[::1", None),
    ],
)
def test_region_for_base_url(url, region):
    assert region_for_base_url(url) == region


def test_every_region_round_trips():
    for name, url in REGION_BASE_URLS.items():
        assert region_for_base_url(resolve_base_url(region=name)) == name
        assert resolve_base_url(base_url=url) == url
