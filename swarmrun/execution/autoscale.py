"""Autoscaling: a pure policy that picks the worker count, and the loop that applies it to a backend.

The policy (`decide`) is a function from values to values. It sees the queue (queued chunks,
running chunks, points without a result), the replicas, the throughput measured at each replica
count so far, and the time since the last change, and it answers a replica count and why:

- **Up** while every replica is busy and chunks are waiting, one step (x2) at a time, and (after
  the first step from the minimum) only once the current count's throughput has been measured.
- **The knee**: when the last step added less than `knee_gain` of a replica's throughput per added
  replica, no further step is taken; when it added (almost) nothing (< `flat_gain` in total), the
  step is undone. Measurements are remembered, so the knee is not probed again and again.
- **Work cap**: never more replicas than the work left can keep busy for `work_horizon` seconds.
- **Down** once replicas have been idle with nothing queued for `down_cooldown` seconds (the
  backlog drained), to what the running chunks need, never below `min_replicas`.
- Always within `[min_replicas, max_replicas]`. Scale-down stops workers warm: a stopping worker
  finishes its chunk, so no point is lost, even when a knee is undone below the chunks running.

`Meter` turns samples of the executions counter into those measurements (also pure), and
`Autoscaler` is the loop: it reads Redis and the backend, asks `decide`, and scales.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from swarmrun.backends import Backend
from swarmrun.execution.keys import Keys
from swarmrun.execution.queue import SweepQueue


@dataclass(frozen=True)
class Policy:
    """The autoscaler's bounds and tempo (seconds)."""

    min_replicas: int = 1
    max_replicas: int = 8
    up_cooldown: float = 15.0  # after any change, before the next step up
    down_cooldown: float = 60.0  # replicas idle with nothing queued this long before scaling down
    step: float = 2.0  # a step up multiplies the replicas by at most this
    knee_gain: float = 0.5  # an added replica must add this fraction of a replica's throughput
    flat_gain: float = 0.05  # a step that raised throughput by less than this in total is undone
    work_horizon: float = 30.0  # a replica is only worth starting for this many seconds of work
    unmeasured_after: float = 120.0  # step up without a measurement (very long points) after this

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"the minimum must be 0 or more, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"the maximum ({self.max_replicas}) must be at least 1 and at least the "
                f"minimum ({self.min_replicas})"
            )
        if self.up_cooldown < 0 or self.down_cooldown < 0:
            raise ValueError("cooldowns cannot be negative")
        if self.step <= 1:
            raise ValueError(f"the step must be greater than 1, got {self.step}")
        if not 0 < self.flat_gain <= self.knee_gain <= 1:
            raise ValueError("expected 0 < flat_gain <= knee_gain <= 1")

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True)
class Measurement:
    """Throughput (executed points per second) measured while `replicas` workers ran, all busy."""

    replicas: int
    rate: float


@dataclass(frozen=True)
class Observation:
    """What the policy sees at one moment."""

    replicas: int  # desired replicas now
    busy: int  # chunks running (each keeps one worker busy)
    queued: int  # chunks waiting in the queue
    pending: int  # points of active sweeps without a result
    seconds_per_point: float | None  # measured mean time of one point, if known
    since_change: float  # seconds since the replica count last changed
    idle_for: float  # seconds for which replicas have been idle with nothing queued (0: not now)
    measurements: tuple[Measurement, ...] = ()  # newest per replica count, current workload only


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str


def knee(measurements: Sequence[Measurement], policy: Policy) -> tuple[int, str] | None:
    """The largest replica count worth running, judged from the measurements; None if not found yet.

    Walking up the measured counts, a step that adds less than `flat_gain` in total ends the walk
    before the step. One that adds less than `knee_gain` of a replica's throughput per added
    replica ends it at the count that would give the same throughput at the lower count's rate per
    replica (4 replicas at 40 points/s, 8 at 50: 5 replicas), rounded, so noise does not move it.
    """
    latest: dict[int, Measurement] = {}
    for m in measurements:
        if m.replicas > 0 and m.rate > 0:
            latest[m.replicas] = m
    ordered = [latest[n] for n in sorted(latest)]
    if len(ordered) < 2:
        return None
    base = ordered[0]
    for m in ordered[1:]:
        total_gain = m.rate / base.rate - 1
        per_replica = base.rate / base.replicas
        marginal = (m.rate - base.rate) / (m.replicas - base.replicas) / per_replica
        if total_gain < policy.flat_gain:
            return base.replicas, (
                f"{m.replicas} replicas gave {m.rate:.3g} points/s, "
                f"{base.replicas} gave {base.rate:.3g}: no gain"
            )
        if marginal < policy.knee_gain:
            enough = max(base.replicas, min(m.replicas, round(base.replicas * m.rate / base.rate)))
            return enough, (
                f"past the knee: {base.replicas} -> {m.replicas} replicas raised throughput only "
                f"{total_gain:.0%} ({base.rate:.3g} -> {m.rate:.3g} points/s), {enough} will do"
            )
        base = m
    return None


