"""Phone number analysis on top of ``phonenumbers`` (Google's libphonenumber), cached.

* :func:`analyse_number` never raises for garbage: anything that is not a usable number gives
  a :class:`PhoneInfo` with ``valid=False``. Results are cached per ``(raw, default_region)``
  (``functools.lru_cache``, :data:`CACHE_SIZE` entries), so a batch of calls between the same
  few numbers costs one analysis per number.
* How a raw string is read (``PhoneInfo.parsed_as``): with a leading ``+`` it is
  international (``e164``). Without one, Sinch endpoints are E.164 numbers that lost their
  ``+``, so ``+`` is tried first (``e164-without-plus``); then ``00`` as an international
  prefix (``international-prefix``); then, only when a ``default_region`` is given, the national
  format of that region (``national``). The first *valid* reading wins, else the first
  *possible* one, else the first that parses.
* Geography, carrier and time zones come from ``phonenumbers``' geocoder, carrier and
  timezone data, reported only for valid numbers and only when known. The carrier is the
  one the number range was *allocated* to: number portability is not reflected.
  ``phonenumbers.geocoder`` is never imported: its package loads every prefix table of every
  language (~0.3 s, ~100 MB). The same algorithm (``phonenumbers.prefix``) runs here over a
  lazy mapping that reads only the one ``geodata/dataN.py`` a prefix can live in, found by
  bisecting the generated index :mod:`call_enricher._geoindex` (the data files are sorted,
  contiguous prefix ranges). ``phonenumbers.carrier`` is not imported either (its package
  loads its three tables, ~20-40 ms of a cold start): carriers are looked up the same way,
  over ``carrierdata/dataN.py``, whose first prefixes are read from the files' first entries
  (three small reads; when a file does not look as expected, the whole
  ``phonenumbers.carrier`` module is used instead). A data file is not imported either
  (executing one of ~350 KB of source builds a dict of ~10,000 entries: ~14 ms, paid by the
  invocation whose number first falls in it): its text is read once (~0.7 ms) and an entry
  is found by bisecting its lines (one entry per line, sorted by prefix, as generated) and
  parsing that line alone; a file that does not look so is executed as a module instead.
  Loading is locked, so thread pools are safe.
* :func:`mask_number` renders an endpoint safe for logs and exception text.
"""

from __future__ import annotations

import ast
import bisect
import importlib.util
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Final, cast

import phonenumbers
from phonenumbers.phonenumberutil import (
    country_mobile_token,
    is_number_type_geographical,
    national_significant_number,
    region_code_for_country_code,
    region_codes_for_country_code,
)
from phonenumbers.prefix import _prefix_description_for_number

from call_enricher import _geoindex

__all__ = [
    "CACHE_SIZE",
    "WITHHELD_ENDPOINTS",
    "NumberType",
    "PhoneInfo",
    "analyse_number",
    "is_withheld",
    "looks_like_phone_number",
    "mask_number",
    "preload",
]

CACHE_SIZE: Final = 4096
_MAX_INPUT_LENGTH: Final = 64

#: Endpoint texts meaning "caller withheld" (compared case-insensitively, after stripping).
WITHHELD_ENDPOINTS: Final = frozenset(
    {"", "private", "anonymous", "unknown", "withheld", "restricted", "unavailable"}
)

_PHONE_LIKE = re.compile(r"\+?\(?[0-9][0-9 ().\-/]*")
_NOT_DIGIT = re.compile(r"\D")


class NumberType(StrEnum):
    """libphonenumber's number types, as kebab-case strings."""

    MOBILE = "mobile"
    FIXED_LINE = "fixed-line"
    FIXED_LINE_OR_MOBILE = "fixed-line-or-mobile"
    TOLL_FREE = "toll-free"
    PREMIUM_RATE = "premium-rate"
    SHARED_COST = "shared-cost"
    VOIP = "voip"
    PERSONAL_NUMBER = "personal-number"
    PAGER = "pager"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    UNKNOWN = "unknown"


