"""Generate (or check) ``openapi.json``: the HTTP API's OpenAPI document, from the code.

    python -m call_enricher_tools.openapi            # rewrite openapi.json
    python -m call_enricher_tools.openapi --check    # exit 1 when openapi.json is stale

The document comes from the Powertools resolver of ``functions/http_api/app.py`` (routes,
pydantic models of ``call_enricher.api_models``); it is also served at ``GET /openapi.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi.json"
HANDLER = ROOT / "functions" / "http_api" / "app.py"


def render() -> str:
    """The OpenAPI document as committed (sorted keys, 2-space indent, final newline)."""
    spec = importlib.util.spec_from_file_location("call_enricher_http_api_openapi", HANDLER)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HANDLER}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    document = json.loads(module.openapi_json())
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m call_enricher_tools.openapi")
    parser.add_argument("--check", action="store_true", help="fail when openapi.json is stale")
    parser.add_argument("--output", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is stale: run python -m call_enricher_tools.openapi",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
