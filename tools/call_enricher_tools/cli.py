"""The ``call-enricher`` command line.

Commands:

* ``enrich CALL_ID...``: fetch each call from Sinch, validate, enrich, print one JSON
  document per call (one per line) on stdout.
* ``enrich-file PATH`` (``-`` for stdin): the same from a saved Get Call JSON body, offline.
* ``demo``: the whole pipeline on the local stack (what ``make demo`` runs);
  ``demo --offline`` enriches the sample records in ``events/sinch/`` without servers.
* ``sandbox``: the Sinch Get Call sandbox on 127.0.0.1.
* ``local up``: the local stack (sandbox, moto, HTTP API, SQS poller) until Ctrl-C.
* ``submit``: send call IDs to a queue URL in batches of 10.
* ``chaos``: N call IDs through the local stack under injected faults, then accounting.
* ``ops``: operate a deployed stack (``--stack``) or the local one (``--local``): ``status``,
  ``dlq list``, ``dlq redrive``, ``replay`` (see :mod:`call_enricher_tools.ops`).

Errors go to stderr as one line ``error: <reason>: <message>``; the exit code tells the
class apart (see :data:`EXIT_CODES`). With several call IDs every ID is attempted and the
exit code is that of the first failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from call_enricher import errors

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_INVALID_RECORD = 4
EXIT_UPSTREAM_UNAVAILABLE = 5
EXIT_AUTH_OR_CONFIG = 6

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_UNEXPECTED: "unexpected error (a bug: please report it)",
    EXIT_BAD_INPUT: "bad input: invalid call ID, unreadable file, bad arguments",
    EXIT_NOT_FOUND: "Sinch does not know the call (404)",
    EXIT_INVALID_RECORD: "Sinch returned a record that is not valid",
    EXIT_UPSTREAM_UNAVAILABLE: "Sinch unavailable, rate limited or timed out (retry later)",
    EXIT_AUTH_OR_CONFIG: "authentication or configuration problem (credentials, region, URL)",
}

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = REPO_ROOT / "events" / "sinch"


def exit_code_for(error: errors.CallEnricherError) -> int:
    """Map a domain error to the CLI's exit code (the CLI's edge of the error taxonomy)."""
    if isinstance(error, errors.CallNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, errors.InvalidRecordError):
        return EXIT_INVALID_RECORD
    if isinstance(error, errors.InvalidCallIdError | errors.MalformedMessageError):
        return EXIT_BAD_INPUT
    if isinstance(error, errors.SinchAuthError | errors.ConfigurationError):
        return EXIT_AUTH_OR_CONFIG
    if isinstance(error, errors.SinchRejectedError):
        return EXIT_AUTH_OR_CONFIG if error.http_status == 403 else EXIT_BAD_INPUT
    if error.error_class is errors.ErrorClass.TRANSIENT:
        return EXIT_UPSTREAM_UNAVAILABLE
    return EXIT_UNEXPECTED


def _report(error: errors.CallEnricherError, stderr: TextIO, call_id: str | None = None) -> int:
    where = f" [{call_id}]" if call_id else ""
    extra = f" (Sinch errorCode {error.sinch_error_code})" if error.sinch_error_code else ""
    print(f"error{where}: {error.reason}: {error.message}{extra}", file=stderr)
    return exit_code_for(error)


def _dump(document: dict[str, Any], stdout: TextIO, *, pretty: bool) -> None:
    text = json.dumps(document, indent=2 if pretty else None, ensure_ascii=False)
    print(text, file=stdout, flush=True)


# -- enrich ----------------------------------------------------------------------------


def _credentials_from_env() -> Any:
    from call_enricher.sinch.auth import SinchCredentials

    key = os.environ.get("SINCH_APPLICATION_KEY", "")
    secret = os.environ.get("SINCH_APPLICATION_SECRET", "")
    if not key or not secret:
        raise errors.ConfigurationError(
            "set SINCH_APPLICATION_KEY and SINCH_APPLICATION_SECRET (the Voice application's "
            "key and secret from the Sinch dashboard)"
        )
    return SinchCredentials(application_key=key, application_secret=secret)


def cmd_enrich(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from call_enricher.callid import validate_call_id
    from call_enricher.service import fetch_and_enrich
    from call_enricher.sinch.auth import AuthScheme
    from call_enricher.sinch.client import SinchClient
    from call_enricher.sinch.regions import resolve_base_url

    try:
        base_url = resolve_base_url(region=args.region, base_url=args.base_url)
        credentials = _credentials_from_env()
    except errors.CallEnricherError as exc:
        return _report(exc, stderr)
    client = SinchClient(
        credentials,
        base_url=base_url,
        auth=AuthScheme(args.auth),
        read_timeout=args.timeout,
        max_attempts=args.max_attempts,
    )
    status = EXIT_OK
    try:
        for call_id in args.call_ids:
            try:
                validate_call_id(call_id)
                enriched, _ = fetch_and_enrich(client, call_id, region=args.region)
            except errors.CallEnricherError as exc:
                code = _report(exc, stderr, call_id)
                status = status or code
                continue
            _dump(enriched.model_dump(mode="json", by_alias=True), stdout, pretty=args.pretty)
    finally:
        client.close()
    return status


def cmd_enrich_file(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from call_enricher.enrichment import enrich
    from call_enricher.model import parse_call_record

    try:
        body = sys.stdin.buffer.read() if args.path == "-" else Path(args.path).read_bytes()
    except OSError as exc:
        print(f"error: bad-input: cannot read {args.path}: {exc.strerror}", file=stderr)
        return EXIT_BAD_INPUT
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        where = (
            f" (line {exc.lineno} column {exc.colno})"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        name = "stdin" if args.path == "-" else args.path
        print(
            f"error: bad-input: {name} is not JSON{where}: expected a saved Get Call response body",
            file=stderr,
        )
        return EXIT_BAD_INPUT
    try:
        record = parse_call_record(body)
        enriched = enrich(record, raw=raw, region=args.region, base_url=args.base_url)
    except errors.CallEnricherError as exc:
        return _report(exc, stderr)
    _dump(enriched.model_dump(mode="json", by_alias=True), stdout, pretty=args.pretty)
    return EXIT_OK


# -- demo ------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    if args.offline:
        from call_enricher_tools.demo import run_offline_demo

        return run_offline_demo(SAMPLES_DIR, stdout=stdout, stderr=stderr)
    from call_enricher_tools.local.demo import run_demo

    return run_demo(stdout=stdout, stderr=stderr)


# -- parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    epilog = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="call-enricher",
        description="Turn Sinch Voice call IDs into validated, enriched call records.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enrich = sub.add_parser(
        "enrich",
        help="fetch calls from Sinch and print their enriched records",
        description="Credentials come from SINCH_APPLICATION_KEY and SINCH_APPLICATION_SECRET.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    enrich.add_argument("call_ids", nargs="+", metavar="CALL_ID")
    where = enrich.add_mutually_exclusive_group()
    where.add_argument(
        "--region",
        default=None,
        help="Sinch region: global, euc1, use1, sae1, apse1, apse2 (default: global)",
    )
    where.add_argument("--base-url", default=None, help="explicit base URL (sandbox, tests)")
    enrich.add_argument("--auth", choices=["signed", "basic"], default="signed")
    enrich.add_argument("--timeout", type=float, default=10.0, help="read timeout, seconds")
    enrich.add_argument("--max-attempts", type=int, default=3)
    enrich.add_argument("--pretty", action="store_true", help="indent the JSON output")
    enrich.set_defaults(func=cmd_enrich)

    enrich_file = sub.add_parser("enrich-file", help="enrich a saved Get Call JSON body (offline)")
    enrich_file.add_argument("path", metavar="PATH", help="a JSON file, or - for stdin")
    enrich_file.add_argument("--region", default=None, help="region the record came from")
    enrich_file.add_argument("--base-url", default=None, help="base URL the record came from")
    enrich_file.add_argument("--pretty", action="store_true", help="indent the JSON output")
    enrich_file.set_defaults(func=cmd_enrich_file)

    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline on the local stack (every entry path), then stop",
    )
    demo.add_argument(
        "--offline",
        action="store_true",
        help="only enrich the sample records in events/sinch/ (no servers)",
    )
    demo.set_defaults(func=cmd_demo)

    from call_enricher_tools.chaos import add_chaos_command
    from call_enricher_tools.export import add_export_command
    from call_enricher_tools.local.commands import add_local_commands
    from call_enricher_tools.ops import add_ops_command
    from call_enricher_tools.sandbox.command import add_sandbox_command
    from call_enricher_tools.tail import add_events_command

    add_sandbox_command(sub)
    add_local_commands(sub)
    add_chaos_command(sub)
    add_ops_command(sub)
    add_export_command(sub)
    add_events_command(sub)
    _plain_help(parser)
    return parser


_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|ref):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(text: str | None) -> str | None:
    """Help text without reStructuredText markup: ``x`` and :class:`~a.B` become x and B."""
    if text is None:
        return None
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return _LITERAL.sub(r"\1", text)


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Strip the markup of every description, epilog and help of ``parser`` and its
    subcommands (descriptions are often module docstrings)."""
    parser.description = plain(parser.description)
    parser.epilog = plain(parser.epilog)
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help)
            for subparser in action.choices.values():
                _plain_help(subparser)


def command_name() -> str:
    """How a user types this CLI in a new shell: ``call-enricher`` when that name on PATH is
    the running program, otherwise the program's absolute path (``.venv/bin/call-enricher``
    after ``make setup`` is not on PATH unless the venv is activated)."""
    argv0 = sys.argv[0] if sys.argv else ""
    found = shutil.which(argv0) if argv0 and os.sep not in argv0 else argv0
    running = Path(found) if found else None
    if running is None or running.name != "call-enricher" or not running.is_file():
        running = Path(sys.executable).parent / "call-enricher"  # run as python -m ...
        if not running.is_file():
            return "call-enricher"
    on_path = shutil.which("call-enricher")
    if on_path is not None and Path(on_path).resolve() == running.resolve():
        return "call-enricher"
    return str(running.absolute())


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        return int(args.func(args, out, err))
    except errors.CallEnricherError as exc:  # e.g. a bad -p override of local up or demo
        return _report(exc, err)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
