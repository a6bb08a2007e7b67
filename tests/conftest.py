"""Shared pytest configuration: the `--slow` flag and the hypothesis profiles.

Profiles: `ci` (the default: modest example counts, no deadline) and `slow` (thousands of
examples). `--slow` loads `slow`; otherwise `HYPOTHESIS_PROFILE` picks one, else `ci`. Sweeps that
are not hypothesis tests ask `sweep_size(default, slow)` (a helper and a fixture) how big to be.
Nothing is skipped: `@pytest.mark.slow` only labels the sweeps that grow under `--slow`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import settings

import tests.helpers as helpers

settings.register_profile("ci", max_examples=100, deadline=None, derandomize=False, print_blob=True)
settings.register_profile("slow", max_examples=5000, deadline=None, derandomize=False, print_blob=True)

MARKERS = {
    "slow": "long sweeps; run with --slow (CI runs the modest default)",
    "integration": "real sockets and OS processes",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="run sweeps and hypothesis tests with thousands of examples")


def pytest_configure(config: pytest.Config) -> None:
    declared = {line.split(":")[0].strip() for line in config.getini("markers")}
    for name, text in MARKERS.items():  # setup.cfg declares them; stay usable without it
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {text}")
    profile = "slow" if config.getoption("--slow") else os.environ.get("HYPOTHESIS_PROFILE", "ci")
    settings.load_profile(profile)
    helpers.SLOW = profile == "slow"


@pytest.fixture
def sweep_size() -> Callable[[int, int], int]:
    return helpers.sweep_size
