"""Job and system configuration: ``local_job.cfg`` / ``job.cfg`` and ``sys.properties``.

The files keep OssImport's Java-properties syntax and key names, so an operator's existing
``conf/`` carries over. Where OssImport crashed with a stack trace (a deleted key, a typo) we
take the default or warn; a bad value is one ``ConfigError`` line naming file, line, key and fix.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import javaproperties

from . import storage
from .filters import PatternError, parse_patterns
from .schedule import ScheduleError, Timetable
from .errors import ConfigError, OperatorError
from .storage.rules import KeyMissing, KeyProblem, check_key_segments, local_dest_root

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

# The kinds come from the storage registry; these name them as this version ships them.
SRC_TYPES = storage.source_kinds()
DEST_TYPES = storage.destination_kinds()
# Announced destination types; named in the error so nobody thinks it is a typo.
PLANNED_DEST_TYPES = ("s3", "local")
JOB_TYPES = ("import", "audit")
AUDIT_MODES = ("simple", "general", "detailed")
META_MODES = ("stat", "head")

SECRET_KEYS = ("srcSecretKey", "destSecretKey", "workerPassword")
# The job keys that say who the job is to the source and destination (for Azure, the account
# name and key; for Qiniu, Upyun and the clouds, the key pair). Fixing one is the common case,
# so they may change in a submitted job without a rescan; never typed on a command line.
CREDENTIAL_KEYS = ("srcAccessKey", "srcSecretKey", "destAccessKey", "destSecretKey")
REDACTED = "******"

MIN_INCREMENTAL_INTERVAL = 900
# Test-only: when set, its integer value replaces the 900 s floor of incrementalModeInterval
# (a non-integer value means 1), so a test can run incremental rounds in seconds.
TEST_MIN_INTERVAL_ENV = "OSSIMPORT_TEST_MIN_INTERVAL"

MIN_PART_SIZE = 100 * KIB  # OSS refuses smaller parts (except the last)
MAX_PART_SIZE = 5 * GIB
MAX_SINGLE_PUT = 5 * GIB  # OSS refuses a single PUT above this
MAX_CONFIG_BYTES = MIB  # a job file or sys.properties is a few KB; more is the wrong file

_JOB_NAME = re.compile(r"[A-Za-z0-9_-]{4,128}")
_INT = re.compile(r"[+-]?[0-9]+")
_SIZE = re.compile(r"([0-9]+)\s*([kKmMgGtT]?)[bB]?")
_SIZE_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SLASHES = "/\\"
# scheme://user:password@host: the password part, for scrub_passwords.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]*:)[^@/?#\s]*@")
JOB_NAME_RULE = "4 to 128 letters, digits, '_' or '-'"


# --- the two configurations ---------------------------------------------------------------

@dataclass
class JobConfig:
    """One job, as ``local_job.cfg`` / ``job.cfg`` describe it. Sizes are bytes."""

    job_name: str = "local_test"
    job_type: str = "import"
    is_incremental: bool = False
    incremental_mode_interval: int = 86400
    import_since: int = 0
    last_modify: int = 0
    src_type: str = "local"
    src_access_key: str = ""
    src_secret_key: str = field(default="", repr=False)
    src_domain: str = ""
    src_bucket: str = ""
    src_prefix: str = ""
    # New (srcType=list): a manifest of keys (or a job's error.list) read from listSrcType.
    list_file_path: str = ""
    list_src_type: str = "local"
    dest_type: str = "oss"
    dest_access_key: str = ""
    dest_secret_key: str = field(default="", repr=False)
    dest_domain: str = ""
    dest_bucket: str = ""
    dest_prefix: str = ""
    app_id: int = 0
    is_download_from_cdn: bool = False
    cdn_domain: str = ""
    get_object_meta_mode: str = "stat"
    http_list_file_path: str = ""
    http_prefix_column: int = 1
    relative_path_column: int = 2
    is_skip_exist_file: bool = False
    task_object_count_limit: int = 10000
    task_object_size_limit: int = 1000000000
    scan_thread_count: int = 1
    max_multi_thread_scan_depth: int = 1
    multipart_upload_threshold: int = 150 * MIB
    multipart_upload_part_size: int = 50 * MIB
    upload_thread_num_per_large_file: int = 3
    is_server_side_encryption: bool = False
    is_allow_symbolic_link: bool = False
    is_audit_after_import: bool = True
    audit_mode: str = "general"
    # New (not in OssImport): a cap on the sum over all workers, divided among live hosts by the
    # tracker, since per-worker caps multiply with the fleet. 0 = none. Live: see console 'set'.
    job_max_throughput_kbs: int = 0
    job_max_qps: int = 0  # files started per second by the whole job; 0 = no cap
    # Which listed objects the job takes (filters.Selection).
    src_include_pattern: str = ""
    src_exclude_pattern: str = ""
    min_size: int = 0
    max_size: int = 0  # 0: no bound
    path: str = ""
    warnings: list = field(default_factory=list, compare=False)
    # key -> line it was read from, so later checks (console, scanner) can point at it too.
    key_lines: dict = field(default_factory=dict, repr=False, compare=False)

    def properties(self) -> dict:
        """Every key in OssImport's spelling -> its text, for freezing a submitted job."""
        return _to_properties(self, _JOB_KEYS)


