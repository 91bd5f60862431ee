"""``call-enricher ops``: operate a deployed stack or the local stack.

Commands (each takes a target, see below):

* ``status``: the enrichment queue (waiting, in flight, delayed, age of the oldest message),
  the dead-letter queue, the stream publisher's on-failure queue, the stack's alarms in
  ALARM and the events published in the last hour.
* ``dlq list [--max N]``: the dead-letter queue's messages with each call's last stored
  state from the calls table (its ``lastError``, its failure, or "no state stored"). The
  messages are received with a short visibility timeout and released at once
  (``ChangeMessageVisibility`` 0): listing never consumes.
* ``dlq redrive [--max N]``: the dead-letter queue's messages back to the enrichment queue.
  On AWS without ``--max``: one SQS message move task (``StartMessageMoveTask``), followed
  through ``ListMessageMoveTasks``. With ``--max``, on the local stack, or where the
  endpoint cannot run a move task (moto answers HTTP 500): one message at a time, received,
  sent to the queue and deleted from the DLQ only once SQS confirmed the send (a failure in
  between leaves a message in both queues, never in neither; the service is idempotent).
* ``replay --since T [--until T] [--detail-type D]... [--rule NAME]...``: EventBridge
  ``StartReplay`` of the stack's archive onto its bus, followed through ``DescribeReplay``
  until it ends. A replay cannot filter events: every archived event of the window goes
  back to the bus, each with a ``replay-name`` field and its original ``detail.eventId``
  (consumers dedupe on it). What a replay *can* choose is which rules receive it
  (``Destination.FilterArns``): ``--detail-type`` selects the rules of the bus that listen
  only to those detail types, ``--rule`` names rules; by default every rule receives it.

Targets: ``--stack NAME`` (or ``CALL_ENRICHER_STACK``) finds the resources through the
stack's CloudFormation outputs with the normal AWS configuration (``--profile``,
``--region``, ``AWS_PROFILE``...; ``--endpoint-url`` for another endpoint). ``--local`` is
the stack ``call-enricher local up`` runs: it writes its outputs and endpoint to a small
file (:func:`write_local_state`, in ``CALL_ENRICHER_LOCAL_DIR`` or the temporary directory)
that ``--local`` (or ``--endpoint-url`` of that moto server) reads. Both resolve to a
:class:`StackTarget`, and every command works on that alone.

Progress bars go to stderr, only when it is a terminal or with ``--progress``. Exit codes:
0 done, 2 bad input (arguments, unknown stack or rule), 3 an AWS error or an unreachable
endpoint, 4 partly done (some messages moved, a replay cancelled, a status figure missing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_AWS = 3
EXIT_PARTIAL = 4

EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_BAD_INPUT: "bad input: arguments, an unknown stack, rule or detail type",
    EXIT_AWS: "AWS error or endpoint unreachable (credentials, permissions, network)",
    EXIT_PARTIAL: "partly done: see the summary (some messages moved, a figure missing...)",
}

LOCAL_STATE_ENV = "CALL_ENRICHER_LOCAL_DIR"
LOCAL_DEFAULT_STACK = "call-enricher-local"
LOCAL_REGION = "eu-west-1"
_LOCAL_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "aws_session_token": "testing",
}
LIST_VISIBILITY_TIMEOUT = 30
"""Seconds a listed DLQ message is held before it is released (at once, normally)."""
REDRIVE_VISIBILITY_TIMEOUT = 60
"""Seconds a DLQ message is held while it is sent to the queue and then deleted."""
_UNSUPPORTED_CODES = {"NotImplemented", "InvalidAction", "UnknownOperationException"}
_REPLAY_DONE = {"COMPLETED", "FAILED", "CANCELLED"}
_MOVE_DONE = {"COMPLETED", "FAILED", "CANCELLED"}


class OpsError(Exception):
    """A failure the command reports in one line, with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def bad_input(message: str) -> OpsError:
    return OpsError(message, EXIT_BAD_INPUT)


