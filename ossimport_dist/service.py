"""The standalone service that ``console.sh start`` runs in the background.

One process holds the three roles of a standalone OssImport: the master (one scanner per job
whose listing is not finished), the tracker (dispatch and reconcile) and the worker named
``localhost``. It runs until ``console.sh stop`` (SIGTERM), idles when there is nothing to do,
and picks up newly submitted jobs and retried tasks as they appear on disk.

``sys.properties`` is re-read while running: a new ``workerMaxThroughput(KB/s)`` or a larger
``workerTaskThreadNum`` takes effect within seconds (OssImport needs a restart).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from . import config as config_mod
from . import servicelock
from .accounting import JobAccount
from .errors import OperatorError
from .fatal import FatalDetector, stopped_job_reason
from .layout import Home, JobLayout, private_file, write_atomic
from .models import Task
from .report import ReportKeeper
from .schedule import Timetable
from .scanner import ListingRetry, ScanFailed, Scanner, SplitLimits, damaged_checkpoints
from .storage import open_job_destination, open_job_source
from .throttle import Throttle
from .tracker import LocalTracker, job_caps
from .transfer import Backpressure, TransferOptions, Transferer
from .worker import JobRuntime, Worker

log = logging.getLogger("ossimport.service")

TICK_S = 0.2
PROGRESS_EVERY_S = 1.0
# How long a stopping service waits for a report being written; one cut short is written again
# at the next start (it is still stale) or by 'console.sh report'.
REPORT_WAIT_S = 30.0
SYS_RELOAD_EVERY_S = 3.0


def throughput_bps(sys_cfg, now: Optional[float] = None) -> int:
    """The worker's own cap at ``now`` (bytes/s, 0 none): its schedule's slot when it has one
    (``workerMaxThroughputSchedule``), else workerMaxThroughput(KB/s)."""
    timetable = Timetable.parse(sys_cfg.worker_max_throughput_schedule)
    if timetable is not None:
        return timetable.bytes_per_s(time.time() if now is None else now)
    return int(sys_cfg.worker_max_throughput_kbs) * 1024


def effective_rate(sys_cfg, budget_bps: Optional[int], now: Optional[float] = None) -> int:
    """Bytes/s this worker may use: its own cap, and its share of the job-wide budget."""
    return _tightest(throughput_bps(sys_cfg, now), budget_bps)


def effective_qps(sys_cfg, budget_qps: Optional[int]) -> int:
    """Files this worker may start per second: workerMaxQps, and its share of jobMaxQps."""
    return _tightest(sys_cfg.worker_max_qps, budget_qps)


def _tightest(*caps) -> int:
    """The lowest cap that is set (0 and None are none), 0 when none is."""
    return min((c for c in caps if c), default=0)


def open_job_drivers(job_cfg, sys_cfg=None):
    """(source, destination) for a job, the same way for scanner, worker and agent; ``sys_cfg``
    when they run its tasks (see ``open_job_source``)."""
    return open_job_source(job_cfg, sys_cfg), open_job_destination(job_cfg, sys_cfg)


def build_runtime(job_cfg, sys_cfg, throttle: Throttle, backpressure: Backpressure, host: str,
                  account: Optional[JobAccount] = None) -> JobRuntime:
    """``account``: the job's account when the runtime is rebuilt for a changed job.cfg, so the
    tasks still running on the old one stay counted."""
    source, destination = open_job_drivers(job_cfg, sys_cfg)
    account = account or JobAccount(job_cfg.job_name, host)
    options = TransferOptions(
        multipart_threshold=job_cfg.multipart_upload_threshold,
        part_size=job_cfg.multipart_upload_part_size,
        parts_in_parallel=job_cfg.upload_thread_num_per_large_file,
        skip_existing=job_cfg.is_skip_exist_file,
        record_md5=sys_cfg.worker_record_md5 or job_cfg.audit_mode == "detailed",
        server_side_encryption=job_cfg.is_server_side_encryption,
    )
    transferer = Transferer(source, destination, options, throttle, on_bytes=account.add_bytes,
                             backpressure=backpressure)
    health = FatalDetector(unreachable_for=sys_cfg.worker_endpoint_down_timeout,
                           source_problem=source.root_problem)
    return JobRuntime(name=job_cfg.job_name, transferer=transferer, account=account,
                      audit_only=job_cfg.job_type == "audit", audit_mode=job_cfg.audit_mode,
                      audit_after_import=job_cfg.is_audit_after_import,
                      abort_on_unexpected=sys_cfg.worker_abort_when_uncatched_exception, health=health)


class Master:
    """The master role, the same in both modes: the jobs on disk and one scan per job whose
    listing is not finished. It picks up newly submitted jobs while running."""

    def __init__(self, home: Home, stop_event: threading.Event, on_job_loaded,
                 on_task_added: Optional[Callable[[Task], None]] = None):
        self.home = home
        self.stop_event = stop_event
        self.on_job_loaded = on_job_loaded  # (name, job_cfg, JobLayout) -> None
        self.on_task_added = on_task_added  # a task the scan put in pending_tasks/
        self.jobs: dict = {}  # name -> JobLayout
        self.incremental: dict = {}  # name -> seconds between rescans, for incremental jobs
        self._scanners: dict = {}  # name -> Thread
        self._load_failed: set = set()  # jobs that could not be loaded, until a retry
        self.listing_retry = ListingRetry.from_env()

    def ordered_jobs(self) -> list:
        return [self.jobs[n] for n in sorted(self.jobs)]

    def refresh(self) -> None:
        names = set(self.home.job_names())
        for gone in set(self.jobs) - names:
            log.info("job %s: removed (clean)", gone)
            self.jobs.pop(gone, None)
        for name in sorted(names - set(self.jobs)):
            job = self.home.job(name)
            if name in self._load_failed and job.scan_failure() is not None:
                continue  # Failed with its reason until 'console.sh retry' clears it
            self._load_failed.discard(name)
            try:
                job_cfg = config_mod.load_job(job.config_file)
                self.on_job_loaded(name, job_cfg, job)
            except OperatorError as exc:
                # A job.cfg edited by hand, a source or destination folder gone: the job ends
                # Failed with the reason, and the service serves its other jobs.
                self._load_failed.add(name)
                self._give_up(job, f"cannot start the job: {exc}; once fixed, 'console.sh retry {name}' "
                                        f"starts it again")
                continue
            self.jobs[name] = job
            self._rebuild_damaged_checkpoints(job)
            if job_cfg.is_incremental:
                self.incremental[name] = job_cfg.incremental_mode_interval
            log.info("job %s: loaded (%s -> %s/%s)", name, job_cfg.src_type, job_cfg.dest_domain,
                     job_cfg.dest_bucket)
        for name, job in self.jobs.items():
            if job.scan_finished:
                self._next_round(name, job)
            if job.scan_finished or (name in self._scanners and self._scanners[name].is_alive()):
                continue
            if job.scan_failure() is not None:
                continue  # Failed with its reason until 'console.sh retry' clears it
            t = threading.Thread(target=self._scan, args=(name,), name=f"scan-{name}", daemon=True)
            self._scanners[name] = t
            t.start()

    def _next_round(self, name: str, job: JobLayout) -> None:
        """Incremental jobs: once a round is complete, schedule the next rescan, then start it."""
        if not self.incremental.get(name) or not job.idle():
            return
        state = job.round_state()
        now = time.time()
        if state["next_at"] is None:
            interval = self.incremental[name]
            job.set_round_state(state["round"], now + interval)
            log.info("job %s: round %d complete; next rescan in %d s", name, state["round"], interval)
        elif now >= state["next_at"]:
            retried = job.start_round(state["round"] + 1)
            log.info("job %s: round %d: rescanning the source (%d failed task(s) of the last round retried)",
                     name, state["round"] + 1, retried)

    def _rebuild_damaged_checkpoints(self, job: JobLayout) -> None:
        """A finished scan with a damaged checkpoint would lose that unit from the totals: the
        scan runs again, rebuilds it from the unit's tasks, and finds nothing new to cut."""
        if not job.scan_finished:
            return
        bad = damaged_checkpoints(job, job.round_state()["round"])
        if bad:
            log.error("job %s: %d damaged checkpoint(s), first %s; scanning again to rebuild them",
                      job.name, len(bad), bad[0])
            job.reopen_scan()

    def _scan(self, name: str) -> None:
        job = self.jobs[name]
        try:
            job_cfg = config_mod.load_job(job.config_file)
            source, _ = open_job_drivers(job_cfg)
            round_no = job.round_state()["round"]
            limits = SplitLimits.for_job(job_cfg, first_round=round_no == 0)
            Scanner(job, source, limits, threads=job_cfg.scan_thread_count,
                    depth=job_cfg.max_multi_thread_scan_depth, stop=self.stop_event,
                    round_no=round_no, incremental=job_cfg.is_incremental, retry=self.listing_retry,
                    source_label=source_label(job_cfg), on_retry=job.note_scan_error,
                    on_task=self.on_task_added).run()
            job.clear_scan_error()
        except ScanFailed as exc:
            self._give_up(job, f"{exc}; once it answers, 'console.sh retry {name}' resumes the scan "
                                    f"from its checkpoints")
        except OperatorError as exc:
            self._give_up(job, f"{exc}; once fixed, 'console.sh retry {name}' resumes the scan "
                                    f"from its checkpoints")
        except Exception as exc:  # noqa: BLE001 - keep the service alive; the log has the trace
            log.exception("job %s: scan failed", name)
            self._give_up(job, f"unexpected error while scanning: {type(exc).__name__}: {exc} (the trace "
                                    f"is in the service log); 'console.sh retry {name}' runs the scan again")

    @staticmethod
    def _give_up(job: JobLayout, reason: str) -> None:
        log.error("job %s: gave up: %s", job.name, reason)
        job.fail_scan(reason)