@dataclass
class SysConfig:
    """``sys.properties``: where state lives, how to reach workers, how hard they work."""

    working_dir: str = "."
    worker_user_name: str = ""
    worker_password: str = field(default="", repr=False)
    private_key_file: str = ""
    ssh_port: int = 22
    worker_task_thread_num: int = 60
    worker_max_throughput_kbs: int = 100000000  # 0 = no cap
    worker_max_throughput_schedule: str = ""  # schedule.Timetable; replaces the cap above when set
    worker_max_qps: int = 0  # files started per second by one worker; 0 = no cap
    metrics_address: str = ""  # the master's Prometheus endpoint (metrics.Address); empty = off
    dispatcher_thread_num: int = 1
    worker_abort_when_uncatched_exception: bool = False
    worker_record_md5: bool = False
    java_heap_max_size: int = 1024 * MIB
    # New: seconds without a successful poll of a host, or a moving agent heartbeat, before the
    # tracker gives its tasks to other hosts.
    worker_heartbeat_timeout: int = 60
    # New: seconds an endpoint may take no connection, with no file copied meanwhile, before the
    # job stops Failed (fatal.FatalDetector).
    worker_endpoint_down_timeout: int = 20
    # New: accept and remember the key of a host seen for the first time (default: refuse).
    ssh_accept_new_host_keys: bool = False
    # New: where the workers' SSH host keys are checked (OpenSSH's known_hosts format).
    ssh_known_hosts_file: str = "~/.ssh/known_hosts"
    path: str = ""
    warnings: list = field(default_factory=list, compare=False)
    key_lines: dict = field(default_factory=dict, repr=False, compare=False)

    def properties(self) -> dict:
        """Every key in OssImport's spelling -> its text (for pushing to workers)."""
        return _to_properties(self, _SYS_KEYS)


# --- key tables -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Key:
    name: str  # OssImport's spelling, case-sensitive
    attr: str
    kind: str  # str | bool | int | size | choice
    low: Optional[int] = None
    high: Optional[int] = None
    # The allowed values, or a function giving them (read from the storage registry each time).
    choices: Union[tuple, Callable[[], tuple]] = ()

    def allowed(self) -> tuple:
        return self.choices() if callable(self.choices) else self.choices


def _list_readable_kinds() -> tuple:
    """What listSrcType may name: every source kind a list source can read keys from."""
    return tuple(k for k in storage.source_kinds() if storage.source_rules(k).list_can_read)


