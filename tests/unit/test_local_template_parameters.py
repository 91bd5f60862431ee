"""Parameter overrides of the local stack are checked against template.yaml's constraints."""

from __future__ import annotations

import pytest

from call_enricher.errors import ConfigurationError
from call_enricher_tools.local.template import ParameterError, Template, check_parameter


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load()


def test_every_default_of_the_template_passes_its_own_constraints(template: Template) -> None:
    template.check_parameters(template.parameter_defaults())


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("inf", "must be a number"),
        ("nan", "must be a number"),
        ("", "must be a number"),
        ("101", "in 1..100"),
        ("2.5e1", None),
    ],
)
def test_numbers(value: str, problem: str | None) -> None:
    spec = {"Type": "Number", "MinValue": 1, "MaxValue": 100}
    if problem is None:
        check_parameter("BatchSize", value, spec)
        return
    with pytest.raises(ParameterError, match=problem):
        check_parameter("BatchSize", value, spec)


def test_lengths_and_constraint_descriptions() -> None:
    spec = {"Type": "String", "MaxLength": 3, "ConstraintDescription": "three at most"}
    with pytest.raises(ParameterError, match=r"must be 0\.\.3 characters \(three at most\)"):
        check_parameter("Short", "abcd", spec)


def test_an_unknown_name_lists_close_matches_and_a_case_slip(template: Template) -> None:
    with pytest.raises(ParameterError) as caught:
        template.check_parameters({"batchsize": "5"})
    assert "did you mean BatchSize" in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)  # the CLI's configuration exit code
    with pytest.raises(ParameterError, match=r"no parameter of that name$"):
        template.check_parameters({"Zzzzzz": "1"})