_TYPES: Final = {
    phonenumbers.PhoneNumberType.MOBILE: NumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE: NumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE: NumberType.FIXED_LINE_OR_MOBILE,
    phonenumbers.PhoneNumberType.TOLL_FREE: NumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.PREMIUM_RATE: NumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.SHARED_COST: NumberType.SHARED_COST,
    phonenumbers.PhoneNumberType.VOIP: NumberType.VOIP,
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER: NumberType.PERSONAL_NUMBER,
    phonenumbers.PhoneNumberType.PAGER: NumberType.PAGER,
    phonenumbers.PhoneNumberType.UAN: NumberType.UAN,
    phonenumbers.PhoneNumberType.VOICEMAIL: NumberType.VOICEMAIL,
}


@dataclass(frozen=True, slots=True)
class PhoneInfo:
    """What libphonenumber knows about a number. ``None``/empty where it knows nothing.

    ``country`` is the ISO 3166-1 alpha-2 region of a valid number (``None`` for invalid
    numbers and non-geographic ones such as +800); ``calling_code`` is known whenever the
    text parses. ``e164`` and ``international`` are given for possible numbers.
    """

    e164: str | None
    country: str | None
    calling_code: int | None
    number_type: NumberType
    valid: bool
    possible: bool
    geo_description: str | None
    carrier: str | None
    time_zones: tuple[str, ...]
    international: str | None
    parsed_as: str  # e164 | e164-without-plus | international-prefix | national | none


_UNUSABLE: Final = PhoneInfo(
    e164=None,
    country=None,
    calling_code=None,
    number_type=NumberType.UNKNOWN,
    valid=False,
    possible=False,
    geo_description=None,
    carrier=None,
    time_zones=(),
    international=None,
    parsed_as="none",
)


def is_withheld(endpoint: str | None) -> bool:
    """True for texts that mean "number withheld" (``private``, ``anonymous``, empty, ...)."""
    return endpoint is not None and endpoint.strip().lower() in WITHHELD_ENDPOINTS


def looks_like_phone_number(text: str) -> bool:
    """True when ``text`` is made of digits (optional leading ``+``, usual separators)."""
    return _PHONE_LIKE.fullmatch(text.strip()) is not None


def analyse_number(raw: str, *, default_region: str | None = None) -> PhoneInfo:
    """Analyse a phone number text. Never raises: unusable input gives ``valid=False``.

    ``default_region`` (ISO alpha-2, e.g. ``"SE"``) enables the national reading of numbers
    without ``+`` (see the module docstring). Cached per ``(raw, default_region)``.
    """
    if not isinstance(raw, str) or len(raw) > _MAX_INPUT_LENGTH:
        return _UNUSABLE
    region = default_region.upper() if isinstance(default_region, str) and default_region else None
    return _analyse(raw, region)


@lru_cache(maxsize=CACHE_SIZE)
def _analyse(raw: str, region: str | None) -> PhoneInfo:
    text = raw.strip()
    if text[:4].lower() == "tel:":
        text = text[4:].strip()
    if not text or _PHONE_LIKE.fullmatch(text) is None:
        return _UNUSABLE
    best: tuple[phonenumbers.PhoneNumber, str] | None = None
    best_rank = 3
    for candidate, parsed_as, parse_region in _readings(text, region):
        try:
            number = phonenumbers.parse(candidate, parse_region)
        except phonenumbers.NumberParseException:
            continue
        rank = (
            0
            if phonenumbers.is_valid_number(number)
            else 1
            if phonenumbers.is_possible_number(number)
            else 2
        )
        if rank < best_rank:
            best, best_rank = (number, parsed_as), rank
            if rank == 0:
                break
    if best is None:
        return _UNUSABLE
    return _describe(best[0], best[1], valid=best_rank == 0, possible=best_rank <= 1)


