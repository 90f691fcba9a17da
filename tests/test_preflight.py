"""Preflight: a job that cannot work is refused before anything is copied.

At ``console.sh submit`` (and at ``start`` of a job that has not copied yet, and so at
``import.sh``) the destination and the source are each asked one cheap read. A wrong secret, a
missing bucket, a dead endpoint, a source that refuses its keys, a URL list whose first URL is
dead or whose first lines do not parse: one line naming the key, the store and the fix, exit 2,
no job folder, no service, nothing at the destination. ``--no-preflight`` goes on anyway.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid

import oss2
import pytest

from conftest import ROOT, Migration, assert_migrated, dest_objects, one_error_line, process_cmdlines, write_tree

pytest_plugins = ["azurite", "s3servers"]

FILES = {"a.txt": b"alpha\n", "sub/b.bin": b"\x00\x01" * 500}


def dead_endpoint() -> str:
    """A loopback URL nothing listens on: a port bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def key_line(migration, key: str) -> int:
    """The line of ``key`` in the job file, as the operator sees it in an editor."""
    for number, line in enumerate(migration.job_file.read_text().splitlines(), start=1):
        if line.startswith(key + "="):
            return number
    raise AssertionError(f"{key} not in {migration.job_file}")


def submit_timed(migration, *args):
    started = time.monotonic()
    r = migration.console("submit", *args, str(migration.job_file), timeout=30)
    return r, time.monotonic() - started


def assert_nothing_submitted(migration) -> None:
    assert not migration.job_dir.exists(), sorted(p.name for p in migration.job_dir.iterdir())
    assert dest_objects(migration.bucket) == {}


def assert_no_service(migration) -> None:
    assert migration.service_pid() == 0
    assert str(migration.work) not in process_cmdlines()


