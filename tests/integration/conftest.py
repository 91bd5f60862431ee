"""Fixtures for tests that talk HTTP to the fake Sinch server (tests/support/fake_sinch.py)."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from call_enricher.sinch.auth import SinchCredentials
from call_enricher.sinch.client import SinchClient
from tests.support.fake_sinch import FakeSinch, self_signed_tls

# A recognisable secret: tests search logs and exception text for it (and its pieces).
TEST_SECRET_BYTES = b"never-log-this-secret-0123456789"
TEST_SECRET = base64.b64encode(TEST_SECRET_BYTES).decode()
TEST_KEY = "3f5a8c1e-1111-4222-8333-94445555aaaa"


@pytest.fixture
def sinch_credentials() -> SinchCredentials:
    return SinchCredentials(application_key=TEST_KEY, application_secret=TEST_SECRET)


@pytest.fixture
def fake_sinch(sinch_credentials: SinchCredentials) -> Iterator[FakeSinch]:
    """A started fake that authenticates requests with ``sinch_credentials``."""
    with FakeSinch(credentials=sinch_credentials) as fake:
        yield fake


class SleepRecorder:
    """Injected as the client's ``sleep``: records delays, sleeps not at all."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_client(
    fake_sinch: FakeSinch, sinch_credentials: SinchCredentials, sleeps: SleepRecorder
) -> Iterator[Callable[..., SinchClient]]:
    """Build clients against the fake (closed at teardown); keyword arguments override."""
    clients: list[SinchClient] = []

    def factory(**overrides: Any) -> SinchClient:
        options: dict[str, Any] = {
            "base_url": fake_sinch.base_url,
            "connect_timeout": 1.0,
            "read_timeout": 2.0,
            "max_attempts": 3,
            "sleep": sleeps,
            "random": lambda: 0.5,
        }
        options.update(overrides)
        credentials = options.pop("credentials", sinch_credentials)
        client = SinchClient(credentials, **options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def deadline_in() -> Callable[[float], float]:
    """``deadline_in(s)``: a deadline ``s`` seconds from now on the client's default clock."""
    return lambda seconds: time.monotonic() + seconds


@pytest.fixture(scope="session")
def tls_server_material(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """(server SSLContext, certificate path) for an HTTPS fake on 127.0.0.1."""
    material = self_signed_tls(tmp_path_factory.mktemp("tls"))
    if material is None:
        pytest.skip("openssl is needed to make a test certificate")
    return material
