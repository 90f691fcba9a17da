"""``console.sh``: the operator's commands, with OssImport's names and words.

    console.sh submit [--no-preflight] [job.cfg] | start [--resume|--take-secrets] [--no-preflight] | stop
               | clean [job] | stat [detail] [job] [--json] | retry [--resume|--take-secrets] [job]
               | errors [job] [-o file] | set key=value|credentialKey [--from job.cfg] [job]
               | plan [job.cfg|job] [--json] | report [job] | verify-report [job] [--against job.cfg] | version

Every failure an operator can fix prints one line on stderr and exits non-zero (2 for bad
configuration or state, or a job that preflight finds cannot work), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from .. import __version__
from .. import config as config_mod
from .. import servicelock
from .. import status as status_mod
from ..errors import ConfigError, OperatorError, StateError
from ..failures import local_running_failures, remote_running_failures, running_counts, running_tasks
from ..layout import (CONF_DIR, JOB_CONFIG, LOCAL_JOB_CONFIG, STANDALONE_HOST, SKIPPED_LIST, SYS_PROPERTIES, Home,
                     JobLayout, TaskFolder, damaged_reason, iter_lines, parse_finished_name, quote_arg,
                     remote_worker_tree)
from ..listformat import list_line, written_columns
from ..models import reasons_text
from ..schedule import Timetable, describe as describe_schedule

STANDALONE_JOB_FILE = LOCAL_JOB_CONFIG
DISTRIBUTED_JOB_FILE = JOB_CONFIG
# Job keys that may change while the job runs ('console.sh set'); the rest is frozen at submit.
LIVE_JOB_KEYS = ("jobMaxThroughput(KB/s)", "jobMaxQps")
MAX_CREDENTIAL_BYTES = 4096  # the longest cloud key is a few hundred bytes; more is the wrong input
SERVICE_MARK = "ossimport_dist.service_main"
# How long 'start' waits for the service it forked to hold the service lock (or to exit).
START_WAIT_S = 30.0
START_GRACE_S = 0.3


# -- where things are -------------------------------------------------------------------------
class Paths:
    """The install directory (where conf/ is) and the working directory it names."""

    def __init__(self, install_dir: Path, sys_file: Optional[Path] = None, workers_file: Optional[Path] = None):
        from ..fleet.hosts import find_workers_file

        self.install_dir = install_dir.resolve()
        self.sys_file = (sys_file or self.install_dir / CONF_DIR / SYS_PROPERTIES).resolve()
        self.sys_cfg = config_mod.load_sys(self.sys_file)
        working = Path(self.sys_cfg.working_dir or ".")
        if not working.is_absolute():
            working = self.install_dir / working
        self.home = Home(working.resolve())
        # workers.txt beside conf/ (or OssImport's conf/workers); distributed when it lists hosts.
        self.workers_file = workers_file or find_workers_file(self.sys_file.parent, self.sys_file.parent.parent)
        self._hosts = None
        self._sys_warned = False

    def hosts(self) -> list:
        if self._hosts is None:
            from ..fleet.hosts import lists_hosts, read_workers

            hosts = []
            if self.workers_file is not None and lists_hosts(self.workers_file):
                hosts = read_workers(self.workers_file, default_port=self.sys_cfg.ssh_port)
            self._hosts = hosts  # only once read: a bad file fails every command that asks
        return self._hosts

    def warn_sys(self) -> None:
        """sys.properties' warnings (a mis-cased key, a job key in it), once per command."""
        if not self._sys_warned:
            warn(self.sys_cfg.warnings)
            self._sys_warned = True

    def ensure_home(self) -> Home:
        """The working directory's folders, made if missing; one line naming workingDir if it
        cannot be (a regular file, a path under one, no permission)."""
        try:
            self.home.ensure()
        except OSError as exc:
            raise self.working_dir_error(exc) from None
        return self.home

    def working_dir_error(self, exc: OSError) -> ConfigError:
        return ConfigError(self.sys_file, self.sys_cfg.key_lines.get("workingDir", 0), "workingDir",
                           f"'{self.home.root}' is not a writable directory ({exc.filename or exc}: "
                           f"{exc.strerror or exc})",
                           "set workingDir to a directory this user can create and write")

    @property
    def distributed(self) -> bool:
        return bool(self.hosts())

    def require_distributed(self, command: str) -> None:
        if not self.distributed:
            raise StateError(f"'{command}' needs worker hosts: list them one per line in "
                             f"{self.sys_file.parent.parent / 'workers.txt'} (or conf/workers)")
        self.require_distributed_settings()

    def require_distributed_settings(self) -> None:
        if not Path(self.sys_cfg.working_dir).is_absolute():
            raise ConfigError(self.sys_file, self.sys_cfg.key_lines.get("workingDir", 0), "workingDir",
                              f"must be an absolute path in distributed mode (got '{self.sys_cfg.working_dir}')",
                              "use the same absolute path on every host, e.g. /data/ossimport")

    def ssh_settings(self):
        from ..service import ssh_settings

        return ssh_settings(self.sys_cfg)

    def default_job_file(self) -> Path:
        name = DISTRIBUTED_JOB_FILE if self.distributed else STANDALONE_JOB_FILE
        return self.sys_file.parent / name


def warn(lines) -> None:
    for line in lines:
        print(f"warning: {config_mod.scrub_passwords(line)}", file=sys.stderr)


def log_line(home: Home, name: str, text: str) -> None:
    with open(home.private_log(name), "a", encoding="utf-8") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + text + "\n")


# -- the service process ----------------------------------------------------------------------
def service_pid(home: Home) -> Optional[int]:
    """The pid of the service running on this working directory (the holder of its service
    lock), or None. 0 when the lock is held but names no pid."""
    holder = servicelock.holder(home.service_lock)
    return holder.pid if holder is not None and holder.role == servicelock.ROLE_SERVICE else None