_JOB_KEYS = (
    _Key("jobName", "job_name", "str"),
    _Key("jobType", "job_type", "choice", choices=JOB_TYPES),
    _Key("isIncremental", "is_incremental", "bool"),
    _Key("incrementalModeInterval", "incremental_mode_interval", "int", low=1),
    _Key("importSince", "import_since", "int", low=0),
    _Key("lastModify", "last_modify", "int", low=0),
    _Key("srcType", "src_type", "choice", choices=storage.source_kinds),
    _Key("srcAccessKey", "src_access_key", "str"),
    _Key("srcSecretKey", "src_secret_key", "str"),
    _Key("srcDomain", "src_domain", "str"),
    _Key("srcBucket", "src_bucket", "str"),
    _Key("srcPrefix", "src_prefix", "str"),
    _Key("listFilePath", "list_file_path", "str"),
    _Key("listSrcType", "list_src_type", "choice", choices=_list_readable_kinds),
    _Key("destType", "dest_type", "choice", choices=storage.destination_kinds),
    _Key("destAccessKey", "dest_access_key", "str"),
    _Key("destSecretKey", "dest_secret_key", "str"),
    _Key("destDomain", "dest_domain", "str"),
    _Key("destBucket", "dest_bucket", "str"),
    _Key("destPrefix", "dest_prefix", "str"),
    _Key("appId", "app_id", "int", low=0),
    _Key("isDownloadFromCdn", "is_download_from_cdn", "bool"),
    _Key("cdnDomain", "cdn_domain", "str"),
    _Key("getObjectMetaMode", "get_object_meta_mode", "choice", choices=META_MODES),
    _Key("httpListFilePath", "http_list_file_path", "str"),
    _Key("httpPrefixColumn", "http_prefix_column", "int", low=1),
    _Key("relativePathColumn", "relative_path_column", "int", low=1),
    _Key("isSkipExistFile", "is_skip_exist_file", "bool"),
    _Key("taskObjectCountLimit", "task_object_count_limit", "int", low=1, high=50000),
    _Key("taskObjectSizeLimit", "task_object_size_limit", "size", low=1),
    _Key("scanThreadCount", "scan_thread_count", "int", low=1, high=32),
    _Key("maxMultiThreadScanDepth", "max_multi_thread_scan_depth", "int", low=1, high=16),
    _Key("multipartUploadThreshold", "multipart_upload_threshold", "size", low=1,
         high=MAX_SINGLE_PUT),
    _Key("multipartUploadPartSize", "multipart_upload_part_size", "size", low=MIN_PART_SIZE,
         high=MAX_PART_SIZE),
    _Key("uploadThreadNumPerLargeFile", "upload_thread_num_per_large_file", "int", low=1,
         high=100),
    _Key("isServerSideEncryption", "is_server_side_encryption", "bool"),
    _Key("isAllowSymbolicLink", "is_allow_symbolic_link", "bool"),
    _Key("isAuditAfterImport", "is_audit_after_import", "bool"),
    _Key("auditMode", "audit_mode", "choice", choices=AUDIT_MODES),
    _Key("jobMaxThroughput(KB/s)", "job_max_throughput_kbs", "int", low=0),
    _Key("jobMaxQps", "job_max_qps", "int", low=0),
    _Key("srcIncludePattern", "src_include_pattern", "str"),
    _Key("srcExcludePattern", "src_exclude_pattern", "str"),
    _Key("minSize", "min_size", "size", low=0),
    _Key("maxSize", "max_size", "size", low=0),
)

_SYS_KEYS = (
    _Key("workingDir", "working_dir", "str"),
    _Key("workerUserName", "worker_user_name", "str"),
    _Key("workerPassword", "worker_password", "str"),
    _Key("privateKeyFile", "private_key_file", "str"),
    _Key("sshPort", "ssh_port", "int", low=1, high=65535),
    _Key("workerTaskThreadNum", "worker_task_thread_num", "int", low=1, high=1000),
    _Key("workerMaxThroughput(KB/s)", "worker_max_throughput_kbs", "int", low=0),
    _Key("workerMaxThroughputSchedule", "worker_max_throughput_schedule", "str"),
    _Key("workerMaxQps", "worker_max_qps", "int", low=0),
    _Key("metricsAddress", "metrics_address", "str"),
    _Key("dispatcherThreadNum", "dispatcher_thread_num", "int", low=1),
    _Key("workerAbortWhenUncatchedException", "worker_abort_when_uncatched_exception", "bool"),
    _Key("workerRecordMd5", "worker_record_md5", "bool"),
    _Key("javaHeapMaxSize", "java_heap_max_size", "size", low=1),
    _Key("workerHeartbeatTimeout", "worker_heartbeat_timeout", "int", low=2, high=86400),
    _Key("workerEndpointDownTimeout", "worker_endpoint_down_timeout", "int", low=1, high=86400),
    _Key("sshAcceptNewHostKeys", "ssh_accept_new_host_keys", "bool"),
    _Key("sshKnownHostsFile", "ssh_known_hosts_file", "str"),
)