def _readings(text: str, region: str | None) -> list[tuple[str, str, str | None]]:
    if text.startswith("+"):
        return [(text, "e164", None)]
    digits = _NOT_DIGIT.sub("", text)
    readings: list[tuple[str, str, str | None]] = [("+" + digits, "e164-without-plus", None)]
    if digits.startswith("00"):
        readings.append(("+" + digits[2:], "international-prefix", None))
    if region is not None:
        readings.append((text, "national", region))
    return readings


def _describe(
    number: phonenumbers.PhoneNumber, parsed_as: str, *, valid: bool, possible: bool
) -> PhoneInfo:
    fmt = phonenumbers.PhoneNumberFormat
    country = geo = carrier_name = None
    zones: tuple[str, ...] = ()
    number_type = NumberType.UNKNOWN
    if valid:
        timezone = _extras()
        region = phonenumbers.region_code_for_number(number)
        country = region if region and region not in ("001", "ZZ") else None
        number_type = _TYPES.get(phonenumbers.number_type(number), NumberType.UNKNOWN)
        geo = _geo_description(number) or None
        carrier_name = _carrier_name(number) or None
        zones = tuple(
            zone for zone in timezone.time_zones_for_number(number) if zone != "Etc/Unknown"
        )
    return PhoneInfo(
        e164=phonenumbers.format_number(number, fmt.E164) if possible else None,
        country=country,
        calling_code=number.country_code,
        number_type=number_type,
        valid=valid,
        possible=possible,
        geo_description=geo,
        carrier=carrier_name,
        time_zones=zones,
        international=phonenumbers.format_number(number, fmt.INTERNATIONAL) if possible else None,
        parsed_as=parsed_as,
    )


@cache
def _extras() -> ModuleType:
    from phonenumbers import timezone

    return timezone


def preload() -> None:
    """Load now (at INIT) what every record needs: the time zone table, the carrier index and
    the region display names (every party's country name). Optional: the per-prefix geodata
    chunks (about 1 MB of source each) still load lazily, on the first number they cover."""
    _extras()
    _carrier_index()
    _load_data("locale")


# --- prefix data loaded per file, never through the geodata/carrierdata packages ------------

_PHONENUMBERS_DIR: Final = Path(phonenumbers.__file__).parent
_GEODATA_DIR: Final = _PHONENUMBERS_DIR / "geodata"
_LOAD_LOCK: Final = threading.Lock()
_loaded: dict[str, Mapping[str, dict[str, str]]] = {}
"""Loaded so far, by ``<package>/<stem>``: the locale table and each data file's table."""


