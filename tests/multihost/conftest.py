"""Fixtures of the multi-host tests: processes stopped at the end, namespaces removed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing_service
from tests.multihost.hosts import Network, Processes, netns_unavailable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netns: makes Linux network namespaces (root and iproute2; CI runs it)"
    )


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Start processes with `procs.start`; every one (and its children) ends with the test."""
    p = Processes(tmp_path / "logs")
    yield p
    p.stop_all()


@pytest.fixture
def network() -> Iterator[Network]:
    """A bridge for the service and two worker hosts, each a namespace on its own link."""
    reason = netns_unavailable()
    if reason is not None:
        missing_service(f"network namespaces: {reason}")
    with Network(hosts=2) as net:
        yield net
