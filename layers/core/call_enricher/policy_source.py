"""Where the risk policy comes from at run time: an optional SSM parameter, cached.

``RISK_POLICY_PARAMETER`` names a String parameter holding the policy's JSON document (see
:mod:`call_enricher.risk`); empty means the library's default policy. The parameter is read
with Powertools Parameters (``SSMProvider.get``, the provider behind ``get_parameter``, over
this library's shared SSM client) and cached for ``max_age_seconds`` (300): an edited policy
applies within five minutes, without a redeploy. A document that does not validate is a
:class:`~call_enricher.risk.RiskPolicyError` (an operator must fix it: the call is retried,
then goes to the DLQ, and is redriven once the policy is fixed), a missing parameter a
:class:`~call_enricher.errors.ConfigurationError`, any other read failure transient.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from call_enricher.errors import AwsUnavailableError, ConfigurationError
from call_enricher.risk import DEFAULT_POLICY, RiskPolicy, load_policy

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools.utilities.parameters import SSMProvider

__all__ = ["DEFAULT_MAX_AGE_SECONDS", "SsmRiskPolicySource", "policy_source"]

DEFAULT_MAX_AGE_SECONDS = 300


class SsmRiskPolicySource:
    """A thread-safe ``callable() -> RiskPolicy`` backed by one SSM parameter."""

    def __init__(
        self,
        parameter_name: str,
        *,
        max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
        client: Any = None,
    ) -> None:
        if not parameter_name:
            raise ConfigurationError("RISK_POLICY_PARAMETER is empty")
        self.parameter_name = parameter_name
        self._max_age = max_age_seconds
        self._client = client
        self._provider: SSMProvider | None = None
        self._parsed: tuple[str, RiskPolicy] | None = None
        self._lock = threading.Lock()

    def _get_provider(self) -> SSMProvider:
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SSMProvider

            from call_enricher import aws

            self._provider = SSMProvider(boto3_client=self._client or aws.client("ssm"))
        return self._provider

    def __call__(self) -> RiskPolicy:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
        from botocore.exceptions import ClientError

        with self._lock:  # one read at a time; worker threads share the cached value
            try:
                value = self._get_provider().get(self.parameter_name, max_age=self._max_age)
            except GetParameterError as exc:
                cause = exc.__context__
                if isinstance(cause, ClientError) and cause.response.get("Error", {}).get(
                    "Code"
                ) in ("ParameterNotFound", "ParameterVersionNotFound"):
                    raise ConfigurationError(
                        f"the risk policy parameter {self.parameter_name!r} does not exist"
                    ) from None
                raise AwsUnavailableError(
                    f"could not read the risk policy parameter {self.parameter_name!r}:"
                    f" {type(cause or exc).__name__}"
                ) from None
            text = value if isinstance(value, str) else str(value)
            if self._parsed is not None and self._parsed[0] == text:
                return self._parsed[1]  # validated once per distinct document
            policy = load_policy(text)
            self._parsed = (text, policy)
            return policy


def policy_source(parameter_name: str) -> Callable[[], RiskPolicy]:
    """The policy source for a ``RISK_POLICY_PARAMETER`` value (empty: the default)."""
    if not parameter_name:
        return lambda: DEFAULT_POLICY
    return SsmRiskPolicySource(parameter_name)
