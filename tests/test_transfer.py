"""Copying one object: verified single PUTs, multipart with resume, retries, changed files.

The first half runs against an in-memory destination that can fail on cue; the second half
runs the same stories against the OSS emulator as a real subprocess, over HTTP.
"""

import hashlib
import json
import os
import random
import threading
import time
from collections import Counter

import pytest

from ossimport_dist import crc64
from ossimport_dist.errors import DestinationError
from ossimport_dist.models import ObjectEntry, Outcome
from ossimport_dist.storage.base import Destination, Features, PutResult
from ossimport_dist.storage.errors import RequestFailed
from ossimport_dist.storage.local import LocalSource
from ossimport_dist.throttle import Throttle
from ossimport_dist.transfer import Backpressure, Transferer, TransferOptions

KIB, MIB = 1024, 1024 * 1024


# --------------------------------------------------------------------------- helpers

class MemoryDestination(Destination):
    """OSS semantics that matter here: CRC64 on every write, parts replaced by number."""

    kind = "memory"
    features = Features(has_crc64=True, multipart=True)

    def __init__(self):
        self.objects = {}  # key -> (data, headers)
        self.uploads = {}  # upload_id -> (key, headers, {n: data})
        self.calls = Counter()
        self.faults = {}  # op -> list of ("before"|"after", exception), consumed in order
        self.fail_on_call = {}  # (op, nth call) -> exception
        self.corrupt = set()  # ops whose reported CRC is wrong
        self.lock = threading.Lock()

    def _fault(self, op, when):
        with self.lock:
            if when == "before" and (op, self.calls[op]) in self.fail_on_call:
                raise self.fail_on_call.pop((op, self.calls[op]))
            queue = self.faults.get(op)
            if queue and queue[0][0] == when:
                raise queue.pop(0)[1]

    def _crc(self, op, data):
        return crc64.crc64(data) ^ (1 if op in self.corrupt else 0)

    def head(self, key):
        self.calls["head"] += 1
        if key not in self.objects:
            return None
        data, headers = self.objects[key]
        return ObjectEntry(key, len(data), mtime=time.time(), crc64=crc64.crc64(data),
                           md5=headers.get("x-oss-meta-md5"), headers=headers)

    def put(self, key, data, headers=None):
        self.calls["put"] += 1
        self._fault("put", "before")
        self.objects[key] = (bytes(data), dict(headers or {}))
        self._fault("put", "after")
        return PutResult(crc64=self._crc("put", data))

    def init_multipart(self, key, headers=None):
        self.calls["init"] += 1
        upload_id = f"up{len(self.uploads) + 1}"
        self.uploads[upload_id] = (key, dict(headers or {}), {})
        return upload_id

    def upload_part(self, key, upload_id, part_number, data):
        with self.lock:
            self.calls["upload_part"] += 1
        self._fault("upload_part", "before")
        if upload_id not in self.uploads:
            raise RequestFailed(404, "NoSuchUpload")
        self.uploads[upload_id][2][part_number] = bytes(data)
        self._fault("upload_part", "after")
        return PutResult(crc64=self._crc("upload_part", data), etag=hashlib.md5(data).hexdigest())

    def list_parts(self, key, upload_id):
        self.calls["list_parts"] += 1
        if upload_id not in self.uploads:
            return None
        return {n: (len(d), hashlib.md5(d).hexdigest())
                for n, d in self.uploads[upload_id][2].items()}

    def complete_multipart(self, key, upload_id, parts):
        self.calls["complete"] += 1
        self._fault("complete", "before")
        if upload_id not in self.uploads:
            raise RequestFailed(404, "NoSuchUpload")
        _, headers, stored = self.uploads.pop(upload_id)
        data = b"".join(stored[n] for n, _ in parts)
        self.objects[key] = (data, headers)
        self._fault("complete", "after")
        return PutResult(crc64=self._crc("complete", data))

    def abort_multipart(self, key, upload_id):
        self.calls["abort"] += 1
        self.uploads.pop(upload_id, None)


def options(**kw):
    base = dict(multipart_threshold=1 * MIB, part_size=256 * KIB, parts_in_parallel=3,
                backoff_base=0.001, backoff_cap=0.01)
    base.update(kw)
    return TransferOptions(**base)


