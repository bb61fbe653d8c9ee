"""Session fixtures of the interop suite: signed zones, a reference knotd, the server under test.

The server under test is authd; AUTHD_INTEROP_SUT=knotd runs a second knotd instead, which
validates the harness itself (it must report 0 differences).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from authd.bench.servers import RunningServer, running, start_authd, start_knotd
from tests.interop.corpus import CORPUS
from tests.interop.exchange import Outcome, run_corpus
from tests.interop.zones import SIGNER_BINARIES, ZONE_SPECS, build_zone
from tests.support.system import require_binary

SUT_ENV = "AUTHD_INTEROP_SUT"


@pytest.fixture(scope="session")
def knotd_binary() -> str:
    return require_binary("knotd")


@pytest.fixture(scope="session")
def interop_zone_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every interop zone as a master file, signed ones signed now with fresh keys."""
    for spec in ZONE_SPECS:
        for binary in SIGNER_BINARIES.get(spec.signer, ()):
            require_binary(binary)
    root = tmp_path_factory.mktemp("zones")
    return {spec.origin: build_zone(spec, root / spec.origin) for spec in ZONE_SPECS}


@pytest.fixture(scope="session")
def reference_server(
    knotd_binary: str, interop_zone_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("knotd-reference")
    with running(start_knotd(knotd_binary, workdir, interop_zone_files)) as server:
        yield server


@pytest.fixture(scope="session")
def sut_server(
    knotd_binary: str, interop_zone_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    kind = os.environ.get(SUT_ENV, "authd")
    workdir = tmp_path_factory.mktemp(f"{kind}-sut")
    if kind == "knotd":
        server = start_knotd(knotd_binary, workdir, interop_zone_files)
    elif kind == "authd":
        server = start_authd(workdir, interop_zone_files)
    else:
        pytest.fail(f"{SUT_ENV} must be 'authd' or 'knotd', not {kind!r}", pytrace=False)
    with running(server):
        yield server


@pytest.fixture(scope="session")
def differential_outcomes(
    reference_server: RunningServer, sut_server: RunningServer
) -> dict[str, list[Outcome]]:
    """The whole corpus run once against both servers; tests look their query up by id."""
    outcomes: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in run_corpus(CORPUS, reference_server.address, sut_server.address):
        outcomes[outcome.query.qid].append(outcome)
    return dict(outcomes)
