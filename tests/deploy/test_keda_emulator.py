"""The KEDA emulator of the deploy test (tests/deploy/keda.py), without a cluster: that it reads the lag as KEDA's
nats-jetstream scaler does (including the silent fallback to the stream's last sequence, which it must report) and
the value of a metrics-api trigger as that scaler does, and scales as KEDA and the HPA would, on a fake clock."""

from __future__ import annotations

import urllib.error
from typing import Any

import pytest

from tests.deploy import keda
from tests.test_manifests import mc

TRIGGER = keda.Trigger("lane-high", "nats.hades.svc:8222", "$G", "HADES_JOBS", "dispatch-high", 4, 0)
JOBS = keda.MetricsApiTrigger("jobs", "http://hades-logs.hades.svc:8081/scaling", "jobs", 4, 0)


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


def test_a_metrics_api_value_is_the_number_at_value_location() -> None:
    assert keda.metrics_api_value({"jobs": 9, "queued": 2, "running": 3}, JOBS) == 9.0
    assert keda.metrics_api_value({"jobs": "12"}, JOBS) == 12.0  # a string holding a quantity
    nested = keda.MetricsApiTrigger("t", "http://x/", "a.1.b", 4, 0)
    assert keda.metrics_api_value({"a": [{"b": 1}, {"b": 2.5}]}, nested) == 2.5
    for body in ({"queued": 3}, {"jobs": None}, {"jobs": True}, {"jobs": "many"}, [9]):
        with pytest.raises(keda.MetricNotFound, match="valueLocation 'jobs'"):
            keda.metrics_api_value(body, JOBS)
    assert JOBS.endpoint() == "hades-logs.hades.svc:8081"
    assert JOBS.resolved_url("10.96.0.7:8081") == "http://10.96.0.7:8081/scaling"


def test_a_trigger_the_emulator_would_read_differently_from_keda_is_refused() -> None:
    base: dict[str, Any] = {"type": "metrics-api", "name": "x", "metadata": {"url": "http://a/", "valueLocation": "v"}}
    with pytest.raises(KeyError):
        keda.trigger_of(base)  # KEDA: "no targetValue given in metadata"
    with_target: dict[str, Any] = {**base, "metadata": {**base["metadata"], "targetValue": "4"}}
    assert keda.trigger_of(with_target) == keda.MetricsApiTrigger("x", "http://a/", "v", 4.0, 0.0)
    with pytest.raises(ValueError, match="json"):
        keda.trigger_of({**with_target, "metadata": {**with_target["metadata"], "format": "prometheus"}})
    with pytest.raises(ValueError, match="AverageValue"):
        keda.trigger_of({**with_target, "metricType": "Value"})


class Fake:
    """A clock, NATS monitoring and /scaling answers and a Deployment's replicas, all under the test's control."""

    def __init__(self, replicas: int) -> None:
        self.now = 0.0
        self.replicas = replicas
        self.answer = jsz({"dispatch-high": (0, 0), "dispatch-normal": (0, 0), "dispatch-low": (0, 0)})
        self.jobs: int | None = 0
        """What /scaling answers as `jobs`; None: it answers 503 (NATS is away)."""
        self.urls: set[str] = set()

    def fetch(self, url: str) -> dict[str, Any]:
        self.urls.add(url)
        if not url.endswith("/scaling"):
            return self.answer
        if self.jobs is None:
            raise urllib.error.HTTPError(url, 503, "Service Unavailable", {}, None)  # type: ignore[arg-type]
        return {"jobs": self.jobs, "queued": 0, "running": 0}

    def emulator(self, targets: list[keda.ScaledTarget]) -> keda.Emulator:
        def set_replicas(namespace: str, name: str, n: int) -> None:
            self.replicas = n

        return keda.Emulator(
            targets,
            resolve=lambda endpoint: endpoint,
            get_replicas=lambda namespace, name: self.replicas,
            set_replicas=set_replicas,
            clock=lambda: self.now,
            fetch=self.fetch,
        )

    def run(self, emulator: keda.Emulator, seconds: float) -> int:
        """Step for ``seconds``; the polls that failed (as the deploy test's loop, the next one tries again)."""
        failed = 0
        end = self.now + seconds
        while self.now < end:
            try:
                emulator.step()
            except urllib.error.HTTPError:
                failed += 1
            self.now += 1
        return failed


@pytest.fixture(scope="module")
def test_overlay() -> list[keda.ScaledTarget]:
    objects = mc.render(mc.kubectl_binary(), mc.Target("deploy-test", mc.ROOT / "tests" / "deploy" / "overlay"))
    return keda.scaled_targets(objects)