def useful_replicas(obs: Observation, policy: Policy) -> int:
    """How many replicas the work left can keep busy for `work_horizon` seconds (at least `busy`)."""
    if obs.pending <= 0:
        return obs.busy
    if obs.seconds_per_point is None or obs.seconds_per_point <= 0:
        return max(obs.busy, obs.pending)
    work = obs.pending * obs.seconds_per_point
    return max(obs.busy, min(obs.pending, math.ceil(work / max(policy.work_horizon, 1e-9))))


def decide(obs: Observation, policy: Policy) -> Decision:
    """The replica count to run now, and why. Pure: the same observation gives the same answer."""
    n = obs.replicas
    if n < policy.min_replicas:
        return Decision(policy.min_replicas, f"below the minimum ({policy.min_replicas})")
    if n > policy.max_replicas:
        return Decision(policy.max_replicas, f"above the maximum ({policy.max_replicas})")
    useful = useful_replicas(obs, policy)
    found = knee(obs.measurements, policy)
    ceiling = found[0] if found else policy.max_replicas

    # Undo a step that did not pay (a measurement at the current count says so).
    if found and n > ceiling and obs.since_change >= policy.up_cooldown:
        return Decision(policy.clamp(ceiling), found[1])

    # Drained: some replicas idle, nothing queued, for long enough.
    if obs.idle_for >= policy.down_cooldown and obs.queued == 0:
        target = policy.clamp(max(obs.busy, useful if obs.pending else 0))
        if target < n:
            return Decision(
                target,
                f"backlog drained: {n - obs.busy} of {n} replicas idle for "
                f"{obs.idle_for:.0f}s, {obs.busy} chunks running",
            )

    # Up: chunks wait and every replica works.
    if obs.queued > 0 and obs.busy >= n and obs.since_change >= policy.up_cooldown:
        limit = min(policy.max_replicas, ceiling, max(useful, policy.min_replicas))
        if n >= limit:
            why = (
                "at the maximum"
                if n >= policy.max_replicas
                else found[1]
                if found and n >= ceiling
                else f"the {obs.pending} points left keep only {useful} replicas busy"
            )
            return Decision(n, f"holding at {n}: {why}")
        measured = {m.replicas for m in obs.measurements}
        from_the_floor = not measured and n <= max(1, policy.min_replicas)  # the first step is free
        if n in measured or from_the_floor or obs.since_change >= policy.unmeasured_after:
            target = min(limit, max(n + 1, math.ceil(n * policy.step)))
            rate = next((m.rate for m in reversed(obs.measurements) if m.replicas == n), None)
            at = f", {rate:.3g} points/s at {n}" if rate is not None else ""
            return Decision(
                target, f"{obs.queued} chunks queued ({obs.pending} points left), all {n} replicas busy{at}"
            )
        return Decision(n, f"holding at {n}: measuring throughput before the next step")
    return Decision(n, "steady")


