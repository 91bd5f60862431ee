"""``call-enricher submit``: send call IDs to an enrichment queue (local or deployed).

IDs come from the arguments, a file (``--file F``, one per line, ``#`` comments and blank
lines ignored) or stdin (``-``). Every ID is validated first; when any is invalid nothing is
sent and each invalid one is listed with where it was read (``ids.txt:7``, ``stdin:3``,
``argument 2``; exit 2). Duplicates are sent once. The valid IDs go
out as JSON messages ``{"callId": ..., "region"?: ...}`` in batches of 10 through
:meth:`call_enricher.queueing.EnrichmentQueue.send_many`, which retries failed entries and
reports each ID as confirmed or failed: an ID counts as sent only once SQS confirmed it.

The endpoint: a queue URL on 127.0.0.1/localhost (the local stack) is sent to that host
with moto's fake credentials; any other URL uses the standard AWS configuration
(``AWS_PROFILE``, ``AWS_REGION``..., the region defaulting to the one in the queue URL).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

from call_enricher import errors

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_SEND_FAILED = 5  # = the CLI's "upstream unavailable": retry later
PROGRESS_WIDTH = 30
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_SQS_HOST = re.compile(r"^sqs[.-]([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


@dataclass
class SubmitResult:
    """What happened to each ID: ``sent`` (confirmed by SQS) or ``failed`` (ID -> reason)."""

    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourcedId:
    """A call ID as read, and where: ``argument 2``, ``ids.txt:7`` or ``stdin:3``."""

    call_id: str
    where: str


def read_ids(ids: Sequence[str], file: str | None, stdin: TextIO) -> list[str]:
    """IDs from the arguments (``-`` = stdin) and ``file`` (``-`` = stdin), in order."""
    return [item.call_id for item in read_sourced_ids(ids, file, stdin)]


def read_sourced_ids(ids: Sequence[str], file: str | None, stdin: TextIO) -> list[SourcedId]:
    """As :func:`read_ids`, each ID with where it was read (file and line number)."""
    collected: list[SourcedId] = []
    sources: list[tuple[str, Iterable[str]]] = []
    for position, value in enumerate(ids, start=1):
        if value == "-":
            sources.append(("stdin", stdin))
        else:
            collected.append(SourcedId(value.strip(), f"argument {position}"))
    if file is not None:
        if file == "-":
            sources.append(("stdin", stdin))
        else:
            with open(file, encoding="utf-8") as handle:
                sources.append((file, handle.read().splitlines()))
    for name, source in sources:
        for number, line in enumerate(source, start=1):
            text = line.split("#", 1)[0].strip()
            if text:
                collected.append(SourcedId(text, f"{name}:{number}"))
    return collected


def validate_ids(ids: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(valid IDs without duplicates in first-seen order, invalid ID -> reason)."""
    from call_enricher.callid import validate_call_id

    valid: dict[str, None] = {}
    invalid: dict[str, str] = {}
    for call_id in ids:
        try:
            valid[validate_call_id(call_id)] = None
        except errors.InvalidCallIdError as exc:
            invalid[call_id] = exc.message
    return list(valid), invalid


def sqs_client_for(queue_url: str, endpoint_url: str | None = None) -> Any:
    """A boto3 SQS client suited to ``queue_url`` (see the module docstring)."""
    import boto3

    parts = urlsplit(queue_url)
    host = parts.hostname or ""
    kwargs: dict[str, Any] = {}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    elif host in _LOCAL_HOSTS:
        kwargs["endpoint_url"] = f"{parts.scheme}://{parts.netloc}"
    if kwargs.get("endpoint_url") and urlsplit(kwargs["endpoint_url"]).hostname in _LOCAL_HOSTS:
        kwargs.update(
            aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
            aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
            region_name=os.environ.get("AWS_REGION", "eu-west-1"),
        )
    else:
        match = _SQS_HOST.match(host)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region is None and match:
            region = match.group(1)
        if region:
            kwargs["region_name"] = region
    return boto3.client("sqs", **kwargs)


