"""CLI wiring of the local tools: ``local up`` and ``submit``.

The ``call-enricher`` parser calls :func:`add_local_commands` with its subparsers.
"""

from __future__ import annotations

import argparse
from typing import Any

from call_enricher_tools.local.submit import add_submit_parser
from call_enricher_tools.local.up import add_local_up_parser


def add_local_commands(subparsers: Any) -> None:
    """Register ``local`` (with ``local up``) and ``submit`` on ``subparsers``."""
    local: argparse.ArgumentParser = subparsers.add_parser(
        "local", help="the local stack (sandbox, moto, HTTP API, poller) on 127.0.0.1"
    )
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    add_local_up_parser(local_sub)
    add_submit_parser(subparsers)
