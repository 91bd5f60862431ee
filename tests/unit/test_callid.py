"""Call ID validation: a conservative allow-list, checked before any URL is built."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from call_enricher import errors
from call_enricher.callid import (
    ALLOWED_CALL_ID_CHARACTERS,
    CALL_ID_MAX_LENGTH,
    validate_call_id,
)


@pytest.mark.parametrize(
    "call_id",
    [
        "4398599d1ba84ef3bde0a82dfb61abed",  # Get Call reference example
        "822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257",  # callback-signing example
        "ABCDEF0123456789",
        "a",
        "x" * CALL_ID_MAX_LENGTH,
    ],
)
def test_real_looking_call_ids_are_returned_unchanged(call_id):
    assert validate_call_id(call_id) == call_id
    assert type(validate_call_id(call_id)) is str


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "empty"),
        ("a" * (CALL_ID_MAX_LENGTH + 1), "too long"),
        ("../etc/passwd", "U+002E at index 0"),
        ("abc/def", "U+002F at index 3"),
        ("abc..def", "U+002E at index 3"),
        ("abc.def", "U+002E"),
        ("abc%2Fdef", "U+0025 at index 3"),
        ("abc%252F", "U+0025"),
        ("abc?x=1", "U+003F"),
        ("abc#frag", "U+0023"),
        ("abc def", "U+0020"),
        (" abc", "U+0020 at index 0"),
        ("abc\n", "U+000A at index 3"),
        ("abc\x00", "U+0000 at index 3"),
        ("abc\\def", "U+005C"),
        ("abc\uff0fdef", "U+FF0F"),  # fullwidth solidus
        ("\u0430bc", "U+0430 at index 0"),  # Cyrillic a
        ("abc\u200bdef", "U+200B"),  # zero-width space
        ("abc+def", "U+002B"),
        ("abc:def", "U+003A"),
    ],
)
def test_hostile_or_malformed_ids_are_refused_with_a_named_problem(value, fragment):
    with pytest.raises(errors.InvalidCallIdError, match=re.escape(fragment)):
        validate_call_id(value)


@pytest.mark.parametrize("value", [None, 123, 4.5, b"abc", ["abc"], {"callId": "abc"}])
def test_non_strings_are_refused(value):
    with pytest.raises(errors.InvalidCallIdError, match="must be a string"):
        validate_call_id(value)


def test_the_message_shows_only_a_short_escaped_prefix_of_hostile_input():
    hostile = "\x1b[31mDROP TABLE calls;" + "A" * 500 + "\u202e"
    with pytest.raises(errors.InvalidCallIdError) as caught:
        validate_call_id(hostile)
    message = str(caught.value)
    assert "\x1b" not in message  # escaped, so no terminal control sequence reaches a log
    assert "\u202e" not in message
    assert "A" * 20 not in message
    assert len(message) < 200


def test_an_oversized_id_is_refused_without_echoing_it():
    with pytest.raises(errors.InvalidCallIdError) as caught:
        validate_call_id("x" * 10_000_000)
    assert len(str(caught.value)) < 200
    assert caught.value.details["length"] == 10_000_000


def test_details_name_the_problem_for_machines():
    with pytest.raises(errors.InvalidCallIdError) as caught:
        validate_call_id("ab/c")
    assert caught.value.details == {"problem": "forbidden-character", "index": 2, "codepoint": 47}
    assert caught.value.reason == "invalid-call-id"


def test_a_str_subclass_comes_back_as_a_plain_str():
    class Sneaky(str):
        def __str__(self) -> str:
            return "../admin"

    assert type(validate_call_id(Sneaky("abc"))) is str
    assert validate_call_id(Sneaky("abc")) == "abc"


@given(st.one_of(st.text(max_size=300), st.binary(max_size=50), st.integers(), st.none()))
@example("a" * CALL_ID_MAX_LENGTH)
@example("a" * (CALL_ID_MAX_LENGTH + 1))
def test_arbitrary_input_is_either_a_safe_id_or_invalid_call_id_error(value):
    # Whatever comes in, only InvalidCallIdError can come out ...
    try:
        result = validate_call_id(value)
    except errors.InvalidCallIdError as exc:
        message = str(exc)
    else:
        message = None
    if message is not None:
        assert len(message) < 200
        return
    # ... and anything accepted is plain, short, allow-listed and URL-inert
    assert result == value
    assert 1 <= len(result) <= CALL_ID_MAX_LENGTH
    assert set(result) <= ALLOWED_CALL_ID_CHARACTERS
    assert quote(result, safe="") == result
    assert ".." not in result


@given(
    st.text(alphabet=sorted(ALLOWED_CALL_ID_CHARACTERS), min_size=1, max_size=CALL_ID_MAX_LENGTH)
)
def test_every_allow_listed_string_is_accepted(value):
    assert validate_call_id(value) == value


@given(
    st.text(alphabet=sorted(ALLOWED_CALL_ID_CHARACTERS), max_size=20),
    st.characters().filter(lambda c: c not in ALLOWED_CALL_ID_CHARACTERS),
    st.text(alphabet=sorted(ALLOWED_CALL_ID_CHARACTERS), max_size=20),
)
def test_one_foreign_character_anywhere_is_refused_at_its_index(prefix, bad, suffix):
    with pytest.raises(errors.InvalidCallIdError) as caught:
        validate_call_id(prefix + bad + suffix)
    assert caught.value.details["index"] == len(prefix)
    assert caught.value.details["codepoint"] == ord(bad)


def test_a_phone_number_given_as_call_id_is_not_echoed() -> None:
    # Given a producer that sends a phone number instead of a call ID
    with pytest.raises(errors.InvalidCallIdError) as caught:
        validate_call_id("+12125550123")
    # Then the error names the problem without the full number
    assert "2125550123" not in str(caught.value)
    assert "23" in str(caught.value)
