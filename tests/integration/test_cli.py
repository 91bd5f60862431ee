"""The `call-enricher` CLI through its real entry point: output, stderr lines and exit codes."""

from __future__ import annotations

import io
import json
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
