"""The AWS side of the local stack: a moto server on 127.0.0.1 with template.yaml's resources.

:class:`LocalStack` starts moto in server mode (DynamoDB and its streams, SQS, EventBridge,
Secrets Manager) on the loopback interface and creates, from ``template.yaml``'s own
definitions (never re-typed here), the calls table with its stream (the outbox), the queues
(the enrichment queue with its RedrivePolicy to the dead-letter queue, the publisher's
failure queue), the event bus, its archive and the rules with their targets. It adds what
only a local stack needs:

* the Sinch secret, holding the sandbox's credentials (its ARN is the ``SinchSecretArn``
  parameter the functions' ``SINCH_SECRET_ID`` resolves to);
* a *subscriber* queue with a rule on the bus matching every event of ``EventSource``: it
  shows the events consumers would see (``Call Enriched`` and ``Call Enrichment Failed``).

Local differences from a deployment, on purpose:

* the enrichment queue's ``VisibilityTimeout`` is short (:data:`LOCAL_VISIBILITY_TIMEOUT`,
  a few seconds instead of 660 s) so that a failed message reappears quickly;
* queue policies are not created (moto does not enforce them, and the template's
  ``aws:SecureTransport`` deny would refuse the local plain-HTTP endpoint anyway);
* moto keeps the calls table's stream but runs no trigger:
  :class:`~call_enricher_tools.local.streams.StreamPoller` plays the stream publisher's
  mapping (:attr:`LocalStack.stream_trigger`, on :attr:`LocalStack.calls_stream_arn`, giving
  up to :attr:`LocalStack.publisher_failure_queue_url`);
* tracing is off and the Sinch base URL points at the sandbox (``SINCH_BASE_URL``), unless
  the stack is pointed at real Sinch (``sinch_base_url=None``: the template's region).

:meth:`LocalStack.function_environment` is the union of the functions' environment
variables as the template resolves them, plus the local endpoint, fake credentials and the
region; :meth:`LocalStack.apply_environment` installs it in ``os.environ`` for the real
handlers running in this process (and :meth:`LocalStack.stop` restores the previous values).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from call_enricher_tools.local.template import Resolver, Template, TemplateError
from call_enricher_tools.local.webhook import WebhookTarget, authorization_headers

LOOPBACK = "127.0.0.1"
REGION = "eu-west-1"
ACCOUNT_ID = "123456789012"  # moto's default account
DEFAULT_STACK_NAME = "call-enricher-local"
LOCAL_VISIBILITY_TIMEOUT = 3
"""Seconds before a message that failed locally is delivered again (660 s in the template)."""

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto accepts any credentials
    "AWS_SESSION_TOKEN": "testing",
}

_DYNAMIC_REFERENCE = re.compile(r"\{\{resolve:secretsmanager:(.+?):SecretString:([^:}]+)[^}]*\}\}")
"""A CloudFormation dynamic reference to a key of a Secrets Manager secret's JSON."""

_QUEUE_ATTRIBUTES = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "MaximumMessageSize",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
)


class PortInUseError(OSError):
    """A local server could not bind its port (another process holds it)."""

    def __init__(self, what: str, port: int, cause: OSError | None = None) -> None:
        super().__init__(
            f"{what}: port {LOOPBACK}:{port} is already in use "
            f"({cause.strerror if cause else 'address in use'}). Stop the other process "
            f"(`lsof -i :{port}` shows it) or choose another port."
        )
        self.what = what
        self.port = port


@dataclass(frozen=True)
class StreamTrigger:
    """The stream publisher's DynamoDB stream event source mapping, resolved from the template."""

    function: str
    table_logical_id: str
    starting_position: str
    batch_size: int
    batching_window_seconds: float
    bisect_batch_on_function_error: bool
    maximum_retry_attempts: int
    """-1 = until the record expires (Lambda's default)."""
    maximum_record_age_seconds: int
    """-1 = no limit (Lambda's default)."""
    report_batch_item_failures: bool
    on_failure_logical_id: str | None
    """The OnFailure destination queue (None: discarded batches are dropped)."""
    function_timeout_seconds: float


@dataclass(frozen=True)
class SqsTrigger:
    """The queue function's event source mapping, resolved from the template."""

    function: str
    queue_logical_id: str
    batch_size: int
    batching_window_seconds: float
    max_concurrency: int
    function_timeout_seconds: float
    report_batch_item_failures: bool


