"""Operating the stack, as template.yaml declares it: the dashboard shows metrics that exist
(the code's custom metrics in its namespace and dimensions, the template's queues and
functions), a prod stack cannot deploy with alarms that reach no one, and every alarm links
to its entry in docs/runbook.md.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from call_enricher.observability import MetricName

from .conftest import REPO, TEMPLATE_PATH, Template, offline_env, run_tool

RUNBOOK = REPO / "docs" / "runbook.md"
LIBRARY = REPO / "layers" / "core" / "call_enricher"
SERVICE_DIMENSION = ("service", "call-enricher")
AWS_METRICS = {
    "AWS/SQS": {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateAgeOfOldestMessage",
    },
    "AWS/Lambda": {"Duration", "Errors", "Throttles", "IteratorAge"},
}


# -- helpers --------------------------------------------------------------------------------


def _alarms(template: Template) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template.of_type("AWS::CloudWatch::Alarm").items()
    }


def substitute(text: str, template: Template) -> str:
    """A !Sub string with each ${...} replaced by a recognisable stand-in, checking that
    every name it uses is a parameter, a pseudo parameter or a resource of the template."""

    def stand_in(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("AWS::"):
            return {"AWS::StackName": "STACK", "AWS::Region": "eu-west-1"}.get(name, name)
        logical_id, _, attribute = name.partition(".")
        assert logical_id in template.resources or logical_id in template.parameters, name
        return f"<{name}>" if not attribute else f"<{logical_id}.{attribute}>"

    return re.sub(r"\$\{([^}]+)\}", stand_in, text)


def dashboard_body(template: Template) -> dict[str, Any]:
    (dashboard,) = template.of_type("AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str)
    parsed: dict[str, Any] = json.loads(substitute(body, template))
    return parsed


def metric_rows(body: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """(widget title, metric row) for every metric row of every metric widget."""
    rows = []
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        rows.extend((widget["properties"]["title"], row) for row in widget["properties"]["metrics"])
    return rows


def code_dimensions() -> dict[str, set[str]]:
    """MetricName value -> the extra dimension the code emits it with (from the source:
    ``dimensioned_count(MetricName.X, count, "dimension", value)``)."""
    found: dict[str, set[str]] = {}
    for path in LIBRARY.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "dimensioned_count"
                and isinstance(node.args[0], ast.Attribute)
                and isinstance(node.args[2], ast.Constant)
            ):
                metric = MetricName[node.args[0].attr].value
                found.setdefault(metric, set()).add(str(node.args[2].value))
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """## heading slug -> the section's text."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = github_slug(line[3:])
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


# -- the dashboard ------------------------------------------------------------------------------


