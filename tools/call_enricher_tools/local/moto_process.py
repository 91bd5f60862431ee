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
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any, Final

LOOPBACK: Final = "127.0.0.1"
START_TIMEOUT_SECONDS: Final = 60.0


class MotoProcess:
    """A moto server in a child process on 127.0.0.1:``port`` (0: a port the child binds).

    The child prints the port it listens on once it serves; it stops when its stdin closes
    (so it never outlives this process, even killed), and runs in its own session (Ctrl-C
    reaches this process, which stops it in order). Its stderr goes to a temporary file, read
    back when it fails to start (a pipe nobody reads would block it once full).
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._process: subprocess.Popen[str] | None = None
        self._stderr: Any = None

    def start(self) -> None:
        command = [sys.executable, "-m", __name__, "--port", str(self.port)]
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 - closed by stop()
        process = subprocess.Popen(  # noqa: S603 - our own module, by this interpreter
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        self._process = process
        ready: list[str] = []
        reader = threading.Thread(
            target=lambda: ready.append(process.stdout.readline() if process.stdout else ""),
            daemon=True,
        )
        reader.start()
        reader.join(START_TIMEOUT_SECONDS)
        line = ready[0].strip() if ready else ""
        if not line.isdigit():
            error = self._error_tail()
            self.stop()
            raise RuntimeError(f"the moto server process did not start: {error}")
        self.port = int(line)

    def _error_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return str(self._stderr.read())[-500:]

    def get_host_and_port(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()  # the child's signal to stop
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="moto server with atomic DynamoDB writes")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    import logging

    from moto.server import ThreadedMotoServer

    from call_enricher_tools.local.moto_patches import patch_moto

    patch_moto()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=args.port, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)  # ready: the port it listens on
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it, in order

    def watch_parent() -> None:
        sys.stdin.read()  # returns at EOF: the parent closed it, or died
        stopped.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    stopped.wait()  # stdin closed (the parent stopped or died) or SIGTERM
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
