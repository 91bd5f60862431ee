"""The local stack: the whole pipeline on one machine, no AWS account, no Docker.

* :mod:`~call_enricher_tools.local.template`: template.yaml as data (CFN short tags,
  parameters, the few intrinsics the local stack resolves).
* :mod:`~call_enricher_tools.local.stack`: moto server with template.yaml's resources.
* :mod:`~call_enricher_tools.local.poller`: the SQS event source mapping of the queue function.
* :mod:`~call_enricher_tools.local.runner`: sandbox + moto + HTTP API + poller, in one process.
* :mod:`~call_enricher_tools.local.up`: ``call-enricher local up``.
* :mod:`~call_enricher_tools.local.demo`: ``make demo`` (``call-enricher demo``).
* :mod:`~call_enricher_tools.local.submit`: ``call-enricher submit``.
* :mod:`~call_enricher_tools.local.commands`: ``add_local_commands(subparsers)`` for the CLI.
"""
