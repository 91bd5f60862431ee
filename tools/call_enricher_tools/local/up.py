"""``call-enricher local up``: the local stack, running until Ctrl-C.

Starts the Sinch sandbox, moto (with template.yaml's resources), the HTTP API on
127.0.0.1:3000, the SQS poller and the stream poller (the publisher's DynamoDB stream
mapping: every event comes from the calls table's stream); prints where everything
listens, the environment variables that point the AWS CLI / boto3 / ``call-enricher
submit`` at it, and then one line per queue-handler invocation and per event a consumer
receives (a call of medium or high risk marked with its signals, ``[risk high:
premium-rate-destination, high-rate]``; a ``Spend Threshold Crossed`` with its key, threshold
and figures), and one line per message that moves to the dead-letter queue, with its call's
last stored error (``lastError``). While it runs, ``call-enricher ops --local`` commands
(``status``, ``dlq list``, ``dlq redrive``, ``replay``) work against it: its outputs and
endpoint are recorded for them (:func:`call_enricher_tools.ops.write_local_state`). With
``--webhook``, the template's webhook delivery runs too, to a receiver on 127.0.0.1 that checks
the API key: one ``[webhook]`` line per delivery (its HTTP status, attempts, or the DLQ). Ctrl-C
(or SIGTERM) stops everything cleanly. A port that is taken is reported with the port and
what to do.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from call_enricher_tools.local.poller import Invocation
from call_enricher_tools.local.runner import DEFAULT_API_PORT, LocalPipeline, PipelineOptions
from call_enricher_tools.local.stack import (
    LOCAL_VISIBILITY_TIMEOUT,
    REGION,
    LocalStack,
    PortInUseError,
)
from call_enricher_tools.local.webhook import Attempt

EXIT_OK = 0
EXIT_START_FAILED = 6  # the CLI's "configuration problem" (a port taken, a bad parameter)
DLQ_WATCH_SECONDS = 1.0


def default_log_file(command: str = "local-up") -> Path:
    """Where ``local up`` (or ``command``: the demo) writes the handlers' own output unless
    told otherwise (one file per user: the temporary directory is shared)."""
    user = os.getuid() if hasattr(os, "getuid") else os.getpid()
    return Path(tempfile.gettempdir()) / f"call-enricher-{command}-{user}.log"


def fresh_log_file() -> Path:
    """:func:`default_log_file`, emptied (each run starts its own log); when it cannot be
    replaced (another run holds it, say), a new file beside it."""
    path = default_log_file()
    try:
        path.unlink(missing_ok=True)
    except OSError:
        path = path.with_name(f"{path.stem}-{os.getpid()}.log")
    return path


def run_local_up(
    options: PipelineOptions,
    *,
    stdout: TextIO,
    stderr: TextIO,
    stop: threading.Event,
) -> int:
    """Run the local pipeline until ``stop`` is set; print its banner and activity."""
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            print(text, file=stdout, flush=True)

    def on_invocation(invocation: Invocation) -> None:
        retried = sum(1 for count in invocation.receive_counts.values() if count > 1)
        outcome = (
            f"FAILED ({invocation.error}); all {len(invocation.message_ids)} retried later"
            if invocation.error
            else f"{len(invocation.deleted_ids)} done, {len(invocation.failed_ids)} to retry"
        )
        say(
            f"[poller {invocation.poller}] batch of {len(invocation.message_ids)}"
            f"{f' ({retried} redelivered)' if retried else ''}: {outcome} "
            f"in {invocation.elapsed_seconds * 1000:.0f} ms"
        )

    options.on_invocation = on_invocation
    if options.webhook:
        options.on_webhook = lambda attempt: say(describe_webhook_attempt(attempt))
    started = time.monotonic()
    pipeline = LocalPipeline(options)
    try:
        pipeline.start()
    except PortInUseError as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_START_FAILED
    except Exception as exc:  # noqa: BLE001 - say what failed, without a stack trace
        print(f"error: the local stack could not start: {type(exc).__name__}: {exc}", file=stderr)
        return EXIT_START_FAILED
    state_file: Path | None = None
    try:
        from call_enricher_tools.ops import remove_local_state, write_local_state

        stack = pipeline.require_stack()
        state_file = write_local_state(stack.stack_name, stack.endpoint_url, stack.outputs())
        say(banner(pipeline, time.monotonic() - started))
        watchers = [
            threading.Thread(
                target=_print_events, args=(pipeline, say, stop), name="subscriber", daemon=True
            ),
            threading.Thread(
                target=watch_dead_letters,
                args=(stack, say, stop),
                kwargs={"interval": DLQ_WATCH_SECONDS},
                name="dlq-watcher",
                daemon=True,
            ),
        ]
        for watcher in watchers:
            watcher.start()
        stop.wait()
        say("\nStopping...")
        for watcher in watchers:
            watcher.join(timeout=5)
    finally:
        if state_file is not None:
            remove_local_state(state_file)
        pipeline.stop()
    say("Stopped.")
    return EXIT_OK


def banner(pipeline: LocalPipeline, elapsed: float) -> str:
    """Where everything listens, and how to use it."""
    from call_enricher_tools.cli import command_name

    cli = command_name()  # as a new shell finds it (.venv/bin/... when not on PATH)
    log_file = pipeline.options.log_file
    logs = (
        f"The handlers' JSON logs and metrics: {log_file} (--verbose prints them here)."
        if log_file is not None
        else "The handlers' JSON logs and metrics are printed below (--verbose)."
    )
    stack = pipeline.require_stack()
    sandbox = pipeline.sandbox
    trigger = stack.trigger
    outputs = stack.outputs()
    env = stack.function_environment()
    samples = list(sandbox.call_ids("final"))[:2] if sandbox is not None else []
    sample = samples[0] if samples else "4398599d1ba84ef3bde0a82dfb61abed"
    seeded = sandbox.record(sample) if sandbox is not None else None
    day = str(seeded.final.get("timestamp") or "")[:10] if seeded is not None else ""
    day = day or "2024-01-08"  # Sinch's timestamps are UTC: the call's UTC day
    if sandbox is not None:
        credentials = sandbox.credentials
        sinch_lines = [
            f"  Sinch sandbox     {sandbox.base_url}",
            f"    local test credentials: key {credentials.application_key}"
            f"  secret {credentials.application_secret}",
        ]
    else:
        sinch_lines = [
            f"  Sinch             REAL, region {stack.parameters['SinchRegion']} "
            "(credentials from SINCH_APPLICATION_KEY / SINCH_APPLICATION_SECRET)"
        ]
    risky = sandbox.call_ids("risky") if sandbox is not None else []
    risky_lines = (
        [
            "  the sandbox's risky calls (two flagged high; a burst to one country that crosses"
            " a daily spend threshold):",
            f"  {cli} submit --queue-url $QUEUE_URL {' '.join(risky)}",
        ]
        if risky
        else []
    )
    lines = [
        f"call-enricher local stack up in {elapsed:.1f} s (everything on 127.0.0.1)",
        "",
        f"  HTTP API          {pipeline.api_url}   (IAM auth is not enforced locally)",
        "    POST /calls, GET /calls?day=, GET /calls/{callId}, POST /calls/{callId}/enrich",
        f"    Sinch callbacks {pipeline.callback_url}",
        *sinch_lines,
        f"  AWS (moto)        {stack.endpoint_url}   region {REGION}",
        f"    enrichment queue  {stack.queue_url}",
        f"    dead-letter queue {stack.dead_letter_queue_url}",
        f"    calls table       {env['CALLS_TABLE_NAME']}",
        f"    event bus         {env['EVENT_BUS_NAME']}"
        f" (archive {outputs.get('EventArchiveName')})",
        f"    subscriber queue  {stack.subscriber_queue_url} (every event; local up reads"
        " it to print them below)",
        f"    consumer queue    {outputs.get('ExampleConsumerQueueUrl')} (the template's"
        " example consumer: Call Enriched events, yours to read)",
        f"  SQS poller        batch {trigger.batch_size}, window "
        f"{trigger.batching_window_seconds:g} s, concurrency {trigger.max_concurrency}, "
        f"maxReceiveCount {stack.parameters['MaxReceiveCount']}, visibility timeout "
        f"{stack.visibility_timeout_seconds} s (local; 660 s deployed)",
        f"  stream poller     calls table stream -> stream publisher, batch "
        f"{stack.require_stream_trigger().batch_size}, on-failure queue "
        f"{stack.publisher_failure_queue_url}",
        *webhook_lines(pipeline),
        "",
        "Point your shell at it:",
        f"  export AWS_ENDPOINT_URL={stack.endpoint_url} AWS_REGION={REGION} "
        f"AWS_DEFAULT_REGION={REGION} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing",
        f"  export QUEUE_URL={stack.queue_url}",
        f"  export CONSUMER_QUEUE_URL={outputs.get('ExampleConsumerQueueUrl')}",
        "",
        "Operate it (as a deployed stack, with --stack NAME instead of --local):",
        f"  {cli} ops status --local",
        f"  {cli} ops dlq list --local      (dlq redrive, replay --since 1h)",
        "",
        "Try:",
        f"  {cli} submit --queue-url $QUEUE_URL {' '.join(samples) or sample}",
        f"  curl -s -X POST {pipeline.api_url}/calls -H 'content-type: application/json' "
        f'-d \'{{"callIds": ["{sample}"]}}\'',
        f"  curl -s {pipeline.api_url}/calls/{sample}",
        f"  curl -s '{pipeline.api_url}/calls?day={day}'      (that call's UTC day)",
        "  aws --endpoint-url $AWS_ENDPOINT_URL sqs receive-message --queue-url"
        " $CONSUMER_QUEUE_URL      (as a consumer would)",
        *risky_lines,
        "",
        logs,
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def webhook_lines(pipeline: LocalPipeline) -> list[str]:
    """The banner's webhook lines: where events go, which ones, and with which key."""
    receiver = pipeline.webhook
    stack = pipeline.require_stack()
    if receiver is None or not stack.webhook_targets:
        return []
    parameters = stack.parameters
    return [
        f"  webhook           {receiver.url} (a local receiver; {receiver.credentials_text})",
        f"    delivers {parameters['WebhookDetailTypes']} (Call Enriched when"
        f" {parameters['WebhookStatuses']}), {parameters['WebhookRateLimitPerSecond']}/s;"
        f" undeliverable -> {stack.outputs().get('WebhookDeadLetterQueueUrl')}",
    ]


