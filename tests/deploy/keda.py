"""What KEDA would do with the rendered ScaledObjects, for a cluster without KEDA (none can be installed here).

The reference is KEDA's ``pkg/scalers/nats_jetstream_scaler.go``, ``pkg/scalers/metrics_api_scaler.go`` and the
HPA's algorithm:

- **The metric** of a ``nats-jetstream`` trigger: KEDA GETs
  ``http://<natsServerMonitoringEndpoint>/jsz?acc=<account>&consumers=true&config=true``, finds the account by
  ``name``, the stream by ``name``, and in ``consumer_detail`` the consumer by ``name``; the lag is
  ``num_pending + num_ack_pending``. When the consumer is not there, ``getMaxMsgLag`` silently returns the
  stream's ``state.last_seq`` instead: a name that does not match scales on the stream's size forever. This
  emulator computes the same number and records the fallback as a mismatch, which the test fails on. No stream:
  an error (KEDA: "stream not found").
- **The metric** of a ``metrics-api`` trigger (``format`` json, the default): KEDA GETs ``url`` and reads the value
  at ``valueLocation`` (a GJSON path; here dot-separated keys and list indices): a number, or a string holding a
  Quantity (here a plain number); anything else, or a status other than 200, is an error.
- **Errors**: a poll that fails changes nothing (KEDA neither activates nor scales to zero on an error, and the HPA
  keeps its replicas while the metric cannot be read; ``fallback`` is not emulated); the next poll tries again.
- **Activity**: a trigger is active when its value is above ``activationLagThreshold`` (nats-jetstream) or
  ``activationTargetValue`` (metrics-api); KEDA scales 0 → ``max(min, 1)`` when any trigger is active, and back
  to ``minReplicaCount`` (0) once none has been for ``cooldownPeriod`` (at once when none ever was, as on a
  ScaledObject's creation).
- **The HPA** in between (every ``SYNC_PERIOD_S``): each trigger is an External metric with an ``AverageValue``
  target of ``lagThreshold`` (``targetValue``), so its proposal is ``ceil(value / target)`` unless the ratio to
  the current replicas is within the 10 % tolerance; the largest proposal wins, clamped to
  ``[max(min, 1), max]``. Scale-up follows the default behaviour (no window; at most +100 % or +4 pods per
  15 s), scale-down the ScaledObject's ``advanced.horizontalPodAutoscalerConfig.behavior.scaleDown`` (default:
  a 300 s window, -100 % per 15 s): the highest recommendation of the window, then the policies' largest
  allowed step.

Only ``nats-jetstream`` and ``metrics-api`` triggers are emulated: a ScaledObject with another type (submit's
``cpu``) is left alone.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
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


class MetricNotFound(Exception):
    """A metrics-api answer without a number at ``valueLocation`` (KEDA: an error, no scaling on it)."""


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:  # raises HTTPError on 4xx and 5xx
        if response.status != 200:
            raise ValueError(f"{url}: api returned {response.status}")
        data: dict[str, Any] = json.loads(response.read())
        return data


@dataclass(frozen=True)
class Trigger:
    """A ``nats-jetstream`` trigger."""

    name: str
    endpoint: str
    account: str
    stream: str
    consumer: str
    lag_threshold: int
    activation_threshold: int

    def url(self, endpoint: str | None = None) -> str:
        return f"http://{endpoint or self.endpoint}/jsz?acc={self.account}&consumers=true&config=true"

    @property
    def target(self) -> float:
        return self.lag_threshold

    @property
    def activation(self) -> float:
        return self.activation_threshold


@dataclass(frozen=True)
class MetricsApiTrigger:
    """A ``metrics-api`` trigger (JSON)."""

    name: str
    url: str
    value_location: str
    target_value: float
    activation_target_value: float

    def endpoint(self) -> str:
        """The ``host:port`` of its URL, for ``Emulator.resolve``."""
        return urllib.parse.urlsplit(self.url).netloc

    def resolved_url(self, endpoint: str) -> str:
        return urllib.parse.urlsplit(self.url)._replace(netloc=endpoint).geturl()

    @property
    def target(self) -> float:
        return self.target_value

    @property
    def activation(self) -> float:
        return self.activation_target_value


AnyTrigger = Trigger | MetricsApiTrigger
EMULATED = {"nats-jetstream", "metrics-api"}


def trigger_of(spec: dict[str, Any]) -> AnyTrigger:
    """One trigger of a ScaledObject with KEDA's defaults; raises on what KEDA refuses or this does not emulate."""
    metadata = spec["metadata"]
    if spec.get("metricType", "AverageValue") != "AverageValue":
        raise ValueError(f"{spec.get('name')}: only AverageValue targets are emulated")
    if spec["type"] == "metrics-api":
        if metadata.get("format", "json") != "json":
            raise ValueError(f"{spec.get('name')}: only the json format is emulated")
        return MetricsApiTrigger(
            name=spec.get("name", ""),
            url=metadata["url"],
            value_location=metadata["valueLocation"],
            target_value=float(metadata["targetValue"]),
            activation_target_value=float(metadata.get("activationTargetValue", "0")),
        )
    return Trigger(
        name=spec.get("name", ""),
        endpoint=metadata["natsServerMonitoringEndpoint"],
        account=metadata["account"],
        stream=metadata["stream"],
        consumer=metadata["consumer"],
        lag_threshold=int(metadata.get("lagThreshold", "10")),
        activation_threshold=int(metadata.get("activationLagThreshold", "0")),
    )


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
    triggers: tuple[AnyTrigger, ...]
    scale_down: dict[str, Any]