def _exec_data(stem: str, package: str) -> dict[str, dict[str, str]]:
    """``data`` of ``phonenumbers/<package>/<stem>.py``, executed by path (never the package)."""
    # Named under phonenumbers.<package> so that "from ..util import u" resolves; never
    # registered in sys.modules, and the package itself is not imported.
    spec = importlib.util.spec_from_file_location(
        f"phonenumbers.{package}._call_enricher_{stem}",
        _PHONENUMBERS_DIR / package / f"{stem}.py",
    )
    if spec is None or spec.loader is None:  # pragma: no cover - broken install
        raise ImportError(f"cannot load phonenumbers {package} {stem}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LOCALE_DATA if stem == "locale" else module.data  # type: ignore[no-any-return]


def _once(
    stem: str, package: str, load: Callable[[str, str], Mapping[str, dict[str, str]]]
) -> Mapping[str, dict[str, str]]:
    """``load(stem, package)``, once per file (locked: thread pools share the tables)."""
    key = f"{package}/{stem}"
    found = _loaded.get(key)
    if found is None:
        with _LOAD_LOCK:
            found = _loaded.get(key)
            if found is None:
                found = _loaded[key] = load(stem, package)
    return found


def _load_data(stem: str, package: str = "geodata") -> dict[str, dict[str, str]]:
    """``data`` of ``phonenumbers/<package>/<stem>.py``, executed once (the locale table)."""
    return cast(dict[str, dict[str, str]], _once(stem, package, _exec_data))


_DATA_START: Final = "\ndata = {\n"
_DATA_END: Final = "\n}\n"


class _FileFormatError(ValueError):
    """A data file whose text is not one sorted ``'prefix':{...},`` entry per line."""


_EXECUTE_AFTER_LOOKUPS: Final = 200
"""Lookups of one data file by bisecting before it is executed (see _TextTable)."""


class _TextTable(Mapping[str, dict[str, str]]):
    """One ``data<N>.py`` of phonenumbers, looked up in its source text.

    The generated file is ``data = {`` then one `` 'prefix':{'lang': 'name', ...},`` line per
    entry, sorted by prefix, then ``}``; a key's line is found by bisecting the text (a line
    compares as its prefix) and only that line is parsed (a dict of string constants, names
    possibly wrapped in phonenumbers' ``u()``, which is ``str``). Anything else in the file
    (``_FileFormatError``) makes it executed as a module instead, once.

    Bisecting and parsing cost ~10-50 us a lookup, and a prefix walk does several per number:
    a table looked up more than :data:`_EXECUTE_AFTER_LOOKUPS` times (a function that sees
    many numbers of its ranges) is executed once after all, and plain dict lookups serve the
    rest. A few numbers cost no file execution; many cost what they always did.
    """

    __slots__ = ("_fallback", "_hi", "_lo", "_lookups", "_package", "_stem", "_text")

    def __init__(self, stem: str, package: str) -> None:
        self._stem, self._package = stem, package
        self._fallback: dict[str, dict[str, str]] | None = None
        self._lookups = 0
        text = (_PHONENUMBERS_DIR / package / f"{stem}.py").read_text(encoding="utf-8")
        start, end = text.find(_DATA_START), text.rfind(_DATA_END)
        if start < 0 or end < start or text[end + len(_DATA_END) :].strip():
            self._text, self._lo, self._hi = "", 0, 0
            self._fallback = _exec_data(stem, package)
        else:
            self._text, self._lo, self._hi = text, start + len(_DATA_START), end + 1

    def _line(self, key: str) -> str | None:
        text, lo, hi = self._text, self._lo, self._hi
        while lo < hi:
            mid = (lo + hi) // 2
            newline = text.rfind("\n", lo, mid)
            start = lo if newline < 0 else newline + 1
            end = text.find("\n", start, hi)
            if end < 0 or not text.startswith(" '", start):
                raise _FileFormatError(self._stem)
            quote = text.find("'", start + 2, end)
            if quote < 0:
                raise _FileFormatError(self._stem)
            found = text[start + 2 : quote]
            if key == found:
                return text[quote + 2 : end]  # after "':"
            if key < found:
                hi = start
            else:
                lo = end + 1
        return None

    def get(self, key: str, default: object = None) -> Any:
        if self._fallback is None:
            self._lookups += 1
            if self._lookups > _EXECUTE_AFTER_LOOKUPS:
                with _LOAD_LOCK:
                    if self._fallback is None:
                        self._fallback = _exec_data(self._stem, self._package)
                        self._text = ""  # ~350 KB no longer needed
                return self._fallback.get(key, default)
            try:
                line = self._line(key)
                return default if line is None else _parse_entry(line, self._stem)
            except _FileFormatError:
                with _LOAD_LOCK:
                    if self._fallback is None:
                        self._fallback = _exec_data(self._stem, self._package)
        return self._fallback.get(key, default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __getitem__(self, key: str) -> dict[str, str]:
        found: dict[str, str] | None = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def _all(self) -> dict[str, dict[str, str]]:  # pragma: no cover - not used by the walk
        return self._fallback or _exec_data(self._stem, self._package)

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - not used by the prefix walk
        return iter(self._all())

    def __len__(self) -> int:  # pragma: no cover - not used by the prefix walk
        return len(self._all())


def _parse_entry(line: str, stem: str) -> dict[str, str]:
    """``{'en': 'name', ...},`` (the rest of an entry's line) as a dict."""
    if not line.endswith(","):
        raise _FileFormatError(stem)
    try:
        node = ast.parse(line[:-1], mode="eval").body
    except SyntaxError as exc:
        raise _FileFormatError(stem) from exc
    if not isinstance(node, ast.Dict):
        raise _FileFormatError(stem)
    names: dict[str, str] = {}
    for key, value in zip(node.keys, node.values, strict=True):
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "u"
            and len(value.args) == 1
            and not value.keywords
        ):
            value = value.args[0]
        if not (
            isinstance(key, ast.Constant)
            and isinstance(key.value, str)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            raise _FileFormatError(stem)
        names[key.value] = value.value
    return names


def _table(stem: str, package: str) -> _TextTable:
    return cast(_TextTable, _once(stem, package, _TextTable))


class _LazyPrefixData(Mapping[str, dict[str, str]]):
    """A phonenumbers prefix table (GEOCODE_DATA, CARRIER_DATA) that reads only the data
    file whose prefix range covers a key (``first_prefixes``: each file's first key)."""

    def __init__(self, first_prefixes: tuple[str, ...], package: str) -> None:
        self._firsts = first_prefixes
        self._package = package

    def _module_for(self, prefix: str) -> _TextTable | None:
        index = bisect.bisect_right(self._firsts, prefix) - 1
        return None if index < 0 else _table(f"data{index}", self._package)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        data = self._module_for(key)
        return data is not None and key in data

    def __getitem__(self, key: str) -> dict[str, str]:
        data = self._module_for(key)
        if data is None:
            raise KeyError(key)
        return data[key]

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - not used by the prefix walk
        for index in range(len(self._firsts)):
            yield from _table(f"data{index}", self._package)

    def __len__(self) -> int:  # pragma: no cover - not used by the prefix walk
        return sum(len(_table(f"data{i}", self._package)) for i in range(len(self._firsts)))


_GEOCODE_DATA: Final = _LazyPrefixData(_geoindex.FIRST_PREFIXES, "geodata")


def _region_display_name(region_code: str) -> str:
    names = _load_data("locale").get(region_code)
    if names is None:
        return ""
    name = names.get("en", "")
    if name.startswith("*"):
        name = names.get(name[1:], "")
    return str(name)


def _country_name(number: phonenumbers.PhoneNumber) -> str:
    codes = region_codes_for_country_code(number.country_code or 0)
    if len(codes) == 1:
        return _region_display_name(codes[0])
    valid_in = "ZZ"
    for code in codes:
        if phonenumbers.is_valid_number_for_region(number, code):
            if valid_in != "ZZ":
                return ""
            valid_in = code
    return _region_display_name(valid_in)


def _geo_description(number: phonenumbers.PhoneNumber) -> str:
    """Same result as ``phonenumbers.geocoder.description_for_number(number, "en")``."""
    ntype = phonenumbers.number_type(number)
    code = number.country_code
    if ntype == phonenumbers.PhoneNumberType.UNKNOWN or code is None:
        return ""
    if not is_number_type_geographical(ntype, code):
        return _country_name(number)
    # description_for_valid_number with region=None
    lookup = number
    region: str | None = None
    token = country_mobile_token(code)
    national = national_significant_number(number)
    if token and national.startswith(token):
        region = region_code_for_country_code(code)
        try:
            lookup = phonenumbers.parse(national[len(token) :], region)
        except phonenumbers.NumberParseException:
            lookup = number
    area = str(
        _prefix_description_for_number(
            _GEOCODE_DATA,  # type: ignore[arg-type]  # a Mapping is all the walk needs
            _geoindex.LONGEST_PREFIX,
            lookup,
            "en",
            None,
            region,
        )
    )
    return area if area else _country_name(number)


# --- carriers without phonenumbers.carrier -----------------------------------------------------

_CARRIER_DIR: Final = _PHONENUMBERS_DIR / "carrierdata"
_CARRIER_LONGEST_PREFIX: Final = 9  # carrierdata.CARRIER_LONGEST_PREFIX (checked by a test)
_FIRST_ENTRY: Final = re.compile(r"^data = \{\s*'(\d+)':", re.MULTILINE)
#: Number types carriers are looked up for (phonenumbers.carrier._is_mobile).
_CARRIER_TYPES: Final = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        phonenumbers.PhoneNumberType.PAGER,
    }
)