def describe_webhook_attempt(attempt: Attempt) -> str:
    """One console line per webhook delivery."""
    tries = f" after {attempt.attempts} attempts" if attempt.attempts > 1 else ""
    if attempt.dead_lettered:
        return f"[webhook] {attempt.event_id}: NOT delivered{tries} ({attempt.error}); in the DLQ"
    if attempt.status is not None and attempt.status < 300:
        return f"[webhook] {attempt.event_id}: delivered, HTTP {attempt.status}{tries}"
    return f"[webhook] {attempt.event_id}: not delivered yet ({attempt.error}), stopping"


def _print_events(pipeline: LocalPipeline, say: Any, stop: threading.Event) -> None:
    stack = pipeline.require_stack()
    while not stop.is_set():
        try:
            envelopes = stack.receive_events(wait_seconds=1)
        except Exception:  # noqa: BLE001 - moto shutting down
            if stop.wait(0.5):
                return
            continue
        for envelope in envelopes:
            say(describe_event(envelope))


def watch_dead_letters(
    stack: LocalStack, say: Any, stop: threading.Event, *, interval: float = DLQ_WATCH_SECONDS
) -> None:
    """Print a line for each message that reaches the DLQ, with its call's last stored error.

    Every ``interval`` seconds the DLQ is peeked at without consuming: ``ReceiveMessage`` with
    a visibility timeout of 0 leaves each message visible to ``ops dlq list`` and
    ``ops dlq redrive`` (a redrive's own receive hides it from this peek). A peek sees at most
    10 messages; when the DLQ holds more than it can show, one line says how many.
    """
    from call_enricher_tools.cli import command_name
    from call_enricher_tools.ops import explain_message, table_lookup

    sqs = stack.client("sqs")
    dlq = stack.dead_letter_queue_url
    lookup = table_lookup(
        stack.client("dynamodb"), stack.function_environment()["CALLS_TABLE_NAME"]
    )
    printed: set[str] = set()
    reported_depth = 0
    while not stop.wait(interval):
        try:
            messages = sqs.receive_message(
                QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=0, AttributeNames=["All"]
            ).get("Messages", [])
            for message in messages:
                if message["MessageId"] in printed:
                    continue
                printed.add(message["MessageId"])
                say(describe_dead_letter(explain_message(message, lookup)))
            if len(messages) == 10:
                depth = int(
                    sqs.get_queue_attributes(
                        QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
                    )["Attributes"]["ApproximateNumberOfMessages"]
                )
                if depth > 10 and depth != reported_depth:
                    reported_depth = depth
                    say(f"[dlq] {depth} messages in the DLQ: {command_name()} ops dlq list --local")
        except Exception:  # noqa: BLE001, S112 - moto shutting down: try again, or stop
            continue