def _pid_file_pid(home: Home) -> Optional[int]:
    try:
        return int(home.pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _check_lock_file(home: Home) -> None:
    lock = home.service_lock
    if lock.is_symlink() or (lock.exists() and not lock.is_file()):
        raise StateError(f"{lock} is not a regular file; remove it ('console.sh start' makes it again)")


def refuse_edited_jobs(home: Home, names: list, hint: str, resume: bool = False,
                       take_secrets: bool = False) -> None:
    """A job whose file was edited since its submit runs as submitted: never without a word.
    When only credentials changed, ``resume`` or ``take_secrets`` takes them into the job (a
    fixed key is the common edit); ``resume`` runs any other edit as submitted. ``hint`` says how
    to go on ('{job}' is the job's name)."""
    for name in names:
        origin, keys = config_mod.edited_keys(home.job(name).config_file)
        if not keys:
            continue
        credentials_only = all(k in config_mod.CREDENTIAL_KEYS for k in keys)
        if credentials_only and (resume or take_secrets):
            take_edited_credentials(home, name, origin, keys)
            continue
        if resume:
            continue
        _, changes = config_mod.edits_since_submit(home.job(name).config_file)
        why = hint.format(job=name)
        if credentials_only:
            why = f"only credentials changed: '--take-secrets' takes them into the job without a rescan; or {why}"
        elif take_secrets:
            why = f"--take-secrets takes only {', '.join(config_mod.CREDENTIAL_KEYS)}; {why}"
        raise StateError(f"job {name} was submitted from {origin}, which has changed since "
                         f"({', '.join(changes)}); the job would run as submitted: {why}")


def cmd_start(paths: Paths, args) -> int:
    return start_service(paths, resume=args.resume, take_secrets=args.take_secrets, no_preflight=args.no_preflight)


def start_service(paths: Paths, *, resume: bool = False, take_secrets: bool = False, no_preflight: bool = False,
                  decided=frozenset(), preflighted=frozenset()) -> int:
    """Start the service (standalone) or the master. ``decided``: jobs whose edited job file
    import.sh asked about already; ``preflighted``: jobs whose submit checked both ends a
    moment ago."""
    home = paths.ensure_home()
    paths.warn_sys()
    refuse_edited_jobs(home, [n for n in home.job_names() if n not in decided],
                       "'console.sh start --resume' runs it so, or 'console.sh clean {job}' and submit it again",
                       resume=resume, take_secrets=take_secrets)
    _check_lock_file(home)
    pid = service_pid(home)
    if pid is not None:
        print(f"service is already running (pid {pid}); logs in {home.logs / 'ossimport2.log'}")
        return 0
    if not no_preflight:
        preflight_unstarted_jobs(home, skip=preflighted)
    if paths.distributed:
        paths.require_distributed("start")
        log_path = home.private_log("master.log")
        entry = "run_distributed(sys.argv[1], sys.argv[2], sys.argv[3])"
        extra = [str(paths.workers_file)]
    else:
        log_path = home.private_log("ossimport2.log")
        entry = "run(sys.argv[1], sys.argv[2])"
        extra = []
    out = open(log_path, "ab")
    # Only paths on the command line: credentials stay in 0600 files.
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from ossimport_dist.service import run, run_distributed; "
         f"sys.argv[0] = '{SERVICE_MARK}'; sys.exit({entry})",
         str(home.root), str(paths.sys_file)] + extra,
        stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        cwd=str(paths.install_dir))
    out.close()
    code = _wait_until_holding(home, proc, log_path)
    if code == servicelock.LOCKED_EXIT:
        # Another start won the race for the lock: one service, and this start says so.
        other = servicelock.holder(home.service_lock)
        if other is not None and other.role == servicelock.ROLE_SERVICE:
            print(f"service is already running (pid {other.pid}); logs in {log_path}")
            return 0
        what = (f"'console.sh clean' (pid {other.pid}) is removing a job" if other else
                "a clean or another start held the service lock, and has let go since")
        raise StateError(f"service not started: {what}; run 'console.sh start' again when it is done")
    if code is not None:
        print(f"error: the service exited at once (code {code}); see {log_path}", file=sys.stderr)
        return 1
    if paths.distributed:
        print(f"master started (pid {proc.pid}); it starts the agent on each of {len(paths.hosts())} "
              f"host(s) in {paths.workers_file}; logs in {log_path}")
    else:
        print(f"service started (pid {proc.pid}); logs in {log_path}")
    return 0


def preflight_unstarted_jobs(home: Home, skip=()) -> None:
    """Preflight again for each job that has not copied anything yet (but those in ``skip``):
    keys, buckets and endpoints may have changed since its submit, and a job that cannot work
    never starts."""
    from .. import preflight

    for name in home.job_names():
        job = home.job(name)
        if name not in skip and not job.copying_started():
            preflight.check_job(config_mod.load_job(job.config_file),
                                hint=f"the service was not started; {preflight.SKIP_HINT}")


def _wait_until_holding(home: Home, proc: subprocess.Popen, log_path: Path) -> Optional[int]:
    """None once the forked service holds the service lock (and wrote its pid file), else its
    exit code. Bounded: a service that neither holds the lock nor exits is ended."""
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.returncode
        holder = servicelock.holder(home.service_lock, wait_s=0.2)
        if holder is not None and holder.pid == proc.pid and _pid_file_pid(home) == proc.pid:
            # A service that fails its first ticks (a state folder it cannot use) is said
            # to have exited, not to have started.
            time.sleep(START_GRACE_S)
            return proc.poll()
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise StateError(f"the service did not start within {START_WAIT_S:.0f} s (ended it); see {log_path}")


def cmd_stop(paths: Paths, args) -> int:
    return stop_service(paths)


def stop_service(paths: Paths) -> int:
    home = paths.home
    pid = service_pid(home)
    if pid is not None and pid <= 1:
        raise StateError(f"{home.service_lock} is held by a process that wrote no pid; find it with "
                         f"'fuser {home.service_lock}' and end it")
    if paths.distributed:
        from ..fleet.sshlink import stop_agents

        # The master first, so that it does not start the agents again.
        if pid:
            _stop_pid(home, pid)
            print(f"master stopped (pid {pid})")
        for name, outcome in stop_agents(paths.hosts(), paths.ssh_settings(), paths.sys_cfg.working_dir).items():
            print(f"{name}: agent {outcome}")
        return 0
    if not pid:
        print("service is not running")
        if home.pid_file.exists():
            home.pid_file.unlink()
        return 0
    _stop_pid(home, pid)
    print(f"service stopped (pid {pid})")
    return 0


