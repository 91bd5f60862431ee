"""The `call-enricher` CLI through its real entry point: output, stderr lines and exit codes."""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import pytest

from call_enricher_tools import cli
from tests.integration.conftest import TEST_KEY, TEST_SECRET
from tests.support.fake_sinch import FakeSinch, Reply

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "events/sinch/answered-us-to-gb.json"
CALL_ID = "4398599d1ba84ef3bde0a82dfb61abed"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def sinch_env(monkeypatch: pytest.MonkeyPatch, fake_sinch: FakeSinch) -> FakeSinch:
    monkeypatch.setenv("SINCH_APPLICATION_KEY", TEST_KEY)
    monkeypatch.setenv("SINCH_APPLICATION_SECRET", TEST_SECRET)
    fake_sinch.add_call(CALL_ID, json.loads(SAMPLE.read_text()))
    return fake_sinch


def test_enrich_prints_one_json_document_per_call(sinch_env: FakeSinch) -> None:
    # Given a call Sinch knows / When enriched through the CLI (signed auth by default)
    code, out, err = run("enrich", CALL_ID, CALL_ID, "--base-url", sinch_env.base_url)
    # Then it exits 0 and prints one JSON line per call
    assert (code, err) == (0, "")
    documents = [json.loads(line) for line in out.splitlines()]
    assert [d["callId"] for d in documents] == [CALL_ID, CALL_ID]
    assert documents[0]["provenance"]["sinchBaseUrl"] == sinch_env.base_url
    assert all(r.auth_check.value == "ok" for r in sinch_env.requests)
    assert sinch_env.requests[0].header("Authorization").startswith("Application ")


def test_enrich_with_basic_auth(sinch_env: FakeSinch) -> None:
    code, _, _ = run("enrich", CALL_ID, "--base-url", sinch_env.base_url, "--auth", "basic")
    assert code == 0
    assert sinch_env.requests[0].header("Authorization").startswith("Basic ")


@pytest.mark.parametrize(
    ("reply", "expected_code", "reason"),
    [
        (Reply.error(404, 40400, "Call not found"), cli.EXIT_NOT_FOUND, "call-not-found"),
        (
            Reply.json({"callId": CALL_ID, "duration": "long"}),
            cli.EXIT_INVALID_RECORD,
            "invalid-record",
        ),
        (Reply.error(503, 50300), cli.EXIT_UPSTREAM_UNAVAILABLE, "sinch-unavailable"),
        (Reply.error(403, 40300), cli.EXIT_AUTH_OR_CONFIG, "sinch-rejected"),
    ],
)
def test_each_failure_class_has_its_exit_code(
    sinch_env: FakeSinch, reply: Reply, expected_code: int, reason: str
) -> None:
    sinch_env.on_call(CALL_ID, reply)
    code, out, err = run("enrich", CALL_ID, "--base-url", sinch_env.base_url, "--max-attempts", "1")
    assert code == expected_code
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error [{CALL_ID}]: {reason}: ")
    assert TEST_SECRET not in err


def test_bad_call_id_is_bad_input_and_never_sent(sinch_env: FakeSinch) -> None:
    code, _, err = run("enrich", "../etc/passwd", "--base-url", sinch_env.base_url)
    assert code == cli.EXIT_BAD_INPUT
    assert "invalid-call-id" in err
    assert sinch_env.requests == []


