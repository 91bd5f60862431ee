"""SnapStart hooks: nothing secret in the snapshot; fresh credentials, connections and random
state after a restore. The Lambda runtime's snapshot_restore_py is absent here: the tests
call the registered steps directly, in the order Lambda runs them."""

from __future__ import annotations

import json
import random
from typing import Any

import boto3
import pytest

from call_enricher import aws, snapstart
from call_enricher.secrets import SecretsManagerCredentials


@pytest.fixture(autouse=True)
def own_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapstart, "BEFORE_SNAPSHOT", [])
    monkeypatch.setattr(snapstart, "AFTER_RESTORE", [])


def test_registration_is_a_no_op_outside_lambda():
    assert snapstart.register_snapstart_hooks() is False


def test_before_snapshot_drops_credentials_and_connections_and_after_restore_brings_them_back(
    aws_mock: None,
):
    # Given a cached client that has signed a request (credentials resolved, a pool used)
    aws.reset_clients()
    sqs: Any = aws.client("sqs")
    sqs.list_queues()
    assert sqs._request_signer._credentials is not None
    # When the snapshot is taken
    snapstart.run_before_snapshot()
    # Then the client holds no credentials, nor does the session
    assert sqs._request_signer._credentials is None
    assert aws._session._session._credentials is None
    # When the environment is restored
    snapstart.run_after_restore()
    # Then the same client has credentials resolved again and works
    assert sqs._request_signer._credentials is not None
    assert sqs.list_queues()["ResponseMetadata"]["HTTPStatusCode"] == 200
    aws.reset_clients()


def test_the_sinch_secret_is_dropped_before_the_snapshot_and_read_after_the_restore(
    aws_mock: None,
):
    # Given the Sinch secret read once (cached by Powertools)
    boto3.client("secretsmanager").create_secret(
        Name="sinch",
        SecretString=json.dumps({"applicationKey": "k", "applicationSecret": "c2VjcmV0"}),
    )
    aws.reset_clients()
    credentials = SecretsManagerCredentials("sinch")
    credentials()
    assert credentials._provider is not None
    assert credentials._provider.store
    order: list[str] = []
    snapstart.before_snapshot(lambda: (order.append("forget"), credentials.forget()))
    snapstart.after_restore(lambda: (order.append("read"), credentials()))
    # When the hooks run in Lambda's order
    snapstart.run_before_snapshot()
    # Then nothing secret is cached in the snapshot
    assert not credentials._provider.store
    snapstart.run_after_restore()
    # And the restore reads it again
    assert order == ["forget", "read"]
    assert credentials._provider.store
    aws.reset_clients()


def test_after_restore_reseeds_the_random_state():
    random.seed(1234)
    expected = random.random()
    random.seed(1234)
    snapstart.run_after_restore()
    assert random.random() != expected


def test_a_step_is_added_once():
    def step() -> None:
        return None

    snapstart.before_snapshot(step)
    snapstart.before_snapshot(step)
    snapstart.after_restore(step)
    assert [step] == snapstart.BEFORE_SNAPSHOT
    assert [step] == snapstart.AFTER_RESTORE