def _stop_pid(home: Home, pid: int) -> None:
    import psutil

    try:
        is_service = SERVICE_MARK in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        is_service = False
    if not is_service:
        # The lock names its holder; a name read as a holder was being replaced is not a reason
        # to signal whatever process has that pid now.
        raise StateError(f"{home.service_lock} names pid {pid}, which is not an ossimport service now; "
                         f"run 'console.sh stop' again")
    os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout=20)
    except psutil.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        try:
            psutil.Process(pid).wait(timeout=10)
        except psutil.Error:
            pass
    except psutil.Error:
        pass
    if home.pid_file.exists():
        home.pid_file.unlink()


# -- deploy -----------------------------------------------------------------------------------
def cmd_deploy(paths: Paths, args) -> int:
    """Install the agent on every worker host, offline: the master carries the wheels."""
    from ..fleet.deploy import build_bundle, deploy_all

    paths.require_distributed("deploy")
    cache = paths.home.bundle_cache
    print(f"building the bundle (the package and its dependencies as wheels) in {cache} ...", flush=True)
    bundle = build_bundle(paths.install_dir, cache)
    hosts = paths.hosts()
    print(f"deploying to {len(hosts)} host(s) into {paths.sys_cfg.working_dir}/ossimport ...", flush=True)
    results = deploy_all(hosts, paths.ssh_settings(), paths.install_dir, paths.sys_cfg.working_dir, cache,
                         bundle=bundle)
    failed = 0
    for host, r in results.items():
        if r.ok:
            print(f"{host}: deployed ossimport-dist {r.value}")
        else:
            failed += 1
            print(f"{host}: FAILED: {r.error}")
    log_line(paths.home, "submit.log", f"deploy: {len(hosts) - failed} ok, {failed} failed")
    return 1 if failed else 0


# -- set: the few job keys that may change while a job runs -------------------------------------
def cmd_set(paths: Paths, args) -> int:
    key, sep, value = args.assignment.partition("=")
    if key in config_mod.CREDENTIAL_KEYS and sep:
        raise StateError(f"{key} is never given on the command line (it would show in 'ps' and the shell "
                         f"history): run 'console.sh set {key} <job>' and type it, or 'console.sh set {key} "
                         f"--from <job file> <job>'")
    if key not in config_mod.CREDENTIAL_KEYS and (not sep or key not in LIVE_JOB_KEYS):
        shown = args.assignment if key in LIVE_JOB_KEYS else key + ("=..." if sep else "")
        raise StateError(f"'{shown}': only {', '.join(LIVE_JOB_KEYS)} (as key=value) and the credentials "
                         f"({', '.join(config_mod.CREDENTIAL_KEYS)}, as a key alone) can change while a job "
                         f"runs; the rest needs 'clean' and 'submit'")
    if getattr(args, "from_file", None) and key not in config_mod.CREDENTIAL_KEYS:
        raise StateError("--from takes a credential from a job file; other keys are written as key=value")
    names = job_names_for(paths, args.job)
    if len(names) != 1:
        raise StateError(f"name the job: console.sh set {_shown_assignment(args.assignment)} <job> "
                         f"(jobs: {', '.join(names) or 'none submitted'})")
    job = job_to_write(paths.home, names[0])
    if key in config_mod.CREDENTIAL_KEYS:
        value = _read_credential(key, job.name, getattr(args, "from_file", None))
        shown = f"{key}={config_mod.REDACTED}"
    else:
        value = value.strip()
        shown = f"{key}={value}"
    rewrite_frozen_job(job, {key: value}, f"console set {key}")
    log_line(paths.home, "submit.log", f"set job:{job.name} {shown}")
    print(f"job:{job.name} {shown} (takes effect within seconds)")
    return 0


def _read_credential(key: str, job_name: str, from_file: Optional[str]) -> str:
    """A credential's new value: from a job file, typed without echo on a terminal, or one line
    of standard input (a script's pipe); never from the command line."""
    if from_file:
        value = config_mod.load_job(from_file).properties().get(key, "")
        where = f"{key} in {from_file}"
    elif sys.stdin.isatty():
        import getpass

        try:
            value = getpass.getpass(f"{key} for job {job_name} (not shown): ")
        except EOFError:
            value = ""
        where = f"the {key} typed"
    else:
        where = f"the first line of standard input (the {key})"
        raw = sys.stdin.buffer.readline(MAX_CREDENTIAL_BYTES + 1)
        if len(raw.rstrip(b"\r\n")) > MAX_CREDENTIAL_BYTES:
            raise StateError(f"{where} is longer than {MAX_CREDENTIAL_BYTES} bytes, more than any key; nothing "
                             f"changed: pipe the key alone, on one line")
        try:
            value = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise StateError(f"{where} is not UTF-8 text; nothing changed: pipe the key as text, on one "
                             f"line") from None
    if not value.strip():
        raise StateError(f"{where} is empty; nothing changed: give the new value (a terminal asks for it, a "
                         f"script pipes it as one line, or --from a job file that has it)")
    return value.strip()


def rewrite_frozen_job(job: JobLayout, changes: dict, label: str) -> None:
    """The job's frozen job.cfg with ``changes``, checked as a whole file (a bad value is named
    with its key and fix), still 0600 and still first with its submit comment, so start and
    import.sh keep telling an edit of the job file. The service re-reads it within seconds."""
    import javaproperties

    props = config_mod.load_job(job.config_file).properties()
    props.update(changes)
    config_mod.parse_job_text(javaproperties.dumps(props, timestamp=False), label)
    origin = config_mod.frozen_comment(job.config_file)
    config_mod.write_properties(job.config_file, props, mode=0o600,
                                comment="\n".join(filter(None, (origin, "changed by console.sh set"))))


def take_edited_credentials(home: Home, name: str, origin: str, keys: list) -> None:
    """The credentials edited in the job's file since its submit, taken into the frozen job:
    the job goes on where it is, no rescan."""
    current = config_mod.load_job(origin).properties()
    rewrite_frozen_job(home.job(name), {k: current[k] for k in keys}, f"credentials from {origin}")
    log_line(home, "submit.log", f"job:{name}: took {', '.join(k + '=' + config_mod.REDACTED for k in keys)} "
                                 f"from {origin}")
    print(f"job:{name}: took the new {', '.join(keys)} from {origin} into the job, without a rescan")


# -- submit / clean -----------------------------------------------------------------------------
def cmd_submit(paths: Paths, args) -> int:
    return submit_job(paths, Path(args.job_file) if args.job_file else paths.default_job_file(),
                      preflight=not args.no_preflight)


