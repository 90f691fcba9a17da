"""One exception type per kind of failure an operator can act on.

Each carries a message that names the thing (file, key, object, host) and the fix; the console
prints ``str(exc)`` on one line and exits with ``exit_code``, never a traceback.
"""

from .models import SIZE_NOT_MATCH


class OperatorError(Exception):
    """A failure the operator can fix; printed as one line."""

    exit_code = 1
    # The store's error code when a refused request caused it (SignatureDoesNotMatch...): how
    # stat groups the files it failed. "" when the words say it (models.failure_code).
    reason_code = ""
    # The configuration keys the fix goes into, when the raiser knows them (a store's refusal
    # of a key): preflight points at the lines that set them.
    config_keys: tuple = ()


class ConfigError(OperatorError):
    """A configuration file has a bad value; ``submit`` refuses the job (exit 2)."""

    exit_code = 2

    def __init__(self, path, line, key, problem, fix=""):
        self.path, self.line, self.key, self.problem, self.fix = path, line, key, problem, fix
        where = f"{path}:{line}" if line else str(path)
        text = f"{where}: {key}: {problem}" if key else f"{where}: {problem}"
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class StateError(OperatorError):
    """The job's state tree does not allow the command (job exists, job missing, ...)."""

    exit_code = 2


# How much a store's refusal proves (``refusal`` of the two errors below), for the job's judge
# (``fatal.FatalDetector``): keys or permissions refused may be one object's ACL, so only a run
# of them stops the job; a bucket gone or a clock off fails every request alike.
KEYS_REFUSED = "keys refused"
STORE_UNUSABLE = "store unusable"


class SourceError(OperatorError):
    """The source cannot be listed or read."""

    refusal = ""  # KEYS_REFUSED or STORE_UNUSABLE when a store said so


class DestinationError(OperatorError):
    """The destination refused a request (credentials, bucket, endpoint)."""

    refusal = ""  # KEYS_REFUSED or STORE_UNUSABLE when a store said so


class PreflightError(OperatorError):
    """The check before copying found that the job cannot work (keys, bucket, endpoint, source);
    nothing was submitted or started."""

    exit_code = 2


class CheckFailed(Exception):
    """One file's check failed: it ends CheckFailed with ``code`` and ``detail`` in audit.log,
    ``"<code>: <detail>"``. Not an operator error: the job goes on with its other files."""

    def __init__(self, code: str, detail: str):
        self.code, self.detail = code, detail
        super().__init__(f"{code}: {detail}")


class VerificationMismatch(CheckFailed):
    """What the destination stored differs from what was read (size, CRC64): sent again at
    once, then the file is reported CheckFailed."""


class SourceChanged(CheckFailed):
    """The source is not the file that was listed (size or mtime differ)."""

    def __init__(self, entry, size, mtime):
        super().__init__(SIZE_NOT_MATCH, f"listed {entry.size} bytes mtime {entry.mtime}, "
                                         f"now {size} bytes mtime {mtime}")


class WorkerUnreachable(OperatorError):
    """A worker host cannot be reached or logged into."""
