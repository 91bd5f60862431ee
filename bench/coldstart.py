"""Cold start: fresh Python processes that import a handler and complete its first invocation.

Each handler (ours and its naive baseline, see :mod:`bench.naive`) runs in a fresh process
(``bench/child.py``) with compiled bytecode (a discarded first round writes ``__pycache__``),
``PYTHONPATH`` at the layer's source (as ``/opt/python`` in Lambda, not the editable-install
hook), against local stand-ins: AWS through ``AWS_ENDPOINT_URL`` at :class:`AwsServer`
(DynamoDB, EventBridge, SQS, Secrets Manager over the real AWS JSON protocols, in this
process) and Sinch at a :class:`SinchProcess` answering at once. Every invocation does the
real work (a new call ID each time: fetch, store; the queue and API functions publish
nothing, the table's stream does). Rounds are interleaved so that
machine noise hits every variant alike; the figure is the median of the rounds.

Also: the import-only split; where the queue handler's import time goes, per package group
(Logger, Metrics, Tracer + X-Ray, validation, phonenumbers, ...: ``-X importtime`` self times,
which add up whatever the import order, over every import of the process including those of
the first invocation), with tracing off and on; whether tracing off keeps ``aws_xray_sdk``
out of the process; whether Powertools' parser models (pulled in by the batch utility when
pydantic is imported before it) and, in the callback receiver, pydantic stay out; and the
cold start with no bytecode at all.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
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
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


TRACING_ON = {
    "POWERTOOLS_TRACE_DISABLED": "false",
    "_X_AMZN_TRACE_ID": (
        "Root=1-6745a2c0-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1"
    ),
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",  # UDP: segments are sent, nobody listens
    "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
}


def _variants() -> tuple[list[Variant], list[str]]:
    functions = ROOT / "functions"
    naive = Path(__file__).resolve().parent / "naive"
    ok_api, ok_callback = _status(200), _status(200)
    variants = [
        Variant("queue", functions / "queue_enricher" / "app.py", _sqs_event, _no_failures),
        Variant(
            "queue+tracing",
            functions / "queue_enricher" / "app.py",
            _sqs_event,
            _no_failures,
            TRACING_ON,
        ),
        Variant("naive queue", naive / "queue.py", _sqs_event, _no_failures),
        Variant("api", functions / "http_api" / "app.py", _api_event, ok_api),
        Variant("naive api", naive / "api.py", _api_event, ok_api),
        Variant("callback", functions / "sinch_callbacks" / "app.py", _callback_event, ok_callback),
        Variant("naive callback", naive / "callback.py", _callback_event, ok_callback),
    ]
    missing = [v.handler.relative_to(ROOT).as_posix() for v in variants if not v.handler.exists()]
    return [v for v in variants if v.handler.exists()], sorted(set(missing))


def _run_child(variant: Variant, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    event_file = workdir / f"{variant.name.replace(' ', '-')}.json"
    event_file.write_text(json.dumps(variant.event()))
    completed = subprocess.run(
        [sys.executable, "-P", str(CHILD), str(variant.handler), str(event_file)],
        env={**env, **variant.env},
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
    if not variant.ok(sample["result"]):
        raise RuntimeError(f"{variant.name}: unexpected first invocation result {sample['result']}")
    return sample


NO_BYTECODE = {"PYTHONDONTWRITEBYTECODE": "1"}  # plus an empty PYTHONPYCACHEPREFIX per run


def measure(
    runs: int, source_runs: int = 0, split_runs: int = 0
) -> tuple[list[Variant], list[str], dict[str, float], dict[str, dict[str, float]]]:
    """Run every variant ``runs`` times (plus one discarded round), interleaved.

    Also ``source_runs`` runs of the two queue handlers with no bytecode at all (compiled
    from source at every start: a layer shipped without ``__pycache__``, as ``sam build``
    makes it, on Lambda's read-only ``/opt``), and the import split of the queue handler
    with tracing off and on (``split_runs`` runs each). Returns (variants, missing handlers,
    no-bytecode medians by variant, import split by variant).
    """
    variants, missing = _variants()
    from_source: dict[str, list[float]] = {}
    with (
        AwsServer() as aws,
        SinchProcess(0.0, pstn_only=True) as sinch,
        tempfile.TemporaryDirectory() as tmp,
    ):
        env = _base_env(aws.url, sinch.url)
        for round_ in range(runs + 1):
            for variant in variants:
                sample = _run_child(variant, env, Path(tmp))
                if round_:  # round 0 compiles bytecode and warms the page cache
                    variant.samples.append(sample)
        for i in range(source_runs):
            for variant in variants:
                if variant.name not in ("queue", "naive queue"):
                    continue
                prefix = Path(tmp) / f"pycache-{variant.name.replace(' ', '-')}-{i}"
                cold_env = {**env, **NO_BYTECODE, "PYTHONPYCACHEPREFIX": str(prefix)}
                sample = _run_child(variant, cold_env, Path(tmp))
                from_source.setdefault(variant.name, []).append(sample["first_invocation_ms"])
        splits = {
            v.name: _importtime_split(v, env, split_runs, Path(tmp))
            for v in variants
            if split_runs and v.name in ("queue", "queue+tracing")
        }
    medians = {k: statistics.median(v) for k, v in from_source.items()}
    return variants, missing, medians, splits


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
    variant: Variant, env: dict[str, str], runs: int, tmp: Path
) -> dict[str, float]:
    """Median per group of summed -X importtime self times (ms) over ``runs`` fresh runs."""
    per_group: dict[str, list[float]] = {}
    for _ in range(runs):
        event_file = tmp / "importtime-event.json"
        event_file.write_text(json.dumps(variant.event()))
        done = subprocess.run(
            [
                sys.executable,
                "-P",
                "-X",
                "importtime",
                str(CHILD),
                str(variant.handler),
                str(event_file),
            ],
            env={**env, **variant.env},
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


def run(quick: bool = False) -> list[Figure]:
    runs = 3 if quick else 10
    variants, missing, from_source, splits = measure(
        runs, source_runs=2 if quick else 3, split_runs=2 if quick else 5
    )
    by_name = {v.name: v for v in variants}
    figures: list[Figure] = []
    goals = {"queue": "<= 1.5", "api": "<= 1.5", "callback": "<= 1.2"}
    for name, goal in goals.items():
        ours, naive = by_name.get(name), by_name.get(f"naive {name}")
        if ours is None or naive is None:
            figures.append(
                figure(
                    f"{name} cold start / naive",
                    float("nan"),
                    "ratio",
                    note=f"not measured: {', '.join(missing)} missing",
                )
            )
            continue
        o, n = ours.median("first_invocation_ms"), naive.median("first_invocation_ms")
        figures.append(
            figure(
                f"{name} cold start / naive",
                o / n,
                "ratio",
                goal,
                f"{o:.0f} ms vs {n:.0f} ms, median of {runs}, tracing off",
            )
        )
        figures.append(
            figure(
                f"  {name}: import only / naive",
                ours.median("import_ms") / naive.median("import_ms"),
                "ratio",
                note=f"{ours.median('import_ms'):.0f} ms vs {naive.median('import_ms'):.0f} ms; "
                f"first invocation {ours.median('invoke_ms'):.0f} vs "
                f"{naive.median('invoke_ms'):.0f} ms",
            )
        )
    traced, queue, naive_queue = (
        by_name.get("queue+tracing"),
        by_name["queue"],
        by_name["naive queue"],
    )
    if traced is not None:
        t = traced.median("first_invocation_ms")
        figures.append(
            figure(
                "queue cold start, tracing on / naive",
                t / naive_queue.median("first_invocation_ms"),
                "ratio",
                note=f"{t:.0f} ms: X-Ray adds {t - queue.median('first_invocation_ms'):.0f} ms",
            )
        )
    if len(from_source) == 2:
        o, n = from_source["queue"], from_source["naive queue"]
        figures.append(
            figure(
                "queue cold start without .pyc / naive",
                o / n,
                "ratio",
                note=f"{o:.0f} ms vs {n:.0f} ms: everything compiled from source at start",
            )
        )
    ours_off = [v for v in variants if not v.name.startswith("naive") and "tracing" not in v.name]
    loaded = any(s["xray_loaded"] for v in ours_off for s in v.samples)
    figures.append(
        figure(
            "aws_xray_sdk loaded with tracing off",
            int(loaded),
            "bool",
            "== 0",
            "in sys.modules after the first invocation of: " + ", ".join(v.name for v in ours_off),
        )
    )
    parsed = [v.name for v in ours_off if any(s.get("parser_loaded") for s in v.samples)]
    figures.append(
        figure(
            "Powertools parser models loaded",
            len(parsed),
            "count",
            "== 0",
            ("by: " + ", ".join(parsed) + "; " if parsed else "")
            + "aws_lambda_powertools.utilities.parser (~50 ms of pydantic models) after the "
            "first invocation; batch imports it when pydantic is imported first",
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
                "in sys.modules after its first invocation (~80 ms import + first model)",
            )
        )
    off, on = splits.get("queue", {}), splits.get("queue+tracing", {})
    figures.extend(
        figure(
            f"  imports: {name}",
            off.get(name, 0.0),
            "ms",
            note=f"tracing on: {on.get(name, 0.0):.0f} ms"
            + (" (what tracing adds)" if name == GROUPS[0][0] else ""),
        )
        for name in [g for g, _ in GROUPS] + ["stdlib and the rest"]
        if name in off or name in on
    )
    if off:
        figures.append(
            figure(
                "  imports: total (queue handler)",
                sum(off.values()),
                "ms",
                note="-X importtime self times incl. first-invocation imports, "
                f"median of {2 if quick else 5}; tracing on: {sum(on.values()):.0f} ms",
            )
        )
    return figures