def load_job_file(paths: Paths, job_file: Path):
    """The job file's settings, its warnings and sys.properties' said; a local source folder
    that is not there stops it here, naming srcPrefix."""
    job_cfg = config_mod.load_job(job_file)
    paths.warn_sys()
    warn(job_cfg.warnings)
    if job_cfg.src_type == "local" and not os.path.isdir(job_cfg.src_prefix):
        raise ConfigError(job_file, job_cfg.key_lines.get("srcPrefix", 0), "srcPrefix",
                          f"directory '{job_cfg.src_prefix}' does not exist or is not a directory",
                          "mount the source or fix srcPrefix")
    return job_cfg


def submit_job(paths: Paths, job_file: Path, preflight: bool = True) -> int:
    """Check ``job_file`` (and, with ``preflight``, both of its ends) and freeze it as a job."""
    job_cfg = load_job_file(paths, job_file)
    # Opening the drivers checks what can be checked without the network (a destination
    # directory exists, a list file is readable, an endpoint parses), so it fails here, not later.
    from ..storage import open_job_destination, open_job_source

    opened = []
    try:
        for open_driver in (open_job_source, open_job_destination):
            opened.append(open_driver(job_cfg))
        if preflight:
            from .. import preflight as preflight_mod

            preflight_mod.check_drivers(job_cfg, *opened)
    finally:
        for driver in opened:
            driver.close()
    home = paths.ensure_home()
    home.private_log("submit.log")  # checked before the job exists, so a bad log leaves no half-submitted job
    job = job_to_write(home, job_cfg.job_name)
    try:
        job.create(lambda path: config_mod.write_properties(
            path, job_cfg.properties(), mode=0o600, comment=config_mod.submitted_comment(job_file.resolve(), job_cfg)))
    except OSError as exc:
        raise paths.working_dir_error(exc) from None
    log_line(home, "submit.log", f"submit job:{job_cfg.job_name} from {job_file.resolve()}")
    print(f"submit job:{job_cfg.job_name} success!")
    return 0


def job_to_write(home: Home, name: str) -> JobLayout:
    """The job, for a command that writes into its folders: refused when they lead outside
    workingDir (a symlink planted in the state tree), before anything is written."""
    job = home.job(name)
    job.check_inside()
    if job.root.is_symlink():
        raise StateError(f"{job.root} is a symlink; a job's state is written only inside workingDir: remove it")
    return job


def check_job_argument(paths: Paths, command: str, arg: str, retype: str) -> None:
    """A job named on the command line becomes a folder under workingDir, so only a job name
    passes: not '..', a path, an empty string or the job file the operator also passes to
    submit (then the message names the job it holds). ``retype`` is the command to suggest,
    with '{job}' where the name goes."""
    if config_mod.is_job_name(arg):
        return
    held = _job_in_file(arg)
    if held is not None:
        shown = arg if arg.isprintable() and len(arg) < 200 else quote_arg(arg)
        raise StateError(f"{command} takes a job name; {shown} holds job '{held}': "
                         f"run 'console.sh {retype.replace('{job}', held)}'")
    jobs = ", ".join(paths.home.job_names()) or "none"
    raise StateError(f"{command} takes a job name ({config_mod.JOB_NAME_RULE}), not {quote_arg(arg)}; "
                     f"jobs in {paths.home.master_jobs}: {jobs}")


def _job_in_file(arg: str) -> Optional[str]:
    try:
        if not os.path.isfile(arg):  # never open a FIFO or a device to look
            return None
        return config_mod.load_job(arg).job_name
    except (OperatorError, OSError, ValueError):
        return None


def job_names_for(paths: Paths, name: Optional[str]) -> list:
    if name:
        if not paths.home.job(name).exists():
            raise StateError(f"job '{name}' does not exist in {paths.home.master_jobs}; "
                             f"jobs there: {', '.join(paths.home.job_names()) or 'none'}")
        return [name]
    return paths.home.job_names()


def cmd_clean(paths: Paths, args) -> int:
    return clean_jobs(paths, [args.job] if args.job else [])


def clean_jobs(paths: Paths, names: list) -> int:
    """Remove the jobs ``names`` (the default job file's job when empty) everywhere."""
    distributed = paths.distributed  # a bad workers file stops clean before it removes anything
    if not names:
        default = paths.default_job_file()
        try:
            names = [config_mod.load_job(default).job_name]
        except OperatorError as exc:
            # Without a readable default job file, guessing would mean cleaning every job.
            problem = exc.problem if isinstance(exc, ConfigError) else str(exc)
            jobs = ", ".join(paths.home.job_names()) or "none"
            raise StateError(f"clean without a job name cleans the job of {default}, which cannot be read "
                             f"({problem}); name the job: console.sh clean <job> (jobs: {jobs})") from None
    held = _hold_for_clean(paths.home)
    try:
        _clean_jobs(paths, names, distributed)
    finally:
        if held is not None:
            held.release()
    return 0


def _hold_for_clean(home: Home) -> Optional[servicelock.HeldLock]:
    """The service lock, held while clean removes jobs, so no service starts in the middle.
    None when the working directory has no state yet (nothing to clean, nothing to lock)."""
    if not home.service_lock.parent.is_dir():
        return None
    _check_lock_file(home)
    try:
        held = servicelock.acquire(home.service_lock, servicelock.ROLE_CLEAN)
    except OSError as exc:
        raise StateError(f"cannot lock {home.service_lock}: {exc.strerror or exc}; "
                         f"make workingDir ({home.root}) writable") from None
    if held is None:
        other = servicelock.holder(home.service_lock)
        if other is not None and other.role == servicelock.ROLE_CLEAN:
            raise StateError(f"another 'console.sh clean' (pid {other.pid}) is running; wait for it to end")
        pid = other.pid if other is not None else "?"
        raise StateError(f"the service is running (pid {pid}); run 'console.sh stop' before 'clean'")
    return held