def test_wrong_secret_is_an_auth_error(
    sinch_env: FakeSinch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SINCH_APPLICATION_KEY", "someone-else")
    code, _, err = run("enrich", CALL_ID, "--base-url", sinch_env.base_url)
    assert code == cli.EXIT_AUTH_OR_CONFIG
    assert "sinch-auth" in err


def test_missing_credentials_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SINCH_APPLICATION_KEY", raising=False)
    monkeypatch.delenv("SINCH_APPLICATION_SECRET", raising=False)
    code, _, err = run("enrich", CALL_ID, "--region", "euc1")
    assert code == cli.EXIT_AUTH_OR_CONFIG
    assert "SINCH_APPLICATION_KEY" in err


def test_unknown_region_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run("enrich", CALL_ID, "--region", "mars1")
    assert code == cli.EXIT_AUTH_OR_CONFIG
    assert "mars1" in err


def test_enrich_file_offline() -> None:
    code, out, err = run("enrich-file", str(SAMPLE), "--region", "euc1")
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert document["callId"] == CALL_ID
    assert document["money"]["debit"] == {"currency": "USD", "amount": "0.1016"}


def test_enrich_file_reports_the_risk_of_a_premium_rate_call_at_a_high_rate() -> None:
    # Given a saved record of a call to a UK premium-rate number (+44 909) at 1.50 GBP/min,
    # and a plain domestic call (a Swedish mobile calling a Stockholm number)
    script = Path(sys.executable).parent / "call-enricher"
    premium = ROOT / "events/sinch/premium-rate-high-rate-gb.json"
    plain = ROOT / "events/sinch/answered-se-callee-hangup-millis.json"
    # When each is enriched through the installed entry point
    risks = {}
    for path in (premium, plain):
        result = subprocess.run(  # noqa: S603 (the project's own console script)
            [str(script), "enrich-file", str(path)], capture_output=True, check=False
        )
        assert result.returncode == 0, result.stderr
        risks[path] = json.loads(result.stdout)["risk"]
    # Then the premium-rate call is high with both signals, the domestic one none
    assert risks[premium]["level"] == "high"
    assert {s["code"]: s["level"] for s in risks[premium]["signals"]} == {
        "premium-rate-destination": "high",
        "high-rate": "high",
    }
    assert "9098790123" not in json.dumps(risks[premium])
    assert risks[plain] == {"level": "none", "signals": [], "policyDigest": ANY}


def test_enrich_file_invalid_record(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"callId": "x", "timestamp": "yesterday"}')
    code, out, err = run("enrich-file", str(bad))
    assert (code, out) == (cli.EXIT_INVALID_RECORD, "")
    assert "timestamp" in err


def test_enrich_file_missing_file() -> None:
    code, _, err = run("enrich-file", "/nonexistent/call.json")
    assert code == cli.EXIT_BAD_INPUT
    assert "cannot read" in err


def test_console_script_reads_stdin() -> None:
    # The installed entry point, as a user runs it: `call-enricher enrich-file - < body.json`
    script = Path(sys.executable).parent / "call-enricher"
    result = subprocess.run(  # noqa: S603 (the project's own console script)
        [str(script), "enrich-file", "-"],
        input=SAMPLE.read_bytes(),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["callId"] == CALL_ID


def test_demo_runs_offline() -> None:
    code, out, err = run("demo", "--offline")
    assert (code, err) == (0, "")
    samples = len(list((ROOT / "events/sinch").glob("*.json")))
    assert f"Enriched {samples} sample Sinch records" in out
    # one table row per sample (header + rule + rows), then the full record
    table = out.split("\n\n")[1].splitlines()
    assert len(table) == samples + 2
    assert "in-progress" in out


def test_every_command_reaches_its_implementation_through_the_cli_parser() -> None:
    # Given the installed CLI's parser
    from call_enricher_tools.chaos import cmd_chaos
    from call_enricher_tools.local.submit import cmd_submit
    from call_enricher_tools.local.up import cmd_local_up
    from call_enricher_tools.sandbox.command import run_sandbox

    parser = cli.build_parser()
    # When each command line is parsed
    wired = {
        "sandbox": parser.parse_args(["sandbox", "--port", "0"]).func,
        "local up": parser.parse_args(["local", "up"]).func,
        "submit": parser.parse_args(["submit", "--queue-url", "http://127.0.0.1/q", "a1"]).func,
        "chaos": parser.parse_args(["chaos", "--ids", "10"]).func,
        "demo": parser.parse_args(["demo"]).func,
    }
    # Then each runs the implementation the tests exercise (e2e, sandbox, chaos suites)
    assert wired == {
        "sandbox": run_sandbox,
        "local up": cmd_local_up,
        "submit": cmd_submit,
        "chaos": cmd_chaos,
        "demo": cli.cmd_demo,
    }


@pytest.mark.parametrize("command", ["sandbox", "local", "submit", "chaos", "demo"])
def test_every_command_has_help(command: str) -> None:
    # Given a command, When its --help is asked through main(), Then it exits 0 with a usage
    out = io.StringIO()
    code = cli.main([command, "--help"], stdout=out, stderr=io.StringIO())
    assert code == 0


# -- help text, configuration errors and messages a new user meets -------------------------


def _command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                paths += _command_paths(subparser, (*prefix, name))
    return paths


COMMAND_PATHS = _command_paths(cli.build_parser())
MARKUP = re.compile(r"``|:(?:class|func|meth|mod|data|attr|exc):`")


def test_every_command_path_is_covered() -> None:
    assert {("submit",), ("local", "up"), ("ops", "dlq", "list"), ("enrich",)} <= set(COMMAND_PATHS)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "call-enricher")
def test_no_help_output_shows_sphinx_markup(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    # When a command's --help is asked through main()
    code = cli.main([*path, "--help"], stdout=io.StringIO(), stderr=io.StringIO())
    text = capsys.readouterr().out
    # Then it is plain text: no ``literal`` nor :class:`role` markup
    assert code == 0
    assert text.startswith("usage: call-enricher")
    assert MARKUP.findall(text) == [], text


def test_plain_turns_roles_and_literals_into_text() -> None:
    assert cli.plain("``submit`` via :meth:`~a.Queue.send_many` or :class:`a.B`") == (
        "submit via send_many or a.B"
    )


def test_enrich_file_that_is_not_json_is_bad_input(tmp_path: Path) -> None:
    # Given a file that is not JSON (a call ID pasted instead of the body)
    path = tmp_path / "call.json"
    path.write_text(f"{CALL_ID}\n")
    # When it is enriched, Then it is bad input (2), not "Sinch returned an invalid record"
    code, out, err = run("enrich-file", str(path))
    assert (code, out) == (cli.EXIT_BAD_INPUT, "")
    assert err == (
        f"error: bad-input: {path} is not JSON (line 1 column 8): "
        "expected a saved Get Call response body\n"
    )


def test_a_call_not_found_says_an_app_to_app_call_is_never_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from call_enricher_tools.sandbox import Sandbox

    # Given the sandbox, which knows no call of this ID
    with Sandbox(port=0) as sandbox:
        monkeypatch.setenv("SINCH_APPLICATION_KEY", sandbox.credentials.application_key)
        monkeypatch.setenv("SINCH_APPLICATION_SECRET", sandbox.credentials.application_secret)
        unknown = "0123456789abcdef0123456789abcdef"
        # When `call-enricher enrich` asks for it
        code, out, err = run("enrich", unknown, "--base-url", sandbox.base_url)
    # Then the one error line says why an app-to-app call can never be found
    assert (code, out) == (cli.EXIT_NOT_FOUND, "")
    assert err.count("\n") == 1
    assert err.startswith(f"error [{unknown}]: call-not-found: Sinch answered HTTP 404")
    assert "an app-to-app call is never found" in err
    assert "PSTN or SIP" in err
    assert sandbox.credentials.application_secret not in err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "BatchSiz=5",
            "error: the local stack could not start: ParameterError: parameter BatchSiz: "
            "template.yaml has no parameter of that name; did you mean BatchSize or "
            "PublisherBatchSize?",
        ),
        (
            "BatchSize=abc",
            "error: the local stack could not start: ParameterError: parameter "
            "BatchSize='abc': must be a number (Type Number)",
        ),
        ("BatchSize=0", "parameter BatchSize='0': must be a number in 1..100"),
        ("SinchRegion=mars", "parameter SinchRegion='mars': must be one of global, euc1"),
        ("Stage=Prod", "parameter Stage='Prod': must match ^[a-z][a-z0-9-]{0,15}$"),
    ],
)
def test_local_up_refuses_a_bad_parameter_override_in_one_line(
    override: str, expected: str
) -> None:
    # When `local up -p ...` names no parameter of the template, or a value it refuses
    code, out, err = run("local", "up", "--api-port", "0", "-p", override)
    # Then it exits with the configuration code and one line naming the parameter
    assert code == cli.EXIT_AUTH_OR_CONFIG
    assert out == ""
    assert err.count("\n") == 1
    assert expected in err
    assert "Traceback" not in err


