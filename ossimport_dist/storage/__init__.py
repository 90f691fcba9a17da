"""Storage drivers and the registry that opens them by kind (srcType / destination type).

Adding a source type: write ``storage/<kind>.py`` with a ``Source`` subclass and add one line
to ``_SOURCES``. Drivers are imported only when asked for, so a local-to-OSS job never pays
for SDKs it does not use.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType

from .base import Destination, Features, PutResult, Source
from .errors import RequestFailed, UnknownStorageKind

# kind -> "module:Class"
_SOURCES = MappingProxyType({
    "local": "local:LocalSource",
    "oss": "oss:OssSource",
    "http": "http:HttpSource",
    "list": "manifest:ListSource",
    "azure": "azure:AzureSource",
    "youpai": "youpai:YoupaiSource",
    "s3": "s3:S3Source",
    "cos": "s3:CosSource",
    "bos": "s3:BosSource",
    "ks3": "s3:Ks3Source",
    "qiniu": "s3:QiniuSource",
})
_DESTINATIONS = MappingProxyType({
    "oss": "oss:OssDestination",
    "local": "local:LocalDestination",
    "s3": "s3:S3Destination",
})


def _load(registry, kind: str, role: str):
    target = registry.get(kind)
    if target is None:
        allowed = ", ".join(sorted(registry))
        raise UnknownStorageKind(f"{role} '{kind}' is not supported by this version: "
                                 f"use one of {allowed} (case-sensitive)")
    module_name, class_name = target.split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)


def source_kinds() -> tuple:
    return tuple(sorted(_SOURCES))


def open_source(kind: str, *, prefix: str, bucket: str = "", domain: str = "",
                access_key: str = "", secret_key: str = "",
                allow_symlinks: bool = False) -> Source:
    cls = _load(_SOURCES, kind, "srcType")
    # Every driver takes the whole set of srcXxx settings and uses the ones it needs.
    return cls.from_settings(prefix=prefix, bucket=bucket, domain=domain, access_key=access_key,
                             secret_key=secret_key, allow_symlinks=allow_symlinks)


def open_job_source(job_cfg) -> Source:
    """The source a job reads (``srcType``); the driver takes the settings it needs from the job."""
    return _load(_SOURCES, job_cfg.src_type, "srcType").from_job(job_cfg)


def open_job_destination(job_cfg) -> Destination:
    """The destination a job writes (``destType``)."""
    return _load(_DESTINATIONS, job_cfg.dest_type, "destType").from_job(job_cfg)


def open_destination(kind: str, *, domain: str, bucket: str, prefix: str, access_key: str,
                     secret_key: str, server_side_encryption: bool = False) -> Destination:
    cls = _load(_DESTINATIONS, kind, "destination type")
    return cls(domain=domain, bucket=bucket, prefix=prefix, access_key=access_key,
               secret_key=secret_key, server_side_encryption=server_side_encryption)


__all__ = ["Destination", "Features", "PutResult", "RequestFailed", "Source",
           "UnknownStorageKind", "open_destination", "open_job_destination", "open_job_source",
           "open_source", "source_kinds"]
