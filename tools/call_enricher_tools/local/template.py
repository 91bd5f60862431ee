"""template.yaml as data, for the local stack: short-form tags, parameters and intrinsics.

The local stack creates its resources from the template's own definitions, so this module
reads ``template.yaml`` with a PyYAML loader that understands CloudFormation's short-form
tags (``!Ref``, ``!GetAtt``, ``!Sub``, ``!If``...) and resolves the few intrinsic functions
the properties it needs use, against parameter values (the template's defaults, overridden
locally) and the physical names of what the local stack created.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from call_enricher.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

INTRINSICS = {
    "Ref": "Ref",
    "Condition": "Condition",
    "GetAtt": "Fn::GetAtt",
    **{
        name: f"Fn::{name}"
        for name in (
            "Sub",
            "Join",
            "Select",
            "Split",
            "If",
            "Equals",
            "Not",
            "And",
            "Or",
            "FindInMap",
            "Base64",
            "Cidr",
            "ImportValue",
            "GetAZs",
            "Transform",
            "Length",
            "ToJsonString",
        )
    },
}


class CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe YAML loader (libyaml's when PyYAML has it: several times faster) that turns
    CloudFormation short-form tags into their long form."""


def _construct_intrinsic(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if tag_suffix not in INTRINSICS:
        raise yaml.constructor.ConstructorError(
            None, None, f"unknown tag !{tag_suffix}", node.start_mark
        )
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {INTRINSICS[tag_suffix]: value}


CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_cfn_yaml(text: str) -> dict[str, Any]:
    """Parse CloudFormation YAML (short-form tags become long-form dicts)."""
    data = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader
    if not isinstance(data, dict):
        raise ValueError("the template is not a mapping")
    return data


@functools.lru_cache(maxsize=4)
def _parsed(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    return load_cfn_yaml(Path(path).read_text(encoding="utf-8"))


class TemplateError(Exception):
    """The template uses something this resolver does not support."""


class ParameterError(ConfigurationError):
    """A parameter override names no parameter of the template, or breaks its constraints.

    A ``ConfigurationError``: the CLI reports it on one line with its configuration exit code.
    """

    reason = "bad-parameter"


def check_parameter(name: str, value: str, spec: Mapping[str, Any]) -> None:
    """Raise :class:`ParameterError` when ``value`` breaks the constraints of ``spec`` (the
    parameter's definition: ``Type``, ``AllowedValues``, ``AllowedPattern``, ``MinValue``,
    ``MaxValue``, ``MinLength``, ``MaxLength``), as CloudFormation would at deploy time."""
    kind = str(spec.get("Type", "String"))
    constraint = spec.get("ConstraintDescription")

    def bad(problem: str) -> ParameterError:
        hint = f" ({constraint})" if constraint else ""
        return ParameterError(f"parameter {name}={value!r}: {problem}{hint}")

    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in [str(item) for item in allowed]:
        raise bad(f"must be one of {', '.join(str(item) for item in allowed)}")
    if kind == "Number":
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not math.isfinite(number):
            raise bad("must be a number (Type Number)")
        low, high = spec.get("MinValue"), spec.get("MaxValue")
        if (low is not None and number < float(low)) or (high is not None and number > float(high)):
            bounds = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            raise bad(f"must be a number in {bounds}")
        return
    pattern = spec.get("AllowedPattern")
    if pattern is not None and re.fullmatch(str(pattern), value) is None:
        raise bad(f"must match {pattern}")
    low_len, high_len = spec.get("MinLength"), spec.get("MaxLength")
    if (low_len is not None and len(value) < int(low_len)) or (
        high_len is not None and len(value) > int(high_len)
    ):
        raise bad(f"must be {low_len or 0}..{high_len if high_len is not None else ''} characters")


@dataclass
class Resolver:
    """Resolves intrinsic functions against parameters and the local stack's resources.

    ``refs`` maps logical IDs to what ``!Ref`` returns (parameters are looked up first);
    ``attributes`` maps ``(logical ID, attribute)`` to what ``!GetAtt`` returns.
    """

    template: dict[str, Any]
    parameters: dict[str, str]
    pseudo: dict[str, str]
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    def resolve(self, value: Any) -> Any:
        """``value`` with every supported intrinsic replaced; ``AWS::NoValue`` items dropped."""
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            handler = self._handlers().get(key)
            if handler is not None:
                return handler(arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def condition(self, name: str) -> bool:
        """Evaluate a named condition of the template."""
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def _handlers(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Ref": self._ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::If": self._if,
            "Fn::Equals": lambda a: self.resolve(a[0]) == self.resolve(a[1]),
            "Fn::Not": lambda a: not self.resolve(a[0]),
            "Fn::And": lambda a: all(self.resolve(x) for x in a),
            "Fn::Or": lambda a: any(self.resolve(x) for x in a),
            "Condition": self.condition,
            "Fn::Join": lambda a: str(a[0]).join(str(self.resolve(x)) for x in a[1]),
        }

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            spec = self.template.get("Parameters", {}).get(name, {})
            if spec.get("Type") == "CommaDelimitedList":  # split and trimmed, as CloudFormation
                return [member.strip() for member in self.parameters[name].split(",")]
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise TemplateError(f"!Ref {name}: not a parameter or a resource the local stack made")

    def _get_att(self, arg: list[str]) -> str:
        key = (arg[0], arg[1])
        if key not in self.attributes:
            raise TemplateError(f"!GetAtt {arg[0]}.{arg[1]}: not known locally")
        return self.attributes[key]

    def _sub(self, arg: Any) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        variables = {k: str(self.resolve(v)) for k, v in extra.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return variables[name]
            if "." in name:
                logical, attribute = name.split(".", 1)
                return str(self._get_att([logical, attribute]))
            return str(self._ref(name))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def _if(self, arg: list[Any]) -> Any:
        return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


_NO_VALUE: Any = _NoValue()


@dataclass(frozen=True)
class Template:
    """template.yaml as data."""

    raw: dict[str, Any]

    @classmethod
    def load(cls, path: Path = TEMPLATE_PATH) -> Template:
        """The template at ``path``, parsed once per version of the file (each caller gets
        its own copy: a local stack starts with three loads, a test run with hundreds)."""
        stat = path.stat()
        raw = _parsed(str(path), stat.st_mtime_ns, stat.st_size)
        return cls(copy.deepcopy(raw))

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.raw["Resources"]
        return resources

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """The resources of one type, by logical ID, in template order."""
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    def parameter_defaults(self) -> dict[str, str]:
        """Each parameter's default value as a string (parameters without one are absent)."""
        return {
            name: str(spec["Default"])
            for name, spec in self.raw.get("Parameters", {}).items()
            if "Default" in spec
        }

    def check_parameters(self, overrides: Mapping[str, str]) -> None:
        """Raise :class:`ParameterError` for the first override that names no parameter of
        the template (listing the close matches) or breaks its constraints."""
        specs: Mapping[str, Mapping[str, Any]] = self.raw.get("Parameters", {})
        for name, value in overrides.items():
            spec = specs.get(name)
            if spec is None:
                close = difflib.get_close_matches(name, specs, n=3, cutoff=0.6)
                folded = [p for p in specs if p.lower() == name.lower() and p not in close]
                matches = folded + close
                hint = f"; did you mean {' or '.join(matches)}?" if matches else ""
                raise ParameterError(
                    f"parameter {name}: template.yaml has no parameter of that name{hint}"
                )
            check_parameter(name, str(value), spec)

    def function_properties(self, name: str) -> dict[str, Any]:
        """A function's properties with the SAM Globals merged (its own values win)."""
        globals_: Mapping[str, Any] = self.raw.get("Globals", {}).get("Function", {})
        return merge_globals(globals_, self.resources[name]["Properties"])

    def sqs_trigger(self, function: str) -> tuple[str, dict[str, Any]]:
        """The (queue logical ID, properties) of a function's SQS event source."""
        return self._event_source(function, "SQS", "Queue", "Arn")

    def function_with_sqs_trigger(self) -> str:
        """The logical ID of the (single) function triggered by SQS."""
        return self._function_with_event("SQS")

    def stream_trigger(self, function: str) -> tuple[str, dict[str, Any]]:
        """The (table logical ID, properties) of a function's DynamoDB stream event source."""
        return self._event_source(function, "DynamoDB", "Stream", "StreamArn")

    def function_with_stream_trigger(self) -> str | None:
        """The logical ID of the (single) function triggered by a DynamoDB stream, if any."""
        try:
            return self._function_with_event("DynamoDB")
        except TemplateError:
            return None

    def _event_source(
        self, function: str, event_type: str, key: str, attribute: str
    ) -> tuple[str, dict[str, Any]]:
        for event in self.function_properties(function).get("Events", {}).values():
            if event.get("Type") == event_type:
                properties: dict[str, Any] = event["Properties"]
                source = properties[key]
                if not (
                    isinstance(source, dict)
                    and "Fn::GetAtt" in source
                    and source["Fn::GetAtt"][1] == attribute
                ):
                    raise TemplateError(
                        f"{function}: the {event_type} event's {key} is not !GetAtt X.{attribute}"
                    )
                return str(source["Fn::GetAtt"][0]), properties
        raise TemplateError(f"{function} has no {event_type} event")

    def _function_with_event(self, event_type: str) -> str:
        for name in self.of_type("AWS::Serverless::Function"):
            events = self.function_properties(name).get("Events", {})
            if any(e.get("Type") == event_type for e in events.values()):
                return name
        raise TemplateError(f"no function has an {event_type} event")


def merge_globals(globals_: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = dict(globals_)
    for key, value in own.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping) and not _is_intrinsic(value):
            merged[key] = merge_globals(base, value)
        elif isinstance(base, list) and isinstance(value, list):
            merged[key] = [*base, *value]
        else:
            merged[key] = value
    return merged


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    return len(value) == 1 and next(iter(value)) in {"Ref", "Condition", *INTRINSICS.values()}
