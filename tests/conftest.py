"""Shared fixtures: real servers on 127.0.0.1, real HTTP and WebSocket clients."""

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests import local_services

SERVICES = local_services.choose()  # before any test module reads TEST_DATABASE_URL

from tests.server import ServerProcess  # noqa: E402


def pytest_report_header() -> list[str]:
    return SERVICES


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One offline-engine server shared by the tests that only need a server."""
    proc = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield proc
    proc.stop()


@pytest.fixture
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose offline engine streams slowly enough to act mid-reply."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("slow"), OFFLINE_TOKEN_DELAY_SECONDS="0.08"
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        yield http
