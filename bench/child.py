"""Cold start in a fresh process: import a handler file, invoke it once, report as JSON.

``python bench/child.py HANDLER_FILE EVENT_FILE [COUNT_MODULES]``: the clock starts at the
first line (interpreter start-up itself, the same for every handler, is left out, which
makes ratios stricter), stops after the import and after the first invocation. The last
stdout line is ``BENCH {...}`` (the handler's own log lines come before it).
"""

import time

_T0 = time.perf_counter()

import importlib.util  # noqa: E402
import json  # noqa: E402
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
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _summary(result: object) -> object:
    """The handler's answer, with a long HTTP body cut (status and failures kept whole)."""
    if isinstance(result, dict) and isinstance(result.get("body"), str):
        return {**result, "body": result["body"][:300]}
    return result


def main() -> None:
    handler_file, event_file = sys.argv[1], sys.argv[2]
    spec = importlib.util.spec_from_file_location("bench_handler", handler_file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_handler"] = module
    spec.loader.exec_module(module)
    imported = time.perf_counter()
    with open(event_file) as f:
        event = json.load(f)
    rss_after_import = peak_rss_kb()
    result = module.lambda_handler(event, Context())
    done = time.perf_counter()
    report = {
        "import_ms": (imported - _T0) * 1000,
        "first_invocation_ms": (done - _T0) * 1000,
        "invoke_ms": (done - imported) * 1000,
        "xray_loaded": "aws_xray_sdk" in sys.modules,
        # Powertools' batch utility imports every parser model (pydantic) when pydantic is
        # already imported before it (batch/types.py checks sys.modules): ~50 ms.
        "parser_loaded": "aws_lambda_powertools.utilities.parser" in sys.modules,
        "pydantic_loaded": "pydantic" in sys.modules,
        "modules": len(sys.modules),
        "maxrss_after_import_kb": rss_after_import,
        "maxrss_kb": peak_rss_kb(),
        "result": _summary(result),
    }
    sys.stdout.flush()
    print("BENCH " + json.dumps(report, default=str), flush=True)


if __name__ == "__main__":
    main()
