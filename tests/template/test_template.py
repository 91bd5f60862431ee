"""template.yaml: structure, least privilege, wiring to the code, sample events, and the SAM
tools' verdicts (sam validate / --lint, cfn-lint, checkov, sam build of an arm64 layer).

The structural tests read the template as data (fast, no AWS, no SAM). The `slow` ones run the
tools of `.venv-sam` (`make sam-setup`) offline: no credentials, a region set.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import re
import tomllib
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from call_enricher.errors import ConfigurationError
from call_enricher.settings import Settings

from .conftest import (
    REGION,
    REPO,
    TEMPLATE_PATH,
    Template,
    offline_env,
    run_tool,
)

EVENTS = REPO / "events"
LIBRARY = REPO / "layers" / "core"

# Powertools reads these itself (call_enricher.settings docstring), and
# call_enricher.observability reads XRAY_SDK (the opt-in X-Ray SDK) before any settings exist;
# anything else the template sets must be a Settings field.
POWERTOOLS_VARS = frozenset(
    {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "POWERTOOLS_TRACE_DISABLED",
        "POWERTOOLS_LOG_LEVEL",
        "XRAY_SDK",
    }
)

# What each function must be given. The resources (table, queue, bus, secret) have no safe
# default in Settings (their defaults are placeholders for local runs, not the stack's
# resources); the rest are the tunables the template exposes as parameters. Only the stream
# publisher is told about the bus: the table is the outbox, and nothing else publishes.
NEEDS: dict[str, frozenset[str]] = {
    "QueueEnricherFunction": frozenset(
        {
            "CALLS_TABLE_NAME",
            "ENRICHMENT_QUEUE_URL",
            "SINCH_SECRET_ID",
            "EVENT_SOURCE",
            "SINCH_REGION",
            "SINCH_AUTH_SCHEME",
            "WORKER_THREADS",
            "RECHECK_BASE_DELAY_SECONDS",
            "RECHECK_MAX_AGE_SECONDS",
            "FINAL_FRESHNESS_SECONDS",
            "RECORD_TTL_DAYS",
            "RISK_POLICY_PARAMETER",
        }
    ),
    "HttpApiFunction": frozenset(
        {
            "CALLS_TABLE_NAME",
            "ENRICHMENT_QUEUE_URL",
            "SINCH_SECRET_ID",
            "EVENT_SOURCE",
            "SINCH_REGION",
            "SINCH_AUTH_SCHEME",
            "RECHECK_BASE_DELAY_SECONDS",
            "RECHECK_MAX_AGE_SECONDS",
            "FINAL_FRESHNESS_SECONDS",
            "RECORD_TTL_DAYS",
            "RISK_POLICY_PARAMETER",
        }
    ),
    "SinchCallbacksFunction": frozenset(
        {"ENRICHMENT_QUEUE_URL", "SINCH_SECRET_ID", "SINCH_CALLBACK_PATH"}
    ),
    "StreamPublisherFunction": frozenset(
        {
            "CALLS_TABLE_NAME",
            "EVENT_BUS_NAME",
            "EVENT_SOURCE",
            "RISK_POLICY_PARAMETER",
            "SPEND_TABLE_NAME",
            "SPEND_NUMBER_KEY_SECRET_ID",
        }
    ),
}

# The one function that may publish events, and the table whose stream triggers it.
PUBLISHER = "StreamPublisherFunction"

EXPECTED_ROUTES = {
    ("POST", "/calls"): ("HttpApiFunction", "AWS_IAM"),
    ("GET", "/calls"): ("HttpApiFunction", "AWS_IAM"),
    ("GET", "/calls/{callId}"): ("HttpApiFunction", "AWS_IAM"),
    ("POST", "/calls/{callId}/enrich"): ("HttpApiFunction", "AWS_IAM"),
    ("GET", "/openapi.json"): ("HttpApiFunction", "AWS_IAM"),
    ("POST", "/sinch/callbacks"): ("SinchCallbacksFunction", "NONE"),
}

# Actions that have no resource-level permissions, so "*" is the only possible Resource.
STAR_RESOURCE_ACTIONS = frozenset(
    {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "cloudwatch:PutMetricData"}
)

# What the event source mapping itself needs on the queue that triggers a function.
SQS_POLLER_ACTIONS = frozenset(
    {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
)
# What a DynamoDB stream event source mapping needs on the stream that triggers a function,
# and on its OnFailure queue (Lambda sends there with the function's role).
STREAM_POLLER_ACTIONS = frozenset(
    {
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
    }
)
ON_FAILURE_ACTIONS = frozenset({"sqs:SendMessage"})

# boto3 client method -> the IAM action it needs (batch variants are authorised by the single).
BOTO3_ACTIONS = {
    "get_item": "dynamodb:GetItem",
    "batch_get_item": "dynamodb:BatchGetItem",
    "update_item": "dynamodb:UpdateItem",
    "put_item": "dynamodb:PutItem",
    "delete_item": "dynamodb:DeleteItem",
    "batch_write_item": "dynamodb:BatchWriteItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "send_message": "sqs:SendMessage",
    "send_message_batch": "sqs:SendMessage",
    "receive_message": "sqs:ReceiveMessage",
    "delete_message": "sqs:DeleteMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility": "sqs:ChangeMessageVisibility",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "get_queue_attributes": "sqs:GetQueueAttributes",
    "get_queue_url": "sqs:GetQueueUrl",
    "put_events": "events:PutEvents",
    "get_secret_value": "secretsmanager:GetSecretValue",
    # each item of a transaction is authorised as its own action: the spend watch's are
    # conditional Puts (markers) and Updates (ADDs), both found by their own names too
    "transact_write_items": "dynamodb:PutItem",
}
# Powertools Parameters reads secrets with GetSecretValue, parameters with GetParameter.
TEXT_ACTIONS = {
    "SecretsProvider": "secretsmanager:GetSecretValue",
    "SSMProvider": "ssm:GetParameter",
}

NAME_PROPERTIES = frozenset(
    {
        "TableName",
        "QueueName",
        "Name",
        "LogGroupName",
        "LayerName",
        "FunctionName",
        "RoleName",
        "TopicName",
        "ArchiveName",
        "AlarmName",
        "RuleName",
        "StageName",
    }
)

# The test-only Sinch credentials that sign events/sinch-dice-callback.json (events/README.md).
TEST_APPLICATION_KEY = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
TEST_APPLICATION_SECRET = "Y2FsbC1lbnJpY2hlciB0ZXN0IHNlY3JldCwgbmV2ZXIgcmVhbA=="


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def refs(value: Any) -> set[str]:
    """Logical names (resources or parameters) a value refers to: Ref, GetAtt, ${...} in Sub."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        if "Ref" in value:
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
        for item in value.values():
            found |= refs(item)
    elif isinstance(value, list):
        for item in value:
            found |= refs(item)
    return {name for name in found if not name.startswith("AWS::")}


def statements(template: Template, role_name: str) -> list[dict[str, Any]]:
    """A role's inline policy statements; conditional ones (Fn::If) are unwrapped."""
    result: list[dict[str, Any]] = []
    for policy in template.resources[role_name]["Properties"].get("Policies", []):
        for statement in as_list(policy["PolicyDocument"]["Statement"]):
            if isinstance(statement, Mapping) and "Fn::If" in statement:
                result.extend(b for b in statement["Fn::If"][1:] if b != {"Ref": "AWS::NoValue"})
            else:
                result.append(statement)
    return result


def role_of(function: Mapping[str, Any]) -> str:
    role = function["Role"]
    assert "Fn::GetAtt" in role, "each function has its own role from this template"
    return str(role["Fn::GetAtt"][0])


def granted_actions(template: Template, function: Mapping[str, Any]) -> set[str]:
    return {a for s in statements(template, role_of(function)) for a in as_list(s["Action"])}


