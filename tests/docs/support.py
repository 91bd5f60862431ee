"""Reading the docs (Markdown) and the code they describe, one helper per concept: every
expectation of tests/docs comes from the code, the Makefiles or template.yaml, read as text."""

from __future__ import annotations

import argparse
import itertools
import re
import textwrap
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from call_enricher_tools.cli import build_parser
from call_enricher_tools.local.template import load_cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAKEFILES = (ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk")))
# The deployable code: what Lambda runs (the layer and the handlers), not the local tooling.
DEPLOYED_SOURCES = (
    *sorted((ROOT / "layers" / "core" / "call_enricher").rglob("*.py")),
    *sorted((ROOT / "functions").glob("*/app.py")),
)
_ENV_READ = re.compile(  # env.get("X"), os.environ["X"], os.getenv("X"), "X" in os.environ
    r"""\b(?:(?:environ|env)(?:\.get\(|\[)|getenv\()\s*["']([A-Z][A-Z0-9_]+)["']"""
    r"""|["']([A-Z][A-Z0-9_]+)["']\s+(?:not\s+)?in\s+(?:os\.)?(?:environ|env)\b"""
)
_EDGE = re.compile(r"-\.->|-->|==>")


# -- Markdown --------------------------------------------------------------------------------


@cache
def doc(name: str) -> str:
    """``"README.md"`` or a page of docs/ (``"cli.md"``)."""
    return (README if name == "README.md" else DOCS / name).read_text(encoding="utf-8")


def all_docs() -> dict[str, str]:
    """README.md and every page of docs/, by name."""
    return {"README.md": doc("README.md")} | {
        p.name: doc(p.name) for p in sorted(DOCS.glob("*.md"))
    }


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


def table(text: str, first_header: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first table whose first header is ``first_header``."""
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines[:-1]):
        if _cells(line)[:1] == [first_header] and "---" in lines[i + 1]:
            rows = itertools.takewhile(lambda row: row.startswith("|"), lines[i + 2 :])
            return [_cells(row) for row in rows]
    raise AssertionError(f"no table with first column {first_header!r}")


def _cells(line: str) -> list[str]:
    if not line.startswith("|"):
        return []
    return [part.strip() for part in re.split(r"(?<!\\)\|", line.strip("|"))]


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def first_column(text: str, first_header: str) -> dict[str, list[str]]:
    """Each backticked name of a table's first column -> its row."""
    return {name: row for row in table(text, first_header) for name in backticked(row[0])}


def links(text: str) -> list[str]:
    """The targets of the Markdown links (``[text](target)``)."""
    return re.findall(r"\]\(([^)\s]+)\)", text)


# -- template.yaml ---------------------------------------------------------------------------


@cache
def template() -> dict[str, Any]:
    return load_cfn_yaml((ROOT / "template.yaml").read_text(encoding="utf-8"))


def resources(kind: str | None = None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = template()["Resources"]
    return {k: v for k, v in found.items() if kind is None or v["Type"] == kind}


def functions() -> dict[str, dict[str, Any]]:
    return resources("AWS::Serverless::Function")


def function_environment(name: str) -> dict[str, Any]:
    """A function's variables, the Globals' included (what Lambda gives it)."""
    shared = template().get("Globals", {}).get("Function", {}).get("Environment", {})
    own = functions()[name]["Properties"].get("Environment", {})
    return {**shared.get("Variables", {}), **own.get("Variables", {})}


def resource_name(value: Any) -> str | None:
    """The logical ID behind ``!Ref X`` or ``!GetAtt X.Attr``."""
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        attr = value["Fn::GetAtt"]
        return str(attr[0] if isinstance(attr, list) else attr.split(".")[0])
    return None


def triggers(function: str) -> set[str | None]:
    """The logical IDs whose events invoke a function: its queue, stream's table or API."""
    return {
        resource_name(
            next(e["Properties"][k] for k in ("Queue", "Stream", "ApiId") if k in e["Properties"])
        )
        for e in functions()[function]["Properties"].get("Events", {}).values()
    }


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def granted(function: str, action_prefix: str) -> set[str]:
    """The logical IDs a function's role may use with actions starting with ``action_prefix``
    (conditional statements, ``!If``, included)."""
    role = resource_name(functions()[function]["Properties"]["Role"])
    assert role is not None, f"{function} has no role of this template"
    targets: set[str] = set()
    for policy in resources()[role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if isinstance(statement, dict) and "Fn::If" in statement:
                statement = statement["Fn::If"][1]
            if any(a.startswith(action_prefix) for a in as_list(statement["Action"])):
                names = (resource_name(value) for value in as_list(statement["Resource"]))
                targets.update(name for name in names if name is not None)
    return targets


# -- the code --------------------------------------------------------------------------------


def variables_read_by_code() -> set[str]:
    """The environment variables the deployed code reads by name, outside the settings model."""
    names: set[str] = set()
    for path in DEPLOYED_SOURCES:
        for groups in _ENV_READ.findall(path.read_text(encoding="utf-8")):
            names.update(name for name in groups if name)
    return names


def make_targets() -> set[str]:
    """The targets ``make help`` lists (its own rule: a ``## `` comment on the rule line)."""
    rule = re.compile(r"^([a-z-]+):.*## ", flags=re.M)
    return {target for path in MAKEFILES for target in rule.findall(path.read_text())}


def cli_commands() -> dict[str, Any]:
    """``"enrich"``, ``"local up"``, ``"ops dlq list"``... -> that command's parser (leaves)."""
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
    """Each optional argument's spellings (``--help`` and hidden ones left out)."""
    return [
        list(action.option_strings)
        for action in parser._actions
        if action.option_strings
        and "--help" not in action.option_strings
        and action.help is not argparse.SUPPRESS
    ]


def options_in(text: str) -> set[str]:
    """The ``--option`` / ``-p`` spellings a synopsis or a command line shows."""
    return set(re.findall(r"(?:^|[\s\[|(])(--?[a-z][a-z0-9-]*)", text))


# -- the Mermaid diagram ---------------------------------------------------------------------


def mermaid_edges(text: str) -> set[tuple[str, str, str]]:
    """``(from, to, label)`` for every arrow of the page's diagram, ``A & B --> C`` expanded."""
    (diagram,) = fenced_blocks(text, "mermaid")
    edges: set[tuple[str, str, str]] = set()
    for line in diagram.splitlines()[1:]:
        labels = re.findall(r"\|([^|]*)\|", line)
        bare = re.sub(r'"[^"]*"', "", re.sub(r"\|[^|]*\|", " ", line))
        while True:  # drop node shapes and labels, innermost first: X[(label)] -> X
            shorter = re.sub(r"\[[^\[\]]*\]|\([^()]*\)|\{[^{}]*\}", "", bare)
            if shorter == bare:
                break
            bare = shorter
        groups = [[n.strip() for n in part.split("&") if n.strip()] for part in _EDGE.split(bare)]
        for left, right in itertools.pairwise(groups):
            edges.update((a, b, labels[0] if labels else "") for a in left for b in right)
    return edges