# What a worker host needs of sys.properties; never the SSH credentials.
WORKER_SYS_KEYS = ("workerTaskThreadNum", "workerMaxThroughput(KB/s)", "workerMaxThroughputSchedule",
                   "workerMaxQps", "workerAbortWhenUncatchedException",
                   "workerRecordMd5", "javaHeapMaxSize", "workingDir", "workerEndpointDownTimeout")

JOB_KEY_NAMES = tuple(k.name for k in _JOB_KEYS)
SYS_KEY_NAMES = tuple(k.name for k in _SYS_KEYS)


# --- public entry points --------------------------------------------------------------------

def load_job(path) -> JobConfig:
    """Read and check a job file; raises ConfigError."""
    text, warnings = _read_file(path, "copy conf/local_job.cfg (standalone) or conf/job.cfg "
                                      "(distributed) and fill it in")
    return parse_job_text(text, str(path), _warnings=warnings)


def load_sys(path) -> SysConfig:
    """Read and check ``sys.properties``; raises ConfigError."""
    text, warnings = _read_file(path, "copy the shipped conf/sys.properties and fill it in")
    return parse_sys_text(text, str(path), _warnings=warnings)


def parse_job_text(text: str, path: str = "<text>", _warnings=None) -> JobConfig:
    """Same as load_job, from a string (tests, frozen copies)."""
    values, lines, warnings = _read_pairs(text, path, _JOB_KEYS, _SYS_KEYS, "the job file",
                                          "sys.properties", list(_warnings or ()))
    cfg = JobConfig(path=path, warnings=warnings, key_lines=lines)
    _assign(cfg, _JOB_KEYS, values, lines, path)
    _apply_kind_defaults(cfg)
    _check_job(cfg, lines, warnings)
    return cfg


def parse_sys_text(text: str, path: str = "<text>", _warnings=None) -> SysConfig:
    """Same as load_sys, from a string."""
    values, lines, warnings = _read_pairs(text, path, _SYS_KEYS, _JOB_KEYS, "sys.properties",
                                          "the job file", list(_warnings or ()))
    cfg = SysConfig(path=path, warnings=warnings, key_lines=lines)
    _assign(cfg, _SYS_KEYS, values, lines, path)
    try:
        Timetable.parse(cfg.worker_max_throughput_schedule)
    except ScheduleError as exc:
        raise ConfigError(path, lines.get("workerMaxThroughputSchedule", 0), "workerMaxThroughputSchedule",
                          str(exc)) from None
    try:
        parse_listen_address(cfg.metrics_address)
    except ValueError as exc:
        raise ConfigError(path, lines.get("metricsAddress", 0), "metricsAddress", str(exc),
                          "e.g. metricsAddress=127.0.0.1:9469, or empty for no metrics") from None
    return cfg


LOOPBACK = "127.0.0.1"  # where an address given as a port alone listens


def parse_listen_address(text: str) -> Optional[tuple]:
    """(host, port) of ``HOST:PORT``, ``:PORT`` or ``PORT`` (loopback), None when empty;
    ValueError saying what is wrong."""
    text = text.strip()
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not HOST:PORT, :PORT or PORT (a port from 1 to 65535)")
    return (host.strip("[]") if sep else "") or LOOPBACK, int(port)


