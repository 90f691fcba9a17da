"""Preflight: can this job work at all? Asked at ``submit`` and again at ``start`` of a job
that has not copied anything yet, before the first task.

Each side gets one cheap real read through its driver's ``probe`` (the destination: a listing
of one key that needs the keys and writes nothing; the source: its first listing page, the
first lines of a list file and the first URL). A few seconds at most: short timeouts, one
quick second try for a transient failure (a reset, a 5xx), none for a refused connection or
a timeout, and a bound on the whole check whatever the drivers do. A failure is one line naming
the store, the configuration key that sets it (file and line) and the fix; the job is not
submitted or started. ``--no-preflight`` skips the check.

The meaning of a store's answer (no such bucket, wrong secret...) comes from the drivers
(``storage.errors.fatal_error``); this module only says where to fix it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .config import JobConfig
from .errors import OperatorError, PreflightError
from .storage import Destination, Source, open_job_destination, open_job_source
from .storage.errors import RequestFailed

REQUEST_TIMEOUT_S = 3.0  # connect and read timeout of each probe request
TOTAL_BUDGET_S = 9.0  # both sides, second tries included, whatever the drivers' own timeouts
SECOND_TRY_PAUSE_S = 0.3
SKIP_HINT = "skip this check with --no-preflight"


@dataclass(frozen=True)
class Side:
    """One end of the job as preflight names it."""

    label: str  # "destination" / "source"
    where: str  # the store as the operator configured it
    endpoint_key: str  # the key that says where the store is
    asks_urls: bool = False  # a failed request is named by its URL (a URL list's first line)


def destination_side(job: JobConfig) -> Side:
    if job.dest_type == "local":
        return Side("destination", f"folder '{job.dest_domain}'", "destDomain")
    return Side("destination", f"destBucket '{job.dest_bucket}' at {job.dest_domain}", "destDomain")


def source_side(job: JobConfig) -> Side:
    if job.src_type == "local":
        return Side("source", f"srcPrefix '{job.src_prefix}'", "srcPrefix")
    if job.src_type == "http":
        return Side("source", f"first URL of httpListFilePath {job.http_list_file_path}",
                    "httpListFilePath", asks_urls=True)
    if job.src_type == "list":
        inner = job.list_src_type or "local"
        if inner == "local":
            return Side("source", f"srcPrefix '{job.src_prefix}' (listed in {job.list_file_path})",
                        "srcPrefix")
        return Side("source", f"srcBucket '{job.src_bucket}' at {job.src_domain} (listed in "
                              f"{job.list_file_path})", "srcDomain")
    return Side("source", f"srcBucket '{job.src_bucket}' at {job.src_domain}", "srcDomain")


def check_drivers(job: JobConfig, source: Source, destination: Destination, hint: str = SKIP_HINT) -> None:
    """Probes the destination, then the source; PreflightError (one line, ending with ``hint``)
    on the first that cannot work."""
    deadline = time.monotonic() + TOTAL_BUDGET_S
    for side, driver in ((destination_side(job), destination), (source_side(job), source)):
        began = time.monotonic()
        try:
            _probe(driver, deadline)
        except OperatorError as exc:
            raise PreflightError(f"preflight: {exc}{_located(job, exc.config_keys)}; {hint}") from None
        except RequestFailed as failure:
            raise PreflightError(_unreachable(job, side, failure, hint)) from None
        except _NoAnswer:
            raise PreflightError(
                f"preflight: the {side.label} ({side.where}) did not answer within "
                f"{deadline - began:.0f} s{_located(job, (side.endpoint_key,))}: check "
                f"{side.endpoint_key} and the network (firewall, proxy); {hint}") from None


def check_job(job: JobConfig, hint: str = SKIP_HINT) -> None:
    """``check_drivers`` on drivers opened for the check (a submitted job, at start)."""
    opened = []
    try:
        for open_driver in (open_job_source, open_job_destination):
            try:
                opened.append(open_driver(job))
            except OperatorError as exc:
                raise PreflightError(f"preflight: {exc}; {hint}") from None
        check_drivers(job, opened[0], opened[1], hint)
    finally:
        for driver in opened:
            driver.close()


class _NoAnswer(Exception):
    """A probe still waiting when the check's time ran out."""


def _probe(driver, deadline: float) -> None:
    """``driver.probe`` with one quick second try for a transient failure, until ``deadline``."""
    for attempt in (1, 2):
        try:
            return _within(deadline - time.monotonic(), lambda: driver.probe(REQUEST_TIMEOUT_S))
        except RequestFailed as failure:
            if attempt == 2 or not _worth_second_try(failure):
                raise
        time.sleep(SECOND_TRY_PAUSE_S)


def _within(seconds: float, call: Callable[[], None]) -> None:
    """``call()`` in a daemon thread, waited for ``seconds`` at most: a driver whose SDK retries
    or waits longer than asked cannot hold the command. Its outcome, raised here."""
    outcome = []

    def run():
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread, which decides
            outcome.append(exc)

    worker = threading.Thread(target=run, name="preflight-probe", daemon=True)
    worker.start()
    worker.join(max(0.0, seconds))
    if not outcome:
        raise _NoAnswer()
    if outcome[0] is not None:
        raise outcome[0]


def _worth_second_try(failure: RequestFailed) -> bool:
    # A refused connection is an answer (nothing listens there), and a timeout has already
    # cost its seconds; a reset or a 5xx may be gone a moment later.
    return failure.retryable and not _timed_out(failure) and not _refused(failure)


def _refused(failure: RequestFailed) -> bool:
    return _in_chain(failure, ConnectionRefusedError, "Connection refused")


def _timed_out(failure: RequestFailed) -> bool:
    return failure.code == "Timeout" or _in_chain(failure, TimeoutError, "timed out")


def _in_chain(exc: Optional[BaseException], kind: type, words: str) -> bool:
    """True when ``exc`` or an exception it was raised from is a ``kind`` or says ``words``:
    the SDKs wrap the socket's error in two or three layers of their own."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, kind) or words in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _unreachable(job: JobConfig, side: Side, failure: RequestFailed, hint: str) -> str:
    if failure.status == 0 and _refused(failure):
        what = (f"the URL's host and port in {side.endpoint_key}" if side.asks_urls else
                f"{side.endpoint_key} (host and port)")
        problem, fix = ("refused the connection (nothing listens there)",
                        f"check {what} and that the server is up")
    elif failure.status == 0 and _timed_out(failure):
        problem, fix = (f"did not answer within {REQUEST_TIMEOUT_S:.0f} s",
                        f"check {side.endpoint_key} and the network (firewall, proxy)")
    elif failure.status == 0:
        problem, fix = (f"could not be reached ({failure.describe()})",
                        f"check {side.endpoint_key} and the network")
    elif failure.retryable:
        problem, fix = (f"failed twice ({failure.describe()})",
                        "the store is failing now: try again later")
    else:
        problem, fix = (f"refused the check ({failure.describe()})",
                        f"check {side.endpoint_key} and the {side.label} keys")
    where = f"{side.where}, {failure.key}," if side.asks_urls and failure.key else side.where
    return (f"preflight: the {side.label} ({where}) {problem}"
            f"{_located(job, (side.endpoint_key,))}: {fix}; {hint}")


def _located(job: JobConfig, keys) -> str:
    """' (destBucket: conf/local_job.cfg:4)': where the keys to fix are set."""
    places = [f"{key}: {job.path}:{job.key_lines[key]}" if key in job.key_lines else
              f"{key}: {job.path}" for key in keys]
    return f" ({', '.join(places)})" if places else ""
