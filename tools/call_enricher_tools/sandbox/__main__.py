"""``python -m call_enricher_tools.sandbox [options]``: the ``sandbox`` command on its own."""

import argparse
import signal
import sys
from types import FrameType

from call_enricher_tools.sandbox.command import add_sandbox_command


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    parser = argparse.ArgumentParser(prog="python -m call_enricher_tools.sandbox")
    add_sandbox_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sandbox", *sys.argv[1:]])
    try:
        return int(args.func(args, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
