"""SnapStart: what to drop before the snapshot and redo after a restore.

With SnapStart, Lambda runs INIT once when a version is published, snapshots the memory and
restores every new execution environment from it. What INIT built is then shared by every
restored environment, so:

* before the snapshot, nothing secret stays in memory: the Sinch secret (and any other
  cached secret) is dropped, and so are the AWS credentials the boto3 session resolved and
  every pooled connection (boto3's and the Sinch ``requests`` session's: a TCP or TLS
  connection cannot survive a restore);
* after a restore, credentials are fetched again, the random state is reseeded (two
  environments restored from one snapshot would otherwise draw the same jitter and IDs), and
  the secret is read again (quietly: the first invocation retries it).

The hooks are registered with the Lambda runtime's ``snapshot_restore_py``
(``register_before_snapshot`` / ``register_after_restore``, available in the Python 3.12+
managed runtimes); outside Lambda (tests, the local stack) that module does not exist and the
hooks are only kept in :data:`BEFORE_SNAPSHOT` / :data:`AFTER_RESTORE`, which tests call in
order. Each wiring function of :mod:`call_enricher.runtime` adds its steps with
:func:`before_snapshot` / :func:`after_restore`.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable

BEFORE_SNAPSHOT: list[Callable[[], None]] = []
"""Steps run by :func:`run_before_snapshot`, in order."""

AFTER_RESTORE: list[Callable[[], None]] = []
"""Steps run by :func:`run_after_restore`, in order."""

_lock = threading.Lock()
_registered = False


def before_snapshot(step: Callable[[], None]) -> None:
    """Add a step to run before the snapshot (once per distinct step)."""
    with _lock:
        if step not in BEFORE_SNAPSHOT:
            BEFORE_SNAPSHOT.append(step)


def after_restore(step: Callable[[], None]) -> None:
    """Add a step to run after a restore (once per distinct step)."""
    with _lock:
        if step not in AFTER_RESTORE:
            AFTER_RESTORE.append(step)


def run_before_snapshot() -> None:
    """Drop what must not be in the snapshot: secrets, credentials, connections."""
    from call_enricher import aws

    for step in BEFORE_SNAPSHOT:
        step()
    aws.forget_credentials_and_connections()


def run_after_restore() -> None:
    """Reseed the random state, fetch credentials again, then the wiring's own steps."""
    from call_enricher import aws

    random.seed(os.urandom(32))
    aws.refresh_credentials()
    for step in AFTER_RESTORE:
        step()


def register_snapstart_hooks() -> bool:
    """Register :func:`run_before_snapshot` / :func:`run_after_restore` with the Lambda
    runtime (once). False when ``snapshot_restore_py`` is not available (not in Lambda)."""
    global _registered
    with _lock:
        if _registered:
            return True
        try:
            from snapshot_restore_py import (  # type: ignore[import-not-found]
                register_after_restore,
                register_before_snapshot,
            )
        except ImportError:
            return False
        register_before_snapshot(run_before_snapshot)
        register_after_restore(run_after_restore)
        _registered = True
        return True
