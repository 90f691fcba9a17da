"""When a job must stop: failures that no retry of another file can fix.

Most failures belong to one file (a 5xx after its retries, a file that changed while read), and
the job goes on with the others. Some prove that every file will fail the same way, and going on
would only fill error.list while the operator waits: the destination bucket is gone, the keys
are refused file after file, an endpoint takes no connection at all. One ``FatalDetector`` per
job runtime watches the files' results and says when; the worker then stops the job (see
``Worker``), and the service or the master marks it Failed with the reason.

It reads the typed cause of a failure (``FileResult.cause``): the ``refusal`` a driver gave its
operator error (``storage.errors.fatal_error``), and ``RequestFailed.unreachable``; never words.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .config import SysConfig
from .errors import KEYS_REFUSED, DestinationError, SourceError
from .models import SOURCE_NOT_EXIST, FileResult, Outcome
from .storage.errors import RequestFailed

# Refused keys may be one object's ACL: the job stops when this many files in a row are refused.
# As many missing files in a row make it ask whether the source as a whole is gone.
IN_A_ROW = 5

_ASK_THE_SOURCE = object()  # what _judge answers when only the source can tell
_SIDES = {"dest": ("destination", "destDomain"), "src": ("source", "srcDomain")}


def _no_problem() -> Optional[str]:
    return None


@dataclass
class FatalDetector:
    """Judges one job's file results; ``observe`` returns the reason once the job must stop.

    ``source_problem`` says what is wrong with the source as a whole (a local srcPrefix that
    vanished: an unmounted NAS, a source bucket gone) when files in a row are missing from it,
    or None."""

    in_a_row: int = IN_A_ROW
    # seconds with no connection and no file copied (sys.properties workerEndpointDownTimeout)
    unreachable_for: float = SysConfig.worker_endpoint_down_timeout
    source_problem: Callable[[], Optional[str]] = _no_problem
    clock: Callable[[], float] = time.monotonic
    stopped: Optional[str] = None  # why the job stopped (a retried job gets a fresh detector)
    _refused: int = 0
    _missing: int = 0  # files in a row the source lacks
    _unreachable_since: Optional[float] = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe(self, result: FileResult, began: float) -> Optional[str]:
        """The reason the job must stop, returned once, by the result that proves it.
        ``began``: when the file's first request was made (``clock`` time)."""
        with self._lock:
            if self.stopped is not None:
                return None
            reason = self._judge(result, began)
        if reason is _ASK_THE_SOURCE:
            # Outside the lock: asking may be a request, and the other threads go on meanwhile.
            reason = self.source_problem()
        if reason is None:
            return None
        with self._lock:
            if self.stopped is not None:
                return None  # another thread's result stopped it meanwhile
            self.stopped = reason
            return reason

    def stop(self, reason: str) -> None:
        """Stopped from outside: the job was already marked failed when its runtime was made."""
        with self._lock:
            self.stopped = self.stopped or reason

    def _judge(self, result: FileResult, began: float):
        """The reason to stop, None, or _ASK_THE_SOURCE; called holding the lock."""
        if result.outcome == Outcome.SUCCEED:
            # Both sides answered this file: a run of refusals or of dead connections is over.
            self._refused, self._missing, self._unreachable_since = 0, 0, None
            return None
        if result.outcome != Outcome.FAILED:
            return None  # skipped without a request, or read but different: no proof either way
        cause = result.cause
        if isinstance(cause, (DestinationError, SourceError)) and cause.refusal:
            if cause.refusal != KEYS_REFUSED:
                return str(cause)  # the bucket is gone, the clock is off...: every file fails so
            self._refused += 1
            if self._refused >= self.in_a_row:
                return f"{self._refused} files in a row refused: {cause}"
            return None
        if isinstance(cause, RequestFailed) and cause.unreachable:
            if self._unreachable_since is None:
                self._unreachable_since = began
            down = self.clock() - self._unreachable_since
            if down >= self.unreachable_for:
                return _unreachable_reason(cause, down)
            return None
        if result.detail.startswith(SOURCE_NOT_EXIST):
            # Once per run of missing files: asking may cost the source a request.
            self._missing += 1
            if self._missing % self.in_a_row == 0:
                return _ASK_THE_SOURCE
        return None


def stopped_job_reason(name: str, reason: str) -> str:
    """The Reason a stopped job is marked with (``JobLayout.fail_job``): what, and how to go on."""
    return f"{reason}; once fixed, 'console.sh retry {name}' sends the files not copied"


def _unreachable_reason(failure: RequestFailed, down: float) -> str:
    side, key = _SIDES.get(failure.role, ("store", "the endpoint's address"))
    return (f"the {side} took no connection for {down:.0f} s ({failure.code}: {failure.message}): "
            f"check {key} and that this host can reach it")
