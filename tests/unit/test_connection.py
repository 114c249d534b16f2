"""The time-bounded retry policy of resilient Redis connections (`swarmrun.execution.connection`)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

from swarmrun.execution.connection import PatientRetry, RedisGone


class Flaky:
    """A call that fails with `error` `failures` times (for ever when None), then answers."""

    def __init__(self, error: Exception, failures: int | None = None) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures is None or self.calls <= self.failures:
            raise self.error
        return "PONG"


def test_retries_until_redis_answers() -> None:
    failed: list[int] = []
    call = Flaky(redis.ConnectionError("reset"), failures=3)
    answer = PatientRetry(10).call_with_retry(call, lambda e, n: failed.append(n), with_failure_count=True)
    assert answer == "PONG" and call.calls == 4 and failed == [1, 2, 3]


def test_gives_up_after_its_patience_however_fast_attempts_fail() -> None:
    call = Flaky(redis.ConnectionError("Connection reset by peer"))
    started = time.monotonic()
    with pytest.raises(RedisGone, match=r"no answer for 1 s .*Connection reset by peer"):
        PatientRetry(1.0).call_with_retry(call, lambda e: None)
    assert 1.0 <= time.monotonic() - started < 2.5
    assert 3 <= call.calls <= 10  # backoff 0.2, 0.4, 0.8 s...: not a busy loop


def test_nested_retries_make_one_attempt_and_leave_the_retrying_to_the_outermost() -> None:
    """redis-py nests loops (a reconnect's around a health check's); only the outer one waits,
    so the patience bounds the whole command, not each level."""
    retry = PatientRetry(1.0)
    inner = Flaky(redis.ConnectionError("reset"))
    cleaned: list[Exception] = []

    def attempt() -> str:
        return retry.call_with_retry(inner, cleaned.append)

    started = time.monotonic()
    with pytest.raises(RedisGone):
        retry.call_with_retry(attempt, lambda e: None)
    assert time.monotonic() - started < 2.5
    assert len(cleaned) == inner.calls  # each inner failure was cleaned up (disconnect) once
    # A later, separate call is an outermost loop again.
    assert retry.call_with_retry(Flaky(redis.TimeoutError("slow"), failures=1), lambda e: None) == "PONG"


def test_a_wrong_password_is_not_retried() -> None:
    call = Flaky(redis.AuthenticationError("invalid password"))
    with pytest.raises(redis.AuthenticationError):
        PatientRetry(30).call_with_retry(call, lambda e: None)
    assert call.calls == 1


def test_other_errors_are_not_retried() -> None:
    call = Flaky(redis.ResponseError("WRONGTYPE"))
    with pytest.raises(redis.ResponseError):
        PatientRetry(30).call_with_retry(call, lambda e: None)
    assert call.calls == 1


STOP_UNDER_SIGNALS = """
import random, signal, sys
import redis
from redis.backoff import ConstantBackoff
from swarmrun.execution import connection

class Stop(BaseException):
    pass

def handler(signum, frame):  # as a worker's: stop riding out the outage, then stop
    connection.stop_waiting()
    raise Stop

signal.signal(signal.SIGALRM, handler)
retry = connection.PatientRetry(60)
retry._backoff = ConstantBackoff(0.00002)  # short waits: the signal often lands inside one
random.seed(1)

def fail():
    raise redis.ConnectionError("reset")

for _ in range(int(sys.argv[1])):
    connection._stopping.clear()
    try:
        try:  # the signal may land anywhere from here, even before the call below starts
            signal.setitimer(signal.ITIMER_REAL, random.uniform(0.0002, 0.002))
            retry.call_with_retry(fail, lambda e: None)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except (Stop, connection.RedisGone):
        pass
print("done")
"""


def test_a_stop_signal_landing_anywhere_in_the_wait_for_redis_never_hangs_or_breaks_a_lock() -> None:
    """A worker's SIGTERM handler tells every retry loop to give up (`stop_waiting`), and runs
    on the main thread between two of its bytecodes, wherever that thread is in its wait. Waiting
    on a `threading.Event` there, the handler's `set()` could find the Event's lock held by the
    very thread it interrupted (a deadlock: the worker hung until killed), or leave the wait
    releasing a lock it no longer held (`RuntimeError: release unlocked lock`, a traceback in
    the worker's log). Thousands of signals at random moments of short waits hit both."""
    run = subprocess.run(
        [sys.executable, "-c", STOP_UNDER_SIGNALS, "3000"], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0 and run.stdout.strip() == "done", run.stderr[-2000:]
