"""docs/ against the code: what a page names must exist, and what exists must be named
(settings and environment, template parameters and outputs, CLI, make targets, routes, alarms,
failure reasons, risk signals); JSON examples parse, Python examples compile."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from call_enricher import errors
from call_enricher.observability import MetricName
from call_enricher.risk import RiskPolicy, SignalCode, load_policy
from call_enricher.service import _is_final_failure
from call_enricher.settings import Settings
from call_enricher_tools import cli, ops
from tests.docs import support as ds

_FUNCTIONS = "QueueEnricherFunction HttpApiFunction SinchCallbacksFunction StreamPublisherFunction"
LETTERS = dict(zip(_FUNCTIONS.split(), "QACP", strict=True))
# AWS API names the docs use; any other backticked CloudFormation-like name is template.yaml's
_VOCABULARY = (
    "ApplicationLogLevel BatchGetItem ChangeMessageVisibility DeletionPolicy DescribeReplay"
    " GetItem GetSecretValue ListMessageMoveTasks MaximumConcurrency ParallelizationFactor"
    " PutEvents ReportBatchItemFailures SecretString SendMessage SendMessageBatch StartReplay"
    " StartMessageMoveTask TransactWriteItems UpdateItem UpdateReplacePolicy"
)
AWS_VOCABULARY = frozenset(_VOCABULARY.split())
_CFN_NAME = re.compile(r"^[A-Z][a-z]+(?:[A-Z][a-z0-9]*)+$")  # two humps or more: CallsTable


def code_everywhere() -> list[str]:
    return [line for text in ds.all_docs().values() for line in ds.code_lines(text)]


# -- configuration and the template ----------------------------------------------------------


def test_every_environment_variable_the_code_reads_is_in_the_configuration_table() -> None:
    # Given every variable the deployed code reads: the settings model's fields, what the
    # library and handlers read by name, and everything template.yaml sets on any function
    read = set(Settings.env_var_names()) | ds.variables_read_by_code()
    for name in ds.functions():
        read |= set(ds.function_environment(name))
    # When docs/configuration.md's table is read
    documented = set(ds.first_column(ds.doc("configuration.md"), "variable"))
    # Then each one has a row, and no row names a variable nothing reads
    assert sorted(read - documented) == [], "variables the docs do not document"
    stale = documented - read - {"POWERTOOLS_LOG_LEVEL"}  # Powertools' own, named by settings.py
    assert sorted(stale) == [], "variables documented that no code reads"


def test_each_template_set_variable_names_its_parameter_and_its_functions() -> None:
    assert set(LETTERS) == set(ds.functions())
    for variable, row in ds.first_column(ds.doc("configuration.md"), "variable").items():
        # Given the functions template.yaml gives the variable to
        given = {name for name in ds.functions() if variable in ds.function_environment(name)}
        if not given:
            continue
        # Then its row lists exactly those functions
        assert set(row[3].split()) == {LETTERS[name] for name in given}, variable
        # And a value that is a !Ref names that parameter or resource
        for name in given:
            ref = ds.resource_name(ds.function_environment(name)[variable])
            assert ref is None or f"`{ref}`" in row[2], f"{variable} is set from {ref}"


def test_every_template_parameter_is_in_the_parameters_table_with_its_default() -> None:
    parameters: dict[str, Any] = ds.template()["Parameters"]
    documented = ds.first_column(ds.doc("parameters.md"), "parameter")
    assert list(documented) == list(parameters)  # the template's order
    for name, spec in parameters.items():
        default = documented[name][1]
        if "Default" not in spec:
            assert default == "(required)", name
        elif spec["Default"] == "":
            assert default == "empty", name
        else:
            assert default == f"`{spec['Default']}`", name


def test_the_outputs_table_lists_exactly_the_template_outputs() -> None:
    assert set(ds.first_column(ds.doc("parameters.md"), "output")) == set(ds.template()["Outputs"])


def test_parameter_overrides_in_examples_name_real_parameters() -> None:
    pattern = r"(?:^|\s)(?:-p|--parameter|--parameter-overrides)\s+([A-Za-z]+)="
    used = {n for line in code_everywhere() for n in re.findall(pattern, line) if not n.isupper()}
    assert used, "the docs show no parameter override"
    assert sorted(used - set(ds.template()["Parameters"])) == []


def test_every_cloudformation_name_in_the_docs_exists_in_the_template() -> None:
    known = (
        set(ds.template()["Parameters"])
        | set(ds.template()["Outputs"])
        | set(ds.template().get("Rules", {}))
        | set(ds.resources())
        | {metric.value for metric in MetricName}
        | AWS_VOCABULARY
        | {"CallbackConfig", "CallEnricher", "RiskPolicy"}  # classes; the default namespace
    )
    for name, text in ds.all_docs().items():
        spans = {span for span in ds.inline_code(text) if _CFN_NAME.match(span)}
        assert sorted(spans - known) == [], name


def test_every_api_route_is_documented_and_every_documented_route_exists() -> None:
    routes = {
        f"{event['Properties']['Method'].upper()} {event['Properties']['Path']}"
        for function in ds.functions().values()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "HttpApi"
    }
    documented = {row[0].strip("`") for row in ds.table(ds.doc("http-api.md"), "route")}
    assert documented == routes
    for name, text in ds.all_docs().items():  # and no page names a route that does not exist
        mentioned = {
            f"{method} {path}"
            for span in ds.inline_code(text)
            for method, path in re.findall(r"^(GET|POST|PUT|PATCH|DELETE) (/\S*)$", span)
            if path.startswith(("/calls", "/sinch", "/openapi"))
        }
        assert sorted(mentioned - routes) == [], name


def test_every_alarm_has_a_row_linking_to_its_runbook_entry() -> None:
    alarms = set(ds.resources("AWS::CloudWatch::Alarm"))
    rows = ds.first_column(ds.doc("operations.md"), "alarm")
    assert set(rows) == alarms
    for alarm, row in rows.items():
        assert f"runbook.md#{alarm.lower()}" in row[2], alarm


# -- CLI and make ----------------------------------------------------------------------------


def test_every_cli_command_is_in_the_reference_with_all_its_options() -> None:
    commands = ds.cli_commands()
    page = ds.doc("cli.md")
    # The ops commands' shared target options are spelled out once, as `TARGET = ...`
    target = next(s for s in ds.inline_code(page) if s.startswith("TARGET = "))
    synopsis = {}
    for row in ds.table(page, "command"):
        (code,) = ds.backticked(row[0].replace("\\|", "|"))
        name = max((c for c in commands if code.startswith(f"call-enricher {c}")), key=len)
        synopsis[name] = code.replace("[TARGET]", target)
    # Then every command has a row
    assert sorted(commands) == sorted(synopsis)
    # And each row shows each option (one spelling is enough) and no option that does not exist
    for name, parser in commands.items():
        shown, spellings = ds.options_in(synopsis[name]), ds.options_of(parser)
        assert [s[0] for s in spellings if not shown & set(s)] == [], f"{name}: options missing"
        assert sorted(shown - {s for group in spellings for s in group}) == [], name
    # And both exit code tables list every code
    for header, codes in (("code", cli.EXIT_CODES), ("ops code", ops.EXIT_CODES)):
        assert set(codes) <= {int(row[0]) for row in ds.table(page, header)}, header


def test_every_cli_invocation_in_the_docs_is_a_command_with_real_options() -> None:
    commands = ds.cli_commands()
    invocations = [
        match.group(1)
        for line in code_everywhere()
        for match in re.finditer(r"(?:^|[\s/])call-enricher ([^`|;&(]*)", line)
    ]
    assert invocations
    for text in invocations:
        words = text.split()
        if not words or words[0].isupper():
            continue  # a placeholder: `call-enricher COMMAND --help`
        # Given a `call-enricher ...` in a page's code: its longest command prefix
        prefixes = [" ".join(words[:n]) for n in (3, 2, 1)]
        name = next((prefix for prefix in prefixes if prefix in commands), words[0])
        # Then it is a command (`ops dlq` alone is only a prefix) and its options exist
        assert name in commands or any(c.startswith(f"{name} ") for c in commands), text
        if name in commands:
            known = {s for group in ds.options_of(commands[name]) for s in group} | {"--help"}
            assert sorted(ds.options_in(text) - known) == [], text


def test_make_targets_in_the_docs_are_exactly_the_ones_make_help_lists() -> None:
    targets = ds.make_targets()
    assert {"setup", "test", "demo"} <= targets
    pattern = r"(?:^|[\s$(])make ([a-z][a-z-]*)"
    used = {t for line in code_everywhere() for t in re.findall(pattern, line)}
    listed = {n.removeprefix("make ") for n in ds.first_column(ds.doc("cli.md"), "target")}
    assert sorted(used - targets) == []
    assert listed == targets


# -- contracts -------------------------------------------------------------------------------


def test_the_reason_table_is_the_code_s_failure_reasons_in_order() -> None:
    # Given the reasons a failure state can carry (errors.FailureReason, the one list)
    reasons = [reason.value for reason in errors.FailureReason]
    # When docs/events.md's reason table is read
    table = [
        name for row in ds.table(ds.doc("events.md"), "reason") for name in ds.backticked(row[0])
    ]
    # Then it lists exactly those, once each, in the code's order
    assert table == reasons


def test_the_reasons_named_as_retried_are_the_errors_that_are_never_stored() -> None:
    # Given the reasons of the errors the service retries instead of storing (transient ones
    # and the ones an operator must fix)
    Error = type[errors.CallEnricherError]

    def subclasses(cls: Error) -> list[Error]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    retried = {
        cls.reason
        for cls in subclasses(errors.CallEnricherError)[1:]  # the base is abstract
        if cls.__module__.startswith("call_enricher.") and not _is_final_failure(cls("x"))
    }
    # When docs/events.md's paragraph about what is never a failure state is read
    (paragraph,) = [p for p in ds.doc("events.md").split("\n\n") if "never a failure state" in p]
    named = {code for code in ds.inline_code(paragraph) if re.fullmatch(r"[a-z]+(-[a-z]+)+", code)}
    # Then it names exactly those (and no failure reason)
    assert named == retried
    assert not retried & set(errors.FailureReason)


def test_the_risk_signals_and_the_policy_example_are_the_code_s() -> None:
    assert set(ds.first_column(ds.doc("risk.md"), "signal `code`")) == {s.value for s in SignalCode}
    sections = {field.alias for field in RiskPolicy.model_fields.values()}
    policies = [json.loads(b) for b in ds.fenced_blocks(ds.doc("risk.md"), "json")]
    examples = [p for p in policies if set(p) <= sections and "level" not in p]
    assert examples, "docs/risk.md shows no policy document"
    for example in examples:
        load_policy(example)  # raises, naming the field, when the example is not valid


def test_every_fenced_json_example_parses_and_every_python_example_compiles() -> None:
    for text in ds.all_docs().values():
        for block in ds.fenced_blocks(text, "json"):
            json.loads(block)
        for block in ds.fenced_blocks(text, "python"):
            ast.parse(block)
    assert ds.fenced_blocks(ds.doc("http-api.md"), "python")
