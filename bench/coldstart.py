"""Cold start as Lambda runs it: INIT at a full CPU, invocations at MemorySize/1769 of one.

Each handler (ours and its naive baseline, see :mod:`bench.naive`) runs in a fresh process
(``bench/child.py``) with compiled bytecode (a discarded first round writes ``__pycache__``),
``PYTHONPATH`` at the layer's source (as ``/opt/python`` in Lambda), against local stand-ins:
AWS through ``AWS_ENDPOINT_URL`` at :class:`AwsServer` (DynamoDB with its stream,
EventBridge, SQS, Secrets Manager over the real AWS JSON protocols, in this process) and
Sinch at a :class:`SinchProcess` answering at once. Every invocation does the real work (a
new call ID each time; the publisher gets the latest stream record the other handlers
left). Tracing is as the template deploys it (``Tracing: Enabled``: in Lambda, trace header
set, ``POWERTOOLS_TRACE_DISABLED=false``; the X-Ray SDK only with the ``XRAY_SDK`` opt-in,
measured as its own variant). Rounds are interleaved so that machine noise hits every
variant alike; figures are medians of the rounds.

Per process: INIT (the import) CPU and wall, first and second invocation CPU and wall.
The model (``bench/README.md``): cold start = INIT CPU + first-invocation CPU x 1769 /
MemorySize + I/O wait (wall minus CPU of the first invocation, the minimum over the rounds:
the least scheduling noise), with each function's MemorySize read from
``template.yaml``. Also the import split of the queue handler (``-X importtime``), and the
cost per million calls and the throughput ceiling (:mod:`bench.cost`) from these figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import Figure, figure
from bench.standins import BENCH_KEY, BENCH_SECRET, AwsServer, SinchProcess

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "child.py"
EVENTS = ROOT / "events"
QUEUE_URL_PATH = "/123456789012/call-enricher-requests"
CALLBACK_PATH = "/sinch/callbacks"


@dataclass
class Variant:
    name: str
    handler: Path
    event: Callable[[], dict[str, Any]]
    ok: Callable[[Any], bool]
    env: dict[str, str] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float:
        return statistics.median(float(s[key]) for s in self.samples)


def _sqs_event() -> dict[str, Any]:
    event = json.loads((EVENTS / "sqs-batch.json").read_text())
    record = event["Records"][0]
    record["messageId"] = str(uuid.uuid4())
    record["body"] = json.dumps({"callId": uuid.uuid4().hex})
    return {"Records": [record]}


def _api_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "api-post-enrich.json").read_text())
    call_id = uuid.uuid4().hex
    path = f"/calls/{call_id}/enrich"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"callId": call_id}
    return event


def _callback_event() -> dict[str, Any]:
    from call_enricher.sinch.auth import SinchCredentials, signed_headers

    event: dict[str, Any] = json.loads((EVENTS / "sinch-dice-callback.json").read_text())
    body = json.loads(event["body"])
    body["callid"] = uuid.uuid4().hex
    raw = json.dumps(body).encode()
    content_type = event["headers"]["content-type"]
    credentials = SinchCredentials(application_key=BENCH_KEY, application_secret=BENCH_SECRET)
    signed = signed_headers(
        credentials, method="POST", path=CALLBACK_PATH, body=raw, content_type=content_type
    )
    event["headers"]["x-timestamp"] = signed["x-timestamp"]
    event["headers"]["authorization"] = signed["Authorization"]
    event["headers"]["content-length"] = str(len(raw))
    event["body"] = raw.decode()
    event["isBase64Encoded"] = False
    return event


def _no_failures(result: Any) -> bool:
    return isinstance(result, dict) and result.get("batchItemFailures") == []


def _status(code: int) -> Callable[[Any], bool]:
    return lambda result: isinstance(result, dict) and result.get("statusCode") == code


def _base_env(aws_url: str, sinch_url: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {
        **keep,
        "PYTHONPATH": str(ROOT / "layers" / "core"),
        "AWS_ENDPOINT_URL": aws_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "CALLS_TABLE_NAME": "calls",
        "EVENT_BUS_NAME": "bus",
        "ENRICHMENT_QUEUE_URL": aws_url + QUEUE_URL_PATH,
        "SINCH_SECRET_ID": "sinch",
        "SINCH_BASE_URL": sinch_url,
        "SINCH_CALLBACK_PATH": CALLBACK_PATH,
        "SINCH_APPLICATION_KEY": BENCH_KEY,  # the naive handlers read these
        "SINCH_APPLICATION_SECRET": BENCH_SECRET,
        "POWERTOOLS_SERVICE_NAME": "call-enricher",
        "POWERTOOLS_METRICS_NAMESPACE": "CallEnricher",
        **TRACING_ON,  # as the template deploys it (Tracing: Enabled), no XRAY_SDK opt-in
    }


TRACING_ON = {
    "POWERTOOLS_TRACE_DISABLED": "false",
    "_X_AMZN_TRACE_ID": (
        "Root=1-6745a2c0-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1"
    ),
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",  # UDP: segments are sent, nobody listens
    "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
}


# Our functions' logical IDs in template.yaml; a naive baseline runs at its function's size.
FUNCTIONS = {
    "queue": "QueueEnricherFunction",
    "api": "HttpApiFunction",
    "callback": "SinchCallbacksFunction",
    "publisher": "StreamPublisherFunction",
}


def memory_sizes(template: Path = ROOT / "template.yaml") -> dict[str, int]:
    """MemorySize of each function in ``template`` (by :data:`FUNCTIONS` key; the Globals'
    value, else Lambda's 128, for a function that does not set one)."""
    current, sizes, default = "", {}, 128
    for line in template.read_text().splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            current = line.strip().rstrip(":")
        stripped = line.strip()
        if stripped.startswith("MemorySize:"):
            value = stripped.split(":", 1)[1].split("#", 1)[0].strip()
            if value.isdigit():
                if current == "Function":
                    default = int(value)
                else:
                    sizes[current] = int(value)
    return {name: sizes.get(logical, default) for name, logical in FUNCTIONS.items()}


class StreamEvents:
    """DynamoDB stream events for the publisher: the latest change the fake table recorded."""

    def __init__(self) -> None:
        self.aws: Any = None

    def __call__(self) -> dict[str, Any]:
        stream = [
            r
            for r in (self.aws.dynamodb.stream if self.aws is not None else [])
            if r.new is not None and "schemaVersion" in r.new  # ours, not a naive PutItem
        ]
        if not stream:
            raise RuntimeError("no stream record yet: run a queue or API variant first")
        record = stream[-1]
        image = {"dynamodb": {"Keys": {"callId": {"S": record.key}}}}
        body = image["dynamodb"]
        if record.new is not None:
            body["NewImage"] = record.new
        if record.old is not None:
            body["OldImage"] = record.old
        body.update(
            SequenceNumber=record.sequence,
            SizeBytes=len(json.dumps(record.new or {})),
            StreamViewType="NEW_AND_OLD_IMAGES",
        )
        return {
            "Records": [
                {
                    "eventID": uuid.uuid4().hex,
                    "eventName": "MODIFY" if record.old else "INSERT",
                    "eventVersion": "1.1",
                    "eventSource": "aws:dynamodb",
                    "awsRegion": "us-east-1",
                    "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/calls/"
                    "stream/2026-01-01T00:00:00.000",
                    **image,
                }
            ]
        }


XRAY_SDK_ON = {"XRAY_SDK": "enabled"}


def _variants(stream: StreamEvents) -> tuple[list[Variant], list[str]]:
    functions = ROOT / "functions"
    naive = Path(__file__).resolve().parent / "naive"
    ok_api, ok_callback = _status(200), _status(200)
    variants = [
        Variant("queue", functions / "queue_enricher" / "app.py", _sqs_event, _no_failures),
        Variant("naive queue", naive / "queue.py", _sqs_event, _no_failures),
        Variant("api", functions / "http_api" / "app.py", _api_event, ok_api),
        Variant("naive api", naive / "api.py", _api_event, ok_api),
        Variant("callback", functions / "sinch_callbacks" / "app.py", _callback_event, ok_callback),
        Variant("naive callback", naive / "callback.py", _callback_event, ok_callback),
        Variant("publisher", functions / "stream_publisher" / "app.py", stream, _no_failures),
        Variant("naive publisher", naive / "publisher.py", stream, _no_failures),
        Variant(
            "queue+xray-sdk",
            functions / "queue_enricher" / "app.py",
            _sqs_event,
            _no_failures,
            XRAY_SDK_ON,
        ),
    ]
    missing = [v.handler.relative_to(ROOT).as_posix() for v in variants if not v.handler.exists()]
    return [v for v in variants if v.handler.exists()], sorted(set(missing))


def kind(variant: Variant) -> str:
    """The function a variant stands for: ``queue``, ``api``, ``callback``, ``publisher``."""
    return variant.name.removeprefix("naive ").split("+", 1)[0]


def _run_child(
    variant: Variant, env: dict[str, str], workdir: Path, memory: int = 512
) -> dict[str, Any]:
    files = []
    for number in (1, 2):  # the first invocation, then a warm one (another call)
        event_file = workdir / f"{variant.name.replace(' ', '-')}-{number}.json"
        event_file.write_text(json.dumps(variant.event()))
        files.append(str(event_file))
    completed = subprocess.run(
        [sys.executable, "-P", str(CHILD), str(variant.handler), *files],
        env={**env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory), **variant.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH ")]
    if completed.returncode or not lines:
        raise RuntimeError(
            f"cold start of {variant.name} failed ({completed.returncode}): "
            f"{completed.stderr[-2000:] or completed.stdout[-2000:]}"
        )
    sample: dict[str, Any] = json.loads(lines[-1][len("BENCH ") :])
    for result in sample["results"]:
        if not variant.ok(result):
            raise RuntimeError(f"{variant.name}: unexpected invocation result {result}")
    return sample


@dataclass
class Measured:
    variants: list[Variant]
    missing: list[str]
    memory: dict[str, int]
    splits: dict[str, dict[str, float]]
    calls: dict[str, dict[str, float]]
    """AWS operations per invocation, by variant (from the stand-ins' counters)."""
    item_bytes: float
    """Median size of our stored items (attribute-value JSON of the stream's new images)."""


def measure(runs: int, split_runs: int = 0) -> Measured:
    """Run every variant ``runs`` times (plus one discarded round), interleaved; the import
    split of the queue handler (``split_runs`` runs)."""
    stream = StreamEvents()
    variants, missing = _variants(stream)
    memory = memory_sizes()
    calls: dict[str, list[Counter[str]]] = {}
    with (
        AwsServer() as aws,
        SinchProcess(0.0, pstn_only=True) as sinch,
        tempfile.TemporaryDirectory() as tmp,
    ):
        stream.aws = aws.aws
        env = _base_env(aws.url, sinch.url)
        for round_ in range(runs + 1):
            for variant in variants:
                before = aws.aws.calls()
                sample = _run_child(variant, env, Path(tmp), memory[kind(variant)])
                if round_:  # round 0 compiles bytecode and warms the page cache
                    variant.samples.append(sample)
                    calls.setdefault(variant.name, []).append(aws.aws.calls() - before)
        splits = {
            v.name: _importtime_split(v, env, split_runs, Path(tmp), memory[kind(v)])
            for v in variants
            if split_runs and v.name == "queue"
        }
        ours = [
            len(json.dumps(r.new))
            for r in aws.aws.dynamodb.stream
            if r.new and "schemaVersion" in r.new
        ]
    per_invocation = {
        name: {
            op: statistics.median(c.get(op, 0) for c in counters) / 2  # two invocations
            for op in set().union(*counters)
        }
        for name, counters in calls.items()
    }
    return Measured(
        variants, missing, memory, splits, per_invocation, statistics.median(ours or [0])
    )


# Where the import time goes: -X importtime self times (additive, whatever the import order),
# summed per group, over every import of the process (those of the first invocation too).
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("Tracer + aws_xray_sdk + wrapt", ("aws_lambda_powertools.tracing", "aws_xray_sdk", "wrapt")),
    ("Powertools Metrics", ("aws_lambda_powertools.metrics",)),
    ("Powertools Logger", ("aws_lambda_powertools.logging",)),
    ("Powertools other (batch, parameters, ...)", ("aws_lambda_powertools",)),
    (
        "phonenumbers geocoder/carrier/tz data",
        (
            "phonenumbers.geodata",
            "phonenumbers.carrierdata",
            "phonenumbers.tzdata",
            "phonenumbers.geocoder",
            "phonenumbers.carrier",
            "phonenumbers.timezone",
        ),
    ),
    ("phonenumbers core", ("phonenumbers",)),
    (
        "validation: pydantic",
        (
            "pydantic",
            "pydantic_core",
            "annotated_types",
            "typing_inspection",
            "typing_extensions",
        ),
    ),
    ("call_enricher (incl. model classes)", ("call_enricher",)),
    ("boto3 + botocore", ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six")),
    ("requests + urllib3", ("requests", "urllib3", "charset_normalizer", "idna", "certifi")),
]


def _group(module: str) -> str:
    for name, prefixes in GROUPS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    return "stdlib and the rest"


def _importtime_split(
    variant: Variant, env: dict[str, str], runs: int, tmp: Path, memory: int = 512
) -> dict[str, float]:
    """Median per group of summed -X importtime self times (ms) over ``runs`` fresh runs."""
    per_group: dict[str, list[float]] = {}
    for _ in range(runs):
        event_file = tmp / "importtime-event.json"
        event_file.write_text(json.dumps(variant.event()))
        second = tmp / "importtime-event-2.json"
        second.write_text(json.dumps(variant.event()))
        done = subprocess.run(
            [
                sys.executable,
                "-P",
                "-X",
                "importtime",
                str(CHILD),
                str(variant.handler),
                str(event_file),
                str(second),
            ],
            env={**env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory), **variant.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        sums: dict[str, float] = {}
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "|" not in line:
                continue
            self_us, _cumulative, name = line[len("import time:") :].split("|", 2)
            if not self_us.strip().isdigit():
                continue  # the header line
            group = _group(name.strip())
            sums[group] = sums.get(group, 0.0) + int(self_us) / 1000
        for group, ms in sums.items():
            per_group.setdefault(group, []).append(ms)
    return {group: statistics.median(values) for group, values in per_group.items()}


CPU_PER_VCPU_MB = 1769
"""Lambda gives an invocation MemorySize/1769 of one vCPU (INIT runs at a full one)."""

GOALS = {"queue": "<= 1.5", "api": "<= 1.5", "callback": "<= 1.1"}
"""Modeled cold start over the naive handler's (the publisher's: informational)."""

FIRST_OVER_SECOND_MS = "<= 30"
WARM_RATIO = "<= 2"


def io_wait_ms(variant: Variant) -> float:
    """The first invocation's wall minus CPU, the least over the rounds (the round with the
    least scheduling noise; the stand-ins answer at once). INIT's wall minus CPU is left
    out: on a shared machine it is mostly waiting for a core, not I/O."""
    return min(
        max(0.0, s["invocations"][0]["wall_ms"] - s["invocations"][0]["cpu_ms"])
        for s in variant.samples
    )


def phase(variant: Variant, index: int, key: str = "cpu_ms") -> float:
    """Median of invocation ``index`` (0: the first) ``key`` over the rounds."""
    return statistics.median(float(s["invocations"][index][key]) for s in variant.samples)


def modeled_ms(variant: Variant, memory: int) -> float:
    """INIT CPU + first-invocation CPU x 1769 / MemorySize + I/O wait."""
    init = variant.median("init_cpu_ms")
    return init + phase(variant, 0) * CPU_PER_VCPU_MB / memory + io_wait_ms(variant)


def run(quick: bool = False) -> list[Figure]:
    from bench import cost

    runs = 3 if quick else 10
    measured = measure(runs, split_runs=2 if quick else 5)
    by_name = {v.name: v for v in measured.variants}
    figures: list[Figure] = []
    for name in FUNCTIONS:
        ours, naive = by_name.get(name), by_name.get(f"naive {name}")
        memory = measured.memory[name]
        if ours is None or naive is None:
            figures.append(
                figure(
                    f"{name}: modeled cold start / naive",
                    float("nan"),
                    "ratio",
                    GOALS.get(name, ""),
                    note=f"not measured: {', '.join(measured.missing)} missing",
                )
            )
            continue
        o, n = modeled_ms(ours, memory), modeled_ms(naive, memory)
        figures.append(
            figure(
                f"{name}: modeled cold start / naive",
                o / n,
                "ratio",
                GOALS.get(name, ""),
                f"{o:.0f} vs {n:.0f} ms at {memory} MB: INIT CPU "
                f"{ours.median('init_cpu_ms'):.0f} vs {naive.median('init_cpu_ms'):.0f} "
                f"(wall {ours.median('init_wall_ms'):.0f} vs {naive.median('init_wall_ms'):.0f}), "
                f"first invocation CPU {phase(ours, 0):.0f} vs {phase(naive, 0):.0f} "
                f"(x{CPU_PER_VCPU_MB / memory:.2f}), I/O wait {io_wait_ms(ours):.0f} vs "
                f"{io_wait_ms(naive):.0f}; median of {runs}",
            )
        )
        first, second = phase(ours, 0), phase(ours, 1)
        figures.append(
            figure(
                f"  {name}: first - second invocation CPU",
                first - second,
                "ms",
                FIRST_OVER_SECOND_MS,
                f"one-off CPU left in the first invocation: {first:.0f} vs {second:.0f} ms "
                f"(wall {phase(ours, 0, 'wall_ms'):.0f} vs {phase(ours, 1, 'wall_ms'):.0f})",
            )
        )
        warm_naive = phase(naive, 1)
        figures.append(
            figure(
                f"  {name}: warm invocation CPU / naive",
                second / warm_naive if warm_naive else float("nan"),
                "ratio",
                WARM_RATIO if name != "publisher" else "",
                f"one record: {second:.1f} vs {warm_naive:.1f} ms CPU (second invocation); "
                f"at {memory} MB that is {second * CPU_PER_VCPU_MB / memory:.0f} ms of duration",
            )
        )
    traced = by_name.get("queue+xray-sdk")
    queue = by_name.get("queue")
    if traced is not None and queue is not None:
        extra = traced.median("init_cpu_ms") - queue.median("init_cpu_ms")
        figures.append(
            figure(
                "queue with the XRAY_SDK opt-in: INIT CPU added",
                extra,
                "ms",
                note=f"modeled cold start {modeled_ms(traced, measured.memory['queue']):.0f} ms "
                f"(Powertools Tracer + aws_xray_sdk + wrapt, patched boto3/requests)",
            )
        )
    ours_default = [
        v for v in measured.variants if not v.name.startswith("naive") and "+" not in v.name
    ]
    loaded = [v.name for v in ours_default if any(s["xray_loaded"] for s in v.samples)]
    figures.append(
        figure(
            "aws_xray_sdk loaded, tracing as deployed",
            len(loaded),
            "count",
            "== 0",
            ("by: " + ", ".join(loaded) + "; " if loaded else "")
            + "in sys.modules after two invocations of: "
            + ", ".join(v.name for v in ours_default)
            + " (Tracing: Enabled, no XRAY_SDK opt-in)",
        )
    )
    parsed = [v.name for v in ours_default if any(s.get("parser_loaded") for s in v.samples)]
    figures.append(
        figure(
            "Powertools parser models loaded",
            len(parsed),
            "count",
            "== 0",
            ("by: " + ", ".join(parsed) + "; " if parsed else "")
            + "aws_lambda_powertools.utilities.parser (~50 ms of pydantic models); batch "
            "imports it when pydantic is imported first",
        )
    )
    callback = by_name.get("callback")
    if callback is not None:
        figures.append(
            figure(
                "pydantic loaded by the callback receiver",
                int(any(s.get("pydantic_loaded") for s in callback.samples)),
                "bool",
                "== 0",
                "in sys.modules after its invocations (~80 ms import + first model)",
            )
        )
    late = sorted(
        {
            m.split(".")[0]
            for v in ours_default
            for s in v.samples
            for m in s.get("modules_imported_in_first", [])
        }
    )
    figures.append(
        figure(
            "packages first imported by a first invocation",
            len(late),
            "count",
            note=", ".join(late[:12]) or "none: everything is imported at INIT",
        )
    )
    off = measured.splits.get("queue", {})
    figures.extend(
        figure(f"  imports: {name}", off[name], "ms")
        for name in [g for g, _ in GROUPS] + ["stdlib and the rest"]
        if name in off
    )
    if off:
        figures.append(
            figure(
                "  imports: total (queue handler)",
                sum(off.values()),
                "ms",
                note="-X importtime self times, INIT and both invocations, median of "
                f"{2 if quick else 5}",
            )
        )
    figures.extend(cost.figures(measured))
    return figures
