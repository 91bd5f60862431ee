"""The Sinch sandbox: a local, realistic stand-in for Sinch Voice Get Call.

``call-enricher sandbox`` (or ``python -m call_enricher_tools.sandbox``) runs it until
Ctrl-C; :class:`Sandbox` runs it in-process (``start()``/``stop()`` or ``with``). It listens
on 127.0.0.1 only. Its HTTP side (binding, keep-alive, authentication, connection counts,
hangs) is the project's one Sinch stand-in, :mod:`call_enricher_tools.sinch_standin`; the
sandbox is what that stand-in answers.

Get Call, ``GET /calling/v1/calls/id/{callId}``:

* authentication as Sinch documents it: ``Basic base64(key:secret)`` or a signed request
  (``x-timestamp`` + ``Authorization: Application key:signature``, verified over the raw
  request path). 401 body ``{"status": "401 Unauthorized", "errorCode": ..., "message":
  ..., "reference": <uuid>}`` with 40100 (header missing/malformed), 40101 (x-timestamp
  missing, invalid, stale or future), 40102 (bad signature), 40108 (wrong key / Basic
  credentials);
* 200 with the seeded record (:mod:`.records`); 404 ``errorCode`` 40400 ``Call not found``
  for any other well-formed ID; 400 ``errorCode`` 40001 for a malformed call ID; any other
  path 404;
* ONGOING calls turn FINAL ``ongoing_seconds`` after the sandbox started (or after they
  were first asked about, ``ongoing_from="first-request"``), then send their DiCE;
* faults by rate and per-ID scripts, plus latency (:mod:`.faults`).

Control API (JSON, no authentication, for tests and demos):

=========================================  ==================================================
``GET  /_sandbox/calls?kind=K``            seeded calls; K = all, final, ongoing, unknown,
                                           risky
``GET  /_sandbox/calls/{id}``              the body Get Call would serve now (no faults)
``POST /_sandbox/calls/{id}/script``       ``{"steps": ["503", "503", "ok"]}``
``POST /_sandbox/calls/{id}/end``          end the call now and send its DiCE
``GET|PUT /_sandbox/faults``               ``{"5xx": 0.1, "429": 0.05, "hang": 0.02,
                                           "malformed": 0.02, "per-id": false,
                                           "latency_ms": "50-150"}``
``GET  /_sandbox/stats``                   requests per route and status, faults, TCP
                                           connections accepted, callbacks
=========================================  ==================================================

Callbacks (:mod:`.callbacks`): with a callback URL, every call that ends (an ONGOING call
turning FINAL, ``end_call()``, the ``end`` route) gets a signed DiCE POSTed to it.
"""

from call_enricher_tools.sandbox.command import add_sandbox_command, run_sandbox
from call_enricher_tools.sandbox.faults import FaultProfile, Latency
from call_enricher_tools.sandbox.server import NonLoopbackHostError, Sandbox, sandbox_credentials

__all__ = [
    "FaultProfile",
    "Latency",
    "NonLoopbackHostError",
    "Sandbox",
    "add_sandbox_command",
    "run_sandbox",
    "sandbox_credentials",
]
