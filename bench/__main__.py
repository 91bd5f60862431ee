"""`python -m bench`: run every benchmark, print the table, write bench/results/latest.json.

Options: ``--quick`` (fewer runs and records: for development, figures are noisier) and
``--only cpu,coldstart`` (a subset of the modules, in the order given).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from bench.report import Figure, figure, render, section, write_json

RESULTS = Path(__file__).parent / "results" / "latest.json"

# Module name -> title of its section in the table. Each module has run(quick) -> [Figure].
MODULES = {
    "coldstart": "1. cold start (fresh process: import + first invocation)",
    "batch": "2-3, 5-6. batch latency, speed-up, AWS calls, connections",
    "latency": "end-to-end latency (message sent -> event on the bus, local stack)",
    "cpu": "4. CPU per record",
    "memory": "7. memory",
    "size": "8. layer size",
    "imports": "library import time",
}


def _run_module(name: str, *, quick: bool) -> list[Figure]:
    """The module's figures; a module that fails is one unmeasured figure saying why (the
    other modules' figures are still printed and written)."""
    try:
        module = importlib.import_module(f"bench.{name}")
        result: list[Figure] = module.run(quick=quick)
    except Exception as exc:
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return [figure(f"{name}: not measured", math.nan, "", note=reason)]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs (noisier figures)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(MODULES)}"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON file to write")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown module(s): {', '.join(unknown)}; known: {', '.join(MODULES)}")

    figures: list[Figure] = []
    started = time.perf_counter()
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        figures.append(section(MODULES[name]))
        figures.extend(_run_module(name, quick=args.quick))
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    print(render(figures))
    write_json(figures, args.output, quick=args.quick, seconds=time.perf_counter() - started)
    where = args.output.resolve()
    shown = where.relative_to(Path.cwd()) if where.is_relative_to(Path.cwd()) else where
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpus = os.cpu_count()
    print(
        f"\nmachine: {platform.machine()}, {cpus} CPUs, Python {platform.python_version()}", end=""
    )
    print(f", load average {load[0]:.1f} at the end (noisy when above {cpus})" if load else "")
    print(f"written to {shown}")
    missed = [f.name for f in figures if f.met is False]
    broken = [f.name for f in figures if f.name.endswith(": not measured")]
    if broken:
        print(f"modules that failed ({len(broken)}): {'; '.join(broken)}")
    if missed:
        print(f"goals missed ({len(missed)}): {'; '.join(missed)}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