def _clean_jobs(paths: Paths, names: list, distributed: bool) -> None:
    from ..fleet.sshlink import abort_open_uploads

    for name in names:
        job = paths.home.job(name)
        if not job.exists() and not job.root.exists() and not job.root.is_symlink():
            print(f"job:{name} does not exist, nothing to clean")
            continue
        warn(abort_open_uploads(job, paths.hosts(), paths.ssh_settings() if distributed else None,
                                paths.sys_cfg.working_dir))
        job.remove()
        if distributed:
            _clean_hosts(paths, name)
        log_line(paths.home, "submit.log", f"clean job:{name}")
        print(f"clean job:{name} success!")


def _clean_hosts(paths: Paths, name: str) -> None:
    """Remove the job's folder (its tasks and its 0600 job.cfg with the keys) from every host."""
    from ..fleet.ssh import run_on_hosts

    folder = str(remote_worker_tree(paths.sys_cfg.working_dir).job(name))
    for host, r in run_on_hosts(paths.hosts(), lambda conn: conn.remove_tree(folder), paths.ssh_settings()).items():
        if not r.ok:
            print(f"warning: {r.error}; remove {folder} on {host} by hand", file=sys.stderr)


# -- retry ------------------------------------------------------------------------------------
def cmd_retry(paths: Paths, args) -> int:
    return retry_jobs(paths, args.job, resume=args.resume, take_secrets=args.take_secrets)


def retry_jobs(paths: Paths, job: Optional[str], *, resume: bool = False, take_secrets: bool = False) -> int:
    """Failed tasks of ``job`` (every job when None) back to pending; safe from cron."""
    home = paths.ensure_home()
    import fcntl  # POSIX only; retry from cron is a Linux operator's habit

    lock_path = home.retry_lock
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another retry is running; nothing done")
            return 0
        names = job_names_for(paths, job)
        if not names:
            print("no job submitted; nothing to retry")  # retry runs from cron: not an error
            return 0
        refuse_edited_jobs(home, names, "'console.sh retry --resume {job}' retries it so, or "
                                        "'console.sh clean {job}' and submit it again",
                           resume=resume, take_secrets=take_secrets)
        for name in names:
            _retry_job(home, name)
    return 0


def _retry_job(home: Home, name: str) -> None:
    from ..accounting import retry_cost

    job = job_to_write(home, name)
    reason = job.clear_scan_failure()
    if reason is not None:
        log_line(home, "submit.log", f"retry job:{name}: the scan resumes (it had failed: {reason})")
        print(f"retry job:{name}: the scan resumes from its checkpoints")
    stopped = job.clear_job_failure()
    if stopped is not None:
        log_line(home, "submit.log", f"retry job:{name}: dispatching again (it had stopped: {stopped})")
        print(f"retry job:{name}: the job had stopped ({stopped}); dispatching its tasks again")
    cost = retry_cost(job.failed_dirs())  # before the move: it reads the failed folders
    moved = job.retry_failed()
    if moved:
        line = (f"retry job:{name}: {moved} failed task(s) back to pending: {cost.files} file(s), "
                f"{status_mod.human_bytes(cost.bytes)} to send again")
        log_line(home, "submit.log", line)
        print(line)
        if cost.needing_a_change:
            print(f"retry job:{name}: {cost.needing_a_change} of them fail again until the source or the "
                  f"destination changes (missing at the source, or a name that cannot be a key); "
                  f"'console.sh errors {name}' lists them")
    stuck = sum(1 for d in job.failed_dirs() if damaged_reason(d))
    if stuck:
        print(f"retry job:{name}: {stuck} failed task(s) whose TASK file was damaged cannot run again; "
              f"'console.sh stat {name}' says what to do")
    if not (moved or stuck or reason or stopped):
        print(f"nothing to retry: job {name} has no failed task")


# -- stat -------------------------------------------------------------------------------------
def cmd_stat(paths: Paths, args) -> int:
    """Exit code: 0 every job Succeed, 1 one Failed or Abort, 3 one still Submitted or Running,
    2 no job or a usage error (``status.overall_exit_code``)."""
    home = paths.home
    running = service_pid(home) is not None
    names = job_names_for(paths, args.job)
    statuses = [status_mod.job_status(home, home.job(name), running) for name in names]
    rows = (status_mod.host_rows(home, paths.hosts(), statuses, running) if paths.distributed else None)
    timetable = Timetable.parse(paths.sys_cfg.worker_max_throughput_schedule)
    if getattr(args, "json", False):
        print(json.dumps(status_mod.stat_document(statuses, rows, running, timetable), indent=1))
    if not names:
        print("no job submitted; run 'console.sh submit' first", file=sys.stderr)
        return status_mod.EXIT_USAGE
    if not getattr(args, "json", False):
        out = []
        for s in statuses:
            out.append(status_mod.format_stat(s))
            if args.detail:
                out.append(detail_lines(home.job(s.name), paths.distributed, running))
        if rows is not None:
            out.append(status_mod.format_hosts(rows))
        if timetable is not None:
            out.append(f"Throughput schedule: {describe_schedule(timetable, time.time())}")
        print("\n".join(out))
    return status_mod.overall_exit_code(statuses)


def detail_lines(job: JobLayout, distributed: bool, service_running: bool) -> str:
    """Every failure so far, finished tasks' (error.list) and running ones', then the tasks
    out on a worker. Never over SSH: a distributed job's running tasks show the counts by
    reason their hosts' heartbeats carry ('console.sh errors' reads their keys)."""
    # The running tasks first: one that finishes meanwhile is then read from its error.list only.
    running = running_tasks(job)
    live = [] if distributed else local_running_failures(job, running.get(STANDALONE_HOST, []))
    lines = []
    for d in job.failed_dirs():
        for line in iter_lines(TaskFolder(d).error_list):
            lines.append(f"Failed:{d.name}: {line}")
    done = _finished_ids(job)
    state = "running" if service_running else "stopped"
    if distributed and service_running:
        ids = {t for tasks in running.values() for t in tasks} - done
        for row in running_counts(job, ids):
            lines.append(f"Failed:{row.task_id}@{row.host}({state}): {reasons_text(row.reasons)}; "
                         f"the keys: 'console.sh errors {job.name}'")
    for f in live:
        if f.task_id not in done:
            lines.append(f"Failed:{f.task_id}({state}): {list_line(f.key, f.detail).rstrip(chr(10))}")
    for host in job.dispatched_hosts():
        for tid in job.dispatched_ids(host):
            lines.append(f"Dispatched:{tid}@{host}")
    return "\n".join(lines)