@cache
def _carrier_index() -> tuple[str, ...] | None:
    """First prefix of each ``carrierdata/data<i>.py``, read from its first entry.

    ``None`` when the files do not look as expected (then the carrier module is used).
    """
    firsts: list[str] = []
    for index in range(100):
        path = _CARRIER_DIR / f"data{index}.py"
        try:
            with path.open(encoding="utf-8") as source:
                head = source.read(8192)
        except FileNotFoundError:
            break
        except OSError:  # pragma: no cover - unreadable install
            return None
        found = _FIRST_ENTRY.search(head)
        if found is None:
            return None
        firsts.append(found.group(1))
    if not firsts or firsts != sorted(firsts):
        return None
    return tuple(firsts)


@cache
def _carrier_data() -> Mapping[str, dict[str, str]] | None:
    firsts = _carrier_index()
    return None if firsts is None else _LazyPrefixData(firsts, "carrierdata")


def _carrier_name(number: phonenumbers.PhoneNumber) -> str:
    """Same result as ``phonenumbers.carrier.name_for_number(number, "en")``."""
    data = _carrier_data()
    if data is None:  # pragma: no cover - an unexpected carrierdata layout
        from phonenumbers import carrier

        return str(carrier.name_for_number(number, "en"))
    if phonenumbers.number_type(number) not in _CARRIER_TYPES:
        return ""
    return str(
        _prefix_description_for_number(
            data,  # type: ignore[arg-type]  # a Mapping is all the walk needs
            _CARRIER_LONGEST_PREFIX,
            number,
            "en",
            None,
            None,
        )
    )


