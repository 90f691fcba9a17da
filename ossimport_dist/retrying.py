"""The one retry engine every request of a copy goes through: single PUT, multipart parts and
their completion, server-side copy, the audit's reads, and the abort of a removed job's uploads.

A request that fails with a retryable ``RequestFailed`` is tried again after an exponential
backoff with jitter (capped), up to the job's attempts, and never past a deadline when one is
set. A destination that says "reduce your request rate" slows every thread of the worker
(``Backpressure``). A check that failed after the request succeeded (the stored bytes differ from
the read ones) is sent again at once, without a backoff: the store answered, it is not busy.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

from .errors import OperatorError
from .models import OTHER_FAILURE, FileResult, Outcome, failure_code
from .storage.errors import RequestFailed

log = logging.getLogger(__name__)

T = TypeVar("T")


class Backpressure:
    """Slows every thread of a worker when the destination says "reduce your request rate".

    Each throttle signal pushes a shared "not before" time further out (doubling the pause on
    repeated signals); successes shrink the pause again.
    """

    def __init__(self, base: float = 0.2, cap: float = 10.0, clock=time.monotonic,
                 sleep=time.sleep):
        self._lock = threading.Lock()
        self._base, self._cap = base, cap
        self._clock, self._sleep = clock, sleep
        self._pause = 0.0
        self._not_before = 0.0

    @property
    def pause(self) -> float:
        return self._pause

    def signal(self) -> None:
        with self._lock:
            self._pause = min(self._cap, max(self._base, self._pause * 2))
            self._not_before = max(self._not_before, self._clock() + self._pause)

    def success(self) -> None:
        if not self._pause:  # the common case costs no lock
            return
        with self._lock:
            self._pause = self._pause * 0.8 if self._pause > self._base / 4 else 0.0

    def wait(self) -> None:
        delay = self._not_before - self._clock()
        if delay > 0:
            self._sleep(min(delay, self._cap))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long: ``attempts`` in all (the first included), the backoff before
    attempt n+1 is ``base * 2**(n-1)`` capped at ``cap`` (with jitter: a random point in its upper
    half, so threads that failed together do not come back together), and no attempt starts
    later than ``deadline`` seconds after the first (None: the attempts alone bound it)."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 20.0
    jitter: bool = True
    deadline: Optional[float] = None

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait after failed attempt ``attempt`` (1-based)."""
        delay = min(self.cap, self.base * (2 ** (attempt - 1)))
        return delay / 2 + rng.uniform(0, delay / 2) if self.jitter else delay


class Retrier:
    """Runs one request (or one read-send-check attempt) under a ``RetryPolicy``.

    ``sleep`` waits out a backoff (a worker passes its halt event's ``wait``, so a backoff ends at
    once when the job stops); ``halted()`` true means no failed request is tried again.
    ``clock`` and ``rng`` are injectable so tests count waits without sleeping.
    """

    def __init__(self, policy: RetryPolicy, sleep: Callable[[float], object] = time.sleep,
                 backpressure: Optional[Backpressure] = None,
                 halted: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic,
                 rng: Optional[random.Random] = None):
        self.policy = policy
        self.backpressure = backpressure  # None: nothing else to slow down (clean's aborts)
        self._sleep, self._halted, self._clock = sleep, halted, clock
        self._rng = rng or random.Random()

    def gives_up(self, failure: RequestFailed, attempt: int, started: Optional[float] = None) -> bool:
        """True when ``failure`` of attempt ``attempt`` ends the request."""
        if not failure.retryable or attempt >= self.policy.attempts or self._halted():
            return True
        deadline = self.policy.deadline
        return deadline is not None and started is not None and self._clock() - started >= deadline

    def backoff(self, attempt: int, failure: RequestFailed, started: Optional[float] = None) -> None:
        if failure.throttled and self.backpressure is not None:
            self.backpressure.signal()
        delay = self.policy.delay(attempt, self._rng)
        if self.policy.deadline is not None and started is not None:
            # The wait never carries the next attempt past the deadline.
            delay = max(0.0, min(delay, started + self.policy.deadline - self._clock()))
        self._sleep(delay)

    def call(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)``, retried while its failure is transient."""
        return self.run(lambda: fn(*args))

    def run(self, attempt_once: Callable[[], T], *, resend_on: tuple = (), what: str = "",
            keep_going: Callable[[], bool] = lambda: True,
            rescue: Optional[Callable[[RequestFailed], Optional[T]]] = None) -> Optional[T]:
        """``attempt_once()`` until it returns, and what it returned.

        ``resend_on``: exception types of a check that failed after the request succeeded; the
        attempt is made again at once (logged as ``what: exc; retrying``), and the last one is
        raised. ``keep_going()`` false before an attempt ends the loop with None (another part of
        the same file failed: this one is not worth sending). ``rescue(failure)``: a value that
        proves a failed request did its work after all (a lost response), else None.
        """
        attempt, started = 1, self._clock()
        while keep_going():
            if self.backpressure is not None:
                self.backpressure.wait()
            try:
                result = attempt_once()
            except RequestFailed as failure:
                rescued = rescue(failure) if rescue is not None else None
                if rescued is not None:
                    return rescued
                if self.gives_up(failure, attempt, started):
                    raise
                self.backoff(attempt, failure, started)
            except resend_on as exc:
                if attempt >= self.policy.attempts:
                    raise
                log.warning("%s: %s; retrying", what, exc)
            else:
                if self.backpressure is not None:
                    self.backpressure.success()
                return result
            attempt += 1
        return None


def failure_text(exc: Exception) -> str:
    """How a failure reads in audit.log and error.list, as operators grep it."""
    if isinstance(exc, RequestFailed):
        return exc.describe()
    code = getattr(exc, "failure_code", None)  # a driver's own refusal, as operators grep it
    if code:
        return f"{code}: {exc}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}" + (
            f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, OperatorError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def failure_reason_code(exc: BaseException) -> str:
    """How stat groups a failure made from ``exc``: the code it carries (a request's store code,
    a check's, a driver's own refusal), else the name of its type."""
    code = getattr(exc, "reason_code", "") or getattr(exc, "failure_code", "") or getattr(exc, "code", "")
    if isinstance(code, str) and code:
        return code
    if isinstance(exc, OperatorError):  # its raiser named no code: its words may
        return failure_code(str(exc))
    name = type(exc).__name__
    return name if name.endswith("Error") else OTHER_FAILURE


def failed_result(key: str, exc: Exception) -> FileResult:
    """A file failed by ``exc``, with the store's code when a request failed."""
    return FileResult(key, Outcome.FAILED, detail=failure_text(exc), code=failure_reason_code(exc),
                      cause=exc)