def cmd_errors(paths: Paths, args) -> int:
    """Gathers the failed objects of a job (every failed task's error.list, and what its
    running tasks have failed so far) into one manifest, which a new job reads with
    srcType=list to copy exactly those. Lines are copied as written: error.list and a manifest
    share one format (``listformat``), so every key survives."""
    names = job_names_for(paths, args.job)
    if len(names) != 1:
        raise StateError(f"name the job: {', '.join(names) or 'no job submitted'}")
    job = paths.home.job(names[0])
    frozen = config_mod.load_job(job.config_file)
    # The running tasks first: one that finishes meanwhile is then read from its error.list only.
    live, warnings = _running_failures(paths, job, running_tasks(job))
    try:
        out = open(args.output, "w", encoding="utf-8", errors="surrogateescape") if args.output else sys.stdout
    except OSError as exc:
        raise StateError(f"cannot write {args.output}: {exc.strerror or exc}; choose a writable path "
                         f"with -o") from None
    count = 0
    try:
        for task in job.failed_dirs():
            for line in iter_lines(TaskFolder(task).error_list):
                if line.strip():
                    out.write(line + "\n")
                    count += 1
        done = _finished_ids(job)
        live = [f for f in live if f.task_id not in done]
        for f in live:
            out.write(list_line(f.key, f.detail))
    finally:
        if args.output:
            out.close()
    where = args.output or "standard output"
    inner = frozen.list_src_type if frozen.src_type == "list" else frozen.src_type
    print(f"{count + len(live)} failed object(s) of job:{job.name} written to {where}; to copy exactly these, "
          f"submit a job with the same src keys and srcType=list, listSrcType={inner}, "
          f"listFilePath={args.output or '<that file>'}", file=sys.stderr)
    if live:
        tasks = len({(f.host, f.task_id) for f in live})
        print(f"{len(live)} of them from {tasks} task(s) still running (failed so far; a task's "
              f"failures are final when it ends)", file=sys.stderr)
    warn(warnings)
    _print_skipped(job)
    return 0


def _one_job(paths: Paths, name: Optional[str]) -> JobLayout:
    names = job_names_for(paths, name)
    if len(names) != 1:
        raise StateError(f"name the job: {', '.join(names) or 'no job submitted'}")
    return paths.home.job(names[0])


def cmd_report(paths: Paths, args) -> int:
    """Exit code: 0 the report is written, 2 no such job or it cannot be read."""
    from .. import report as report_mod

    job = _one_job(paths, args.job)
    report = report_mod.write_report(job, report_mod.job_settings(job))
    s = report.summary
    outcomes = ", ".join(f"{name} {v['objects']}" for name, v in sorted(s["by_outcome"].items())) or "no object"
    shown = f"{job.shown_root}/{job.report_dir.name}"
    state = "" if s["complete"] else f" (the job has {s['tasks']['not_finished']} task(s) not finished: " \
                                      f"they are not in it yet)"
    blind = s["manifest"]["without_crc64"]
    blind = f" ({blind} without a CRC64, sizes only: auditMode=detailed records them)" if blind else ""
    print(f"report of job:{job.name} in {shown}/: {s['objects']} object(s): {outcomes}; manifest "
          f"{s['manifest']['objects']} object(s){blind}, sha256 {report.digest}{state}")
    return 0


def cmd_verify_report(paths: Paths, args) -> int:
    """Exit code: 0 the destination holds every object as the report says, 1 one differs or is
    missing, 2 no report or a usage error."""
    from .. import report as report_mod
    from ..storage import open_job_destination

    job = _one_job(paths, args.job)
    if not (job.report_dir / report_mod.SUMMARY_JSON).is_file():
        raise StateError(f"job {job.name} has no report yet: write it with 'console.sh report {job.name}'")
    cfg_path = Path(args.against) if args.against else job.config_file
    dest_cfg = config_mod.load_job(cfg_path)
    destination = open_job_destination(dest_cfg)
    where = destination_words(dest_cfg)
    try:
        result = report_mod.verify(job.report_dir, destination,
                                   lambda d: print(f"differs: {quote_arg(d.key)}: {d.problem}"))
    finally:
        destination.close()
    how = "size and CRC64" if result.by_crc64 else "size and MD5 (the destination reports no CRC64)"
    if result.ok:
        print(f"match: the {result.checked} object(s) of job:{job.name}'s report are at {where} as reported "
              f"({how}); manifest sha256 {result.digest}")
        return 0
    if not result.differing:
        print(f"differ: every one of the {result.checked} object(s) of job:{job.name}'s report is at {where} as "
              f"its rows say ({how}), but they give manifest sha256 {result.digest}, and its summary.json says "
              f"{result.report_digest}: the report was changed since it was written; 'console.sh report "
              f"{job.name}' writes it again from the task folders")
        return 1
    print(f"differ: {result.differing} of the {result.checked} object(s) of job:{job.name}'s report are not "
          f"at {where} as reported ({how}); manifest sha256 {result.digest}, the report's "
          f"{result.report_digest}; copy them again with a job of those keys, or 'console.sh retry' after "
          f"removing their tasks' results")
    return 1


def destination_words(cfg) -> str:
    """The destination as messages name it: its kind, endpoint (no password), bucket and prefix."""
    return f"{cfg.dest_type} {config_mod.scrub_passwords(cfg.dest_domain)} {cfg.dest_bucket}/{cfg.dest_prefix}".rstrip()


