"""The standalone service that ``console.sh start`` runs in the background.

One process holds the three roles of a standalone OssImport: the master (one scanner per job
whose listing is not finished), the tracker (dispatch and reconcile) and the worker named
``localhost``. It runs until ``console.sh stop`` (SIGTERM), idles when there is nothing to do,
and picks up newly submitted jobs and retried tasks as they appear on disk.

``sys.properties`` is re-read while running: a new ``workerMaxThroughput(KB/s)`` or a larger
``workerTaskThreadNum`` takes effect within seconds (OssImport needs a restart).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Optional

from . import config as config_mod
from .accounting import JobAccount
from .errors import OperatorError
from .layout import Home, JobLayout, write_atomic
from .scanner import Scanner, SplitLimits
from .storage import open_destination, open_source
from .throttle import Throttle
from .tracker import LocalTracker
from .transfer import Backpressure, TransferOptions, Transferer
from .worker import JobRuntime, Worker

log = logging.getLogger("ossimport.service")

TICK_S = 0.2
PROGRESS_EVERY_S = 1.0
SYS_RELOAD_EVERY_S = 3.0
SCAN_RETRY_S = 30.0


def throughput_bps(sys_cfg) -> int:
    return int(sys_cfg.worker_max_throughput_kbs) * 1024


def open_job_drivers(job_cfg, sys_cfg=None):
    """(source, destination) for a job, the same way for scanner, worker and agent."""
    source = open_source(job_cfg.src_type, prefix=job_cfg.src_prefix, bucket=job_cfg.src_bucket,
                         domain=job_cfg.src_domain, access_key=job_cfg.src_access_key,
                         secret_key=job_cfg.src_secret_key, allow_symlinks=job_cfg.is_allow_symbolic_link)
    destination = open_destination(job_cfg.dest_type, domain=job_cfg.dest_domain, bucket=job_cfg.dest_bucket,
                                   prefix=job_cfg.dest_prefix, access_key=job_cfg.dest_access_key,
                                   secret_key=job_cfg.dest_secret_key,
                                   server_side_encryption=job_cfg.is_server_side_encryption)
    return source, destination


def build_runtime(job_cfg, sys_cfg, throttle: Throttle, backpressure: Backpressure, host: str) -> JobRuntime:
    source, destination = open_job_drivers(job_cfg, sys_cfg)
    account = JobAccount(job_cfg.job_name, host)
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
    return JobRuntime(name=job_cfg.job_name, transferer=transferer, account=account,
                      audit_only=job_cfg.job_type == "audit", audit_mode=job_cfg.audit_mode,
                      audit_after_import=job_cfg.is_audit_after_import,
                      abort_on_unexpected=sys_cfg.worker_abort_when_uncatched_exception)


class StandaloneService:
    def __init__(self, home: Home, sys_path: Path):
        self.home = home
        self.sys_path = Path(sys_path)
        self.sys_cfg = config_mod.load_sys(self.sys_path)
        self._sys_mtime = self._mtime(self.sys_path)
        self.stop_event = threading.Event()
        self.throttle = Throttle(throughput_bps(self.sys_cfg))
        self.backpressure = Backpressure()  # one per worker: a throttled destination slows every thread
        self.worker = Worker(self.sys_cfg.worker_task_thread_num, self._task_finished)
        self.tracker = LocalTracker(self.worker, self._runtime_for)
        self.runtimes: dict = {}
        self.jobs: dict = {}  # name -> JobLayout
        self.scanners: dict = {}  # name -> Thread
        self._scan_failed_at: dict = {}

    @staticmethod
    def _mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    # -- jobs -------------------------------------------------------------------------------
    def _runtime_for(self, name: str) -> JobRuntime:
        return self.runtimes[name]

    def _load_job(self, name: str) -> None:
        job = self.home.job(name)
        job_cfg = config_mod.load_job(job.config_file)
        self.runtimes[name] = build_runtime(job_cfg, self.sys_cfg, self.throttle, self.backpressure, "localhost")
        self.jobs[name] = job
        self.tracker.reconcile(job)
        log.info("job %s: loaded (%s -> %s/%s)", name, job_cfg.src_type, job_cfg.dest_domain, job_cfg.dest_bucket)

    def _refresh_jobs(self) -> None:
        names = set(self.home.job_names())
        for gone in set(self.jobs) - names:  # cleaned while running
            log.info("job %s: removed (clean)", gone)
            self.jobs.pop(gone, None)
            self.runtimes.pop(gone, None)
        for name in sorted(names - set(self.jobs)):
            try:
                self._load_job(name)
            except OperatorError as exc:
                log.error("job %s: cannot load: %s", name, exc)
        for name, job in self.jobs.items():
            if job.scan_finished or (name in self.scanners and self.scanners[name].is_alive()):
                continue
            if time.monotonic() - self._scan_failed_at.get(name, -1e9) < SCAN_RETRY_S:
                continue
            t = threading.Thread(target=self._scan, args=(name,), name=f"scan-{name}", daemon=True)
            self.scanners[name] = t
            t.start()

    def _scan(self, name: str) -> None:
        job = self.jobs[name]
        error_file = job.root / "scan.error"
        try:
            job_cfg = config_mod.load_job(job.config_file)
            source, _ = open_job_drivers(job_cfg)
            limits = SplitLimits(job_cfg.task_object_count_limit, job_cfg.task_object_size_limit,
                                 job_cfg.import_since)
            Scanner(job, source, limits, threads=job_cfg.scan_thread_count,
                    depth=job_cfg.max_multi_thread_scan_depth, stop=self.stop_event).run()
            if error_file.exists():
                error_file.unlink()
        except OperatorError as exc:
            log.error("job %s: scan failed: %s (retrying in %ds)", name, exc, SCAN_RETRY_S)
            write_atomic(error_file, (str(exc) + "\n").encode("utf-8", "replace"))
            self._scan_failed_at[name] = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - keep the service alive; the log has the trace
            log.exception("job %s: scan failed", name)
            write_atomic(error_file, f"unexpected error: {type(exc).__name__}: {exc}\n".encode("utf-8", "replace"))
            self._scan_failed_at[name] = time.monotonic()

    def _task_finished(self, job_name: str, task_id: str, folder: Path, ok: bool) -> None:
        job = self.jobs.get(job_name)
        if job is None or not job.exists():
            return  # the job was cleaned while the task ran
        try:
            self.tracker.task_finished(job, task_id, folder, ok)
        except OSError as exc:
            # The folder stays where it is; reconcile records it at the next start.
            log.error("job %s: could not record task %s: %s", job_name, task_id, exc)

    # -- sys.properties, live ---------------------------------------------------------------
    def _reload_sys(self) -> None:
        mtime = self._mtime(self.sys_path)
        if mtime == self._sys_mtime:
            return
        self._sys_mtime = mtime
        try:
            new = config_mod.load_sys(self.sys_path)
        except OperatorError as exc:
            log.error("sys.properties changed but is not valid, keeping the old settings: %s", exc)
            return
        if new.worker_max_throughput_kbs != self.sys_cfg.worker_max_throughput_kbs:
            log.info("workerMaxThroughput(KB/s) now %d", new.worker_max_throughput_kbs)
            self.throttle.set_rate(throughput_bps(new))
        if new.worker_task_thread_num > self.worker.threads:
            log.info("workerTaskThreadNum now %d", new.worker_task_thread_num)
            self.worker.resize(new.worker_task_thread_num)
        self.sys_cfg = new

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> int:
        self.home.ensure()
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        log.info("service started (pid %d, %d transfer threads, throughput cap %s KB/s)", os.getpid(),
                 self.worker.threads, self.sys_cfg.worker_max_throughput_kbs or "none")
        self.worker.start()
        last_progress = last_reload = 0.0
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                self._refresh_jobs()
                self.tracker.dispatch_round([self.jobs[n] for n in sorted(self.jobs)])
                if now - last_progress >= PROGRESS_EVERY_S:
                    last_progress = now
                    self._write_progress()
                if now - last_reload >= SYS_RELOAD_EVERY_S:
                    last_reload = now
                    self._reload_sys()
                self.stop_event.wait(TICK_S)
        finally:
            log.info("service stopping")
            self.worker.stop()
            self._write_progress(final=True)
            log.info("service stopped")
        return 0

    def _write_progress(self, final: bool = False) -> None:
        for name, job in list(self.jobs.items()):
            runtime = self.runtimes.get(name)
            if runtime is None or not job.root.is_dir():
                continue
            try:
                runtime.account.write(job.stats_file)
            except OSError:
                pass


def run(home_dir: str, sys_path: str, log_file: Optional[str] = None) -> int:
    home = Home(Path(home_dir))
    home.ensure()
    handler = logging.FileHandler(log_file or home.logs / "ossimport2.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("oss2").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    return StandaloneService(home, Path(sys_path)).run()
