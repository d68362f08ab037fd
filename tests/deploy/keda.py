"""What KEDA would do with the rendered ScaledObjects, for a cluster without KEDA (none can be installed here).

The reference is KEDA's ``pkg/scalers/nats_jetstream_scaler.go`` and the HPA's algorithm:

- **The metric** of a ``nats-jetstream`` trigger: KEDA GETs
  ``http://<natsServerMonitoringEndpoint>/jsz?acc=<account>&consumers=true&config=true``, finds the account by
  ``name``, the stream by ``name``, and in ``consumer_detail`` the consumer by ``name``; the lag is
  ``num_pending + num_ack_pending``. When the consumer is not there, ``getMaxMsgLag`` silently returns the
  stream's ``state.last_seq`` instead: a name that does not match scales on the stream's size forever. This
  emulator computes the same number and records the fallback as a mismatch, which the test fails on. No stream:
  an error (KEDA: "stream not found").
- **Activity**: a trigger is active when ``lag > activationLagThreshold``; KEDA scales 0 → ``max(min, 1)`` when any
  trigger is active, and back to ``minReplicaCount`` (0) once none has been for ``cooldownPeriod`` (at once when
  none ever was, as on a ScaledObject's creation).
- **The HPA** in between (every ``SYNC_PERIOD_S``): each trigger is an External metric with an ``AverageValue``
  target of ``lagThreshold``, so its proposal is ``ceil(lag / lagThreshold)`` unless the ratio to the current
  replicas is within the 10 % tolerance; the largest proposal wins, clamped to ``[max(min, 1), max]``. Scale-up
  follows the default behaviour (no window; at most +100 % or +4 pods per 15 s), scale-down the ScaledObject's
  ``advanced.horizontalPodAutoscalerConfig.behavior.scaleDown`` (default: a 300 s window, -100 % per 15 s): the
  highest recommendation of the window, then the policies' largest allowed step.

Only ``nats-jetstream`` triggers are emulated: a ScaledObject with another type (submit's ``cpu``) is left alone.
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

SYNC_PERIOD_S = 15.0
"""kube-controller-manager's --horizontal-pod-autoscaler-sync-period default."""
TOLERANCE = 0.1
"""--horizontal-pod-autoscaler-tolerance default."""
DEFAULT_SCALE_DOWN: dict[str, Any] = {
    "stabilizationWindowSeconds": 300,
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}
DEFAULT_SCALE_UP_POLICIES = [
    {"type": "Percent", "value": 100, "periodSeconds": 15},
    {"type": "Pods", "value": 4, "periodSeconds": 15},
]


class StreamNotFound(Exception):
    pass


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


@dataclass(frozen=True)
class Trigger:
    name: str
    endpoint: str
    account: str
    stream: str
    consumer: str
    lag_threshold: int
    activation_threshold: int

    def url(self, endpoint: str | None = None) -> str:
        return f"http://{endpoint or self.endpoint}/jsz?acc={self.account}&consumers=true&config=true"


@dataclass(frozen=True)
class ScaledTarget:
    """One ScaledObject as KEDA reads it (its defaults filled in)."""

    name: str
    namespace: str
    deployment: str
    min_replicas: int
    max_replicas: int
    polling_interval_s: float
    cooldown_s: float
    triggers: tuple[Trigger, ...]
    scale_down: dict[str, Any]


def scaled_targets(objects: Iterable[dict[str, Any]]) -> list[ScaledTarget]:
    """The ScaledObjects of a rendering whose triggers are all ``nats-jetstream``, with KEDA's defaults."""
    targets = []
    for obj in objects:
        if obj.get("kind") != "ScaledObject":
            continue
        spec = obj["spec"]
        if any(t["type"] != "nats-jetstream" for t in spec["triggers"]):
            continue
        triggers = tuple(
            Trigger(
                name=t.get("name", ""),
                endpoint=t["metadata"]["natsServerMonitoringEndpoint"],
                account=t["metadata"]["account"],
                stream=t["metadata"]["stream"],
                consumer=t["metadata"]["consumer"],
                lag_threshold=int(t["metadata"].get("lagThreshold", "10")),
                activation_threshold=int(t["metadata"].get("activationLagThreshold", "0")),
            )
            for t in spec["triggers"]
        )
        behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
        targets.append(
            ScaledTarget(
                name=obj["metadata"]["name"],
                namespace=obj["metadata"]["namespace"],
                deployment=spec["scaleTargetRef"]["name"],
                min_replicas=int(spec.get("minReplicaCount", 0)),
                max_replicas=int(spec.get("maxReplicaCount", 100)),
                polling_interval_s=float(spec.get("pollingInterval", 30)),
                cooldown_s=float(spec.get("cooldownPeriod", 300)),
                triggers=triggers,
                scale_down={**DEFAULT_SCALE_DOWN, **behavior.get("scaleDown", {})},
            )
        )
    return targets