def test_demo_exits_with_the_configuration_code_on_a_parameter_the_template_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from call_enricher_tools.local import runner
    from call_enricher_tools.local.template import Template

    # Given a template whose RecheckBaseDelaySeconds must be at least 5 (the demo sets 1)
    template = Template.load()
    template.raw["Parameters"]["RecheckBaseDelaySeconds"]["MinValue"] = 5
    monkeypatch.setattr(runner.Template, "load", classmethod(lambda cls, *a: template))
    # When the demo runs, Then it stops before starting anything, in one line
    code, _, err = run("demo")
    assert code == cli.EXIT_AUTH_OR_CONFIG
    assert err == (
        "error: bad-parameter: parameter RecheckBaseDelaySeconds='1': must be a number in 5..900\n"
    )


def test_submit_names_the_lines_of_the_bad_ids(tmp_path: Path) -> None:
    # Given a file with a comment, two valid IDs and two bad lines
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# calls\n{CALL_ID}\n../etc/passwd\n\n{'b' * 32}\nbad id\n")
    # When it is submitted (nothing listens on the queue URL: nothing may be sent)
    code, out, err = run("submit", "--queue-url", "http://127.0.0.1:9/q", "--file", str(ids))
    # Then each bad ID is named with its file and line number, and nothing was sent
    assert (code, out) == (cli.EXIT_BAD_INPUT, "")
    lines = err.splitlines()
    assert lines[0].startswith(f"error: invalid-call-id: {ids}:3: call id has a forbidden")
    assert lines[1].startswith(f"error: invalid-call-id: {ids}:6: call id has a forbidden")
    assert lines[2] == "2 invalid call ID(s): nothing was sent"


