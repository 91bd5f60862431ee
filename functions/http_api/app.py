"""HTTP API (API Gateway HTTP API, payload v2, IAM auth): enqueue, read and enrich calls.

Routes (contract: ``call_enricher.api_models``; document: ``openapi.json``):

* ``POST /calls``                 enqueue 1-100 call IDs            -> 202 / 422 (all rejected)
* ``GET /calls?day=YYYY-MM-DD``   the day's calls (state, status,  -> 200 / 422
                                  limit, cursor), ByDay index
* ``GET /calls/{callId}``         the call's state: enriched or     -> 200 (ETag) / 304 / 404
                                  failed (404: never processed)
* ``POST /calls/{callId}/enrich`` enrich now, synchronously         -> 200 / 404 / 422 / 502 / 504
* ``GET /openapi.json``           this API's OpenAPI document

Thin: the pipeline, the queue and the store do the work; this file maps HTTP to them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.utilities.typing import LambdaContext

from call_enricher import api_models as api
from call_enricher.callid import validate_call_id
from call_enricher.errors import CallEnricherError, InvalidCallIdError
from call_enricher.messages import EnrichmentRequest
from call_enricher.observability import logger, metrics, tracer
from call_enricher.runtime import get_service, init_service
from call_enricher.search import (
    DEFAULT_SEARCH_LIMIT,
    MAX_SEARCH_LIMIT,
    CallSearch,
    InvalidCursorError,
    InvalidDayError,
)
from call_enricher.service import Disposition, Outcome, WorkItem
from call_enricher.state import StoredCall

SYNC_BUDGET_MS = 20_000  # well inside API Gateway's 30 s integration timeout
_JSON = "application/json"

app = APIGatewayHttpResolver(enable_validation=True)
CallIdPath = Annotated[str, Path(alias="callId", max_length=1024, description="Sinch call ID.")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": text,
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for status, text in api.ERROR_RESPONSES.items()
}


def _error(status: int, code: str, message: str, details: Any = None) -> Response[Any]:
    return Response(status, _JSON, json.dumps(api.error_body(code, message, details)))


def _json(status: int, model: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(status, _JSON, model.model_dump_json(by_alias=True), headers=headers or {})


def _call_id(value: str) -> str:
    try:
        return validate_call_id(value)
    except InvalidCallIdError as exc:
        raise RequestValidationError(
            [{"loc": ("path", "callId"), "msg": str(exc), "type": "invalid-call-id"}]
        ) from None


@app.post(
    "/calls",
    summary="Enqueue call IDs for enrichment",
    responses={
        202: {
            "description": "Accepted (see accepted/rejected)",
            "content": {_JSON: {"model": api.EnqueueResponse}},
        },
        422: {
            "description": "Every call ID was rejected (see details), or the body is invalid",
            "content": {_JSON: {"model": api.ErrorResponse}},
        },
        503: {
            "description": "No ID could be enqueued",
            "content": {_JSON: {"model": api.ErrorResponse}},
        },
        **_ERRORS,
    },
)
def enqueue_calls(request: Annotated[api.EnqueueRequest, Body()]) -> Response[Any]:
    rejected: list[api.RejectedCall] = []
    to_send: list[EnrichmentRequest] = []
    seen: set[str] = set()
    for raw in request.call_ids:
        if raw in seen:
            continue  # duplicates collapsed
        seen.add(raw)
        try:
            call_id = validate_call_id(raw)
        except InvalidCallIdError as exc:
            rejected.append(api.RejectedCall(callId=raw, reason=exc.reason, message=str(exc)))
            continue
        to_send.append(
            EnrichmentRequest(
                call_id=call_id, region=request.region, context=request.context, entry_path="api"
            )
        )
    accepted: list[api.AcceptedCall] = []
    if not to_send:
        return _error(
            422,
            "validation-error",
            "Every call ID was rejected; nothing was enqueued.",
            [r.model_dump(by_alias=True) for r in rejected],
        )
    if to_send:
        service = get_service()
        if service.queue is None:
            return _error(503, "queue-unavailable", "The enrichment queue is not configured.")
        outcomes = service.queue.send_many(to_send)
        for message, failure in zip(to_send, outcomes, strict=True):
            if failure is None:
                accepted.append(api.AcceptedCall(callId=message.call_id))
            else:
                rejected.append(
                    api.RejectedCall(
                        callId=message.call_id, reason="queue-unavailable", message=str(failure)
                    )
                )
        if not accepted:
            return _error(
                503,
                "queue-unavailable",
                "No call ID could be enqueued; retry the request.",
                [r.model_dump(by_alias=True) for r in rejected],
            )
    logger.info("calls enqueued", extra={"accepted": len(accepted), "rejected": len(rejected)})
    return _json(202, api.EnqueueResponse(accepted=accepted, rejected=rejected))


def _etag(stored: StoredCall) -> str:
    """Changes whenever the state does: a new version, a new failure, a new retry trace."""
    etag = f"{stored.version or 0}-{(stored.fingerprint or '')[:16]}"
    marks = []
    if stored.failure is not None:
        marks.append(f"{stored.failure.fingerprint}|{stored.failure.failed_at.isoformat()}")
    if stored.last_error is not None:
        marks.append(stored.last_error.model_dump_json())
    if marks:
        etag += "-" + hashlib.sha256("|".join(marks).encode()).hexdigest()[:12]
    return f'"{etag}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


@app.get(
    "/calls",
    summary="The calls of one UTC day, in time order (a page at a time)",
    responses={
        200: {"description": "A page of calls", "content": {_JSON: {"model": api.CallPage}}},
        502: {"description": "Storage failed", "content": {_JSON: {"model": api.ErrorResponse}}},
        **_ERRORS,
    },
)
def search_calls(
    day: Annotated[
        str,
        Query(
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="UTC day (YYYY-MM-DD): the call's start day; a failure without a"
            " record, the day it failed.",
        ),
    ],
    state: Annotated[
        Literal["enriched", "failed"] | None, Query(description="Only calls in this state.")
    ] = None,
    status: Annotated[
        Literal["FINAL", "ONGOING"] | None, Query(description="Only calls with this status.")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_SEARCH_LIMIT, description="Calls per page (at most 500).")
    ] = DEFAULT_SEARCH_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=2048, description="nextCursor of the previous page.")
    ] = None,
) -> Response[Any]:
    store = get_service().store  # the same table and client (a search is cheap to build)
    try:
        page = CallSearch(store.table_name, client=store.client).page(
            day, state=state, status=status, limit=limit, cursor=cursor
        )
    except InvalidCursorError as exc:
        return _error(422, "validation-error", "The request is invalid.", [_problem("cursor", exc)])
    except InvalidDayError as exc:  # a date that does not exist (2026-02-30)
        return _error(422, "validation-error", "The request is invalid.", [_problem("day", exc)])
    body = api.CallPage(
        day=day,
        count=len(page.calls),
        calls=[api.call_resource(stored) for stored in page.calls],
        nextCursor=page.cursor,
    )
    return _json(200, body, {"Cache-Control": "private, no-cache"})


def _problem(field: str, exc: Exception) -> dict[str, str]:
    return {"field": f"query.{field}", "problem": str(exc)[:200]}


@app.get(
    "/calls/<callId>",
    summary="The call's state: its stored record, or why it failed",
    responses={
        200: {"description": "The call", "content": {_JSON: {"model": api.CallResource}}},
        304: {"description": "Not modified (If-None-Match)"},
        502: {"description": "Storage failed", "content": {_JSON: {"model": api.ErrorResponse}}},
        **_ERRORS,
    },
)
def get_call(callId: CallIdPath) -> Response[Any]:
    call_id = _call_id(callId)
    stored = get_service().store.get(call_id)
    if stored is None:
        return _error(
            404,
            "call-not-found",
            "This call ID was never processed (or is still queued).",
        )
    etag = _etag(stored)
    if _matches(app.current_event.headers.get("if-none-match"), etag):
        return Response(304, None, "", headers={"ETag": etag})
    return _json(
        200, api.call_resource(stored), {"ETag": etag, "Cache-Control": "private, no-cache"}
    )


@app.post(
    "/calls/<callId>/enrich",
    summary="Enrich one call now (synchronous); answers with the state it produced",
    responses={
        200: {"description": "The enriched call", "content": {_JSON: {"model": api.CallResource}}},
        502: {
            "description": "Sinch or AWS failed",
            "content": {_JSON: {"model": api.ErrorResponse}},
        },
        504: {"description": "Deadline", "content": {_JSON: {"model": api.ErrorResponse}}},
        **_ERRORS,
    },
)
def enrich_call(callId: CallIdPath) -> Response[Any]:
    call_id = _call_id(callId)
    context: LambdaContext = app.lambda_context
    key = context.aws_request_id
    request = EnrichmentRequest(call_id=call_id, entry_path="api")
    service = get_service()
    report = service.process(
        [WorkItem(key=key, request=request)],
        remaining_ms=lambda: min(context.get_remaining_time_in_millis(), SYNC_BUDGET_MS),
    )
    result = report.results[key]
    logger.info(
        "call enriched on demand",
        extra={
            "callId": call_id,
            "outcome": result.outcome.value,
            "reason": result.error.reason if result.error else None,
        },
    )
    stored = result.stored
    if stored is not None and stored.record is None and stored.state == "enriched":
        stored = service.store.get(call_id, consistent=True)  # served from a summary
    has_version = stored is not None and stored.version is not None
    if result.outcome is Outcome.FAILED or (
        result.disposition is Disposition.RETRY and not has_version
    ):
        status, code = api.error_for(result.error, result.outcome.value)
        message = str(result.error) if result.error else "The call could not be enriched now."
        details: dict[str, Any] = {
            "reason": result.error.reason if result.error else result.outcome.value
        }
        if stored is not None:
            details["call"] = api.call_resource(stored, result.outcome.value).model_dump(
                mode="json", by_alias=True
            )
        return _error(status, code, message, details)
    if stored is None:
        return _error(502, "upstream-error", "The call could not be enriched now.")
    return _json(200, api.call_resource(stored, result.outcome.value))


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[Any]:
    return Response(200, _JSON, openapi_json())


def openapi_json() -> str:
    """This API's OpenAPI document (what ``openapi.json`` at the repo root holds)."""
    return app.get_openapi_json_schema(
        title="call-enricher API",
        version=api.API_VERSION,
        summary="Sinch Voice call records, validated and enriched, on demand.",
    )