def describe_dead_letter(letter: Any) -> str:
    """``[dlq] message 1a2b… (call 4398…) moved to the DLQ: retrying: sinch-unavailable…``"""
    call = letter.call_id or "no call ID"
    return f"[dlq] message {letter.message_id[:12]}… (call {call}) moved to the DLQ: {letter.state}"


FLAGGED_LEVELS = ("medium", "high")
"""Risk levels the console marks (``low`` is informational: cross-border, withheld caller)."""


def describe_event(envelope: Mapping[str, Any]) -> str:
    """One line per event: type, call, status or reason, entry path (no phone numbers); a
    call whose risk is medium or high is marked ``[risk high: code, code]``."""
    detail = envelope.get("detail", {})
    kind = envelope.get("detail-type", "?")
    if kind == "Spend Threshold Crossed":
        return f"[event] {kind}: {describe_crossing(detail)}"
    call_id = detail.get("callId") or f"({detail.get('rawCallId') or 'no call ID'})"
    if kind == "Call Enriched":
        record = detail.get("record", {})
        outcome = record.get("outcome", {}).get("outcome", "?")
        what = f"{detail.get('status')} v{detail.get('version')} {outcome}"
        flag = risk_flag(record)
        if flag:
            what += f" {flag}"
    else:
        what = f"{detail.get('reason')}: {detail.get('message', '')}"
        what = what if len(what) <= 120 else what[:119] + "…"
    return f"[event] {kind}: {call_id} {what} (entry {detail.get('entryPath') or '?'})"