def aws_problem(exc: Exception, what: str) -> OpsError:
    """One line for a botocore failure of ``what``."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.get("Code") or f"HTTP {status}"
        text = " ".join(str(error.get("Message") or "").split())[:200]
        return OpsError(f"{what}: {code}{f': {text}' if text else ''}", EXIT_AWS)
    return OpsError(f"{what}: {type(exc).__name__}: {exc}", EXIT_AWS)


@contextlib.contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Turn botocore errors raised inside into :class:`OpsError` (exit 3)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise aws_problem(exc, what) from None


# -- the target -----------------------------------------------------------------------------


def local_state_dir() -> Path:
    """Where ``local up`` records the running local stacks (one JSON file per stack)."""
    configured = os.environ.get(LOCAL_STATE_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "call-enricher-local"


def write_local_state(
    stack_name: str, endpoint_url: str, outputs: Mapping[str, str], region: str = LOCAL_REGION
) -> Path:
    """Record a running local stack for ``ops --local``; returns the file (remove it on stop)."""
    directory = local_state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stack_name}.json"
    document = {
        "stackName": stack_name,
        "endpointUrl": endpoint_url,
        "region": region,
        "pid": os.getpid(),
        "outputs": dict(outputs),
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2), encoding="utf-8")
    temporary.replace(path)
    return path


def remove_local_state(path: Path) -> None:
    """Remove a file :func:`write_local_state` wrote, unless another process rewrote it since."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def _local_states() -> list[dict[str, Any]]:
    states = []
    for path in sorted(local_state_dir().glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            states.append(json.loads(path.read_text(encoding="utf-8")))
    return states


class StackTarget:
    """One stack's resources (its outputs) and how to reach them (clients)."""

    def __init__(
        self,
        stack_name: str,
        outputs: Mapping[str, str],
        *,
        region: str,
        endpoint_url: str | None = None,
        local: bool = False,
        session: Any = None,
    ) -> None:
        self.stack_name = stack_name
        self.outputs = dict(outputs)
        self.region = region
        self.endpoint_url = endpoint_url
        self.local = local
        self._session = session
        self._clients: dict[str, Any] = {}

    # -- resolution ------------------------------------------------------------------------

    @classmethod
    def from_outputs(
        cls,
        stack_name: str,
        outputs: Mapping[str, str],
        *,
        endpoint_url: str,
        region: str = LOCAL_REGION,
    ) -> StackTarget:
        """The local stack (moto), from :meth:`LocalStack.outputs` and its endpoint."""
        return cls(stack_name, outputs, region=region, endpoint_url=endpoint_url, local=True)

    @classmethod
    def from_local(
        cls, stack_name: str | None = None, endpoint_url: str | None = None
    ) -> StackTarget:
        """The running local stack named ``stack_name`` (default ``call-enricher-local``,
        or the only one running), or the one whose moto server is ``endpoint_url``."""
        states = _local_states()
        if endpoint_url is not None:
            matches = [s for s in states if s.get("endpointUrl") == endpoint_url.rstrip("/")]
        elif stack_name is not None:
            matches = [s for s in states if s.get("stackName") == stack_name]
        else:
            named = [s for s in states if s.get("stackName") == LOCAL_DEFAULT_STACK]
            matches = named or (states if len(states) == 1 else [])
        if not matches:
            where = endpoint_url or stack_name or LOCAL_DEFAULT_STACK
            raise bad_input(
                f"no local stack {where} is running (none recorded in {local_state_dir()}): "
                "start one with `call-enricher local up`"
            )
        state = matches[0]
        return cls.from_outputs(
            str(state["stackName"]),
            state["outputs"],
            endpoint_url=str(state["endpointUrl"]),
            region=str(state.get("region", LOCAL_REGION)),
        )

    @classmethod
    def from_cloudformation(
        cls,
        stack_name: str,
        *,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
    ) -> StackTarget:
        """A deployed stack, found through ``DescribeStacks`` (the user's AWS configuration)."""
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            session = boto3.session.Session(profile_name=profile, region_name=region)
        except BotoCoreError as exc:
            raise aws_problem(exc, "AWS configuration") from None
        target = cls(
            stack_name, {}, region=session.region_name or "", endpoint_url=endpoint_url,
            session=session,
        )  # fmt: skip
        if not session.region_name:
            raise bad_input("no AWS region: pass --region or set AWS_REGION / AWS_PROFILE")
        try:
            stacks = target.client("cloudformation").describe_stacks(StackName=stack_name)
        except ClientError as exc:
            if "does not exist" in str(exc.response.get("Error", {}).get("Message", "")):
                raise bad_input(
                    f"stack {stack_name} does not exist in {session.region_name} "
                    "(check --stack, --region and the account of your credentials)"
                ) from None
            raise aws_problem(exc, "CloudFormation DescribeStacks") from None
        except BotoCoreError as exc:
            raise aws_problem(exc, "CloudFormation DescribeStacks") from None
        stack = stacks["Stacks"][0]
        target.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        return target

    # -- use -------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            config = Config(
                connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 3}
            )
            if self.local:
                import boto3

                self._clients[service] = boto3.client(  # type: ignore[call-overload]
                    service,
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    config=config,
                    **_LOCAL_CREDENTIALS,
                )
            else:
                self._clients[service] = self._session.client(
                    service, endpoint_url=self.endpoint_url, config=config
                )
        return self._clients[service]

    def output(self, name: str) -> str:
        value = self.outputs.get(name)
        if not value:
            raise bad_input(
                f"stack {self.stack_name} has no output {name}: is it a call-enricher stack "
                "deployed from this version of template.yaml?"
            )
        return value

    @property
    def describe(self) -> str:
        if self.local:
            return f"local stack {self.stack_name} (moto at {self.endpoint_url})"
        where = f", endpoint {self.endpoint_url}" if self.endpoint_url else ""
        return f"stack {self.stack_name} ({self.region}{where})"

    @property
    def cli_args(self) -> str:
        """How to name this target on the command line (for hints)."""
        return "--local" if self.local else f"--stack {self.stack_name}"


def resolve_target(args: argparse.Namespace) -> StackTarget:
    """``--local`` / ``--endpoint-url`` of a local stack, else ``--stack`` (CloudFormation)."""
    local_stack = getattr(args, "local_stack", None)
    if args.local or local_stack:
        return StackTarget.from_local(local_stack, args.endpoint_url)
    if args.endpoint_url and not args.stack:
        return StackTarget.from_local(endpoint_url=args.endpoint_url)
    if not args.stack:
        raise bad_input(
            "name the stack: --stack NAME (or CALL_ENRICHER_STACK), or --local for the "
            "stack `call-enricher local up` runs"
        )
    return StackTarget.from_cloudformation(
        args.stack, region=args.region, profile=args.profile, endpoint_url=args.endpoint_url
    )