def keda_lag(jsz: dict[str, Any], trigger: Trigger) -> tuple[int, bool]:
    """(lag, consumer found) exactly as ``getMaxMsgLag``: without the consumer, the stream's last sequence."""
    for account in jsz.get("account_details") or []:
        if account.get("name") != trigger.account:
            continue
        for stream in account.get("stream_detail") or []:
            if stream.get("name") != trigger.stream:
                continue
            for consumer in stream.get("consumer_detail") or []:
                if consumer.get("name") == trigger.consumer:
                    return int(consumer.get("num_pending", 0)) + int(consumer.get("num_ack_pending", 0)), True
            return int(stream.get("state", {}).get("last_seq", 0)), False
    raise StreamNotFound(f"{trigger.name}: stream {trigger.stream} not found in account {trigger.account}")


def hpa_proposal(lags: Iterable[tuple[int, int]], current: int) -> int:
    """The HPA's desired replicas for External AverageValue metrics, (lag, lagThreshold) each: the largest."""
    proposals = []
    for lag, threshold in lags:
        if current > 0 and abs(lag / (threshold * current) - 1.0) <= TOLERANCE:
            proposals.append(current)
        else:
            proposals.append(math.ceil(lag / threshold))
    return max(proposals, default=current)


def _policy_limit(policies: list[dict[str, Any]], current: int, up: bool, select: str = "Max") -> int:
    limits = []
    for policy in policies:
        step = policy["value"] if policy["type"] == "Pods" else math.ceil(current * policy["value"] / 100)
        limits.append(current + step if up else current - step)
    if not limits:
        return current
    return max(limits) if (select == "Max") == up else min(limits)


@dataclass
class TargetState:
    target: ScaledTarget
    last_active: float | None = None
    next_poll: float = 0.0
    next_sync: float = 0.0
    lags: dict[str, int] = field(default_factory=dict)
    recommendations: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class Emulator:
    """Polls, decides and scales, one ``step()`` at a time (the test calls it in a loop or a thread).

    ``resolve`` maps a monitoring endpoint (``nats.hades.svc:8222``) to one this process can reach (the Service's
    ClusterIP); ``get_replicas``/``set_replicas`` read and write a Deployment's ``spec.replicas``.
    """

    targets: list[ScaledTarget]
    resolve: Callable[[str], str]
    get_replicas: Callable[[str, str], int]
    set_replicas: Callable[[str, str, int], None]
    clock: Callable[[], float] = time.monotonic
    fetch: Callable[[str], dict[str, Any]] = get_json
    mismatches: list[str] = field(default_factory=list)
    history: list[tuple[float, str, int, int]] = field(default_factory=list)
    """(time, deployment, replicas before, replicas after) of every change."""
    states: dict[str, TargetState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.states = {t.name: TargetState(t) for t in self.targets}

    def step(self) -> None:
        now = self.clock()
        for state in self.states.values():
            if now >= state.next_poll:
                state.next_poll = now + state.target.polling_interval_s
                self._poll(state, now)

    def _poll(self, state: TargetState, now: float) -> None:
        target = state.target
        cache: dict[str, dict[str, Any]] = {}
        active = False
        for trigger in target.triggers:
            url = trigger.url(self.resolve(trigger.endpoint))
            jsz = cache.get(url) or cache.setdefault(url, self.fetch(url))
            lag, found = keda_lag(jsz, trigger)
            if not found:
                self.mismatches.append(
                    f"{target.name}/{trigger.name}: consumer {trigger.consumer!r} not in stream {trigger.stream}: "
                    f"KEDA scales on the stream's last sequence ({lag}) instead"
                )
            state.lags[trigger.name] = lag
            active = active or lag > trigger.activation_threshold
        current = self.get_replicas(target.namespace, target.deployment)
        if active:
            state.last_active = now
        if current == 0:
            if active:
                self._scale(target, current, max(target.min_replicas, 1), now)
                state.next_sync = now + SYNC_PERIOD_S
            return
        cooled = state.last_active is None or now - state.last_active >= target.cooldown_s
        if not active and target.min_replicas == 0 and cooled:
            self._scale(target, current, 0, now)
            state.recommendations.clear()
            return
        if now >= state.next_sync:
            state.next_sync = now + SYNC_PERIOD_S
            self._hpa(state, current, now)

    def _hpa(self, state: TargetState, current: int, now: float) -> None:
        target = state.target
        floor = max(target.min_replicas, 1)
        desired = hpa_proposal(((state.lags[t.name], t.lag_threshold) for t in target.triggers), current)
        desired = min(max(desired, floor), target.max_replicas)
        window = float(target.scale_down.get("stabilizationWindowSeconds", 300))
        state.recommendations = [(t, r) for t, r in state.recommendations if now - t < window]
        state.recommendations.append((now, desired))
        if desired > current:
            limit = _policy_limit(DEFAULT_SCALE_UP_POLICIES, current, up=True)
            new = min(desired, limit)
        else:
            stabilized = max(r for _, r in state.recommendations)
            select = target.scale_down.get("selectPolicy", "Max")
            limit = _policy_limit(target.scale_down.get("policies", []), current, up=False, select=select)
            new = max(min(stabilized, current), limit)
        new = min(max(new, floor), target.max_replicas)
        if new != current:
            self._scale(target, current, new, now)

    def _scale(self, target: ScaledTarget, current: int, new: int, now: float) -> None:
        self.set_replicas(target.namespace, target.deployment, new)
        self.history.append((now, target.deployment, current, new))
