"""The OSS emulator keeps its hands off what it did not create in its data directory."""

from __future__ import annotations

import secrets

import oss2
import pytest

from oss_emulator import start_process


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "oss-data"
    data.mkdir()
    return data


def _start(data_dir):
    secret = "emu-" + secrets.token_hex(8)
    handle = start_process(str(data_dir), "hostile-id", secret)
    return handle, oss2.Auth("hostile-id", secret)


def test_put_bucket_over_a_folder_that_is_not_a_bucket_leaves_it_alone(data_dir):
    victim = data_dir / "victim"
    (victim / "deep").mkdir(parents=True)
    (victim / "deep" / "precious.txt").write_bytes(b"not the emulator's")
    (data_dir / "plainfile").write_bytes(b"a file named like a bucket")
    handle, auth = _start(data_dir)
    try:
        for name in ("victim", "plainfile"):
            with pytest.raises(oss2.exceptions.OssError) as err:
                oss2.Bucket(auth, handle.endpoint, name).create_bucket()
            assert err.value.status == 409 and err.value.code == "BucketAlreadyExists"
            assert f"named {name} that is not a bucket" in err.value.message
        assert (victim / "deep" / "precious.txt").read_bytes() == b"not the emulator's"
        assert (data_dir / "plainfile").read_bytes() == b"a file named like a bucket"
        # An empty folder holds nothing: it may become the bucket.
        (data_dir / "emptyone").mkdir()
        fresh = oss2.Bucket(auth, handle.endpoint, "emptyone")
        fresh.create_bucket()
        fresh.put_object("k", b"v")
        assert fresh.get_object("k").read() == b"v"
        # The bucket that exists is still refused as OSS refuses it, and keeps its object.
        with pytest.raises(oss2.exceptions.OssError) as err:
            fresh.create_bucket()
        assert err.value.status == 409
        assert fresh.get_object("k").read() == b"v"
        assert not [p.name for p in data_dir.iterdir() if p.name.startswith(".staging-")]
    finally:
        handle.stop()


def test_leftovers_of_its_own_crashes_are_swept_and_never_loaded_as_buckets(data_dir):
    (data_dir / ".staging-0123abcd" / "obj").mkdir(parents=True)
    (data_dir / ".staging-0123abcd" / "bucket.json").write_text('{"created": 1}')
    (data_dir / ".trash-89ef" / "obj").mkdir(parents=True)
    handle, auth = _start(data_dir)
    try:
        names = [b.name for b in oss2.Service(auth, handle.endpoint).list_buckets().buckets]
        assert names == []
        assert sorted(p.name for p in data_dir.iterdir()) == []
    finally:
        handle.stop()