def cmd_plan(paths: Paths, args) -> int:
    """Exit code: 0 planned, 1 the source or the destination failed a request, 2 a bad job file."""
    from .. import plan as plan_mod
    from ..audit import ListingAudit
    from ..scanner import SplitLimits
    from ..service import source_label
    from ..storage import open_job_destination, open_job_source
    from ..storage.errors import RequestFailed

    cfg = load_job_file(paths, _plan_job_file(paths, args.job_file))
    settings = plan_mod.PlanSettings(
        limits=SplitLimits.for_job(cfg),
        scan_threads=cfg.scan_thread_count, scan_depth=cfg.max_multi_thread_scan_depth,
        skip_existing=cfg.is_skip_exist_file, audit_job=cfg.job_type == "audit",
        audit_after_import=cfg.is_audit_after_import, audit_mode=cfg.audit_mode,
        multipart_threshold=cfg.multipart_upload_threshold, part_size=cfg.multipart_upload_part_size,
        listed_by_requests=cfg.src_type in plan_mod.LISTED_BY_REQUESTS)
    source = open_job_source(cfg)
    try:
        destination = open_job_destination(cfg)
    except BaseException:
        source.close()
        raise
    try:
        planner = plan_mod.Planner(source, destination, settings)
        try:
            tally = planner.run()
        except RequestFailed as exc:
            raise OperatorError(f"plan of job:{cfg.job_name}: {exc.describe()}; nothing was copied, "
                                f"run plan again once it answers") from None
        listing_audit = ListingAudit.applies(destination, cfg.audit_mode)
    finally:
        source.close()
        destination.close()
    hosts = max(1, len(paths.hosts()))
    caps = _caps(paths, cfg, hosts)
    rate, note = _reached_rate(paths, cfg.job_name)
    doc = plan_mod.document(tally, settings, plan_mod.requests_of(tally, settings, listing_audit),
                            job=cfg.job_name, source=config_mod.scrub_passwords(source_label(cfg)),
                            destination=destination_words(cfg),
                            threads=paths.sys_cfg.worker_task_thread_num, hosts=hosts, caps=caps, rate=rate,
                            units=planner.units)
    doc["time"]["reached_note"] = note
    print(plan_mod.to_json(doc) if args.json else plan_mod.format_text(doc))
    return 0


def _plan_job_file(paths: Paths, arg: Optional[str]) -> Path:
    """The job file to plan: the one named, a submitted job's own (by its name), or the default."""
    if arg is None:
        return paths.default_job_file()
    if not os.path.exists(arg) and config_mod.is_job_name(arg) and paths.home.job(arg).exists():
        return paths.home.job(arg).config_file
    return Path(arg)


def _caps(paths: Paths, cfg, hosts: int):
    """The tightest caps on the job (plan.Caps): each worker's own times the hosts, and the
    job's, shared among them."""
    from .. import plan as plan_mod
    from ..service import throughput_bps

    fleet = f" x {hosts} workers" if hosts > 1 else ""
    rates, starts = [], []
    per_worker = throughput_bps(paths.sys_cfg) // 1024
    if per_worker:
        key = "workerMaxThroughputSchedule's slot now" if paths.sys_cfg.worker_max_throughput_schedule.strip() \
            else "workerMaxThroughput(KB/s)"
        rates.append((per_worker * 1024 * hosts, f"{key}={per_worker}{fleet}"))
    if cfg.job_max_throughput_kbs:
        rates.append((cfg.job_max_throughput_kbs * 1024, f"jobMaxThroughput(KB/s)={cfg.job_max_throughput_kbs}"))
    if paths.sys_cfg.worker_max_qps:
        starts.append((paths.sys_cfg.worker_max_qps * hosts, f"workerMaxQps={paths.sys_cfg.worker_max_qps}{fleet}"))
    if cfg.job_max_qps:
        starts.append((cfg.job_max_qps, f"jobMaxQps={cfg.job_max_qps}"))
    rate, rate_words = min(rates) if rates else (0, "")
    qps, qps_words = min(starts) if starts else (0, "")
    return plan_mod.Caps(rate, rate_words, qps, qps_words)


def _reached_rate(paths: Paths, name: str) -> tuple:
    """(Rate or None, a note when the job ran but its rate is not known) from the job's report."""
    from .. import plan as plan_mod
    from .. import report as report_mod

    job = paths.home.job(name)
    if not job.exists():
        return None, ""
    summary_file = job.report_dir / report_mod.SUMMARY_JSON
    try:
        summary = json.loads(summary_file.read_text(encoding="ascii"))
    except FileNotFoundError:
        if job.succeed_dirs() or job.failed_dirs():
            return None, f"job:{name} has run but has no report: 'console.sh report {name}' writes it, " \
                         f"then plan shows the rate it reached"
        return None, ""
    except (OSError, ValueError) as exc:
        return None, f"job:{name}'s {job.shown_root}/{job.report_dir.name}/{report_mod.SUMMARY_JSON} cannot " \
                     f"be read ({exc}): 'console.sh report {name}' writes it again"
    rate = plan_mod.reached_rate(summary) if isinstance(summary, dict) else None
    return rate, "" if rate else f"job:{name} has run but copied nothing yet: no rate to go by"


def _finished_ids(job: JobLayout) -> set:
    return {parse_finished_name(d.name)[0] for d in job.failed_dirs() + job.succeed_dirs()}


def _running_failures(paths: Paths, job: JobLayout, running: dict) -> tuple:
    """(RunningFailure list, warning lines) of the job's running tasks: their audit.log here
    standalone, on their hosts over SSH in distributed mode."""
    if not paths.distributed:
        return local_running_failures(job, running.get(STANDALONE_HOST, [])), []
    if not any(running.values()):
        return [], []
    return remote_running_failures(job, running, paths.hosts(), paths.ssh_settings(), paths.sys_cfg.working_dir)


SKIPPED_SHOWN = 20


def _print_skipped(job: JobLayout) -> None:
    """Entries the listing found but that are not files (FIFOs, sockets, unfollowed symlinks):
    never copied, never retried, and never silent. Not part of the list file: a list job would
    refuse them again."""
    shown = total = 0
    for task in job.succeed_dirs() + job.failed_dirs():
        for line in iter_lines(task / SKIPPED_LIST):
            if not line.strip():
                continue
            total += 1
            if shown < SKIPPED_SHOWN:
                key, reason = written_columns(line)  # as written: one line whatever the name
                print(f"skipped: {key}: {reason}", file=sys.stderr)
                shown += 1
    if total:
        more = f" ({total - shown} more not shown)" if total > shown else ""
        print(f"{total} listed entr{'y' if total == 1 else 'ies'} of job:{job.name} not copied because they are not regular files{more}; "
              f"all of them: {job.shown_root}/*_tasks/*/{SKIPPED_LIST}", file=sys.stderr)


def cmd_version(paths: Optional[Paths], args) -> int:
    print(f"ossimport-dist {__version__}")
    return 0


# -- entry point ------------------------------------------------------------------------------
NO_PREFLIGHT_HELP = ("do not check the destination and the source before copying (a read with "
                     "the keys); for a store that allows writes but not reads, say")


