"""The Azure Blob source against Azurite: listing pages in key order, resuming a listing, odd
names, ranged reads with their headers, a wrong key, and one object carried into OSS."""

from __future__ import annotations

import gzip
import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import crc64_of

pytest.importorskip("azure.storage.blob")

from azure.storage.blob import ContentSettings  # noqa: E402

from ossimport_dist.errors import SourceError  # noqa: E402
from ossimport_dist.models import ObjectEntry, Outcome  # noqa: E402
from ossimport_dist.storage import RequestFailed  # noqa: E402
from ossimport_dist.storage.azure import AzureSource, account_url, code_point_order  # noqa: E402

pytest_plugins = ["azurite"]  # the session-wide Azurite blob service

PREFIX = "mig/"
BULK = 1000
# Names operators really have; several are chosen so that a wrong sort shows: '-' and '.' sort
# before '/', and U+FF5E sorts before an emoji in code-point order but after it in UTF-16.
AWKWARD = {
    "a.txt": b"1",
    "a/b": b"22",
    "a-b/x": b"4444",
    "empty.dat": b"",
    "with space/file name.txt": b"space" * 10,
    "hash#dir/a#b.txt": b"hash",
    "percent%25/100%.txt": b"percent",
    "plus+dir/a+b=c.txt": b"plus",
    "\u4e2d\u6587\u76ee\u5f55/\u6587\u4ef6.txt": "\u5185\u5bb9".encode(),
    "emoji/\U0001f600.bin": os.urandom(300),
    "emoji/\uff5e.txt": b"fullwidth tilde",
    "emoji/\U0001f600/deep.txt": b"under an emoji folder",
    "\U0001f4c1/top.txt": b"emoji at the top",
    "\ue000private/x": b"private use",
    "long/" + "n" * 200 + "/" + "x" * 600 + ".txt": b"long name",
    "q?uestion&amp.txt": b"query chars",
}


def _bulk() -> dict:
    return {f"bulk/{i % 4}/file-{i:04d}.bin": bytes([i % 251]) * (i % 13) for i in range(BULK)}


@pytest.fixture(scope="module")
def container(azurite):
    """One container for the module: PREFIX holds the awkward names, 1,000 bulk blobs, a
    gzip-encoded blob with metadata; 'outside/' must never be listed."""
    name = "c" + uuid.uuid4().hex[:20]
    client = azurite.service_client().create_container(name)
    files = dict(AWKWARD)
    files.update(_bulk())
    body = gzip.compress(os.urandom(6000))  # incompressible: ranges well inside it
    files["meta/page.html.gz"] = body
    with ThreadPoolExecutor(8) as pool:  # within the SDK's 10-connection pool
        list(pool.map(lambda kv: client.upload_blob(PREFIX + kv[0], kv[1]), files.items()))
    client.get_blob_client(PREFIX + "meta/page.html.gz").set_http_headers(ContentSettings(
        content_type="text/html; charset=utf-8", content_encoding="gzip",
        cache_control="max-age=60", content_disposition='attachment; filename="page.html"'))
    client.get_blob_client(PREFIX + "meta/page.html.gz").set_blob_metadata({"owner": "ops"})
    client.upload_blob("outside/x.txt", b"not under the prefix")
    client.upload_blob("mig", b"the prefix without its slash")
    yield name, files
    client.delete_container()


@pytest.fixture
def source(azurite, container):
    src = AzureSource(account=azurite.account, key=azurite.key, container=container[0],
                      prefix=PREFIX, domain=azurite.endpoint, page_size=97)
    yield src
    src.close()


def keys(entries) -> list:
    return [e.key for e in entries]


def test_endpoint_from_suffix_or_url():
    assert account_url("acct", "core.windows.net") == "https://acct.blob.core.windows.net"
    assert account_url("acct", "core.chinacloudapi.cn") == "https://acct.blob.core.chinacloudapi.cn"
    assert account_url("acct", "") == "https://acct.blob.core.windows.net"
    assert account_url("acct", "blob.core.windows.net") == "https://acct.blob.core.windows.net"
    assert account_url("acct", "http://127.0.0.1:10000/devstoreaccount1/") == \
        "http://127.0.0.1:10000/devstoreaccount1"