def test_the_rendered_scaled_objects_are_read_with_their_triggers(test_overlay: list[keda.ScaledTarget]) -> None:
    by_name = {t.name: t for t in test_overlay}
    assert set(by_name) == {"hades-dispatch", "hades-logs"}  # submit scales on cpu: not emulated
    dispatch = by_name["hades-dispatch"]
    assert (dispatch.min_replicas, dispatch.max_replicas, dispatch.cooldown_s) == (0, 4, 20)
    assert dispatch.triggers == (JOBS,)  # every tenant's jobs, not a lane consumer's
    assert [t.consumer for t in by_name["hades-logs"].triggers if isinstance(t, keda.Trigger)] == ["collect-logs"]


def test_zero_to_a_burst_and_back_to_zero(test_overlay: list[keda.ScaledTarget]) -> None:
    dispatch = [t for t in test_overlay if t.name == "hades-dispatch"]
    fake = Fake(replicas=1)
    emulator = fake.emulator(dispatch)
    fake.run(emulator, 1)
    assert fake.replicas == 0, "inactive on creation: straight to minReplicaCount"
    assert fake.urls == {JOBS.url}
    fake.jobs = 40
    fake.run(emulator, 6)
    assert fake.replicas == 1, "activated from zero within one polling interval"
    fake.run(emulator, 40)
    assert fake.replicas == 4, "the HPA scaled out to ceil(40 / 4) = 10, clamped to maxReplicaCount"
    fake.jobs = 0
    fake.run(emulator, 14)  # the last active poll was 2 s before the jobs went: 16 s idle so far
    assert fake.replicas == 1, "the HPA scaled in to one; not to zero before the 20 s cooldown"
    fake.run(emulator, 30)
    assert fake.replicas == 0
    assert [(h[2], h[3]) for h in emulator.history] == [(1, 0), (0, 1), (1, 4), (4, 1), (1, 0)]
    assert emulator.mismatches == []


def test_the_hpa_follows_the_jobs_within_its_tolerance(test_overlay: list[keda.ScaledTarget]) -> None:
    dispatch = [t for t in test_overlay if t.name == "hades-dispatch"]
    fake = Fake(replicas=0)
    emulator = fake.emulator(dispatch)
    fake.jobs = 1
    fake.run(emulator, 20)
    assert fake.replicas == 1, "one job: one dispatcher"
    fake.jobs = 9
    fake.run(emulator, 20)
    assert fake.replicas == 3, "ceil(9 / 4)"
    fake.jobs = 13  # 13 / 12 is within the 10 % tolerance
    fake.run(emulator, 30)
    assert fake.replicas == 3


def test_a_failing_scaling_route_changes_nothing(test_overlay: list[keda.ScaledTarget]) -> None:
    """As KEDA without a fallback: neither activation nor scale-in on an error; the next poll tries again."""
    dispatch = [t for t in test_overlay if t.name == "hades-dispatch"]
    fake = Fake(replicas=0)
    emulator = fake.emulator(dispatch)
    fake.jobs = 8
    fake.run(emulator, 20)
    assert fake.replicas == 2
    fake.jobs = None
    assert fake.run(emulator, 60) == 12, "every 5 s poll failed"
    assert fake.replicas == 2, "kept, well past the cooldown"
    fake.jobs = 0
    fake.run(emulator, 60)
    assert fake.replicas == 0


def test_a_consumer_keda_cannot_find_is_reported(test_overlay: list[keda.ScaledTarget]) -> None:
    logs = [t for t in test_overlay if t.name == "hades-logs"]
    fake = Fake(replicas=1)
    fake.answer = jsz({"collect_logs": (0, 0)}, last_seq=7000, stream="HADES_EVENTS")  # a misspelt consumer
    emulator = fake.emulator(logs)
    fake.run(emulator, 16)
    assert fake.replicas == 4, "KEDA scales logs on the stream's last sequence (7000 / 1000), clamped to 4"
    assert "'collect-logs' not in stream HADES_EVENTS" in emulator.mismatches[0]


def test_the_test_overlay_is_the_dev_overlay_but_for_dispatch_scaling() -> None:
    kubectl = mc.kubectl_binary()
    dev = mc.render(kubectl, mc.Target("overlays/dev", mc.OVERLAYS / "dev"))
    test = mc.render(kubectl, mc.Target("deploy-test", mc.ROOT / "tests" / "deploy" / "overlay"))
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    changed = [key(a) for a, b in zip(sorted(dev, key=key), sorted(test, key=key), strict=True) if a != b]
    assert changed == [("ScaledObject", "hades-dispatch")]