def risk_flag(record: Mapping[str, Any]) -> str:
    """``[risk high: premium-rate-destination, high-rate]`` for a flagged record, else ``""``."""
    risk = record.get("risk") or {}
    level = risk.get("level")
    if level not in FLAGGED_LEVELS:
        return ""
    codes = [str(signal.get("code")) for signal in risk.get("signals") or ()]
    return f"[risk {level}: {', '.join(codes)}]"


def describe_crossing(detail: Mapping[str, Any]) -> str:
    """``country LV reached 250 EUR on 2026-04-13 (282.15 EUR, 8 calls; call 5aaa216a… v1)``:
    the key (a called number only as the start of its keyed hash), the threshold, the day's
    figures and the call whose version reached it."""
    kind, key = detail.get("keyKind", "?"), str(detail.get("key", "?"))
    if kind == "number":
        key = key[:8] + "…"
    if detail.get("metric") == "calls":
        threshold = f"{detail.get('threshold')} calls"
    else:
        threshold = f"{detail.get('threshold')} {detail.get('currency')}"
    spend = ", ".join(
        f"{amount} {currency}" for currency, amount in (detail.get("spend") or {}).items()
    )
    figures = ", ".join(part for part in (spend, f"{detail.get('calls')} calls") if part)
    call = str(detail.get("callId", "?"))
    return (
        f"{kind} {key} reached {threshold} on {detail.get('day')} ({figures};"
        f" call {call[:8]}… v{detail.get('version')})"
    )


