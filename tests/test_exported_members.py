"""The core's public names are a promise: a change to them is deliberate, made here too."""

import runtime
import runtime.messaging


def test_the_core_exports_a_short_deliberate_list() -> None:
    assert runtime.__all__ == [
        "HadesError",
        "Job",
        "JobError",
        "JobStatus",
        "Lane",
        "RequestError",
        "Settings",
        "Step",
        "StepStatus",
        "Unavailable",
    ]
    assert all(hasattr(runtime, name) for name in runtime.__all__)


def test_the_messaging_door_hands_out_no_nats_types() -> None:
    for name in runtime.messaging.__all__:
        value = getattr(runtime.messaging, name)
        assert not getattr(value, "__module__", "runtime").startswith("nats"), name