# (job keys changed, the key the line names, words of the problem)
BROKEN_DESTINATIONS = {
    "wrong secret": (lambda m: {"destSecretKey": "not-the-secret-7f3a"}, "destSecretKey",
                     "rejected the signature (SignatureDoesNotMatch)"),
    "missing bucket": (lambda m: {"destBucket": m.bucket.bucket_name + "-gone"}, "destBucket",
                       "does not exist: create it or fix destBucket/destDomain"),
    "dead endpoint": (lambda m: {"destDomain": dead_endpoint()}, "destDomain",
                      "refused the connection (nothing listens there)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_DESTINATIONS))
def test_a_destination_that_cannot_work_is_refused_at_submit(migration, case):
    broken, key, problem = BROKEN_DESTINATIONS[case]
    write_tree(migration.src, FILES)
    migration.write_conf(job_props=broken(migration))
    r, took = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2, r.stderr
    assert took < 10, took
    assert line.startswith("error: preflight: "), line
    assert problem in line, line
    assert f"{key}: {migration.job_file}:{key_line(migration, key)}" in line, line
    assert line.endswith("; skip this check with --no-preflight"), line
    assert "not-the-secret-7f3a" not in line and migration.secret not in line
    assert r.stdout == ""
    assert_nothing_submitted(migration)


def test_an_endpoint_that_never_answers_is_refused_within_seconds(migration):
    # It accepts connections (the kernel's backlog) and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        write_tree(migration.src, FILES)
        migration.write_conf(job_props={"destDomain": f"http://127.0.0.1:{silent.getsockname()[1]}"})
        r, took = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2, r.stderr
    assert took < 10, took
    assert line.startswith(f"error: preflight: the destination (destBucket '{migration.bucket.bucket_name}' "
                           f"at http://127.0.0.1:"), line
    assert "did not answer within 3 s" in line and "check destDomain and the network" in line, line
    assert_nothing_submitted(migration)


def test_a_5xx_gets_one_second_try_then_one_line(migration, emulator):
    write_tree(migration.src, FILES)
    migration.write_conf()
    emulator.set_faults("500:1.0:ListObjectsV2")
    before = emulator.stats()["by_operation"].get("ListObjectsV2", 0)
    r, took = submit_timed(migration)
    tries = emulator.stats()["by_operation"].get("ListObjectsV2", 0) - before
    emulator.set_faults(None)
    line = one_error_line(r)
    assert r.returncode == 2 and took < 10, (r.stderr, took)
    assert tries == 2, tries
    assert line.startswith(f"error: preflight: the destination (destBucket '{migration.bucket.bucket_name}' "
                           f"at {emulator.endpoint}) failed twice (ListObjectsV2: HTTP 500 InternalError "), line
    assert "the store is failing now: try again later" in line, line
    assert_nothing_submitted(migration)


@pytest.mark.parametrize("case", sorted(BROKEN_DESTINATIONS))
def test_import_sh_without_a_terminal_stops_at_the_same_line(migration, case):
    broken, key, problem = BROKEN_DESTINATIONS[case]
    write_tree(migration.src, FILES)
    migration.write_conf(job_props=broken(migration))
    started = time.monotonic()
    r = subprocess.run(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--yes",
                        "--interval", "0.3", str(migration.job_file)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert time.monotonic() - started < 10
    line = one_error_line(r)
    assert r.returncode == 2, r.stdout + r.stderr
    assert line.startswith("error: preflight: ") and problem in line and key in line, line
    assert "submit job" not in r.stdout and "service started" not in r.stdout, r.stdout
    assert_nothing_submitted(migration)
    assert_no_service(migration)


def test_no_preflight_submits_a_job_with_a_wrong_secret_anyway(migration):
    write_tree(migration.src, FILES)
    migration.write_conf(job_props={"destSecretKey": "not-the-secret-7f3a"})
    r, took = submit_timed(migration, "--no-preflight")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "submit job:local_test success!"
    assert "Traceback" not in r.stdout + r.stderr
    assert (migration.job_dir / "job.cfg").is_file()
    assert dest_objects(migration.bucket) == {}


@pytest.fixture
def lone_emulator(tmp_path):
    """An emulator of this test's own, so its request counter counts this job's requests only."""
    from oss_emulator import start_process

    handle = start_process(str(tmp_path / "lone-oss"), "lone-key", "lone-secret-5d1c")
    yield handle
    handle.stop()


def test_the_good_case_costs_one_read_and_no_write(tmp_path, lone_emulator):
    bucket = oss2.Bucket(oss2.Auth("lone-key", "lone-secret-5d1c"), lone_emulator.endpoint, "b-lone")
    bucket.create_bucket()
    m = Migration(dir=tmp_path / "job", src=tmp_path / "job" / "src", bucket=bucket,
                  key_id="lone-key", secret="lone-secret-5d1c")
    write_tree(m.src, FILES)
    m.write_conf(job_props={"destPrefix": "in/"})
    before = lone_emulator.stats()
    r = m.console("submit", str(m.job_file), timeout=30)
    after = lone_emulator.stats()
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "submit job:local_test success!"
    assert "Traceback" not in r.stdout + r.stderr
    assert after["requests"] - before["requests"] == 1, (before, after)
    assert after["by_operation"].get("ListObjectsV2", 0) - before["by_operation"].get("ListObjectsV2", 0) == 1
    assert dest_objects(bucket) == {}


# ----------------------------------------------------------------------- start checks again

def test_start_checks_a_job_not_started_again_and_starts_no_service(migration):
    write_tree(migration.src, FILES)
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    # Between submit and start the bucket goes away (emptied and deleted by its owner).
    migration.bucket.delete_bucket()
    r = migration.console("start", timeout=30)
    line = one_error_line(r)
    assert r.returncode == 2, r.stdout + r.stderr
    frozen = migration.job_dir / "job.cfg"
    assert line.startswith(f"error: preflight: destBucket '{migration.bucket.bucket_name}' at "), line
    assert "does not exist" in line and f"destBucket: {frozen}:" in line, line
    assert line.endswith("the service was not started; skip this check with --no-preflight"), line
    assert r.stdout == ""
    assert_no_service(migration)
    assert migration.task_dirs("succeed_tasks") == [] and migration.task_dirs("failed_tasks") == []
    migration.bucket.create_bucket()  # the owner makes it again: start goes on, and copies
    migration.ok("start")
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"
    assert_migrated(migration.bucket, FILES)


def test_a_job_that_has_copied_is_not_checked_again_at_start(migration):
    write_tree(migration.src, FILES)
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"
    migration.ok("stop")
    assert_migrated(migration.bucket, FILES)
    # A job that has copied keeps its own account of failures; start is not the place for a check.
    for key in list(dest_objects(migration.bucket)):
        migration.bucket.delete_object(key)
    migration.bucket.delete_bucket()
    r = migration.console("start", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("service started (pid "), r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    assert migration.service_pid() != 0
    migration.bucket.create_bucket()


def test_start_no_preflight_starts_a_job_whose_bucket_is_gone(migration):
    write_tree(migration.src, FILES)
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    migration.bucket.delete_bucket()
    r = migration.console("start", "--no-preflight", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("service started (pid "), r.stdout
    assert migration.service_pid() != 0
    migration.ok("stop")
    migration.bucket.create_bucket()


# ----------------------------------------------------------------------------- the source

def test_an_s3_source_with_a_wrong_secret_is_refused_at_submit(migration, moto_auth_server):
    s3_bucket = moto_auth_server.new_bucket()
    moto_auth_server.client().put_object(Bucket=s3_bucket, Key="exports/a.txt", Body=b"a")
    migration.write_conf(job_props={
        "srcType": "s3", "srcDomain": moto_auth_server.endpoint, "srcBucket": s3_bucket,
        "srcAccessKey": moto_auth_server.access_key, "srcSecretKey": "wrong-s3-secret-91",
        "srcPrefix": "exports/"})
    r, took = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2, r.stderr
    assert took < 10, took
    assert line.startswith(f"error: preflight: srcBucket '{s3_bucket}' at {moto_auth_server.endpoint} "), line
    assert "fix srcSecretKey" in line, line
    assert f"srcSecretKey: {migration.job_file}:{key_line(migration, 'srcSecretKey')}" in line, line
    assert "wrong-s3-secret-91" not in line and moto_auth_server.secret_key not in line
    assert_nothing_submitted(migration)


def test_an_s3_source_with_good_keys_passes_and_copies(migration, moto_auth_server):
    s3_bucket = moto_auth_server.new_bucket()
    client = moto_auth_server.client()
    for key, data in FILES.items():
        client.put_object(Bucket=s3_bucket, Key="exports/" + key, Body=data)
    migration.write_conf(job_props={
        "srcType": "s3", "srcDomain": moto_auth_server.endpoint, "srcBucket": s3_bucket,
        "srcAccessKey": moto_auth_server.access_key, "srcSecretKey": moto_auth_server.secret_key,
        "srcPrefix": "exports/"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"
    assert_migrated(migration.bucket, FILES)


def url_list_job(migration, lines: list) -> dict:
    url_list = migration.dir / "urls.list"
    url_list.write_text("".join(line + "\n" for line in lines))
    return {"srcType": "http", "httpListFilePath": str(url_list), "srcPrefix": ""}


def test_a_url_list_whose_first_url_is_dead_is_refused(migration):
    dead = dead_endpoint()
    migration.write_conf(job_props=url_list_job(migration, [f"{dead}/ a.txt"]))
    r, took = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2 and took < 10, (r.stderr, took)
    assert line.startswith(f"error: preflight: the source (first URL of httpListFilePath "
                           f"{migration.dir / 'urls.list'}, {dead}/a.txt,) refused the connection "
                           f"(nothing listens there) (httpListFilePath: {migration.job_file}:"), line
    assert "check the URL's host and port in httpListFilePath and that the server is up" in line, line
    assert_nothing_submitted(migration)


def test_a_url_list_whose_first_url_is_404_is_refused_and_one_that_answers_copies(migration, web_root):
    write_tree(web_root.root, {"here.txt": b"here\n"})
    migration.write_conf(job_props=url_list_job(migration, [f"{web_root.base}/ missing.txt",
                                                            f"{web_root.base}/ here.txt"]))
    r, _ = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2, r.stderr
    assert line == (f"error: preflight: the first URL of httpListFilePath {migration.dir / 'urls.list'} "
                    f"(line 1), {web_root.base}/missing.txt, is not there (HTTP 404 or 410): fix the "
                    f"list or the server; skip this check with --no-preflight"), line
    assert_nothing_submitted(migration)
    write_tree(web_root.root, {"missing.txt": b"now published\n"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"
    assert_migrated(migration.bucket, {"missing.txt": b"now published\n", "here.txt": b"here\n"})


def test_a_url_list_whose_first_lines_do_not_parse_is_refused(migration, web_root):
    url_list = migration.dir / "urls.list"
    migration.write_conf(job_props=url_list_job(migration, [f"{web_root.base}/ a.txt", "onlyonecolumn"]))
    r, _ = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2, r.stderr
    assert line.startswith(f"error: preflight: Unknown http list file format: {url_list}:2: "
                           f"1 column(s), need 2"), line
    assert_nothing_submitted(migration)


def test_a_key_list_whose_first_line_does_not_parse_is_refused(migration):
    write_tree(migration.src, FILES)
    manifest = migration.dir / "keys.list"
    manifest.write_bytes(b"a.txt\t\nsub/b.bin\n")
    migration.write_conf(job_props={"srcType": "list", "listFilePath": str(manifest),
                                    "listSrcType": "local"})
    r, _ = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2, r.stderr
    assert line == (f"error: preflight: Unknown list file format: {manifest}:1: TAB with nothing after "
                    f"it; write 'key' or 'key<TAB>size'; skip this check with --no-preflight"), line
    assert_nothing_submitted(migration)


def test_an_empty_key_list_is_refused_at_submit(migration):
    manifest = migration.dir / "keys.list"
    manifest.write_bytes(b"\n\n")
    migration.write_conf(job_props={"srcType": "list", "listFilePath": str(manifest),
                                    "listSrcType": "local"})
    r, _ = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2, r.stderr
    assert line.startswith(f"error: preflight: listFilePath {manifest} names no key"), line
    assert_nothing_submitted(migration)


def test_a_key_list_on_an_oss_source_with_a_wrong_key_is_refused(migration, emulator, bucket):
    manifest = migration.dir / "keys.list"
    manifest.write_bytes(b"a.txt\n")
    migration.write_conf(job_props={
        "srcType": "list", "listFilePath": str(manifest), "listSrcType": "oss",
        "srcDomain": emulator.endpoint, "srcBucket": bucket.bucket_name,
        "srcAccessKey": "no-such-key-id", "srcSecretKey": emulator.secret, "srcPrefix": ""})
    r, _ = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2, r.stderr
    assert line.startswith(f"error: preflight: srcBucket '{bucket.bucket_name}' at {emulator.endpoint} "
                           f"rejected srcAccessKey 'no-such-key-id' (InvalidAccessKeyId): fix srcAccessKey"), line
    assert f"srcAccessKey: {migration.job_file}:{key_line(migration, 'srcAccessKey')}" in line
    assert emulator.secret not in line
    assert_nothing_submitted(migration)


def test_an_azure_source_with_a_wrong_key_is_refused_at_submit(migration, azurite):
    container = "c-" + uuid.uuid4().hex[:12]
    azurite.service_client().create_container(container).upload_blob("a.txt", b"a")
    wrong = "d3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudC1rZXk="
    migration.write_conf(job_props={"srcType": "azure", "srcDomain": azurite.endpoint,
                                    "srcBucket": container, "srcAccessKey": azurite.account,
                                    "srcSecretKey": wrong, "srcPrefix": ""})
    r, took = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2 and took < 10, (r.stderr, took)
    assert line.startswith(f"error: preflight: container srcBucket '{container}' of account srcAccessKey "
                           f"'{azurite.account}' at {azurite.endpoint} "), line
    assert f"srcSecretKey: {migration.job_file}:{key_line(migration, 'srcSecretKey')}" in line, line
    assert wrong not in line and azurite.key not in line
    assert_nothing_submitted(migration)


@pytest.mark.parametrize("broken, words, key", [
    ({"srcSecretKey": "not-the-password-3e"}, "srcSecretKey", "srcSecretKey"),
    ({"srcPrefix": "no/such/folder/"}, "srcPrefix 'no/such/folder/' does not exist in", None),
], ids=["wrong password", "missing srcPrefix"])
def test_an_upyun_source_that_cannot_be_listed_is_refused_at_submit(migration, broken, words, key):
    from upyun_server import Tree, UpyunServer

    server = UpyunServer(Tree(FILES), "svc-pf", "op-pf", "pw-pf-secret").start()
    try:
        migration.write_conf(job_props={"srcType": "youpai", "srcDomain": server.endpoint,
                                        "srcBucket": "svc-pf", "srcAccessKey": "op-pf",
                                        "srcSecretKey": "pw-pf-secret", "srcPrefix": "", **broken})
        r, took = submit_timed(migration)
    finally:
        server.stop()
    line = one_error_line(r)
    assert r.returncode == 2 and took < 10, (r.stderr, took)
    assert line.startswith("error: preflight: ") and words in line, line
    if key:
        assert f"{key}: {migration.job_file}:{key_line(migration, key)}" in line, line
    assert "not-the-password-3e" not in line and "pw-pf-secret" not in line
    assert_nothing_submitted(migration)


def test_a_list_file_that_is_a_fifo_is_refused_without_a_hang(migration):
    fifo = migration.dir / "keys.list"
    os.mkfifo(fifo)
    migration.write_conf(job_props={"srcType": "list", "listFilePath": str(fifo), "listSrcType": "local"})
    r, took = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2 and took < 10, (r.stderr, took)
    assert line.startswith("error: ") and str(fifo) in line and "listFilePath" in line, line
    assert_nothing_submitted(migration)


def test_a_url_list_that_is_not_utf8_is_refused_naming_its_line(migration, web_root):
    url_list = migration.dir / "urls.list"
    url_list.write_bytes(f"{web_root.base}/ caf\xe9.txt\n".encode("latin-1"))
    migration.write_conf(job_props={"srcType": "http", "httpListFilePath": str(url_list), "srcPrefix": ""})
    r, _ = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2, r.stderr
    assert line == (f"error: preflight: Unknown http list file format: {url_list}:1: not valid UTF-8; save "
                    f"the list as UTF-8; skip this check with --no-preflight"), line
    assert_nothing_submitted(migration)


def test_an_s3_destination_with_a_wrong_secret_is_refused_at_submit(migration, moto_auth_server):
    write_tree(migration.src, FILES)
    s3_bucket = moto_auth_server.new_bucket()
    migration.write_conf(job_props={
        "destType": "s3", "destDomain": moto_auth_server.endpoint, "destBucket": s3_bucket,
        "destAccessKey": moto_auth_server.access_key, "destSecretKey": "wrong-s3-secret-92"})
    r, took = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2 and took < 10, (r.stderr, took)
    assert line.startswith(f"error: preflight: destBucket '{s3_bucket}' at {moto_auth_server.endpoint} "), line
    assert f"destSecretKey: {migration.job_file}:{key_line(migration, 'destSecretKey')}" in line, line
    assert "wrong-s3-secret-92" not in line and moto_auth_server.secret_key not in line
    assert not migration.job_dir.exists()
    assert moto_auth_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_a_source_whose_driver_waits_longer_than_asked_is_cut_off_by_the_bound(migration):
    # The UPYUN driver keeps its own long timeouts: the check's bound ends the wait instead.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        migration.write_conf(job_props={"srcType": "youpai", "srcBucket": "svc-pf",
                                        "srcDomain": f"http://127.0.0.1:{silent.getsockname()[1]}",
                                        "srcAccessKey": "op-pf", "srcSecretKey": "pw-pf-secret",
                                        "srcPrefix": ""})
        r, took = submit_timed(migration)
    line = one_error_line(r)
    assert r.returncode == 2, r.stderr
    assert took < 15, took  # the 9 s bound and the interpreter's start on a busy machine
    assert line.startswith("error: preflight: the source (srcBucket 'svc-pf' at http://127.0.0.1:"), line
    assert ") did not answer within " in line and "check srcDomain and the network" in line, line
    assert "pw-pf-secret" not in line
    assert_nothing_submitted(migration)