# --- measuring ---------------------------------------------------------------------------------------
@dataclass
class Meter:
    """Throughput per replica count, from samples of the executions counter. Pure (times are passed).

    A window opens once the replicas run as desired, every one busy, `settle` seconds after the
    last change; after `window` seconds (and at least `min_points` executions) it yields a
    measurement, refreshed while the window stays open (at most `max_window` seconds long).
    Idle replicas or a change close the window. Measurements older than `memory` are forgotten, so
    a knee is probed again about once an hour (the cluster may have changed), never in a loop.
    """

    settle: float = 5.0
    window: float = 10.0
    max_window: float = 60.0
    min_points: int = 5
    memory: float = 3600.0
    _open: list[tuple[float, int]] = field(default_factory=list)  # (t, executions) in the window
    _count: int = -1
    _taken: dict[int, tuple[float, Measurement]] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget everything (the workload changed: other sweeps, other costs per point)."""
        self._open.clear()
        self._taken.clear()
        self._count = -1

    def add(
        self,
        t: float,
        executions: int,
        *,
        desired: int,
        running: int,
        busy: int,
        queued: int,
        since_change: float,
    ) -> None:
        steady = running == desired and busy >= desired and queued > 0 and since_change >= self.settle
        if not steady or desired != self._count:
            self._open.clear()
            self._count = desired
            if not steady:
                return
        self._open.append((t, executions))
        while len(self._open) > 2 and t - self._open[1][0] >= self.max_window:
            self._open.pop(0)
        t0, e0 = self._open[0]
        if t - t0 >= self.window and executions - e0 >= self.min_points:
            self._taken[desired] = (t, Measurement(desired, (executions - e0) / (t - t0)))

    def measurements(self, now: float) -> tuple[Measurement, ...]:
        """The newest measurement per replica count, oldest first."""
        for count in [c for c, (t, _) in self._taken.items() if now - t > self.memory]:
            del self._taken[count]
        return tuple(m for _, m in sorted(self._taken.values(), key=lambda item: item[0]))


# --- the loop ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueState:
    queued: int
    busy: int
    pending: int
    executions: int
    seconds_per_point: float | None
    sweeps: tuple[str, ...]


def read_state(queue: SweepQueue) -> QueueState:
    """Queued and running chunks of the queue, and the points left in its active sweeps."""
    from rq.registry import StartedJobRegistry

    sweeps = tuple(queue.active_sweeps())
    pipe = queue.connection.pipeline(transaction=False)
    pipe.llen(queue.queue.key)
    pipe.llen(queue.queue.intermediate_queue.key)
    pipe.zcard(StartedJobRegistry(queue=queue.queue).key)
    for sid in sweeps:
        pipe.hget(Keys(sid).meta, "size")
        pipe.bitcount(Keys(sid).done)
        pipe.hmget(Keys(sid).counts, "executions", "seconds", "processed")
    queued, handing, busy, *rest = pipe.execute()
    pending = executions = processed = 0
    seconds = 0.0
    for i in range(len(sweeps)):
        size, done, (ex, secs, proc) = rest[3 * i : 3 * i + 3]
        pending += max(0, int(size or 0) - int(done))
        executions += int(ex or 0)
        seconds += float(secs or 0)
        processed += int(proc or 0)
    return QueueState(
        int(queued) + int(handing),
        int(busy),
        pending,
        executions,
        seconds / processed if processed else None,
        sweeps,
    )


@dataclass(frozen=True)
class Event:
    """One change the autoscaler made."""

    t: float
    old: int
    new: int
    reason: str


class Autoscaler:
    """Applies `decide` to a backend every `interval` seconds (call `tick` often, or `run`)."""

    def __init__(
        self,
        queue: SweepQueue,
        backend: Backend,
        policy: Policy,
        *,
        interval: float = 2.0,
        meter: Meter | None = None,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.backend = backend
        self.policy = policy
        self.interval = interval
        self.meter = meter or Meter()
        self.on_event = on_event
        self.clock = clock
        self.events: list[Event] = []
        self.last: Decision | None = None
        self._changed = clock()
        self._idle_since: float | None = None
        self._last_tick = -math.inf
        self._sweeps: tuple[str, ...] = ()

    def tick(self) -> Decision | None:
        """One round (at most every `interval` seconds): observe, decide, scale if the answer changed."""
        now = self.clock()
        if now - self._last_tick < self.interval:
            return None
        self._last_tick = now
        state = read_state(self.queue)
        replicas = self.backend.replicas()
        if state.sweeps != self._sweeps:
            self.meter.reset()
            self._sweeps = state.sweeps
        idle = replicas.running > state.busy and state.queued == 0
        if not idle:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        since_change = now - self._changed
        self.meter.add(
            now,
            state.executions,
            desired=replicas.desired,
            running=replicas.running,
            busy=state.busy,
            queued=state.queued,
            since_change=since_change,
        )
        obs = Observation(
            replicas=replicas.desired,
            busy=state.busy,
            queued=state.queued,
            pending=state.pending,
            seconds_per_point=state.seconds_per_point,
            since_change=since_change,
            idle_for=0.0 if self._idle_since is None else now - self._idle_since,
            measurements=self.meter.measurements(now),
        )
        decision = decide(obs, self.policy)
        self.last = decision
        if decision.replicas != replicas.desired:
            self.backend.scale(decision.replicas, wait=False)
            self._changed = now
            self._idle_since = None
            event = Event(now, replicas.desired, decision.replicas, decision.reason)
            self.events.append(event)
            if self.on_event:
                self.on_event(event)
        return decision

    def settle_down(self) -> Decision:
        """Scale to what is still running (at least the minimum): the work this loop served is done."""
        state = read_state(self.queue)
        replicas = self.backend.replicas()
        target = self.policy.clamp(max(state.busy, 0 if state.queued == 0 else replicas.desired))
        decision = Decision(target, f"done: {state.busy} chunks still running")
        if target != replicas.desired:
            self.backend.scale(target, wait=False)
            event = Event(self.clock(), replicas.desired, target, decision.reason)
            self.events.append(event)
            if self.on_event:
                self.on_event(event)
        return decision

    def run(
        self,
        *,
        stop: Callable[[], bool],
        maintain_every: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Tick until `stop()` is true; also hand abandoned chunks back every few seconds."""
        last_maintain = -math.inf
        while not stop():
            self.tick()
            if self.clock() - last_maintain >= maintain_every:
                self.queue.maintain()
                last_maintain = self.clock()
            sleep(min(0.5, self.interval))


def with_bounds(policy: Policy, min_replicas: int, max_replicas: int) -> Policy:
    return replace(policy, min_replicas=min_replicas, max_replicas=max_replicas)