def sqs_events(function: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: event["Properties"]
        for name, event in function.get("Events", {}).items()
        if event["Type"] == "SQS"
    }


def stream_events(function: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: event["Properties"]
        for name, event in function.get("Events", {}).items()
        if event["Type"] == "DynamoDB"
    }


def trigger_streams(function: Mapping[str, Any]) -> set[str]:
    """Tables whose stream (``!GetAtt T.StreamArn``) triggers the function."""
    return {e["Stream"]["Fn::GetAtt"][0] for e in stream_events(function).values()}


def on_failure_queues(function: Mapping[str, Any]) -> set[str]:
    """Queues named as a stream mapping's OnFailure destination."""
    return {
        e["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
        for e in stream_events(function).values()
        if "DestinationConfig" in e
    }


def sample_value(
    value: Any, template: Template, choose: Callable[[str, dict[str, Any]], Any] | None = None
) -> str:
    """A plausible deployed value of an environment variable (parameters at their default)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | str):
        return str(value)
    if "Ref" in value:
        name = value["Ref"]
        if name in template.parameters:
            parameter = template.parameters[name]
            chosen = choose(name, parameter) if choose else parameter.get("Default")
            if chosen is None:  # no default: SinchSecretArn
                return "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sinch-AbCdEf"
            return str(chosen)
        kind = template.resources[name]["Type"]
        samples = {
            "AWS::DynamoDB::Table": "call-enricher-dev-CallsTable-1A2B3C4D5E6F",
            "AWS::SQS::Queue": f"https://sqs.{REGION}.amazonaws.com/123456789012/q-1A2B3C",
            "AWS::Events::EventBus": "call-enricher-dev-calls",
        }
        return samples.get(kind, str(name))
    if "Fn::Sub" in value:
        return re.sub(r"\$\{[^}]+\}", "x", value["Fn::Sub"])
    if "Fn::If" in value:
        return sample_value(value["Fn::If"][1], template, choose)
    raise AssertionError(f"cannot resolve {value!r}")


def environment(function: Mapping[str, Any]) -> dict[str, Any]:
    return dict(function.get("Environment", {}).get("Variables", {}))


def resolved_env(
    template: Template,
    function: Mapping[str, Any],
    choose: Callable[[str, dict[str, Any]], Any] | None = None,
) -> dict[str, str]:
    return {k: sample_value(v, template, choose) for k, v in environment(function).items()}


def find_queue_pair(template: Template) -> tuple[str, str, dict[str, Any]]:
    """(enrichment queue, its DLQ, the redrive policy)."""
    for name, queue in template.of_type("AWS::SQS::Queue").items():
        redrive = queue["Properties"].get("RedrivePolicy")
        if redrive:
            return name, redrive["deadLetterTargetArn"]["Fn::GetAtt"][0], redrive
    raise AssertionError("no queue has a RedrivePolicy")


def signed_callback_signature(event: Mapping[str, Any], secret_b64: str, path: str) -> str:
    body = event["body"]
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    headers = event["headers"]
    md5 = base64.b64encode(hashlib.md5(raw).digest()).decode()  # noqa: S324 - Sinch's scheme
    to_sign = (
        f"{event['requestContext']['http']['method']}\n{md5}\n{headers['content-type']}\n"
        f"x-timestamp:{headers['x-timestamp']}\n{path}"
    )
    digest = hmac.new(base64.b64decode(secret_b64), to_sign.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def load_event(name: str) -> dict[str, Any]:
    data = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def sinch_sample_call_ids() -> set[str]:
    ids = set()
    for path in (EVENTS / "sinch").glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("callId"), str):
            ids.add(data["callId"])
    return ids


# --------------------------------------------------------------------------------------------
# runtime, layer, logging
# --------------------------------------------------------------------------------------------


def test_the_template_is_sam_and_declares_four_functions(template: Template) -> None:
    # Given template.yaml read with CloudFormation's short-form tags
    # Then it is a SAM template with exactly the four handlers of the architecture
    assert template.raw["Transform"] == "AWS::Serverless-2016-10-31"
    assert set(template.functions) == set(NEEDS)


def test_every_function_runs_python313_on_arm64_with_the_core_layer(template: Template) -> None:
    layer = next(iter(template.of_type("AWS::Serverless::LayerVersion")))
    for name, function in template.functions.items():
        assert function["Runtime"] == "python3.13", name
        assert function["Architectures"] == ["arm64"], name
        assert {"Ref": layer} in function["Layers"], name
        assert function["Handler"] == "app.lambda_handler", name
        code = REPO / function["CodeUri"]
        assert code.is_dir(), name
        assert code.parent == REPO / "functions", name


def test_the_layer_is_built_for_arm64_python313(template: Template) -> None:
    layers = template.of_type("AWS::Serverless::LayerVersion")
    assert list(layers) == ["CoreLayer"]
    layer = layers["CoreLayer"]
    # Without BuildArchitecture SAM builds for the build machine (x86_64 wheels on arm64).
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}
    props = layer["Properties"]
    assert props["CompatibleRuntimes"] == ["python3.13"]
    assert props["CompatibleArchitectures"] == ["arm64"]
    content = REPO / props["ContentUri"]
    assert (content / "requirements.txt").is_file()
    assert (content / "call_enricher" / "__init__.py").is_file()


def test_json_logging_level_from_a_parameter_and_switchable_tracing(template: Template) -> None:
    logging_config = template.function_globals["LoggingConfig"]
    assert logging_config["LogFormat"] == "JSON"
    assert logging_config["ApplicationLogLevel"] == {"Ref": "LogLevel"}
    assert template.function_globals["Tracing"] == {
        "Fn::If": ["TracingEnabled", "Active", "PassThrough"]
    }
    assert template.raw["Conditions"]["TracingEnabled"] == {
        "Fn::Equals": [{"Ref": "Tracing"}, "Enabled"]
    }
    # Powertools must not try to trace when X-Ray is off (and need not import it).
    trace_disabled = template.function_globals["Environment"]["Variables"]
    assert trace_disabled["POWERTOOLS_TRACE_DISABLED"] == {
        "Fn::If": ["TracingEnabled", "false", "true"]
    }


def test_every_function_logs_to_its_own_log_group_with_retention(template: Template) -> None:
    groups = template.of_type("AWS::Logs::LogGroup")
    seen = set()
    for name, function in template.functions.items():
        group = function["LoggingConfig"]["LogGroup"]["Ref"]
        assert group in groups, name
        assert group not in seen, f"{name} shares a log group"
        seen.add(group)
        assert groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        # and its role may write there, and nowhere else
        log_statements = [
            s
            for s in statements(template, role_of(function))
            if any(str(a).startswith("logs:") for a in as_list(s["Action"]))
        ]
        assert len(log_statements) == 1, name
        assert set(as_list(log_statements[0]["Action"])) == {
            "logs:CreateLogStream",
            "logs:PutLogEvents",
        }
        assert log_statements[0]["Resource"] == {"Fn::GetAtt": [group, "Arn"]}


# --------------------------------------------------------------------------------------------
# configuration: environment variables <-> call_enricher.settings.Settings
# --------------------------------------------------------------------------------------------


def test_every_environment_variable_is_a_settings_field_or_a_powertools_one(
    template: Template,
) -> None:
    # Given the names Settings reads and the names Powertools reads
    known = Settings.env_var_names() | POWERTOOLS_VARS
    # When every function's environment is resolved with the Globals
    # Then the template sets no name the code would ignore (a typo is a silent default)
    for name, function in template.functions.items():
        unknown = set(environment(function)) - known
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"


def test_each_function_gets_the_settings_it_needs(template: Template) -> None:
    for name, function in template.functions.items():
        missing = NEEDS[name] - set(environment(function))
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert NEEDS[name] <= Settings.env_var_names()


def test_powertools_service_and_namespace_are_set_once_for_all_functions(
    template: Template,
) -> None:
    variables = template.function_globals["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == "call-enricher"
    # Per stack, so the metrics (and alarms) of two stages never mix.
    assert "${AWS::StackName}" in variables["POWERTOOLS_METRICS_NAMESPACE"]["Fn::Sub"]
    for name in template.functions:
        own = environment(template.resources[name]["Properties"])
        assert not set(own) & POWERTOOLS_VARS, f"{name} overrides a Powertools variable"


def test_the_default_deployment_is_a_valid_configuration(template: Template) -> None:
    # Given every function's environment with the parameters at their defaults
    for name, function in template.functions.items():
        # When the settings model reads it, as the function's cold start will
        settings = Settings.from_env(resolved_env(template, function))
        # Then it is valid, and the resources come from the stack, not the local defaults
        if "CALLS_TABLE_NAME" in NEEDS[name]:
            assert settings.calls_table_name.startswith("call-enricher-dev-CallsTable")
        if "ENRICHMENT_QUEUE_URL" in NEEDS[name]:
            assert settings.enrichment_queue_url.startswith("https://sqs.")
        if "SINCH_SECRET_ID" in NEEDS[name]:
            assert settings.sinch_secret_id.startswith("arn:aws:secretsmanager:")
        if "EVENT_BUS_NAME" in NEEDS[name]:
            assert settings.event_bus_name == "call-enricher-dev-calls"


def _parameter_extremes(template: Template) -> Iterator[tuple[str, str, str, Any]]:
    """(function, env var, parameter, value) for each parameter bound and allowed value."""
    for name in sorted(NEEDS):
        function = template.function_properties(name)
        for var, value in sorted(environment(function).items()):
            if not (isinstance(value, Mapping) and value.get("Ref") in template.parameters):
                continue
            parameter = template.parameters[value["Ref"]]
            candidates = list(parameter.get("AllowedValues", []))
            candidates += [parameter[k] for k in ("MinValue", "MaxValue") if k in parameter]
            for candidate in candidates:
                yield name, var, value["Ref"], candidate


def test_every_value_a_parameter_allows_is_accepted_by_the_settings(template: Template) -> None:
    # Given each parameter that feeds a setting, at each of its bounds and allowed values
    checked = 0
    for name, var, parameter, candidate in _parameter_extremes(template):
        function = template.function_properties(name)

        def choose(
            param_name: str, spec: dict[str, Any], p: str = parameter, c: Any = candidate
        ) -> Any:
            return c if param_name == p else spec.get("Default")

        # When the function starts with that value
        env = resolved_env(template, function, choose)
        # Then the settings accept it: the template never lets an operator deploy a value
        # that fails every cold start
        try:
            Settings.from_env(env)
        except ConfigurationError as exc:
            pytest.fail(f"{name}: {parameter}={candidate!r} ({var}) is rejected: {exc}")
        checked += 1
    assert checked >= 15, "the parameter bounds were not exercised"


# --------------------------------------------------------------------------------------------
# queue, DLQ, event source mapping
# --------------------------------------------------------------------------------------------


def test_every_queue_triggered_function_reports_batch_item_failures(template: Template) -> None:
    triggered = {name: sqs_events(f) for name, f in template.functions.items() if sqs_events(f)}
    assert set(triggered) == {"QueueEnricherFunction"}
    for name, events in triggered.items():
        for event in events.values():
            assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
            assert event["BatchSize"] == {"Ref": "BatchSize"}
            assert event["MaximumBatchingWindowInSeconds"] == {"Ref": "BatchingWindowSeconds"}
            # The cap on Sinch traffic; SQS requires at least 2.
            assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "MaxConcurrency"}
            assert template.parameters["MaxConcurrency"]["MinValue"] >= 2


def test_visibility_timeout_covers_six_function_timeouts_and_the_batching_window(
    template: Template,
) -> None:
    for name, function in template.functions.items():
        for event in sqs_events(function).values():
            queue = template.resources[event["Queue"]["Fn::GetAtt"][0]]["Properties"]
            window = template.parameters["BatchingWindowSeconds"]["MaxValue"]
            timeout = function["Timeout"]  # Globals merged
            assert queue["VisibilityTimeout"] >= 6 * timeout + window, name


def test_the_dead_letter_queue_is_wired_through_the_queue_redrive_policy(
    template: Template,
) -> None:
    queue_name, dlq_name, redrive = find_queue_pair(template)
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert template.parameters["MaxReceiveCount"]["Default"] == 5
    queue = template.resources[queue_name]["Properties"]
    dlq = template.resources[dlq_name]["Properties"]
    # The queue that triggers the enricher is the one with the DLQ.
    (event,) = sqs_events(template.function_properties("QueueEnricherFunction")).values()
    assert event["Queue"] == {"Fn::GetAtt": [queue_name, "Arn"]}
    # Not a function-level DLQ (async invocations only).
    for function in template.functions.values():
        assert "DeadLetterQueue" not in function
    # Retention: the DLQ keeps a message's original enqueue time, so it must outlive the queue;
    # the queue must outlive the whole retry horizon at the parameter's maximum.
    assert dlq["MessageRetentionPeriod"] == 14 * 86_400
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
    horizon = template.parameters["MaxReceiveCount"]["MaxValue"] * queue["VisibilityTimeout"]
    assert queue["MessageRetentionPeriod"] > horizon


def test_every_queue_is_encrypted(template: Template) -> None:
    for name, queue in template.of_type("AWS::SQS::Queue").items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, name


def test_every_queue_refuses_plain_http(template: Template) -> None:
    # Given the queue policies' statements (the example consumer's allows its rule only)
    denied: set[str] = set()
    for policy in template.of_type("AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                assert statement["Effect"] == "Deny"
                assert {"sqs:SendMessage", "sqs:ReceiveMessage"} <= set(statement["Action"])
                denied |= refs(statement["Resource"])
    # Then every queue of ours that carries call IDs or stream positions denies plain HTTP
    assert denied == {"EnrichmentQueue", "EnrichmentDeadLetterQueue", "PublisherFailureQueue"}


# --------------------------------------------------------------------------------------------
# calls table stream -> publisher (the outbox)
# --------------------------------------------------------------------------------------------


def test_only_the_publisher_is_triggered_by_the_calls_table_stream(template: Template) -> None:
    # Given every function's DynamoDB stream events
    triggered = {n: stream_events(f) for n, f in template.functions.items() if stream_events(f)}
    table = "CallsTable"
    # Then exactly one function reads the stream: the publisher, once, from the calls table
    assert set(triggered) == {PUBLISHER}
    (mapping,) = triggered[PUBLISHER].values()
    assert mapping["Stream"] == {"Fn::GetAtt": [table, "StreamArn"]}
    # and it publishes what the stream holds when it is created, not only what comes after
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    # and one batch per shard at a time: a call's changes are published in the order written
    assert mapping.get("ParallelizationFactor", 1) == 1


def test_the_stream_mapping_isolates_a_failing_record_and_records_what_it_gives_up(
    template: Template,
) -> None:
    (mapping,) = stream_events(template.function_properties(PUBLISHER)).values()
    # Partial batch responses: the checkpoint moves to the first failed record
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # A failing batch is split until the failing record is alone...
    assert mapping["BisectBatchOnFunctionError"] is True
    # ...retried a bounded number of times (never -1: a poison record would block the shard
    # for the stream's whole 24 h)...
    assert mapping["MaximumRetryAttempts"] == {"Ref": "PublisherMaxRetryAttempts"}
    retries = template.parameters["PublisherMaxRetryAttempts"]
    assert retries["Default"] == 10
    assert 0 <= retries["MinValue"] <= retries["MaxValue"] <= 10_000
    assert 60 <= mapping["MaximumRecordAgeInSeconds"] <= 86_400
    # ...then its position goes to the failure queue
    (queue,) = on_failure_queues(template.function_properties(PUBLISHER))
    assert mapping["DestinationConfig"]["OnFailure"]["Type"] == "SQS"
    failure_queue = template.resources[queue]["Properties"]
    assert failure_queue["MessageRetentionPeriod"] == 14 * 86_400
    assert "RedrivePolicy" not in failure_queue
    # Batch size and window within what Lambda allows for DynamoDB streams
    assert mapping["BatchSize"] == {"Ref": "PublisherBatchSize"}
    batch = template.parameters["PublisherBatchSize"]
    assert batch["Default"] == 100
    assert (batch["MinValue"], batch["MaxValue"]) == (1, 1000)
    assert mapping["MaximumBatchingWindowInSeconds"] in (0, 1)


# --------------------------------------------------------------------------------------------
# table, bus
# --------------------------------------------------------------------------------------------


def test_the_calls_table(template: Template) -> None:
    table = template.resources["CallsTable"]
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "callId", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [
        {"AttributeName": name, "AttributeType": "S"}
        for name in ("callId", "searchDay", "searchSort")
    ]
    # GET /calls?day=: the index the storage module queries, on the attributes it writes
    (index,) = props["GlobalSecondaryIndexes"]
    assert index == {
        "IndexName": "ByDay",
        "KeySchema": [
            {"AttributeName": "searchDay", "KeyType": "HASH"},
            {"AttributeName": "searchSort", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }
    search = (LIBRARY / "call_enricher" / "search.py").read_text(encoding="utf-8")
    assert 'SEARCH_INDEX = "ByDay"' in search
    assert "#searchDay = :searchDay" in (LIBRARY / "call_enricher" / "storage.py").read_text()
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True
    # The attribute the storage module writes (call_enricher.storage).
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert "expiresAt" in (LIBRARY / "call_enricher" / "storage.py").read_text(encoding="utf-8")
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    # The outbox: every change with both images (the publisher derives events from the pair)
    assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}


def test_the_bus_its_archive_and_the_example_consumer(template: Template) -> None:
    (bus,) = template.of_type("AWS::Events::EventBus")
    (archive,) = template.of_type("AWS::Events::Archive").values()
    assert archive["Properties"]["SourceArn"] == {"Fn::GetAtt": [bus, "Arn"]}
    assert archive["Properties"]["RetentionDays"] == {"Ref": "ArchiveRetentionDays"}
    assert archive["Properties"]["EventPattern"] == {"source": [{"Ref": "EventSource"}]}
    (rule_name, rule), *_ = template.of_type("AWS::Events::Rule").items()
    props = rule["Properties"]
    assert props["EventBusName"] == {"Ref": bus}
    assert props["EventPattern"] == {
        "source": [{"Ref": "EventSource"}],
        "detail-type": ["Call Enriched"],
    }
    # The publisher publishes with the same source the rule and the archive match, on this bus.
    publisher_env = environment(template.function_properties(PUBLISHER))
    assert publisher_env["EVENT_SOURCE"] == {"Ref": "EventSource"}
    assert publisher_env["EVENT_BUS_NAME"] == {"Ref": bus}
    assert (
        Settings.model_fields["event_source"].default
        == (template.parameters["EventSource"]["Default"])
    )
    (target,) = props["Targets"]
    target_queue = target["Arn"]["Fn::GetAtt"][0]
    # Only this rule may send to the example queue.
    policies = [
        p["Properties"]
        for p in template.of_type("AWS::SQS::QueuePolicy").values()
        if {"Ref": target_queue} in p["Properties"]["Queues"]
    ]
    (policy,) = policies
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_name, "Arn"]}}
    }


# --------------------------------------------------------------------------------------------
# HTTP API
# --------------------------------------------------------------------------------------------


def _routes(template: Template) -> dict[tuple[str, str], tuple[str, str, dict[str, Any]]]:
    routes = {}
    for name, function in template.functions.items():
        for event in function.get("Events", {}).values():
            if event["Type"] == "HttpApi":
                p = event["Properties"]
                routes[(p["Method"], p["Path"])] = (name, p["Auth"]["Authorizer"], p)
    return routes


def test_http_api_routes_and_their_authorization(template: Template) -> None:
    routes = _routes(template)
    assert {k: v[:2] for k, v in routes.items()} == EXPECTED_ROUTES
    (api_name, api), *_ = template.of_type("AWS::Serverless::HttpApi").items()
    assert api["Properties"]["Auth"] == {
        "EnableIamAuthorizer": True,
        "DefaultAuthorizer": "AWS_IAM",
    }
    for _, _, props in routes.values():
        assert props["ApiId"] == {"Ref": api_name}
    assert "AccessLogSettings" in api["Properties"]
    settings = api["Properties"]["DefaultRouteSettings"]
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}


def test_api_functions_answer_before_api_gateway_gives_up(template: Template) -> None:
    for name, _, props in _routes(template).values():
        integration_ms = props["TimeoutInMillis"]
        assert integration_ms <= 30_000  # HTTP API's hard limit
        assert template.function_properties(name)["Timeout"] * 1000 < integration_ms, name


def test_the_callback_path_default_is_the_route(template: Template) -> None:
    default = template.parameters["SinchCallbackPath"]["Default"]
    assert ("POST", default) in EXPECTED_ROUTES
    assert Settings.model_fields["sinch_callback_path"].default == default


# --------------------------------------------------------------------------------------------
# least privilege
# --------------------------------------------------------------------------------------------


def _all_policy_statements(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in template.resources.items():
        props = resource.get("Properties", {})
        documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        if "PolicyDocument" in props:
            documents.append(props["PolicyDocument"])
        for document in documents:
            for statement in as_list(document["Statement"]):
                if isinstance(statement, Mapping) and "Fn::If" in statement:
                    for branch in statement["Fn::If"][1:]:
                        if branch != {"Ref": "AWS::NoValue"}:
                            yield name, branch
                else:
                    yield name, statement


def test_no_iam_statement_has_a_wildcard_action(template: Template) -> None:
    checked = 0
    for name, statement in _all_policy_statements(template):
        assert "NotAction" not in statement, name
        for action in as_list(statement["Action"]):
            assert isinstance(action, str), name
            assert "*" not in action, f"{name}: {action}"
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), f"{name}: {action}"
            checked += 1
    assert checked > 20


def test_resource_star_only_where_aws_offers_nothing_narrower(template: Template) -> None:
    for name, statement in _all_policy_statements(template):
        if statement["Effect"] != "Allow":
            continue
        assert "NotResource" not in statement, name
        resources = as_list(statement["Resource"])
        for resource in resources:
            text = json.dumps(resource)
            if "*" in text:
                assert resource == "*", f"{name}: partial wildcard {text}"
                assert set(as_list(statement["Action"])) <= STAR_RESOURCE_ACTIONS, name


def test_no_role_uses_managed_policies(template: Template) -> None:
    # AWS managed policies (AWSLambdaBasicExecutionRole...) grant logs:* on "*".
    for name, role in template.of_type("AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in role["Properties"], name
    for name in template.functions:
        assert "Policies" not in template.resources[name]["Properties"], name


def test_only_the_stream_publisher_may_publish_events(template: Template) -> None:
    # Given every policy statement of the template
    publishers = {
        name
        for name, statement in _all_policy_statements(template)
        if statement["Effect"] == "Allow" and "events:PutEvents" in as_list(statement["Action"])
    }
    # Then only the publisher's role may call PutEvents (the table is the outbox)...
    assert publishers == {role_of(template.function_properties(PUBLISHER))}
    # ...on our bus only, in a statement of its own
    (bus,) = template.of_type("AWS::Events::EventBus")
    (statement,) = [
        s
        for s in statements(template, role_of(template.function_properties(PUBLISHER)))
        if "events:PutEvents" in as_list(s["Action"])
    ]
    assert as_list(statement["Action"]) == ["events:PutEvents"]
    assert statement["Resource"] == {"Fn::GetAtt": [bus, "Arn"]}


def test_the_publisher_role_grants_the_stream_mapping_and_one_write_on_the_table(
    template: Template,
) -> None:
    function = template.function_properties(PUBLISHER)
    (table,) = trigger_streams(function)
    (failure_queue,) = on_failure_queues(function)
    by_resource: dict[str, set[str]] = {}
    for statement in statements(template, role_of(function)):
        key = json.dumps(statement["Resource"], sort_keys=True)
        by_resource.setdefault(key, set()).update(as_list(statement["Action"]))

    def on(resource: Any) -> set[str]:
        return by_resource.get(json.dumps(resource, sort_keys=True), set())

    # The mapping reads the stream (and only the stream, not the table)
    assert on({"Fn::GetAtt": [table, "StreamArn"]}) == STREAM_POLLER_ACTIONS
    # and sends the batches it gives up on to its OnFailure queue
    assert on({"Fn::GetAtt": [failure_queue, "Arn"]}) == ON_FAILURE_ACTIONS
    # The code records an event EventBridge never accepts on the item: one write, no reads
    assert on({"Fn::GetAtt": [table, "Arn"]}) == {"dynamodb:UpdateItem"}
    # The spend watch: its own table (conditional writes and consistent reads, no scan), the
    # key of the number hash, and the optional risk policy holding its thresholds
    assert on({"Fn::GetAtt": ["SpendTable", "Arn"]}) == {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:BatchGetItem",
    }
    assert on({"Ref": "SpendNumberKeySecret"}) == {"secretsmanager:GetSecretValue"}
    # and it never touches the queue, the Sinch secret or anything else
    group = function["LoggingConfig"]["LogGroup"]["Ref"]
    (bus,) = template.of_type("AWS::Events::EventBus")
    policy = (
        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}"
        ":parameter${RiskPolicyParameterName}"
    )
    assert set(by_resource) == {
        json.dumps(r, sort_keys=True)
        for r in (
            {"Fn::GetAtt": [table, "StreamArn"]},
            {"Fn::GetAtt": [failure_queue, "Arn"]},
            {"Fn::GetAtt": [table, "Arn"]},
            {"Fn::GetAtt": ["SpendTable", "Arn"]},
            {"Ref": "SpendNumberKeySecret"},
            {"Fn::Sub": policy},
            {"Fn::GetAtt": [bus, "Arn"]},
            {"Fn::GetAtt": [group, "Arn"]},
            "*",
        )
    }


def test_the_secret_is_read_with_the_narrowest_permission(template: Template) -> None:
    parameter = template.parameters["SinchSecretArn"]
    assert parameter["Type"] == "String"
    assert "Default" not in parameter
    assert parameter["AllowedPattern"].startswith("^arn:aws")
    for name, function in template.functions.items():
        reads = [
            s
            for s in statements(template, role_of(function))
            if "secretsmanager:GetSecretValue" in as_list(s["Action"])
        ]
        if "SINCH_SECRET_ID" not in NEEDS[name]:  # the publisher never talks to Sinch
            assert "SINCH_SECRET_ID" not in environment(function), name
            # (it reads the spend watch's own HMAC key, nothing else)
            assert all(r["Resource"] == {"Ref": "SpendNumberKeySecret"} for r in reads), name
            continue
        assert environment(function)["SINCH_SECRET_ID"] == {"Ref": "SinchSecretArn"}
        assert len(reads) == 1, name
        assert as_list(reads[0]["Action"]) == ["secretsmanager:GetSecretValue"]
        assert reads[0]["Resource"] == {"Ref": "SinchSecretArn"}
    # No parameter carries a secret value itself: a string parameter about the secret is an
    # ARN (numbers, such as the cache's max age, cannot hold one).
    for name, spec in template.parameters.items():
        if "secret" in name.lower() and spec["Type"] != "Number":
            if name == "WebhookSecretVersionId":  # a version's ID, never its value
                assert spec["AllowedPattern"] == "^$|^[A-Za-z0-9-]{32,64}$"
                continue
            assert name in {"SinchSecretArn", "SinchSecretKmsKeyArn", "WebhookSecretArn"}, name
            assert "arn:aws" in spec["AllowedPattern"]


def test_every_resource_a_function_may_touch_reaches_it_by_environment_variable(
    template: Template,
) -> None:
    for name, function in template.functions.items():
        env_refs = refs(environment(function))
        own_log_group = function["LoggingConfig"]["LogGroup"]["Ref"]
        trigger_queues = {e["Queue"]["Fn::GetAtt"][0] for e in sqs_events(function).values()}
        streams = {json.dumps({"Fn::GetAtt": [t, "StreamArn"]}) for t in trigger_streams(function)}
        destinations = on_failure_queues(function)
        granted_on: set[str] = set()
        for statement in statements(template, role_of(function)):
            targets = refs(statement["Resource"])
            actions = set(as_list(statement["Action"]))
            granted_on |= targets
            if targets == {own_log_group} or actions <= STAR_RESOURCE_ACTIONS:
                continue
            if actions == {"kms:Decrypt"}:  # the secret's key, used by Secrets Manager
                assert targets == {"SinchSecretKmsKeyArn"}
                continue
            if actions <= SQS_POLLER_ACTIONS and targets <= trigger_queues:
                continue  # used by the event source mapping, not by the code
            if actions <= STREAM_POLLER_ACTIONS and json.dumps(statement["Resource"]) in streams:
                continue  # the stream mapping reads the stream, the code never does
            if actions <= ON_FAILURE_ACTIONS and targets <= destinations:
                continue  # the stream mapping's OnFailure destination
            # Then the code can only find what it may touch through its environment
            assert targets <= env_refs, f"{name}: {sorted(targets - env_refs)} not in its env"
        # and everything it is told about, it may use
        resources_in_env = {r for r in env_refs if r in template.resources} | (
            {"SinchSecretArn"} & env_refs
        )
        assert resources_in_env <= granted_on, f"{name}: no permission on {resources_in_env}"


def _module_path(module: str) -> Path | None:
    base = LIBRARY.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _runtime_imports(path: Path) -> set[str]:
    """call_enricher modules a file imports at run time (TYPE_CHECKING blocks excluded)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    modules = set()
    for name in found:
        if name.split(".")[0] != "call_enricher":
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
            modules.add(".".join(parts[:i]))
    return {m for m in modules if _module_path(m)}


def _actions_used_by(handler: Path) -> set[str]:
    files, queue, seen = [handler], [handler], set()
    while queue:
        for module in _runtime_imports(queue.pop()):
            if module not in seen:
                seen.add(module)
                path = _module_path(module)
                assert path is not None
                files.append(path)
                queue.append(path)
    actions = set()
    for path in files:
        text = path.read_text(encoding="utf-8")
        actions |= {BOTO3_ACTIONS[m] for m in re.findall(r"\.(\w+)\(", text) if m in BOTO3_ACTIONS}
        actions |= {action for word, action in TEXT_ACTIONS.items() if word in text}
    return actions


@pytest.mark.parametrize("function_name", sorted(NEEDS))
def test_each_role_grants_exactly_the_aws_actions_its_handler_code_uses(
    template: Template, function_name: str
) -> None:
    # Given the handler and every call_enricher module it imports at run time
    function = template.function_properties(function_name)
    handler = REPO / function["CodeUri"] / "app.py"
    if not handler.is_file():
        pytest.skip(f"{handler.relative_to(REPO)} is not written yet")
    used = _actions_used_by(handler)
    # When compared with what the function's role grants (minus logs, traces, the key of the
    # secret and what the event source mapping itself uses)
    granted = granted_actions(template, function)
    infrastructure = {"logs:CreateLogStream", "logs:PutLogEvents", "kms:Decrypt"}
    infrastructure |= STAR_RESOURCE_ACTIONS
    if sqs_events(function):
        infrastructure |= SQS_POLLER_ACTIONS
    if stream_events(function):
        infrastructure |= STREAM_POLLER_ACTIONS
        if on_failure_queues(function):
            infrastructure |= ON_FAILURE_ACTIONS
    # Then nothing the code calls is denied, and nothing is granted that the code never calls
    assert used, "the scan found no AWS call at all"
    assert used <= granted, f"denied at run time: {sorted(used - granted)}"
    assert granted - infrastructure <= used, (
        f"never used: {sorted(granted - infrastructure - used)}"
    )


# --------------------------------------------------------------------------------------------
# alarms, outputs, names, parameters, samconfig
# --------------------------------------------------------------------------------------------


def _alarms(template: Template) -> list[dict[str, Any]]:
    return [a["Properties"] for a in template.of_type("AWS::CloudWatch::Alarm").values()]


def _alarm_for(template: Template, namespace: Any, metric: str, dimension: Any) -> dict[str, Any]:
    matches = [
        a
        for a in _alarms(template)
        if a["Namespace"] == namespace
        and a["MetricName"] == metric
        and any(d["Value"] == dimension for d in a["Dimensions"])
    ]
    assert len(matches) == 1, f"{metric} on {dimension}: {len(matches)} alarms"
    return matches[0]


def test_alarms_cover_the_dlq_the_backlog_each_function_and_sinch(template: Template) -> None:
    queue, dlq, _ = find_queue_pair(template)
    dlq_alarm = _alarm_for(
        template,
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"Fn::GetAtt": [dlq, "QueueName"]},
    )
    assert dlq_alarm["Threshold"] == 0
    assert dlq_alarm["ComparisonOperator"] == "GreaterThanThreshold"
    age = _alarm_for(
        template, "AWS/SQS", "ApproximateAgeOfOldestMessage", {"Fn::GetAtt": [queue, "QueueName"]}
    )
    assert age["Threshold"] == {"Ref": "QueueAgeAlarmSeconds"}
    for name in template.functions:
        for metric in ("Errors", "Throttles"):
            _alarm_for(template, "AWS/Lambda", metric, {"Ref": name})
    variables = template.function_globals["Environment"]["Variables"]
    sinch = _alarm_for(
        template,
        variables["POWERTOOLS_METRICS_NAMESPACE"],
        "SinchFailures",
        variables["POWERTOOLS_SERVICE_NAME"],
    )
    assert sinch["Dimensions"] == [{"Name": "service", "Value": "call-enricher"}]
    for alarm in _alarms(template):
        assert alarm["TreatMissingData"] == "notBreaching"
        assert "AlarmActions" in alarm
        assert "OKActions" in alarm


