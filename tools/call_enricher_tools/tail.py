"""``call-enricher events tail``: the stack's events as a new subscriber of its bus sees them.

It creates its own SQS queue and a rule on the stack's bus (``EventBusName`` output,
matching the ``EventSource`` output and, with ``--detail-type``, only those types), prints
one line per event (``--json``: the whole envelope, one per line) until Ctrl-C, ``--max N``
events or ``--seconds S``, and removes the rule and the queue on the way out. Against a
deployed stack it needs ``sqs:CreateQueue/SetQueueAttributes/ReceiveMessage/DeleteMessage/
DeleteQueue`` and ``events:PutRule/PutTargets/RemoveTargets/DeleteRule``; only events
published after it starts are seen (the archive and ``ops replay`` cover the past).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from call_enricher_tools.ops import (
    EXIT_CODES_EPILOG,
    EXIT_OK,
    StackTarget,
    aws_problem,
    run_command,
    target_options,
)

WAIT_SECONDS = 2
"""Long-poll per ReceiveMessage (short, so that Ctrl-C and --seconds are honoured quickly)."""


class Subscription:
    """A queue and a rule of our own on the stack's bus, for as long as the tail runs."""

    def __init__(self, target: StackTarget, detail_types: list[str]) -> None:
        self.target = target
        self.detail_types = detail_types
        self.name = f"{target.stack_name}-tail-{uuid.uuid4().hex[:8]}"[:64]
        self.bus = target.output("EventBusName")
        self.source = target.output("EventSource")
        self.queue_url = ""
        self.rule_created = False

    def __enter__(self) -> Subscription:
        from botocore.exceptions import BotoCoreError, ClientError

        sqs, events = self.target.client("sqs"), self.target.client("events")
        try:
            self.queue_url = sqs.create_queue(QueueName=self.name)["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            pattern: dict[str, Any] = {"source": [self.source]}
            if self.detail_types:
                pattern["detail-type"] = self.detail_types
            rule_arn = events.put_rule(
                Name=self.name,
                EventBusName=self.bus,
                EventPattern=json.dumps(pattern),
                State="ENABLED",
                Description="call-enricher events tail (removed when it stops)",
            )["RuleArn"]
            self.rule_created = True
            sqs.set_queue_attributes(
                QueueUrl=self.queue_url,
                Attributes={"Policy": json.dumps(_queue_policy(queue_arn, rule_arn))},
            )
            events.put_targets(
                Rule=self.name, EventBusName=self.bus, Targets=[{"Id": "tail", "Arn": queue_arn}]
            )
        except (BotoCoreError, ClientError) as exc:
            self.__exit__(None, None, None)
            raise aws_problem(exc, "subscribing to the bus") from None
        return self

    def receive(self) -> list[dict[str, Any]]:
        sqs = self.target.client("sqs")
        messages = sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=WAIT_SECONDS
        ).get("Messages", [])
        envelopes = []
        for message in messages:
            envelopes.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return envelopes

    def __exit__(self, *exc_info: object) -> None:
        """Remove the rule's target, the rule and the queue (whatever was created)."""
        from botocore.exceptions import BotoCoreError, ClientError

        events, sqs = self.target.client("events"), self.target.client("sqs")
        steps: list[Callable[[], object]] = []
        if self.rule_created:
            steps += [
                lambda: events.remove_targets(Rule=self.name, EventBusName=self.bus, Ids=["tail"]),
                lambda: events.delete_rule(Name=self.name, EventBusName=self.bus),
            ]
        if self.queue_url:
            steps.append(lambda: sqs.delete_queue(QueueUrl=self.queue_url))
        for step in steps:  # best effort: a rule without a target or queue delivers nowhere
            with contextlib.suppress(BotoCoreError, ClientError):
                step()
        self.rule_created, self.queue_url = False, ""


def _queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }


def cmd_tail(target: StackTarget, out: TextIO, err: TextIO, args: argparse.Namespace) -> int:
    from call_enricher_tools.local.up import describe_event

    stop: threading.Event = getattr(args, "stop", None) or threading.Event()
    ends = time.monotonic() + args.seconds if args.seconds else None
    shown = 0
    with Subscription(target, args.detail_type) as subscription:
        kinds = ", ".join(args.detail_type) or "every detail type"
        print(f"tailing {target.describe} ({kinds}); Ctrl-C stops", file=err, flush=True)
        on_ready = getattr(args, "on_ready", None)
        if on_ready is not None:
            on_ready()
        try:
            while not stop.is_set() and (ends is None or time.monotonic() < ends):
                for envelope in subscription.receive():
                    line = json.dumps(envelope) if args.json else describe_event(envelope)
                    print(line, file=out, flush=True)
                    shown += 1
                    if args.max and shown >= args.max:
                        stop.set()
                        break
        except KeyboardInterrupt:
            pass
    print(f"{shown} event(s); the tail's rule and queue are removed", file=err)
    return EXIT_OK


def add_events_command(subparsers: Any) -> None:
    """Register ``events tail`` on the CLI's subparsers."""
    events = subparsers.add_parser("events", help="the stack's events: tail")
    commands = events.add_subparsers(dest="events_command", required=True, metavar="COMMAND")
    tail: argparse.ArgumentParser = commands.add_parser(
        "tail",
        parents=[target_options()],
        help="print events as a new subscriber of the bus sees them",
        description=(
            "Subscribe a queue of its own to the stack's bus (a rule on EventSource, and on"
            " --detail-type if given), print each event until Ctrl-C, --max or --seconds, then"
            " remove the rule and the queue. Only events published after it starts."
        ),
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tail.add_argument(
        "--detail-type", action="append", default=[], help="only this type (repeatable)"
    )
    tail.add_argument("--json", action="store_true", help="print each whole envelope as JSON")
    tail.add_argument("--max", type=int, default=0, help="stop after N events (0: no limit)")
    tail.add_argument("--seconds", type=float, default=0, help="stop after S seconds (0: never)")
    tail.set_defaults(func=run_command(cmd_tail))
