"""moto's server in a process of its own, for runs that load it hard (``chaos``).

The local stack normally runs moto in its own process, on a thread
(``ThreadedMotoServer``): quick to start, and enough for the demo and the tests. Under the
chaos run's load moto is most of the CPU (Flask, its serialisers, SQS's per-message scans)
and shares one interpreter lock with the handlers, the pollers and the Sinch stand-in, so the
second core sits idle. :class:`MotoProcess` is a drop-in for ``ThreadedMotoServer`` (``start``,
``get_host_and_port``, ``stop``) that runs the same server, with the same atomic DynamoDB
writes (:mod:`~call_enricher_tools.local.moto_patches`), in a child process on 127.0.0.1.

``python -m call_enricher_tools.local.moto_process --port N`` is that child.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Final

LOOPBACK: Final = "127.0.0.1"
START_TIMEOUT_SECONDS: Final = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


class MotoProcess:
    """A moto server in a child process, listening on 127.0.0.1:``port`` (0: a free one)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", __name__, "--port", str(self.port)]
        process = subprocess.Popen(  # noqa: S603 - our own module, by this interpreter
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._process = process
        ends = time.monotonic() + START_TIMEOUT_SECONDS
        while not _accepts(self.port):
            if process.poll() is not None:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                self._process = None
                raise RuntimeError(f"the moto server process exited at start: {error[-500:]}")
            if time.monotonic() > ends:
                self.stop()
                raise RuntimeError(f"the moto server process did not listen on {self.port}")
            time.sleep(0.05)

    def get_host_and_port(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moto server with atomic DynamoDB writes")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    import logging

    from moto.server import ThreadedMotoServer

    from call_enricher_tools.local.moto_patches import patch_moto

    patch_moto()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=args.port, verbose=False)
    server.start()
    stopped.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
