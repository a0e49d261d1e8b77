"""Shared fixtures: one anvil chain per test session, reverted to a snapshot after each test.

`chain` starts a single anvil (Prague, 127.0.0.1, free port) for the whole session;
`w3` gives each test a web3 client on it and reverts the chain to a snapshot taken
before the test, so tests see a fresh chain without paying for a new process;
`contracts` are the compiled artifacts (cached by source hash).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from chain_adapters.build import Artifact, compile_contracts
from chain_adapters.localchain import LocalChain, start_chain

# CI replays the same generated examples on every run (a red CI then means a change broke
# something, not that a new example was drawn); local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def contracts() -> dict[str, Artifact]:
    return compile_contracts()


@pytest.fixture(scope="session")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalChain]:
    with start_chain(31337, log_dir=tmp_path_factory.mktemp("anvil")) as running:
        yield running


@pytest.fixture
def w3(chain: LocalChain) -> Iterator[Any]:
    snapshot = chain.snapshot()
    try:
        yield chain.web3()
    finally:
        chain.revert(snapshot)
