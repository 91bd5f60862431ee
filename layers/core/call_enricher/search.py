"""The calls of one UTC day, from the calls table's ``ByDay`` index (an adapter).

:class:`CallSearch` serves ``GET /calls?day=`` and ``call-enricher export``. The index
(template.yaml) is sparse: :mod:`call_enricher.storage` gives an item ``searchDay`` (the
record's UTC start day, else the day the call failed) and ``searchSort`` (that instant, then
``#`` and the call ID) with each version or failure state; a call only being retried and a
message without a call ID carry neither. Its own module, so that only the roles that search
(the HTTP API's) are granted ``dynamodb:Query``.

Pages are in time order; a page's ``cursor`` is opaque (URL-safe base64 of the last item's
keys and the search it belongs to: a cursor only continues the same day and filters).
Reads are eventually consistent, as every index read is.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from call_enricher import aws
from call_enricher.items import names_used, parse_item
from call_enricher.state import StoredCall

__all__ = [
    "DEFAULT_SEARCH_LIMIT",
    "MAX_SEARCH_LIMIT",
    "SEARCH_INDEX",
    "CallSearch",
    "InvalidCursorError",
    "InvalidDayError",
    "SearchPage",
]

SEARCH_INDEX = "ByDay"
"""The calls table's index by UTC day (template.yaml): ``searchDay``, ``searchSort``."""
DEFAULT_SEARCH_LIMIT = 50
MAX_SEARCH_LIMIT = 500
MAX_SEARCH_READS = 10
"""Index reads one :meth:`CallStore.search` page may take (a filter can leave them short)."""


class InvalidDayError(ValueError):
    """A day that is not a real date in ``YYYY-MM-DD`` form."""


class InvalidCursorError(ValueError):
    """A search cursor that is not one this day's search, with these filters, handed out."""


@dataclass(frozen=True)
class SearchPage:
    calls: list[StoredCall]
    cursor: str | None
    """Opaque: where the next page starts (None: the day has no more)."""


def _cursor_scope(day: str, state: str | None, status: str | None) -> str:
    return f"{day}|{state or ''}|{status or ''}"


def _encode_cursor(scope: str, last: StoredCall | Mapping[str, Any]) -> str:
    """Where the next page starts: the last item's table and index keys, with the search's
    scope (a cursor only continues the search it came from). Opaque, URL-safe."""
    if isinstance(last, StoredCall):
        key = [last.call_id, last.search_day, last.search_sort]
    else:  # a LastEvaluatedKey
        key = [last[name]["S"] for name in ("callId", "searchDay", "searchSort")]
    text = json.dumps({"v": 1, "scope": scope, "key": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, scope: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        key = data["key"]
        valid = (
            data.get("v") == 1
            and isinstance(key, list)
            and len(key) == 3
            and all(isinstance(part, str) and 0 < len(part) <= 1024 for part in key)
        )
    except (ValueError, TypeError, KeyError, UnicodeError):
        valid = False
    if not valid:
        raise InvalidCursorError("the cursor is not one this API handed out")
    if data.get("scope") != scope or not key[2].startswith(f"{key[1]}T") or key[1] != scope[:10]:
        raise InvalidCursorError("the cursor belongs to another day or other filters")
    call_id, day, sort = key
    return {"callId": {"S": call_id}, "searchDay": {"S": day}, "searchSort": {"S": sort}}


class CallSearch:
    """Reads the ``ByDay`` index of the calls table ``table_name``."""

    def __init__(self, table_name: str, *, client: Any | None = None) -> None:
        self.table_name = table_name
        self._client = client

    client = aws.LazyClient("dynamodb")

    def page(
        self,
        day: str,
        *,
        state: str | None = None,
        status: str | None = None,
        limit: int = DEFAULT_SEARCH_LIMIT,
        cursor: str | None = None,
    ) -> SearchPage:
        """Up to ``limit`` calls of UTC ``day`` (``YYYY-MM-DD``) from the ByDay index, in
        time order, optionally only in ``state`` (enriched, failed) or of call ``status``
        (FINAL, ONGOING); ``cursor`` (from the previous page) continues where it stopped.

        One ``Query`` per index page of at most ``limit`` items, until ``limit`` calls
        match or the day ends (a filter may leave pages short; at most
        :data:`MAX_SEARCH_READS` reads, then the page is returned with a cursor). Eventually
        consistent, as every index read. Raises :class:`InvalidCursorError` (a cursor not
        made for this day and these filters) and :class:`AwsUnavailableError`.
        """
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_SEARCH_LIMIT}")
        try:
            real = date.fromisoformat(day).isoformat() == day
        except ValueError:
            real = False
        if not real:
            raise InvalidDayError(f"{day!r} is not a day (YYYY-MM-DD, a real date)")
        scope = _cursor_scope(day, state, status)
        start = _decode_cursor(cursor, scope) if cursor else None
        values: dict[str, Any] = {":day": {"S": day}}
        filters: list[str] = []
        if state is not None:
            filters.append("#state = :state")
            values[":state"] = {"S": state}
        if status is not None:
            filters.append("#status = :status")
            values[":status"] = {"S": status}
        key_condition = "#searchDay = :day"
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": SEARCH_INDEX,
            "KeyConditionExpression": key_condition,
            "ExpressionAttributeValues": values,
            "ExpressionAttributeNames": names_used(key_condition, *filters),
        }
        if filters:
            request["FilterExpression"] = " AND ".join(filters)
        calls: list[StoredCall] = []
        for _ in range(MAX_SEARCH_READS):
            if start is not None:
                request["ExclusiveStartKey"] = start
            # A filter is applied after Limit: read more, as the cursor is the last call kept.
            request["Limit"] = limit - len(calls) if not filters else max(limit, 100)
            try:
                response = self.client.query(**request)
            except (ClientError, BotoCoreError) as exc:
                raise aws.translate_error(exc, "DynamoDB Query") from None
            for item in response.get("Items", []):
                calls.append(parse_item(item))
                if len(calls) == limit:
                    return SearchPage(calls, _encode_cursor(scope, calls[-1]))
            start = response.get("LastEvaluatedKey")
            if not start:
                return SearchPage(calls, None)
        assert start is not None  # noqa: S101 - the loop returned otherwise
        return SearchPage(calls, _encode_cursor(scope, start))
