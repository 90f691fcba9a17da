"""S3 and S3-compatible stores, against real S3 servers (moto and s3rver, see s3servers.py).

A bucket full of awkward names and more than a thousand objects is listed the way the scanner
lists it (paged, resumed with start_after), read the way the transfer reads it, written through
S3Destination and read back; the vendor srcTypes are checked for the endpoint, bucket and prefix
they derive; and a small migration runs from S3 into the OSS emulator through the Transferer.
"""

from __future__ import annotations

import hashlib
import os
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.stub import Stubber

from ossimport_dist.errors import DestinationError, SourceError
from ossimport_dist.models import ObjectEntry
from ossimport_dist.storage.errors import RequestFailed
from ossimport_dist.storage.s3 import (BosSource, CosSource, Ks3Source, QiniuSource, S3Destination,
                                       S3Source)

from conftest import awkward_names
from s3servers import moto_auth_server, moto_server, s3rver_server, s3server  # noqa: F401

PREFIX = "src/"
LONG_KEY = "long/" + "/".join(["k" * 125] * 7) + "/end.txt"  # ~900 bytes, no segment > 255
BULK = 1000
PAGE = 100


def awkward_objects() -> dict:
    files = {**awkward_names(), LONG_KEY: b"long key", "top-empty": b""}
    for i in range(BULK):
        files[f"bulk/{i:04d}.bin"] = str(i).encode() * (i % 5)
    return files


class Seeded:
    def __init__(self, server, bucket, files):
        self.server, self.bucket, self.files = server, bucket, files

    def source(self, **kwargs) -> S3Source:
        kwargs.setdefault("page_size", PAGE)
        return S3Source(domain=self.server.endpoint, bucket=self.bucket, prefix=PREFIX,
                        access_key=self.server.access_key, secret_key=self.server.secret_key,
                        **kwargs)


@pytest.fixture(scope="session")
def seeded(s3server):
    """One bucket per server: the awkward tree under src/, and neighbours that must not show."""
    bucket = s3server.new_bucket()
    files = awkward_objects()
    client = s3server.client()

    def put(item):
        key, data = item
        extra = {}
        if key == "readme.txt":
            extra = {"ContentType": "text/plain; charset=utf-8", "CacheControl": "max-age=60",
                     "Metadata": {"owner": "ops"}}
        client.put_object(Bucket=bucket, Key=PREFIX + key, Body=data, **extra)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, files.items()))
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b"x"),
                      ["outside.txt", "src-sibling/x.txt", "sr"]))
    return Seeded(s3server, bucket, files)


def expected(files: dict, subtree: str = "", recursive: bool = True) -> list:
    keys = [k for k in files if k.startswith(subtree)]
    if not recursive:
        keys = [k for k in keys if "/" not in k[len(subtree):]]
    return sorted(keys)  # code-point order is UTF-8 byte order, which S3 lists in


# ---------------------------------------------------------------- listing

def test_recursive_listing_pages_in_key_order_and_resumes_exactly(seeded):
    src = seeded.source()
    full = list(src.list())
    keys = [e.key for e in full]
    assert keys == expected(seeded.files)
    assert len(keys) > BULK
    by_key = {e.key: e for e in full}
    for key, data in seeded.files.items():
        entry = by_key[key]
        assert entry.size == len(data), key
        assert entry.md5 == hashlib.md5(data).hexdigest(), key
        assert entry.mtime > 1_600_000_000
    for cut in (0, 1, 7, 500, len(keys) - 2, len(keys) - 1):
        resumed = [e.key for e in src.list(start_after=keys[cut])]
        assert resumed == keys[cut + 1:], f"start_after={keys[cut]!r}"
    assert [e.key for e in src.list(start_after=LONG_KEY)] == [k for k in keys if k > LONG_KEY]


def test_non_recursive_listing_and_subtrees(seeded):
    src = seeded.source()
    assert [e.key for e in src.list("", recursive=False)] == expected(seeded.files, "", False)
    bulk = [e.key for e in src.list("bulk/", recursive=False)]
    assert bulk == expected(seeded.files, "bulk/", False) and len(bulk) == BULK
    assert [e.key for e in src.list("bulk/", recursive=False, start_after="bulk/0899.bin")] == \
        [f"bulk/{i:04d}.bin" for i in range(900, BULK)]
    dirs = sorted({k.split("/", 1)[0] + "/" for k in seeded.files if "/" in k})
    if seeded.server.name == "s3rver":
        # s3rver 3 drops CommonPrefixes whose folder holds only folders, and past a page of
        # keys; what it does return must still be right and in order.
        got = src.subtrees("")
        assert got == sorted(got) and set(got) <= set(dirs) and "bulk/" in got
        return
    assert src.subtrees("") == dirs
    assert src.subtrees("long/") == ["long/" + "k" * 125 + "/"]


