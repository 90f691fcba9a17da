"""A token bucket shared by every transfer thread of a worker (workerMaxThroughput).

Uploaders only call ``consume(n)`` for each chunk they read; they do not otherwise know that
throttling exists. A thread that takes more tokens than are available goes into debt and
sleeps it off, so a chunk larger than the bucket still passes, and the long-run rate holds
however many threads share the bucket.
"""

from __future__ import annotations

import threading
import time

# Bursts are bounded so that an idle worker cannot flood the link when work arrives.
_BURST_SECONDS = 0.25
_MIN_BURST = 64 * 1024
# Sleep in slices so that a live rate change (e.g. a schedule raising the cap) takes effect
# quickly for threads already waiting.
_MAX_SLEEP_SLICE = 0.5


class Throttle:
    """``min_burst``: the fewest tokens a full bucket holds; a bucket of file starts
    (workerMaxQps) holds one, so a cap of 5/s never lets 64 Ki files start at once."""

    def __init__(self, bytes_per_second: float = 0, clock=time.monotonic, sleep=time.sleep,
                 min_burst: float = _MIN_BURST):
        self._min_burst = min_burst
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._rate = 0.0
        self._tokens = 0.0
        self._stamp = clock()
        self.set_rate(bytes_per_second)

    @property
    def rate(self) -> float:
        return self._rate

    def _capacity(self) -> float:
        return max(self._rate * _BURST_SECONDS, self._min_burst)

    def set_rate(self, bytes_per_second: float) -> None:
        """Change the cap live; 0 (or less) means unlimited."""
        with self._lock:
            self._refill()
            was = self._rate
            self._rate = float(bytes_per_second) if bytes_per_second and bytes_per_second > 0 else 0.0
            if self._rate:
                fresh = not was
                self._tokens = self._capacity() if fresh else min(self._tokens, self._capacity())
            else:
                self._tokens = 0.0

    def _refill(self) -> None:
        now = self._clock()
        if self._rate:
            self._tokens = min(self._capacity(), self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def consume(self, n: int) -> None:
        """Take ``n`` bytes' worth of tokens, blocking until the rate allows them."""
        if n <= 0 or not self._rate:
            return
        with self._lock:
            self._refill()
            self._tokens -= n
            # Bytes that must drain before this thread may go: its place in the queue of
            # everyone who went into debt before it, plus its own chunk.
            owed = -self._tokens
        last = self._clock()
        while owed > 0:
            rate = self._rate
            if not rate:
                return
            self._sleep(min(owed / rate, _MAX_SLEEP_SLICE))
            now = self._clock()
            # Paid back at whatever rate holds now, so set_rate() applies to waiting threads.
            owed -= (now - last) * self._rate
            last = now