def source_label(job_cfg) -> str:
    """The source as messages name it, by the keys that set it."""
    if job_cfg.src_type == "local":
        return f"srcPrefix {job_cfg.src_prefix}"
    if job_cfg.src_type == "http":
        return f"httpListFilePath {job_cfg.http_list_file_path}"
    if job_cfg.src_type == "list":
        return f"listFilePath {job_cfg.list_file_path} (listSrcType={job_cfg.list_src_type})"
    return f"srcType={job_cfg.src_type} srcBucket '{job_cfg.src_bucket}' at {job_cfg.src_domain}"


class SysWatcher:
    """Re-reads sys.properties when it changes; a bad edit keeps the old settings."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.current = config_mod.load_sys(self.path)
        self._mtime = self._stamp()

    def _stamp(self):
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def changed(self):
        """The new settings when the file changed and is valid, else None."""
        stamp = self._stamp()
        if stamp == self._mtime:
            return None
        self._mtime = stamp
        try:
            new = config_mod.load_sys(self.path)
        except OperatorError as exc:
            log.error("sys.properties changed but is not valid, keeping the old settings: %s", exc)
            return None
        self.current = new
        return new


class ServiceLoop:
    """The tick loop both services run until SIGTERM."""

    name = "service"
    tick_s = TICK_S
    # A tick woken early (wake_up) comes at most this often: a flood of small tasks finishing
    # must not turn into a flood of ticks, each listing the pending tasks.
    woken_tick_s = 0.05

    def __init__(self):
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self.reports = ReportKeeper()  # each job's report, written when the job ends
        self.metrics = None  # the Prometheus endpoint (metricsAddress), while the service runs

    def serve_metrics(self, home: Home, sys_cfg, hosts: Callable[[], list]) -> None:
        # Imported here: the agents run this module too, and never serve metrics.
        from . import metrics

        self.metrics = metrics.serve(sys_cfg.metrics_address, home, hosts)

    def stop_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None

    def wake_up(self) -> None:
        """Tick now, not at the end of the tick interval: a task to dispatch appeared (the
        scan's first ones), or a finished one left room in the worker."""
        self._wake.set()

    def started(self) -> None:
        pass

    def tick(self, now: float) -> None:
        raise NotImplementedError

    def stopping(self) -> None:
        pass

    def _stop_running(self, *_) -> None:
        self.stop_event.set()
        self._wake.set()

    def run(self) -> int:
        # A service holds the entries of every task it runs (10,000 a task by default): with the
        # default thresholds the collector walked them again and again, some 15% of a small-file
        # job's samples. What exists at start is never garbage; young objects are collected
        # less often.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        signal.signal(signal.SIGTERM, self._stop_running)
        signal.signal(signal.SIGINT, self._stop_running)
        self.started()
        try:
            while not self.stop_event.is_set():
                self.tick(time.monotonic())
                if self._wake.wait(self.tick_s) and not self.stop_event.is_set():
                    self.stop_event.wait(self.woken_tick_s)
                self._wake.clear()
        finally:
            log.info("%s stopping", self.name)
            self.stopping()
            log.info("%s stopped", self.name)
        return 0


class StandaloneService(ServiceLoop):
    """Master, tracker and the worker named ``localhost`` in one process."""

    def __init__(self, home: Home, sys_path: Path):
        super().__init__()
        self.home = home
        self.sys = SysWatcher(sys_path)
        sys_cfg = self.sys.current
        self.throttle = Throttle(throughput_bps(sys_cfg))
        self.backpressure = Backpressure()  # one per worker: a throttled destination slows every thread
        self.worker = Worker(sys_cfg.worker_task_thread_num, self._task_finished, on_job_stopped=self._job_stopped)
        self.tracker = LocalTracker(self.worker, self._runtime_for, home.worker)
        self.runtimes: dict = {}  # job name -> JobRuntime
        self.config_stamps: dict = {}  # job name -> mtime of the job.cfg its runtime was built from
        self.master = Master(home, self.stop_event, self._job_loaded, on_task_added=lambda task: self.wake_up())
        self._last_progress = self._last_reload = 0.0

    def _runtime_for(self, name: str) -> JobRuntime:
        """The job's runtime for a task about to run, rebuilt when its job.cfg changed since
        ('console.sh set' of a fixed secret): the next tasks use the new drivers, no restart.
        A stopped job's runtime is rebuilt only once retried (``_resume_retried_jobs``)."""
        runtime = self.runtimes[name]
        job = self.home.job(name)
        now = _config_stamp(job)
        if now is None or now == self.config_stamps.get(name) or runtime.stopped is not None:
            return runtime
        try:
            job_cfg = config_mod.load_job(job.config_file)
            runtime = build_runtime(job_cfg, self.sys.current, self.throttle, self.backpressure, "localhost",
                                    account=runtime.account)
        except OperatorError as exc:
            log.error("job %s: job.cfg changed but cannot be used, keeping the settings it had: %s", name, exc)
        else:
            log.info("job %s: job.cfg changed; the next tasks use its settings", name)
        self.runtimes[name], self.config_stamps[name] = runtime, now
        self._apply_rate()  # 'console.sh set' of a cap: from its next file on
        return runtime

    def _job_loaded(self, name: str, job_cfg, job: JobLayout) -> None:
        runtime = build_runtime(job_cfg, self.sys.current, self.throttle, self.backpressure, "localhost")
        stopped = job.job_failure()
        if stopped is not None:  # stopped before this start: its leftover tasks drain, not run
            runtime.stop(stopped)
        self.runtimes[name], self.config_stamps[name] = runtime, _config_stamp(job)
        self._apply_rate(also=job)  # its caps hold from its first file on
        self.tracker.reconcile_job(job)

    def _job_stopped(self, runtime: JobRuntime, reason: str) -> None:
        """A job's files proved it cannot work: mark it, so nothing more is dispatched and it
        ends Failed with the reason once its queued files have drained."""
        job = self.master.jobs.get(runtime.name)
        if job is not None and job.exists():
            job.fail_job(stopped_job_reason(runtime.name, reason))

    def _resume_retried_jobs(self) -> None:
        """A stopped job whose mark 'console.sh retry' removed runs again: on drivers made from
        its job.cfg as it is now (the fix may be a key written there), judged afresh. Only once
        none of its tasks is in the worker: until then the stop may not be marked yet."""
        for name, runtime in list(self.runtimes.items()):
            job = self.master.jobs.get(name)
            if runtime.stopped is None or job is None or self.worker.running(name):
                continue
            if job.job_failure() is not None:
                continue
            stamp = _config_stamp(job)
            try:
                fresh = build_runtime(config_mod.load_job(job.config_file), self.sys.current, self.throttle,
                                      self.backpressure, "localhost", account=runtime.account)
            except OperatorError as exc:
                log.error("job %s: cannot run again: %s", name, exc)
                job.fail_job(stopped_job_reason(name, str(exc)))
                continue
            log.info("job %s: retried after it stopped; running again", name)
            self.runtimes[name], self.config_stamps[name] = fresh, stamp
            runtime.close()

    def _task_finished(self, job_name: str, task_id: str, folder: Path, ok: bool) -> None:
        # A resumed task whose files were all logged before a crash finishes inside reconcile,
        # before the master lists its job: its folders are there all the same.
        job = self.master.jobs.get(job_name) or self.home.job(job_name)
        if not job.exists():
            return  # the job was cleaned while the task ran
        try:
            self.tracker.task_finished(job, task_id, ok)
        except OSError as exc:
            # The folder stays where it is; reconcile records it at the next start.
            log.error("job %s: could not record task %s: %s", job_name, task_id, exc)
        self.wake_up()  # its room in the worker is filled now, not at the next tick

    def _apply_sys(self) -> None:
        new = self.sys.changed()
        self._apply_rate()
        if new is None:
            return
        if new.worker_task_thread_num != self.worker.threads:
            log.info("workerTaskThreadNum now %d", new.worker_task_thread_num)
            self.worker.resize(new.worker_task_thread_num)

    def _apply_rate(self, also: Optional[JobLayout] = None) -> None:
        """workerMaxThroughput(KB/s) (or its schedule's slot) and workerMaxQps, and the tightest
        jobMaxThroughput(KB/s) and jobMaxQps of the jobs with work left ('console.sh set'
        changes them while they run). ``also``: a job being loaded, not listed yet."""
        jobs = self.master.ordered_jobs()
        caps = job_caps(jobs + [also] if also is not None and also not in jobs else jobs)
        job_cap = caps.bytes_per_s
        rate = effective_rate(self.sys.current, job_cap)
        if rate != self.throttle.rate:
            by = "jobMaxThroughput(KB/s)" if job_cap and rate == job_cap else \
                "workerMaxThroughputSchedule" if self.sys.current.worker_max_throughput_schedule.strip() else \
                "workerMaxThroughput(KB/s)"
            log.info("throughput cap now %s (%s)", f"{rate // 1024} KB/s" if rate else "none", by)
            self.throttle.set_rate(rate)
        qps = effective_qps(self.sys.current, caps.files_per_s)
        if qps != self.worker.starts.rate:
            by = "jobMaxQps" if caps.files_per_s and qps == caps.files_per_s else "workerMaxQps"
            log.info("file starts now %s (%s)", f"at most {qps} per second" if qps else "not capped", by)
            self.worker.starts.set_rate(qps)

    def started(self) -> None:
        self.home.ensure()
        rate = throughput_bps(self.sys.current)
        log.info("service started (pid %d, %d transfer threads, throughput cap %s)", os.getpid(),
                 self.worker.threads, f"{rate // 1024} KB/s" if rate else "none")
        self.serve_metrics(self.home, self.sys.current, lambda: [])
        self.worker.start()

    def tick(self, now: float) -> None:
        self.worker.flush_audit_logs()
        self.master.refresh()
        self._resume_retried_jobs()
        self.tracker.dispatch(self.master.ordered_jobs())
        if now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self._write_progress()
            self.worker.failure_log.flush()
            self.reports.observe(self.master.ordered_jobs())
        if now - self._last_reload >= SYS_RELOAD_EVERY_S:
            self._last_reload = now
            self._apply_sys()

    def stopping(self) -> None:
        self.stop_metrics()
        self.worker.stop()
        self._write_progress()
        # A job that ended since the last look (import.sh stops the service as soon as it ends).
        self.reports.observe(self.master.ordered_jobs())
        self.reports.join(REPORT_WAIT_S)

    def _write_progress(self) -> None:
        for name, job in list(self.master.jobs.items()):
            runtime = self.runtimes.get(name)
            if runtime is None or not job.root.is_dir():
                continue
            try:
                runtime.account.write(job.stats_file)
            except OSError:
                pass


def _config_stamp(job: JobLayout) -> Optional[int]:
    try:
        return job.config_file.stat().st_mtime_ns
    except OSError:
        return None


class _ScrubbingFormatter(logging.Formatter):
    """Every line, tracebacks included, without the password of a user:password@ URL: a job's
    domains may carry one, and an SDK's error may quote them."""

    def format(self, record: logging.LogRecord) -> str:
        return config_mod.scrub_passwords(super().format(record))


def log_to(path: Path) -> None:
    """Send this process's log to ``path`` (0600), passwords scrubbed."""
    handler = logging.FileHandler(private_file(Path(path)))
    handler.setFormatter(_ScrubbingFormatter("%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("oss2").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)


def _run_holding_lock(home: Home, service: ServiceLoop) -> int:
    """Run ``service`` while it holds the working directory's service lock, so that a second
    start on the same workingDir exits instead of running beside it."""
    try:
        held = servicelock.acquire(home.service_lock, servicelock.ROLE_SERVICE)
    except OSError as exc:
        log.error("%s not started: cannot lock %s: %s", service.name, home.service_lock, exc.strerror or exc)
        return 1
    if held is None:
        other = servicelock.holder(home.service_lock)
        log.error("%s not started: %s (pid %s) holds %s", service.name, other.role if other else "another process",
                  other.pid if other else "?", home.service_lock)
        return servicelock.LOCKED_EXIT
    try:
        write_atomic(home.pid_file, f"{os.getpid()}\n".encode("ascii"))
        return service.run()
    finally:
        try:
            if home.pid_file.read_text().split()[0] == str(os.getpid()):
                home.pid_file.unlink()
        except (OSError, IndexError):
            pass
        held.release()


def run(home_dir: str, sys_path: str, log_file: Optional[str] = None) -> int:
    home = Home(Path(home_dir))
    home.ensure()
    log_to(Path(log_file) if log_file else home.logs / "ossimport2.log")
    return _run_holding_lock(home, StandaloneService(home, Path(sys_path)))


def ssh_settings(sys_cfg):
    """How to reach the workers, from sys.properties (the key wins over the password)."""
    from .fleet.ssh import SshSettings

    return SshSettings.from_sys_config(sys_cfg, known_hosts=sys_cfg.ssh_known_hosts_file or "~/.ssh/known_hosts")


class DistributedService(ServiceLoop):
    """Master and tracker on the master host; the agents run the tasks on the worker hosts."""

    name = "master"
    HOSTS_EVERY_S = 5.0

    def __init__(self, home: Home, sys_path: Path, workers_file: Path):
        from .fleet.dispatcher import RemoteTracker
        from .fleet.ssh import Connection

        super().__init__()
        self.home = home
        self.sys = SysWatcher(sys_path)
        self.workers_file = Path(workers_file)
        self.master = Master(home, self.stop_event, lambda name, cfg, job: None)
        self.tracker = RemoteTracker(home, self.sys, self.master.ordered_jobs,
                                     lambda host: Connection(host, ssh_settings(self.sys.current)),
                                     self.stop_event)
        self._last_hosts = self._last_progress = self._last_reload = -1e9

    def _read_hosts(self) -> None:
        from .fleet.hosts import read_workers

        try:
            hosts = read_workers(self.workers_file, default_port=self.sys.current.ssh_port)
        except OperatorError as exc:
            log.error("workers file not valid, keeping the current hosts: %s", exc)
            return
        self.tracker.set_hosts(hosts)

    def started(self) -> None:
        self.home.ensure()
        log.info("master started (pid %d), workers from %s", os.getpid(), self.workers_file)
        self.serve_metrics(self.home, self.sys.current, self._listed_hosts)

    def _listed_hosts(self) -> list:
        """The hosts of the workers file, as 'stat' lists them (metrics show the same rows)."""
        from .fleet.hosts import read_workers

        try:
            return read_workers(self.workers_file, default_port=self.sys.current.ssh_port)
        except OperatorError:
            return []

    def tick(self, now: float) -> None:
        self.master.refresh()
        if now - self._last_hosts >= self.HOSTS_EVERY_S:
            self._last_hosts = now
            self._read_hosts()
        if now - self._last_reload >= SYS_RELOAD_EVERY_S:
            self._last_reload = now
            if self.sys.changed() is not None:
                log.info("sys.properties changed; pushing the worker settings to the hosts")
        if now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self._write_progress()
            self.tracker.failure_log.flush()
            self.reports.observe(self.master.ordered_jobs())

    def stopping(self) -> None:
        self.stop_metrics()
        self.tracker.join(10)
        self.tracker.failure_log.flush(every_job=True)
        self.reports.observe(self.master.ordered_jobs())
        self.reports.join(REPORT_WAIT_S)

    def _write_progress(self) -> None:
        """Merge the hosts' heartbeats into each job's progress.json, the file stat reads."""
        beats = [(s.host, s.beat) for s in self.tracker.live_hosts() if s.beat]
        for name, job in list(self.master.jobs.items()):
            running, task_hosts, bps, fps = {}, {}, 0.0, 0.0
            for host, beat in beats:
                snap = (beat.get("jobs") or {}).get(name)
                if snap:
                    running.update(snap.get("running", {}))
                    # Which host runs each task: stat detail says where its failures are.
                    task_hosts.update(dict.fromkeys(snap.get("running", {}), host))
                    bps += snap.get("bytes_per_s", 0.0)
                    fps += snap.get("files_per_s", 0.0)
            doc = {"host": "all", "time": time.time(), "bytes_per_s": bps, "files_per_s": fps, "running": running,
                   "task_hosts": task_hosts}
            try:
                write_atomic(job.stats_file, json.dumps(doc).encode("utf-8"))
            except OSError:
                pass


def run_distributed(home_dir: str, sys_path: str, workers_file: str) -> int:
    home = Home(Path(home_dir))
    home.ensure()
    log_to(home.logs / "master.log")
    return _run_holding_lock(home, DistributedService(home, Path(sys_path), Path(workers_file)))
