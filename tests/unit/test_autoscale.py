"""The autoscale policy and meter: bounds, scale-up, the knee, cooldowns, no flapping. No servers."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from swarmrun.execution.autoscale import (
    Measurement,
    Meter,
    Observation,
    Policy,
    decide,
    knee,
    useful_replicas,
)

POLICY = Policy(min_replicas=1, max_replicas=32, up_cooldown=15, down_cooldown=60)


def obs(
    replicas: int = 1,
    *,
    busy: int | None = None,
    queued: int = 1,
    pending: int = 100_000,
    spp: float | None = 0.1,
    since: float = 100.0,
    idle: float = 0.0,
    measured: tuple[Measurement, ...] = (),
) -> Observation:
    """A saturated queue by default: every replica busy, a chunk waiting, lots of points left."""
    return Observation(
        replicas=replicas,
        busy=replicas if busy is None else busy,
        queued=queued,
        pending=pending,
        seconds_per_point=spp,
        since_change=since,
        idle_for=idle,
        measurements=measured,
    )


def m(*pairs: tuple[int, float]) -> tuple[Measurement, ...]:
    return tuple(Measurement(n, rate) for n, rate in pairs)


# --- bounds -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_replicas": 3, "max_replicas": 2}, "at least the minimum"),
        ({"min_replicas": 0, "max_replicas": 0}, "at least 1"),
        ({"min_replicas": -1}, "0 or more"),
        ({"step": 1.0}, "greater than 1"),
        ({"up_cooldown": -1}, "negative"),
        ({"flat_gain": 0.6, "knee_gain": 0.5}, "flat_gain <= knee_gain"),
    ],
)
def test_policy_refuses_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_outside_the_bounds_goes_back_inside_first() -> None:
    policy = Policy(min_replicas=2, max_replicas=4)
    assert decide(obs(1), policy).replicas == 2
    assert decide(obs(7, queued=0, pending=0, busy=7), policy).replicas == 4
    assert "maximum" in decide(obs(7), policy).reason


def test_scale_up_never_passes_the_maximum() -> None:
    policy = replace(POLICY, max_replicas=6)
    assert decide(obs(4, measured=m((2, 20), (4, 40))), policy).replicas == 6
    held = decide(obs(6, measured=m((4, 40), (6, 60))), policy)
    assert held.replicas == 6 and "maximum" in held.reason


def test_drain_never_goes_below_the_minimum() -> None:
    policy = replace(POLICY, min_replicas=3)
    assert decide(obs(8, busy=0, queued=0, pending=0, idle=600), policy).replicas == 3


# --- scaling up ---------------------------------------------------------------------------------------
def test_scales_up_when_every_replica_is_busy_and_chunks_wait() -> None:
    d = decide(obs(1), POLICY)
    assert d.replicas == 2 and "all 1 replicas busy" in d.reason
    assert decide(obs(3, measured=m((3, 30))), POLICY).replicas == 6  # one step: x2


def test_no_scale_up_with_idle_replicas_or_nothing_queued() -> None:
    assert decide(obs(4, busy=3), POLICY).replicas == 4
    assert decide(obs(4, queued=0), POLICY).replicas == 4


def test_each_step_up_waits_for_its_measurement() -> None:
    assert decide(obs(1), POLICY).replicas == 2  # the first step from the minimum needs none
    for measured in (m((1, 10)), ()):
        waiting = decide(obs(2, measured=measured), POLICY)
        assert waiting.replicas == 2 and "measuring" in waiting.reason
    assert decide(obs(2, measured=m((1, 10), (2, 19.6))), POLICY).replicas == 4
    # points too long to measure in a window: step anyway, but only after `unmeasured_after`
    assert decide(obs(2, since=POLICY.unmeasured_after, measured=m((1, 10))), POLICY).replicas == 4


def test_work_left_caps_the_replicas() -> None:
    # 20 points of 1 s: 20 s of work, less than the 30 s a replica is worth starting for
    few = decide(obs(1, pending=20, spp=1.0), POLICY)
    assert few.replicas == 1 and "keep only 1 replicas busy" in few.reason
    # 600 points of 1 s: 20 replicas' worth; a step from 16 stops at 20, not 32
    assert useful_replicas(obs(16, pending=600, spp=1.0), POLICY) == 20
    assert decide(obs(16, pending=600, spp=1.0, measured=m((8, 8), (16, 16))), POLICY).replicas == 20
    # cost per point unknown: at most one replica per point
    assert decide(obs(2, pending=3, spp=None, measured=m((2, 1))), POLICY).replicas == 3


# --- the knee -----------------------------------------------------------------------------------------
def test_knee_none_while_throughput_rises_linearly() -> None:
    assert knee(m((1, 10), (2, 20), (4, 39), (8, 77)), POLICY) is None
    assert knee(m((4, 40)), POLICY) is None


def test_a_step_that_gained_nothing_is_undone() -> None:
    measured = m((1, 10), (2, 20), (4, 40), (8, 40.5))
    assert knee(measured, POLICY) == (4, pytest.approx(knee(measured, POLICY)[1]))  # type: ignore[index]
    undo = decide(obs(8, since=20, measured=measured), POLICY)
    assert undo.replicas == 4 and "no gain" in undo.reason
    # within the cooldown the measurement is not trusted to act on yet
    assert decide(obs(8, since=5, measured=measured), POLICY).replicas == 8
    # back at 4, with every replica busy and work waiting, it stays: the knee is remembered
    stay = decide(obs(4, since=500, measured=measured), POLICY)
    assert stay.replicas == 4 and "no gain" in stay.reason


def test_a_slow_rise_stops_at_the_count_that_gives_it() -> None:
    # 4 -> 8 replicas only raised 40 -> 50 points/s: 5 replicas at 10/s each give the same
    measured = m((2, 20), (4, 40), (8, 50))
    found = knee(measured, POLICY)
    assert found is not None and found[0] == 5 and "past the knee" in found[1]
    assert decide(obs(8, since=20, measured=measured), POLICY).replicas == 5
    assert decide(obs(5, since=500, measured=measured), POLICY).replicas == 5


def test_knee_uses_the_newest_measurement_of_each_count() -> None:
    assert knee(m((2, 20), (4, 21), (4, 40)), POLICY) is None


# --- scaling down ---------------------------------------------------------------------------------------
def test_drain_waits_for_the_down_cooldown() -> None:
    drained = obs(8, busy=0, queued=0, pending=0)
    assert decide(replace(drained, idle_for=59), POLICY).replicas == 8
    down = decide(replace(drained, idle_for=61), POLICY)
    assert down.replicas == 1 and "backlog drained" in down.reason


def test_drain_keeps_a_replica_for_each_running_chunk() -> None:
    tail = obs(16, busy=5, queued=0, pending=40, spp=0.1, idle=120)
    assert decide(tail, POLICY).replicas == 5


def test_no_drain_while_chunks_are_queued() -> None:
    assert decide(obs(8, busy=2, queued=3, idle=600), POLICY).replicas == 8


def test_new_work_after_a_drain_scales_up_at_once() -> None:
    assert decide(obs(1, since=600, measured=m((8, 80))), POLICY).replicas == 2


# --- the meter --------------------------------------------------------------------------------------------
def test_meter_measures_only_a_settled_busy_window() -> None:
    meter = Meter(settle=5, window=10, min_points=5)
    for t in range(0, 30):
        meter.add(
            float(t),
            executions=20 * t,
            desired=4,
            running=4 if t >= 3 else 2,
            busy=4,
            queued=1,
            since_change=float(t),
        )
        if t < 15:  # settled from t=5 (and running from t=3): the first window closes at t=15
            assert meter.measurements(float(t)) == ()
    (only,) = meter.measurements(30.0)
    assert only.replicas == 4 and only.rate == pytest.approx(20.0)


def test_meter_window_closes_on_idle_replicas_and_forgets_old_measurements() -> None:
    meter = Meter(settle=0, window=5, min_points=1, memory=100)
    for t in range(0, 6):
        meter.add(
            float(t),
            executions=10 * t,
            desired=2,
            running=2,
            busy=2 if t != 3 else 1,
            queued=1,
            since_change=100.0,
        )
    assert meter.measurements(6.0) == ()  # the idle moment at t=3 restarted the window
    for t in range(6, 12):
        meter.add(float(t), executions=10 * t, desired=2, running=2, busy=2, queued=1, since_change=100.0)
    assert [x.replicas for x in meter.measurements(12.0)] == [2]
    assert meter.measurements(200.0) == ()
    meter.add(1.0, 0, desired=2, running=2, busy=2, queued=1, since_change=100.0)
    meter.reset()
    assert meter.measurements(1.0) == ()


# --- closed loop: no flapping ---------------------------------------------------------------------------
def simulate(
    capacity: float,
    noise: float,
    seconds: int,
    seed: int,
    policy: Policy = POLICY,
    pending: int = 10**9,
    memory: float = 3600,
) -> list[int]:
    """Replicas over time against a cluster whose throughput saturates at `capacity` replicas."""
    rng = random.Random(seed)
    meter = Meter(settle=5, window=10, memory=memory)
    replicas, changed, executions, history = 1, 0.0, 0.0, []
    for t in range(seconds):
        running = replicas if t - changed >= 3 else min(replicas, history[-1] if history else 1)
        rate = 10.0 * min(running, capacity) * (1 + rng.uniform(-noise, noise))
        executions += rate
        meter.add(
            float(t),
            int(executions),
            desired=replicas,
            running=running,
            busy=running,
            queued=1,
            since_change=t - changed,
        )
        if t % 2 == 0:
            d = decide(
                Observation(
                    replicas=replicas,
                    busy=running,
                    queued=1,
                    pending=pending,
                    seconds_per_point=0.1,
                    since_change=t - changed,
                    idle_for=0.0,
                    measurements=meter.measurements(float(t)),
                ),
                policy,
            )
            if d.replicas != replicas:
                replicas, changed = d.replicas, float(t)
        history.append(replicas)
    return history


def reversals(history: list[int]) -> int:
    steps = [b - a for a, b in zip(history, history[1:], strict=False) if b != a]
    return sum(1 for a, b in zip(steps, steps[1:], strict=False) if (a > 0) != (b > 0))


@pytest.mark.parametrize("seed", range(8))
def test_closed_loop_finds_the_knee_without_flapping(seed: int) -> None:
    history = simulate(capacity=5, noise=0.05, seconds=1800, seed=seed)
    changes = sum(1 for a, b in zip(history, history[1:], strict=False) if a != b)
    assert 4 <= history[-1] <= 6, history[-1]
    assert max(history) <= 8  # 1, 2, 4, 8 probed; 16 never tried once 8 did not pay
    assert reversals(history) <= 2 and changes <= 6, (reversals(history), changes)
    assert history[120:] and len(set(history[-900:])) == 1  # settled for the last 15 minutes


def test_forgotten_measurements_re_probe_the_knee_once_per_memory_period() -> None:
    history = simulate(capacity=5, noise=0.05, seconds=3600, seed=3, memory=900)
    off_knee = sum(1 for n in history[120:] if not 4 <= n <= 6)
    assert reversals(history) <= 2 + 2 * 4  # one probe up and back per 15 minutes at most
    assert off_knee < 0.05 * len(history[120:])
    assert 4 <= history[-1] <= 6


def test_closed_loop_scales_all_the_way_while_throughput_keeps_rising() -> None:
    history = simulate(capacity=1000, noise=0.05, seconds=900, seed=1)
    assert history[-1] == 32 and reversals(history) == 0
    assert history.index(32) < 200  # 1 -> 32 in five measured steps
