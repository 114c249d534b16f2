"""Redis connections: opening and checking one (`connect`), and how it rides out an outage
(retries bounded by time, not by count).

A manager must go on through a Redis it cannot reach for a minute or two (a Redis restart, a node
whose kubelet is away, a broken port-forward) and still end with one clear line when Redis is
really gone. redis-py's `Retry` counts attempts, and its loops nest (a command's retry around a
reconnect's retry around the socket connect's retry, each with its own count), so a count says
little about time: with 60 retries and a 2 s backoff cap, a refused port was given up after
about 2 minutes, while a port-forward that accepts and then resets each connection kept a
command retrying for more than 15 minutes. And a connection taken from the pool is checked, and
re-made, outside the command's retry: in redis-py before 8 a failed handshake there was not
retried at all.

`PatientRetry` retries for `patience` seconds from the first failure, whatever the number of
attempts, and only in the outermost retry loop of a thread: nested loops make one attempt and
leave the retrying to it. `PatientPool` also retries taking a connection from the pool.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from swarmrun.errors import RedisAuthFailed, RedisTLSFailed, RedisUnavailable
from swarmrun.settings import REDIS_PATIENCE, redact

T = TypeVar("T")

BACKOFF_CAP = 2.0  # at most this long between two attempts
BACKOFF_BASE = 0.1

_retrying = threading.local()  # `.active`: an outermost PatientRetry loop runs on this thread
STOP_POLL = 0.05  # a thread waiting to retry sees a stop within this long


class _Stopping:
    """Whether this process is stopping, as a flag with no lock. It is set from a signal
    handler, which runs on the main thread between two of its bytecodes, wherever that thread
    is: a `threading.Event` there could find its own lock held by the thread it interrupted
    (`set()` then deadlocks) or leave an interrupted `wait()` releasing a lock it no longer
    holds. So a wait sleeps in short slices and looks at the flag between them."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True as soon as the process is stopping."""
        end = time.monotonic() + seconds
        while not self._set:
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, STOP_POLL))
        return True


_stopping = _Stopping()  # this process is stopping: outages are no longer ridden out


def stop_waiting() -> None:
    """This process is stopping (a worker told to stop): its connections stop riding out an
    outage, and one waiting now gives up at once, so a stop is never held up by a Redis that is
    away (`docker-compose down` stops Redis and the workers together)."""
    _stopping.set()


class RedisGone(redis.ConnectionError):
    """Redis did not answer for the whole patience period."""


class PatientRetry(Retry):
    """Retry connection errors and timeouts until `patience` seconds have passed since the first
    failure, with exponential backoff (capped at `BACKOFF_CAP`); then raise `RedisGone`."""

    def __init__(self, patience: float = REDIS_PATIENCE) -> None:
        super().__init__(
            ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE),
            -1,  # never stop by count; the deadline decides
            (redis.ConnectionError, redis.TimeoutError, socket.timeout),
        )
        self.patience = patience

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """redis-py's signature (`fail(error)`, or `fail(error, failures)` with the count)."""
        if getattr(_retrying, "active", False):
            return self._once(do, fail, is_retryable, with_failure_count)
        _retrying.active = True
        try:
            return self._until_deadline(do, fail, is_retryable, with_failure_count)
        finally:
            _retrying.active = False

    def _retryable(self, error: Exception, is_retryable: Callable[[Exception], bool] | None) -> bool:
        if isinstance(error, RedisGone | redis.AuthenticationError):  # a wrong password stays wrong
            return False
        checker = getattr(self, "_is_retryable", None)  # redis-py >= 8: a checker of the policy
        return (checker is None or checker(error)) and (is_retryable is None or is_retryable(error))

    def _once(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None,
        with_failure_count: bool,
    ) -> T:
        """Inside another retry loop: one attempt, cleaned up (`fail`) on error, which goes up."""
        try:
            return do()
        except self._supported_errors as error:
            fail(error, 1) if with_failure_count else fail(error)
            raise

    def _until_deadline(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None,
        with_failure_count: bool,
    ) -> T:
        failures = 0
        deadline: float | None = None
        while True:
            try:
                return do()
            except self._supported_errors as error:
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                if not self._retryable(error, is_retryable):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.patience
                if _stopping.is_set():
                    raise RedisGone(f"no answer, and this process is stopping: {error}") from error
                if now >= deadline:
                    raise RedisGone(
                        f"no answer for {self.patience:.0f} s (SWARMRUN_REDIS_PATIENCE): {error}"
                    ) from error
                if _stopping.wait(min(self._backoff.compute(failures), deadline - now)):
                    raise RedisGone(f"no answer, and this process is stopping: {error}") from error


class PatientPool(redis.ConnectionPool):
    """A connection pool whose `get_connection` (connect, handshake, check) is retried as well,
    with the connections' own `retry` policy."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        retry: Retry = self.connection_kwargs["retry"]
        checkout = super().get_connection
        return retry.call_with_retry(lambda: checkout(*args, **kwargs), lambda error: None)


def checkout(pool: redis.ConnectionPool) -> Any:
    """A connection of `pool` for a caller to use on its own (pipelined by hand); give it back
    with `pool.release`."""
    try:
        return pool.get_connection()
    except TypeError:  # redis-py 5 wants a command name
        return pool.get_connection("PING")


def patient_client(url: str, patience: float = REDIS_PATIENCE, **options: Any) -> redis.Redis:
    """A client of `url` whose commands ride out `patience` seconds without Redis."""
    pool = PatientPool.from_url(url, retry=PatientRetry(patience), **options)
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # closing the client closes its pool, as from_url's
    return client


def connect(url: str, *, resilient: bool = False, patience: float | None = None) -> redis.Redis:
    """Open and check a Redis connection; `resilient` connections ride out `patience` seconds
    without Redis (a restart, a broken port-forward: `PatientRetry`).

    The first check runs without retries: redis-py counts a wrong password as a connection
    error, and would retry it for ever.
    """
    options: dict[str, Any] = {"socket_connect_timeout": 5, "health_check_interval": 15}
    try:
        connection = redis.Redis.from_url(url, **options, retry=Retry(ExponentialBackoff(), retries=0))
        connection.ping()
        if resilient:
            connection.close()
            connection = patient_client(url, REDIS_PATIENCE if patience is None else patience, **options)
            connection.ping()
    except redis.AuthenticationError as e:
        raise RedisAuthFailed(f"Redis at {redact(url)} refused the password: {e}") from e
    except redis.ConnectionError as e:
        tls = _tls_failure(e)
        if tls:
            raise RedisTLSFailed(f"Redis at {redact(url)}: {tls}") from e
        raise RedisUnavailable(f"cannot reach Redis at {redact(url)}: {e}") from e
    except (redis.TimeoutError, ValueError) as e:
        raise RedisUnavailable(f"cannot reach Redis at {redact(url)}: {e}") from e
    except redis.ResponseError as e:
        raise RedisUnavailable(f"Redis at {redact(url)} answered with an error: {e}") from e
    return connection


def _tls_failure(error: BaseException) -> str | None:
    """Why a TLS connection failed for good (certificate, CA file), or None for a network error."""
    cause = error.__cause__ or error.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"its TLS certificate does not verify against the CA given ({cause.verify_message})"
    if isinstance(cause, FileNotFoundError | PermissionError | IsADirectoryError):
        return f"cannot read the CA certificate (ssl_ca_certs): {cause.strerror}"
    return None
