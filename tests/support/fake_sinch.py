"""The tests' fake Sinch: :class:`call_enricher_tools.sinch_standin.ScriptedSinch`.

The stand-in itself (loopback-only HTTP/1.1, per-path scripts whose last reply repeats, auth
checks, recording, delay/hang, TLS) lives in the installed package, where the sandbox, the
chaos run and the benchmarks share it; see that module's docstring. This module keeps the
names the tests import, plus :func:`self_signed_tls`, which only tests need.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

from call_enricher_tools.sinch_standin import (
    GET_CALL_PATH,
    LOOPBACK,
    RecordedRequest,
    Reply,
    Script,
    not_found_reply,
)
from call_enricher_tools.sinch_standin import ScriptedSinch as FakeSinch

__all__ = [
    "GET_CALL_PATH",
    "LOOPBACK",
    "FakeSinch",
    "RecordedRequest",
    "Reply",
    "Script",
    "not_found_reply",
    "self_signed_tls",
]


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path] | None:
    """A server context for 127.0.0.1 and its certificate file (the CA to trust).

    Made with the ``openssl`` command line; ``None`` when it is not installed.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "fake-sinch.crt", directory / "fake-sinch.key"
    subprocess.run(  # noqa: S603 - fixed argv, no shell
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert
