"""The template's webhook delivery: off unless ``WebhookEndpoint`` is set; the credentials
only by dynamic reference to the user's secret; a rule filtered by the parameters, with a
retry policy and a DLQ; a role and a queue policy that let only that rule do its part.
(What the rule delivers, and how, runs on the local stack: tests/integration/test_webhook.py
and tests/e2e/test_webhook.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from call_enricher import events
from call_enricher_tools.local.template import ParameterError, check_parameter

from .conftest import Template
from .test_operations import accepted

WEBHOOK_ONLY = (
    "WebhookConnection",
    "WebhookDestination",
    "WebhookInvokeRole",
    "WebhookRule",
    "WebhookDeadLetterQueuePolicy",
)
SECRET_REFERENCE = "{{resolve:secretsmanager:${WebhookSecretArn}:SecretString:"


def props(template: Template, name: str) -> dict[str, Any]:
    properties: dict[str, Any] = template.resources[name]["Properties"]
    return properties


def test_the_webhook_exists_only_with_an_endpoint_and_its_dlq_always(template: Template) -> None:
    assert template.raw["Conditions"]["HasWebhook"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "WebhookEndpoint"}, ""]}]
    }
    assert template.parameters["WebhookEndpoint"]["Default"] == ""
    for name in WEBHOOK_ONLY:
        assert template.resources[name]["Condition"] == "HasWebhook", name
    # the DLQ (and so its alarm and dashboard line) exists either way: an empty queue is free
    assert "Condition" not in template.resources["WebhookDeadLetterQueue"]
    assert template.raw["Outputs"]["WebhookRuleName"]["Condition"] == "HasWebhook"


def test_the_credentials_come_only_from_the_secret(template: Template) -> None:
    connection = props(template, "WebhookConnection")
    assert connection["AuthorizationType"] == {"Ref": "WebhookAuthType"}
    condition, api_key, basic = connection["AuthParameters"]["Fn::If"]
    assert template.raw["Conditions"][condition] == {
        "Fn::Equals": [{"Ref": "WebhookAuthType"}, "API_KEY"]
    }

    def reference(key: str) -> dict[str, Any]:
        # the secret's key, at the version WebhookSecretVersionId names (a rotation) if any
        version = {
            "Fn::If": ["HasWebhookSecretVersion", {"Fn::Sub": "::${WebhookSecretVersionId}"}, ""]
        }
        return {"Fn::Sub": [SECRET_REFERENCE + key + "${Version}}}", {"Version": version}]}

    assert api_key["ApiKeyAuthParameters"] == {
        "ApiKeyName": {"Ref": "WebhookApiKeyHeader"},
        "ApiKeyValue": reference("apiKey"),
    }
    assert basic["BasicAuthParameters"] == {
        "Username": reference("username"),
        "Password": reference("password"),
    }
    assert template.raw["Conditions"]["HasWebhookSecretVersion"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "WebhookSecretVersionId"}, ""]}]
    }
    assert template.parameters["WebhookAuthType"]["AllowedValues"] == ["API_KEY", "BASIC"]
    # and an endpoint without its secret is refused before anything is created
    endpoint = "https://hooks.example.com/call-enricher"
    assert not accepted(template, WebhookEndpoint=endpoint)
    secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hook-AbCdEf"
    assert accepted(template, WebhookEndpoint=endpoint, WebhookSecretArn=secret)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("https://hooks.example.com/call-enricher?x=1", True),
        ("http://hooks.example.com/call-enricher", False),
        ("https://", False),
        ("https://hooks.example.com/a b", False),
        ("https://hooks.example.com/calls/{id}", False),  # EventBridge refuses the braces
        ("https://hooks.example.com/calls/%7Bid%7D", True),
    ],
)
def test_the_endpoint_is_https(template: Template, value: str, ok: bool) -> None:
    spec = template.parameters["WebhookEndpoint"]
    if ok:
        check_parameter("WebhookEndpoint", value, spec)
    else:
        with pytest.raises(ParameterError):
            check_parameter("WebhookEndpoint", value, spec)


def test_the_destination_posts_to_the_endpoint_at_the_rate_limit(template: Template) -> None:
    destination = props(template, "WebhookDestination")
    assert destination["ConnectionArn"] == {"Fn::GetAtt": ["WebhookConnection", "Arn"]}
    assert destination["InvocationEndpoint"] == {"Ref": "WebhookEndpoint"}
    assert destination["HttpMethod"] == "POST"
    assert destination["InvocationRateLimitPerSecond"] == {"Ref": "WebhookRateLimitPerSecond"}
    limit = template.parameters["WebhookRateLimitPerSecond"]
    assert (limit["MinValue"], limit["MaxValue"]) == (1, 300)  # the API destination's range


def test_the_rule_filters_by_the_parameters_retries_and_has_a_dlq(template: Template) -> None:
    rule = props(template, "WebhookRule")
    assert rule["EventBusName"] == {"Ref": "CallsEventBus"}
    assert rule["EventPattern"] == {
        "source": [{"Ref": "EventSource"}],
        "detail-type": {"Ref": "WebhookDetailTypes"},
        "detail": {
            "$or": [
                {"status": {"Ref": "WebhookStatuses"}},
                {"status": [{"exists": False}]},  # failures and spend alerts have no status
            ]
        },
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["WebhookDestination", "Arn"]}
    assert target["RoleArn"] == {"Fn::GetAtt": ["WebhookInvokeRole", "Arn"]}
    assert target["RetryPolicy"] == {
        "MaximumRetryAttempts": {"Ref": "WebhookMaxRetryAttempts"},
        "MaximumEventAgeInSeconds": {"Ref": "WebhookMaxEventAgeSeconds"},
    }
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}}
    attempts = template.parameters["WebhookMaxRetryAttempts"]
    age = template.parameters["WebhookMaxEventAgeSeconds"]
    assert (attempts["MinValue"], attempts["MaxValue"], attempts["Default"]) == (0, 185, 185)
    assert (age["MinValue"], age["MaxValue"], age["Default"]) == (60, 86400, 86400)


def test_the_filters_take_only_what_the_code_publishes(template: Template) -> None:
    detail_types = {
        events.DETAIL_TYPE_CALL_ENRICHED,
        events.DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
        events.DETAIL_TYPE_SPEND_THRESHOLD_CROSSED,
    }
    (types_check, statuses_check) = template.raw["Rules"]["WebhookFilters"]["Assertions"]
    assert set(types_check["Assert"]["Fn::EachMemberIn"][1]) == detail_types
    assert set(statuses_check["Assert"]["Fn::EachMemberIn"][1]) == {"FINAL", "ONGOING"}
    defaults = template.parameters["WebhookDetailTypes"]["Default"].split(",")
    assert set(defaults) <= detail_types
    assert accepted(template, WebhookDetailTypes=",".join(sorted(detail_types)))
    assert accepted(template, WebhookStatuses="FINAL,ONGOING")
    # spaces around the commas are trimmed (as CloudFormation does); a typo is refused
    assert accepted(template, WebhookDetailTypes="Call Enriched, Call Enrichment Failed")
    assert not accepted(template, WebhookDetailTypes="Call Enrichd")
    assert not accepted(template, WebhookStatuses="final")


def test_only_the_rule_may_invoke_the_destination_and_fill_the_dlq(template: Template) -> None:
    role = props(template, "WebhookInvokeRole")
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    ((statement,),) = [p["PolicyDocument"]["Statement"] for p in role["Policies"]]
    assert statement == {
        "Effect": "Allow",
        "Action": "events:InvokeApiDestination",
        "Resource": {"Fn::GetAtt": ["WebhookDestination", "Arn"]},
    }
    policy = props(template, "WebhookDeadLetterQueuePolicy")
    (allow,) = policy["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["WebhookRule", "Arn"]}}
    }
    queue = props(template, "WebhookDeadLetterQueue")
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["MessageRetentionPeriod"] == 1209600