# ---------------------------------------------------------------- reading

def test_stat_and_ranged_reads(seeded):
    src = seeded.source()
    data = seeded.files["emoji/😀.bin"]
    entry = src.stat("emoji/😀.bin")
    assert entry.size == 300 and entry.md5 == hashlib.md5(data).hexdigest()
    assert src.stat("no/such/key") is None
    with src.open(entry, 10, 50) as stream:
        assert stream.read(1000) == data[10:60]
    with src.open(entry) as stream:
        assert stream.read(7) + stream.read(-1) == data
    with src.open(entry, 290) as stream:
        assert stream.read() == data[290:]
    empty = src.stat("empty.dat")
    with src.open(empty) as stream:
        assert empty.size == 0 and stream.read() == b""
    long_entry = src.stat(LONG_KEY)
    with src.open(long_entry) as stream:
        assert stream.read() == b"long key"
    with pytest.raises(FileNotFoundError):
        src.open(ObjectEntry("vanished.txt", 5))


def test_stream_headers_carry_content_type_and_user_metadata(seeded):
    src = seeded.source()
    with src.open(src.stat("readme.txt"), 0, 3) as stream:
        assert stream.read() == b"hel"
        headers = stream.headers
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["cache-control"] == "max-age=60"
    assert headers["x-oss-meta-owner"] == "ops"
    assert not any(name.startswith("x-amz-") for name in headers)


# ---------------------------------------------------------------- writing

def test_destination_put_head_and_multipart_round_trip(s3server):
    bucket = s3server.new_bucket()
    dest = S3Destination(domain=s3server.endpoint, bucket=bucket, prefix="dst/",
                         access_key=s3server.access_key, secret_key=s3server.secret_key)
    small = "ünï code/a+b #1.txt"
    body = b"small object\n" * 10
    result = dest.put(small, body, {"Content-Type": "text/plain", "Cache-Control": "no-cache",
                                    "x-oss-meta-md5": hashlib.md5(body).hexdigest()})
    assert result.crc64 is None and result.etag == hashlib.md5(body).hexdigest()
    head = dest.head(small)
    assert head.size == len(body) and head.md5 == hashlib.md5(body).hexdigest()
    assert head.headers["content-type"] == "text/plain"
    assert head.headers["x-oss-meta-md5"] == hashlib.md5(body).hexdigest()
    assert dest.put("empty", b"").etag == hashlib.md5(b"").hexdigest()
    assert dest.head("empty").size == 0
    assert dest.head("missing") is None
    # S3 headers are ASCII: a non-ASCII value (OSS allows them) travels RFC 2047-encoded.
    dest.put("meta.txt", b"m", {"x-oss-meta-owner": "张三", "Content-Disposition": "inline"})
    raw = s3server.client().head_object(Bucket=bucket, Key="dst/meta.txt")
    assert raw["Metadata"]["owner"] == "=?UTF-8?B?5byg5LiJ?="
    assert raw["ContentDisposition"] == "inline"

    big = os.urandom(5 * 1024 * 1024) + os.urandom(1234)
    parts_data = [big[:5 * 1024 * 1024], big[5 * 1024 * 1024:]]
    upload_id = dest.init_multipart("big.bin", {"Content-Type": "application/x-big",
                                                "x-oss-meta-origin": "test"})
    etags = [dest.upload_part("big.bin", upload_id, n, data).etag
             for n, data in enumerate(parts_data, 1)]
    assert etags == [hashlib.md5(p).hexdigest() for p in parts_data]
    listed = dest.list_parts("big.bin", upload_id)
    if listed is not None:  # s3rver has no ListParts: the driver says "start over" (None)
        assert listed == {1: (len(parts_data[0]), etags[0]), 2: (len(parts_data[1]), etags[1])}
    done = dest.complete_multipart("big.bin", upload_id, list(zip((1, 2), etags)))
    assert done.crc64 is None and done.etag
    head = dest.head("big.bin")
    # S3's multipart ETag is "<md5 of part md5s>-<n>", never taken for an MD5; s3rver stores
    # the whole object's MD5 instead.
    assert head.size == len(big) and head.md5 in (None, hashlib.md5(big).hexdigest())
    if s3server.name == "moto":
        assert done.etag.endswith("-2") and head.md5 is None
    assert head.headers["content-type"] == "application/x-big"
    assert head.headers["x-oss-meta-origin"] == "test"
    got = s3server.client().get_object(Bucket=bucket, Key="dst/big.bin")["Body"].read()
    assert got == big

    if s3server.name == "s3rver":
        return  # s3rver 3 has no AbortMultipartUpload (HTTP 405)
    upload_id = dest.init_multipart("abandoned")
    dest.upload_part("abandoned", upload_id, 1, b"x" * 100)
    dest.abort_multipart("abandoned", upload_id)
    dest.abort_multipart("abandoned", upload_id)  # twice is harmless
    assert dest.head("abandoned") is None