class LocalStack:
    """moto in server mode with the template's resources. ``start()``, then ``stop()``."""

    def __init__(
        self,
        *,
        sinch_credentials: Any,
        sinch_base_url: str | None,
        parameters: Mapping[str, str] | None = None,
        stack_name: str = DEFAULT_STACK_NAME,
        port: int = 0,
        visibility_timeout_seconds: int = LOCAL_VISIBILITY_TIMEOUT,
        extra_environment: Mapping[str, str] | None = None,
        template: Template | None = None,
        moto_process: bool = False,
        webhook_url: str | None = None,
        webhook_secret: Mapping[str, str] | None = None,
    ) -> None:
        """``sinch_credentials`` (a ``SinchCredentials``) are stored in the local secret;
        ``parameters`` override the template's parameter defaults (e.g.
        ``{"RecheckBaseDelaySeconds": "1"}``; an unknown name or a value the template's
        constraints refuse raises :class:`~call_enricher_tools.local.template.ParameterError`);
        ``port`` 0 picks a free port; ``moto_process`` runs moto in a child process
        (:mod:`~call_enricher_tools.local.moto_process`: a second core for a heavy run);
        ``webhook_url`` turns the template's webhook delivery on (``WebhookEndpoint``, plain
        HTTP on 127.0.0.1 allowed here), with ``webhook_secret`` stored as its secret
        (``WebhookSecretArn``): :attr:`webhook_targets` are then what
        :class:`~call_enricher_tools.local.webhook.WebhookDelivery` plays."""
        self.template = template or Template.load()
        self.template.check_parameters(parameters or {})  # a typo or bad value fails here
        self.stack_name = stack_name
        self.sinch_credentials = sinch_credentials
        self.sinch_base_url = sinch_base_url
        self.port = port
        self.visibility_timeout_seconds = visibility_timeout_seconds
        self.extra_environment = dict(extra_environment or {})
        self.moto_process = moto_process
        self.parameters = {
            **self.template.parameter_defaults(),
            "Tracing": "Disabled",
            **dict(parameters or {}),
        }
        self._server: Any = None
        self._endpoint_url: str | None = None
        self._resolver: Resolver | None = None
        self._saved_environment: dict[str, str | None] | None = None
        self.trigger = self._resolve_trigger()
        self.stream_trigger = self._resolve_stream_trigger()
        self.subscriber_queue_url = ""
        self.secret_arn = ""
        self.webhook_secret = dict(webhook_secret or {})
        if webhook_url is not None:
            # set here, not checked: the template's pattern wants https://, the local
            # receiver is plain HTTP on 127.0.0.1
            self.parameters["WebhookEndpoint"] = webhook_url
        self.webhook_targets: list[WebhookTarget] = []
        self._api_destinations: dict[str, dict[str, Any]] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Start moto on 127.0.0.1 and create the resources (takes well under a second)."""
        from moto.server import ThreadedMotoServer

        from call_enricher_tools.local.moto_patches import patch_moto

        patch_moto()  # conditional writes and stream records, one at a time
        # moto's server logs every request through werkzeug; keep the console readable.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        _check_port_free("moto server (AWS)", self.port)
        server: Any
        if self.moto_process:
            from call_enricher_tools.local.moto_process import MotoProcess

            server = MotoProcess(self.port)
        else:
            server = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self._endpoint_url = f"http://{host}:{port}"
        try:
            self._create_resources()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop moto and restore the environment variables :meth:`apply_environment` set."""
        self.restore_environment()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- where things are ----------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("LocalStack is not started")
        return self._endpoint_url

    @property
    def resolver(self) -> Resolver:
        if self._resolver is None:
            raise RuntimeError("LocalStack is not started")
        return self._resolver

    def ref(self, logical_id: str) -> str:
        """What ``!Ref`` of a resource or parameter gives locally (queue URL, table name...)."""
        return str(self.resolver.resolve({"Ref": logical_id}))

    def attribute(self, logical_id: str, name: str) -> str:
        """What ``!GetAtt logical_id.name`` gives locally (``Arn``, ``QueueName``...)."""
        return str(self.resolver.resolve({"Fn::GetAtt": [logical_id, name]}))

    @property
    def queue_url(self) -> str:
        """The enrichment queue (the queue function's event source)."""
        return self.ref(self.trigger.queue_logical_id)

    @property
    def queue_arn(self) -> str:
        return self.attribute(self.trigger.queue_logical_id, "Arn")

    @property
    def dead_letter_queue_url(self) -> str:
        """The queue the enrichment queue's RedrivePolicy names."""
        policy = self._queue_properties(self.trigger.queue_logical_id).get("RedrivePolicy")
        if not policy:
            raise RuntimeError("the enrichment queue has no RedrivePolicy")
        target = policy["deadLetterTargetArn"]
        return self.ref(str(target["Fn::GetAtt"][0]))

    def require_stream_trigger(self) -> StreamTrigger:
        """The stream mapping (raises when no function of the template has one)."""
        if self.stream_trigger is None:
            raise RuntimeError("no function of the template is triggered by a table's stream")
        return self.stream_trigger

    @property
    def calls_stream_arn(self) -> str:
        """The ARN of the calls table's stream (what triggers the stream publisher)."""
        return self.attribute(self.require_stream_trigger().table_logical_id, "StreamArn")

    @property
    def publisher_failure_queue_url(self) -> str:
        """The stream mapping's OnFailure queue (where given-up batches are recorded)."""
        on_failure = self.require_stream_trigger().on_failure_logical_id
        if on_failure is None:
            raise RuntimeError("the stream mapping has no OnFailure destination")
        return self.ref(on_failure)

    def outputs(self) -> dict[str, str]:
        """The template's Outputs that resolve locally (API URLs do not: the API is ours)."""
        resolved: dict[str, str] = {}
        for name, spec in self.template.raw.get("Outputs", {}).items():
            try:
                resolved[name] = str(self.resolver.resolve(spec["Value"]))
            except Exception:  # noqa: BLE001, S112 - an output naming the API Gateway
                continue
        return resolved

    # -- environment of the functions ----------------------------------------------------

    def function_environment(self) -> dict[str, str]:
        """The environment the real handlers run with locally (all functions, merged)."""
        env: dict[str, str] = {}
        for name in self.template.of_type("AWS::Serverless::Function"):
            properties = self.template.function_properties(name)
            variables = self.resolver.resolve(properties.get("Environment", {})).get(
                "Variables", {}
            )
            for key, value in variables.items():
                text = _env_text(value)
                if env.get(key, text) != text:
                    raise RuntimeError(f"functions disagree on {key}: cannot share one process")
                env[key] = text
            level = self.resolver.resolve(
                properties.get("LoggingConfig", {}).get("ApplicationLogLevel")
            )
            if level:
                env["AWS_LAMBDA_LOG_LEVEL"] = str(level)
        env.update(
            {
                **FAKE_CREDENTIALS,
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_EC2_METADATA_DISABLED": "true",
                **self.extra_environment,
            }
        )
        if self.sinch_base_url:
            env["SINCH_BASE_URL"] = self.sinch_base_url
        return env

    def apply_environment(self) -> dict[str, str]:
        """Install :meth:`function_environment` in ``os.environ`` and drop cached clients,
        settings and services so the handlers rebuild them from it. Returns the variables."""
        from call_enricher import aws, outbox, runtime, settings

        env = self.function_environment()
        if self._saved_environment is None:
            self._saved_environment = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        os.environ.pop("AWS_PROFILE", None)
        settings.get_settings.cache_clear()
        runtime.set_service(None)
        outbox.set_outbox(None)  # both rebuilt from this environment on next use
        aws.reset_clients()
        return env

    def restore_environment(self) -> None:
        """Put back the variables :meth:`apply_environment` changed."""
        saved, self._saved_environment = self._saved_environment, None
        if saved is None:
            return
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        from call_enricher import aws, outbox, runtime, settings

        settings.get_settings.cache_clear()
        runtime.set_service(None)
        outbox.set_outbox(None)
        aws.reset_clients()

    # -- clients and views ----------------------------------------------------------------

    def client(self, service: str) -> Any:
        """A boto3 client for the local endpoint (independent of ``os.environ``)."""
        import boto3

        client: Any = boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
        )
        return client

    def receive_events(self, *, wait_seconds: int = 0) -> list[dict[str, Any]]:
        """Drain the subscriber queue: the EventBridge envelopes delivered so far."""
        sqs = self.client("sqs")
        envelopes: list[dict[str, Any]] = []
        wait = wait_seconds
        while True:
            messages = sqs.receive_message(
                QueueUrl=self.subscriber_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
            ).get("Messages", [])
            if not messages:
                return envelopes
            wait = 0
            envelopes.extend(json.loads(message["Body"]) for message in messages)
            sqs.delete_message_batch(
                QueueUrl=self.subscriber_queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )

    def queue_depth(self, queue_url: str) -> int:
        """Visible + in-flight + delayed messages of a queue."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=names
        )["Attributes"]
        return sum(int(attributes.get(name, 0)) for name in names)

    def stored_item(self, call_id: str) -> dict[str, Any] | None:
        """The calls-table item of ``call_id`` as plain Python values, or None."""
        from boto3.dynamodb.types import TypeDeserializer

        table = self.ref("CallsTable")
        raw = (
            self.client("dynamodb")
            .get_item(TableName=table, Key={"callId": {"S": call_id}}, ConsistentRead=True)
            .get("Item")
        )
        if raw is None:
            return None
        deserializer = TypeDeserializer()
        return {key: deserializer.deserialize(value) for key, value in raw.items()}

    # -- creation ------------------------------------------------------------------------

    def _resolve_trigger(self) -> SqsTrigger:
        function = self.template.function_with_sqs_trigger()
        queue, properties = self.template.sqs_trigger(function)
        resolver = Resolver(self.template.raw, self.parameters, self._pseudo())
        resolved = resolver.resolve({k: v for k, v in properties.items() if k != "Queue"})
        timeout = self.template.function_properties(function).get("Timeout", 3)
        return SqsTrigger(
            function=function,
            queue_logical_id=queue,
            batch_size=int(resolved.get("BatchSize", 10)),
            batching_window_seconds=float(resolved.get("MaximumBatchingWindowInSeconds", 0)),
            max_concurrency=int(resolved.get("ScalingConfig", {}).get("MaximumConcurrency", 2)),
            function_timeout_seconds=float(resolver.resolve(timeout)),
            report_batch_item_failures="ReportBatchItemFailures"
            in resolved.get("FunctionResponseTypes", []),
        )

    def _resolve_stream_trigger(self) -> StreamTrigger | None:
        function = self.template.function_with_stream_trigger()
        if function is None:
            return None
        table, properties = self.template.stream_trigger(function)
        resolver = Resolver(self.template.raw, self.parameters, self._pseudo())
        resolved = resolver.resolve(
            {k: v for k, v in properties.items() if k not in ("Stream", "DestinationConfig")}
        )
        destination = properties.get("DestinationConfig", {}).get("OnFailure", {})
        target = destination.get("Destination")
        on_failure: str | None = None
        if target is not None:
            if not (isinstance(target, dict) and "Fn::GetAtt" in target):
                raise RuntimeError(f"{function}: OnFailure.Destination is not !GetAtt X.Arn")
            on_failure = str(target["Fn::GetAtt"][0])
            if self.template.resources[on_failure]["Type"] != "AWS::SQS::Queue":
                raise RuntimeError(f"{function}: only an SQS OnFailure destination runs locally")
        timeout = self.template.function_properties(function).get("Timeout", 3)
        return StreamTrigger(
            function=function,
            table_logical_id=table,
            starting_position=str(resolved.get("StartingPosition", "TRIM_HORIZON")),
            batch_size=int(resolved.get("BatchSize", 100)),
            batching_window_seconds=float(resolved.get("MaximumBatchingWindowInSeconds", 0)),
            bisect_batch_on_function_error=_truthy(
                resolved.get("BisectBatchOnFunctionError", False)
            ),
            maximum_retry_attempts=int(resolved.get("MaximumRetryAttempts", -1)),
            maximum_record_age_seconds=int(resolved.get("MaximumRecordAgeInSeconds", -1)),
            report_batch_item_failures="ReportBatchItemFailures"
            in resolved.get("FunctionResponseTypes", []),
            on_failure_logical_id=on_failure,
            function_timeout_seconds=float(resolver.resolve(timeout)),
        )

    def _pseudo(self) -> dict[str, str]:
        return {
            "AWS::StackName": self.stack_name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    def _single(self, resource_type: str) -> str:
        (logical_id,) = self.template.of_type(resource_type)
        return logical_id

    def _queue_properties(self, logical_id: str) -> dict[str, Any]:
        properties: dict[str, Any] = self.template.resources[logical_id].get("Properties", {})
        return properties

    def _create_resources(self) -> None:
        resolver = Resolver(self.template.raw, self.parameters, self._pseudo())
        self._resolver = resolver
        self._create_secret(resolver)
        self._create_template_secrets(resolver)
        self._create_webhook_secret(resolver)
        self._create_queues(resolver)
        self._create_tables(resolver)
        self._create_buses(resolver)
        self._create_archives(resolver)
        self._create_api_destinations(resolver)
        self._create_rules(resolver)
        self._create_subscriber(resolver)

    def _of_type(self, resolver: Resolver, resource_type: str) -> dict[str, dict[str, Any]]:
        """The template's resources of a type that its Conditions create."""
        return {
            logical_id: spec
            for logical_id, spec in self.template.of_type(resource_type).items()
            if "Condition" not in spec or resolver.condition(spec["Condition"])
        }

    def _create_secret(self, resolver: Resolver) -> None:
        credentials = self.sinch_credentials
        self.secret_arn = self.client("secretsmanager").create_secret(
            Name=f"{self.stack_name}/sinch",
            Description="Sinch sandbox credentials (local stack)",
            SecretString=json.dumps(
                {
                    "applicationKey": credentials.application_key,
                    "applicationSecret": credentials.application_secret,
                }
            ),
        )["ARN"]
        resolver.parameters["SinchSecretArn"] = self.secret_arn

    def _create_template_secrets(self, resolver: Resolver) -> None:
        """The template's own secrets (e.g. the spend watch's HMAC key), with a random value
        as ``GenerateSecretString`` would make one."""
        import secrets as random_secrets

        client = self.client("secretsmanager")
        for logical_id in self._of_type(resolver, "AWS::SecretsManager::Secret"):
            arn = client.create_secret(
                Name=f"{self.stack_name}/{logical_id}",
                SecretString=random_secrets.token_urlsafe(36),
            )["ARN"]
            resolver.refs[logical_id] = arn

    def _create_webhook_secret(self, resolver: Resolver) -> None:
        if not self.webhook_secret:
            return
        arn = self.client("secretsmanager").create_secret(
            Name=f"{self.stack_name}/webhook",
            Description="the local webhook receiver's credentials (local stack)",
            SecretString=json.dumps(self.webhook_secret),
        )["ARN"]
        resolver.parameters["WebhookSecretArn"] = arn

    def _dynamic_references(self, value: Any) -> Any:
        """``{{resolve:secretsmanager:ID:SecretString:KEY}}`` replaced by the secret's value,
        as CloudFormation resolves them when it creates the resource."""
        if isinstance(value, dict):
            return {k: self._dynamic_references(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._dynamic_references(v) for v in value]
        if not isinstance(value, str):
            return value

        def resolve(match: re.Match[str]) -> str:
            secret_id, key = match.group(1), match.group(2)
            text = self.client("secretsmanager").get_secret_value(SecretId=secret_id)
            return str(json.loads(text["SecretString"])[key])

        resolved = _DYNAMIC_REFERENCE.sub(resolve, value)
        if "{{resolve:" in resolved:  # e.g. WebhookSecretArn empty: never send the literal
            raise TemplateError(f"cannot resolve the dynamic reference in {value!r}")
        return resolved

    def _create_api_destinations(self, resolver: Resolver) -> None:
        """Connections (their auth resolved from the secret) and API destinations."""
        events = self.client("events")
        connections: dict[str, dict[str, Any]] = {}
        for logical_id, spec in self._of_type(resolver, "AWS::Events::Connection").items():
            properties = self._dynamic_references(resolver.resolve(spec["Properties"]))
            name = f"{self.stack_name}-{logical_id}"[:64]
            arn = events.create_connection(
                Name=name,
                AuthorizationType=properties["AuthorizationType"],
                AuthParameters=properties["AuthParameters"],
            )["ConnectionArn"]
            resolver.refs[logical_id] = name
            resolver.attributes[(logical_id, "Arn")] = arn
            connections[arn] = properties
        for logical_id, spec in self._of_type(resolver, "AWS::Events::ApiDestination").items():
            properties = resolver.resolve(spec["Properties"])
            name = f"{self.stack_name}-{logical_id}"[:64]
            connection = connections[properties["ConnectionArn"]]
            arn = events.create_api_destination(
                Name=name,
                ConnectionArn=properties["ConnectionArn"],
                InvocationEndpoint=properties["InvocationEndpoint"],
                HttpMethod=properties["HttpMethod"],
                InvocationRateLimitPerSecond=int(properties["InvocationRateLimitPerSecond"]),
            )["ApiDestinationArn"]
            resolver.refs[logical_id] = name
            resolver.attributes[(logical_id, "Arn")] = arn
            self._api_destinations[arn] = {
                "endpoint": str(properties["InvocationEndpoint"]),
                "method": str(properties["HttpMethod"]),
                "rate": float(properties["InvocationRateLimitPerSecond"]),
                "headers": authorization_headers(
                    str(connection["AuthorizationType"]), connection["AuthParameters"]
                ),
            }

    def _webhook_outbox(self, rule_name: str, rule_arn: str, target: dict[str, Any]) -> str:
        """An API destination target becomes a local queue that WebhookDelivery drains."""
        sqs = self.client("sqs")
        name = f"{rule_name}-{target['Id']}-local-outbox"[-80:]
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        destination = self._api_destinations[target["Arn"]]
        retry = target.get("RetryPolicy", {})
        dead_letter = target.get("DeadLetterConfig", {}).get("Arn")
        self.webhook_targets.append(
            WebhookTarget(
                rule_name=rule_name,
                rule_arn=rule_arn,
                target_arn=str(target["Arn"]),
                endpoint=destination["endpoint"],
                method=destination["method"],
                rate_limit_per_second=destination["rate"],
                headers=destination["headers"],
                max_retry_attempts=int(retry.get("MaximumRetryAttempts", 185)),
                max_event_age_seconds=float(retry.get("MaximumEventAgeInSeconds", 86400)),
                outbox_url=url,
                dead_letter_url=self._queue_url_of_arn(str(dead_letter)) if dead_letter else None,
            )
        )
        return str(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
        )

    def _queue_url_of_arn(self, arn: str) -> str:
        for (logical_id, name), value in self.resolver.attributes.items():
            if name == "Arn" and value == arn:
                return self.ref(logical_id)
        raise KeyError(f"no queue of the template has the ARN {arn}")

    def _create_queues(self, resolver: Resolver) -> None:
        sqs = self.client("sqs")
        queues = self._of_type(resolver, "AWS::SQS::Queue")
        for logical_id, spec in queues.items():
            properties = resolver.resolve(
                {k: v for k, v in spec.get("Properties", {}).items() if k != "RedrivePolicy"}
            )
            attributes = {k: _attr(properties[k]) for k in _QUEUE_ATTRIBUTES if k in properties}
            if logical_id == self.trigger.queue_logical_id:
                attributes["VisibilityTimeout"] = str(self.visibility_timeout_seconds)
            name = str(properties.get("QueueName") or f"{self.stack_name}-{logical_id}")
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            resolver.refs[logical_id] = url
            resolver.attributes[(logical_id, "Arn")] = arn
            resolver.attributes[(logical_id, "QueueName")] = name
            resolver.attributes[(logical_id, "QueueUrl")] = url
        for logical_id, spec in queues.items():  # now every DLQ's ARN is known
            policy = spec.get("Properties", {}).get("RedrivePolicy")
            if policy:
                sqs.set_queue_attributes(
                    QueueUrl=resolver.refs[logical_id],
                    Attributes={"RedrivePolicy": json.dumps(resolver.resolve(policy))},
                )

    def _create_tables(self, resolver: Resolver) -> None:
        dynamodb = self.client("dynamodb")
        for logical_id, spec in self._of_type(resolver, "AWS::DynamoDB::Table").items():
            properties = resolver.resolve(spec["Properties"])
            name = str(properties.get("TableName") or f"{self.stack_name}-{logical_id}")
            arguments: dict[str, Any] = {
                "TableName": name,
                "AttributeDefinitions": properties["AttributeDefinitions"],
                "KeySchema": properties["KeySchema"],
                "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
            }
            for optional in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
                if optional in properties:
                    arguments[optional] = properties[optional]
            stream = properties.get("StreamSpecification")
            if stream:  # CloudFormation's form has no StreamEnabled; the API's needs it
                arguments["StreamSpecification"] = {
                    "StreamEnabled": True,
                    "StreamViewType": stream["StreamViewType"],
                }
            description = dynamodb.create_table(**arguments)["TableDescription"]
            arn = description["TableArn"]
            if stream:
                resolver.attributes[(logical_id, "StreamArn")] = description["LatestStreamArn"]
            ttl = properties.get("TimeToLiveSpecification")
            if ttl and _truthy(ttl.get("Enabled")):
                dynamodb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={
                        "AttributeName": ttl["AttributeName"],
                        "Enabled": True,
                    },
                )
            resolver.refs[logical_id] = name
            resolver.attributes[(logical_id, "Arn")] = arn

    def _create_buses(self, resolver: Resolver) -> None:
        events = self.client("events")
        for logical_id, spec in self._of_type(resolver, "AWS::Events::EventBus").items():
            name = str(resolver.resolve(spec["Properties"]["Name"]))
            arn = events.create_event_bus(Name=name)["EventBusArn"]
            resolver.refs[logical_id] = name
            resolver.attributes[(logical_id, "Arn")] = arn
            resolver.attributes[(logical_id, "Name")] = name

    def _create_archives(self, resolver: Resolver) -> None:
        events = self.client("events")
        for logical_id, spec in self._of_type(resolver, "AWS::Events::Archive").items():
            properties = resolver.resolve(spec["Properties"])
            name = str(properties.get("ArchiveName") or f"{self.stack_name}-{logical_id}")[:48]
            arguments: dict[str, Any] = {
                "ArchiveName": name,
                "EventSourceArn": properties["SourceArn"],
            }
            if "EventPattern" in properties:
                arguments["EventPattern"] = json.dumps(properties["EventPattern"])
            if "RetentionDays" in properties:
                arguments["RetentionDays"] = int(properties["RetentionDays"])
            if "Description" in properties:
                arguments["Description"] = properties["Description"]
            arn = events.create_archive(**arguments)["ArchiveArn"]
            resolver.refs[logical_id] = name
            resolver.attributes[(logical_id, "Arn")] = arn

    def _create_rules(self, resolver: Resolver) -> None:
        events = self.client("events")
        for logical_id, spec in self._of_type(resolver, "AWS::Events::Rule").items():
            # roles are not created locally (IAM is not enforced): a target's RoleArn goes
            unresolved = dict(spec["Properties"])
            unresolved["Targets"] = [
                {k: v for k, v in target.items() if k != "RoleArn"}
                for target in unresolved.get("Targets", [])
            ]
            properties = resolver.resolve(unresolved)
            name = str(properties.get("Name") or f"{self.stack_name}-{logical_id}")[:64]
            bus = str(properties.get("EventBusName", "default"))
            arn = events.put_rule(
                Name=name,
                EventBusName=bus,
                EventPattern=json.dumps(properties["EventPattern"]),
                State=properties.get("State", "ENABLED"),
                Description=properties.get("Description", ""),
            )["RuleArn"]
            resolver.refs[logical_id] = name
            resolver.attributes[(logical_id, "Arn")] = arn
            targets = [
                {"Id": target["Id"], "Arn": self._webhook_outbox(name, arn, target)}
                if target["Arn"] in self._api_destinations
                else target
                for target in properties.get("Targets", [])
            ]
            if targets:
                events.put_targets(Rule=name, EventBusName=bus, Targets=targets)

    def _create_subscriber(self, resolver: Resolver) -> None:
        sqs = self.client("sqs")
        events = self.client("events")
        name = f"{self.stack_name}-local-subscriber"
        self.subscriber_queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(
            QueueUrl=self.subscriber_queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        bus = self.ref(self._single("AWS::Events::EventBus"))
        source = self.parameters["EventSource"]
        events.put_rule(
            Name=name,
            EventBusName=bus,
            EventPattern=json.dumps({"source": [source]}),
            State="ENABLED",
            Description="local stack: every event of the service, as consumers see them",
        )
        events.put_targets(
            Rule=name, EventBusName=bus, Targets=[{"Id": "local-subscriber", "Arn": arn}]
        )


def _attr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_port_free(what: str, port: int) -> None:
    """Raise :class:`PortInUseError` when ``port`` (not 0) cannot be bound on 127.0.0.1."""
    if port == 0:
        return
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            raise PortInUseError(what, port, exc) from None