def parse_size(text) -> int:
    """``150m`` -> bytes. k/m/g/t are binary (1024) as in OssImport; plain digits are bytes."""
    match = _SIZE.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"not a size: {text!r} (write e.g. 100k, 50m, 5g or plain bytes)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def format_size(n: int) -> str:
    """Bytes -> the shortest exact OssImport spelling (``157286400`` -> ``150m``)."""
    for unit, factor in (("t", TIB), ("g", GIB), ("m", MIB), ("k", KIB)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def write_properties(path, mapping, mode=0o600, comment=None) -> None:
    """Write ``mapping`` as a properties file, atomically, never readable by others meanwhile.

    It usually holds secrets, so the temporary file is created 0600 (mkstemp) before any byte
    is written, then given ``mode``. UTF-8, as our reader expects.
    """
    path = os.fspath(path)
    text = javaproperties.dumps({str(k): str(v) for k, v in mapping.items()},
                                comments=comment, timestamp=False, ensure_ascii=False)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --- the frozen job and the file it came from ---------------------------------------------
# job.cfg's first comment line: where it was submitted from, and a digest of the settings it
# had then, so a later edit of that file is told from a change made by 'console.sh set'.
SUBMITTED_FROM = "submitted from "
DIGEST_MARK = "; settings sha256:"


def settings_digest(cfg: "JobConfig") -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(cfg.properties(), sort_keys=True).encode("utf-8")).hexdigest()


def submitted_comment(job_file, cfg: "JobConfig") -> str:
    return f"{SUBMITTED_FROM}{os.path.abspath(job_file)}{DIGEST_MARK}{settings_digest(cfg)}"


