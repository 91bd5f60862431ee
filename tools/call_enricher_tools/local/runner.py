"""The whole local pipeline in one process: sandbox, moto, HTTP API, SQS and stream pollers.

:class:`LocalPipeline` is what ``call-enricher local up`` and the demo start, in this order:

1. the Sinch sandbox (a real HTTP server on 127.0.0.1 behaving like Get Call);
2. the AWS side (:class:`~call_enricher_tools.local.stack.LocalStack`: moto with the
   template's resources, the sandbox's credentials in the Sinch secret), whose function
   environment is installed in ``os.environ`` for the real handlers;
3. the HTTP API on 127.0.0.1 (port 3000 by default, like ``sam local start-api``), turning
   real requests into API Gateway v2 events for the real ``http_api`` and ``sinch_callbacks``
   handlers; the sandbox's callbacks are pointed at its ``/sinch/callbacks`` route;
4. the SQS poller playing the queue function's event source mapping;
5. the stream poller playing the stream publisher's mapping on the calls table's stream: the
   only way events reach the bus (the table is the outbox);
6. with ``PipelineOptions.webhook``: a local webhook receiver (started before the stack, which
   stores its API key as the webhook's secret) and the delivery that plays the template's API
   destination target (:mod:`~call_enricher_tools.local.webhook`).

:meth:`LocalPipeline.stop` stops what writes to the table first (the SQS poller, then the
HTTP API), lets the stream poller publish what the stream still holds (at most
``PipelineOptions.stream_drain_seconds``), then stops it, moto and the sandbox, and restores
the environment. :meth:`LocalPipeline.wait_stream_idle` waits until the stream has been
consumed (every change so far published, or given up on). Everything binds 127.0.0.1 only.
IAM (SigV4) auth of the ``/calls`` routes is not enforced locally.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from call_enricher_tools.local.poller import Invocation, SqsPoller, load_function
from call_enricher_tools.local.stack import (
    LOCAL_VISIBILITY_TIMEOUT,
    LOOPBACK,
    LocalStack,
    PortInUseError,
    _check_port_free,
)
from call_enricher_tools.local.streams import StreamInvocation, StreamPoller
from call_enricher_tools.local.template import REPO_ROOT, Template
from call_enricher_tools.local.webhook import Attempt, WebhookDelivery, WebhookReceiver

DEFAULT_API_PORT = 3000  # what `sam local start-api` uses
FUNCTIONS_DIR = REPO_ROOT / "functions"


@dataclass
class PipelineOptions:
    """Ports (0 = any free port), template parameter overrides and local knobs."""

    api_port: int = DEFAULT_API_PORT
    aws_port: int = 0
    sandbox_port: int = 0
    parameters: Mapping[str, str] = field(default_factory=dict)
    visibility_timeout_seconds: int = LOCAL_VISIBILITY_TIMEOUT
    log_file: Path | None = None
    """Write the handlers' JSON logs and EMF metric lines to this file, not the console."""
    sandbox_options: Mapping[str, Any] = field(default_factory=dict)
    extra_environment: Mapping[str, str] = field(default_factory=dict)
    on_invocation: Callable[[Invocation], None] | None = None
    on_stream_invocation: Callable[[StreamInvocation], None] | None = None
    stream_retry_pause_seconds: float = 0.05
    """Pause before a failed stream batch is retried (Lambda backs off for longer)."""
    stream_drain_seconds: float = 10.0
    """On stop: how long the stream poller may keep publishing what the stream holds."""
    stack_name: str = "call-enricher-local"
    webhook: bool = False
    """Turn the template's webhook delivery on, to a local receiver on 127.0.0.1."""
    on_webhook: Callable[[Attempt], None] | None = None
    """Called after each webhook delivery (delivered, or given up on)."""
    webhook_drain_seconds: float = 5.0
    """On stop: how long the webhook delivery may keep delivering what its outbox holds."""
    real_sinch: Any = None
    """``SinchCredentials`` of a real Sinch application: no sandbox; calls go to Sinch in
    the template's ``SinchRegion`` (override with ``parameters``)."""


