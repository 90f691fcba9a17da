"""The retry engine on its own: a fake clock and sleep count every wait, nothing really sleeps.

Each story drives ``Retrier`` with a request that fails the way a store fails (500, 503 SlowDown,
403) and checks how many attempts were made, how long it waited between them, and what the
caller got in the end.
"""

import random

import pytest

from ossimport_dist.errors import VerificationMismatch
from ossimport_dist.retrying import Backpressure, Retrier, RetryPolicy, failure_text
from ossimport_dist.storage.errors import RequestFailed


class FakeClock:
    """Time that moves only when the engine sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """A request that fails with ``failures`` in turn, then returns "stored"."""

    def __init__(self, *failures):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return ("stored",) + args


def server_error() -> RequestFailed:
    return RequestFailed(500, "InternalError", "try again", operation="PutObject", key="a.txt")


def engine(clock: FakeClock, **policy) -> Retrier:
    return Retrier(RetryPolicy(**policy), sleep=clock.sleep, clock=clock, rng=random.Random(7),
                   backpressure=Backpressure(clock=clock, sleep=clock.sleep))


def test_transient_failures_are_retried_until_the_request_succeeds():
    clock = FakeClock()
    request = Flaky(server_error(), server_error())
    assert engine(clock, attempts=5, base=0.5, cap=20.0).call(request, "k") == ("stored", "k")
    assert request.calls == 3
    assert len(clock.sleeps) == 2
    # Jitter keeps each wait in the upper half of base * 2**(n-1).
    assert 0.25 <= clock.sleeps[0] <= 0.5 and 0.5 <= clock.sleeps[1] <= 1.0, clock.sleeps


def test_the_last_failure_is_raised_after_exactly_the_attempts_of_the_policy():
    clock = FakeClock()
    request = Flaky(*[server_error() for _ in range(10)])
    with pytest.raises(RequestFailed) as failed:
        engine(clock, attempts=4).call(request)
    assert request.calls == 4 and len(clock.sleeps) == 3
    assert failed.value.code == "InternalError"


def test_backoff_doubles_and_never_passes_its_cap():
    clock = FakeClock()
    request = Flaky(*[server_error() for _ in range(12)])
    with pytest.raises(RequestFailed):
        engine(clock, attempts=12, base=1.0, cap=8.0).call(request)
    assert len(clock.sleeps) == 11
    assert max(clock.sleeps) <= 8.0 and min(clock.sleeps[4:]) >= 4.0, clock.sleeps


def test_without_jitter_the_waits_are_exact():
    clock = FakeClock()
    with pytest.raises(RequestFailed):
        engine(clock, attempts=3, base=0.2, cap=0.4, jitter=False).call(Flaky(*[server_error()] * 3))
    assert clock.sleeps == [0.2, 0.4]


def test_a_refusal_is_not_retried():
    clock = FakeClock()
    request = Flaky(RequestFailed(403, "AccessDenied", "no", operation="PutObject", key="a.txt"))
    with pytest.raises(RequestFailed) as failed:
        engine(clock).call(request)
    assert request.calls == 1 and clock.sleeps == []
    assert failure_text(failed.value).startswith("PutObject a.txt: HTTP 403 AccessDenied")


def test_an_error_that_is_not_a_request_failure_is_not_retried():
    clock = FakeClock()
    request = Flaky(OSError(5, "Input/output error"))
    with pytest.raises(OSError):
        engine(clock).call(request)
    assert request.calls == 1 and clock.sleeps == []


def test_no_attempt_starts_after_the_deadline():
    clock = FakeClock()
    request = Flaky(*[server_error() for _ in range(50)])
    with pytest.raises(RequestFailed):
        engine(clock, attempts=50, base=1.0, cap=4.0, deadline=10.0).call(request)
    # The waits add up to the deadline and no more; the attempts stop well before 50.
    assert sum(clock.sleeps) == pytest.approx(10.0)
    assert request.calls < 10, request.calls


def test_a_halted_job_tries_a_failed_request_no_more():
    clock = FakeClock()
    request = Flaky(server_error(), server_error())
    retry = Retrier(RetryPolicy(attempts=5), sleep=clock.sleep, clock=clock, halted=lambda: True)
    with pytest.raises(RequestFailed):
        retry.call(request)
    assert request.calls == 1 and clock.sleeps == []


def test_slow_down_slows_the_next_attempt_of_every_thread():
    clock = FakeClock()
    slow = RequestFailed(503, "SlowDown", "Please reduce your request rate.")
    retry = engine(clock, attempts=3, base=0.0, cap=0.0)
    assert retry.call(Flaky(slow)) == ("stored",)
    assert retry.backpressure.pause > 0
    # The attempt after the SlowDown waited for the shared pause, not only its own backoff.
    assert sum(clock.sleeps) >= 0.2, clock.sleeps


def test_a_failed_check_is_sent_again_at_once_then_raised():
    clock = FakeClock()
    mismatches = [VerificationMismatch("CRC64_NOT_MATCH", f"read 1, stored {n}") for n in range(3)]
    sends = Flaky(*mismatches)
    with pytest.raises(VerificationMismatch) as failed:
        engine(clock, attempts=3).run(sends, resend_on=(VerificationMismatch,), what="a.txt")
    assert sends.calls == 3 and clock.sleeps == []
    assert str(failed.value) == "CRC64_NOT_MATCH: read 1, stored 2" and failed.value.code == "CRC64_NOT_MATCH"


def test_a_lost_response_that_did_its_work_is_a_success():
    clock = FakeClock()
    request = Flaky(server_error())
    got = engine(clock).run(request, rescue=lambda failure: "completed" if failure.retryable else None)
    assert got == "completed" and request.calls == 1 and clock.sleeps == []


def test_keep_going_false_ends_the_loop_without_an_attempt():
    clock = FakeClock()
    request = Flaky()
    assert engine(clock).run(request, keep_going=lambda: False) is None
    assert request.calls == 0


# ----------------------------------------------------------------- the code a failure carries

def test_a_failed_request_carries_the_store_code_where_it_is_made():
    from ossimport_dist.retrying import failed_result

    slow = RequestFailed(503, "SlowDown", "Please reduce your request rate.", operation="PutObject", key="a")
    result = failed_result("a", slow)
    assert result.code == "SlowDown" and result.detail.startswith("PutObject a: HTTP 503 SlowDown")
    # No response at all, and a local read error, each by its own code.
    assert failed_result("a", RequestFailed(0, "", "connection reset")).code == "network error"
    assert failed_result("a", PermissionError(13, "Permission denied", "/src/a")).code == "PermissionError"


def test_an_audit_log_line_without_a_code_still_gives_the_right_code():
    from ossimport_dist.models import FileResult, Outcome

    old = FileResult.from_record("a.bin", Outcome.FAILED, "PutObject a.bin: HTTP 403 AccessDenied denied RequestId=1")
    assert old.code == "AccessDenied"
    check = FileResult.from_record("b.bin", Outcome.CHECK_FAILED, "CRC64_NOT_MATCH: read 1, stored 2")
    assert check.code == "CRC64_NOT_MATCH"
    assert FileResult.from_record("c.bin", Outcome.SUCCEED, "").code == ""
