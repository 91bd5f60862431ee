"""README.md against the code: what it names must exist, and what exists must be named.

Every expectation is derived from the code, the Makefiles or template.yaml, never from a list
kept here: the environment variables (the settings model, the variables the library and the
handlers read, the template's ``Environment``), the CLI (``call_enricher_tools.cli``'s
argparse parser), the make targets (the ``## `` help lines of ``Makefile`` and ``mk/*.mk``),
the template's parameters, outputs, routes, resources and permissions (the Mermaid diagram's
nodes and arrows). Fenced JSON examples must parse and Python examples must compile.

Offline and fast: the README and template.yaml are read as text, nothing is started.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import textwrap
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from call_enricher.observability import MetricName
from call_enricher.settings import Settings
from call_enricher_tools.cli import EXIT_CODES, build_parser
from call_enricher_tools.local.template import load_cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TEMPLATE = ROOT / "template.yaml"
MAKEFILES = (ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk")))
# The deployable code: what Lambda runs (the layer and the handlers), not the local tooling.
DEPLOYED_SOURCES = (
    *sorted((ROOT / "layers" / "core" / "call_enricher").rglob("*.py")),
    *sorted((ROOT / "functions").glob("*/app.py")),
)

# AWS API operations and property names the README uses as vocabulary; everything else in
# backticks that looks like a CloudFormation name must be in template.yaml.
AWS_VOCABULARY = frozenset(
    {
        "ApplicationLogLevel",
        "BatchGetItem",
        "GetItem",
        "GetSecretValue",
        "MaximumConcurrency",
        "PutEvents",
        "ReportBatchItemFailures",
        "SendMessage",
        "SendMessageBatch",
        "UpdateItem",
        "UpdateReplacePolicy",
        "DeletionPolicy",
    }
)
_CFN_NAME = re.compile(r"^[A-Z][a-z]+(?:[A-Z][a-z0-9]*)+$")  # two humps or more: CallsTable
_ENV_READ = re.compile(  # env.get("X"), os.environ["X"], os.getenv("X"), "X" in os.environ
    r"""\b(?:(?:environ|env)(?:\.get\(|\[)|getenv\()\s*["']([A-Z][A-Z0-9_]+)["']"""
    r"""|["']([A-Z][A-Z0-9_]+)["']\s+(?:not\s+)?in\s+(?:os\.)?(?:environ|env)\b"""
)
_EDGE = re.compile(r"-\.->|-->|==>")


# -- reading the README ----------------------------------------------------------------------


@cache
def readme() -> str:
    return README.read_text(encoding="utf-8")


def fenced_blocks(text: str, language: str | None = None) -> list[str]:
    """The fenced code blocks (of one language when given), list indentation removed."""
    blocks = re.findall(r"^[ \t]*```([\w-]*)\n(.*?)^[ \t]*```", text, flags=re.M | re.S)
    return [textwrap.dedent(body) for lang, body in blocks if language is None or lang == language]


def inline_code(text: str) -> list[str]:
    """The inline code spans outside fenced blocks."""
    prose = re.sub(r"^[ \t]*```.*?^[ \t]*```", "", text, flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def code_lines(text: str) -> Iterator[str]:
    """Every line of code: inline spans and the lines of fenced blocks."""
    yield from inline_code(text)
    for block in fenced_blocks(text):
        yield from block.splitlines()


def section(text: str, heading: str) -> str:
    """The body of the section whose heading line is ``heading`` (up to the next one at its
    level or above)."""
    level = len(heading) - len(heading.lstrip("#"))
    match = re.search(rf"^{re.escape(heading)}\s*$", text, flags=re.M)
    assert match, f"README has no section {heading!r}"
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def table(text: str, first_header: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first Markdown table whose first header cell is
    ``first_header``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = _cells(line)
        if cells and cells[0] == first_header and i + 1 < len(lines) and "---" in lines[i + 1]:
            rows = []
            for row in lines[i + 2 :]:
                if not row.strip().startswith("|"):
                    break
                rows.append(_cells(row))
            return rows
    raise AssertionError(f"no table with first column {first_header!r}")


def _cells(line: str) -> list[str]:
    stripped = line.strip()
    if not stripped.startswith("|"):
        return []
    parts = re.split(r"(?<!\\)\|", stripped.strip("|"))
    return [part.strip() for part in parts]


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# -- reading the code ------------------------------------------------------------------------


@cache
def template() -> dict[str, Any]:
    return load_cfn_yaml(TEMPLATE.read_text(encoding="utf-8"))


def resources(kind: str | None = None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = template()["Resources"]
    return {k: v for k, v in found.items() if kind is None or v["Type"] == kind}


def functions() -> dict[str, dict[str, Any]]:
    return resources("AWS::Serverless::Function")


def function_environment(name: str) -> dict[str, Any]:
    """A function's variables, the Globals' included (what Lambda gives it)."""
    globals_ = template().get("Globals", {}).get("Function", {})
    shared = globals_.get("Environment", {}).get("Variables", {})
    own = functions()[name]["Properties"].get("Environment", {}).get("Variables", {})
    return {**shared, **own}


def variables_read_by_code() -> set[str]:
    """The environment variables the deployed code reads by name, outside the settings model."""
    names: set[str] = set()
    for path in DEPLOYED_SOURCES:
        for groups in _ENV_READ.findall(path.read_text(encoding="utf-8")):
            names.update(name for name in groups if name)
    return names


def make_targets() -> set[str]:
    """The targets ``make help`` lists (its own rule: a ``## `` comment on the rule line)."""
    targets: set[str] = set()
    for path in MAKEFILES:
        targets.update(re.findall(r"^([a-z-]+):.*## ", path.read_text(), flags=re.M))
    return targets


def cli_commands() -> dict[str, Any]:
    """``"enrich"``, ``"local up"``... -> the argparse parser of that command (leaves only)."""
    found: dict[str, Any] = {}

    def walk(parser: Any, prefix: str) -> None:
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            found[prefix] = parser
            return
        for name, child in subs[0].choices.items():
            walk(child, f"{prefix} {name}".strip())

    walk(build_parser(), "")
    return found


def options_of(parser: Any) -> list[list[str]]:
    """Each optional argument's spellings (``--help`` left out)."""
    return [
        list(action.option_strings)
        for action in parser._actions
        if action.option_strings and "--help" not in action.option_strings
    ]


def resource_name(value: Any) -> str | None:
    """The logical ID behind ``!Ref X`` or ``!GetAtt X.Attr``."""
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0])
    return None


def role_statements(function: str) -> list[dict[str, Any]]:
    """The statements of a function's role, conditional ones (``!If``) included."""
    role = resource_name(functions()[function]["Properties"]["Role"])
    assert role is not None, f"{function} has no role of this template"
    statements = []
    for policy in resources()[role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if isinstance(statement, dict) and "Fn::If" in statement:
                statement = statement["Fn::If"][1]
            statements.append(statement)
    return statements


def granted(function: str, action_prefix: str) -> set[str]:
    """The logical IDs (resources or parameters) a function may use with actions starting
    with ``action_prefix`` (``sqs:SendMessage``, ``dynamodb:``...)."""
    targets: set[str] = set()
    for statement in role_statements(function):
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else actions
        if not any(action.startswith(action_prefix) for action in actions):
            continue
        listed = statement["Resource"]
        for value in listed if isinstance(listed, list) else [listed]:
            name = resource_name(value)
            if name is not None:
                targets.add(name)
    return targets


# -- the Mermaid diagram ---------------------------------------------------------------------


def mermaid_edges() -> set[tuple[str, str, str]]:
    """``(from, to, label)`` for every arrow of the diagram, ``A & B --> C`` expanded."""
    (diagram,) = fenced_blocks(readme(), "mermaid")
    edges: set[tuple[str, str, str]] = set()
    for line in diagram.splitlines()[1:]:
        labels = re.findall(r"\|([^|]*)\|", line)
        bare = re.sub(r"\|[^|]*\|", " ", line)
        bare = re.sub(r'"[^"]*"', "", bare)
        while True:  # drop node shapes and labels, innermost first: X[(label)] -> X
            shorter = re.sub(r"\[[^\[\]]*\]|\([^()]*\)|\{[^{}]*\}", "", bare)
            if shorter == bare:
                break
            bare = shorter
        groups = [[n.strip() for n in part.split("&") if n.strip()] for part in _EDGE.split(bare)]
        label = labels[0] if labels else ""
        for left, right in itertools.pairwise(groups):
            edges.update((a, b, label) for a in left for b in right)
    return edges


def mermaid_nodes() -> set[str]:
    return {node for a, b, _ in mermaid_edges() for node in (a, b)}


def has_edge(source: str | None, target: str | None) -> bool:
    return any(a == source and b == target for a, b, _ in mermaid_edges())


# -- configuration ---------------------------------------------------------------------------


def env_table() -> dict[str, list[str]]:
    """Variable -> its row, from the configuration section's variables table."""
    rows = table(section(readme(), "## Configuration"), "variable")
    return {name: row for row in rows for name in backticked(row[0])}


def test_every_environment_variable_the_code_reads_is_in_the_configuration_table() -> None:
    # Given every variable the deployed code reads: the settings model's fields, what the
    # library and handlers read by name (the callback receiver, Powertools' names), and
    # everything template.yaml sets on any function
    read = set(Settings.env_var_names()) | variables_read_by_code()
    for name in functions():
        read |= set(function_environment(name))
    assert Settings.env_var_names() <= read
    # When the README's configuration table is read
    documented = set(env_table())
    # Then each one has a row, and no row names a variable nothing reads
    assert sorted(read - documented) == [], "variables the README does not document"
    stale = documented - read - {"POWERTOOLS_LOG_LEVEL"}  # Powertools' own, named by settings.py
    assert sorted(stale) == [], "variables documented that no code reads"


def test_each_template_set_variable_names_its_parameter_and_its_functions() -> None:
    # Given the variables each function gets from template.yaml
    letters = {
        "QueueEnricherFunction": "Q",
        "HttpApiFunction": "A",
        "SinchCallbacksFunction": "C",
    }
    assert set(letters) == set(functions())
    rows = env_table()
    for variable, row in rows.items():
        given = {name for name in functions() if variable in function_environment(name)}
        if not given:
            continue
        # When its row is read
        set_by, used_by = row[2], set(row[3].split())
        # Then it lists exactly the functions the template gives it to
        assert used_by == {letters[name] for name in given}, variable
        # And a value that is a !Ref names that parameter or resource
        values = {json.dumps(function_environment(name)[variable]) for name in given}
        for value in values:
            ref = resource_name(json.loads(value))
            if ref is not None:
                assert f"`{ref}`" in set_by, f"{variable} is set from {ref}"


# -- template parameters, outputs, names -----------------------------------------------------


def test_every_template_parameter_is_in_the_parameters_table_with_its_default() -> None:
    # Given the template's parameters
    parameters: dict[str, Any] = template()["Parameters"]
    # When the README's parameters table is read
    rows = table(section(readme(), "### Template parameters"), "parameter")
    documented = {backticked(row[0])[0]: row for row in rows}
    # Then it has exactly the template's parameters
    assert list(documented) == list(parameters)
    # And each default as the template says
    for name, spec in parameters.items():
        default = documented[name][1]
        if "Default" not in spec:
            assert default == "(required)", name
        elif spec["Default"] == "":
            assert default == "empty", name
        else:
            assert default == f"`{spec['Default']}`", name


def test_parameter_overrides_in_examples_name_real_parameters() -> None:
    # Given every `-p Name=Value` / `--parameter Name=Value` in the README's code
    used = {
        name
        for line in code_lines(readme())
        for name in re.findall(
            r"(?:^|\s)(?:-p|--parameter|--parameter-overrides)\s+([A-Za-z]+)=", line
        )
        if not name.isupper()  # NAME=VALUE is the placeholder
    }
    # Then each is a template parameter
    assert used, "the README shows no parameter override"
    assert sorted(used - set(template()["Parameters"])) == []


def test_the_outputs_table_lists_exactly_the_template_outputs() -> None:
    # Given the template's outputs
    outputs = set(template()["Outputs"])
    # When the Deploy section's outputs table is read
    rows = table(section(readme(), "## Deploy"), "output")
    documented = {name for row in rows for name in backticked(row[0])}
    # Then both name the same outputs
    assert documented == outputs


def test_every_cloudformation_name_in_the_readme_exists_in_the_template() -> None:
    # Given every backticked name shaped like a CloudFormation one (CallsTable, ApiUrl...)
    names = {span for span in inline_code(readme()) if _CFN_NAME.match(span)}
    # When compared with the template's parameters, outputs and resources, the service's
    # metric names and a few AWS API names
    known = (
        set(template()["Parameters"])
        | set(template()["Outputs"])
        | set(resources())
        | {metric.value for metric in MetricName}
        | AWS_VOCABULARY
        | {"CallbackConfig", "CallEnricher"}  # a class of callbacks.py; the default namespace
    )
    # Then each one exists
    assert sorted(names - known) == []


def test_every_api_route_is_documented_and_every_documented_route_exists() -> None:
    # Given the template's HTTP API routes
    routes = {
        f"{event['Properties']['Method'].upper()} {event['Properties']['Path']}"
        for function in functions().values()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "HttpApi"
    }
    # When the README's routes on /calls, /sinch and /openapi.json are collected
    mentioned = {
        f"{method} {path}"
        for span in inline_code(readme())
        for method, path in re.findall(r"^(GET|POST|PUT|PATCH|DELETE) (/\S*)$", span)
        if path.startswith(("/calls", "/sinch", "/openapi"))
    }
    # Then they are the same routes
    assert mentioned == routes


# -- the diagram -----------------------------------------------------------------------------


def test_the_diagram_names_only_template_resources_and_shows_every_main_one() -> None:
    # Given the diagram's nodes (capitalised ones are logical IDs; lower-case ones are
    # outside the stack: producers, Sinch...)
    nodes = mermaid_nodes()
    named = {node for node in nodes if node[0].isupper()}
    # Then every capitalised node is a resource or parameter of the template
    assert sorted(named - set(resources()) - set(template()["Parameters"])) == []
    # And every function, queue, table, bus, archive, rule and API of the template appears
    (diagram,) = fenced_blocks(readme(), "mermaid")
    shown_kinds = (
        "AWS::Serverless::Function",
        "AWS::Serverless::HttpApi",
        "AWS::SQS::Queue",
        "AWS::DynamoDB::Table",
        "AWS::Events::EventBus",
        "AWS::Events::Archive",
        "AWS::Events::Rule",
    )
    expected = {name for kind in shown_kinds for name in resources(kind)}
    assert sorted(name for name in expected if name not in diagram) == []


def test_the_diagram_arrows_into_functions_are_their_triggers() -> None:
    for name, function in functions().items():
        # Given a function's event sources in the template
        for event in function["Properties"].get("Events", {}).values():
            spec = event["Properties"]
            source = resource_name(spec["Queue"] if event["Type"] == "SQS" else spec["ApiId"])
            # Then the diagram draws an arrow from that source into the function
            assert has_edge(source, name), f"{source} --> {name} is missing"
    # And no arrow enters a function from anything else of the template except the secret
    for source, target, _ in mermaid_edges():
        if target in functions() and source[0].isupper() and source != "SinchSecretArn":
            triggers = {
                resource_name(e["Properties"].get("Queue") or e["Properties"].get("ApiId"))
                for e in functions()[target]["Properties"].get("Events", {}).values()
            }
            assert source in triggers, f"{source} --> {target} is not a trigger"


@pytest.mark.parametrize(
    ("action", "target"),
    [
        ("sqs:SendMessage", "EnrichmentQueue"),
        ("dynamodb:", "CallsTable"),
        ("events:PutEvents", "CallsEventBus"),
    ],
)
def test_the_diagram_arrows_out_of_functions_are_their_permissions(
    action: str, target: str
) -> None:
    for name in functions():
        # Given whether the function's role allows the action on the resource
        allowed = target in granted(name, action)
        # Then the diagram draws the arrow exactly when it does
        assert has_edge(name, target) == allowed, f"{name} --> {target}: role says {allowed}"


def test_the_diagram_shows_who_reads_the_secret_the_dlq_the_archive_and_the_rule() -> None:
    # Given the secret readers, the redrive policy, the archive and the example rule
    for name in functions():
        reads = "SinchSecretArn" in granted(name, "secretsmanager:GetSecretValue")
        assert has_edge("SinchSecretArn", name) == reads, name
    for queue, spec in resources("AWS::SQS::Queue").items():
        redrive = spec["Properties"].get("RedrivePolicy")
        if redrive:
            assert has_edge(queue, resource_name(redrive["deadLetterTargetArn"]))
    for archive, spec in resources("AWS::Events::Archive").items():
        assert has_edge(resource_name(spec["Properties"]["SourceArn"]), archive)
    for rule, spec in resources("AWS::Events::Rule").items():
        bus = resource_name(spec["Properties"]["EventBusName"])
        for target in spec["Properties"]["Targets"]:
            # Then each is an arrow (a rule's arrow is labelled with its name)
            assert (bus, resource_name(target["Arn"]), rule) in mermaid_edges()


# -- CLI and make ----------------------------------------------------------------------------


def test_every_cli_command_is_in_the_reference_with_all_its_options() -> None:
    # Given every command of the argparse parser (nested ones as "local up")
    commands = cli_commands()
    # When the CLI reference table is read
    rows = table(section(readme(), "## CLI reference"), "command")
    synopsis = {}
    for row in rows:
        (code,) = backticked(row[0].replace("\\|", "|"))
        name = next(
            c
            for c in sorted(commands, key=len, reverse=True)
            if code.startswith(f"call-enricher {c}")
        )
        synopsis[name] = code
    # Then every command has a row
    assert sorted(commands) == sorted(synopsis)
    # And each row shows each option (one spelling is enough) and no option that does not exist
    for name, parser in commands.items():
        shown = set(re.findall(r"(?:^|[\s\[|(])(--?[a-z][a-z0-9-]*)", synopsis[name]))
        spellings = options_of(parser)
        missing = [s[0] for s in spellings if not shown & set(s)]
        assert missing == [], f"{name}: options not in the reference"
        assert sorted(shown - {s for group in spellings for s in group}) == [], name


def test_every_cli_invocation_in_the_readme_is_a_command_with_real_options() -> None:
    commands = cli_commands()
    invocations = [
        match.group(1)
        for line in code_lines(readme())
        for match in re.finditer(r"(?:^|[\s/])call-enricher ([^`|;&]*)", line)
    ]
    assert invocations
    for text in invocations:
        words = text.split()
        if words[0].isupper():
            continue  # a placeholder: `call-enricher COMMAND --help`
        # Given a `call-enricher ...` in the README's code
        name = " ".join(words[:2]) if words[:2] and " ".join(words[:2]) in commands else words[0]
        # Then it is a command of the parser (`local` alone is only a prefix of `local up`)
        assert name in commands or any(c.startswith(f"{name} ") for c in commands), text
        if name in commands and "COMMAND" not in text:
            # And its options exist
            known = {s for group in options_of(commands[name]) for s in group} | {"--help"}
            used = set(re.findall(r"(?:^|\s)(--?[a-z][a-z0-9-]*)", text))
            assert sorted(used - known) == [], text


def test_every_cli_exit_code_is_in_the_exit_code_table() -> None:
    rows = table(section(readme(), "## CLI reference"), "code")
    documented = {int(row[0]) for row in rows}
    assert set(EXIT_CODES) <= documented


def test_make_targets_in_the_readme_are_exactly_the_ones_make_help_lists() -> None:
    # Given the targets `make help` lists
    targets = make_targets()
    assert {"setup", "test", "demo"} <= targets
    # When every `make <target>` in the README's code is collected
    used = {
        target
        for line in code_lines(readme())
        for target in re.findall(r"(?:^|[\s$(])make ([a-z][a-z-]*)", line)
    }
    table_rows = table(section(readme(), "### make targets"), "target")
    listed = {backticked(row[0])[0].removeprefix("make ") for row in table_rows}
    # Then each exists, and the targets table lists every one of them
    assert sorted(used - targets) == []
    assert listed == targets


# -- structure and examples ------------------------------------------------------------------


def test_the_readme_starts_with_a_quickstart_of_make_demo_and_make_test() -> None:
    headings = re.findall(r"^## (.+)$", readme(), flags=re.M)
    assert headings[0] == "Quickstart"
    quickstart = section(readme(), "## Quickstart")
    assert "make demo" in quickstart
    assert "make test" in quickstart
    assert "Events on the bus" in quickstart  # a pasted demo run, not a description


def test_every_fenced_json_example_parses() -> None:
    blocks = fenced_blocks(readme(), "json")
    assert blocks
    for block in blocks:
        json.loads(block)


def test_every_fenced_python_example_compiles() -> None:
    blocks = fenced_blocks(readme(), "python")
    assert blocks
    for block in blocks:
        ast.parse(block)
