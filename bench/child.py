"""Cold start in a fresh process, phase by phase: INIT (the import), then invocations.

``python bench/child.py HANDLER_FILE EVENT_FILE [EVENT_FILE ...]``: the clocks start at the
first line (interpreter start-up itself, the same for every handler, is left out, which
makes ratios stricter). INIT is the handler module's import, as Lambda runs it; each event
file is then one invocation, in order (a second event gives the warm invocation). For each
phase the process CPU time (every thread: ``time.process_time``) and the wall time are
reported. The last stdout line is ``BENCH {...}`` (the handler's own log lines come first).

``BENCH_PROFILE=DIR`` writes a ``cProfile`` of each invocation to ``DIR/invoke-N.prof``
(``bench/README.md`` says how to read them).
"""

import time

_T0 = time.perf_counter()
_C0 = time.process_time()

import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402


def peak_rss_kb() -> int:
    """Peak RSS of this process image, in KiB.

    ``VmHWM`` from ``/proc/self/status``: Linux carries ``ru_maxrss`` across ``exec``, so a
    child started from a large parent would report the parent's peak. Falls back to
    ``ru_maxrss`` where there is no ``/proc``.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Context:
    """The attributes of a Lambda context the handlers read."""

    function_name = "bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"))
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"

    def __init__(self, number: int) -> None:
        self.aws_request_id = f"00000000-0000-4000-8000-{number:012d}"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _summary(result: object) -> object:
    """The handler's answer, with a long HTTP body cut (status and failures kept whole)."""
    if isinstance(result, dict) and isinstance(result.get("body"), str):
        return {**result, "body": result["body"][:300]}
    return result


def main() -> None:
    handler_file, event_files = sys.argv[1], sys.argv[2:]
    profile_dir = os.environ.get("BENCH_PROFILE")
    spec = importlib.util.spec_from_file_location("bench_handler", handler_file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_handler"] = module
    spec.loader.exec_module(module)
    init_wall, init_cpu = time.perf_counter(), time.process_time()
    xray_after_init = "aws_xray_sdk" in sys.modules
    modules_after_init = set(sys.modules)
    rss_after_import = peak_rss_kb()
    events = []
    for path in event_files:
        with open(path) as f:
            events.append(json.load(f))
    invocations, results = [], []
    for number, event in enumerate(events, start=1):
        profiler = None
        if profile_dir:
            import cProfile

            profiler = cProfile.Profile()
        w0, c0 = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        result = module.lambda_handler(event, Context(number))
        if profiler is not None:
            profiler.disable()
        w1, c1 = time.perf_counter(), time.process_time()
        if profiler is not None and profile_dir:
            profiler.dump_stats(os.path.join(profile_dir, f"invoke-{number}.prof"))
        invocations.append({"cpu_ms": (c1 - c0) * 1000, "wall_ms": (w1 - w0) * 1000})
        results.append(_summary(result))
        if number == 1:
            first_done = w1
            modules_in_first = sorted(set(sys.modules) - modules_after_init)
    report = {
        "init_cpu_ms": (init_cpu - _C0) * 1000,
        "init_wall_ms": (init_wall - _T0) * 1000,
        "invocations": invocations,
        # the figures of the one-invocation form (bench/memory.py reads these)
        "import_ms": (init_wall - _T0) * 1000,
        "first_invocation_ms": (first_done - _T0) * 1000,
        "invoke_ms": (first_done - init_wall) * 1000,
        "xray_loaded_at_init": xray_after_init,
        "xray_loaded": "aws_xray_sdk" in sys.modules,
        "modules_imported_in_first": modules_in_first,
        # Powertools' batch utility imports every parser model (pydantic) when pydantic is
        # already imported before it (batch/types.py checks sys.modules): ~50 ms.
        "parser_loaded": "aws_lambda_powertools.utilities.parser" in sys.modules,
        "pydantic_loaded": "pydantic" in sys.modules,
        "modules": len(sys.modules),
        "maxrss_after_import_kb": rss_after_import,
        "maxrss_kb": peak_rss_kb(),
        "result": results[0] if results else None,
        "results": results,
    }
    sys.stdout.flush()
    print("BENCH " + json.dumps(report, default=str), flush=True)


if __name__ == "__main__":
    main()
