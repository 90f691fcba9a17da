"""srcType=youpai against a loopback double of UPYUN's REST API (tests/upyun_server.py).

The double follows UPYUN's public docs; nothing here has run against the real service.
"""

from __future__ import annotations

import os
import secrets

import pytest

from ossimport_dist.errors import SourceError
from ossimport_dist.models import ObjectEntry
from ossimport_dist.storage.errors import RequestFailed
from ossimport_dist.storage.youpai import YoupaiSource
from conftest import awkward_names
from upyun_server import LIST_END, Tree, UpyunServer

SERVICE, OPERATOR = "svc-test", "operator1"

AWKWARD = {
    **awkward_names(),
    "a/x.txt": b"folder a",
    "a b.txt": b"sorts after a/ as a key, before it by name",
    "a-b.txt": b"dash",
    "/".join(f"d{i}" for i in range(8)) + "/deep.txt": b"deep",
    "q?uestion&amp.txt": b"query chars",
}


@pytest.fixture
def password():
    return "pw-" + secrets.token_hex(8)


@pytest.fixture
def tree():
    files = dict(AWKWARD)
    for i in range(1100):
        files[f"bulk/f{i:05d}.bin"] = bytes([i % 256]) * (i % 7)
    for i in range(30):
        files[f"nested/{i % 3}/{i % 2}/n{i}.txt"] = f"n{i}".encode()
    return Tree(files, mtime=1_650_000_000)


@pytest.fixture
def server(tree, password):
    srv = UpyunServer(tree, SERVICE, OPERATOR, password).start()
    yield srv
    srv.stop()


def source(server, password, prefix="", **kwargs):
    return YoupaiSource(service=SERVICE, operator=OPERATOR, password=password, prefix=prefix,
                        domain=server.endpoint, list_limit=kwargs.pop("list_limit", 97),
                        connect_timeout=5, read_timeout=10, **kwargs)


def expected_keys(tree, prefix=""):
    return sorted(k[len(prefix):] for k in tree.files if k.startswith(prefix))


def test_lists_every_key_in_order_with_paging(server, tree, password):
    src = source(server, password)
    entries = list(src.list())
    assert [e.key for e in entries] == expected_keys(tree)
    by_key = {e.key: e for e in entries}
    assert by_key["empty.dat"].size == 0
    assert by_key["emoji/😀.bin"].size == 300
    assert by_key["bulk/f01099.bin"].mtime == 1_650_000_000
    pages = [r for r in server.requests if r[1].startswith(f"/{SERVICE}/bulk/")]
    assert len(pages) == 12  # 1,100 files at 97 a page
    assert all(r[2].get("x-list-limit") == "97" for r in pages)


def test_a_huge_folder_lists_the_same_through_sorted_runs_on_disk(server, tree, password):
    whole, spilled = source(server, password), source(server, password)
    spilled.spill_after = 50  # bulk/ holds 1,100 files: 22 runs merged
    assert [(e.key, e.size) for e in spilled.list()] == [(e.key, e.size) for e in whole.list()]
    for marker in ["bulk/", "bulk/f00500.bin", "bulk/f01099.bin", "a b.txt"]:
        assert [e.key for e in spilled.list(start_after=marker)] == \
            [e.key for e in whole.list(start_after=marker)], marker


def test_start_after_subtree_and_non_recursive(server, tree, password):
    src = source(server, password, list_limit=500)
    keys = expected_keys(tree)
    for after in ("", "a", "a b.txt", "a/", "a/x.txt", "bulk/f00500.bin", "nested/1/",
                  "中文目录/", "zzz", "d0/d1/d2/"):
        assert [e.key for e in src.list(start_after=after)] == [k for k in keys if k > after]
    assert [e.key for e in src.list("nested/", start_after="nested/1/0/n4.txt")] == \
        [k for k in keys if k.startswith("nested/") and k > "nested/1/0/n4.txt"]
    top = [e.key for e in src.list(recursive=False)]
    assert top == sorted(k for k in tree.files if "/" not in k)
    assert src.subtrees() == sorted({k.split("/")[0] + "/" for k in tree.files if "/" in k})
    assert src.subtrees("nested/") == ["nested/0/", "nested/1/", "nested/2/"]


def test_prefix_folder_and_partial_prefix(server, tree, password):
    src = source(server, password, prefix="nested/1/")
    assert [e.key for e in src.list()] == expected_keys(tree, "nested/1/")
    partial = source(server, password, prefix="bulk/f0109")
    assert [e.key for e in partial.list()] == [f"{i}.bin" for i in range(10)]
    assert partial.stat("9.bin").size == 1099 % 7
    with pytest.raises(SourceError, match="srcPrefix 'nope/' does not exist"):
        list(source(server, password, prefix="nope/").list())


def test_stat(server, password):
    src = source(server, password)
    entry = src.stat("中文目录/文件.txt")
    assert entry.size == len("内容".encode()) and entry.mtime == 1_650_000_000
    assert entry.headers["content-type"] == "text/plain"
    assert src.stat("plus+dir/a+b=c.txt").size == 4
    assert src.stat("hash#dir/a#b.txt").size == 4
    assert src.stat("percent%25/100%.txt").size == 7
    assert src.stat("missing.txt") is None
    assert src.stat("nested/") is None


