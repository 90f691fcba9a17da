"""What a job file must say for each source and destination kind, checked when it is read.

Each registry line in ``storage/__init__.py`` names its kind's rules beside its driver. The
rules import no SDK, so reading a local job's file never imports boto3, oss2 or azure: the
driver module is imported only when the job opens it.

``validate(job)`` only reads the job: it raises ``KeyProblem`` (or ``KeyMissing``) naming the
key, and config turns that into the one-line ``ConfigError`` with the file and line. A value a
kind spells its own way is filled in by ``defaults(job)`` before validation, not by it.
"""

from __future__ import annotations

import re

_WIN_ABS = re.compile(r"[A-Za-z]:/")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


class KeyProblem(Exception):
    """A job key's value is wrong: ``problem`` says how, ``fix`` what to write."""

    def __init__(self, key: str, problem: str, fix: str = ""):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem, self.fix = key, problem, fix


class KeyMissing(KeyProblem):
    """A key the chosen kind needs is empty or absent."""

    def __init__(self, key: str, fix: str):
        super().__init__(key, "required", fix)


def require(value, key: str, fix: str) -> None:
    if not value:
        raise KeyMissing(key, fix)


def is_absolute(path: str) -> bool:
    return path.startswith("/") or bool(_WIN_ABS.match(path))


def local_dest_root(job) -> str:
    """The directory a destType=local job writes under (destDomain, file:// allowed)."""
    domain = job.dest_domain
    return domain[len("file://"):] if domain.startswith("file://") else domain


def check_key_segments(key: str, prefix: str) -> None:
    """An object key prefix made of plain names. A local destination joins it to a path, where
    '..' climbs out of destDomain; an object store keeps '.', '..' and '' as literal segments no
    tool shows the same way, so a prefix spelled with them is a typo either way."""
    # A source prefix may start with one '/' (cos spells every prefix so; S3 keys may start
    # with it); a destination prefix cannot, which config says first.
    segments = (prefix[1:] if prefix.startswith("/") else prefix).split("/")
    if segments[-1] == "":
        segments.pop()  # the trailing '/' of a folder
    bad = next((s for s in segments if s in ("", ".", "..")), None)
    if bad is None:
        return
    what = "an empty segment ('//')" if bad == "" else f"a '{bad}' segment"
    raise KeyProblem(key, f"has {what} (got '{prefix}')",
                     "write folder names separated by single '/', e.g. " + key + "=backup/2024/")


def check_endpoint(domain: str, bucket: str, key: str, bucket_key: str) -> None:
    from ..config import scrub_passwords  # config imports this module

    domain = scrub_passwords(domain)  # only quoted in messages from here on
    match = re.fullmatch(r"(https?)://([^/?#]*)(.*)", domain, flags=re.IGNORECASE)
    if not match:
        raise KeyProblem(key, f"must start with http:// or https:// (got '{domain}')",
                         f"write it as 'http://{domain.split('://')[-1]}'")
    scheme, host, rest = match.groups()
    if not host:
        raise KeyProblem(key, f"no host name (got '{domain}')",
                         "e.g. http://oss-cn-hangzhou-internal.aliyuncs.com")
    if bucket and host.lower().startswith(bucket.lower() + "."):
        raise KeyProblem(key, f"bucket name inside the endpoint (got '{domain}')",
                         f"remove '{bucket}.': write {key}={scheme}://{host[len(bucket) + 1:]}; "
                         f"the bucket goes in {bucket_key}")
    if rest.strip("/"):
        raise KeyProblem(key, f"the endpoint has no path (got '{domain}')",
                         f"write {key}={scheme}://{host}; a bucket goes in {bucket_key}, "
                         "a folder in the prefix")


def check_list_path(value: str, key: str, what: str, example: str) -> None:
    """A list file (URL list, manifest) named by an absolute path."""
    require(value, key, f"set {key} to the absolute path of {what}")
    if not is_absolute(value):
        raise KeyProblem(key, f"must be an absolute path (got '{value}')", f"e.g. {key}={example}")


# --- sources --------------------------------------------------------------------------------

class SourceRules:
    """A source kind that needs nothing beyond the keys every job has."""

    # A list source (srcType=list) may read its keys from this kind.
    list_can_read = True
    # The listing gives each object's size (minSize and maxSize filter by it).
    lists_sizes = True

    @classmethod
    def defaults(cls, job) -> dict:
        """attr -> value for settings this kind spells its own way when they are left empty."""
        return {}

    @classmethod
    def validate(cls, job) -> None:
        pass


