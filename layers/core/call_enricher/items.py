"""The calls table's item codec and its one write primitive (the table's adapter core).

* :func:`parse_item` reads an item in attribute-value form (a read, a write's answer, a
  stream image) into :class:`~call_enricher.state.StoredCall`; :func:`to_attribute` writes a
  JSON value (no float ever reaches DynamoDB).
* :func:`conditional_update` is the one conditional ``UpdateItem`` every write is: it
  answers with the new item, or with the item as it is when the condition refused it.
* :class:`FailureRecorder` is the stream publisher's only write (it needs nothing else of
  :mod:`call_enricher.storage`, so its role grants nothing else).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ValidationError

from call_enricher import aws
from call_enricher.errors import AwsUnavailableError, PermanentError
from call_enricher.state import Failure, StoredCall

__all__ = [
    "FailureRecorder",
    "conditional_update",
    "json_of",
    "names_used",
    "parse_item",
    "to_attribute",
]

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()

_NAMES = {
    f"#{name}": name
    for name in (
        "callId",
        "state",
        "version",
        "fingerprint",
        "status",
        "previousStatus",
        "record",
        "context",
        "entryPath",
        "createdAt",
        "updatedAt",
        "failure",
        "lastError",
        "schemaVersion",
        "expiresAt",
        "searchDay",
        "searchSort",
    )
}


def to_attribute(value: Any) -> dict[str, Any]:
    """A JSON value as a DynamoDB attribute (floats, which boto3 refuses, become decimals)."""
    serialized: dict[str, Any] = dict(_SERIALIZER.serialize(decimals(value)))
    return serialized


def decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {key: decimals(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [decimals(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal: integral ones become int, others float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def parse_item(item: Mapping[str, Any]) -> StoredCall:
    """A DynamoDB item (attribute-value form: a read, a write's answer, a stream image)."""
    plain = _plain({key: _DESERIALIZER.deserialize(value) for key, value in item.items()})
    try:
        return StoredCall.model_validate(plain)
    except ValidationError as exc:
        key = str(plain.get("callId", "?"))[:128]
        fields = sorted({str(err["loc"][0]) for err in exc.errors() if err["loc"]})
        raise PermanentError(
            f"stored item for call {key} is invalid (fields: {', '.join(fields)})"
        ) from None


def json_of(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def conditional_update(
    client: Any,
    table_name: str,
    key: str,
    update: str,
    condition: str,
    values: dict[str, Any],
    *,
    must_exist: bool = False,
) -> dict[str, Any] | StoredCall | None:
    """One conditional UpdateItem: the new item (attribute values), or, when the
    condition refused it, the item as it is."""
    try:
        response = client.update_item(
            TableName=table_name,
            Key={"callId": {"S": key}},
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames=names_used(update, condition),
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if aws.error_code(exc) != "ConditionalCheckFailedException":
            raise aws.translate_error(exc, "DynamoDB UpdateItem") from None
        item = dict(exc.response).get("Item")
        if not isinstance(item, dict) or not item:
            if not must_exist:
                # Only possible if the item vanished between the check and the answer.
                raise AwsUnavailableError(
                    f"DynamoDB UpdateItem refused the write of {key} without the item"
                ) from None
            return None  # the condition needs an item, and there is none
        return parse_item(item)
    except BotoCoreError as exc:
        raise aws.translate_error(exc, "DynamoDB UpdateItem") from None
    attributes: dict[str, Any] = response["Attributes"]
    return attributes


class FailureRecorder:
    """Records that a stored version's event can never be published (the publisher's write)."""

    def __init__(self, table_name: str, *, client: Any | None = None) -> None:
        self.table_name = table_name
        self._client = client

    client = aws.LazyClient("dynamodb")

    def record_unpublishable(self, call_id: str, version: int, failure: Failure) -> bool:
        """The publisher's write: version ``version``'s event can never be published.

        Conditional on ``version`` still being stored (not removed by its TTL or by hand
        since) and this failure not yet recorded; ``True`` when written (its stream record
        announces the failure).
        """
        values: dict[str, Any] = {
            ":failed": {"S": "failed"},
            ":failure": to_attribute(json_of(failure)),
            ":failureFingerprint": {"S": failure.fingerprint},
            ":version": {"N": str(version)},
        }
        update = "SET #state = :failed, #failure = :failure"
        condition = (
            "#version = :version AND "
            "(attribute_not_exists(#failure) OR #failure.#fingerprint <> :failureFingerprint)"
        )
        answer = conditional_update(
            self.client, self.table_name, call_id, update, condition, values, must_exist=True
        )
        return isinstance(answer, dict)


def names_used(*expressions: str) -> dict[str, str]:
    """ExpressionAttributeNames limited to the placeholders used (DynamoDB rejects extras)."""
    return {
        placeholder: name
        for placeholder, name in _NAMES.items()
        if any(uses(expression, placeholder) for expression in expressions)
    }


def uses(expression: str, placeholder: str) -> bool:
    index = expression.find(placeholder)
    while index != -1:
        end = index + len(placeholder)
        if end == len(expression) or not (expression[end].isalnum() or expression[end] == "_"):
            return True
        index = expression.find(placeholder, end)
    return False