def submit(
    call_ids: Sequence[str],
    *,
    queue_url: str,
    client: Any,
    region: str | None = None,
    progress: TextIO | None = None,
) -> SubmitResult:
    """Send validated ``call_ids`` in batches of 10; per ID sent or failed (never dropped)."""
    from call_enricher.messages import EnrichmentRequest
    from call_enricher.queueing import SQS_BATCH_LIMIT, EnrichmentQueue

    queue = EnrichmentQueue(queue_url, client=client)
    result = SubmitResult()
    total = len(call_ids)
    _progress(progress, 0, total, 0)
    for start in range(0, total, SQS_BATCH_LIMIT):
        chunk = list(call_ids[start : start + SQS_BATCH_LIMIT])
        requests = [EnrichmentRequest(call_id=cid, region=region) for cid in chunk]
        for call_id, error in zip(chunk, queue.send_many(requests), strict=True):
            if error is None:
                result.sent.append(call_id)
            else:
                result.failed[call_id] = f"{error.reason}: {error.message}"
        _progress(progress, start + len(chunk), total, len(result.failed))
    if progress is not None and total and progress.isatty():
        print(file=progress, flush=True)  # end the bar's line
    return result


def _progress(stream: TextIO | None, done: int, total: int, failed: int) -> None:
    if stream is None or not total:
        return
    filled = PROGRESS_WIDTH * done // total
    bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
    tail = f"  {failed} failed" if failed else ""
    end = "" if stream.isatty() else "\n"
    if not stream.isatty() and done != total and (done == 0 or done % 100):
        return  # not a terminal: a line per 100 IDs and the last, not one per batch
    start = "\r" if stream.isatty() else ""
    print(f"{start}[{bar}] {done}/{total}{tail}", end=end, file=stream, flush=True)


def cmd_submit(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """The ``submit`` command (see the module docstring)."""
    try:
        sourced = read_sourced_ids(args.call_ids, args.file, sys.stdin)
    except OSError as exc:
        print(f"error: bad-input: cannot read {args.file}: {exc.strerror}", file=stderr)
        return EXIT_BAD_INPUT
    except UnicodeDecodeError:
        print(f"error: bad-input: {args.file} is not UTF-8 text", file=stderr)
        return EXIT_BAD_INPUT
    if not sourced:
        print("error: bad-input: no call IDs (arguments, --file F or - for stdin)", file=stderr)
        return EXIT_BAD_INPUT
    valid, invalid = validate_ids([item.call_id for item in sourced])
    if invalid:
        for item in sourced:  # every place an invalid ID was read, e.g. ids.txt:7
            if item.call_id in invalid:
                print(f"error: invalid-call-id: {item.where}: {invalid[item.call_id]}", file=stderr)
        print(f"{len(invalid)} invalid call ID(s): nothing was sent", file=stderr)
        return EXIT_BAD_INPUT
    if args.region is not None:
        from call_enricher.sinch.regions import REGION_BASE_URLS

        if args.region not in REGION_BASE_URLS:
            print(
                f"error: bad-input: unknown region {args.region!r} "
                f"(one of {', '.join(REGION_BASE_URLS)})",
                file=stderr,
            )
            return EXIT_BAD_INPUT
    client = sqs_client_for(args.queue_url, args.endpoint_url)
    result = submit(
        valid, queue_url=args.queue_url, client=client, region=args.region, progress=stderr
    )
    print(f"sent {len(result.sent)} of {len(valid)} call ID(s) to {args.queue_url}", file=stdout)
    if result.failed:
        print(f"{len(result.failed)} call ID(s) were NOT sent:", file=stderr)
        for call_id, reason in result.failed.items():
            print(f"  {call_id}: {reason}", file=stderr)
        return EXIT_SEND_FAILED
    return EXIT_OK


def add_submit_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``submit`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "submit",
        help="send call IDs to an enrichment queue (local stack or deployed)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("call_ids", nargs="*", metavar="CALL_ID", help="call IDs; - for stdin")
    parser.add_argument("--queue-url", required=True, help="the enrichment queue's URL")
    parser.add_argument("--file", "-f", default=None, help="a file of call IDs, - for stdin")
    parser.add_argument("--region", default=None, help="Sinch region to ask for these calls")
    parser.add_argument(
        "--endpoint-url", default=None, help="SQS endpoint (default: from the queue URL)"
    )
    parser.set_defaults(func=cmd_submit)
    return parser
