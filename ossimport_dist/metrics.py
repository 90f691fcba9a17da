"""Prometheus metrics of the master: the numbers 'console.sh stat --json' gives, served as text
on ``metricsAddress`` (sys.properties) for a dashboard to scrape.

Every scrape reads the state tree as 'stat' does (``status.job_status``, ``status.host_rows``),
so the two never disagree and nothing is kept between scrapes. Everything is a gauge: a retry
moves failed files back to pending, so no figure only grows. The server has its own registry
(no process-wide one) and serves only while the service runs.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

from . import status as status_mod
from .config import parse_listen_address
from .layout import Home

log = logging.getLogger("ossimport.metrics")

def _gauge(name: str, doc: str, labels: tuple) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"ossimport_{name}", doc, labels=list(labels))


class StatusCollector:
    """Collects the status of every job of ``home`` (and, on a fleet, every host of
    ``hosts()``) at each scrape."""

    def __init__(self, home: Home, hosts: Callable[[], list]):
        self.home, self.hosts = home, hosts

    def collect(self):
        statuses = [status_mod.job_status(self.home, self.home.job(name), True) for name in self.home.job_names()]
        yield from self._jobs(statuses)
        hosts = self.hosts()
        if hosts:
            yield from self._hosts(status_mod.host_rows(self.home, hosts, statuses, True))

    @staticmethod
    def _jobs(statuses: list):
        state = _gauge("job_state", "1 for the job's state (Submitted, Running, Succeed, Failed, Abort)", ("job", "state"))
        listed = _gauge("job_listed_files", "Files listed by the scan so far", ("job",))
        listed_bytes = _gauge("job_listed_bytes", "Bytes listed by the scan so far", ("job",))
        scanned = _gauge("job_scan_finished", "1 once the listing of the source is complete", ("job",))
        files = _gauge("job_files", "Files by outcome, finished and running tasks together", ("job", "outcome"))
        size = _gauge("job_bytes", "Bytes by outcome, finished and running tasks together", ("job", "outcome"))
        sending = _gauge("job_sending_bytes", "Bytes of files being copied now, not finished yet", ("job",))
        rate = _gauge("job_bytes_per_second", "The job's rate now, bytes per second", ("job",))
        file_rate = _gauge("job_files_per_second", "The job's rate now, files per second", ("job",))
        eta = _gauge("job_eta_seconds", "Seconds to the end at the rate now (absent when unknown)", ("job",))
        tasks = _gauge("job_tasks", "Task folders by state", ("job", "state"))
        reasons = _gauge("job_failed_files_by_reason", "Failed files by reason code", ("job", "reason"))
        for s in statuses:
            for name in status_mod.STATES:
                state.add_metric([s.name, name], 1.0 if s.state == name else 0.0)
            listed.add_metric([s.name], s.objects)
            listed_bytes.add_metric([s.name], s.bytes)
            scanned.add_metric([s.name], 1.0 if s.scan_finished else 0.0)
            t = s.totals
            for outcome, n, b in (("succeed", t.succeed, t.succeed_bytes), ("skipped", t.skipped, t.skipped_bytes),
                                  ("failed", t.failed, t.failed_bytes)):
                files.add_metric([s.name, outcome], n)
                size.add_metric([s.name, outcome], b)
            sending.add_metric([s.name], s.sending_bytes)
            rate.add_metric([s.name], s.bytes_per_s)
            file_rate.add_metric([s.name], s.files_per_s)
            if s.eta_s is not None:
                eta.add_metric([s.name], s.eta_s)
            for name, n in (("pending", s.pending_tasks), ("dispatched", s.dispatched_tasks),
                            ("succeed", s.succeed_tasks), ("failed", s.failed_tasks), ("damaged", s.damaged_tasks)):
                tasks.add_metric([s.name, name], n)
            for reason, n in s.failed_by_reason.items():
                reasons.add_metric([s.name, reason], n)
        yield from (state, listed, listed_bytes, scanned, files, size, sending, rate, file_rate, eta, tasks, reasons)

    @staticmethod
    def _hosts(rows: list):
        up = _gauge("host_reachable", "1 when the master reached the host at its last poll", ("host",))
        alive = _gauge("host_agent_alive", "1 when the host's agent is alive", ("host",))
        fresh = _gauge("host_fresh", "1 when the master polled the host lately", ("host",))
        running = _gauge("host_running_tasks", "Tasks running on the host", ("host",))
        done = _gauge("host_done_tasks", "Tasks the host finished", ("host",))
        failed = _gauge("host_failed_tasks", "Finished tasks of the host with a failed file", ("host",))
        size = _gauge("host_bytes", "Bytes the host's finished tasks copied", ("host",))
        rate = _gauge("host_bytes_per_second", "The host's rate now, bytes per second", ("host",))
        for row in rows:
            up.add_metric([row.host], 1.0 if row.reachable else 0.0)
            alive.add_metric([row.host], 1.0 if row.agent_alive else 0.0)
            fresh.add_metric([row.host], 1.0 if row.fresh else 0.0)
            running.add_metric([row.host], row.running_tasks)
            done.add_metric([row.host], row.done_tasks)
            failed.add_metric([row.host], row.failed_tasks)
            size.add_metric([row.host], row.bytes)
            rate.add_metric([row.host], row.bytes_per_s or 0.0)
        yield from (up, alive, fresh, running, done, failed, size, rate)


class MetricsServer:
    """The endpoint while the service runs; ``stop`` closes it."""

    def __init__(self, host: str, port: int, collector: StatusCollector):
        self.where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        self._server, self._thread = start_http_server(port, host, registry=registry)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(text: str, home: Home, hosts: Callable[[], list]) -> Optional[MetricsServer]:
    """The metrics server of ``metricsAddress``'s ``text``, None when empty or when it cannot
    listen (said in the log: the migration goes on without it)."""
    try:
        address = parse_listen_address(text)
    except ValueError as exc:  # sys.properties is checked when read; this is the same check
        log.error("metricsAddress: %s; no metrics served", exc)
        return None
    if address is None:
        return None
    try:
        server = MetricsServer(*address, StatusCollector(home, hosts))
    except OSError as exc:
        log.error("metrics: cannot listen on %s:%d (%s); no metrics served: fix metricsAddress in "
                  "sys.properties and restart the service", *address, exc.strerror or exc)
        return None
    log.info("metrics served on http://%s/metrics", server.where)
    return server