def test_ranged_open_and_headers(server, tree, password):
    src = source(server, password)
    data = tree.files["emoji/😀.bin"][0]
    entry = src.stat("emoji/😀.bin")
    with src.open(entry, 10, 100) as stream:
        assert stream.read() == data[10:110]
    with src.open(entry) as stream:
        assert stream.read() == data
    with src.open(src.stat("with space/file name.txt")) as stream:
        assert stream.headers["content-type"] == "text/plain"
        assert stream.read(3) == b"spa"
    with src.open(src.stat("empty.dat")) as stream:
        assert stream.read() == b""
    with pytest.raises(FileNotFoundError):
        src.open(ObjectEntry(key="gone.txt", size=3))
    assert [r[2].get("Range") for r in server.requests if r[0] == "GET"][:2] == \
        ["bytes=10-109", None]


def test_download_from_cdn(tree, server, password):
    cdn = UpyunServer(tree, cdn=True).start()
    try:
        src = source(server, password, prefix="percent%25/", download_from_cdn=True,
                     cdn_domain=cdn.endpoint)
        entry = next(iter(src.list()))
        with src.open(entry, 2, 3) as stream:
            assert stream.read() == b"rce"
        assert [r[1] for r in cdn.requests] == ["/percent%2525/100%25.txt"]
        assert "Authorization" not in cdn.requests[0][2]
        assert not [r for r in server.requests if r[0] == "GET" and "100" in r[1]]
    finally:
        cdn.stop()


def test_wrong_password_is_one_line_without_the_password(server, password):
    wrong = "wrong-" + secrets.token_hex(6)
    src = source(server, wrong)
    with pytest.raises(SourceError) as info:
        list(src.list())
    text = str(info.value)
    assert "\n" not in text and wrong not in text and password not in text
    assert OPERATOR in text and SERVICE in text and "sign error" in text
    with pytest.raises(SourceError):
        src.stat("readme.txt")


def test_server_errors_retry_and_throttle(server, password):
    src = source(server, password)
    server.set_faults([503])
    with pytest.raises(RequestFailed) as info:
        src.stat("readme.txt")
    assert info.value.retryable and not info.value.throttled
    server.set_faults([429])
    with pytest.raises(RequestFailed) as info:
        src.open(ObjectEntry(key="readme.txt", size=6))
    assert info.value.throttled and info.value.retryable
    assert src.stat("readme.txt").size == 6


def test_copies_through_transferer_into_oss(server, tree, password, emulator, bucket, tmp_path):
    from ossimport_dist.storage.oss import OssDestination
    from ossimport_dist.transfer import TransferOptions, Transferer
    from ossimport_dist.models import Outcome

    big = os.urandom(3 * (1 << 20) + 17)
    tree.put("big/blob.bin", big, 1_650_000_000)
    src = source(server, password)
    dest = OssDestination(domain=emulator.endpoint, bucket=bucket.bucket_name,
                          prefix="up/", access_key=emulator.key_id, secret_key=emulator.secret)
    transferer = Transferer(src, dest, TransferOptions(multipart_threshold=1 << 30,
                                                       part_size=1 << 20, parts_in_parallel=2),
                            throttle=None)
    wanted = set(AWKWARD) | {"big/blob.bin"}
    copied = 0
    for entry in src.list():
        if entry.key not in wanted:
            continue
        result = transferer.copy(entry, tmp_path)
        assert result.outcome == Outcome.SUCCEED, (entry.key, result.detail)
        assert bucket.get_object("up/" + entry.key).read() == tree.files[entry.key][0]
        copied += 1
    assert copied == len(wanted)
    head = bucket.head_object("up/中文目录/文件.txt")
    assert head.headers["Content-Type"] == "text/plain"
    src.close()
    dest.close()


def test_upyuns_own_sdk_sees_the_double_as_our_driver_does(server, tree, password):
    """The double is checked against UPYUN's official Python SDK (``upyun`` from PyPI): the SDK
    signs, lists (its text format), heads and downloads every file, and must agree with our
    driver key by key. What the SDK and the double agree on is what UPYUN ships to its users."""
    import io

    import upyun

    sdk = upyun.UpYun(SERVICE, OPERATOR, password, endpoint=server.endpoint.split("://", 1)[1], timeout=10)
    seen = {}

    def walk(folder):
        begin = None
        while True:
            page = sdk.get_list_with_iter("/" + folder, limit=97, begin=begin)
            for item in page["files"]:
                path = folder + item["name"]
                if item["type"] == "F":
                    walk(path + "/")
                else:
                    seen[path] = (int(item["size"]), int(item["time"]))
            begin = page["iter"]
            if begin == LIST_END:
                return

    walk("")
    ours = source(server, password)
    assert {e.key: (e.size, int(e.mtime)) for e in ours.list()} == seen
    assert len(seen) > 1000
    for key in AWKWARD:
        info = sdk.getinfo("/" + key)
        assert (info["file-type"], int(info["file-size"])) == ("file", len(tree.files[key][0])), key
        got = io.BytesIO()
        sdk.get("/" + key, got)
        assert got.getvalue() == tree.files[key][0] == ours.open(ours.stat(key)).read(), key
    with pytest.raises(upyun.UpYunServiceException) as info:
        upyun.UpYun(SERVICE, OPERATOR, "wrong", endpoint=sdk.endpoint).getinfo("/readme.txt")
    assert info.value.status == 401
    ours.close()