# --- masking ------------------------------------------------------------------------------------


def mask_number(raw: str | None) -> str:
    """A form of an endpoint that is safe for logs: never the full number or user name.

    * phone-like text: ``+``, the country calling code and the last 2 digits are kept, every
      other digit becomes ``*`` (``+46701740605`` -> ``+46*******05``); without ``+`` only the
      last 2 digits are kept; numbers of 4 digits or fewer after the calling code are fully
      masked (calling code included). Separators are dropped.
    * SIP addresses (``user@host``, optional ``sip:``/``sips:`` scheme): the user part is
      masked by these rules, the host (infrastructure, not personal) is kept.
    * withheld markers (``private``, ``anonymous``, ...) are kept as they are.
    * other text (user names): first and last characters kept, the rest ``*``; texts of
      3 characters or fewer fully masked.
    """
    if raw is None:
        return ""
    if is_withheld(raw):
        return raw.strip()
    text = raw.strip()
    scheme = ""
    lowered = text.lower()
    for prefix in ("sips:", "sip:", "tel:"):
        if lowered.startswith(prefix):
            scheme, text = text[: len(prefix)], text[len(prefix) :]
            break
    user, at, host = text.partition("@")
    if at:
        return f"{scheme}{_mask_user(user)}@{host}"
    return scheme + _mask_user(text)


def _mask_user(text: str) -> str:
    if is_withheld(text):
        return text.strip()
    if looks_like_phone_number(text):
        return _mask_digits(text.strip())
    if len(text) <= 3:
        return "*" * len(text)
    return text[0] + "*" * (len(text) - 2) + text[-1]


def _mask_digits(text: str) -> str:
    plus = text.startswith("+")
    digits = _NOT_DIGIT.sub("", text)
    head = _calling_code_prefix(digits) if plus else ""
    rest = digits[len(head) :]
    if len(rest) <= 4:  # too short to show anything
        return ("+" if plus else "") + "*" * len(digits)
    return ("+" if plus else "") + head + "*" * (len(rest) - 2) + rest[-2:]


def _calling_code_prefix(digits: str) -> str:
    if digits.startswith("0"):
        return ""  # no calling code starts with 0
    for length in (1, 2, 3):
        if int(digits[:length] or 0) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return digits[:length]
    return ""
