"""Fixtures for the tern interop suite.

- `server`: one fresh `tern serve` per test module (temp data dir, generated
  config, free ports), stopped with SIGTERM (then SIGKILL) at module end.
- `fresh_server`: a fresh server for a single test where isolation matters.
- `register_server`: a per-module server with XEP-0077 enabled.
- `clients`: a factory of slixmpp clients bound to `server`, all closed at
  the end of the test.
On any failure the logs of every running server are attached to the report.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ternserver import RUNNING, TernServer  # noqa: E402
from xmppclient import ClientFactory  # noqa: E402


def _start(tmp_path_factory, name: str, **kwargs) -> TernServer:
    workdir = tmp_path_factory.mktemp(name)
    return TernServer(workdir, **kwargs).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    srv = _start(tmp_path_factory, request.module.__name__.split(".")[-1])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def register_server(tmp_path_factory):
    srv = _start(tmp_path_factory, "ibr", register=True)
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path_factory):
    srv = _start(tmp_path_factory, "fresh")
    yield srv
    srv.stop()


@pytest.fixture
async def clients(server):
    factory = ClientFactory(server)
    yield factory
    await factory.close_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in list(RUNNING):
            report.sections.append(
                (f"tern log ({srv.workdir.name}, alive={srv.alive()})",
                 srv.log_tail()))
