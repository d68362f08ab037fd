"""Settings: parsed once, failing fast with the variable's name, and documented in the README table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runtime.settings import ENV_VARS, Settings, SettingsError

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_variable_is_in_the_readme_table_and_nothing_else() -> None:
    documented = set(re.findall(r"^\| `(HADES_[A-Z0-9_]+)` \|", README.read_text(), flags=re.MULTILINE))
    assert documented == set(ENV_VARS)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HADES_CONCURRENCY": "x"}, "HADES_CONCURRENCY must be an integer ≥ 1, got 'x'"),
        ({"HADES_CONCURRENCY": "0"}, "HADES_CONCURRENCY must be an integer ≥ 1, got '0'"),
        ({"HADES_LANE_WEIGHTS": "6:3"}, "HADES_LANE_WEIGHTS must be three integers"),
        ({"HADES_DEFAULT_MEMORY_LIMIT": "lots"}, "HADES_DEFAULT_MEMORY_LIMIT must be a memory size"),
        ({"HADES_EXECUTOR": "podman"}, "HADES_EXECUTOR must be one of docker"),
        ({"HADES_CALLBACK_TIMEOUT_SECONDS": "inf"}, "HADES_CALLBACK_TIMEOUT_SECONDS must be a number ≥ 0"),
        ({"HADES_ACK_WAIT_SECONDS": "nan"}, "HADES_ACK_WAIT_SECONDS must be a number ≥ 0"),
        ({"HADES_DUPLICATE_WINDOW_SECONDS": "60"}, "HADES_DUPLICATE_WINDOW_SECONDS must be at least 600"),
        ({"HADES_DEFAULT_CPU_LIMIT": "8", "HADES_MAX_CPU_LIMIT": "4"}, "must not exceed HADES_MAX_CPU_LIMIT"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_values_parse_into_their_units() -> None:
    settings = Settings.from_env(
        {
            "HADES_MAX_MEMORY_LIMIT": "16G",
            "HADES_ALLOWED_NETWORKS": "none, grading-net",
            "HADES_LANE_WEIGHTS": "8:2:1",
            "HADES_LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.limits.max_memory_bytes == 16 * 2**30
    assert settings.limits.allowed_networks == ("none", "grading-net")
    assert settings.dispatch.lane_weights == (8, 2, 1)
    assert settings.log_level == "debug"


def test_lowering_only_a_maximum_lowers_the_default() -> None:
    settings = Settings.from_env({"HADES_MAX_TIMEOUT_SECONDS": "60", "HADES_MAX_MEMORY_LIMIT": "512M"})
    assert settings.limits.default_timeout_s == 60
    assert settings.limits.default_memory_bytes == 512 * 2**20


def test_secrets_are_not_in_repr() -> None:
    settings = Settings.from_env({"HADES_API_KEY": "k3y-value", "HADES_CALLBACK_SECRET": "cb-secret"})
    assert "k3y-value" not in repr(settings) and "cb-secret" not in repr(settings)


def test_secret_patterns_match_case_insensitively() -> None:
    dispatch = Settings().dispatch
    assert dispatch.is_secret("GITHUB_TOKEN") and dispatch.is_secret("db_password") and dispatch.is_secret("API_KEY")
    assert not dispatch.is_secret("GLOBAL")


def test_a_dashboard_that_cancels_with_the_submit_key_cannot_be_open() -> None:
    with pytest.raises(SettingsError, match="HADES_UI_SUBMIT_API_KEY needs HADES_LOGS_API_KEY"):
        Settings.from_env({"HADES_UI_SUBMIT_URL": "http://submit:8080", "HADES_UI_SUBMIT_API_KEY": "s"})
    both = {"HADES_UI_SUBMIT_URL": "http://submit:8080", "HADES_UI_SUBMIT_API_KEY": "s", "HADES_LOGS_API_KEY": "r"}
    assert Settings.from_env(both).logs.ui_submit_api_key == "s"


@pytest.mark.parametrize("var", ["HADES_SUBMIT_PORT", "HADES_LOGS_PORT", "HADES_DISPATCH_PORT"])
def test_a_kubernetes_service_link_is_named_as_the_cause(var: str) -> None:
    """A Service `hades-submit` in the pod's namespace sets HADES_SUBMIT_PORT=tcp://<ip>:8080 (service links):
    the error names the variable, the Service and the fix, not just a bad integer."""
    service = var.removesuffix("_PORT").lower().replace("_", "-")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({var: "tcp://10.96.0.33:8080"})
    message = str(caught.value)
    assert var in message and f"'{service}'" in message
    assert "service link" in message and "enableServiceLinks: false" in message
