"""Import time of the library in a fresh interpreter, as a ratio to `import boto3`."""

from __future__ import annotations

import statistics
import subprocess
import sys

from bench.report import Figure, figure

RUNS = 11


def _fresh_import_seconds(statement: str) -> float:
    code = f"import time; t0 = time.perf_counter(); {statement}; print(time.perf_counter() - t0)"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def median_import(statement: str, runs: int = RUNS) -> float:
    _fresh_import_seconds(statement)  # warm the bytecode cache and the page cache
    return statistics.median(_fresh_import_seconds(statement) for _ in range(runs))


def run(quick: bool = False) -> list[Figure]:
    runs = 3 if quick else RUNS
    boto3_s = median_import("import boto3", runs)
    library_s = median_import(
        "import call_enricher.service, call_enricher.enrichment, call_enricher.sinch.client",
        runs,
    )
    return [
        figure("import boto3 (fresh process)", boto3_s * 1000, "ms", note=f"median of {runs}"),
        figure(
            "import library core (fresh process)",
            library_s * 1000,
            "ms",
            note="service + model + enrichment + Sinch client",
        ),
        figure("library import / boto3 import", library_s / boto3_s, "ratio"),
    ]