def test_submit_names_the_argument_and_stdin_line_of_bad_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{CALL_ID}\nno/slash\n"))
    code, _, err = run("submit", "--queue-url", "http://127.0.0.1:9/q", "x y", "-")
    assert code == cli.EXIT_BAD_INPUT
    assert "error: invalid-call-id: argument 1: " in err
    assert "error: invalid-call-id: stdin:2: " in err


# -- the command name the banner prints ------------------------------------------------------


def test_command_name_is_the_absolute_path_when_the_venv_is_not_on_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the console script run by its path, with a PATH that does not hold the venv
    script = Path(sys.executable).parent / "call-enricher"
    monkeypatch.setattr(sys, "argv", [str(script), "local", "up"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    # Then what the banner prints works in a new shell as printed
    assert cli.command_name() == str(script.absolute())


def test_command_name_is_the_bare_name_when_path_finds_this_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Path(sys.executable).parent / "call-enricher"
    monkeypatch.setattr(sys, "argv", [str(script), "local", "up"])
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin")
    assert cli.command_name() == "call-enricher"


# -- where `local up` puts the handlers' logs ------------------------------------------------


@pytest.fixture
def started_with(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The options `local up` would start the stack with (nothing is started)."""
    from call_enricher_tools.local import up

    seen: list[object] = []

    def record(options: object, **_: object) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(up, "run_local_up", record)
    return seen


def test_local_up_writes_the_handlers_logs_to_a_file_by_default(
    started_with: list[object], tmp_path: Path
) -> None:
    from call_enricher_tools.local.up import default_log_file

    # Given a log left by an earlier run
    default_log_file().write_text("earlier run\n")
    # When `local up` starts without options
    assert run("local", "up")[0] == 0
    # Then the handlers' logs go to the default file, emptied
    (options,) = started_with
    assert options.log_file == default_log_file()  # type: ignore[attr-defined]
    assert not default_log_file().exists()
    # ... `--log-file` names another, `--verbose` keeps them on the console
    assert run("local", "up", "--log-file", str(tmp_path / "h.log"))[0] == 0
    assert started_with[1].log_file == tmp_path / "h.log"  # type: ignore[attr-defined]
    assert run("local", "up", "--verbose")[0] == 0
    assert started_with[2].log_file is None  # type: ignore[attr-defined]


def test_local_up_refuses_verbose_with_a_log_file(
    started_with: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run("local", "up", "--verbose", "--log-file", "x.log")
    assert code == cli.EXIT_BAD_INPUT
    assert "--log-file: not allowed with argument --verbose" in capsys.readouterr().err
    assert started_with == []
