"""Every failed file reaches the service's log, one line each, without drowning it.

A wrong key fails thousands of files a minute; the log keeps the first ``limit`` of a job in each
``interval_s`` window, then one line saying how many more failed, by reason, and where all of them
are (``console.sh errors <job>``). The worker writes these lines as files fail (standalone:
``logs/ossimport2.log``; an agent: ``logs/worker.log`` on its host); the master writes them for a
task's failures when it brings the finished task home (``logs/master.log``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from .listformat import one_line, write_key
from .models import reasons_text

LIMIT = 20
INTERVAL_S = 10.0


@dataclass
class _Window:
    """One job's current window: when it began, the lines logged, the failures folded since the
    last fold line (code -> count)."""

    start: float
    logged: int = 0
    folded: Counter = field(default_factory=Counter)


class FailureLog:
    """The rate limiter of failure lines, one per process role; safe across transfer threads."""

    def __init__(self, logger: logging.Logger, limit: int = LIMIT, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.logger, self.limit, self.interval_s, self.clock = logger, limit, interval_s, clock
        self._lock = threading.Lock()
        self._windows: dict = {}  # job -> _Window

    def failed(self, job: str, task_id: str, key: str, code: str, detail: str) -> None:
        now = self.clock()
        with self._lock:
            window = self._windows.get(job)
            if window is None or now - window.start >= self.interval_s:
                if window is not None:
                    self._fold(job, window, now)
                window = self._windows[job] = _Window(start=now)
            if window.logged >= self.limit:
                window.folded[code] += 1
                return
            window.logged += 1
        # The key as every list file writes it: a name with a line break stays on its line.
        self.logger.error("job %s task %s: failed %s: %s", job, task_id, write_key(key), one_line(detail))

    def flush(self, job: Optional[str] = None, every_job: bool = False) -> None:
        """Say what was folded: for ``job`` (its tasks have all finished here) or every job
        (the worker stops) at once, and for any job whose window has ended (the service's tick)."""
        now = self.clock()
        with self._lock:
            for name, window in list(self._windows.items()):
                ended = now - window.start >= self.interval_s
                if ended or every_job or name == job:
                    self._fold(name, window, now)
                if ended:
                    del self._windows[name]

    def _fold(self, job: str, window: _Window, now: float) -> None:
        total = sum(window.folded.values())
        if not total:
            return
        seconds = max(1, round(min(now - window.start, self.interval_s)))
        self.logger.error("job %s: ... and %d more failure%s in the last %d s (%s); all of them: "
                          "console.sh errors %s", job, total, "" if total == 1 else "s", seconds,
                          reasons_text(window.folded), job)
        window.folded.clear()