@app.exception_handler(RequestValidationError)
def _validation_error(exc: RequestValidationError) -> Response[Any]:
    details = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part != "body" or len(err["loc"]) == 1]
        details.append({"field": ".".join(loc) or "body", "problem": str(err.get("msg", ""))[:200]})
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        return _error(400, "malformed-json", "The body is not valid JSON.")
    return _error(422, "validation-error", "The request is invalid.", details)


@app.exception_handler(CallEnricherError)
def _domain_error(exc: CallEnricherError) -> Response[Any]:
    status, code = api.error_for(exc)
    logger.warning("request failed", extra={"reason": exc.reason})
    return _error(status, code, str(exc), {"reason": exc.reason})


@app.not_found
def _not_found(_: NotFoundError) -> Response[Any]:
    return _error(404, "not-found", "No such route.")


@app.exception_handler(Exception)
def _unexpected(exc: Exception) -> Response[Any]:
    logger.exception("unexpected error")
    return _error(500, "internal-error", "Internal error.")


def _precheck(event: dict[str, Any]) -> Response[Any] | None:
    """Size, media type and JSON syntax of a body, before routing (one error shape)."""
    body = event.get("body")
    if not body:
        return None
    size = (
        len(body) * 3 // 4
        if event.get("isBase64Encoded")
        else len(body.encode("utf-8", "surrogatepass"))
    )
    if size > api.MAX_BODY_BYTES:
        return _error(413, "payload-too-large", f"The body is over {api.MAX_BODY_BYTES} bytes.")
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    media_type = str(headers.get("content-type", "")).split(";", 1)[0].strip().lower()
    if media_type != _JSON:
        return _error(415, "unsupported-media-type", "Content-Type must be application/json.")
    if event.get("isBase64Encoded"):
        return _error(415, "unsupported-media-type", "The body must be UTF-8 JSON text.")
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return _error(400, "malformed-json", "The body is not valid JSON.")
    return None


init_service()  # INIT: settings, clients, Sinch session, secret (call_enricher.runtime)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    early = _precheck(event)
    if early is not None:
        return {
            "statusCode": early.status_code,
            "headers": {"Content-Type": _JSON},
            "body": early.body,
            "isBase64Encoded": False,
        }
    return app.resolve(event, context)