def scaled_targets(objects: Iterable[dict[str, Any]]) -> list[ScaledTarget]:
    """The ScaledObjects of a rendering whose triggers are all emulated (``EMULATED``), with KEDA's defaults."""
    targets = []
    for obj in objects:
        if obj.get("kind") != "ScaledObject":
            continue
        spec = obj["spec"]
        if any(t["type"] not in EMULATED for t in spec["triggers"]):
            continue
        triggers = tuple(trigger_of(t) for t in spec["triggers"])
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


def metrics_api_value(body: Any, trigger: MetricsApiTrigger) -> float:
    """The number at ``valueLocation`` of a JSON answer, as ``GetValueFromResponse`` reads it."""
    node = body
    for key in trigger.value_location.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            node = None
            break
    if isinstance(node, str):
        try:
            return float(node)
        except ValueError:
            pass
    elif isinstance(node, int | float) and not isinstance(node, bool):
        return float(node)
    raise MetricNotFound(
        f"{trigger.name}: valueLocation {trigger.value_location!r} must point to a number or a string"
        f" representing a Quantity, got {node!r}"
    )


def hpa_proposal(values: Iterable[tuple[float, float]], current: int) -> int:
    """The HPA's desired replicas for External AverageValue metrics, (value, target) each: the largest."""
    proposals = []
    for value, target in values:
        if current > 0 and abs(value / (target * current) - 1.0) <= TOLERANCE:
            proposals.append(current)
        else:
            proposals.append(math.ceil(value / target))
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
    values: dict[str, float] = field(default_factory=dict)
    recommendations: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class Emulator:
    """Polls, decides and scales, one ``step()`` at a time (the test calls it in a loop or a thread).

    ``resolve`` maps an in-cluster ``host:port`` (NATS's monitoring endpoint ``nats.hades.svc:8222``, a metrics-api
    URL's ``hades-logs.hades.svc:8081``) to one this process can reach (the Service's ClusterIP);
    ``get_replicas``/``set_replicas`` read and write a Deployment's ``spec.replicas``.
    """

    targets: list[ScaledTarget]
    resolve: Callable[[str], str]
    get_replicas: Callable[[str, str], int]
    set_replicas: Callable[[str, str, int], None]
    clock: Callable[[], float] = time.monotonic
    fetch: Callable[[str], dict[str, Any]] = get_json
    """GET a URL's JSON; raises on a status other than 200 (``urllib``: ``HTTPError``), as KEDA errs."""
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
            value = self._value(target, trigger, cache)
            state.values[trigger.name] = value
            active = active or value > trigger.activation
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

    def _value(self, target: ScaledTarget, trigger: AnyTrigger, cache: dict[str, dict[str, Any]]) -> float:
        if isinstance(trigger, MetricsApiTrigger):
            return metrics_api_value(self.fetch(trigger.resolved_url(self.resolve(trigger.endpoint()))), trigger)
        url = trigger.url(self.resolve(trigger.endpoint))
        jsz = cache.get(url) or cache.setdefault(url, self.fetch(url))
        lag, found = keda_lag(jsz, trigger)
        if not found:
            self.mismatches.append(
                f"{target.name}/{trigger.name}: consumer {trigger.consumer!r} not in stream {trigger.stream}: "
                f"KEDA scales on the stream's last sequence ({lag}) instead"
            )
        return lag

    def _hpa(self, state: TargetState, current: int, now: float) -> None:
        target = state.target
        floor = max(target.min_replicas, 1)
        desired = hpa_proposal(((state.values[t.name], t.target) for t in target.triggers), current)
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