def test_the_dashboard_is_named_after_the_stack_and_its_body_is_json(template: Template) -> None:
    (dashboard,) = template.of_type("AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == {"Fn::Sub": "${AWS::StackName}"}
    body = dashboard_body(template)
    assert body["widgets"]
    for widget in body["widgets"]:
        # widgets fit CloudWatch's 24-column grid
        assert widget["x"] >= 0
        assert widget["x"] + widget["width"] <= 24
    assert "DashboardUrl" in template.raw["Outputs"]


def test_every_custom_metric_on_the_dashboard_is_one_the_code_emits(template: Template) -> None:
    # Given the namespace and service dimension every function's Powertools uses
    variables = template.function_globals["Environment"]["Variables"]
    namespace = substitute(variables["POWERTOOLS_METRICS_NAMESPACE"]["Fn::Sub"], template)
    assert variables["POWERTOOLS_SERVICE_NAME"] == SERVICE_DIMENSION[1]
    emitted = {m.value for m in MetricName}
    extra_dimensions = code_dimensions()
    assert extra_dimensions["EnrichmentFailed"] == {"reason"}  # the parser found them
    seen: set[str] = set()
    for title, row in metric_rows(dashboard_body(template)):
        if isinstance(row[0], dict):  # an expression: SEARCH over a metric's dimensions
            expression = row[0]["expression"]
            match = re.fullmatch(
                r"SEARCH\('\{([^}]+)\} MetricName=\"(\w+)\"', '(\w+)', (\d+)\)", expression
            )
            assert match, f"{title}: {expression}"
            schema, metric = match.group(1).split(","), match.group(2)
            assert schema[0] == namespace, title
            assert metric in emitted, f"{title}: {metric} is no MetricName"
            # Then the schema is exactly the dimensions the code emits it with
            assert set(schema[1:]) == {"service", *extra_dimensions[metric]}, title
            seen.add(metric)
            continue
        row_namespace, metric, *rest = row
        dimensions = [x for x in rest if not isinstance(x, dict)]
        if row_namespace.startswith("CallEnricher/"):
            assert row_namespace == namespace, title
            assert metric in emitted, f"{title}: {metric} is no MetricName"
            assert metric not in extra_dimensions, f"{title}: {metric} needs a SEARCH"
            assert tuple(dimensions) == SERVICE_DIMENSION, title
            seen.add(metric)
        else:
            assert metric in AWS_METRICS[row_namespace], f"{title}: {row_namespace} {metric}"
    # and the custom metrics the issue asks for are all on it
    assert {
        "RecordsEnriched",
        "EventsPublished",
        "EnrichmentFailed",
        "SinchLatency",
        "SinchResponses",
        "SinchFailures",
        "EventsRejected",
    } <= seen


def test_the_dashboard_shows_the_queues_and_every_function(template: Template) -> None:
    rows = metric_rows(dashboard_body(template))
    aws = [(row[0], row[1], row[3]) for _, row in rows if isinstance(row[0], str)]
    # Then every function's duration, errors and throttles are shown
    for function in template.functions:
        for metric in ("Duration", "Errors", "Throttles"):
            assert ("AWS/Lambda", metric, f"<{function}>") in aws, (function, metric)
    assert ("AWS/Lambda", "IteratorAge", "<StreamPublisherFunction>") in aws
    # and the enrichment queue's depth and age, the DLQ's and the failure queue's depth
    sqs = {(metric, queue) for namespace, metric, queue in aws if namespace == "AWS/SQS"}
    for queue in (
        "<EnrichmentQueue.QueueName>",
        "<EnrichmentDeadLetterQueue.QueueName>",
        "<PublisherFailureQueue.QueueName>",
    ):
        assert ("ApproximateNumberOfMessagesVisible", queue) in sqs
    assert ("ApproximateAgeOfOldestMessage", "<EnrichmentQueue.QueueName>") in sqs
    # and Sinch latency at p50 and p99
    latency = [row for _, row in rows if isinstance(row[0], str) and row[1] == "SinchLatency"]
    assert {row[-1]["stat"] for row in latency} == {"p50", "p99"}


def test_the_dashboard_shows_the_state_of_every_alarm(template: Template) -> None:
    (widget,) = [w for w in dashboard_body(template)["widgets"] if w["type"] == "alarm"]
    assert sorted(widget["properties"]["alarms"]) == sorted(
        f"<{name}.Arn>" for name in _alarms(template)
    )


def test_every_widget_the_runbook_names_is_on_the_dashboard(template: Template) -> None:
    titles = {
        w["properties"]["title"]
        for w in dashboard_body(template)["widgets"]
        if "title" in w["properties"]
    }
    text = RUNBOOK.read_text(encoding="utf-8")
    named = {" ".join(m.split()) for m in re.findall(r"(?<!\*)\*([A-Z][^*]+)\*(?!\*)", text)}
    assert named, "the runbook names no widget"
    assert named <= titles, named - titles


# -- alarms reach someone -----------------------------------------------------------------------


def evaluate(expression: Any, parameters: Mapping[str, str]) -> Any:
    """The CloudFormation rule functions the template uses, evaluated on parameter values."""
    if isinstance(expression, str):
        return expression
    ((function, argument),) = expression.items()
    if function == "Ref":
        return parameters[argument]
    if function == "Fn::Equals":
        left, right = (evaluate(a, parameters) for a in argument)
        return left == right
    if function == "Fn::Not":
        (inner,) = argument
        return not evaluate(inner, parameters)
    if function == "Fn::Or":
        return any(evaluate(a, parameters) for a in argument)
    if function == "Fn::And":
        return all(evaluate(a, parameters) for a in argument)
    if function == "Fn::EachMemberIn":  # a CommaDelimitedList's members, each one allowed
        members, allowed = argument
        listed = str(evaluate(members, parameters)).split(",")
        return {member.strip() for member in listed} <= set(allowed)  # CloudFormation trims
    raise AssertionError(f"unexpected rule function {function}")


def accepted(template: Template, **values: str) -> bool:
    """Whether CloudFormation's rules accept these parameter values (others: defaults)."""
    parameters = {
        name: str(spec.get("Default", "")) for name, spec in template.parameters.items()
    } | values
    for rule in template.raw["Rules"].values():
        if "RuleCondition" in rule and not evaluate(rule["RuleCondition"], parameters):
            continue
        if not all(evaluate(a["Assert"], parameters) for a in rule["Assertions"]):
            return False
    return True


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"Stage": "prod"}, False),
        ({"Stage": "prod", "AlarmEmail": "oncall@example.com"}, True),
        ({"Stage": "prod", "AlarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:oncall"}, True),
        (
            {
                "Stage": "prod",
                "AlarmEmail": "oncall@example.com",
                "AlarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:oncall",
            },
            True,
        ),
        ({"Stage": "dev"}, True),
        ({"Stage": "staging"}, True),
    ],
)
def test_a_prod_stack_is_refused_unless_its_alarms_reach_someone(
    template: Template, values: dict[str, str], expected: bool
) -> None:
    assert accepted(template, **values) is expected
    for assertion in template.raw["Rules"]["ProdAlarmsReachSomeone"]["Assertions"]:
        assert "AlarmEmail or AlarmTopicArn" in assertion["AssertDescription"]