def test_wrong_credentials_are_one_line_naming_bucket_endpoint_and_fix(s3server, request):
    secret = "definitely-not-the-secret-4242"
    if s3server.name == "moto":
        # The shared moto accepts any signature; its twin with IAM on checks them.
        server = request.getfixturevalue("moto_auth_server")
        bucket = server.new_bucket()
        access_key, fix = server.access_key, "SecretKey"
    else:
        # s3rver checks the access key id but not a V4 signature: the story is a wrong key id.
        server = s3server
        bucket = server.new_bucket()
        access_key, fix = "WRONGKEYID", "AccessKey"
    src = S3Source(domain=server.endpoint, bucket=bucket, access_key=access_key,
                   secret_key=secret)
    with pytest.raises(SourceError) as caught:
        list(src.list())
    text = str(caught.value)
    assert "\n" not in text and secret not in text
    assert bucket in text and server.endpoint in text and f"src{fix}" in text
    dest = S3Destination(domain=server.endpoint, bucket=bucket, access_key=access_key,
                         secret_key=secret)
    with pytest.raises(DestinationError) as caught:
        dest.put("k", b"v")
    text = str(caught.value)
    assert "\n" not in text and secret not in text and f"dest{fix}" in text
    with pytest.raises(SourceError) as caught:  # a HEAD's 403 has no body to say why
        src.stat("k")
    assert secret not in str(caught.value) and "srcSecretKey" in str(caught.value)


def test_missing_bucket_is_one_line(s3server):
    src = S3Source(domain=s3server.endpoint, bucket="no-such-bucket-" + os.urandom(4).hex(),
                   access_key=s3server.access_key, secret_key=s3server.secret_key)
    with pytest.raises(SourceError) as caught:
        list(src.list())
    assert "does not exist" in str(caught.value) and s3server.endpoint in str(caught.value)


def test_error_mapping_by_code():
    src = S3Source(domain="http://127.0.0.1:9", bucket="bkt", access_key="AKID",
                   secret_key="very-secret")
    cases = [("SignatureDoesNotMatch", 403, SourceError), ("InvalidAccessKeyId", 403, SourceError),
             ("AccessDenied", 403, SourceError), ("NoSuchBucket", 404, SourceError),
             ("SlowDown", 503, RequestFailed), ("InternalError", 500, RequestFailed)]
    with Stubber(src.client) as stub:
        for code, status, _ in cases:
            stub.add_client_error("list_objects_v2", service_error_code=code,
                                  http_status_code=status)
        for code, status, kind in cases:
            with pytest.raises(kind) as caught:
                list(src.list())
            if kind is RequestFailed:
                assert caught.value.retryable
                assert caught.value.throttled == (code == "SlowDown")
            else:
                text = str(caught.value)
                assert "bkt" in text and "127.0.0.1:9" in text and "very-secret" not in text
    with pytest.raises(RequestFailed) as caught:  # nothing listens on port 9
        src.stat("x")
    assert caught.value.retryable and caught.value.status == 0


# ---------------------------------------------------------------- vendor srcTypes

def _job(**kw):
    base = dict(src_domain="", src_bucket="bkt", src_prefix="", src_access_key="ak",
                src_secret_key="sk", app_id=0)
    base.update(kw)
    return types.SimpleNamespace(**base)


