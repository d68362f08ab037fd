"""The fair-share rule (runtime/fairshare.py) dispatch is to apply, checked on a simulated cluster: the issue's
"Done when" numbers hold for the rule itself, and the place it predicts for a queued job is the place it gets."""

from __future__ import annotations

import heapq

from runtime import fairshare
from runtime.settings import Settings


def simulate(
    waiting: dict[str, int], *, slots: int, first: str, weights: dict[str, int], caps: dict[str, int]
) -> tuple[list[str], int]:
    """Jobs of 1 time unit each on ``slots`` slots; ``first`` starts alone until it fills what it may, then the
    others arrive. Returns the start order and the most jobs any capped tenant had running."""
    loads = dict.fromkeys(waiting, 0)
    left = {first: waiting[first], **dict.fromkeys((t for t in waiting if t != first), 0)}
    arriving = {t: n for t, n in waiting.items() if t != first}
    ends: list[tuple[float, int, str]] = []
    served = dict.fromkeys(waiting, 0.0)
    order: list[str] = []
    most_capped = 0
    now, n = 0.0, 0
    while True:
        while len(ends) < slots:
            current = {t: fairshare.Load(left[t], loads[t], served[t]) for t in waiting}
            chosen = fairshare.pick(current, weight=lambda t: weights.get(t, 1), cap=caps.get)
            if chosen is None:
                break
            left[chosen] -= 1
            loads[chosen] += 1
            n += 1
            served[chosen] = n
            order.append(chosen)
            heapq.heappush(ends, (now + 1 + n * 1e-6, n, chosen))
            most_capped = max([most_capped] + [loads[t] for t in caps])
        if arriving:
            left.update(arriving)  # the first tenant took what it could: the other tenants submit now
            arriving = {}
            continue
        if not ends:
            return order, most_capped
        now, _, done = heapq.heappop(ends)
        loads[done] -= 1


def test_b_gets_its_share_soon_after_a_burst_and_its_30th_job_starts_before_as_90th() -> None:
    order, _ = simulate({"a": 300, "b": 30}, slots=8, first="a", weights={}, caps={})
    a_starts = [i for i, t in enumerate(order) if t == "a"]
    b_starts = [i for i, t in enumerate(order) if t == "b"]
    assert len(a_starts) == 300 and len(b_starts) == 30
    assert b_starts[29] < a_starts[89]
    assert b_starts[0] == 8  # the first free slot after b arrives is b's


def test_a_running_cap_holds_and_the_others_use_the_rest() -> None:
    order, most = simulate({"a": 300, "b": 30}, slots=8, first="a", weights={}, caps={"a": 2})
    assert most <= 2
    b_starts = [i for i, t in enumerate(order) if t == "b"]
    assert b_starts[:6] == list(range(2, 8))  # b fills the 6 slots a may not use at once


def test_weights_share_the_starts_in_proportion() -> None:
    order, _ = simulate({"a": 400, "b": 400}, slots=9, first="a", weights={"a": 2, "b": 1}, caps={})
    window = order[100:400]  # while both wait, past the start
    assert abs(window.count("a") / window.count("b") - 2) < 0.1


def test_no_tenant_when_none_waits_or_all_are_capped() -> None:
    idle = {"a": fairshare.Load(0, 5), "b": fairshare.Load(3, 2)}
    assert fairshare.pick(idle, weight=lambda t: 1, cap={"b": 2}.get) is None
    assert fairshare.pick(idle, weight=lambda t: 1, cap=lambda t: None) == "b"


def test_ahead_places_other_tenants_by_weight_with_ties_to_the_first_name() -> None:
    waiting = {"a": 300, "b": 30, "c": 1}
    weights = {"a": 1, "b": 2, "c": 1}
    # b's 10th waiting job (k = 9): a job j of a goes first while (2j+1)*2 < 19*1, of c while (2j+1)*2 <= 19*1.
    assert fairshare.ahead("b", 9, waiting, weight=weights.__getitem__) == {"b": 9, "a": 5, "c": 1}
    # a's 4th (k = 3): b's j while (2j+1)*1 < 7*2 (7 of them), c's while (2j+1) < 7 (3, but c has 1).
    assert fairshare.ahead("a", 3, waiting, weight=weights.__getitem__) == {"a": 3, "b": 7, "c": 1}


def test_weights_and_caps_are_settings() -> None:
    settings = Settings.from_env({"HADES_TENANT_WEIGHTS": "cs101=3,*=2", "HADES_TENANT_MAX_RUNNING": "cs102=4"})
    tenants = settings.tenants
    assert (tenants.weight("cs101"), tenants.weight("x"), Settings().tenants.weight("x")) == (3, 2, 1)
    assert (tenants.running_limit("cs102"), tenants.running_limit("x")) == (4, None)
    assert {"cs101", "cs102"} <= tenants.known()
