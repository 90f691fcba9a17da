"""How a storage request failed, and which failures stop the whole job.

``RequestFailed`` is a per-request failure: the transfer engine retries it when ``retryable``
and slows the whole worker down when ``throttled``. Failures no retry can cure (wrong keys, a
bucket that does not exist, a skewed clock) become ``DestinationError`` / ``SourceError`` with
one line that names the bucket, the endpoint and the fix, never the secret.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from typing import Optional

from ..models import request_failure_code

from ..errors import KEYS_REFUSED, STORE_UNUSABLE, DestinationError, OperatorError, SourceError

_KEY_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"})
_THROTTLE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "Throttling", "TooManyRequests",
                             "QpsLimitExceeded", "TotalQpsLimitExceeded",
                             "RequestRateExceeded"})


class RequestFailed(Exception):
    """One request to a store failed; ``status`` 0 means no HTTP response (network).

    ``unreachable``: no connection could be opened at all (refused, no such host, no route), as
    opposed to one that broke or timed out; ``role`` ("src"/"dest", when the driver knows it)
    names the keys that point there. Together they tell a dead endpoint from a flaky one."""

    def __init__(self, status: int, code: str = "", message: str = "", request_id: str = "",
                 retryable: Optional[bool] = None, throttled: Optional[bool] = None,
                 operation: str = "", key: str = "", unreachable: bool = False, role: str = ""):
        self.status, self.code, self.message, self.request_id = status, code, message, request_id
        self.operation, self.key = operation, key
        self.unreachable, self.role = unreachable, role
        if throttled is None:
            throttled = status == 429 or (status == 503 and (
                code in _THROTTLE_CODES or "reduce your request rate" in message.lower()))
        if retryable is None:
            retryable = status == 0 or status >= 500 or status in (408, 429) or throttled
        self.throttled, self.retryable = throttled, retryable
        super().__init__(self.describe())

    @property
    def reason_code(self) -> str:
        """How stat groups this failure (models.request_failure_code)."""
        return request_failure_code(self.status, self.code)

    def describe(self) -> str:
        what = f"{self.operation} {self.key}".strip()
        parts = [f"HTTP {self.status}" if self.status else "network error"]
        if self.code:
            parts.append(self.code)
        if self.message:
            parts.append(self.message)
        if self.request_id:
            parts.append(f"RequestId={self.request_id}")
        text = " ".join(parts)
        return f"{what}: {text}" if what else text


def connect_failed(exc: OSError, url: str, role: str = "", **request) -> RequestFailed:
    """The retryable failure of a connection that could not be opened to ``url``. A timeout may
    be a busy endpoint; a refusal, an unknown host or no route is one nobody answers at."""
    code = "Timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
    return RequestFailed(0, code, f"cannot connect to {url}: {exc or code}", retryable=True,
                         unreachable=not isinstance(exc, TimeoutError), role=role, **request)


def never_connected(exc: BaseException) -> bool:
    """Whether an SDK's network error (oss2, requests, azure-core: each wraps urllib3's) is a
    connection that could not be opened (refused, unknown host), not one that timed out or broke."""
    import urllib3.exceptions  # here: a job on the lean path never loads urllib3

    for _ in range(6):  # the wrappers' depth, bounded
        if isinstance(exc, urllib3.exceptions.NewConnectionError):
            return True
        inner = getattr(exc, "exception", None) or getattr(exc, "inner_exception", None) or getattr(exc, "reason", None)
        if inner is None and getattr(exc, "args", None) and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if not isinstance(inner, BaseException):
            return False
        exc = inner
    return False


class UnknownStorageKind(OperatorError):
    """srcType/destination kind that no driver implements."""

    exit_code = 2


def parse_error_body(body: bytes) -> dict:
    """Code/Message/RequestId/HostId... from an OSS XML error document ({} when not XML)."""
    if not body:
        return {}
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return {}
    return {child.tag: (child.text or "") for child in root}


def fatal_error(failure: RequestFailed, *, role: str, bucket: str, endpoint: str,
                access_key: str = "") -> Optional[OperatorError]:
    """The operator-facing error when ``failure`` means no request to this store can work.

    ``role`` is "dest" or "src": it names the configuration keys to fix.
    """
    error_class = DestinationError if role == "dest" else SourceError
    code = failure.code
    where = f"{role}Bucket '{bucket}' at {endpoint}"
    if code == "NoSuchBucket":
        text = f"{where} does not exist: create it or fix {role}Bucket/{role}Domain"
        keys = ("Bucket", "Domain")
    elif code == "InvalidAccessKeyId":
        text = (f"{where} rejected {role}AccessKey '{access_key}' (InvalidAccessKeyId): "
                f"fix {role}AccessKey")
        keys = ("AccessKey",)
    elif code == "SignatureDoesNotMatch":
        text = (f"{where} rejected the signature (SignatureDoesNotMatch): "
                f"{role}SecretKey does not belong to {role}AccessKey '{access_key}'; fix {role}SecretKey")
        keys = ("SecretKey",)
    elif code == "AccessDenied":
        text = (f"{where} denied access to {role}AccessKey '{access_key}' (AccessDenied): "
                f"check {role}AccessKey/{role}SecretKey and that the key may "
                f"{'read' if role == 'src' else 'write'} the bucket")
        keys = ("AccessKey", "SecretKey")
    elif code == "RequestTimeTooSkewed":
        text = f"{where} says this host's clock is off by more than 15 minutes: sync the clock (NTP)"
        keys = ()
    elif code in ("InvalidBucketName", "SecondLevelDomainForbidden"):
        text = f"{where} refused the bucket name ({code}): fix {role}Bucket/{role}Domain"
        keys = ("Bucket", "Domain")
    elif code == "UserDisable" or code == "AccountDisabled":
        text = f"{where}: the account of {role}AccessKey '{access_key}' is disabled ({code})"
        keys = ("AccessKey",)
    else:
        return None
    if failure.request_id:
        text += f" [RequestId={failure.request_id}]"
    error = error_class(text)
    # The configuration keys to fix, for a caller that points at the lines setting them.
    error.config_keys = tuple(role + key for key in keys)
    error.refusal = KEYS_REFUSED if code in _KEY_CODES else STORE_UNUSABLE
    error.reason_code = failure.reason_code
    return error