def write(root, key, data):
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def src_root(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    return root


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


def entry_for(source, key):
    return source.stat(key)


def transferer(source, dest, **kw):
    on_bytes = kw.pop("on_bytes", None)
    return Transferer(source, dest, options(**kw), Throttle(0), on_bytes=on_bytes,
                      sleep=lambda s: None)


# --------------------------------------------------------------------------- crc64, throttle

def test_crc64_matches_oss_and_combines_parts():
    assert crc64.crc64(b"123456789") == 0x995DC9BBDF1939FA  # CRC-64/XZ check value
    data = os.urandom(10000)
    whole = crc64.crc64(data)
    running = crc64.Crc64()
    running.update(data[:3333])
    running.update(data[3333:])
    assert running.value == whole
    assert crc64.combine(crc64.crc64(data[:4096]), crc64.crc64(data[4096:]), 10000 - 4096) == whole
    assert crc64.combine(whole, crc64.crc64(b""), 0) == whole


def test_fast_crc64_agrees_with_crcmod_byte_for_byte():
    import crcmod

    assert crc64.IMPLEMENTATION == "fastcrc", "the fast CRC64 wheel should be installed here"
    slow = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True)
    rng = random.Random(7)
    previous = 0
    for size in (0, 1, 7, 8, 9, 63, 64, 65, 4095, 4096, 100_003):
        data = rng.randbytes(size)
        assert crc64.crc64(data, previous) == slow(data, previous), size
        assert crc64.crc64(memoryview(data), previous) == slow(data, previous), size
        previous = slow(data, previous)


