"""A local folder as the destination: atomic writes, CRC64 on every write, multipart that
resumes, and keys that try to leave the folder."""

import os

import pytest

from ossimport_dist import crc64
from ossimport_dist.errors import DestinationError
from ossimport_dist.models import Outcome
from ossimport_dist.storage.errors import RequestFailed
from ossimport_dist.storage.local import MTIME_HEADER, UPLOADS_DIR, LocalDestination, LocalSource
from ossimport_dist.transfer import Transferer, TransferOptions

KIB = 1024


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "dest"
    path.mkdir()
    return path


@pytest.fixture
def dest(root):
    return LocalDestination(str(root), "pre/")


def leftovers(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


def test_put_then_head(dest, root):
    result = dest.put("a/b c.txt", b"hello", {MTIME_HEADER: "1600000000.5"})
    assert result.crc64 == crc64.crc64(b"hello")
    path = root / "pre" / "a" / "b c.txt"
    assert path.read_bytes() == b"hello"
    head = dest.head("a/b c.txt")
    assert (head.size, head.mtime, head.crc64) == (5, 1600000000.5, crc64.crc64(b"hello"))
    assert dest.head("a/missing") is None
    assert dest.head("a/b c.txt/below") is None
    assert leftovers(root) == []


def test_head_takes_the_crc64_kept_with_the_file_until_the_file_changes(dest, root):
    dest.put("kept.bin", b"A" * 4000, {MTIME_HEADER: "1600000000"})
    path = root / "pre" / "kept.bin"
    assert dest.head("kept.bin").crc64 == crc64.crc64(b"A" * 4000)
    # Bytes changed behind our back with size and mtime restored: the kept CRC64 is what head
    # gives, so it did not read the file (as OSS gives an object's stored CRC64).
    st = path.stat()
    path.write_bytes(b"B" * 4000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert dest.head("kept.bin").crc64 == crc64.crc64(b"A" * 4000)
    # Any ordinary change moves the mtime: the file is read again.
    path.write_bytes(b"C" * 4000)
    assert dest.head("kept.bin").crc64 == crc64.crc64(b"C" * 4000)
    # A file nobody wrote through us has no kept CRC64 at all.
    (root / "pre" / "by-hand.txt").write_bytes(b"hand")
    assert dest.head("by-hand.txt").crc64 == crc64.crc64(b"hand")


def test_opening_sweeps_what_a_crash_left_and_nothing_fresh(root):
    LocalDestination(str(root))
    temps = root / UPLOADS_DIR / "tmp"
    stale_tmp, fresh_tmp = temps / ".a.bin.0123.tmp", temps / ".b.bin.4567.tmp"
    stale_up, fresh_up = root / UPLOADS_DIR / "aaaa1111", root / UPLOADS_DIR / "bbbb2222"
    for p in (stale_tmp, fresh_tmp):
        p.write_bytes(b"half a file")
    for p in (stale_up, fresh_up):
        p.mkdir()
        (p / "upload.json").write_text("{}")
    week_ago = os.stat(fresh_tmp).st_mtime - 8 * 24 * 3600
    os.utime(stale_tmp, (week_ago, week_ago))
    os.utime(stale_up, (week_ago, week_ago))
    LocalDestination(str(root))
    assert not stale_tmp.exists() and not stale_up.exists()
    assert fresh_tmp.exists() and fresh_up.exists() and temps.is_dir()


def test_put_replaces_whole_and_empty_files_work(dest, root):
    dest.put("x", b"first version, longer")
    dest.put("x", b"second")
    assert (root / "pre" / "x").read_bytes() == b"second"
    assert dest.put("empty", b"").crc64 == 0
    assert dest.head("empty").size == 0
    assert dest.put("folder/", b"").crc64 == 0
    assert (root / "pre" / "folder").is_dir()
    assert dest.head("folder/").size == 0


def test_file_urls_and_bad_roots(tmp_path, root):
    assert LocalDestination("file://" + str(root)).root == os.path.realpath(root)
    with pytest.raises(DestinationError, match="not an absolute directory"):
        LocalDestination("http://oss-cn-hangzhou.aliyuncs.com")
    with pytest.raises(DestinationError, match="not a directory: create it"):
        LocalDestination(str(tmp_path / "nope"))


@pytest.mark.parametrize("key", ["../outside", "a/../../outside", "/etc/passwd", "a//b",
                                 "./a", "a/\x00b", f"{UPLOADS_DIR}/x", ""])
def test_keys_that_would_escape_are_refused(tmp_path, key):
    root = tmp_path / "dest"
    root.mkdir()
    dest = LocalDestination(str(root))
    with pytest.raises(DestinationError) as info:
        dest.put(key, b"evil")
    assert repr(key)[1:-1] in str(info.value) or key in str(info.value)
    with pytest.raises(DestinationError):
        dest.init_multipart(key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    assert [str(p.relative_to(root)) for p in root.rglob("*")] == [UPLOADS_DIR, f"{UPLOADS_DIR}/tmp"]


def test_a_symlinked_folder_pointing_outside_is_refused(tmp_path, root):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "inner").mkdir()
    (root / "ok").symlink_to(root / "inner")
    dest = LocalDestination(str(root))
    with pytest.raises(DestinationError, match="'link/x'.*outside .* symbolic link"):
        dest.put("link/x", b"evil")
    with pytest.raises(DestinationError):
        dest.put("link/deeper/x", b"evil")
    with pytest.raises(DestinationError):
        dest.head("link/x")
    assert list(outside.iterdir()) == []
    dest.put("ok/x", b"fine")  # a link that stays inside is just a folder
    assert (root / "inner" / "x").read_bytes() == b"fine"


def test_a_symlinked_file_is_replaced_not_written_through(tmp_path, root):
    target = tmp_path / "precious"
    target.write_bytes(b"keep")
    (root / "f").symlink_to(target)
    LocalDestination(str(root)).put("f", b"new")
    assert target.read_bytes() == b"keep"
    assert not (root / "f").is_symlink() and (root / "f").read_bytes() == b"new"


def test_multipart_complete_and_resume(dest, root):
    data = [b"a" * 1000, b"b" * 1000, b"c" * 10]
    upload = dest.init_multipart("big/file", {MTIME_HEADER: "1500000000"})
    results = {n: dest.upload_part("big/file", upload, n, d) for n, d in [(1, data[0]), (3, data[2])]}
    # A restarted worker finds what it wrote, and the file is not there yet.
    assert dest.list_parts("big/file", upload) == {1: (1000, results[1].etag),
                                                   3: (10, results[3].etag)}
    assert dest.head("big/file") is None
    results[2] = dest.upload_part("big/file", upload, 2, data[1])
    # A part uploaded again replaces the previous one.
    results[3] = dest.upload_part("big/file", upload, 3, b"C" * 10)
    assert len(dest.list_parts("big/file", upload)) == 3
    done = dest.complete_multipart("big/file", upload, [(n, results[n].etag) for n in (1, 2, 3)])
    whole = data[0] + data[1] + b"C" * 10
    assert done.crc64 == crc64.crc64(whole)
    assert (root / "pre" / "big" / "file").read_bytes() == whole
    assert (root / "pre" / "big" / "file").stat().st_mtime == 1500000000
    assert [p.name for p in (root / UPLOADS_DIR).iterdir()] == ["tmp"] and leftovers(root) == []
    assert dest.list_parts("big/file", upload) is None


def test_multipart_errors(dest):
    upload = dest.init_multipart("k")
    part = dest.upload_part("k", upload, 1, b"x")
    with pytest.raises(RequestFailed) as info:
        dest.complete_multipart("k", upload, [(1, "0" * 16)])
    assert info.value.code == "InvalidPart" and not info.value.retryable
    with pytest.raises(RequestFailed) as info:
        dest.upload_part("other", upload, 1, b"x")
    assert info.value.code == "NoSuchUpload"
    dest.abort_multipart("k", upload)
    dest.abort_multipart("k", upload)
    with pytest.raises(RequestFailed, match="no upload"):
        dest.complete_multipart("k", upload, [(1, part.etag)])
    assert dest.list_parts("k", "../../etc") is None


def test_transfer_into_a_local_folder_resumes_a_large_file(tmp_path, root):
    src_root = tmp_path / "src"
    src_root.mkdir()
    big = bytes((i * 13) % 256 for i in range(700 * KIB))
    (src_root / "big.bin").write_bytes(big)
    (src_root / "small.txt").write_bytes(b"small")
    source = LocalSource(str(src_root) + "/")
    dest = LocalDestination(str(root))
    options = TransferOptions(multipart_threshold=256 * KIB, part_size=128 * KIB,
                              parts_in_parallel=2, max_attempts=1)
    state = tmp_path / "state"

    # The first run dies after three parts (the destination's disk "fills up").
    calls = []
    real_upload = dest.upload_part

    def failing_upload(key, upload_id, number, data):
        calls.append(number)
        if len(calls) > 3:
            raise RequestFailed(0, "DiskFull", "no space", retryable=False)
        return real_upload(key, upload_id, number, data)

    dest.upload_part = failing_upload
    entry = source.stat("big.bin")
    first = Transferer(source, dest, options, throttle=None).copy(entry, state)
    assert first.outcome == Outcome.FAILED
    dest.upload_part = real_upload
    uploaded = []
    dest.upload_part = lambda *a: uploaded.append(a[2]) or real_upload(*a)
    transferer = Transferer(source, dest, options, throttle=None)
    second = transferer.copy(entry, state)
    assert second.outcome == Outcome.SUCCEED, second.detail
    assert len(uploaded) == 6 - 3
    assert (root / "big.bin").read_bytes() == big
    assert transferer.copy(source.stat("small.txt"), state).outcome == Outcome.SUCCEED
    assert (root / "small.txt").read_bytes() == b"small"
    assert transferer.audit(source.stat("big.bin"), "detailed").outcome == Outcome.SUCCEED
    assert leftovers(root) == []


def test_many_threads_writing_the_same_and_different_keys(dest, root):
    from concurrent.futures import ThreadPoolExecutor

    def write(i):
        return dest.put(f"same/{i % 3}", bytes([i]) * 1000).crc64

    with ThreadPoolExecutor(8) as pool:
        crcs = list(pool.map(write, range(48)))
    assert len(set(crcs)) == 48
    for i in range(3):
        data = (root / "pre" / "same" / str(i)).read_bytes()
        assert len(data) == 1000 and len(set(data)) == 1
    assert leftovers(root) == []