def test_code_point_order_from_utf16_order():
    import random

    rng = random.Random(7)
    alphabet = ["a", "/", "-", "\u00e9", "\ud7ff", "\ue000", "\uff5e", "\U0001f600",
                "\U00010000", "\U0010fffd"]
    names = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(3000)}
    service_order = sorted(names, key=lambda n: n.encode("utf-16-be"))
    got = [k for k, _ in code_point_order(((k, None) for k in service_order))]
    assert got == sorted(names)


def test_recursive_listing_pages_in_key_order(source, container):
    _, files = container
    entries = list(source.list())
    assert keys(entries) == sorted(files)
    by_key = {e.key: e for e in entries}
    assert by_key["empty.dat"].size == 0
    some = "emoji/\U0001f600.bin"
    assert by_key[some].size == len(files[some])
    assert by_key[some].md5 == hashlib.md5(files[some]).hexdigest()
    assert by_key[some].etag and by_key[some].mtime > 1e9


def test_subtree_non_recursive_and_subtrees(source, container):
    _, files = container
    top = sorted(k for k in files if "/" not in k)
    assert keys(source.list("", recursive=False)) == top
    assert keys(source.list("bulk/2/", recursive=False)) == \
        sorted(k for k in files if k.startswith("bulk/2/"))
    assert source.subtrees() == sorted({k.split("/")[0] + "/" for k in files if "/" in k})
    assert source.subtrees("bulk/") == ["bulk/0/", "bulk/1/", "bulk/2/", "bulk/3/"]


@pytest.mark.parametrize("after", ["a/b", "bulk/1/file-0500.bin", "emoji/", "emoji/\uff5e.txt",
                                   "hash", "zzz"])
def test_start_after_resumes_exactly(source, container, after):
    _, files = container
    assert keys(source.list(start_after=after)) == sorted(k for k in files if k > after)


def test_start_after_inside_subtree(source, container):
    _, files = container
    want = sorted(k for k in files if k.startswith("bulk/3/") and k > "bulk/3/file-0499.bin")
    assert keys(source.list("bulk/3/", start_after="bulk/3/file-0499.bin")) == want


def test_stat(source, container):
    _, files = container
    key = "with space/file name.txt"
    entry = source.stat(key)
    assert (entry.key, entry.size) == (key, len(files[key]))
    assert source.stat("no/such/blob") is None
    assert source.stat("empty.dat").size == 0


def test_ranged_open_and_headers(source, container):
    _, files = container
    key = "meta/page.html.gz"
    data = files[key]
    entry = source.stat(key)
    assert entry.headers["content-encoding"] == "gzip"
    assert entry.headers["x-oss-meta-owner"] == "ops"
    stream = source.open(entry, 100, 1000)
    try:
        got = b"".join(iter(lambda: stream.read(333), b""))
        assert stream.stat_now() == (entry.size, entry.mtime)
        assert stream.headers == {
            "content-type": "text/html; charset=utf-8", "content-encoding": "gzip",
            "cache-control": "max-age=60",
            "content-disposition": 'attachment; filename="page.html"',
            "x-oss-meta-owner": "ops"}
    finally:
        stream.close()
    assert got == data[100:1100]  # stored bytes: never decompressed on the way
    whole = source.open(entry)
    assert whole.read(len(data) + 1) == data
    whole.close()
    empty = source.open(source.stat("empty.dat"))
    assert empty.read(10) == b""
    empty.close()
    with pytest.raises(FileNotFoundError):
        source.open(ObjectEntry("gone.txt", 5), 0, 5)


