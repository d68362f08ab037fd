"""The deploy tests (marker ``deploy``) run only when asked for (``make test-deploy``, ``pytest -m deploy``): they
apply the dev overlay into the cluster of KUBECONFIG and take minutes, so the ordinary suite skips them."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    asked = "deploy" in (config.getoption("markexpr", "") or "")
    reason = "run with make test-deploy (pytest -m deploy)" if not asked else "needs KUBECONFIG (tools/k8s_up.sh)"
    for item in items:
        if item.get_closest_marker("deploy") and (not asked or not os.environ.get("KUBECONFIG")):
            item.add_marker(pytest.mark.skip(reason=reason))


FIGURES: dict[str, object] = {}


@pytest.fixture(scope="session")
def deploy_figures() -> dict[str, object]:
    """What the deploy tests measured; printed at the end of the run."""
    return FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("deploy figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
