"""Storage drivers and the registry that opens them by kind (srcType / destination type).

Adding a source type: write ``storage/<kind>.py`` with a ``Source`` subclass (its ``features``,
``from_job``) and add one line to ``_SOURCES`` naming it and its job-key rules (``rules.py``, or
a ``SourceRules`` subclass of its own): config takes the allowed srcType values and the checks
from here. Drivers are imported only when asked for, so a local-to-OSS job never pays for SDKs
it does not use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType

from . import rules
from .base import Destination, Features, PutResult, Source
from .errors import RequestFailed, UnknownStorageKind


@dataclass(frozen=True)
class Kind:
    """One srcType or destType: its driver, imported only when a job opens it, and the SDK-free
    rules its job keys must follow (``storage/rules.py``), checked when the job file is read."""

    # "module:Class", the module as ``import`` spells it: ".s3" is this package's s3.py; an
    # absolute name is a driver shipped elsewhere (or a test's throwaway kind).
    driver: str
    rules: type


# Config offers the kinds in this order ("allowed: ..." lists them so).
_SOURCES = MappingProxyType({
    "local": Kind(".local:LocalSource", rules.LocalSourceRules),
    "oss": Kind(".oss:OssSource", rules.OssSourceRules),
    "qiniu": Kind(".s3:QiniuSource", rules.BucketSourceRules),
    "bos": Kind(".s3:BosSource", rules.BucketSourceRules),
    "ks3": Kind(".s3:Ks3Source", rules.BucketSourceRules),
    "s3": Kind(".s3:S3Source", rules.BucketSourceRules),
    "youpai": Kind(".youpai:YoupaiSource", rules.YoupaiSourceRules),
    "http": Kind(".http:HttpSource", rules.HttpSourceRules),
    "cos": Kind(".s3:CosSource", rules.CosSourceRules),
    "azure": Kind(".azure:AzureSource", rules.BucketSourceRules),
    "list": Kind(".manifest:ListSource", rules.ListSourceRules),
})
_DESTINATIONS = MappingProxyType({
    "oss": Kind(".oss:OssDestination", rules.BucketDestinationRules),
    "local": Kind(".local:LocalDestination", rules.LocalDestinationRules),
    "s3": Kind(".s3:S3Destination", rules.BucketDestinationRules),
})


def _kind(registry, kind: str, role: str) -> Kind:
    found = registry.get(kind)
    if found is None:
        allowed = ", ".join(sorted(registry))
        raise UnknownStorageKind(f"{role} '{kind}' is not supported by this version: "
                                 f"use one of {allowed} (case-sensitive)")
    return found


def _load(registry, kind: str, role: str):
    module_name, class_name = _kind(registry, kind, role).driver.split(":")
    module = importlib.import_module(module_name, __name__)
    return getattr(module, class_name)


def source_rules(kind: str) -> type:
    """The rules of srcType ``kind`` (``storage/rules.py``), without importing its driver."""
    return _kind(_SOURCES, kind, "srcType").rules


def destination_rules(kind: str) -> type:
    return _kind(_DESTINATIONS, kind, "destType").rules


def destination_kinds() -> tuple:
    """Every destType, in the order config offers them."""
    return tuple(_DESTINATIONS)


def source_kinds() -> tuple:
    """Every srcType, in the order config offers them."""
    return tuple(_SOURCES)


def open_source(kind: str, *, prefix: str, bucket: str = "", domain: str = "",
                access_key: str = "", secret_key: str = "",
                allow_symlinks: bool = False) -> Source:
    """A source from its settings alone, opened as a job with them would open it."""
    from ..config import JobConfig  # config imports this package

    return open_job_source(JobConfig(src_type=kind, src_prefix=prefix, src_bucket=bucket,
                                     src_domain=domain, src_access_key=access_key,
                                     src_secret_key=secret_key,
                                     is_allow_symbolic_link=allow_symlinks))


def open_job_source(job_cfg, sys_cfg=None) -> Source:
    """The source a job reads (``srcType``); the driver takes the settings it needs from the job,
    and from ``sys_cfg`` (sys.properties: workerTaskThreadNum sizes a connection pool) when the
    caller runs the job's tasks. Without it a driver sizes itself for a check or a listing."""
    return _load(_SOURCES, job_cfg.src_type, "srcType").from_job(job_cfg, sys_cfg)


def open_job_destination(job_cfg, sys_cfg=None) -> Destination:
    """The destination a job writes (``destType``); ``sys_cfg`` as for ``open_job_source``."""
    return _load(_DESTINATIONS, job_cfg.dest_type, "destType").from_job(job_cfg, sys_cfg)


def open_destination(kind: str, *, domain: str, bucket: str, prefix: str, access_key: str,
                     secret_key: str, server_side_encryption: bool = False) -> Destination:
    """A destination from its settings alone, as ``open_source``."""
    from ..config import JobConfig

    return open_job_destination(JobConfig(dest_type=kind, dest_domain=domain, dest_bucket=bucket,
                                          dest_prefix=prefix, dest_access_key=access_key,
                                          dest_secret_key=secret_key,
                                          is_server_side_encryption=server_side_encryption))


__all__ = ["Destination", "Features", "Kind", "PutResult", "RequestFailed", "Source",
           "UnknownStorageKind", "destination_kinds", "destination_rules", "open_destination",
           "open_job_destination", "open_job_source", "open_source", "source_kinds",
           "source_rules"]