# -- progress -------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr (a no-op when disabled)."""

    WIDTH = 28

    def __init__(self, stream: TextIO, label: str, *, enabled: bool) -> None:
        self.stream = stream
        self.label = label
        self.enabled = enabled
        self._shown = False

    def update(self, done: float, total: float | None, note: str = "") -> None:
        if not self.enabled:
            return
        if total:
            fraction = max(0.0, min(1.0, done / total))
            filled = int(fraction * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            figure = f"{fraction * 100:3.0f}%"
        else:
            bar, figure = "", f"{done:g}"
        line = (
            f"\r{self.label} [{bar}] {figure} {note}"
            if total
            else f"\r{self.label} {figure} {note}"
        )
        self.stream.write(line[:120].ljust(80))
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def progress_enabled(args: argparse.Namespace, stderr: TextIO) -> bool:
    if getattr(args, "progress", False):
        return True
    isatty = getattr(stderr, "isatty", None)
    return bool(isatty and isatty())


# -- what the table says about a message ----------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A DLQ message and what the calls table holds about its call."""

    message_id: str
    call_id: str | None
    key: str
    """The table key of its state: the call ID, or ``msg:{messageId}`` without one."""
    sent_at: dt.datetime | None
    receive_count: int
    state: str
    body: str = field(repr=False, default="")


def describe_stored(stored: Any) -> str:
    """One line for a stored call state (a :class:`~call_enricher.state.StoredCall` or None)."""
    if stored is None:
        return "no state stored"
    parts: list[str] = []
    trace = stored.last_error
    if trace is not None:
        codes = [f"HTTP {trace.http_status}"] if trace.http_status else []
        if trace.sinch_error_code:
            codes.append(f"Sinch errorCode {trace.sinch_error_code}")
        extra = f" ({', '.join(codes)})" if codes else ""
        parts.append(f"{trace.describe()}{extra}: {trace.message}"[:160])
    if stored.failure is not None:
        failure = stored.failure
        parts.append(f"failed: {failure.reason} ({failure.error_class}): {failure.message}"[:160])
    if stored.version is not None:
        parts.append(f"stored v{stored.version} {stored.status or '?'}")
    return "; ".join(parts) or "nothing stored but the key"


def explain_message(message: Mapping[str, Any], lookup: Callable[[str], Any]) -> DeadLetter:
    """What a DLQ message is about: its call (from the body) and that call's stored state.

    ``lookup(key)`` answers the stored state of a table key (``StoredCall`` or None) and may
    raise :class:`OpsError`; an unreadable state is described, not raised.
    """
    from call_enricher.errors import CallEnricherError
    from call_enricher.messages import parse_message_body
    from call_enricher.state import message_key

    message_id = str(message.get("MessageId", "?"))
    body = str(message.get("Body", ""))
    call_id: str | None
    try:
        call_id = parse_message_body(body).call_id
    except CallEnricherError as exc:
        call_id = getattr(exc, "call_id", None)
    key = call_id or message_key(message_id)
    try:
        state = describe_stored(lookup(key))
    except OpsError as exc:
        state = f"state unknown ({exc})"
    except CallEnricherError as exc:  # a stored item that does not parse
        state = f"state unreadable: {exc.message}"
    attributes = message.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    sent_at = dt.datetime.fromtimestamp(int(sent) / 1000, dt.UTC) if sent else None
    return DeadLetter(
        message_id=message_id,
        call_id=call_id,
        key=key,
        sent_at=sent_at,
        receive_count=int(attributes.get("ApproximateReceiveCount", 0)),
        state=state,
        body=body,
    )


def table_lookup(dynamodb: Any, table_name: str) -> Callable[[str], Any]:
    """``lookup(key)`` for :func:`explain_message`: a consistent read of the calls table."""
    from call_enricher.items import parse_item

    def lookup(key: str) -> Any:
        with aws_call("DynamoDB GetItem"):
            item = dynamodb.get_item(
                TableName=table_name, Key={"callId": {"S": key}}, ConsistentRead=True
            ).get("Item")
        return parse_item(item) if item else None

    return lookup


# -- status -------------------------------------------------------------------------------


def queue_counts(sqs: Any, queue_url: str) -> tuple[int, int, int]:
    """(waiting, in flight, delayed) of a queue."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    waiting, in_flight, delayed = (int(attributes.get(name, 0)) for name in names)
    return waiting, in_flight, delayed


def _metric(
    cloudwatch: Any,
    namespace: str,
    metric: str,
    dimensions: Sequence[Mapping[str, str]],
    *,
    statistic: str,
    minutes: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = cloudwatch.get_metric_statistics(
        Namespace=namespace,
        MetricName=metric,
        Dimensions=list(dimensions),
        StartTime=now - dt.timedelta(minutes=minutes),
        EndTime=now,
        Period=60 * minutes if statistic == "Sum" else 60,
        Statistics=[statistic],
    ).get("Datapoints", [])
    return points


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def cmd_status(target: StackTarget, out: TextIO, err: TextIO, args: argparse.Namespace) -> int:
    sqs = target.client("sqs")
    now = dt.datetime.now(dt.UTC)
    missing: list[str] = []
    lines = [f"call-enricher {target.describe}"]

    def figure(label: str, compute: Callable[[], str]) -> None:
        try:
            value = compute()
        except OpsError as exc:
            missing.append(label)
            value = f"n/a ({exc})"
        lines.append(f"  {label:<20}{value}")

    def enrichment_queue() -> str:
        with aws_call("SQS GetQueueAttributes (enrichment queue)"):
            waiting, in_flight, delayed = queue_counts(sqs, target.output("EnrichmentQueueUrl"))
        return f"{waiting} waiting, {in_flight} in flight, {delayed} delayed (re-checks)"

    def oldest() -> str:
        name = target.output("EnrichmentQueueUrl").rstrip("/").rsplit("/", 1)[-1]
        with aws_call("CloudWatch GetMetricStatistics (AWS/SQS)"):
            points = _metric(
                target.client("cloudwatch"),
                "AWS/SQS",
                "ApproximateAgeOfOldestMessage",
                [{"Name": "QueueName", "Value": name}],
                statistic="Maximum",
                minutes=15,
                now=now,
            )
        if not points:
            return "n/a (no datapoint in the last 15 min" + (
                ": moto keeps none)" if target.local else ")"
            )
        latest = max(points, key=lambda p: p["Timestamp"])
        return f"{_age(float(latest['Maximum']))} (CloudWatch, {latest['Timestamp']:%H:%M} UTC)"

    def dead_letter_queue() -> str:
        with aws_call("SQS GetQueueAttributes (dead-letter queue)"):
            waiting, in_flight, _ = queue_counts(sqs, target.output("DeadLetterQueueUrl"))
        total = waiting + in_flight
        hint = f"   -> call-enricher ops dlq list {target.cli_args}" if total else ""
        return f"{total} message(s){hint}"

    def publisher_failures() -> str:
        with aws_call("SQS GetQueueAttributes (publisher failure queue)"):
            waiting, in_flight, _ = queue_counts(sqs, target.output("PublisherFailureQueueUrl"))
        total = waiting + in_flight
        hint = "   -> docs/runbook.md#publisherfailurequeuenotemptyalarm" if total else ""
        return f"{total} batch(es) given up on{hint}"

    def webhook_failures() -> str:
        with aws_call("SQS GetQueueAttributes (webhook dead-letter queue)"):
            waiting, in_flight, _ = queue_counts(sqs, target.output("WebhookDeadLetterQueueUrl"))
        total = waiting + in_flight
        if not total and "WebhookRuleName" not in target.outputs:
            return "off (no WebhookEndpoint)"
        hint = "   -> docs/runbook.md#webhookdeadletterqueuenotemptyalarm" if total else ""
        return f"{total} event(s) not delivered{hint}"

    def alarms() -> str:
        cloudwatch = target.client("cloudwatch")
        names: list[str] = []
        with aws_call("CloudWatch DescribeAlarms"):
            paginator = cloudwatch.get_paginator("describe_alarms")
            for page in paginator.paginate(
                AlarmNamePrefix=f"{target.stack_name}-", StateValue="ALARM"
            ):
                names.extend(a["AlarmName"] for a in page.get("MetricAlarms", []))
                names.extend(a["AlarmName"] for a in page.get("CompositeAlarms", []))
        if not names:
            return "none" + (" (the local stack creates no alarms)" if target.local else "")
        short = [n.removeprefix(f"{target.stack_name}-") for n in names]
        return f"{len(names)}: " + ", ".join(short) + "   -> docs/runbook.md"

    def published() -> str:
        namespace = target.outputs.get("MetricsNamespace") or f"CallEnricher/{target.stack_name}"
        with aws_call("CloudWatch GetMetricStatistics (EventsPublished)"):
            points = _metric(
                target.client("cloudwatch"),
                namespace,
                "EventsPublished",
                [{"Name": "service", "Value": "call-enricher"}],
                statistic="Sum",
                minutes=60,
                now=now,
            )
        if not points:
            if target.local:
                return "n/a (locally the metrics are log lines, not CloudWatch data)"
            return "n/a (no datapoint in the last hour: nothing published, or no metrics yet)"
        return f"{sum(float(p['Sum']) for p in points):.0f} in the last hour"

    figure("enrichment queue", enrichment_queue)
    figure("oldest message", oldest)
    figure("dead-letter queue", dead_letter_queue)
    figure("publisher failures", publisher_failures)
    if "WebhookDeadLetterQueueUrl" in target.outputs:  # stacks deployed before it have none
        figure("webhook failures", webhook_failures)
    figure("alarms in ALARM", alarms)
    figure("events published", published)
    print("\n".join(lines), file=out)
    if missing:
        print(f"partial: {', '.join(missing)} could not be read (see above)", file=err)
        return EXIT_PARTIAL
    return EXIT_OK


# -- dlq list -------------------------------------------------------------------------------


def _release(sqs: Any, queue_url: str, handles: Iterable[str]) -> int:
    """Make held messages visible again at once; returns how many could not be released."""
    pending = list(handles)
    failed = 0
    for start in range(0, len(pending), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
            for i, handle in enumerate(pending[start : start + 10])
        ]
        try:
            answer = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
            failed += len(answer.get("Failed", []))
        except Exception:  # noqa: BLE001 - they reappear after the visibility timeout anyway
            failed += len(entries)
    return failed


def peek_dead_letters(
    target: StackTarget, *, max_messages: int, progress: Progress | None = None
) -> tuple[list[DeadLetter], int, int]:
    """Up to ``max_messages`` DLQ messages, explained and released. Returns
    (messages, approximate total in the DLQ, messages that could not be released)."""
    sqs = target.client("sqs")
    dlq = target.output("DeadLetterQueueUrl")
    with aws_call("SQS GetQueueAttributes (dead-letter queue)"):
        waiting, in_flight, _ = queue_counts(sqs, dlq)
    total = waiting + in_flight
    held: dict[str, str] = {}
    received: list[dict[str, Any]] = []
    unreleased = 0
    try:
        with aws_call("SQS ReceiveMessage (dead-letter queue)"):
            while len(received) < max_messages:
                messages = sqs.receive_message(
                    QueueUrl=dlq,
                    MaxNumberOfMessages=min(10, max_messages - len(received)),
                    VisibilityTimeout=LIST_VISIBILITY_TIMEOUT,
                    WaitTimeSeconds=0 if target.local else 1,
                    AttributeNames=["All"],
                ).get("Messages", [])
                fresh = [m for m in messages if m["MessageId"] not in held]
                for message in messages:
                    held[message["MessageId"]] = message["ReceiptHandle"]
                if not fresh:
                    break
                received.extend(fresh)
                if progress is not None:
                    progress.update(len(received), min(max(total, 1), max_messages), "received")
    finally:
        unreleased = _release(sqs, dlq, held.values())
    lookup = table_lookup(target.client("dynamodb"), target.output("CallsTableName"))
    explained = []
    for index, message in enumerate(received[:max_messages], start=1):
        explained.append(explain_message(message, lookup))
        if progress is not None:
            progress.update(index, len(received), "looked up")
    return explained, total, unreleased


def cmd_dlq_list(target: StackTarget, out: TextIO, err: TextIO, args: argparse.Namespace) -> int:
    if args.max < 1:
        raise bad_input("--max must be at least 1")
    progress = Progress(err, "dlq list", enabled=progress_enabled(args, err))
    try:
        letters, total, unreleased = peek_dead_letters(
            target, max_messages=args.max, progress=progress
        )
    finally:
        progress.close()
    if not letters:
        print(f"The dead-letter queue of {target.describe} is empty.", file=out)
        return EXIT_OK
    rows = [("message", "call", "first sent", "last stored state")]
    now = dt.datetime.now(dt.UTC)
    for letter in letters:
        sent = f"{_age((now - letter.sent_at).total_seconds())} ago" if letter.sent_at else "?"
        call = letter.call_id or f"(no call ID: {letter.body[:24]!r})"
        rows.append((letter.message_id[:13], call, sent, letter.state))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3],
            file=out,
        )
    print(
        f"\n{len(letters)} listed of about {max(total, len(letters))} in the dead-letter queue of "
        f"{target.describe}; nothing consumed. Fix the cause, then: "
        f"call-enricher ops dlq redrive {target.cli_args}",
        file=out,
    )
    if unreleased:
        print(
            f"warning: {unreleased} message(s) could not be released: they reappear in "
            f"{LIST_VISIBILITY_TIMEOUT} s",
            file=err,
        )
        return EXIT_PARTIAL
    return EXIT_OK


# -- dlq redrive ------------------------------------------------------------------------------


@dataclass
class RedriveResult:
    method: str
    moved: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class MoveTaskUnsupported(OpsError):
    """The endpoint cannot run a message move task: move the messages one at a time."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_AWS)


def _unsupported(exc: Exception) -> bool:
    """The endpoint cannot run message move tasks (moto: HTTP 500, not implemented)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return status >= 500 or code in _UNSUPPORTED_CODES


def redrive_with_move_task(
    target: StackTarget,
    progress: Progress,
    *,
    sleep: Callable[[float], None] = time.sleep,
    poll_seconds: float = 2.0,
) -> RedriveResult:
    """``StartMessageMoveTask`` DLQ -> enrichment queue, followed until it ends."""
    sqs = target.client("sqs")
    source, destination = target.output("DeadLetterQueueArn"), target.output("EnrichmentQueueArn")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        handle = sqs.start_message_move_task(SourceArn=source, DestinationArn=destination)[
            "TaskHandle"
        ]
    except ClientError as exc:
        problem = aws_problem(exc, "SQS StartMessageMoveTask")
        raise (MoveTaskUnsupported(str(problem)) if _unsupported(exc) else problem) from None
    except BotoCoreError as exc:
        raise aws_problem(exc, "SQS StartMessageMoveTask") from None
    result = RedriveResult(method="SQS message move task")
    while True:
        with aws_call("SQS ListMessageMoveTasks"):
            tasks = sqs.list_message_move_tasks(SourceArn=source, MaxResults=10).get("Results", [])
        task = next((t for t in tasks if t.get("TaskHandle") == handle), tasks[0] if tasks else {})
        status = str(task.get("Status", "RUNNING"))
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        to_move = task.get("ApproximateNumberOfMessagesToMove")
        progress.update(moved, float(to_move) if to_move else None, f"moved ({status})")
        if status in _MOVE_DONE:
            result.moved = moved
            if status != "COMPLETED":
                reason = task.get("FailureReason") or "no reason given"
                result.problems.append(f"the move task ended {status}: {reason}")
            return result
        sleep(poll_seconds)


def redrive_one_by_one(
    target: StackTarget, progress: Progress, *, max_messages: int | None
) -> RedriveResult:
    """Receive, send, delete: one message at a time, deleting only after a confirmed send."""
    sqs = target.client("sqs")
    dlq, queue = target.output("DeadLetterQueueUrl"), target.output("EnrichmentQueueUrl")
    result = RedriveResult(method="one message at a time")
    with aws_call("SQS GetQueueAttributes (dead-letter queue)"):
        waiting, in_flight, _ = queue_counts(sqs, dlq)
    total = waiting if max_messages is None else min(waiting, max_messages)
    if in_flight:
        result.notes.append(
            f"{in_flight} DLQ message(s) were held by another reader (not moved: run again)"
        )
    sent_ids: set[str] = set()
    while max_messages is None or result.moved < max_messages:
        with aws_call("SQS ReceiveMessage (dead-letter queue)"):
            messages = sqs.receive_message(
                QueueUrl=dlq,
                MaxNumberOfMessages=1,
                VisibilityTimeout=REDRIVE_VISIBILITY_TIMEOUT,
                WaitTimeSeconds=0 if target.local else 1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
        if not messages:
            break
        message = messages[0]
        handle = message["ReceiptHandle"]
        if message["MessageId"] in sent_ids:  # moved by us, failed again, back in the DLQ
            _release(sqs, dlq, [handle])
            result.notes.append(
                "a message moved by this redrive failed again and is back in the DLQ: "
                "is the cause fixed? (`call-enricher ops dlq list` shows its last error)"
            )
            break
        body = message.get("Body", "")
        try:
            answer = sqs.send_message(
                QueueUrl=queue, MessageBody=body, **_message_attributes(message)
            )
        except Exception as exc:  # noqa: BLE001 - reported; the message stays in the DLQ
            _release(sqs, dlq, [handle])
            result.problems.append(f"{aws_problem(exc, 'SQS SendMessage')} (left in the DLQ)")
            break
        if answer.get("MD5OfMessageBody") != hashlib.md5(body.encode()).hexdigest():  # noqa: S324 - SQS's own checksum
            _release(sqs, dlq, [handle])
            result.problems.append(
                f"SQS did not confirm the body of message {message['MessageId']}: left in the "
                "DLQ (it may now also be in the queue: harmless, the service is idempotent)"
            )
            break
        sent_ids.add(str(answer["MessageId"]))
        try:
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=handle)
        except Exception as exc:  # noqa: BLE001 - reported: the message is now in both queues
            result.moved += 1
            result.problems.append(
                f"{aws_problem(exc, 'SQS DeleteMessage')}: message {message['MessageId']} was "
                "sent to the queue but is still in the DLQ (harmless duplicate)"
            )
            break
        result.moved += 1
        progress.update(result.moved, max(total, result.moved), "moved")
    return result


def _message_attributes(message: Mapping[str, Any]) -> dict[str, Any]:
    attributes = {}
    for name, value in message.get("MessageAttributes", {}).items():
        kept = {k: value[k] for k in ("DataType", "StringValue", "BinaryValue") if k in value}
        attributes[name] = kept
    return {"MessageAttributes": attributes} if attributes else {}


def cmd_dlq_redrive(target: StackTarget, out: TextIO, err: TextIO, args: argparse.Namespace) -> int:
    if args.max is not None and args.max < 1:
        raise bad_input("--max must be at least 1")
    progress = Progress(err, "dlq redrive", enabled=progress_enabled(args, err))
    notes: list[str] = []
    try:
        result: RedriveResult | None = None
        if args.max is None and not target.local:
            try:
                result = redrive_with_move_task(target, progress)
            except MoveTaskUnsupported as exc:
                notes.append(f"this endpoint cannot run a message move task ({exc})")
        elif target.local:
            notes.append("the local stack's moto cannot run a message move task")
        if result is None:
            result = redrive_one_by_one(target, progress, max_messages=args.max)
    finally:
        progress.close()
    notes.extend(result.notes)
    for note in notes:
        print(f"note: {note}", file=out)
    print(
        f"Redrive of {target.describe} ({result.method}): {result.moved} message(s) moved "
        "from the dead-letter queue to the enrichment queue.",
        file=out,
    )
    if result.moved:
        print(
            f"Follow them: call-enricher ops status {target.cli_args} (and GET /calls/{{callId}})",
            file=out,
        )
    for problem in result.problems:
        print(f"error: {problem}", file=err)
    if result.problems:
        return EXIT_PARTIAL if result.moved else EXIT_AWS
    return EXIT_OK


# -- replay --------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, *, now: dt.datetime) -> dt.datetime:
    """``2026-12-01T10:00`` (UTC unless it says otherwise), ``now``, or ``2h`` (= 2 hours ago)."""
    value = text.strip()
    if value == "now":
        return now
    relative = _RELATIVE.match(value)
    if relative:
        return now - dt.timedelta(**{_UNITS[relative.group(2)]: float(relative.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise bad_input(
            f"cannot read the time {text!r}: use ISO 8601 (2026-12-01T10:00Z) or an age "
            "such as 90m, 2h, 1d"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _rules_of_bus(events: Any, bus: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = events.list_rules(EventBusName=bus, **({"NextToken": token} if token else {}))
        rules.extend(page.get("Rules", []))
        token = page.get("NextToken")
        if not token:
            return rules


def select_rules(
    rules: Sequence[Mapping[str, Any]], detail_types: Sequence[str]
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(rules that listen only to ``detail_types``, the other rules). A rule without a
    detail-type in its pattern listens to every type."""
    chosen, left_out = [], []
    for rule in rules:
        try:
            pattern = json.loads(rule.get("EventPattern") or "{}")
        except ValueError:
            pattern = {}
        types = pattern.get("detail-type") if isinstance(pattern, dict) else None
        if (
            isinstance(types, list)
            and types
            and all(isinstance(t, str) for t in types)
            and set(types) <= set(detail_types)
        ):
            chosen.append(rule)
        else:
            left_out.append(rule)
    return chosen, left_out


def cmd_replay(target: StackTarget, out: TextIO, err: TextIO, args: argparse.Namespace) -> int:
    from call_enricher.events import (
        DETAIL_TYPE_CALL_ENRICHED,
        DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
        DETAIL_TYPE_SPEND_THRESHOLD_CROSSED,
    )

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    since = parse_time(args.since, now=now)
    until = min(parse_time(args.until, now=now), now) if args.until else now
    if since >= until:
        raise bad_input(f"--since ({since:%Y-%m-%d %H:%M:%S} UTC) must be before --until")
    known = {
        DETAIL_TYPE_CALL_ENRICHED,
        DETAIL_TYPE_CALL_ENRICHMENT_FAILED,
        DETAIL_TYPE_SPEND_THRESHOLD_CROSSED,
    }
    unknown = sorted(set(args.detail_type) - known)
    if unknown:
        raise bad_input(
            f"unknown detail type {', '.join(map(repr, unknown))}: this stack publishes "
            + " and ".join(f"{t!r}" for t in sorted(known))
        )
    events = target.client("events")
    with aws_call("EventBridge DescribeArchive"):
        archive = events.describe_archive(ArchiveName=target.output("EventArchiveName"))
    bus_arn = str(archive["EventSourceArn"])
    bus_name = bus_arn.rsplit("/", 1)[-1]
    filter_arns: list[str] = []
    to_rules = "every rule on the bus"
    left_out: list[Mapping[str, Any]] = []
    if args.detail_type or args.rule:
        with aws_call("EventBridge ListRules"):
            rules = _rules_of_bus(events, bus_name)
        chosen: list[Mapping[str, Any]] = []
        if args.detail_type:
            chosen, left_out = select_rules(rules, args.detail_type)
        by_name = {str(r["Name"]): r for r in rules}
        for name in args.rule:
            if name not in by_name:
                raise bad_input(f"no rule {name!r} on bus {bus_name}")
            chosen.append(by_name[name])
        left_out = [r for r in left_out if r not in chosen]
        if not chosen:
            raise bad_input(
                f"no rule on bus {bus_name} listens only to {', '.join(args.detail_type)}: a "
                "replay cannot filter events by detail type. Replay without --detail-type "
                "(every rule gets every event of the window; consumers dedupe on "
                "detail.eventId), or name the rules with --rule"
            )
        filter_arns = sorted({str(r["Arn"]) for r in chosen})
        to_rules = "rules " + ", ".join(sorted({str(r["Name"]) for r in chosen}))
    suffix = f"-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:4]}"  # unique, and sorts by time
    name = re.sub(r"[^A-Za-z0-9._-]", "-", target.stack_name)[: 64 - len(suffix)] + suffix
    destination: dict[str, Any] = {"Arn": bus_arn}
    if filter_arns:
        destination["FilterArns"] = filter_arns
    with aws_call("EventBridge StartReplay"):
        events.start_replay(
            ReplayName=name,
            Description=f"call-enricher ops replay {since:%Y-%m-%dT%H:%M}Z..{until:%H:%M}Z",
            EventSourceArn=str(archive["ArchiveArn"]),
            EventStartTime=since,
            EventEndTime=until,
            Destination=destination,
        )
    print(
        f"Replay {name} started: archived events of {target.describe} from "
        f"{since:%Y-%m-%d %H:%M:%S} to {until:%Y-%m-%d %H:%M:%S} UTC go back onto bus "
        f"{bus_name}, to {to_rules}.",
        file=out,
    )
    for rule in left_out:
        print(
            f"  not to rule {rule['Name']} (it listens to other detail types too; "
            f"--rule {rule['Name']} would send it every event of the window)",
            file=out,
        )
    if args.no_wait:
        print(f"Not waiting: aws events describe-replay --replay-name {name}", file=out)
        return EXIT_OK
    progress = Progress(err, "replay", enabled=progress_enabled(args, err))
    window = (until - since).total_seconds()
    state: dict[str, Any] = {}
    try:
        while True:
            with aws_call("EventBridge DescribeReplay"):
                state = events.describe_replay(ReplayName=name)
            last = state.get("EventLastReplayedTime")
            done = (last - since).total_seconds() if isinstance(last, dt.datetime) else 0.0
            progress.update(done, window, str(state.get("State", "")))
            if state.get("State") in _REPLAY_DONE:
                break
            time.sleep(args.poll_seconds)
    except KeyboardInterrupt:
        progress.close()
        print(
            f"Stopped waiting; the replay goes on. Cancel it: aws events cancel-replay "
            f"--replay-name {name}",
            file=out,
        )
        return EXIT_PARTIAL
    progress.close()
    final = str(state.get("State"))
    started, ended = state.get("ReplayStartTime"), state.get("ReplayEndTime")
    took = (
        f" in {(ended - started).total_seconds():.0f} s"
        if isinstance(started, dt.datetime) and isinstance(ended, dt.datetime)
        else ""
    )
    print(f"Replay {name}: {final}{took}.", file=out)
    if final == "COMPLETED":
        print(
            "Consumers received the replayed events with a `replay-name` field and their "
            "original detail.eventId: they dedupe on it.",
            file=out,
        )
        if target.local and filter_arns:
            print(
                "note: moto ignores FilterArns: locally every rule on the bus received them.",
                file=out,
            )
        return EXIT_OK
    reason = state.get("StateReason") or "no reason given"
    print(f"error: replay {name} ended {final}: {reason}", file=err)
    return EXIT_AWS if final == "FAILED" else EXIT_PARTIAL


# -- command line --------------------------------------------------------------------------

Command = Callable[[StackTarget, TextIO, TextIO, argparse.Namespace], int]


def run_command(command: Command) -> Callable[[argparse.Namespace, TextIO, TextIO], int]:
    def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
        try:
            target = resolve_target(args)
            return command(target, stdout, stderr, args)
        except OpsError as exc:
            print(f"error: {exc}", file=stderr)
            return exc.code

    return run


EXIT_CODES_EPILOG = "exit codes:\n" + "\n".join(
    f"  {code}  {text}" for code, text in EXIT_CODES.items()
)
"""The ``--help`` epilog of every command on a stack target (ops, export, events tail)."""


def target_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("target (a deployed stack, or the local stack)")
    where.add_argument(
        "--stack",
        default=os.environ.get("CALL_ENRICHER_STACK"),
        help="the deployed stack's name (default: $CALL_ENRICHER_STACK)",
    )
    where.add_argument("--region", default=None, help="AWS region (default: your configuration)")
    where.add_argument("--profile", default=None, help="AWS profile (default: your configuration)")
    where.add_argument(
        "--local", action="store_true", help="the stack `call-enricher local up` runs"
    )
    where.add_argument(
        "--local-stack",
        default=None,
        metavar="NAME",
        help="a local stack by name (implies --local)",
    )
    where.add_argument(
        "--endpoint-url",
        default=None,
        help="a local stack's moto server; with --stack, another AWS endpoint",
    )
    common.add_argument(
        "--progress", action="store_true", help="progress bars on stderr even when not a terminal"
    )
    return common


def add_ops_command(subparsers: Any) -> None:
    """Register ``ops`` (status, dlq list, dlq redrive, replay) on the CLI's subparsers."""
    epilog = EXIT_CODES_EPILOG
    common = target_options()
    formatter = argparse.RawDescriptionHelpFormatter
    ops: argparse.ArgumentParser = subparsers.add_parser(
        "ops",
        help="operate a stack: status, dead-letter queue, replay (deployed or local)",
        description=(
            "Operate a deployed stack (--stack NAME, found through its CloudFormation outputs) "
            "or the local stack (--local): status, the dead-letter queue, event replay. "
            "docs/runbook.md says when to use which."
        ),
        epilog=epilog,
        formatter_class=formatter,
    )
    commands = ops.add_subparsers(dest="ops_command", required=True, metavar="COMMAND")

    status = commands.add_parser(
        "status", parents=[common], help="queues, alarms in ALARM, events published", epilog=epilog,
        formatter_class=formatter,
    )  # fmt: skip
    status.set_defaults(func=run_command(cmd_status))

    dlq = commands.add_parser("dlq", help="the dead-letter queue: list, redrive")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    listing = dlq_commands.add_parser(
        "list", parents=[common], help="its messages and each call's last stored error",
        epilog=epilog, formatter_class=formatter,
    )  # fmt: skip
    listing.add_argument("--max", type=int, default=100, help="list at most N messages (100)")
    listing.set_defaults(func=run_command(cmd_dlq_list))
    redrive = dlq_commands.add_parser(
        "redrive", parents=[common], help="move its messages back to the enrichment queue",
        epilog=epilog, formatter_class=formatter,
    )  # fmt: skip
    redrive.add_argument(
        "--max", type=int, default=None, help="move at most N (one at a time; default: all)"
    )
    redrive.set_defaults(func=run_command(cmd_dlq_redrive))

    replay = commands.add_parser(
        "replay",
        parents=[common],
        help="replay archived events onto the bus",
        description=(
            "EventBridge StartReplay of the stack's archive. Every archived event of the "
            "window goes back to the bus (with replay-name set and the same detail.eventId: "
            "consumers dedupe on it). --detail-type/--rule choose which rules receive it."
        ),
        epilog=epilog,
        formatter_class=formatter,
    )
    replay.add_argument("--since", required=True, help="start: ISO 8601 (UTC default) or 2h, 1d")
    replay.add_argument("--until", default=None, help="end (default: now)")
    replay.add_argument(
        "--detail-type",
        action="append",
        default=[],
        help="only to the rules listening only to this detail type (repeatable)",
    )
    replay.add_argument(
        "--rule", action="append", default=[], help="to this rule of the bus (repeatable)"
    )
    replay.add_argument("--no-wait", action="store_true", help="start it and return")
    replay.add_argument("--poll-seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    replay.set_defaults(func=run_command(cmd_replay))
