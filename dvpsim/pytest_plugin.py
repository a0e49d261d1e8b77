"""dvpsim's pytest plugin (registered through the ``pytest11`` entry point when dvpsim is
installed): the ``dvpsim_sim`` fixture and the ``--dvpsim-crypto`` option.

``dvpsim_sim(scenario)`` runs a scenario in sim and returns a ``dvpsim.testing.SimResult``
(history and verdicts), with the crypto ``--dvpsim-crypto`` names (``fast`` by default,
``real`` to confirm). The fixture is session-scoped, so Hypothesis tests may use it: each
call runs in a fresh temporary folder and shares nothing with the last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dvpsim")
    group.addoption(
        "--dvpsim-crypto",
        default="fast",
        choices=("fast", "real"),
        help="crypto of the dvpsim_sim fixture's runs: fast (default) or real",
    )


@pytest.fixture(scope="session")
def dvpsim_sim(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Run a scenario in sim: ``dvpsim_sim(scenario) -> SimResult``."""
    from dvpsim.testing import run_sim

    crypto = request.config.getoption("--dvpsim-crypto")

    def run(scenario: Any, **kwargs: Any) -> Any:
        return run_sim(scenario, **{"crypto": crypto, **kwargs})

    return run