def frozen_comment(frozen_path) -> str:
    """The 'submitted from ...' comment of a frozen job.cfg, or '' (an older job has none)."""
    try:
        with open(frozen_path, "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("#" + SUBMITTED_FROM):
                    return line[1:].rstrip("\n")
                if not line.startswith("#"):
                    return ""
    except OSError:
        pass
    return ""


def edits_since_submit(frozen_path) -> tuple:
    """(the file the job was submitted from, its keys that differ from the frozen job now) when
    that file was edited since the submit; (None, []) when it was not, is gone, unreadable, or
    now holds another job. Secret values are never shown: '***changed***'."""
    origin, now, then = _edited_settings(frozen_path)
    changes = [f"{k} ***changed***" if k in SECRET_KEYS else f"{k} '{then.get(k, '')}' -> '{v}'"
               for k, v in sorted(now.items()) if then.get(k) != v]
    return (origin, changes) if changes else (None, [])


def edited_keys(frozen_path) -> tuple:
    """(the file the job came from, the names of the keys edited there since the submit), as
    edits_since_submit tells them; (None, []) when none."""
    origin, now, then = _edited_settings(frozen_path)
    keys = [k for k, v in sorted(now.items()) if then.get(k) != v]
    return (origin, keys) if keys else (None, [])


def _edited_settings(frozen_path) -> tuple:
    """(origin, its settings now, the frozen settings) when the origin changed since the submit,
    else (None, {}, {})."""
    comment = frozen_comment(frozen_path)
    if DIGEST_MARK not in comment:
        return None, {}, {}
    origin, _, digest = comment[len(SUBMITTED_FROM):].rpartition(DIGEST_MARK)
    try:
        current, frozen = load_job(origin), load_job(frozen_path)
    except OperatorError:
        return None, {}, {}
    if current.job_name != frozen.job_name or settings_digest(current) == digest:
        return None, {}, {}
    return origin, current.properties(), frozen.properties()


def redact_for_worker(sys_cfg: "SysConfig") -> dict:
    """The sys.properties a worker host receives: its own settings, no SSH credentials."""
    props = sys_cfg.properties()
    return {k: props[k] for k in WORKER_SYS_KEYS}


def is_job_name(text: str) -> bool:
    """A job name is also a folder name under workingDir, so nothing else may pass for one."""
    return bool(_JOB_NAME.fullmatch(text))


def scrub_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` replaced by
    ``******``: a domain may carry one, and domains are logged and printed."""
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", str(text))


def redact(mapping) -> dict:
    """A copy of ``mapping`` with every non-empty secret value replaced by ``******``."""
    return {k: (REDACTED if k in SECRET_KEYS and v else v) for k, v in mapping.items()}


# --- reading --------------------------------------------------------------------------------

def _read_file(path, fix):
    try:
        # O_NONBLOCK: opening a FIFO passed for a config file must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(path, 0, "", "file not found", fix) from None
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read the file ({exc.strerror})",
                          "check its permissions, or pass the right path") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ConfigError(path, 0, "", f"cannot read the file ({kind})", "pass the path of the properties file")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(path, 0, "", f"{info.st_size} bytes, more than a configuration file holds "
                              f"(at most {format_size(MAX_CONFIG_BYTES)})", "pass the path of the properties file")
        try:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(path, 0, "", f"cannot read the file ({exc.strerror})",
                              "check its permissions, or pass the right path") from None
    return _decode(raw, str(path))


def _decode(raw: bytes, path: str):
    """UTF-8 as operators write it; else ISO-8859-1 as Java's Properties.load(InputStream)."""
    warnings = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = len(_LINE_BREAK.findall(raw[:exc.start].decode("latin-1"))) + 1
        warnings.append(f"{path}:{line}: not valid UTF-8; read the file as ISO-8859-1 "
                        "(save it as UTF-8 if non-ASCII paths look wrong)")
        text = raw.decode("latin-1")
    # Windows editors prepend a BOM, which Java would glue onto the first key.
    return text.lstrip("\ufeff"), warnings


def _read_pairs(text, path, keys, other_keys, here, there, warnings):
    """Key -> stripped value and key -> line, last one winning; warnings for the rest."""
    known = {k.name for k in keys}
    elsewhere = {k.name for k in other_keys}
    values, lines = {}, {}
    line = 1
    elements = javaproperties.parse(text)
    while True:
        try:
            element = next(elements)
        except StopIteration:
            break
        except javaproperties.InvalidUEscapeError:
            # The bad escape may sit inside a secret: name the line, never echo it.
            raw = _LINE_BREAK.split(text)[line - 1] if text else ""
            key = re.split(r"[=:\s]", raw.strip(), maxsplit=1)[0]
            raise ConfigError(path, line, key if key in known else "",
                              "invalid \\uXXXX escape (\\u must be followed by 4 hex digits)",
                              "write the character itself, or \\\\u for a literal \\u"
                              ) from None  # the chained error would quote the value
        start = line
        line += len(_LINE_BREAK.findall(element.source))
        if not isinstance(element, javaproperties.KeyValue):
            continue
        key = element.key
        if key not in known:
            warnings.append(f"{path}:{start}: {_unknown_key(key, known, elsewhere, there)}")
            continue
        if key in lines:
            warnings.append(f"{path}:{start}: duplicate key '{key}'; this value replaces the "
                            f"one on line {lines[key]}")
        # Invisible trailing blanks are the classic cause of "prefix must end with /".
        values[key] = element.value.strip(" \t\f")
        lines[key] = start
    return values, lines, warnings


def _unknown_key(key, known, elsewhere, there):
    shown = key if len(key) <= 60 else key[:57] + "..."
    text = f"unknown key '{shown}' ignored"
    if key in elsewhere:
        return f"{text}; it belongs in {there}"
    folded = {k.lower(): k for k in known}
    guess = folded.get(key.lower())
    if guess is None:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        guess = close[0] if close else None
    if guess:
        text += f"; did you mean '{guess}'?"
    return text


# --- converting -----------------------------------------------------------------------------

def _assign(cfg, keys, values, lines, path):
    for key in keys:
        text = values.get(key.name, "")
        if text == "":
            continue  # missing or empty: the dataclass default stands
        setattr(cfg, key.attr, _convert(key, text, lines.get(key.name, 0), path))


def _convert(key, text, line, path):
    shown = "" if key.name in SECRET_KEYS else f" (got '{text}')"
    if key.kind == "str":
        return text
    if key.kind == "choice":
        allowed = key.allowed()
        if text in allowed:
            return text
        fix = f"allowed: {', '.join(allowed)}"
        if text.lower() in allowed:
            fix = f"values are case-sensitive: write {key.name}={text.lower()}"
        elif key.name == "destType" and text.lower() in PLANNED_DEST_TYPES:
            raise ConfigError(path, line, key.name,
                              f"'{text}' is not supported yet",
                              f"allowed: {', '.join(allowed)}")
        raise ConfigError(path, line, key.name, f"unknown value{shown}", fix)
    if key.kind == "bool":
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ConfigError(path, line, key.name, f"must be true or false{shown}",
                          f"write {key.name}=true or {key.name}=false")
    if key.kind == "int":
        if not _INT.fullmatch(text):
            raise ConfigError(path, line, key.name, f"must be a whole number{shown}",
                              "write digits only, e.g. " + _example(key))
        number = int(text)
    else:
        try:
            number = parse_size(text)
        except ValueError:
            raise ConfigError(path, line, key.name, f"must be a size{shown}",
                              "write e.g. 100k, 50m, 5g or plain bytes") from None
    _check_range(key, number, text, line, path)
    return number


def _check_range(key, number, text, line, path):
    spell = format_size if key.kind == "size" else str
    low_ok = key.low is None or number >= key.low
    high_ok = key.high is None or number <= key.high
    if low_ok and high_ok:
        return
    got = f" (got '{text}')"
    if key.low is not None and key.high is not None:
        problem = f"must be from {spell(key.low)} to {spell(key.high)}{got}"
    elif key.low is not None:
        problem = f"must be at least {spell(key.low)}{got}"
    else:
        problem = f"must be at most {spell(key.high)}{got}"
    fix = {
        "multipartUploadPartSize": "OSS refuses parts under 100k or over 5g",
        "multipartUploadThreshold": "OSS refuses a single upload over 5g; files above the "
                                    "threshold go multipart",
        "taskObjectCountLimit": "guide: number of files / workers / workerTaskThreadNum",
    }.get(key.name, "")
    raise ConfigError(path, line, key.name, problem, fix)


def _example(key):
    return f"{key.name}={key.low if key.low is not None else 0}"


def _to_properties(cfg, keys):
    out = {}
    for key in keys:
        value = getattr(cfg, key.attr)
        if key.kind == "bool":
            out[key.name] = "true" if value else "false"
        elif key.kind == "size":
            out[key.name] = format_size(value)
        else:
            out[key.name] = str(value)
    return out


# --- rules across keys ----------------------------------------------------------------------

def _check_job(cfg: JobConfig, lines, warnings):
    path = cfg.path

    def fail(key, problem, fix=""):
        raise ConfigError(path, lines.get(key, 0), key, problem, fix)

    if not is_job_name(cfg.job_name):
        fail("jobName", f"must be {JOB_NAME_RULE} (got '{cfg.job_name}')",
             "e.g. jobName=nas_to_oss_2024")

    floor = _min_interval()
    if cfg.incremental_mode_interval < floor:
        fail("incrementalModeInterval",
             f"must be at least {floor} seconds (got '{cfg.incremental_mode_interval}')",
             "a rescan lists the whole source; 86400 (a day) is the usual value")

    try:
        storage.source_rules(cfg.src_type).validate(cfg)
        _check_dest_prefix(cfg)
        storage.destination_rules(cfg.dest_type).validate(cfg)
    except KeyMissing as missing:
        key = missing.key
        hint = _case_hint(key, warnings)
        fail(key, "required" + (f" for srcType={cfg.src_type}" if key.startswith(("src", "http")) else ""),
             hint or missing.fix)
    except KeyProblem as problem:
        fail(problem.key, problem.problem, problem.fix)
    _check_local_overlap(cfg, fail)
    _check_selection(cfg, fail)


def _check_selection(cfg: JobConfig, fail) -> None:
    for key, text in (("srcIncludePattern", cfg.src_include_pattern), ("srcExcludePattern", cfg.src_exclude_pattern)):
        try:
            parse_patterns(text)
        except PatternError as exc:
            fail(key, str(exc), "close it, e.g. *.[jJ][pP][gG]; patterns are comma-separated globs on the key")
    if cfg.max_size and cfg.min_size > cfg.max_size:
        fail("minSize", f"{cfg.min_size} bytes is more than maxSize ({cfg.max_size} bytes): nothing could be "
             f"copied", "lower minSize or raise maxSize (0 is no bound)")
    if (cfg.min_size or cfg.max_size) and not storage.source_rules(cfg.src_type).lists_sizes:
        fail("minSize" if cfg.min_size else "maxSize", f"srcType={cfg.src_type} lists no sizes to filter by",
             "remove it: an http URL list's sizes are learnt only when each file is copied")


def _apply_kind_defaults(cfg: JobConfig) -> None:
    """Fill in what the chosen source kind spells its own way (cos: an empty srcPrefix is '/'),
    before the checks read the job: checking never changes it."""
    for attr, value in storage.source_rules(cfg.src_type).defaults(cfg).items():
        setattr(cfg, attr, value)


def _check_dest_prefix(cfg) -> None:
    if cfg.dest_prefix.startswith(("/", "\\")):
        raise KeyProblem("destPrefix", f"must not start with '{cfg.dest_prefix[0]}' (got "
                         f"'{cfg.dest_prefix}')", "OSS keys cannot start with '/'; write it as "
                         f"'{cfg.dest_prefix.lstrip(_SLASHES)}'")
    check_key_segments("destPrefix", cfg.dest_prefix)


def _check_local_overlap(cfg, fail):
    """A local destination must not share a folder with a local source: a copy into the folder
    it lists would list its own output (and overwrite its input). Symlinks resolved first."""
    local_source = cfg.src_type == "local" or (cfg.src_type == "list" and cfg.list_src_type == "local")
    if cfg.dest_type != "local" or not local_source or not cfg.src_prefix:
        return
    src = os.path.realpath(cfg.src_prefix)
    dest = os.path.realpath(local_dest_root(cfg))
    if dest == src:
        where = "is the same directory as srcPrefix"
    elif _inside(dest, src):
        where = "is inside srcPrefix"
    elif _inside(src, dest):
        where = "contains srcPrefix"
    else:
        return
    as_written = (os.path.normpath(local_dest_root(cfg)), os.path.normpath(cfg.src_prefix))
    resolved = f" (resolved: destDomain '{dest}', srcPrefix '{src}')" if (dest, src) != as_written else ""
    fail("destDomain", f"'{cfg.dest_domain}' {where} '{cfg.src_prefix}'{resolved}",
         "the copy would read what it writes: choose a destDomain outside srcPrefix, "
         "and srcPrefix outside destDomain")


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


# --- small helpers --------------------------------------------------------------------------

def _min_interval():
    override = os.environ.get(TEST_MIN_INTERVAL_ENV)
    if override is None:
        return MIN_INCREMENTAL_INTERVAL
    try:
        return max(1, int(override))
    except ValueError:
        return 1


def _case_hint(key, warnings):
    """When a required key is missing but a mis-cased spelling was ignored, say so."""
    for warning in warnings:
        if f"did you mean '{key}'?" in warning:
            where = warning.split(": unknown key", 1)[0]
            return f"{where} spells it differently; keys are case-sensitive: write '{key}'"
    return ""


__all__ = [
    "JobConfig", "SysConfig", "load_job", "load_sys", "parse_job_text", "parse_sys_text",
    "parse_size", "format_size", "write_properties", "redact", "scrub_passwords", "is_job_name",
    "SECRET_KEYS", "CREDENTIAL_KEYS", "REDACTED",
    "SRC_TYPES", "DEST_TYPES", "JOB_KEY_NAMES", "SYS_KEY_NAMES", "TEST_MIN_INTERVAL_ENV",
]