class LocalSourceRules(SourceRules):
    @classmethod
    def validate(cls, job) -> None:
        prefix = job.src_prefix
        if not prefix:
            raise KeyProblem("srcPrefix", "required for srcType=local",
                             "set it to the absolute directory to migrate, e.g. srcPrefix=/data/to/migrate/")
        if "\\" in prefix:
            fixed = prefix.replace("\\", "/").rstrip("/") + "/"
            raise KeyProblem("srcPrefix", f"use '/' as the separator, not '\\' (got '{prefix}')",
                             f"write it as '{fixed}'")
        if not is_absolute(prefix):
            raise KeyProblem("srcPrefix", f"must be an absolute path (got '{prefix}')",
                             f"write it as '/{prefix.lstrip('/')}'" if not prefix.startswith(".")
                             else "write the full path from '/'")
        if prefix.endswith("//"):
            raise KeyProblem("srcPrefix", f"must end with exactly one '/' (got '{prefix}')",
                             f"write it as '{prefix.rstrip('/')}/'")
        if not prefix.endswith("/"):
            raise KeyProblem("srcPrefix", f"must end with '/' (got '{prefix}')", f"write it as '{prefix}/'")


class BucketSourceRules(SourceRules):
    """A source addressed by a bucket (an azure container), its keys under srcPrefix."""

    @classmethod
    def validate_prefix(cls, job) -> None:
        check_key_segments("srcPrefix", job.src_prefix)

    @classmethod
    def validate(cls, job) -> None:
        cls.validate_prefix(job)
        require(job.src_bucket, "srcBucket", "set srcBucket to the source bucket name")
        if "/" in job.src_bucket:
            raise KeyProblem("srcBucket", f"no '/' in a bucket name (got '{job.src_bucket}')",
                             "put the folder part in srcPrefix")


class OssSourceRules(BucketSourceRules):
    @classmethod
    def validate(cls, job) -> None:
        super().validate(job)
        if job.src_domain:
            check_endpoint(job.src_domain, job.src_bucket, "srcDomain", "srcBucket")


class CosSourceRules(BucketSourceRules):
    @classmethod
    def defaults(cls, job) -> dict:
        return {} if job.src_prefix else {"src_prefix": "/"}  # cos spells "the whole bucket" as '/'

    @classmethod
    def validate_prefix(cls, job) -> None:
        prefix = job.src_prefix
        if not (prefix.startswith("/") and prefix.endswith("/")):
            raise KeyProblem("srcPrefix", f"for cos must start and end with '/' (got '{prefix}')",
                             f"write it as '/{prefix.strip('/')}/'" if prefix.strip("/") else "write '/'")
        super().validate_prefix(job)


class YoupaiSourceRules(BucketSourceRules):
    @classmethod
    def validate(cls, job) -> None:
        super().validate(job)
        if job.is_download_from_cdn:
            require(job.cdn_domain, "cdnDomain", "set cdnDomain, or isDownloadFromCdn=false")


class HttpSourceRules(SourceRules):
    lists_sizes = False  # a URL list: the transfer learns each size
    @classmethod
    def validate(cls, job) -> None:
        check_list_path(job.http_list_file_path, "httpListFilePath", "the URL list", "/data/url.list")
        if job.http_prefix_column == job.relative_path_column:
            raise KeyProblem("relativePathColumn",
                             f"must differ from httpPrefixColumn (both {job.http_prefix_column})",
                             "the usual layout is httpPrefixColumn=1, relativePathColumn=2")


class ListSourceRules(SourceRules):
    list_can_read = False  # a manifest of manifests

    @classmethod
    def validate(cls, job) -> None:
        check_list_path(job.list_file_path, "listFilePath",
                        "the manifest (one key per line)", "/data/failed.list")


# --- destinations ---------------------------------------------------------------------------

class DestinationRules:
    @classmethod
    def validate(cls, job) -> None:
        pass


class LocalDestinationRules(DestinationRules):
    """A directory: destDomain is its absolute path, destPrefix a folder under it."""

    @classmethod
    def validate(cls, job) -> None:
        require(job.dest_domain, "destDomain", "set destDomain to the absolute path of the destination directory")
        if not is_absolute(local_dest_root(job)):
            raise KeyProblem("destDomain", f"for destType=local must be an absolute directory "
                             f"(got '{job.dest_domain}')", "e.g. destDomain=/mnt/nas2/backup")


class BucketDestinationRules(DestinationRules):
    """An object store: a bucket and an endpoint. Audit compares against the destination too,
    so both job types need them."""

    @classmethod
    def validate(cls, job) -> None:
        bucket = job.dest_bucket
        require(bucket, "destBucket", "set destBucket to the OSS bucket name")
        if "/" in bucket:
            head, _, tail = bucket.partition("/")
            raise KeyProblem("destBucket", f"no '/' in a bucket name (got '{bucket}')",
                             f"write destBucket={head} and put '{tail.strip('/')}/' in destPrefix")
        if not _BUCKET.fullmatch(bucket):
            raise KeyProblem("destBucket", f"not a valid OSS bucket name (got '{bucket}')",
                             "3 to 63 lowercase letters, digits or '-', starting and ending with "
                             "a letter or digit")
        require(job.dest_domain, "destDomain", "e.g. destDomain=http://oss-cn-hangzhou-internal.aliyuncs.com")
        check_endpoint(job.dest_domain, bucket, "destDomain", "destBucket")


__all__ = ["KeyProblem", "KeyMissing", "SourceRules", "DestinationRules", "is_absolute",
           "local_dest_root", "check_key_segments"]
