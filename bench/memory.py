"""Peak memory of the queue handler processing a 1,000-record batch in one invocation.

A fresh process (``bench/child.py``, as for cold start) imports the real queue handler and
processes one SQS event of 1,000 messages (varied records, Sinch answering at once, AWS at
:class:`AwsServer` over HTTP: real boto3 clients and their buffers). The peak is the
process's peak RSS (``VmHWM``: Linux carries ``ru_maxrss`` across ``exec``, which would
report this large parent's peak); the baselines are a bare interpreter and the same handler's
one-record cold start, in the same run.

Recommended Lambda memory: ``max(256, ceil(peak * 1.3 / 64) * 64)`` MB. The 30 % covers what
this process does not have but Lambda's does (the runtime interface client, ~10-15 MB),
allocator fragmentation over many warm invocations, and records larger than these. Memory
also buys CPU (1,769 MB = one vCPU): a batch is I/O bound (10 threads waiting on Sinch,
~0.4 ms of CPU per record), but the cold start is CPU bound (~0.8 s of one core here), so
it stretches roughly as 1,769 / memory: the RSS figure is a floor, not a target.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.coldstart import CHILD, ROOT, _base_env, _sqs_event
from bench.report import Figure, figure
from bench.standins import AwsServer, SinchProcess

HANDLER = ROOT / "functions" / "queue_enricher" / "app.py"


def _bare_interpreter_kb() -> int:
    code = "import child; print(child.peak_rss_kb())"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(CHILD.parent)},
    ).stdout
    return int(out.strip())


def _batch_event(count: int) -> dict[str, Any]:
    template = _sqs_event()["Records"][0]
    records = []
    for _ in range(count):
        record = dict(template)
        record["messageId"] = str(uuid.uuid4())
        record["body"] = json.dumps({"callId": uuid.uuid4().hex})
        records.append(record)
    return {"Records": records}


def _child(env: dict[str, str], event: dict[str, Any], workdir: Path) -> dict[str, Any]:
    path = workdir / f"batch-{len(event['Records'])}.json"
    path.write_text(json.dumps(event))
    done = subprocess.run(
        [sys.executable, "-P", str(CHILD), str(HANDLER), str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode or not lines:
        raise RuntimeError(f"memory run failed: {done.stderr[-2000:]}")
    sample: dict[str, Any] = json.loads(lines[-1][len("BENCH ") :])
    failures = (
        sample["result"].get("batchItemFailures") if isinstance(sample["result"], dict) else None
    )
    if failures:
        raise RuntimeError(f"{len(failures)} records failed in the memory run")
    return sample


def run(quick: bool = False) -> list[Figure]:
    count = 300 if quick else 1000
    runs = 1 if quick else 2
    mb = 1024.0  # ru_maxrss is in KiB on Linux
    bare = _bare_interpreter_kb() / mb
    with AwsServer() as aws, SinchProcess(0.0) as sinch, tempfile.TemporaryDirectory() as tmp:
        env = {**_base_env(aws.url, sinch.url), "WORKER_THREADS": "10"}
        one = statistics.median(
            _child(env, _batch_event(1), Path(tmp))["maxrss_kb"] / mb for _ in range(runs)
        )
        peaks, seconds = [], []
        for _ in range(runs):
            sample = _child(env, _batch_event(count), Path(tmp))
            peaks.append(sample["maxrss_kb"] / mb)
            seconds.append(sample["invoke_ms"] / 1000)
        calls = aws.aws.calls()
    peak = max(peaks)
    recommended = max(256, math.ceil(peak * 1.3 / 64) * 64)
    return [
        figure(
            f"peak RSS, {count}-record batch",
            peak,
            "MB",
            note=f"max of {runs}; processed in {statistics.median(seconds):.1f} s, "
            f"{calls['UpdateItem']} UpdateItem, {calls['PutEvents']} PutEvents in all",
        ),
        figure("  minus bare interpreter", peak - bare, "MB", note=f"bare python: {bare:.0f} MB"),
        figure(
            "  minus one-record cold start",
            peak - one,
            "MB",
            note=f"one record: {one:.0f} MB peak (geocoder data loaded)",
        ),
        figure(
            "recommended Lambda memory (by RSS)",
            recommended,
            "MB",
            note="max(256, ceil(peak x 1.3 / 64) x 64); template has 512",
        ),
    ]