@pytest.mark.parametrize("cls,job,url,bucket,prefix,region,path_style", [
    (CosSource, _job(src_domain="ap-shanghai", app_id=1250000000, src_prefix="/photos/2024/"),
     "https://cos.ap-shanghai.myqcloud.com", "bkt-1250000000", "photos/2024/", "ap-shanghai", False),
    (CosSource, _job(src_domain="sh", src_bucket="bkt-1250000000", app_id=1250000000,
                     src_prefix="/"),
     "https://cos.ap-shanghai.myqcloud.com", "bkt-1250000000", "", "ap-shanghai", False),
    (CosSource, _job(src_domain="http://cos.ap-guangzhou.myqcloud.com", app_id=7),
     "http://cos.ap-guangzhou.myqcloud.com", "bkt-7", "", "ap-guangzhou", False),
    (BosSource, _job(src_domain="http://bj.bcebos.com", src_prefix="a/"),
     "http://s3.bj.bcebos.com", "bkt", "a/", "bj", False),
    (BosSource, _job(src_domain="gz"), "https://s3.gz.bcebos.com", "bkt", "", "gz", False),
    (Ks3Source, _job(src_domain="cn-beijing"),
     "https://ks3-cn-beijing.ksyuncs.com", "bkt", "", "cn-beijing", False),
    (Ks3Source, _job(src_domain="ks3-cn-shanghai"),
     "https://ks3-cn-shanghai.ksyuncs.com", "bkt", "", "cn-shanghai", False),
    (QiniuSource, _job(src_domain="cn-east-1"),
     "https://s3.cn-east-1.qiniucs.com", "bkt", "", "cn-east-1", False),
    (S3Source, _job(src_domain="us-west-2"),
     "https://s3.us-west-2.amazonaws.com", "bkt", "", "us-west-2", False),
    (S3Source, _job(src_domain="http://192.168.1.5:9000"),
     "http://192.168.1.5:9000", "bkt", "", "us-east-1", True),
    (S3Source, _job(src_domain="https://oss-cn-hangzhou.aliyuncs.com"),
     "https://oss-cn-hangzhou.aliyuncs.com", "bkt", "", "cn-hangzhou", False),
])
def test_vendor_mapping(cls, job, url, bucket, prefix, region, path_style):
    src = cls.from_job(job)
    assert (src.endpoint.url, src.bucket_name, src.prefix) == (url, bucket, prefix)
    assert src.client.meta.region_name == region and src.endpoint.path_style == path_style


def test_qiniu_download_domain_is_refused_with_the_fix():
    with pytest.raises(SourceError, match="region"):
        QiniuSource.from_job(_job(src_domain="http://7xabc.com1.z0.glb.clouddn.com"))


def test_cos_job_against_moto(moto_server):
    client = moto_server.client()
    bucket = "photos-" + os.urandom(3).hex()
    client.create_bucket(Bucket=f"{bucket}-1250000000")
    for key in ("album/2024/a.jpg", "album/2024/b.jpg", "album/other.txt", "elsewhere.txt"):
        client.put_object(Bucket=f"{bucket}-1250000000", Key=key, Body=key.encode())
    src = CosSource.from_job(_job(src_domain=moto_server.endpoint, src_bucket=bucket,
                                  app_id=1250000000, src_prefix="/album/",
                                  src_access_key=moto_server.access_key,
                                  src_secret_key=moto_server.secret_key))
    assert [e.key for e in src.list()] == ["2024/a.jpg", "2024/b.jpg", "other.txt"]
    with src.open(src.stat("2024/b.jpg")) as stream:
        assert stream.read() == b"album/2024/b.jpg"


# ---------------------------------------------------------------- S3 -> OSS, end to end

def test_transfer_from_s3_into_oss(moto_server, emulator, bucket, tmp_path):
    from ossimport_dist.storage.oss import OssDestination
    from ossimport_dist.throttle import Throttle
    from ossimport_dist.transfer import Transferer, TransferOptions

    s3_bucket = moto_server.new_bucket()
    client = moto_server.client()
    objects = {"docs/readme.md": (b"# hi\n", "text/markdown"),
               "docs/empty.txt": (b"", "text/plain"),
               "图片/猫 #1.jpg": (os.urandom(40_000), "image/jpeg"),
               "big/archive.tar": (os.urandom(2 * 1024 * 1024 + 777), "application/x-tar")}
    for key, (data, ctype) in objects.items():
        client.put_object(Bucket=s3_bucket, Key="export/" + key, Body=data, ContentType=ctype,
                          Metadata={"origin": "s3"})
    source = S3Source(domain=moto_server.endpoint, bucket=s3_bucket, prefix="export/",
                      access_key=moto_server.access_key, secret_key=moto_server.secret_key)
    dest = OssDestination(domain=emulator.endpoint, bucket=bucket.bucket_name, prefix="in/",
                          access_key=emulator.key_id, secret_key=emulator.secret)
    options = TransferOptions(multipart_threshold=1024 * 1024, part_size=512 * 1024,
                              parts_in_parallel=3)
    transferer = Transferer(source, dest, options, Throttle(0))
    entries = list(source.list())
    assert sorted(e.key for e in entries) == sorted(objects)
    for entry in entries:
        result = transferer.copy(entry, tmp_path)
        assert result.ok, f"{entry.key}: {result.detail}"
    for key, (data, ctype) in objects.items():
        got = bucket.get_object("in/" + key)
        assert got.read() == data, key
        assert got.headers["Content-Type"] == ctype, key
        assert got.headers.get("x-oss-meta-origin") == "s3", key
    source.close()
    dest.close()
