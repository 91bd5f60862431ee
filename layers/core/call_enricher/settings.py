"""One validated settings model, built from environment variables.

Every function reads its configuration through :func:`get_settings` (cached; built lazily on
first use, so a bad variable fails the cold start with a message naming it). The SAM
template passes every value below by environment variable, and a template test keeps the two
in step: each field's alias is the environment variable's name.

Powertools' own variables (``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_LOG_LEVEL``,
``POWERTOOLS_METRICS_NAMESPACE``, ``POWERTOOLS_TRACE_DISABLED``) are read by Powertools itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from call_enricher.errors import ConfigurationError
from call_enricher.sinch.auth import AuthScheme as SinchAuthScheme

SQS_MAX_DELAY_SECONDS = 900


class Settings(BaseModel):
    """Runtime configuration. Field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    # Resources (names/URLs come from the template; no hard-coded physical names).
    calls_table_name: Annotated[str, Field(alias="CALLS_TABLE_NAME", min_length=3)] = (
        "call-enricher-calls"
    )
    event_bus_name: Annotated[str, Field(alias="EVENT_BUS_NAME", min_length=1)] = "call-enricher"
    enrichment_queue_url: Annotated[str, Field(alias="ENRICHMENT_QUEUE_URL")] = ""
    event_source: Annotated[str, Field(alias="EVENT_SOURCE", min_length=1)] = "call-enricher"

    # Sinch.
    sinch_secret_id: Annotated[str, Field(alias="SINCH_SECRET_ID")] = ""
    sinch_secret_max_age_seconds: Annotated[
        int, Field(alias="SINCH_SECRET_MAX_AGE_SECONDS", ge=0, le=86_400)
    ] = 300
    sinch_region: Annotated[str, Field(alias="SINCH_REGION")] = "global"
    sinch_base_url: Annotated[str | None, Field(alias="SINCH_BASE_URL")] = None
    sinch_auth_scheme: Annotated[SinchAuthScheme, Field(alias="SINCH_AUTH_SCHEME")] = (
        SinchAuthScheme.SIGNED
    )
    sinch_connect_timeout_seconds: Annotated[
        float, Field(alias="SINCH_CONNECT_TIMEOUT_SECONDS", gt=0, le=30)
    ] = 3.05
    sinch_read_timeout_seconds: Annotated[
        float, Field(alias="SINCH_READ_TIMEOUT_SECONDS", gt=0, le=60)
    ] = 10.0
    sinch_max_attempts: Annotated[int, Field(alias="SINCH_MAX_ATTEMPTS", ge=1, le=10)] = 3

    # Batch processing.
    worker_threads: Annotated[int, Field(alias="WORKER_THREADS", ge=1, le=64)] = 10
    deadline_margin_ms: Annotated[int, Field(alias="DEADLINE_MARGIN_MS", ge=0, le=60_000)] = 3000

    # ONGOING re-checks: exponential delay from the base, capped at SQS's 15 minutes, until the
    # call has been ONGOING for longer than the max age (then `not-final-in-time`).
    recheck_base_delay_seconds: Annotated[
        int, Field(alias="RECHECK_BASE_DELAY_SECONDS", ge=1, le=SQS_MAX_DELAY_SECONDS)
    ] = 30
    recheck_max_age_seconds: Annotated[
        int, Field(alias="RECHECK_MAX_AGE_SECONDS", ge=60, le=14 * 86_400)
    ] = 4 * 3600

    # Idempotency: a stored FINAL record younger than this is served without asking Sinch.
    final_freshness_seconds: Annotated[
        int, Field(alias="FINAL_FRESHNESS_SECONDS", ge=0, le=365 * 86_400)
    ] = 86_400

    # Optional TTL of stored records, in days (0 = keep forever).
    record_ttl_days: Annotated[int, Field(alias="RECORD_TTL_DAYS", ge=0, le=36_500)] = 0

    # Sinch callbacks.
    sinch_callback_path: Annotated[str, Field(alias="SINCH_CALLBACK_PATH")] = "/sinch/callbacks"
    callback_max_skew_seconds: Annotated[
        int, Field(alias="CALLBACK_MAX_SKEW_SECONDS", ge=1, le=3600)
    ] = 300

    # Fraud and spend signals (see call_enricher.risk and call_enricher.spend).
    # An SSM String parameter holding the risk policy's JSON (empty: the library's default).
    risk_policy_parameter: Annotated[str, Field(alias="RISK_POLICY_PARAMETER")] = ""
    # The spend watch's DynamoDB table (empty: no spend watch; the stream publisher only).
    spend_table_name: Annotated[str, Field(alias="SPEND_TABLE_NAME")] = ""
    # A Secrets Manager secret whose SecretString keys the HMAC of called numbers (needed
    # with SPEND_TABLE_NAME: the table never holds a number).
    spend_number_key_secret_id: Annotated[str, Field(alias="SPEND_NUMBER_KEY_SECRET_ID")] = ""

    @field_validator("sinch_base_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("sinch_callback_path")
    @classmethod
    def _path_starts_with_slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``).

        Raises :class:`ConfigurationError` naming each bad variable and why.
        """
        env = os.environ if environ is None else environ
        names = {field.alias for field in cls.model_fields.values() if field.alias}
        try:
            return cls.model_validate({k: v for k, v in env.items() if k in names})
        except ValidationError as exc:
            problems = [
                {"field": str(err["loc"][0]) if err["loc"] else "?", "problem": err["msg"]}
                for err in exc.errors(include_url=False, include_input=False)
            ]
            text = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
            raise ConfigurationError(f"invalid configuration: {text}", details=problems) from None

    @classmethod
    def env_var_names(cls) -> frozenset[str]:
        """The environment variables this model reads (used by template tests)."""
        return frozenset(f.alias for f in cls.model_fields.values() if f.alias)


@cache
def get_settings() -> Settings:
    """The process-wide settings, built on first use (cold start) and cached."""
    return Settings.from_env()