def test_samconfig_prod_asks_for_an_alarm_address_that_a_deploy_cannot_skip(
    template: Template,
) -> None:
    text = (REPO / "samconfig.toml").read_text(encoding="utf-8")
    config = tomllib.loads(text)
    overrides = dict(
        token.split("=", 1)
        for token in config["prod"]["deploy"]["parameters"]["parameter_overrides"].split()
    )
    # Then prod names an alarm address, a placeholder the rule lets through ...
    placeholder = overrides["AlarmEmail"]
    assert placeholder.startswith("REPLACE-")
    assert accepted(template, **overrides)
    # ... that CloudFormation's parameter check refuses until it is replaced
    spec = template.parameters["AlarmEmail"]
    assert not re.fullmatch(spec["AllowedPattern"], placeholder)
    assert "placeholder" in spec["ConstraintDescription"]
    assert "ProdAlarmsReachSomeone" in text
    # and dev needs none
    dev = config["default"]["deploy"]["parameters"]["parameter_overrides"]
    assert "Alarm" not in dev


# -- the runbook ---------------------------------------------------------------------------------


def test_every_alarm_has_a_runbook_entry_and_its_description_links_to_it(
    template: Template,
) -> None:
    sections = runbook_sections()
    assert template.parameters["RunbookBaseUrl"]["Default"] == "docs/runbook.md"
    for name, alarm in _alarms(template).items():
        anchor = github_slug(name)
        # Then the description links to the entry ...
        description = alarm["AlarmDescription"]
        assert isinstance(description, dict), name
        assert description["Fn::Sub"].endswith(f"Runbook: ${{RunbookBaseUrl}}#{anchor}"), name
        assert len(description["Fn::Sub"]) < 1024 - 400, name  # AlarmDescription limit
        # ... and the entry says what it means, what to look at, what to do, when it is over
        assert anchor in sections, f"docs/runbook.md has no ## {name}"
        for part in ("What it means.", "Look first.", "What to do.", "Confirm it is over."):
            assert f"**{part}**" in sections[anchor], (name, part)
    # and the runbook has no entry for an alarm that does not exist
    alarm_anchors = {github_slug(name) for name in _alarms(template)}
    assert set(sections) == alarm_anchors


def test_the_runbooks_own_links_resolve() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = runbook_sections()
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in sections, anchor


# -- the SAM tools ---------------------------------------------------------------------------------

_TRANSLATE_RULES = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

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
def test_the_rule_and_the_dashboard_survive_the_sam_transform(
    sam_tools: Path, template: Template
) -> None:
    # Given the CloudFormation that SAM generates from template.yaml
    result = run_tool(
        [sam_tools / "python", "-c", _TRANSLATE_RULES, TEMPLATE_PATH],
        env=offline_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.output
    deployed = json.loads(result.stdout)
    # Then the rule is deployed as written, and so is the dashboard
    assert deployed["Rules"] == template.raw["Rules"]
    (dashboard,) = [
        r for r in deployed["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    assert (
        dashboard["Properties"]["DashboardBody"]
        == (
            template.of_type("AWS::CloudWatch::Dashboard")["CallEnricherDashboard"]["Properties"][
                "DashboardBody"
            ]
        )
    )