def test_throttle_holds_the_rate_across_threads():
    throttle = Throttle(2 * MIB)
    start = time.monotonic()

    def pump():
        for _ in range(8):
            throttle.consume(64 * KIB)

    threads = [threading.Thread(target=pump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - start
    # 2 MiB at 2 MiB/s, less the initial burst allowance (0.25 s worth).
    assert 0.6 < elapsed < 1.5
    unlimited = Throttle(0)
    start = time.monotonic()
    unlimited.consume(10 ** 12)
    assert time.monotonic() - start < 0.01


def test_throttle_rate_change_applies_to_waiting_threads():
    throttle = Throttle(64 * KIB)
    throttle.consume(64 * KIB)  # empty the burst
    done = threading.Event()
    thread = threading.Thread(target=lambda: (throttle.consume(640 * KIB), done.set()))
    thread.start()  # would wait ~10 s at the old rate
    time.sleep(0.1)
    throttle.set_rate(0)
    assert done.wait(2)


def test_backpressure_grows_on_signals_and_decays_on_success():
    bp = Backpressure(base=0.1, cap=1.0, sleep=lambda s: None)
    bp.signal()
    bp.signal()
    assert bp.pause == pytest.approx(0.2)
    for _ in range(50):
        bp.success()
    assert bp.pause == 0.0


# --------------------------------------------------------------------------- small objects

def test_small_file_is_copied_verified_with_type_and_md5(src_root, state):
    data = os.urandom(5000)
    write(src_root, "docs/report.txt", data)
    write(src_root, "blob.unknownext", b"x")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    seen = []
    t = transferer(source, dest, record_md5=True, on_bytes=seen.append)
    result = t.copy(entry_for(source, "docs/report.txt"), state)
    assert (result.outcome, result.size, result.crc64) == (Outcome.SUCCEED, 5000, crc64.crc64(data))
    stored, headers = dest.objects["docs/report.txt"]
    assert stored == data
    assert headers["Content-Type"] == "text/plain"
    assert headers["x-oss-meta-md5"] == hashlib.md5(data).hexdigest()
    assert seen == [5000]
    assert t.copy(entry_for(source, "blob.unknownext"), state).ok
    assert dest.objects["blob.unknownext"][1]["Content-Type"] == "application/octet-stream"


def test_empty_file(src_root, state):
    write(src_root, "empty", b"")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    result = transferer(source, dest).copy(entry_for(source, "empty"), state)
    assert result.outcome == Outcome.SUCCEED and dest.objects["empty"][0] == b""


def test_deleted_source_is_source_not_exist(src_root, state):
    path = write(src_root, "gone", b"abc")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    entry = entry_for(source, "gone")
    path.unlink()
    result = transferer(source, dest).copy(entry, state)
    assert result.outcome == Outcome.FAILED
    assert result.detail == "SOURCE_NOT_EXIST: source file does not exist"


def test_file_changed_since_listing_is_not_uploaded(src_root, state):
    path = write(src_root, "log", b"abc")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    entry = entry_for(source, "log")
    path.write_bytes(b"abcdef")
    result = transferer(source, dest).copy(entry, state)
    assert result.outcome == Outcome.CHECK_FAILED
    assert result.detail.startswith("SIZE_NOT_MATCH: listed 3 bytes")
    assert "now 6 bytes" in result.detail
    assert dest.calls["put"] == 0


def test_a_large_file_in_one_put_arrives_whole_with_its_crc_and_md5(src_root, state):
    # Above the 1 MiB read chunk and below the multipart threshold: read into one buffer.
    data = os.urandom(3 * MIB + 12345)
    write(src_root, "video/clip.mp4", data)
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    sending, seen = [], []
    t = transferer(source, dest, record_md5=True, multipart_threshold=64 * MIB, on_bytes=seen.append)
    result = t.copy(entry_for(source, "video/clip.mp4"), state, sending=sending.append)
    assert (result.outcome, result.size, result.crc64) == (Outcome.SUCCEED, len(data), crc64.crc64(data))
    stored, headers = dest.objects["video/clip.mp4"]
    assert bytes(stored) == data  # not a byte more: the one read past the end is not sent
    assert headers["x-oss-meta-md5"] == hashlib.md5(data).hexdigest()
    assert dest.calls["put"] == 1 and seen == [len(data)] and sum(sending) == len(data)
    assert max(sending) <= MIB  # progress shows per chunk, before the PUT


@pytest.mark.parametrize("change", ["grows", "shrinks"])
def test_a_large_file_that_changes_while_it_is_read_is_not_uploaded(src_root, state, change):
    path = write(src_root, "db/dump.sql", os.urandom(3 * MIB))
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    entry = entry_for(source, "db/dump.sql")
    real_open = source.open

    def open_then_change(e, offset=0, length=None):
        stream = real_open(e, offset, length)
        real_readinto = stream.readinto

        def readinto(buffer):
            n = real_readinto(buffer)
            if n and change == "grows":
                with open(path, "ab") as f:
                    f.write(b"appended while read")
            elif n:
                os.truncate(path, 2 * MIB)
            return n

        stream.readinto = readinto
        return stream

    source.open = open_then_change
    sending = []
    result = transferer(source, dest, multipart_threshold=64 * MIB).copy(entry, state, sending=sending.append)
    assert result.outcome == Outcome.CHECK_FAILED and result.detail.startswith("SIZE_NOT_MATCH")
    assert dest.calls["put"] == 0 and "db/dump.sql" not in dest.objects
    assert sum(sending) == 0  # the bytes read are taken back out of "sending"


def test_names_that_cannot_be_oss_keys_fail_alone(src_root, state):
    raw = os.fsencode(str(src_root)) + b"/caf\xe9"
    with open(raw, "wb") as f:
        f.write(b"x")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    [entry] = list(source.list())
    result = transferer(source, dest).copy(entry, state)
    assert result.outcome == Outcome.FAILED and result.detail.startswith("INVALID_KEY")


def test_transient_errors_are_retried_and_permanent_ones_are_not(src_root, state):
    write(src_root, "f", b"data")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    dest.faults["put"] = [("before", RequestFailed(500, "InternalError")),
                          ("before", RequestFailed(0, "ConnectionResetError")),
                          ("before", RequestFailed(503, "SlowDown", "Please reduce your request rate."))]
    t = transferer(source, dest)
    assert t.copy(entry_for(source, "f"), state).ok
    assert dest.calls["put"] == 4
    assert t.backpressure.pause > 0  # the SlowDown slowed the whole worker

    dest.faults["put"] = [("before", RequestFailed(400, "InvalidArgument", "bad header"))]
    result = t.copy(entry_for(source, "f"), state)
    assert result.outcome == Outcome.FAILED and "InvalidArgument" in result.detail
    dest.faults["put"] = [("before", RequestFailed(500, "InternalError"))] * 5
    result = transferer(source, dest, max_attempts=3).copy(entry_for(source, "f"), state)
    assert result.outcome == Outcome.FAILED and "500" in result.detail


def test_crc_mismatch_is_retried_then_reported(src_root, state):
    write(src_root, "f", b"data")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    dest.corrupt.add("put")
    result = transferer(source, dest, max_attempts=2).copy(entry_for(source, "f"), state)
    assert result.outcome == Outcome.CHECK_FAILED and result.detail.startswith("CRC64_NOT_MATCH")
    assert dest.calls["put"] == 2


def test_a_dead_destination_stops_the_job(src_root, state):
    write(src_root, "f", b"data")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    dest.faults["put"] = [("before", DestinationError("destBucket 'x' does not exist"))]
    with pytest.raises(DestinationError):
        transferer(source, dest).copy(entry_for(source, "f"), state)


def test_skip_existing(src_root, state):
    write(src_root, "f", b"data")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    t = transferer(source, dest, skip_existing=True)
    assert t.copy(entry_for(source, "f"), state).outcome == Outcome.SUCCEED
    assert t.copy(entry_for(source, "f"), state).outcome == Outcome.SKIPPED
    write(src_root, "f", b"longer data")
    assert t.copy(entry_for(source, "f"), state).outcome == Outcome.SUCCEED
    assert dest.calls["put"] == 2


# --------------------------------------------------------------------------- multipart

def big_file(src_root, key="big.bin", size=1 * MIB + 5 * KIB):
    data = os.urandom(size)
    write(src_root, key, data)
    return data


def checkpoints(state):
    return list((state / "multipart").glob("*.json")) if (state / "multipart").exists() else []


def test_multipart_copy(src_root, state):
    data = big_file(src_root)
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    seen = []
    result = transferer(source, dest, on_bytes=seen.append).copy(entry_for(source, "big.bin"), state)
    assert (result.outcome, result.size, result.crc64) == (Outcome.SUCCEED, len(data), crc64.crc64(data))
    assert dest.objects["big.bin"][0] == data
    assert dest.calls["upload_part"] == 5 and sum(seen) == len(data)
    assert checkpoints(state) == []


def test_multipart_resume_uploads_only_missing_parts(src_root, state):
    data = big_file(src_root, size=2 * MIB)  # 8 parts of 256 KiB
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    # The "crash": the 4th part request fails for good; the run gives up on the object.
    dest.fail_on_call[("upload_part", 4)] = RequestFailed(400, "Crash")
    first = transferer(source, dest, parts_in_parallel=1).copy(entry_for(source, "big.bin"), state)
    assert first.outcome == Outcome.FAILED
    [cpt] = checkpoints(state)
    doc = json.loads(cpt.read_text())
    assert doc["key"] == "big.bin" and doc["size"] == len(data)
    done_before = set(doc["parts"])
    assert done_before and len(done_before) < 8

    dest.calls.clear()
    second = transferer(source, dest).copy(entry_for(source, "big.bin"), state)
    assert second.outcome == Outcome.SUCCEED
    assert dest.calls["init"] == 0 and dest.calls["list_parts"] == 1
    assert dest.calls["upload_part"] == 8 - len(done_before)
    assert dest.objects["big.bin"][0] == data
    assert checkpoints(state) == []


def test_resume_after_the_file_changed_starts_over(src_root, state):
    big_file(src_root, size=2 * MIB)
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    dest.faults["upload_part"] = [("before", RequestFailed(400, "Crash"))]
    transferer(source, dest, parts_in_parallel=1).copy(entry_for(source, "big.bin"), state)
    assert len(dest.uploads) == 1
    data = big_file(src_root, size=2 * MIB + 1)
    result = transferer(source, dest).copy(entry_for(source, "big.bin"), state)
    assert result.ok and dest.objects["big.bin"][0] == data
    assert dest.calls["abort"] == 1 and dest.uploads == {}


def test_resume_after_the_upload_vanished_starts_over(src_root, state):
    data = big_file(src_root, size=2 * MIB)
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    dest.fail_on_call[("upload_part", 6)] = RequestFailed(400, "Crash")
    transferer(source, dest, parts_in_parallel=1).copy(entry_for(source, "big.bin"), state)
    dest.uploads.clear()  # expired on the server
    dest.calls.clear()
    assert transferer(source, dest).copy(entry_for(source, "big.bin"), state).ok
    assert dest.calls["init"] == 1 and dest.calls["upload_part"] == 8
    assert dest.objects["big.bin"][0] == data


def test_lost_responses_count_as_done(src_root, state):
    data = big_file(src_root)
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    dest.faults["upload_part"] = [("after", RequestFailed(0, "ConnectionResetError"))]
    dest.faults["complete"] = [("after", RequestFailed(0, "Timeout"))]
    result = transferer(source, dest).copy(entry_for(source, "big.bin"), state)
    assert result.outcome == Outcome.SUCCEED, result.detail
    assert dest.objects["big.bin"][0] == data
    assert dest.calls["complete"] == 1  # the head proved the object complete


def test_file_changed_mid_read_aborts_the_upload(src_root, state):
    big_file(src_root, size=2 * MIB)
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    entry = entry_for(source, "big.bin")
    real_open = source.open
    opened = []

    def open_and_grow(e, offset=0, length=None):
        stream = real_open(e, offset, length)
        opened.append(offset)
        if len(opened) == 3:
            with open(src_root / "big.bin", "ab") as f:
                f.write(b"more")
        return stream

    source.open = open_and_grow
    result = transferer(source, dest, parts_in_parallel=1).copy(entry, state)
    assert result.outcome == Outcome.CHECK_FAILED and result.detail.startswith("SIZE_NOT_MATCH")
    assert dest.calls["abort"] == 1 and "big.bin" not in dest.objects
    assert checkpoints(state) == []


def test_corrupt_part_is_retried_then_check_failed(src_root, state):
    big_file(src_root)
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    dest.corrupt.add("upload_part")
    result = transferer(source, dest, max_attempts=2).copy(entry_for(source, "big.bin"), state)
    assert result.outcome == Outcome.CHECK_FAILED and "CRC64_NOT_MATCH" in result.detail
    assert "big.bin" not in dest.objects


def test_multipart_md5_and_headers(src_root, state):
    data = big_file(src_root, key="movie.mp4")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    assert transferer(source, dest, record_md5=True).copy(entry_for(source, "movie.mp4"), state).ok
    headers = dest.objects["movie.mp4"][1]
    assert headers["x-oss-meta-md5"] == hashlib.md5(data).hexdigest()
    assert headers["Content-Type"] == "video/mp4"


# --------------------------------------------------------------------------- audit

def test_audit_modes(src_root, state):
    data = big_file(src_root, key="a", size=3000)
    write(src_root, "missing", b"x")
    source, dest = LocalSource(str(src_root) + "/"), MemoryDestination()
    t = transferer(source, dest, record_md5=True)
    assert t.copy(entry_for(source, "a"), state).ok
    for mode in ("simple", "general", "detailed"):
        assert t.audit(entry_for(source, "a"), mode).outcome == Outcome.SUCCEED, mode
    assert t.audit(entry_for(source, "missing"), "simple").outcome == Outcome.CHECK_FAILED
    # Same size, different bytes: only a detailed audit sees it.
    dest.objects["a"] = (bytes(reversed(data)), dest.objects["a"][1])
    assert t.audit(entry_for(source, "a"), "general").outcome == Outcome.SUCCEED
    result = t.audit(entry_for(source, "a"), "detailed")
    assert result.outcome == Outcome.CHECK_FAILED and result.detail.startswith("CRC64_NOT_MATCH")
    dest.objects["a"] = (data[:10], {})
    assert t.audit(entry_for(source, "a"), "simple").detail.startswith("SIZE_NOT_MATCH")


# --------------------------------------------------------------------------- against the emulator

# The session's emulator and a fresh bucket of it (tests/conftest.py); the bucket fixture clears the
# faults a test set.
def uploads_counted(emulator):
    return emulator.stats()["by_operation"].get("UploadPart", 0)


@pytest.fixture
def oss_dest(emulator, bucket):
    from ossimport_dist.storage import open_destination
    dest = open_destination("oss", domain=emulator.endpoint, bucket=bucket.bucket_name, prefix="job/",
                            access_key=emulator.key_id, secret_key=emulator.secret)
    yield dest
    dest.close()


def stored(bucket, key):
    return bucket.get_object("job/" + key).read()


ODD_KEYS = ["plain.txt", "sp ace/and+plus.txt", "hash#and%25percent", "\u00fcml\u00e4ut/\u4e2d\u6587.txt",
            "q?x=1&y=2", "tilde~/\U0001f600.bin", "empty"]


def test_emulator_small_objects_with_odd_keys_arrive_verified(bucket, oss_dest, src_root, state):
    contents = {key: (b"" if key == "empty" else os.urandom(100 + i)) for i, key in enumerate(ODD_KEYS)}
    for key, data in contents.items():
        write(src_root, key, data)
    source = LocalSource(str(src_root) + "/")
    t = transferer(source, oss_dest, record_md5=True)
    for entry in source.list():
        result = t.copy(entry, state)
        assert result.outcome == Outcome.SUCCEED, (entry.key, result.detail)
    for key, data in contents.items():
        assert stored(bucket, key) == data, key
        head = oss_dest.head(key)
        assert (head.size, head.crc64, head.md5) == (len(data), crc64.crc64(data),
                                                     hashlib.md5(data).hexdigest())
    assert oss_dest.head("plain.txt").headers["content-type"] == "text/plain"
    for mode in ("simple", "general", "detailed"):
        assert all(t.audit(e, mode).ok for e in source.list()), mode


def test_emulator_multipart_resumes_with_only_missing_parts(emulator, bucket, oss_dest, src_root, state):
    data = big_file(src_root, size=2 * MIB + 77)  # 9 parts of 256 KiB
    source = LocalSource(str(src_root) + "/")
    entry = entry_for(source, "big.bin")

    class Crash(Exception):
        pass

    real_upload = oss_dest.upload_part
    done = []

    def upload_then_crash(*args):
        if len(done) == 4:
            raise Crash()  # the worker process "dies" here
        done.append(args[2])
        return real_upload(*args)

    oss_dest.upload_part = upload_then_crash
    assert transferer(source, oss_dest, parts_in_parallel=1).copy(entry, state).outcome == Outcome.FAILED
    del oss_dest.upload_part
    assert len(checkpoints(state)) == 1

    before = uploads_counted(emulator)
    result = transferer(source, oss_dest, parts_in_parallel=3).copy(entry, state)
    assert result.outcome == Outcome.SUCCEED, result.detail
    assert uploads_counted(emulator) - before == 9 - 4
    assert stored(bucket, "big.bin") == data
    assert oss_dest.head("big.bin").crc64 == crc64.crc64(data)
    assert checkpoints(state) == []


def test_emulator_injected_failures_are_retried_to_a_verified_copy(emulator, bucket, oss_dest, src_root, state):
    files = {f"f{i:02d}": os.urandom(3000 + i) for i in range(30)}
    for key, data in files.items():
        write(src_root, key, data)
    big = big_file(src_root, size=1 * MIB + 3)
    source = LocalSource(str(src_root) + "/")
    faults_before = sum(emulator.stats()["faults_injected"].values())
    emulator.set_faults("500:0.2,reset:0.1,throttle:0.05")
    t = transferer(source, oss_dest, max_attempts=8)
    results = [t.copy(entry, state) for entry in source.list()]
    emulator.set_faults(None)
    assert [r.key for r in results if not r.ok] == []
    for key, data in files.items():
        assert oss_dest.head(key).crc64 == crc64.crc64(data)
    assert stored(bucket, "big.bin") == big
    assert sum(emulator.stats()["faults_injected"].values()) > faults_before


def test_emulator_file_changed_while_uploading(emulator, oss_dest, src_root, state):
    big_file(src_root, size=1 * MIB + 1)
    source = LocalSource(str(src_root) + "/")
    entry = entry_for(source, "big.bin")
    with open(src_root / "big.bin", "ab") as f:
        f.write(b"appended after listing")
    result = transferer(source, oss_dest).copy(entry, state)
    assert result.outcome == Outcome.CHECK_FAILED and result.detail.startswith("SIZE_NOT_MATCH")
    assert oss_dest.head("big.bin") is None or oss_dest.head("big.bin").size != entry.size


def test_emulator_wrong_secret_and_bucket_stop_the_job_naming_the_fix(emulator, bucket, src_root, state):
    from ossimport_dist.storage import open_destination
    write(src_root, "f", b"x")
    source = LocalSource(str(src_root) + "/")
    secret = "definitely-not-the-secret-42"
    bad = open_destination("oss", domain=emulator.endpoint, bucket=bucket.bucket_name, prefix="",
                           access_key=emulator.key_id, secret_key=secret)
    with pytest.raises(DestinationError) as err:
        transferer(source, bad).copy(entry_for(source, "f"), state)
    message = str(err.value)
    assert secret not in message and "destSecretKey" in message and emulator.endpoint in message
    with pytest.raises(DestinationError) as err:  # isSkipExistFile starts with a HEAD
        transferer(source, bad, skip_existing=True).copy(entry_for(source, "f"), state)
    assert secret not in str(err.value) and "destSecretKey" in str(err.value)
    missing = open_destination("oss", domain=emulator.endpoint, bucket="no-such-bucket", prefix="",
                               access_key=emulator.key_id, secret_key=emulator.secret)
    with pytest.raises(DestinationError, match="'no-such-bucket'.*does not exist"):
        transferer(source, missing).copy(entry_for(source, "f"), state)