def test_alarms_cover_the_publisher_its_failure_queue_its_lag_and_rejected_events(
    template: Template,
) -> None:
    # Given the publisher and the queue its stream mapping gives up to
    function = template.function_properties(PUBLISHER)
    (failure_queue,) = on_failure_queues(function)
    # Then a batch given up on alarms at once
    given_up = _alarm_for(
        template,
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"Fn::GetAtt": [failure_queue, "QueueName"]},
    )
    assert (given_up["Threshold"], given_up["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    # and so does an event EventBridge can never accept (the publisher's own metric)
    variables = template.function_globals["Environment"]["Variables"]
    rejected = _alarm_for(
        template,
        variables["POWERTOOLS_METRICS_NAMESPACE"],
        "EventsRejected",
        variables["POWERTOOLS_SERVICE_NAME"],
    )
    assert rejected["Dimensions"] == [{"Name": "service", "Value": "call-enricher"}]
    assert rejected["Statistic"] == "Sum"
    assert rejected["Threshold"] == 1
    assert rejected["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert rejected["Period"] == 300
    # and events lagging behind the table for five minutes
    lag = _alarm_for(template, "AWS/Lambda", "IteratorAge", {"Ref": PUBLISHER})
    assert lag["Statistic"] == "Maximum"
    assert lag["ComparisonOperator"] == "GreaterThanThreshold"
    assert lag["Period"] * lag["EvaluationPeriods"] == 300
    assert lag.get("DatapointsToAlarm", lag["EvaluationPeriods"]) == lag["EvaluationPeriods"]
    assert 0 < lag["Threshold"] <= 300_000  # milliseconds
    # (its Errors and Throttles alarms are checked with every other function's), all sent where
    # the other alarms go
    dlq = {"Fn::GetAtt": [find_queue_pair(template)[1], "QueueName"]}
    dlq_alarm = _alarm_for(template, "AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq)
    for alarm in (given_up, rejected, lag):
        assert alarm["AlarmActions"] == alarm["OKActions"] == dlq_alarm["AlarmActions"]
    for alarm in _alarms(template):
        assert alarm["TreatMissingData"] == "notBreaching"
        assert "AlarmActions" in alarm
        assert "OKActions" in alarm


def test_the_alarm_topic_is_optional(template: Template) -> None:
    conditions = template.raw["Conditions"]
    assert {"CreateAlarmTopic", "HasAlarmTopicArn", "HasAlarmActions"} <= set(conditions)
    for resource in template.of_type("AWS::SNS::Topic").values():
        assert resource["Condition"] == "CreateAlarmTopic"
    assert template.parameters["AlarmEmail"]["Default"] == ""
    assert template.parameters["AlarmTopicArn"]["Default"] == ""


def test_outputs(template: Template) -> None:
    outputs = template.raw["Outputs"]
    queue, dlq, _ = find_queue_pair(template)
    (bus,) = template.of_type("AWS::Events::EventBus")
    table = "CallsTable"
    (api,) = template.of_type("AWS::Serverless::HttpApi")
    assert api in outputs["ApiUrl"]["Value"]["Fn::Sub"]
    assert outputs["EnrichmentQueueUrl"]["Value"] == {"Ref": queue}
    assert outputs["EnrichmentQueueArn"]["Value"] == {"Fn::GetAtt": [queue, "Arn"]}
    assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": dlq}
    assert outputs["EventBusName"]["Value"] == {"Ref": bus}
    assert outputs["EventBusArn"]["Value"] == {"Fn::GetAtt": [bus, "Arn"]}
    assert outputs["CallsTableName"]["Value"] == {"Ref": table}
    assert "ExampleConsumerQueueUrl" in outputs
    (failure_queue,) = on_failure_queues(template.function_properties(PUBLISHER))
    assert outputs["PublisherFailureQueueUrl"]["Value"] == {"Ref": failure_queue}
    assert outputs["StreamPublisherFunctionName"]["Value"] == {"Ref": PUBLISHER}


def test_no_hard_coded_physical_names(template: Template) -> None:
    # Two stages (two stacks) must deploy side by side: a physical name is either generated
    # by CloudFormation or derived from the stack name.
    for name, resource in template.resources.items():
        for key, value in resource.get("Properties", {}).items():
            if key in NAME_PROPERTIES:
                assert isinstance(value, Mapping), f"{name}.{key}"
                assert "Fn::Sub" in value, f"{name}.{key}"
                assert "${AWS::StackName}" in value["Fn::Sub"], f"{name}.{key}"


def test_every_parameter_has_a_default_except_the_secret_arn(template: Template) -> None:
    required = {
        "Stage",
        "SinchRegion",
        "SinchSecretArn",
        "SinchAuthScheme",
        "BatchSize",
        "BatchingWindowSeconds",
        "MaxConcurrency",
        "WorkerThreads",
        "MaxReceiveCount",
        "RecheckBaseDelaySeconds",
        "RecheckMaxAgeSeconds",
        "FinalFreshnessSeconds",
        "RecordTtlDays",
        "LogLevel",
        "LogRetentionDays",
        "Tracing",
        "SinchCallbackPath",
        "ArchiveRetentionDays",
        "PublisherBatchSize",
        "PublisherMaxRetryAttempts",
        "AlarmEmail",
    }
    assert required <= set(template.parameters)
    without_default = {n for n, p in template.parameters.items() if "Default" not in p}
    assert without_default == {"SinchSecretArn"}
    # The region list is the library's.
    from call_enricher.sinch.regions import REGION_BASE_URLS

    assert set(template.parameters["SinchRegion"]["AllowedValues"]) == set(REGION_BASE_URLS)


def _check_parameter_value(spec: Mapping[str, Any], value: str) -> None:
    if "AllowedValues" in spec:
        assert value in [str(v) for v in spec["AllowedValues"]]
    if "AllowedPattern" in spec:
        assert re.fullmatch(spec["AllowedPattern"], value)
    if spec["Type"] == "Number":
        number = float(value)
        assert spec.get("MinValue", number) <= number <= spec.get("MaxValue", number)


def test_samconfig_has_a_dev_and_a_prod_environment(template: Template) -> None:
    config = tomllib.loads((REPO / "samconfig.toml").read_text(encoding="utf-8"))
    assert config["version"] == 0.1
    stacks = set()
    for env in ("default", "prod"):
        deploy = config[env]["deploy"]["parameters"]
        stacks.add(deploy["stack_name"])
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert deploy["confirm_changeset"] is True
        assert deploy["resolve_s3"] is True
        assert config[env]["global"]["parameters"]["region"] == REGION
        overrides = dict(token.split("=", 1) for token in deploy["parameter_overrides"].split())
        assert overrides["Stage"] == ("dev" if env == "default" else "prod")
        for key, value in overrides.items():
            assert key in template.parameters, key
            if value.startswith("REPLACE-"):  # prod's alarm address: see test_operations
                continue
            _check_parameter_value(template.parameters[key], value)
    assert len(stacks) == 2


# --------------------------------------------------------------------------------------------
# sample events (events/)
# --------------------------------------------------------------------------------------------


def test_the_sqs_samples_are_real_sqs_batches() -> None:
    known_ids = sinch_sample_call_ids()
    batch = load_event("sqs-batch.json")["Records"]
    shapes = set()
    for record in batch:
        assert record["eventSource"] == "aws:sqs"
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()  # noqa: S324
        try:
            body = json.loads(record["body"])
        except json.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            shapes.add("json+context" if "context" in body and "region" in body else "json")
            assert body["callId"] in known_ids
        else:
            shapes.add("text")
            assert record["body"] in known_ids
    assert shapes == {"json+context", "json", "text"}
    assert len({r["messageId"] for r in batch}) == len(batch)
    for record in load_event("sqs-batch-invalid.json")["Records"]:
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()  # noqa: S324


@pytest.mark.parametrize(
    "name", ["api-post-calls.json", "api-get-call.json", "api-post-enrich.json"]
)
def test_the_api_samples_hit_iam_routes_of_the_template(name: str) -> None:
    event = load_event(name)
    assert event["version"] == "2.0"
    method, path = event["routeKey"].split(" ", 1)
    assert EXPECTED_ROUTES[(method, path)][1] == "AWS_IAM"
    concrete = path
    for key, value in event.get("pathParameters", {}).items():
        concrete = concrete.replace("{" + key + "}", value)
        assert value in sinch_sample_call_ids()
    assert event["rawPath"] == concrete == event["requestContext"]["http"]["path"]
    assert event["requestContext"]["http"]["method"] == method
    assert "iam" in event["requestContext"]["authorizer"]
    if "body" in event:
        json.loads(event["body"])


def test_the_dice_sample_carries_a_valid_sinch_signature(template: Template) -> None:
    # Given the DiCE sample and the test credentials documented in events/README.md
    event = load_event("sinch-dice-callback.json")
    readme = (EVENTS / "README.md").read_text(encoding="utf-8")
    assert TEST_APPLICATION_KEY in readme
    assert TEST_APPLICATION_SECRET in readme
    assert event["routeKey"] == "POST /sinch/callbacks"
    assert "authorizer" not in event["requestContext"]
    # When the signature is recomputed over the raw body and the configured callback path
    scheme, credentials = event["headers"]["authorization"].split(" ", 1)
    key, signature = credentials.split(":", 1)
    path = template.parameters["SinchCallbackPath"]["Default"]
    expected = signed_callback_signature(event, TEST_APPLICATION_SECRET, path)
    # Then it matches (Sinch sends the scheme in lower case)
    assert scheme == "application"
    assert key == TEST_APPLICATION_KEY
    assert hmac.compare_digest(signature, expected)
    # and a different secret or path does not
    other = base64.b64encode(b"another secret").decode()
    assert signed_callback_signature(event, other, path) != signature
    assert signed_callback_signature(event, TEST_APPLICATION_SECRET, "/x") != signature
    body = json.loads(event["body"])
    assert body["event"] == "dice"
    assert body["callid"] in sinch_sample_call_ids()
    assert body["applicationKey"] == TEST_APPLICATION_KEY


def test_every_checkov_suppression_in_the_template_has_a_written_reason(
    template: Template,
) -> None:
    count = 0
    for name, resource in template.resources.items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), name
            assert len(skip["comment"]) >= 60, f"{name} {skip['id']}: reason too short"
            count += 1
    assert count > 0


# --------------------------------------------------------------------------------------------
# the SAM tools (slow: .venv-sam)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sam_validate_needs_only_a_region(sam_tools: Path) -> None:
    result = run_tool(
        [sam_tools / "sam", "validate", "--template-file", TEMPLATE_PATH, "--region", REGION],
        env=offline_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.output
    assert "is a valid SAM Template" in result.stdout + result.stderr


@pytest.mark.slow
def test_sam_validate_lint_reports_nothing(sam_tools: Path) -> None:
    result = run_tool(
        [sam_tools / "sam", "validate", "--lint", "--template-file", TEMPLATE_PATH],
        env=offline_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.output
    assert "is a valid SAM Template" in result.stdout + result.stderr


@pytest.mark.slow
def test_cfn_lint_reports_no_error_and_no_warning(sam_tools: Path) -> None:
    result = run_tool(
        [sam_tools / "cfn-lint", "--regions", REGION, "--format", "parseable", "--", TEMPLATE_PATH],
        env=offline_env(),
        timeout=300,
    )
    # exit 0: nothing matched (2 = an error, 4 = a warning, 8 = informational only)
    assert result.returncode == 0, result.output
    assert result.stdout.strip() == "", result.output


@pytest.mark.slow
def test_checkov_finds_nothing_not_suppressed_with_a_reason(checkov_bin: Path) -> None:
    result = run_tool(
        [
            checkov_bin,
            "--framework",
            "cloudformation",
            "--skip-download",
            "--output",
            "json",
            "--file",
            TEMPLATE_PATH,
        ],
        env=offline_env(),
        timeout=600,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert not failed, failed
    assert summary["failed"] == 0
    assert summary["passed"] > 10
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped.get("check_result", {}).get("suppress_comment", "")) >= 60, skipped[
            "check_id"
        ]
    assert result.returncode == 0, result.output


_TRANSLATE = """
import json, sys
from samtranslator.translator.transform import transform
from samcli.yamlhelper import yaml_parse

template = yaml_parse(open(sys.argv[1]).read())
for resource in template["Resources"].values():
    for key in ("CodeUri", "ContentUri"):
        if key in resource.get("Properties", {}):
            resource["Properties"][key] = "s3://bucket/key"

class NoManagedPolicies:
    def load(self):
        return {}

print(json.dumps(transform(template, {}, NoManagedPolicies())))
"""


@pytest.mark.slow
def test_the_deployed_api_requires_sigv4_except_on_the_callback_route(sam_tools: Path) -> None:
    # Given the CloudFormation that SAM generates from template.yaml
    result = run_tool(
        [sam_tools / "python", "-c", _TRANSLATE, TEMPLATE_PATH], env=offline_env(), timeout=300
    )
    assert result.returncode == 0, result.output
    resources = json.loads(result.stdout)["Resources"]
    (api,) = [r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    body = api["Properties"]["Body"]
    # Then each route has exactly the authorization intended
    seen = {}
    for path, methods in body["paths"].items():
        for method, operation in methods.items():
            (security,) = operation["security"]
            seen[(method.upper(), path)] = next(iter(security))
    assert seen == {route: auth for route, (_, auth) in EXPECTED_ROUTES.items()}
    scheme = body["components"]["securitySchemes"]["AWS_IAM"]
    assert scheme["x-amazon-apigateway-authtype"] == "awsSigv4"
    # and SAM attached no generated role: every function uses the role written here
    assert not [n for n, r in resources.items() if n.endswith("Role") and "Function" in n]
    functions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    assert len(functions) == 4
    for function in functions:
        assert function["Properties"]["LoggingConfig"]["LogFormat"] == "JSON"
        assert function["Properties"]["Architectures"] == ["arm64"]


@pytest.mark.slow
def test_the_deployed_stream_mapping_keeps_its_error_handling(sam_tools: Path) -> None:
    # Given the CloudFormation that SAM generates from template.yaml
    result = run_tool(
        [sam_tools / "python", "-c", _TRANSLATE, TEMPLATE_PATH], env=offline_env(), timeout=300
    )
    assert result.returncode == 0, result.output
    resources = json.loads(result.stdout)["Resources"]
    mappings = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    streams = [m["Properties"] for m in mappings if "StreamArn" in json.dumps(m)]
    # Then the one stream mapping carries every error-handling setting through the transform
    (mapping,) = streams
    assert mapping["FunctionName"] == {"Ref": PUBLISHER}
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["CallsTable", "StreamArn"]}
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == {"Ref": "PublisherMaxRetryAttempts"}
    assert mapping["ParallelizationFactor"] == 1
    assert mapping["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": ["PublisherFailureQueue", "Arn"]}}
    }


EM_AARCH64 = 183


def elf_machine(path: Path) -> int | None:
    """e_machine of an ELF file (None when the file is not ELF)."""
    with path.open("rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    little_endian = header[5] == 1  # EI_DATA: 1 = ELFDATA2LSB
    return int.from_bytes(header[18:20], "little" if little_endian else "big")


@pytest.mark.slow
def test_sam_build_ships_an_aarch64_layer_within_lambda_limits(
    sam_build: Path,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the layer that `sam build` produced without a container
    layer = sam_build / "CoreLayer"
    python_dir = layer / "python"
    assert (python_dir / "call_enricher" / "settings.py").is_file()
    assert (python_dir / "pydantic_core").is_dir()
    # Then every compiled extension is an aarch64 ELF (EM_AARCH64 = 183)
    extensions = sorted(python_dir.rglob("*.so"))
    assert any(p.name.startswith("_pydantic_core") for p in extensions)
    wrong = {str(p.relative_to(layer)): elf_machine(p) for p in extensions}
    wrong = {p: m for p, m in wrong.items() if m != EM_AARCH64}
    assert not wrong, f"not aarch64: {wrong}"
    # and the layer stays far from Lambda's 250 MB (unzipped, function + layers) limit
    files = [p for p in layer.rglob("*") if p.is_file() and not p.is_symlink()]
    unzipped = sum(p.stat().st_size for p in files)
    archive = tmp_path / "layer.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped_layer:
        for path in files:
            zipped_layer.write(path, path.relative_to(layer))
    zipped = archive.stat().st_size
    record_property("layer_unzipped_bytes", unzipped)
    record_property("layer_zipped_bytes", zipped)
    with capsys.disabled():
        print(
            f"\nCoreLayer: {unzipped / 1e6:.1f} MB unzipped, {zipped / 1e6:.1f} MB zipped,"
            f" {len(files)} files, {len(extensions)} compiled extensions (all aarch64)"
        )
    assert unzipped < 200 * 1024 * 1024
    # and the functions' own artefacts are just their handler code (no dependencies)
    for function in sorted(NEEDS):
        built = sam_build / function
        assert built.is_dir()
        assert not list(built.rglob("*.dist-info")), function


@pytest.mark.slow
def test_the_layer_ships_botocore_only_together_with_its_boto3(sam_build: Path) -> None:
    python_dir = sam_build / "CoreLayer" / "python"
    has_botocore = (python_dir / "botocore").is_dir()
    has_boto3 = (python_dir / "boto3").is_dir()
    assert has_botocore == has_boto3
    if has_boto3:
        boto3_meta = next(python_dir.glob("boto3-*.dist-info")) / "METADATA"
        requirement = next(
            line
            for line in boto3_meta.read_text(encoding="utf-8").splitlines()
            if line.startswith("Requires-Dist: botocore") and "extra ==" not in line
        )
        dist_info = next(python_dir.glob("botocore-*.dist-info")).name
        botocore_version = dist_info[len("botocore-") : -len(".dist-info")]
        low = re.search(r">=\s*([\d.]+)", requirement)
        high = re.search(r"<\s*([\d.]+)", requirement)
        version = tuple(int(x) for x in botocore_version.split("."))
        assert low is not None
        assert high is not None
        assert version >= tuple(int(x) for x in low.group(1).split("."))
        assert version < tuple(int(x) for x in high.group(1).split("."))


def test_the_samples_parse_with_the_powertools_event_classes_the_handlers_use() -> None:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2, SQSEvent

    sqs = SQSEvent(load_event("sqs-batch.json"))
    assert [r.message_id for r in sqs.records] == [
        r["messageId"] for r in load_event("sqs-batch.json")["Records"]
    ]
    for name in ("api-post-calls.json", "api-get-call.json", "api-post-enrich.json"):
        api = APIGatewayProxyEventV2(load_event(name))
        assert api.request_context.authorizer.iam.user_arn.startswith("arn:aws:sts::")
        assert api.raw_path.startswith("/calls")
    dice = APIGatewayProxyEventV2(load_event("sinch-dice-callback.json"))
    assert dice.headers["x-timestamp"] == "2026-11-26T10:00:00.123Z"
    assert dice.decoded_body == load_event("sinch-dice-callback.json")["body"]


def test_cold_start_knobs_snapstart_provisioned_concurrency_and_the_xray_sdk(
    template: Template,
) -> None:
    # Given the cold-start parameters, Then each is off by default
    parameters = template.parameters
    assert parameters["SnapStart"]["Default"] == "Disabled"
    assert parameters["ApiProvisionedConcurrency"]["Default"] == 0
    assert parameters["XRaySdk"]["Default"] == "Disabled"
    # And the queue and API functions are invoked through a published alias, with SnapStart
    # on that version only when asked
    for name in ("QueueEnricherFunction", "HttpApiFunction"):
        function = template.function_properties(name)
        assert function["AutoPublishAlias"] == "live", name
        assert function["SnapStart"] == {
            "Fn::If": [
                "SnapStartEnabled",
                {"ApplyOn": "PublishedVersions"},
                {"Ref": "AWS::NoValue"},
            ]
        }, name
    api = template.function_properties("HttpApiFunction")
    assert api["ProvisionedConcurrencyConfig"]["Fn::If"][0] == "ApiProvisioned"
    # And the two exclude each other (a rule refuses the stack), and the SDK is opt-in
    rule = template.raw["Rules"]["SnapStartOrProvisioned"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "SnapStart"}, "Enabled"]}
    variables = template.raw["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["XRAY_SDK"] == {"Fn::If": ["XRaySdkEnabled", "enabled", "disabled"]}


def test_memory_sizes_follow_the_modeled_cpu_share(template: Template) -> None:
    # INIT runs at a full vCPU; invocations at MemorySize/1769 of one (the comments in the
    # template give the measured reasoning): the CPU-bound queue enricher and publisher get
    # 1024 MB, the lean callback receiver 512 MB.
    sizes = {name: f["MemorySize"] for name, f in template.functions.items()}
    assert sizes == {
        "QueueEnricherFunction": 1024,
        "HttpApiFunction": 1024,
        "SinchCallbacksFunction": 512,
        "StreamPublisherFunction": 1024,
    }
