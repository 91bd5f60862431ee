"""Phone number analysis (libphonenumber) and log-safe masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from call_enricher import phones
from call_enricher.phones import NumberType, analyse_number, is_withheld, mask_number
from tests.support.fresh import fresh_stdout


@pytest.mark.parametrize(
    ("raw", "e164", "country", "number_type"),
    [
        ("+12125550123", "+12125550123", "US", NumberType.FIXED_LINE_OR_MOBILE),
        ("+442079460123", "+442079460123", "GB", NumberType.FIXED_LINE),
        ("+46701740605", "+46701740605", "SE", NumberType.MOBILE),
        ("+46846500400", "+46846500400", "SE", NumberType.FIXED_LINE),
        ("+4915228817386", "+4915228817386", "DE", NumberType.MOBILE),
        ("+5511987654321", "+5511987654321", "BR", NumberType.MOBILE),
        ("+6581234567", "+6581234567", "SG", NumberType.MOBILE),
        ("+61491570156", "+61491570156", "AU", NumberType.MOBILE),
        ("+919876543210", "+919876543210", "IN", NumberType.MOBILE),
        ("+18005550199", "+18005550199", "US", NumberType.TOLL_FREE),
        ("+1 (212) 555-0123", "+12125550123", "US", NumberType.FIXED_LINE_OR_MOBILE),
    ],
)
def test_valid_numbers_of_several_countries(raw, e164, country, number_type):
    # Given a valid international number
    info = analyse_number(raw)
    # Then libphonenumber's facts are reported
    assert (info.e164, info.country, info.number_type) == (e164, country, number_type)
    assert info.valid
    assert info.possible
    assert info.calling_code == int(e164[1:3]) or e164.startswith(f"+{info.calling_code}")
    assert info.parsed_as == "e164"


def test_geography_and_time_zones_of_a_fixed_line():
    info = analyse_number("+12125550123")
    assert info.geo_description == "New York, NY"
    assert info.time_zones == ("America/New_York",)
    assert info.international == "+1 212-555-0123"
    assert info.carrier is None  # carriers are only known for mobile ranges


def test_carrier_of_a_mobile_range():
    info = analyse_number("+6581234567")
    assert info.carrier == "SingTel"
    assert info.geo_description == "Singapore"
    assert info.time_zones == ("Asia/Singapore",)


def test_possible_but_invalid_number():
    # Given Ofcom's drama mobile range, which libphonenumber does not consider valid
    info = analyse_number("+447700900123")
    # Then it is possible, not valid, and no country/type/geography is claimed
    assert (info.valid, info.possible) == (False, True)
    assert info.e164 == "+447700900123"
    assert info.calling_code == 44
    assert info.country is None
    assert info.number_type is NumberType.UNKNOWN
    assert (info.geo_description, info.carrier, info.time_zones) == (None, None, ())


def test_non_geographic_number_has_no_country():
    info = analyse_number("+80012345678")
    assert info.valid
    assert info.country is None
    assert info.calling_code == 800
    assert info.number_type is NumberType.TOLL_FREE


@pytest.mark.parametrize(
    ("raw", "region", "parsed_as"),
    [
        ("46701740605", None, "e164-without-plus"),
        ("0046701740605", None, "international-prefix"),
        ("0701740605", "SE", "national"),
        ("0701740605", "se", "national"),
        ("070-174 06 05", "SE", "national"),
        ("tel:+46701740605", None, "e164"),
    ],
)
def test_numbers_without_plus_are_read_tolerantly(raw, region, parsed_as):
    # Given a Swedish mobile written without '+'
    info = analyse_number(raw, default_region=region)
    # Then it is understood, and how it was read is reported
    assert info.valid
    assert info.e164 == "+46701740605"
    assert info.parsed_as == parsed_as


def test_national_format_needs_a_default_region():
    info = analyse_number("0701740605")
    assert not info.valid
    assert info.country is None


def test_e164_without_plus_wins_over_the_national_reading_when_valid():
    # Given a US number without '+', and a default region where it could be national
    info = analyse_number("12125550123", default_region="SE")
    # Then the E.164 reading (Sinch's convention) wins
    assert (info.e164, info.parsed_as) == ("+12125550123", "e164-without-plus")


@pytest.mark.parametrize(
    "raw",
    ["", " ", "+", "abc", "private", "1-800-FLOWERS", "+46 70 abc", "++46", "9" * 65, "☎️"],
)
def test_garbage_never_raises(raw):
    info = analyse_number(raw)
    assert not info.valid
    assert info.number_type is NumberType.UNKNOWN


def test_non_strings_never_raise():
    assert not analyse_number(None).valid  # type: ignore[arg-type]
    assert not analyse_number(46701740605).valid  # type: ignore[arg-type]


def test_analysis_is_cached_per_text_and_region():
    # Given a number analysed once
    first = analyse_number("+4969900090123")
    hits = phones._analyse.cache_info().hits
    # When it is analysed again
    second = analyse_number("+4969900090123")
    # Then the cached result is returned
    assert second is first
    assert phones._analyse.cache_info().hits == hits + 1
    # And a different default region is a different entry
    assert analyse_number("+4969900090123", default_region="DE") == first


def test_preload_is_idempotent():
    phones.preload()
    phones.preload()
    assert phones._extras.cache_info().currsize == 1


# --- withheld and phone-like ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint", ["private", "Private", " ANONYMOUS ", "unknown", "withheld", "restricted", ""]
)
def test_withheld_markers(endpoint):
    assert is_withheld(endpoint)


@pytest.mark.parametrize("endpoint", [None, "+46701740605", "privateer", "alice"])
def test_not_withheld(endpoint):
    assert not is_withheld(endpoint)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("+46701740605", True), ("070-174 06 05", True), ("(212) 555", True), ("alice", False)],
)
def test_looks_like_phone_number(text, expected):
    assert phones.looks_like_phone_number(text) is expected


# --- masking --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+46701740605", "+46*******05"),
        ("+12125550123", "+1********23"),
        ("+1 (212) 555-0123", "+1********23"),
        ("+80012345678", "+800******78"),
        ("46701740605", "*********05"),
        ("+4612", "+****"),
        ("+886", "+***"),
        ("+020123456", "+*******56"),
        ("1234", "****"),
        ("+19876543210@example.sip.sinch.com", "+1********10@example.sip.sinch.com"),
        ("sip:alice@sip.example.com;transport=tls", "sip:a***e@sip.example.com;transport=tls"),
        ("tel:+46701740605", "tel:+46*******05"),
        ("myUserName", "m********e"),
        ("bob", "***"),
        ("private", "private"),
        ("sip:anonymous@anonymous.invalid", "sip:anonymous@anonymous.invalid"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_number(raw, masked):
    assert mask_number(raw) == masked


def test_masking_keeps_only_the_calling_code_and_two_digits():
    # Given a full E.164 number
    masked = mask_number("+5511987654321")
    # Then only +55 and the last two digits remain readable
    assert masked == "+55*********21"
    assert "987654321" not in masked


# --- lazy geocoding: same answers as phonenumbers.geocoder, without its import cost -------------


def _equivalence_numbers() -> list[str]:
    import json
    import pathlib
    import re

    import phonenumbers

    numbers: set[str] = set()
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    for region in regions:
        for ntype in range(11):
            example = phonenumbers.example_number_for_type(region, ntype)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            numbers.add(e164)
            for digit in "0379":  # perturbed last digits and second-to-last digits
                numbers.add(e164[:-1] + digit)
                numbers.add(e164[:-2] + digit + e164[-1])
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            numbers.add(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    events = pathlib.Path(__file__).resolve().parents[2] / "events" / "sinch"
    for path in sorted(events.glob("*.json")):
        numbers.update(re.findall(r"\+?\d{7,15}", json.dumps(json.loads(path.read_text()))))
    return sorted(numbers)


def test_geo_description_matches_phonenumbers_geocoder_for_thousands_of_numbers():
    # Given the real geocoder (imported here, in the test only) and many numbers of every
    # region and type, perturbed, plus the numbers of the sample Sinch events
    import phonenumbers
    from phonenumbers import geocoder

    numbers = _equivalence_numbers()
    assert len(numbers) > 2000
    compared = 0
    for raw in numbers:
        try:
            number = phonenumbers.parse(raw if raw.startswith("+") else "+" + raw)
        except phonenumbers.NumberParseException:
            continue
        # When our lazy geocoding describes the number
        # Then it says exactly what phonenumbers' geocoder says
        assert phones._geo_description(number) == geocoder.description_for_number(number, "en"), raw
        compared += 1
        info = analyse_number(raw)
        if info.valid and info.e164 == raw:
            assert info.geo_description == (geocoder.description_for_number(number, "en") or None)
    assert compared > 2000


def test_mobile_token_numbers_are_geocoded_like_phonenumbers():
    # Given Argentine and Mexican mobiles (the country mobile token is stripped before the walk)
    import phonenumbers
    from phonenumbers import geocoder

    for raw in ("+5491123456789", "+5493515551234", "+5215512345678", "+525512345678"):
        number = phonenumbers.parse(raw)
        assert phones._geo_description(number) == geocoder.description_for_number(number, "en")


def test_analysis_never_imports_the_geocoder_package():
    # Given a fresh interpreter that imports the module and analyses a US and a GB number

    code = (
        "import sys\n"
        "from call_enricher.phones import analyse_number\n"
        "us = analyse_number('+12125550123'); gb = analyse_number('+442079460123')\n"
        "assert us.geo_description == 'New York, NY', us\n"
        "assert gb.geo_description == 'London', gb\n"
        "assert analyse_number('+46701740605').geo_description == 'Sweden'\n"
        "bad = sorted(m for m in sys.modules if m == 'phonenumbers.geocoder'"
        " or m.startswith('phonenumbers.geodata'))\n"
        "print(','.join(bad))\n"
    )
    # When it has run
    out = fresh_stdout(code)
    # Then neither phonenumbers.geocoder nor the phonenumbers.geodata package was imported
    assert out == ""


def test_geoindex_matches_the_installed_phonenumbers():
    # Given the committed prefix index and the installed phonenumbers data
    from call_enricher import _geoindex
    from call_enricher_tools import geoindex

    # Then regenerating it gives the same text (a phonenumbers upgrade forces regeneration)
    expected = geoindex.render()
    assert geoindex.TARGET.read_text() == expected, "run: python -m call_enricher_tools.geoindex"
    import phonenumbers

    assert phonenumbers.__version__ == _geoindex.PHONENUMBERS_VERSION


def test_lazy_geocode_data_loads_only_the_module_covering_a_prefix():
    # Given the lazy mapping over the data modules
    data = phones._LazyPrefixData(phones._geoindex.FIRST_PREFIXES, "geodata")
    # Then keys of the first, a middle and the last module are found; others are absent
    assert data["1201200"] == {"en": "Jersey City, NJ"}
    assert "4420" in data
    assert "0" not in data
    assert "1201" in data
    assert "999999999999" not in data
    assert 12 not in data


def test_concurrent_first_lookups_agree():
    # Given many threads geocoding at once (the queue handler uses a thread pool)
    from concurrent.futures import ThreadPoolExecutor

    import phonenumbers

    phones._loaded.clear()  # force the first-load path (reloading is harmless)
    numbers = [phonenumbers.parse(raw) for raw in ("+12125550123", "+442079460123") * 16]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(phones._geo_description, numbers))
    # Then every answer is the expected one
    assert results == ["New York, NY", "London"] * 16


# --- lazy carriers: same answers as phonenumbers.carrier, without loading all its tables ---------


def test_carrier_matches_phonenumbers_carrier_for_thousands_of_numbers():
    # Given the real carrier module (imported here, in the test only) and many numbers
    import phonenumbers
    from phonenumbers import carrier

    compared = named = 0
    for raw in _equivalence_numbers():
        try:
            number = phonenumbers.parse(raw if raw.startswith("+") else "+" + raw)
        except phonenumbers.NumberParseException:
            continue
        # When our lazy lookup names the carrier
        # Then it says exactly what phonenumbers' carrier module says
        expected = carrier.name_for_number(number, "en")
        assert phones._carrier_name(number) == expected, raw
        compared += 1
        named += bool(expected)
    assert compared > 2000
    assert named > 100


def test_lazy_carrier_data_holds_every_entry_of_phonenumbers():
    # Given the installed carrier tables
    from phonenumbers.carrierdata import CARRIER_DATA, CARRIER_LONGEST_PREFIX

    # When the lazy mapping is asked for every prefix, and for prefixes it does not hold
    data = phones._carrier_data()
    assert data is not None
    # Then it finds each entry in the file covering it, and nothing else
    assert all(data[prefix] == names for prefix, names in CARRIER_DATA.items())
    assert "0" not in data
    assert "999999999999" not in data
    assert phones._CARRIER_LONGEST_PREFIX == CARRIER_LONGEST_PREFIX


def test_analysis_loads_only_the_carrier_file_covering_the_number():
    # Given a fresh interpreter that analyses one Singapore mobile

    code = (
        "import sys\n"
        "from call_enricher import phones\n"
        "assert phones.analyse_number('+6591234567').carrier == 'SingTel'\n"
        "loaded = sorted(k for k in phones._loaded if k.startswith('carrierdata/'))\n"
        "bad = sorted(m for m in sys.modules if m.startswith('phonenumbers.carrier'))\n"
        "print(','.join(loaded), ','.join(bad), sep='|')\n"
    )
    # When it has run
    out = fresh_stdout(code)
    # Then one carrier table was loaded, and neither phonenumbers.carrier nor its package
    assert out == "carrierdata/data2|"


# --- data files read as text: the same entries as executing them ---------------------------------


@pytest.mark.parametrize("package", ["geodata", "carrierdata"])
def test_text_tables_hold_every_entry_of_the_data_files(package, monkeypatch):
    # Given every data file of the package, executed as phonenumbers' own import would
    import phonenumbers

    monkeypatch.setattr(phones, "_EXECUTE_AFTER_LOOKUPS", 10**9)  # the text path throughout

    directory = Path(phonenumbers.__file__).parent / package
    stems = sorted(p.stem for p in directory.glob("data*.py"))
    assert stems
    for stem in stems:
        expected = phones._exec_data(stem, package)
        # When the same file is read as text
        table = phones._TextTable(stem, package)
        assert table._fallback is None, stem  # the generated layout: no module executed
        # Then every 10th entry (and the first and last) is found with the same names,
        # absent keys are absent, and the file has one line per entry
        keys = sorted(expected)
        for key in [*keys[::10], keys[-1]]:
            assert table[key] == expected[key], (stem, key)
        assert "0" not in table
        assert keys[-1] + "0" not in table or keys[-1] + "0" in expected
        assert table._text.count("\n '", table._lo - 1, table._hi) == len(expected), stem


def _fake_data_file(tmp_path, monkeypatch, text):
    monkeypatch.setattr(phones, "_PHONENUMBERS_DIR", tmp_path)
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "data0.py").write_text(text, encoding="utf-8")
    return phones._TextTable("data0", "fake")


def test_a_data_file_in_another_layout_is_executed_instead(tmp_path, monkeypatch):
    # Given a data file whose dict is not one entry per line
    table = _fake_data_file(
        tmp_path,
        monkeypatch,
        "from ..util import u\ndata = {'12': {'en': u('A\\u00e9')}, '13': {'en': 'B'}}\n",
    )
    # Then it was executed as a module, and answers as its dict does
    assert table._fallback is not None
    assert table["12"] == {"en": "Aé"}
    assert "14" not in table


def test_an_unexpected_line_makes_the_file_executed(tmp_path, monkeypatch):
    # Given a file laid out as generated, but with an entry spread over two lines
    table = _fake_data_file(
        tmp_path,
        monkeypatch,
        "from ..util import u\n\ndata = {\n '12':{'en': 'A'},\n '13':{\n'en': 'B'},\n"
        " '14':{'en': u('C\\u00e9'), 'sv': 'D'},\n}\n",
    )
    assert table._fallback is None
    # When entries are looked up (the bisection may meet the odd line before its own key)
    # Then each answer is the module's, and the file ends up executed
    assert table["12"] == {"en": "A"}
    assert table["14"] == {"en": "Cé", "sv": "D"}
    assert table["13"] == {"en": "B"}
    assert table._fallback is not None
    assert "15" not in table


def test_a_table_looked_up_often_is_executed_once_and_answers_the_same():
    # Given a geodata file read as text
    expected = phones._exec_data("data0", "geodata")
    keys = sorted(expected)
    table = phones._TextTable("data0", "geodata")
    # When it is looked up up to the threshold, it stays text (no module executed) ...
    for key in keys[: phones._EXECUTE_AFTER_LOOKUPS]:
        assert table[key] == expected[key]
    assert table._fallback is None
    # ... and past it, it is executed once and answers from the dict, the same
    assert table[keys[-1]] == expected[keys[-1]]
    assert table._fallback == expected
    assert table.get("0") is None