def _add_edit_choices(parser: argparse.ArgumentParser, resume_help: str) -> None:
    """What start and retry do with a job whose file was edited since its submit."""
    parser.add_argument("--resume", action="store_true",
                        help=f"{resume_help}; an edit of credentials only is taken into the job")
    parser.add_argument("--take-secrets", action="store_true",
                        help="a job file whose only edits are credentials: take them into the job (no rescan)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="console.sh", description="ossimport-dist console")
    p.add_argument("--install-dir", default=os.environ.get("OSSIMPORT_HOME", "."),
                   help="the folder holding conf/ (console.sh passes its own folder)")
    p.add_argument("--sys", dest="sys_file", default=None, help="sys.properties to use (default conf/sys.properties)")
    p.add_argument("--workers", dest="workers_file", default=None,
                   help="the workers file (default workers.txt beside conf/, else conf/workers)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="submit a job (default conf/local_job.cfg)")
    s.add_argument("job_file", nargs="?")
    s.add_argument("--no-preflight", action="store_true", help=NO_PREFLIGHT_HELP)
    s = sub.add_parser("start", help="start the service in the background")
    _add_edit_choices(s, "run jobs as submitted even when their job file was edited since")
    s.add_argument("--no-preflight", action="store_true", help=NO_PREFLIGHT_HELP)
    sub.add_parser("stop", help="stop the service started by 'start'")
    s = sub.add_parser("clean", help="remove a job's state (not its destination objects)")
    s.add_argument("job", nargs="?")
    s = sub.add_parser("stat", help="show job progress: stat [detail] [job] [--json]",
                       epilog="exit codes: 0 every job Succeed, 1 a job Failed or Abort, 3 a job still "
                              "Submitted or Running, 2 no job or a usage error")
    s.add_argument("words", nargs="*", metavar="[detail] [job]")
    s.add_argument("--json", action="store_true",
                   help="the whole status as one JSON object (schema: docs/stat-json.md)")
    s = sub.add_parser("retry", help="move failed tasks back to pending")
    _add_edit_choices(s, "retry even when the job file was edited since the submit (as submitted)")
    s.add_argument("job", nargs="?")
    s = sub.add_parser("errors", help="gather the failed objects of a job into one list file "
                                      "(key<TAB>reason), the input of a srcType=list job")
    s.add_argument("job", nargs="?")
    s.add_argument("-o", "--output", help="write here instead of standard output")
    sub.add_parser("deploy", help="install the agent on every host of the workers file (over SSH)")
    s = sub.add_parser("set", help="change jobMaxThroughput(KB/s), jobMaxQps or a credential of a submitted job",
                       epilog="set jobMaxThroughput(KB/s)=N [job]; set jobMaxQps=N [job]; "
                              "set destSecretKey [--from job.cfg] [job] "
                              "reads the secret without echo, or one line of stdin, never from the command line")
    s.add_argument("assignment", help="jobMaxThroughput(KB/s)=N, jobMaxQps=N, or a credential key alone")
    s.add_argument("--from", dest="from_file", metavar="JOB_FILE", help="take the credential from this job file")
    s.add_argument("job", nargs="?")
    s = sub.add_parser("report", help="write the job's report: report/objects.csv.gz (a row per object), "
                                      "summary.json (totals, rates, manifest digest)",
                       epilog="exit codes: 0 written, 2 no such job or a usage error")
    s.add_argument("job", nargs="?")
    s = sub.add_parser("verify-report", help="check the destination against the job's report, object by "
                                             "object, and recompute its manifest digest",
                       epilog="exit codes: 0 every object as reported, 1 one differs or is missing, "
                              "2 no report or a usage error")
    s.add_argument("job", nargs="?")
    s.add_argument("--against", metavar="JOB_FILE",
                   help="check the destination this job file's destXxx keys name (default: the job's own)")
    s = sub.add_parser("plan", help="a dry run: what the job would list, skip, copy and ask, and how long it "
                                    "would take; copies nothing",
                       epilog="plan [job.cfg | a submitted job's name] [--json]; exit codes: 0 planned, 1 the "
                              "source or the destination failed a request, 2 a bad job file")
    s.add_argument("job_file", nargs="?", metavar="JOB_FILE")
    s.add_argument("--json", action="store_true", help="the plan as one JSON object")
    sub.add_parser("version")
    return p


COMMANDS = {"submit": cmd_submit, "start": cmd_start, "stop": cmd_stop, "clean": cmd_clean,
            "stat": cmd_stat, "retry": cmd_retry, "errors": cmd_errors, "version": cmd_version, "deploy": cmd_deploy,
            "set": cmd_set, "report": cmd_report, "verify-report": cmd_verify_report,
            "plan": cmd_plan}


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "set" and args.job is None and len(extra) == 1 and not extra[0].startswith("-"):
        args.job, extra = extra[0], []  # 'set key --from file job': argparse stops at the option
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "stat":
        words = list(args.words)
        args.detail = bool(words) and words[0] == "detail"
        words = words[1:] if args.detail else words
        if len(words) > 1:
            parser.error("stat takes at most: detail, then a job name")
        args.job = words[0] if words else None
    try:
        if args.command == "version":
            return cmd_version(None, args)
        paths = Paths(Path(args.install_dir), Path(args.sys_file) if args.sys_file else None,
                      Path(args.workers_file) if args.workers_file else None)
        if getattr(args, "job", None) is not None:
            check_job_argument(paths, args.command, args.job, _retype(args))
        return COMMANDS[args.command](paths, args)
    except OperatorError as exc:
        print(f"error: {config_mod.scrub_passwords(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `console.sh stat | head` closed the pipe: nothing more to say. Point stdout at
        # /dev/null so the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _shown_assignment(assignment: str) -> str:
    """What 'set' was given, as messages may repeat it: a credential's name, never its value."""
    key = assignment.partition("=")[0]
    return key if key in config_mod.CREDENTIAL_KEYS else assignment


def _retype(args) -> str:
    """The command line the operator typed, with '{job}' for the job argument."""
    words = {"stat": "stat detail" if getattr(args, "detail", False) else "stat",
             "set": f"set {_shown_assignment(getattr(args, 'assignment', ''))}"}.get(args.command, args.command)
    tail = f" -o {args.output}" if getattr(args, "output", None) else ""
    return words + " {job}" + tail


if __name__ == "__main__":
    sys.exit(main())