# -- command line --------------------------------------------------------------------------


def _parameters(values: list[str]) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--parameter {value!r}: expected Name=Value")
        parameters[key] = text
    return parameters


def cmd_local_up(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """The ``local up`` command: run until Ctrl-C / SIGTERM."""
    try:
        parameters = _parameters(args.parameter)
    except argparse.ArgumentTypeError as exc:
        print(f"error: {exc}", file=stderr)
        return 2
    real_sinch = None
    if args.real_sinch:
        import os

        from call_enricher.sinch.auth import SinchCredentials

        key = os.environ.get("SINCH_APPLICATION_KEY", "")
        secret = os.environ.get("SINCH_APPLICATION_SECRET", "")
        if not key or not secret:
            print(
                "error: --real-sinch needs SINCH_APPLICATION_KEY and SINCH_APPLICATION_SECRET "
                "(the Voice application's key and secret from the Sinch dashboard)",
                file=stderr,
            )
            return EXIT_START_FAILED
        real_sinch = SinchCredentials(application_key=key, application_secret=secret)
    options = PipelineOptions(
        real_sinch=real_sinch,
        api_port=args.api_port,
        aws_port=args.aws_port,
        sandbox_port=args.sandbox_port,
        parameters=parameters,
        visibility_timeout_seconds=args.visibility_timeout,
        log_file=None if args.verbose else (args.log_file or fresh_log_file()),
        webhook=args.webhook,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_local_up(options, stdout=stdout, stderr=stderr, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_local_up_parser(local_subparsers: Any) -> argparse.ArgumentParser:
    """Register ``up`` on the ``local`` command's subparsers."""
    up: argparse.ArgumentParser = local_subparsers.add_parser(
        "up",
        help="run the local stack until Ctrl-C",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    up.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help="HTTP API (3000)")
    up.add_argument("--aws-port", type=int, default=0, help="moto server (default: a free port)")
    up.add_argument("--sandbox-port", type=int, default=0, help="Sinch sandbox (default: free)")
    up.add_argument(
        "--visibility-timeout",
        type=int,
        default=LOCAL_VISIBILITY_TIMEOUT,
        help=f"seconds before a failed message is retried (default {LOCAL_VISIBILITY_TIMEOUT})",
    )
    up.add_argument(
        "--parameter",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a template parameter, e.g. -p RecheckBaseDelaySeconds=5",
    )
    up.add_argument(
        "--real-sinch",
        action="store_true",
        help="no sandbox: call the real Sinch API with SINCH_APPLICATION_KEY and "
        "SINCH_APPLICATION_SECRET (region: -p SinchRegion=euc1, default global)",
    )
    up.add_argument(
        "--webhook",
        action="store_true",
        help="deliver events to a local webhook receiver too, as the template's WebhookEndpoint "
        "does (filters: -p WebhookDetailTypes=..., -p WebhookStatuses=...)",
    )
    logs = up.add_mutually_exclusive_group()
    logs.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="where the handlers' JSON logs and metrics go "
        f"(default {default_log_file()}, truncated at start)",
    )
    logs.add_argument(
        "--verbose",
        action="store_true",
        help="print the handlers' JSON logs and metrics on the console instead",
    )
    up.set_defaults(func=cmd_local_up)
    return up
