"""The KEDA emulator of the deploy test (tests/deploy/keda.py), without a cluster: that it reads the lag as KEDA's
nats-jetstream scaler does (including the silent fallback to the stream's last sequence, which it must report),
and scales as KEDA and the HPA would, on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy import keda
from tests.test_manifests import mc

TRIGGER = keda.Trigger("lane-high", "nats.hades.svc:8222", "$G", "HADES_JOBS", "dispatch-high", 4, 0)


def jsz(consumers: dict[str, tuple[int, int]], last_seq: int = 0, stream: str = "HADES_JOBS") -> dict[str, Any]:
    """A /jsz?acc=$G&consumers=true&config=true answer as nats-server gives it (only the fields KEDA reads)."""
    detail = [{"name": n, "num_pending": p, "num_ack_pending": a} for n, (p, a) in consumers.items()]
    streams = [{"name": stream, "state": {"messages": last_seq, "last_seq": last_seq}, "consumer_detail": detail}]
    return {"account_details": [{"name": "$G", "stream_detail": streams}]}


def test_the_lag_is_pending_plus_ack_pending_of_the_named_consumer() -> None:
    assert keda.keda_lag(jsz({"dispatch-high": (3, 2), "dispatch-low": (50, 0)}, last_seq=99), TRIGGER) == (5, True)
    assert TRIGGER.url("10.96.0.9:8222") == "http://10.96.0.9:8222/jsz?acc=$G&consumers=true&config=true"


def test_a_missing_consumer_falls_back_to_the_last_sequence_as_keda_does() -> None:
    assert keda.keda_lag(jsz({"dispatch_high": (0, 0)}, last_seq=1234), TRIGGER) == (1234, False)
    with pytest.raises(keda.StreamNotFound):
        keda.keda_lag(jsz({}, stream="OTHER"), TRIGGER)


def test_the_hpa_takes_the_largest_trigger_and_keeps_within_tolerance() -> None:
    assert keda.hpa_proposal([(40, 4), (3, 4), (0, 4)], current=1) == 10
    assert keda.hpa_proposal([(9, 4)], current=1) == 3
    assert keda.hpa_proposal([(21, 4)], current=5) == 5  # 21 / 20 is within 10 %
    assert keda.hpa_proposal([(0, 4)], current=3) == 0


class Fake:
    """A clock, a NATS monitoring answer and a Deployment's replicas, all under the test's control."""

    def __init__(self, replicas: int) -> None:
        self.now = 0.0
        self.replicas = replicas
        self.answer = jsz({"dispatch-high": (0, 0), "dispatch-normal": (0, 0), "dispatch-low": (0, 0)})

    def emulator(self, targets: list[keda.ScaledTarget]) -> keda.Emulator:
        def set_replicas(namespace: str, name: str, n: int) -> None:
            self.replicas = n

        return keda.Emulator(
            targets,
            resolve=lambda endpoint: endpoint,
            get_replicas=lambda namespace, name: self.replicas,
            set_replicas=set_replicas,
            clock=lambda: self.now,
            fetch=lambda url: self.answer,
        )

    def run(self, emulator: keda.Emulator, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            emulator.step()
            self.now += 1


@pytest.fixture(scope="module")
def test_overlay() -> list[keda.ScaledTarget]:
    objects = mc.render(mc.kubectl_binary(), mc.Target("deploy-test", mc.ROOT / "tests" / "deploy" / "overlay"))
    return keda.scaled_targets(objects)


def test_the_rendered_scaled_objects_are_read_with_their_triggers(test_overlay: list[keda.ScaledTarget]) -> None:
    by_name = {t.name: t for t in test_overlay}
    assert set(by_name) == {"hades-dispatch", "hades-logs"}  # submit scales on cpu: not emulated
    dispatch = by_name["hades-dispatch"]
    assert (dispatch.min_replicas, dispatch.max_replicas, dispatch.cooldown_s) == (0, 4, 20)
    assert {t.consumer for t in dispatch.triggers} == {"dispatch-high", "dispatch-normal", "dispatch-low"}


def test_zero_to_a_burst_and_back_to_zero(test_overlay: list[keda.ScaledTarget]) -> None:
    dispatch = [t for t in test_overlay if t.name == "hades-dispatch"]
    fake = Fake(replicas=1)
    emulator = fake.emulator(dispatch)
    fake.run(emulator, 1)
    assert fake.replicas == 0, "inactive on creation: straight to minReplicaCount"
    fake.answer = jsz({"dispatch-high": (40, 0), "dispatch-normal": (0, 0), "dispatch-low": (0, 0)})
    fake.run(emulator, 6)
    assert fake.replicas == 1, "activated from zero within one polling interval"
    fake.run(emulator, 40)
    assert fake.replicas == 4, "the HPA scaled out to ceil(40 / 4) = 10, clamped to maxReplicaCount"
    fake.answer = jsz({"dispatch-high": (0, 0), "dispatch-normal": (0, 0), "dispatch-low": (0, 0)})
    fake.run(emulator, 14)  # the last active poll was 2 s before the lag went: 16 s idle so far
    assert fake.replicas == 1, "the HPA scaled in to one; not to zero before the 20 s cooldown"
    fake.run(emulator, 30)
    assert fake.replicas == 0
    assert [(h[2], h[3]) for h in emulator.history] == [(1, 0), (0, 1), (1, 4), (4, 1), (1, 0)]
    assert emulator.mismatches == []


def test_a_consumer_keda_cannot_find_is_reported(test_overlay: list[keda.ScaledTarget]) -> None:
    dispatch = [t for t in test_overlay if t.name == "hades-dispatch"]
    fake = Fake(replicas=0)
    fake.answer = jsz({"dispatch-high": (0, 0)}, last_seq=7)  # the normal and low consumers were never created
    emulator = fake.emulator(dispatch)
    fake.run(emulator, 1)
    assert fake.replicas == 1, "KEDA wakes dispatch on the stream's last sequence (7 > 0)"
    assert len(emulator.mismatches) == 2 and "'dispatch-normal' not in stream HADES_JOBS" in emulator.mismatches[0]


def test_the_test_overlay_is_the_dev_overlay_but_for_dispatch_scaling() -> None:
    kubectl = mc.kubectl_binary()
    dev = mc.render(kubectl, mc.Target("overlays/dev", mc.OVERLAYS / "dev"))
    test = mc.render(kubectl, mc.Target("deploy-test", mc.ROOT / "tests" / "deploy" / "overlay"))
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    changed = [key(a) for a, b in zip(sorted(dev, key=key), sorted(test, key=key), strict=True) if a != b]
    assert changed == [("ScaledObject", "hades-dispatch")]
