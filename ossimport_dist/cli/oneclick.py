"""``import.sh``: OssImport's one-click flow.

submit (offering to clean an old job of the same name or resume it), start the service, write
``stat`` every few seconds into ``logs/job_stat.log`` while printing one progress line, offer
``retry`` when the job fails (not when no retry can fix its failures), and report success.
``--yes`` / ``--no`` answer every question for scripts; without them and without a terminal, the
safe answers are taken (resume, no retry). A scripted run stops the service it started when the
job ends (``--keep-running`` keeps it); on a terminal, Ctrl-C asks whether to stop it or keep it
copying in the background.

``import.sh --demo`` runs the same flow on a sample folder into the bundled OSS emulator: that is
``oss_emulator.demo`` (the emulator is not part of this package, nor of the workers' bundle).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import config as config_mod
from .. import preflight
from ..accounting import retry_cost
from ..errors import OperatorError, StateError
from ..report import REPORT_HTML, report_is_stale
from ..status import (ABORT, FAILED, RUNNING, SUBMITTED, SUCCEED, JobStatus, format_stat, human_bytes,
                     human_duration, job_status)
from . import console


class Asker:
    def __init__(self, answer: Optional[bool]):
        self.answer = answer

    @property
    def interactive(self) -> bool:
        """A person at a terminal answers (no --yes/--no)."""
        return self.answer is None and sys.stdin.isatty()

    def ask(self, question: str, default: bool) -> bool:
        if self.answer is not None:
            print(f"{question} [{'y' if self.answer else 'n'}]")
            return self.answer
        if not sys.stdin.isatty():
            print(f"{question} [{'y' if default else 'n'}] (no terminal: default)")
            return default
        while True:
            reply = input(f"{question} (y/n) ").strip().lower()
            if reply in ("y", "yes"):
                return True
            if reply in ("n", "no"):
                return False


@dataclass
class ServiceSession:
    """Whose service import.sh watches: a scripted run stops the one it started when the job
    ends, so a cron job leaves no process behind; one that ran before import.sh is not its own."""

    interactive: bool
    keep_running: bool = False
    started_here: Optional[bool] = None  # None until import.sh comes to starting the service
    job_name: str = ""

    def keeps_it(self, home) -> bool:
        """Not this run's to stop: it ran before, --keep-running, or (for a script, which cannot
        be asked) it still copies another job, which stopping would abort."""
        return (not self.started_here or self.keep_running
                or (not self.interactive and bool(_unfinished_jobs(home, self.job_name))))

    def keeps_running_line(self) -> str:
        what = f"job {self.job_name}" if self.job_name else "its jobs"
        return (f"the service keeps copying {what} in the background: 'console.sh stat' shows "
                f"its progress, 'bash import.sh' comes back to it, 'console.sh stop' stops it")


def progress_line(s: JobStatus) -> str:
    t = s.totals
    total = f"{s.objects}" + ("" if s.scan_finished else "+")
    eta = f", ETA {human_duration(s.eta_s)}" if s.eta_s is not None else ""
    # A large file moves the figure as it is sent (job_status keeps sending within the total).
    moved = t.done_bytes + s.sending_bytes
    return (f"[{time.strftime('%H:%M:%S')}] {s.state}: files {t.done_files}/{total} "
            f"(failed {t.failed}), {human_bytes(moved)}/{human_bytes(s.bytes)}, "
            f"{human_bytes(s.bytes_per_s)}/s, {s.files_per_s:.0f} files/s{eta}, tasks pending {s.pending_tasks} "
            f"dispatched {s.dispatched_tasks} succeed {s.succeed_tasks} failed {s.failed_tasks}")


def done_so_far(home, job) -> str:
    """What an interrupted (Ctrl-C, killed) or finished run of the job did, before resuming it."""
    s = job_status(home, job, console.service_pid(home) is not None)
    t = s.totals
    total = f"{s.objects}" + ("" if s.scan_finished else "+")  # more to come while the scan runs
    return (f"done so far: {t.done_files}/{total} files ({human_bytes(t.done_bytes)}/{human_bytes(s.bytes)}), "
            f"failed {t.failed}, JobState:{s.state}")


FAILURES_SHOWN = 20  # import.sh's failure report: the first ones, then where the rest are


def _print_first_failures(job, distributed: bool, running: bool) -> None:
    """The first failed files and why (``stat detail``'s lines); thousands of them would hide
    the one line that says what to do."""
    lines = console.detail_lines(job, distributed, running).splitlines()
    failed = [line for line in lines if line.startswith("Failed:")]
    print("\n".join(failed[:FAILURES_SHOWN]))
    if len(failed) > FAILURES_SHOWN:
        print(f"... {len(failed) - FAILURES_SHOWN} more: 'console.sh errors {job.name}' lists every failed file")


def _restart_or_resume(paths: console.Paths, job_file: Path, name: str, asker: Asker,
                       choice: Optional[str]) -> bool:
    """For a job already submitted: True to clean it and submit the file again, False to resume
    it as submitted. When the file was edited since the submit, resuming takes an explicit word
    (``--resume``, or the answer on a terminal): the old job's success is not the new file's.
    When only credentials were edited, resuming takes them into the job first (no rescan)."""
    job = paths.home.job(name)
    origin, changes = config_mod.edits_since_submit(job.config_file)
    if not changes:
        if choice == "take-secrets":
            print(f"job {name}: no credential changed in {job_file} since the submit; resuming it")
            return False
        return choice == "restart" or (choice is None and asker.ask(
            f"Job {name} already exists. Clean it and start over (y), or resume it (n)?", default=False))
    print(f"{origin} has changed since job {name} was submitted: {', '.join(changes)}")
    _, keys = config_mod.edited_keys(job.config_file)
    if all(k in config_mod.CREDENTIAL_KEYS for k in keys):
        return _take_credentials_or_restart(paths, name, origin, keys, asker, choice)
    if choice == "take-secrets":
        raise StateError(f"--take-secrets takes only {', '.join(config_mod.CREDENTIAL_KEYS)}, and {origin} has "
                         f"other changes: 'bash import.sh --restart' cleans the job and submits the file again, "
                         f"'bash import.sh --resume' runs it as submitted")
    if choice is not None:
        return choice == "restart"
    if asker.interactive:
        return asker.ask("Clean the job and submit the edited file (y), or resume it as submitted (n)?",
                         default=False)
    if asker.answer:  # --yes: the question is "clean it and start over?"
        return True
    raise StateError(f"job {name} was submitted from {origin}, which has changed since; resuming would run "
                     f"the job as submitted: 'bash import.sh --restart' cleans it and submits the file again, "
                     f"'bash import.sh --resume' runs it as submitted")


def _take_credentials_or_restart(paths: console.Paths, name: str, origin: str, keys: list, asker: Asker,
                                 choice: Optional[str]) -> bool:
    """Only credentials changed (a fixed key): the job can go on where it is with them."""
    if choice == "restart":
        return True
    take = choice in ("resume", "take-secrets") or asker.answer is True
    if choice is None and asker.interactive:
        take = asker.ask(f"Take the new {', '.join(keys)} into job {name} and resume it without a rescan (y), "
                         f"or clean it and submit the file again (n)?", default=True)
        if not take:
            return True
    if not take:
        raise StateError(f"job {name} was submitted from {origin}, where only credentials changed since "
                         f"({', '.join(keys)}): 'bash import.sh --take-secrets' takes them into the job without "
                         f"a rescan, 'bash import.sh --restart' cleans it and submits the file again")
    console.take_edited_credentials(paths.home, name, origin, keys)
    return False


def run_flow(paths: console.Paths, job_file: Path, asker: Asker, interval: float, max_retries: int,
             session: Optional[ServiceSession] = None, choice: Optional[str] = None,
             no_preflight: bool = False) -> tuple:
    """Returns (exit code, last JobStatus). ``choice`` ('resume' or 'restart') decides for a job
    already submitted, without a question. ``no_preflight`` skips the check before copying at
    submit and start. When the job ends, the service is stopped or kept as
    ``session`` says; a KeyboardInterrupt is left to the caller (``interrupted``)."""
    session = session or ServiceSession(interactive=asker.interactive)
    try:
        result = _watch_job(paths, job_file, asker, interval, max_retries, session, choice, no_preflight)
    except Exception:  # an operator's error, or a bug: either way no service is left behind
        _after_job(paths, session, asker)
        raise
    _after_job(paths, session, asker)
    return result


REPORT_WAIT_S = 3.0  # the service looks at ended jobs every second; a small job's report takes ms


def _say_where_the_report_is(paths: console.Paths, s: JobStatus) -> None:
    """Where the report of the job that just ended is, once the service has written it (a
    large job's takes longer than import.sh waits: the line says it is being written)."""
    job = paths.home.job(s.name)
    deadline = time.monotonic() + REPORT_WAIT_S
    while report_is_stale(job) and console.service_pid(paths.home) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    when = " (the service is writing it)" if report_is_stale(job) else ""
    print(f"report: {job.report_dir / REPORT_HTML}{when}; 'console.sh verify-report {s.name}' checks the "
          f"destination against it later")


def _after_job(paths: console.Paths, session: ServiceSession, asker: Asker) -> None:
    if session.started_here is None or console.service_pid(paths.home) is None:
        return  # refused before the start, or the service is gone: nothing to stop
    if not session.started_here:
        print("the service was running before import.sh started, so it keeps running ('console.sh stop' ends it)")
    elif session.keep_running:
        print("the service keeps running (--keep-running); 'console.sh stop' ends it")
    elif session.keeps_it(paths.home):
        busy = _unfinished_jobs(paths.home, session.job_name)
        print(f"the service keeps running: it still copies job(s) {', '.join(busy)} ('console.sh stop' ends it)")
    elif not session.interactive or asker.ask("Stop the service?", default=False):
        console.stop_service(paths)


def _unfinished_jobs(home, this_job: str) -> list:
    return [name for name in home.job_names() if name != this_job
            and job_status(home, home.job(name), True).state in (SUBMITTED, RUNNING)]


def interrupted(paths: console.Paths, session: ServiceSession) -> int:
    """Ctrl-C (or, without a terminal, SIGTERM) while import.sh watches: on a terminal, the
    operator says whether the service stops or keeps copying; a script's service stops unless
    --keep-running. Either way the last line says how to come back. Exit code 130."""
    print()
    if console.service_pid(paths.home) is None:
        print("interrupted; the service is not running: 'bash import.sh' goes on from where this stopped")
        return 130
    if session.keeps_it(paths.home):
        print(f"interrupted; {session.keeps_running_line()}")
        return 130
    stop = not session.interactive
    if session.interactive:
        try:
            while True:
                reply = input("Stop the service (s), or keep it copying in the background (k)? ").strip().lower()
                if reply in ("s", "stop", "k", "keep"):
                    stop = reply.startswith("s")
                    break
        except (KeyboardInterrupt, EOFError):  # a second Ctrl-C stops nothing
            print(f"\n{session.keeps_running_line()}")
            return 130
    if stop:
        console.stop_service(paths)
        print(f"job {session.job_name} stopped where it was: 'bash import.sh' or 'console.sh start' resumes it, "
              f"'console.sh stat' shows where it is")
    else:
        print(session.keeps_running_line())
    return 130


def _watch_job(paths: console.Paths, job_file: Path, asker: Asker, interval: float, max_retries: int,
               session: ServiceSession, choice: Optional[str], no_preflight: bool) -> tuple:
    job_cfg = config_mod.load_job(job_file)
    console.warn(job_cfg.warnings)
    home = paths.home
    job = home.job(job_cfg.job_name)
    submitted = set()  # checked by submit's preflight a moment ago: start need not ask again
    session.job_name = job_cfg.job_name
    if job.exists():
        if _restart_or_resume(paths, job_file, job_cfg.job_name, asker, choice):
            if not no_preflight:
                # Before the old job's state goes: a file that cannot work leaves it as it was.
                preflight.check_job(job_cfg)
            console.stop_service(paths)
            console.clean_jobs(paths, [job_cfg.job_name])
            console.submit_job(paths, job_file, preflight=False)
            submitted.add(job_cfg.job_name)
        else:
            print(f"resuming job:{job_cfg.job_name} as submitted; {done_so_far(home, job)}")
    else:
        console.submit_job(paths, job_file, preflight=not no_preflight)
        submitted.add(job_cfg.job_name)
    # Set before the start: a Ctrl-C while it waits for the service still knows whose it is.
    session.started_here = console.service_pid(home) is None
    # This job's case is decided above; another job of the workingDir edited since is refused.
    if console.start_service(paths, decided={job_cfg.job_name}, no_preflight=no_preflight,
                             preflighted=submitted) != 0:
        return 1, None
    stat_log = home.private_log("job_stat.log")
    retries = 0
    started = time.monotonic()
    last_scan_error = ""
    while True:
        running = console.service_pid(home) is not None
        s = job_status(home, job, running)
        with open(stat_log, "a", encoding="utf-8") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S") + "\n" + format_stat(s) + "\n\n")
        print(progress_line(s), flush=True)
        if s.scan_error and s.scan_error != last_scan_error:
            print(f"  scan error: {s.scan_error}", flush=True)
        last_scan_error = s.scan_error
        if s.state == SUCCEED:
            t = s.totals
            elapsed = time.monotonic() - started
            print(format_stat(s))
            _say_where_the_report_is(paths, s)
            print(f"Job {s.name} succeeded: {t.succeed} files copied and verified, {t.skipped} skipped, "
                  f"{human_bytes(t.succeed_bytes)} in {elapsed:.1f} s. JobState:Succeed")
            return 0, s
        if s.state == FAILED:
            print(format_stat(s))
            _print_first_failures(job, paths.distributed, running)
            cost = retry_cost(job.failed_dirs())
            if not s.scan_failed and cost.only_needs_a_change:
                _say_where_the_report_is(paths, s)
                print(f"Job {s.name} failed: {cost.files} file(s), {human_bytes(cost.bytes)}, cannot be copied "
                      f"until the source or the destination changes (missing at the source, or a name that "
                      f"cannot be a key), so no retry is offered: 'console.sh errors {s.name}' lists them. "
                      f"JobState:Failed")
                return 1, s
            # Tasks whose TASK was damaged cannot run again, and a scan that gave up already
            # retried with backoff, and a job stopped on a fatal error would stop the same way
            # unless its settings were fixed since: its Reason says what to fix before a retry.
            retryable = s.failed_tasks - s.damaged_tasks
            stuck = s.job_stopped and not job.fixed_since_stop()
            if (not s.scan_failed and not stuck and retryable > 0 and retries < max_retries
                    and asker.ask(f"{retryable} task(s) failed. Retry them?", default=False)):
                retries += 1
                console.retry_jobs(paths, s.name, resume=True)
            else:
                why = s.reasons[0] if s.reasons else (f"see {job.failed}/*/error.list and "
                                                      f"{home.logs / 'ossimport2.log'}")
                _say_where_the_report_is(paths, s)
                print(f"Job {s.name} failed: {why}. JobState:Failed")
                return 1, s
        elif s.state == ABORT:
            print(f"the service is not running (it stopped or died); see {home.logs / 'ossimport2.log'}; "
                  f"'bash import.sh' or 'console.sh start' resumes the job", file=sys.stderr)
            return 1, s
        _wait_for_next_line(job, interval)


SETTLED_POLL_S = 0.05


def _wait_for_next_line(job, interval: float) -> None:
    """Until the next progress line is due, or sooner once the job comes to have no task left
    to run: an operator's job (or script) ends when the job does, not up to ``interval``
    later. A job already without tasks (between incremental rounds) waits the whole interval."""
    due = time.monotonic() + interval
    running = not job.settled()
    while time.monotonic() < due:
        time.sleep(min(SETTLED_POLL_S, max(0.0, due - time.monotonic())))
        if running and job.settled():
            return


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="import.sh", description="one-click import")
    p.add_argument("--install-dir", default=".")
    p.add_argument("--sys", dest="sys_file", default=None, help="sys.properties to use (default conf/sys.properties)")
    answer = p.add_mutually_exclusive_group()
    answer.add_argument("--yes", action="store_true", help="answer yes to every question")
    answer.add_argument("--no", action="store_true", help="answer no to every question")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between progress lines")
    p.add_argument("--max-retries", type=int, default=3)
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--resume", action="store_const", const="resume", dest="choice",
                        help="a job already submitted: resume it as submitted, even if its file was edited")
    choice.add_argument("--restart", action="store_const", const="restart", dest="choice",
                        help="a job already submitted: clean it and submit the job file again")
    p.add_argument("--no-preflight", action="store_true", help=console.NO_PREFLIGHT_HELP)
    choice.add_argument("--take-secrets", action="store_const", const="take-secrets", dest="choice",
                        help="a job already submitted whose file changed only in credentials: take them into "
                             "the job and resume it, without a rescan")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the service running when the job ends (a scripted run stops the one it started)")
    p.add_argument("job_file", nargs="?")
    args = p.parse_args(argv)
    asker = Asker(True if args.yes else False if args.no else None)
    session = ServiceSession(interactive=asker.interactive, keep_running=args.keep_running)
    if not session.interactive:
        # A script's 'timeout' or 'kill' ends import.sh as Ctrl-C would: the service it started stops.
        signal.signal(signal.SIGTERM, _raise_interrupt)
    install_dir = Path(args.install_dir).resolve()
    paths = None
    try:
        paths = console.Paths(install_dir, Path(args.sys_file) if args.sys_file else None)
        job_file = Path(args.job_file) if args.job_file else paths.default_job_file()
        code, _ = run_flow(paths, job_file, asker, args.interval, args.max_retries, session, choice=args.choice,
                           no_preflight=args.no_preflight)
        return code
    except OperatorError as exc:
        print(f"error: {config_mod.scrub_passwords(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if paths is None:
            print("\ninterrupted")
            return 130
        return interrupted(paths, session)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