class LocalPipeline:
    """Sandbox + moto + HTTP API + pollers. ``start()`` then ``stop()`` (or ``with``)."""

    def __init__(self, options: PipelineOptions | None = None) -> None:
        self.options = options or PipelineOptions()
        self.sandbox: Any = None
        self.stack: LocalStack | None = None
        self.api: Any = None
        self.poller: SqsPoller | None = None
        self.stream_poller: StreamPoller | None = None
        self.webhook: WebhookReceiver | None = None
        self.webhook_deliveries: list[WebhookDelivery] = []
        self._undo_logs: list[Callable[[], Any]] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LocalPipeline:
        """Start everything; on any failure, stop what was started and re-raise (a bad
        parameter override raises :class:`~call_enricher_tools.local.template.ParameterError`
        before anything starts)."""
        options = self.options
        # Fail before starting anything on a bad parameter override or a fixed port taken.
        Template.load().check_parameters(options.parameters)
        for what, port in (
            ("HTTP API", options.api_port),
            ("moto server (AWS)", options.aws_port),
            ("Sinch sandbox", options.sandbox_port),
        ):
            _check_port_free(what, port)
        try:
            self._start_sandbox()
            self._start_stack()
            self._start_api()
            self._start_poller()
            self._start_stream_poller()
            self._start_webhook_delivery()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything that runs; restore the environment. What writes to the table
        stops first, so that the stream poller can publish every change before it stops."""
        if self.poller is not None:
            self.poller.stop()
            self.poller = None
        if self.api is not None:
            _quietly(self.api.stop)
            self.api = None
        if self.stream_poller is not None:
            self.stream_poller.wait_idle(self.options.stream_drain_seconds)
            self.stream_poller.stop()
            self.stream_poller = None
        while self.webhook_deliveries:
            self.webhook_deliveries.pop().stop(drain_seconds=self.options.webhook_drain_seconds)
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        if self.webhook is not None:
            _quietly(self.webhook.stop)
            self.webhook = None
        self._restore_logs()
        if self.sandbox is not None:
            _quietly(self.sandbox.stop)
            self.sandbox = None

    def __enter__(self) -> LocalPipeline:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- parts ---------------------------------------------------------------------------

    def _start_sandbox(self) -> None:
        if self.options.real_sinch is not None:
            return
        from call_enricher_tools.sandbox import Sandbox

        sandbox_options: dict[str, Any] = {
            # calls start their ONGOING clock when first asked about, so a stack left running
            # does not see every seeded ONGOING call end (and call back) at once
            "ongoing_from": "first-request",
            **dict(self.options.sandbox_options),
        }
        sandbox = Sandbox(host=LOOPBACK, port=self.options.sandbox_port, **sandbox_options)
        _start(sandbox, "Sinch sandbox", self.options.sandbox_port)
        self.sandbox = sandbox

    def _start_stack(self) -> None:
        options = self.options
        real = options.real_sinch
        webhook: dict[str, Any] = {}
        if options.webhook:
            parameters = {**Template.load().parameter_defaults(), **options.parameters}
            receiver = WebhookReceiver(
                auth_type=parameters["WebhookAuthType"], header=parameters["WebhookApiKeyHeader"]
            )
            _start(receiver, "webhook receiver", 0)
            self.webhook = receiver
            webhook = {"webhook_url": receiver.url, "webhook_secret": receiver.secret}
        stack = LocalStack(
            sinch_credentials=real if real is not None else self.sandbox.credentials,
            sinch_base_url=None if real is not None else self.sandbox.base_url,
            parameters=options.parameters,
            stack_name=options.stack_name,
            port=options.aws_port,
            visibility_timeout_seconds=options.visibility_timeout_seconds,
            extra_environment=options.extra_environment,
            **webhook,
        )
        stack.start()
        self.stack = stack
        stack.apply_environment()
        if options.log_file is not None:
            self._redirect_logs(options.log_file)

    def _start_api(self) -> None:
        from call_enricher_tools.local_api import LocalApi

        api = LocalApi(host=LOOPBACK, port=self.options.api_port)
        _start(api, "HTTP API", self.options.api_port)
        self.api = api
        if self.sandbox is None:
            return
        configure = getattr(self.sandbox, "set_callback_url", None)
        if configure is not None:
            configure(self.callback_url)
        else:
            self.sandbox.callback_url = self.callback_url

    def _start_poller(self) -> None:
        stack = self.require_stack()
        trigger = stack.trigger
        properties = stack.template.function_properties(trigger.function)
        app = FUNCTIONS_DIR / Path(str(properties["CodeUri"])).name / "app.py"
        handler = str(properties.get("Handler", "app.lambda_handler"))
        poller = SqsPoller(
            sqs_client=stack.client("sqs"),
            queue_url=stack.queue_url,
            queue_arn=stack.queue_arn,
            handler_factory=lambda i: load_function(app, handler, instance=f"queue_{i}"),
            function_name=f"{stack.stack_name}-{trigger.function}",
            function_timeout_seconds=trigger.function_timeout_seconds,
            batch_size=trigger.batch_size,
            batching_window_seconds=trigger.batching_window_seconds,
            concurrency=trigger.max_concurrency,
            report_batch_item_failures=trigger.report_batch_item_failures,
            on_invocation=self.options.on_invocation,
        )
        poller.start()
        self.poller = poller

    def _start_stream_poller(self) -> None:
        stack = self.require_stack()
        trigger = stack.stream_trigger
        if trigger is None:
            return
        properties = stack.template.function_properties(trigger.function)
        app = FUNCTIONS_DIR / Path(str(properties["CodeUri"])).name / "app.py"
        handler = str(properties.get("Handler", "app.lambda_handler"))
        poller = StreamPoller.from_stack(
            stack,
            lambda i: load_function(app, handler, instance=f"stream_{i}"),
            retry_pause_seconds=self.options.stream_retry_pause_seconds,
            on_invocation=self.options.on_stream_invocation,
        )
        poller.start()
        self.stream_poller = poller

    def _start_webhook_delivery(self) -> None:
        if self.webhook is None:  # only to the local receiver: never to a URL given by -p
            return
        stack = self.require_stack()
        for target in stack.webhook_targets:
            delivery = WebhookDelivery(
                target, stack.client("sqs"), on_attempt=self.options.on_webhook
            )
            delivery.start()
            self.webhook_deliveries.append(delivery)

    def wait_stream_idle(self, timeout: float) -> bool:
        """Wait until the stream poller has consumed the calls table's stream up to now
        (every change published, or given up on); False after ``timeout`` seconds."""
        if self.stream_poller is None:
            raise RuntimeError("the stream poller is not running")
        return self.stream_poller.wait_idle(timeout)

    def _redirect_logs(self, path: Path) -> None:
        """Handlers' output to ``path``: Powertools' JSON logs, the EMF lines it prints to
        stdout, and the library's standard-library log records (Sinch retries...)."""
        import sys

        from call_enricher.observability import logger

        path.parent.mkdir(parents=True, exist_ok=True)
        sink = path.open("a", encoding="utf-8", buffering=1)
        self._undo_logs.append(sink.close)
        handler = logger.registered_handler
        if isinstance(handler, logging.StreamHandler):
            previous_stream = handler.setStream(sink)
            self._undo_logs.append(lambda: handler.setStream(previous_stream))
        library = logging.getLogger("call_enricher")
        file_handler = logging.StreamHandler(sink)
        library.addHandler(file_handler)
        self._undo_logs.append(lambda: library.removeHandler(file_handler))
        previous_stdout = sys.stdout
        sys.stdout = sink
        self._undo_logs.append(lambda: setattr(sys, "stdout", previous_stdout))
        # Powertools' UserWarnings ("No application metrics to publish"...) go there too
        previous_showwarning = warnings.showwarning

        def to_sink(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            sink.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = to_sink
        self._undo_logs.append(lambda: setattr(warnings, "showwarning", previous_showwarning))

    def _restore_logs(self) -> None:
        while self._undo_logs:
            _quietly(self._undo_logs.pop())

    # -- where things are ----------------------------------------------------------------

    def require_stack(self) -> LocalStack:
        """The started AWS side (raises when the pipeline is not started)."""
        if self.stack is None:
            raise RuntimeError("the local pipeline is not started")
        return self.stack

    @property
    def api_url(self) -> str:
        return str(self.api.base_url)

    @property
    def callback_url(self) -> str:
        stack = self.require_stack()
        return self.api_url + stack.parameters["SinchCallbackPath"]


def _start(server: Any, what: str, port: int) -> None:
    """Start a server, turning "address in use" into :class:`PortInUseError`."""
    try:
        server.start()
    except OSError as exc:
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise PortInUseError(what, port, exc) from None
        raise


def _quietly(stop: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):  # shutting down: nothing useful to do
        stop()
