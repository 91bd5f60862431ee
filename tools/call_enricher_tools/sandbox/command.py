"""``call-enricher sandbox``: run the Sinch sandbox until Ctrl-C."""

from __future__ import annotations

import argparse
import errno
import threading
from typing import Any, TextIO

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_PORT_IN_USE = 6  # the CLI's "configuration problem" code

_IN_USE = (errno.EADDRINUSE, 48, 10048)


def add_sandbox_command(subparsers: Any) -> None:
    """Register ``sandbox`` on an argparse sub-parsers object (``func(args, out, err)``)."""
    parser = subparsers.add_parser(
        "sandbox",
        help="run a local Sinch Get Call sandbox (auth, seeded calls, faults, callbacks)",
        description="A Sinch Voice Get Call sandbox on 127.0.0.1; runs until Ctrl-C. "
        "Control API under /_sandbox/ (see call_enricher_tools.sandbox).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 only")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    parser.add_argument("--seed", type=int, default=1, help="records, credentials, faults")
    parser.add_argument("--records", type=int, default=300, help="seeded calls (300)")
    parser.add_argument("--key", default=None, help="application key to accept")
    parser.add_argument("--secret", default=None, help="application secret (base64)")
    parser.add_argument(
        "--latency-ms", default=None, help="100 | 50-150 | lognormal:<median>:<p99>"
    )
    parser.add_argument(
        "--faults",
        "--fault-rate",
        dest="faults",
        default=None,
        help='rates per request, e.g. "5xx=0.10,429=0.05,hang=0.02,malformed=0.02"',
    )
    parser.add_argument("--callback-url", default=None, help="where to POST signed DiCEs")
    parser.add_argument("--callback-path", default=None, help="path to sign (default: URL's)")
    parser.add_argument(
        "--ongoing-seconds", type=float, default=30.0, help="ONGOING -> FINAL after (30)"
    )
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="hold hung requests")
    parser.set_defaults(func=run_sandbox)


def run_sandbox(
    args: argparse.Namespace,
    stdout: TextIO,
    stderr: TextIO,
    stop: threading.Event | None = None,
) -> int:
    """Start the sandbox from ``args``, print where it listens, wait for Ctrl-C (or ``stop``)."""
    from call_enricher.errors import ConfigurationError
    from call_enricher.sinch.auth import SinchCredentials
    from call_enricher_tools.sandbox.server import NonLoopbackHostError, Sandbox

    try:
        credentials = None
        if args.key or args.secret:
            if not (args.key and args.secret):
                raise ValueError("give both --key and --secret")
            credentials = SinchCredentials(args.key, args.secret)
            credentials.decoded_secret()
        sandbox = Sandbox(
            host=args.host,
            port=args.port,
            seed=args.seed,
            records=args.records,
            credentials=credentials,
            latency=args.latency_ms,
            faults=args.faults,
            callback_url=args.callback_url,
            callback_path=args.callback_path,
            ongoing_seconds=args.ongoing_seconds,
            hang_seconds=args.hang_seconds,
        )
    except (NonLoopbackHostError, ValueError, ConfigurationError) as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_BAD_INPUT
    try:
        sandbox.start()
    except OSError as exc:
        if exc.errno in _IN_USE:
            print(
                f"error: Sinch sandbox: port 127.0.0.1:{args.port} is already in use. Stop the "
                f"other process (`lsof -i :{args.port}` shows it) or choose another --port "
                "(0 = any free port).",
                file=stderr,
            )
            return EXIT_PORT_IN_USE
        raise
    try:
        _banner(sandbox, stdout)
        waiter = stop or threading.Event()
        try:
            while not waiter.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        sandbox.stop()
    print("Stopped.", file=stdout, flush=True)
    return EXIT_OK


def _banner(sandbox: Any, out: TextIO) -> None:
    credentials = sandbox.credentials
    lines = [
        f"Sinch sandbox listening on {sandbox.base_url}",
        f"  Get Call           {sandbox.base_url}/calling/v1/calls/id/{{callId}}",
        f"  control API        {sandbox.base_url}/_sandbox/stats (calls, faults, script, end)",
        "  local test credentials (not a real Sinch application):",
        f"    export SINCH_APPLICATION_KEY={credentials.application_key}",
        f"    export SINCH_APPLICATION_SECRET={credentials.application_secret}",
        f"  calls              {len(sandbox.call_ids('final'))} FINAL, "
        f"{len(sandbox.call_ids('ongoing'))} ONGOING (FINAL after {sandbox.ongoing_seconds:g} s)"
        f", {len(sandbox.call_ids('risky'))} of them risky (premium-rate, satellite, a burst)",
        f"  faults             {_faults_text(sandbox)}; latency {sandbox.latency}",
        f"  callbacks          {sandbox.callback_url or 'off (--callback-url)'}",
    ]
    samples = sandbox.call_ids("final")[:1] + sandbox.call_ids("unknown")[:1]
    lines.append(
        f"  try                call-enricher enrich --base-url {sandbox.base_url} "
        + " ".join(samples)
    )
    lines.append("Ctrl-C stops it.")
    print("\n".join(lines), file=out, flush=True)


def _faults_text(sandbox: Any) -> str:
    rates = {k.removeprefix("rate_"): v for k, v in sandbox.faults.as_dict().items() if v}
    return ", ".join(f"{k}={v:g}" for k, v in rates.items()) or "none"