def test_wrong_key_is_one_line_without_the_key(azurite, container):
    wrong = "d3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudC1rZXk="
    src = AzureSource(account=azurite.account, key=wrong, container=container[0],
                      prefix=PREFIX, domain=azurite.endpoint)
    with pytest.raises(SourceError) as info:
        list(src.list())
    text = str(info.value)
    assert "\n" not in text and wrong not in text and azurite.key not in text
    assert azurite.account in text and azurite.endpoint in text and "srcSecretKey" in text
    with pytest.raises(SourceError) as info:
        src.stat("a.txt")
    assert wrong not in str(info.value)


def test_missing_container_and_bad_key_format(azurite):
    src = AzureSource(account=azurite.account, key=azurite.key, container="nosuchcontainer",
                      domain=azurite.endpoint)
    with pytest.raises(SourceError, match="nosuchcontainer.*does not exist.*srcBucket"):
        list(src.list())
    with pytest.raises(SourceError, match="srcSecretKey is not an Azure account key") as info:
        AzureSource(account="acct", key="not base64!", container="c")
    assert "not base64!" not in str(info.value)


def test_unreachable_endpoint_is_retryable(azurite):
    src = AzureSource(account=azurite.account, key=azurite.key, container="c",
                      domain="http://127.0.0.1:9/devstoreaccount1")
    with pytest.raises(RequestFailed) as info:
        src.stat("x")
    assert info.value.retryable and info.value.status == 0


def test_server_busy_is_throttled(source):
    from azure.core.exceptions import HttpResponseError

    busy = HttpResponseError(message="The server is busy.")
    busy.status_code, busy.error_code = 503, "ServerBusy"
    failure = source._failure(busy, "GetBlob", "k")
    assert isinstance(failure, RequestFailed) and failure.throttled and failure.retryable


def test_copy_into_oss_end_to_end(source, container, bucket, emulator, tmp_path):
    from ossimport_dist.storage.oss import OssDestination
    from ossimport_dist.transfer import Transferer, TransferOptions

    _, files = container
    dest = OssDestination(domain=bucket.endpoint, bucket=bucket.bucket_name, prefix="from-azure/",
                          access_key=emulator.key_id, secret_key=emulator.secret)
    big_key = "big/\u5927 file+1.bin"
    big = os.urandom(3 * 1024 * 1024 + 12345)
    client = source._client
    client.upload_blob(PREFIX + big_key, big, content_settings=ContentSettings(
        content_type="application/x-big"))
    try:
        options = TransferOptions(multipart_threshold=1024 * 1024, part_size=512 * 1024,
                                  parts_in_parallel=2)
        transferer = Transferer(source, dest, options, throttle=None)
        wanted = {big_key: big, "meta/page.html.gz": files["meta/page.html.gz"],
                  "empty.dat": b"", "emoji/\U0001f600.bin": files["emoji/\U0001f600.bin"]}
        for key in wanted:
            result = transferer.copy(source.stat(key), tmp_path / "state")
            assert result.outcome == Outcome.SUCCEED, result.detail
        for key, data in wanted.items():
            # HEAD, not GET: a GET through requests would undo the gzip Content-Encoding.
            head = bucket.head_object("from-azure/" + key)
            assert (head.content_length, int(head.headers["x-oss-hash-crc64ecma"])) == \
                (len(data), crc64_of(data)), key
        assert bucket.get_object("from-azure/" + big_key).read() == big
        assert bucket.head_object("from-azure/" + big_key).content_type == "application/x-big"
        head = bucket.head_object("from-azure/meta/page.html.gz")
        assert head.content_type == "text/html; charset=utf-8"
        assert head.headers.get("Content-Encoding") == "gzip"
        assert head.headers.get("x-oss-meta-owner") == "ops"
    finally:
        dest.close()
        client.delete_blob(PREFIX + big_key)


def test_from_job_reads_the_src_keys(azurite, container):
    from ossimport_dist.config import JobConfig

    job = JobConfig(src_type="azure", src_access_key=azurite.account, src_secret_key=azurite.key,
                    src_domain=azurite.endpoint, src_bucket=container[0], src_prefix=PREFIX)
    src = AzureSource.from_job(job)
    try:
        assert src.stat("a.txt").size == 1
    finally:
        src.close()
