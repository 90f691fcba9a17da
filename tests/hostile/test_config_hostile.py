"""Hostile configuration stories: a workingDir that cannot be one, a workers file with a byte
that is not UTF-8, sys.properties warnings that used to be computed and never shown, a local
destination that overlaps its source, key prefixes that climb or double their slashes, and a
password inside a domain that must not reach the logs."""

from __future__ import annotations

import os
import stat as stat_mod

import pytest

from conftest import assert_migrated, one_error_line, write_tree

SEGMENTS_FIX = "write folder names separated by single '/', e.g. {key}=backup/2024/"
OVERLAP_FIX = ("the copy would read what it writes: choose a destDomain outside srcPrefix, "
               "and srcPrefix outside destDomain")


def line_of(path, key) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.startswith(key + "="))


def tree(root) -> list:
    """Every path under root, to show that a refused command wrote or removed nothing there."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- workingDir --------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["a regular file", "under a regular file"])
@pytest.mark.parametrize("command", ["submit", "start", "retry"])
def test_working_dir_that_cannot_be_a_directory_is_one_line(migration, where, command):
    write_tree(migration.src, {"a.txt": b"a"})
    blocker = migration.dir / "not-a-dir"
    blocker.write_bytes(b"operator data\n")
    working = blocker if where == "a regular file" else blocker / "work"
    migration.write_conf(sys_props={"workingDir": str(working)})
    args = [command, str(migration.job_file)] if command == "submit" else [command]
    r = migration.console(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert one_error_line(r) == (
        f"error: {migration.sys_file}:1: workingDir: '{working}' is not a writable directory "
        f"({working / 'logs'}: Not a directory); set workingDir to a directory this user can create and write")
    assert r.stdout == ""
    assert blocker.read_bytes() == b"operator data\n"
    assert tree(migration.dir) == sorted(["conf", "conf/sys.properties", "conf/local_job.cfg", "src", "src/a.txt",
                                          "not-a-dir"])


# -- workers.txt -------------------------------------------------------------------------------
def test_workers_file_with_a_byte_not_utf8_is_one_line_for_every_command(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    workers = migration.dir / "workers.txt"
    workers.write_bytes(b"# the fleet\n127.0.0.11\n\xff127.0.0.12\n")
    expected = (f"error: {workers}:3: byte 0xff is not valid UTF-8; save the file as UTF-8; "
                f"a host name is plain ASCII")
    for args in (["stat"], ["start"], ["stop"], ["clean", "local_test"], ["clean"], ["submit"], ["deploy"]):
        r = migration.console(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert one_error_line(r) == expected, args
        assert (migration.job_dir / "job.cfg").is_file(), args
    assert not (migration.work / "master" / "ossimport.pid").exists()


# -- sys.properties warnings -------------------------------------------------------------------
def test_sys_properties_warnings_are_shown_at_submit_and_start(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    sys_file = migration.sys_file
    sys_file.write_bytes(f"workingDir={migration.work}\n".encode() + b"workerTaskThreadnum=4\n"
                         b"jobName=other_job\n# caf\xe9 au lait\n")
    warnings = [
        f"warning: {sys_file}:4: not valid UTF-8; read the file as ISO-8859-1 (save it as UTF-8 if non-ASCII "
        f"paths look wrong)",
        f"warning: {sys_file}:2: unknown key 'workerTaskThreadnum' ignored; did you mean 'workerTaskThreadNum'?",
        f"warning: {sys_file}:3: unknown key 'jobName' ignored; it belongs in the job file",
    ]
    r = migration.console("submit", str(migration.job_file))
    assert r.returncode == 0 and r.stdout.strip() == "submit job:local_test success!", r.stderr
    assert r.stderr.strip().splitlines() == warnings
    r = migration.console("start")
    assert r.returncode == 0 and r.stdout.startswith("service started"), r.stderr
    assert r.stderr.strip().splitlines() == warnings
    assert "Traceback" not in r.stdout + r.stderr
    r = migration.console("stat")
    assert r.returncode in (0, 3) and r.stderr == ""  # said where it matters, not on every stat


# -- a local destination and its source -----------------------------------------------------------
def overlap_cases(migration):
    src = str(migration.src)
    link = migration.dir / "link-into-src"
    link.symlink_to(migration.src / "inner")
    real_inner = os.path.realpath(migration.src / "inner")
    return [
        (src, f"'{src}' is the same directory as srcPrefix '{src}/'"),
        (f"{src}/backup", f"'{src}/backup' is inside srcPrefix '{src}/'"),
        (str(migration.dir), f"'{migration.dir}' contains srcPrefix '{src}/'"),
        (str(link), f"'{link}' is inside srcPrefix '{src}/' (resolved: destDomain '{real_inner}', "
                    f"srcPrefix '{os.path.realpath(src)}')"),
        (f"file://{src}/", f"'file://{src}/' is the same directory as srcPrefix '{src}/'"),
    ]


def test_local_destination_overlapping_its_source_is_refused_at_submit(migration):
    write_tree(migration.src, {"a.txt": b"a", "inner/b.txt": b"b"})
    for dest, problem in overlap_cases(migration):
        migration.write_conf(job_props={"destType": "local", "destDomain": dest})
        before = tree(migration.dir)
        r = migration.console("submit", str(migration.job_file))
        assert r.returncode == 2, (dest, r.stdout, r.stderr)
        line = line_of(migration.job_file, "destDomain")
        assert one_error_line(r) == f"error: {migration.job_file}:{line}: destDomain: {problem}; {OVERLAP_FIX}"
        assert tree(migration.dir) == before
        assert not migration.work.exists()


def test_local_destination_beside_its_source_is_accepted(migration, tmp_path):
    write_tree(migration.src, {"a.txt": b"a"})
    # A sibling whose name starts like the source's is outside it.
    dest = migration.dir / (migration.src.name + "-copy")
    dest.mkdir()
    migration.write_conf(job_props={"destType": "local", "destDomain": str(dest)})
    assert migration.ok("submit", str(migration.job_file)).strip() == "submit job:local_test success!"


# -- key prefixes --------------------------------------------------------------------------------
BAD_PREFIXES = [
    ("a/../../b/", "a '..' segment"),
    ("..", "a '..' segment"),
    ("a//b/", "an empty segment ('//')"),
    ("./x/", "a '.' segment"),
    ("x/./y", "a '.' segment"),
]


@pytest.mark.parametrize("dest", ["oss", "local", "s3"])
def test_dest_prefix_that_climbs_or_doubles_slashes_is_refused_for_every_destination(migration, emulator, dest):
    write_tree(migration.src, {"a.txt": b"a"})
    out = migration.dir / "out"
    out.mkdir()
    dest_props = {"oss": {}, "local": {"destType": "local", "destDomain": str(out)},
                  "s3": {"destType": "s3", "destDomain": emulator.endpoint}}[dest]
    for prefix, problem in BAD_PREFIXES:
        migration.write_conf(job_props={**dest_props, "destPrefix": prefix})
        before = tree(migration.dir)
        r = migration.console("submit", str(migration.job_file))
        assert r.returncode == 2, (prefix, r.stdout, r.stderr)
        line = line_of(migration.job_file, "destPrefix")
        assert one_error_line(r) == (f"error: {migration.job_file}:{line}: destPrefix: has {problem} "
                                     f"(got '{prefix}'); " + SEGMENTS_FIX.format(key="destPrefix"))
        assert tree(migration.dir) == before
    assert list(migration.bucket.list_objects().object_list) == []


def test_src_prefix_of_an_object_store_source_that_climbs_is_refused(migration, emulator):
    migration.write_conf(job_props={"srcType": "oss", "srcDomain": emulator.endpoint,
                                    "srcBucket": migration.bucket.bucket_name, "srcAccessKey": emulator.key_id,
                                    "srcSecretKey": emulator.secret, "destPrefix": "copied/"})
    for prefix, problem in BAD_PREFIXES + [("/a//b/", "an empty segment ('//')")]:
        migration.write_conf(job_props={"srcType": "oss", "srcDomain": emulator.endpoint,
                                        "srcBucket": migration.bucket.bucket_name, "srcPrefix": prefix})
        r = migration.console("submit", str(migration.job_file))
        assert r.returncode == 2, (prefix, r.stdout, r.stderr)
        line = line_of(migration.job_file, "srcPrefix")
        assert one_error_line(r) == (f"error: {migration.job_file}:{line}: srcPrefix: has {problem} "
                                     f"(got '{prefix}'); " + SEGMENTS_FIX.format(key="srcPrefix"))
        assert not migration.work.exists()


# -- a password inside a domain ------------------------------------------------------------------
def test_password_in_dest_domain_never_reaches_logs_and_logs_are_private(migration, emulator):
    files = {"a.txt": b"a", "d/b.txt": b"bb"}
    write_tree(migration.src, files)
    password = "Pa55w0rd-in-url"
    domain = emulator.endpoint.replace("://", f"://admin:{password}@")
    migration.write_conf(job_props={"destDomain": domain})
    # A log left world-readable by an older version is tightened, its lines kept.
    log = migration.work / "logs" / "ossimport2.log"
    log.parent.mkdir(parents=True)
    log.write_text("an older line\n")
    os.chmod(log, 0o644)

    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Succeed"
    migration.ok("stop")
    assert_migrated(migration.bucket, files)

    text = log.read_text()
    assert text.startswith("an older line\n")
    assert f"-> {emulator.endpoint.replace('://', '://admin:******@')}/{migration.bucket.bucket_name})" in text
    logs = sorted(migration.work.joinpath("logs").iterdir())
    assert [p.name for p in logs] == ["ossimport2.log", "submit.log"]
    for p in logs:
        assert password not in p.read_text(), p
        assert stat_mod.S_IMODE(p.stat().st_mode) == 0o600, p

    # A bad domain with a password: the message quotes the domain, never the password.
    migration.write_conf(job_props={"destDomain": domain + "/bucket-path"})
    r = migration.console("submit", str(migration.job_file))
    assert r.returncode == 2
    assert "admin:******@" in one_error_line(r) and password not in r.stderr


# -- the job file itself -------------------------------------------------------------------------
def test_a_job_file_that_is_a_fifo_a_folder_or_huge_is_refused_without_waiting(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    fifo = migration.dir / "job.fifo"
    os.mkfifo(fifo)  # nobody writes it: opening it the plain way would wait forever
    huge = migration.dir / "huge.cfg"
    with open(huge, "wb") as f:
        f.truncate(2 * 1024 * 1024)
    cases = [
        (fifo, f"error: {fifo}: cannot read the file (not a regular file); pass the path of the properties file"),
        (migration.src, f"error: {migration.src}: cannot read the file (a directory); pass the path of the "
                        f"properties file"),
        (huge, f"error: {huge}: 2097152 bytes, more than a configuration file holds (at most 1m); pass the path "
               f"of the properties file"),
    ]
    for path, expected in cases:
        r = migration.console("submit", str(path), timeout=20)
        assert r.returncode == 2, (path, r.stdout, r.stderr)
        assert one_error_line(r) == expected
        assert not migration.work.exists()
    # sys.properties itself, the file every command reads first.
    migration.sys_file.unlink()
    os.mkfifo(migration.sys_file)
    r = migration.console("stat", timeout=20)
    assert r.returncode == 2
    assert one_error_line(r) == (f"error: {migration.sys_file}: cannot read the file (not a regular file); "
                                 f"pass the path of the properties file")


def test_scrub_passwords_keeps_the_user_and_host_and_hides_only_the_password():
    from ossimport_dist.config import scrub_passwords

    assert scrub_passwords("loaded (local -> http://admin:s3cr:et@oss.example.com/bkt)") == \
        "loaded (local -> http://admin:******@oss.example.com/bkt)"
    assert scrub_passwords("HTTPS://u:p@h:8080 and s3://k:v@bucket/x") == \
        "HTTPS://u:******@h:8080 and s3://k:******@bucket/x"
    assert scrub_passwords("http://user@host/ and user:pass without a scheme") == \
        "http://user@host/ and user:pass without a scheme"
    assert scrub_passwords("http://:only-password@host") == "http://:******@host"
