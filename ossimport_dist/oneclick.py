"""``import.sh``: OssImport's one-click flow.

submit (offering to clean an old job of the same name or resume it), start the service, write
``stat`` every few seconds into ``logs/job_stat.log`` while printing one progress line, offer
``retry`` when the job fails, and report success. ``--yes`` / ``--no`` answer every question
for scripts; without them and without a terminal, the safe answers are taken (resume, no retry,
leave the service running).

``--demo`` runs the same flow on a sample folder into the bundled OSS emulator.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from . import config as config_mod
from . import console
from .errors import OperatorError, StateError
from .status import ABORT, FAILED, SUCCEED, JobStatus, format_stat, human_bytes, human_duration, job_status


class Asker:
    def __init__(self, answer: Optional[bool]):
        self.answer = answer

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


def _restart_or_resume(paths: console.Paths, job_file: Path, name: str, asker: Asker,
                       choice: Optional[str]) -> bool:
    """For a job already submitted: True to clean it and submit the file again, False to resume
    it as submitted. When the file was edited since the submit, resuming takes an explicit word
    (``--resume``, or the answer on a terminal): the old job's success is not the new file's."""
    job = paths.home.job(name)
    origin, changes = config_mod.edits_since_submit(job.config_file)
    if not changes:
        return choice == "restart" or (choice is None and asker.ask(
            f"Job {name} already exists. Clean it and start over (y), or resume it (n)?", default=False))
    print(f"{origin} has changed since job {name} was submitted: {', '.join(changes)}")
    if choice is not None:
        return choice == "restart"
    if asker.answer is None and sys.stdin.isatty():
        return asker.ask("Clean the job and submit the edited file (y), or resume it as submitted (n)?",
                         default=False)
    if asker.answer:  # --yes: the question is "clean it and start over?"
        return True
    raise StateError(f"job {name} was submitted from {origin}, which has changed since; resuming would run "
                     f"the job as submitted: 'bash import.sh --restart' cleans it and submits the file again, "
                     f"'bash import.sh --resume' runs it as submitted")


def run_flow(paths: console.Paths, job_file: Path, asker: Asker, interval: float, max_retries: int,
             stop_when_done: Optional[bool] = None, choice: Optional[str] = None) -> tuple:
    """Returns (exit code, last JobStatus). ``choice`` ('resume' or 'restart') decides for a job
    already submitted, without a question."""
    job_cfg = config_mod.load_job(job_file)
    console.warn(job_cfg.warnings)
    home = paths.home
    job = home.job(job_cfg.job_name)
    if job.exists():
        if _restart_or_resume(paths, job_file, job_cfg.job_name, asker, choice):
            console.cmd_stop(paths, None)
            console.cmd_clean(paths, SimpleNamespace(job=job_cfg.job_name))
            console.cmd_submit(paths, SimpleNamespace(job_file=str(job_file)))
        else:
            print(f"resuming job:{job_cfg.job_name} as submitted; {done_so_far(home, job)}")
    else:
        console.cmd_submit(paths, SimpleNamespace(job_file=str(job_file)))
    # This job's case is decided above; another job of the workingDir edited since is refused.
    if console.cmd_start(paths, SimpleNamespace(resume=False, decided={job_cfg.job_name})) != 0:
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
            print(f"Job {s.name} succeeded: {t.succeed} files copied and verified, {t.skipped} skipped, "
                  f"{human_bytes(t.succeed_bytes)} in {elapsed:.1f} s. JobState:Succeed")
            stop = stop_when_done if stop_when_done is not None else asker.ask("Stop the service?", default=False)
            if stop:
                console.cmd_stop(paths, None)
            return 0, s
        if s.state == FAILED:
            print(format_stat(s))
            print(console.detail_lines(job))
            # Tasks whose TASK was damaged cannot run again, and a scan that gave up already
            # retried with backoff: its Reason says what to fix before 'console.sh retry'.
            retryable = s.failed_tasks - s.damaged_tasks
            if (not s.scan_failed and retryable > 0 and retries < max_retries
                    and asker.ask(f"{retryable} task(s) failed. Retry them?", default=False)):
                retries += 1
                console.cmd_retry(paths, SimpleNamespace(job=s.name, resume=True))
            else:
                why = s.reasons[0] if s.reasons else (f"see {job.failed}/*/error.list and "
                                                      f"{home.logs / 'ossimport2.log'}")
                print(f"Job {s.name} failed: {why}. JobState:Failed")
                return 1, s
        elif s.state == ABORT:
            print(f"the service is not running (it stopped or died); see {home.logs / 'ossimport2.log'}; "
                  f"'bash import.sh' or 'console.sh start' resumes the job", file=sys.stderr)
            return 1, s
        time.sleep(interval)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="import.sh", description="one-click import")
    p.add_argument("--install-dir", default=".")
    p.add_argument("--sys", dest="sys_file", default=None, help="sys.properties to use (default conf/sys.properties)")
    answer = p.add_mutually_exclusive_group()
    answer.add_argument("--yes", action="store_true", help="answer yes to every question")
    answer.add_argument("--no", action="store_true", help="answer no to every question")
    p.add_argument("--demo", action="store_true", help="migrate a sample folder into the bundled OSS emulator")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between progress lines")
    p.add_argument("--max-retries", type=int, default=3)
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--resume", action="store_const", const="resume", dest="choice",
                        help="a job already submitted: resume it as submitted, even if its file was edited")
    choice.add_argument("--restart", action="store_const", const="restart", dest="choice",
                        help="a job already submitted: clean it and submit the job file again")
    p.add_argument("job_file", nargs="?")
    args = p.parse_args(argv)
    asker = Asker(True if args.yes else False if args.no else None)
    install_dir = Path(args.install_dir).resolve()
    try:
        if args.demo:
            from . import demo

            return demo.run(install_dir, interval=min(args.interval, 1.0))
        paths = console.Paths(install_dir, Path(args.sys_file) if args.sys_file else None)
        job_file = Path(args.job_file) if args.job_file else paths.default_job_file()
        code, _ = run_flow(paths, job_file, asker, args.interval, args.max_retries, choice=args.choice)
        return code
    except OperatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted; the service keeps running in the background ('console.sh stop' ends it)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
