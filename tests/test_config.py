"""An operator's conf/ files, as OssImport taught them to write them, read by config."""

import os
import re
import stat
from pathlib import Path

import pytest

from ossimport_dist import config
from ossimport_dist.config import (JobConfig, SysConfig, format_size, load_job, load_sys,
                                   parse_job_text, parse_size, parse_sys_text, redact,
                                   write_properties)
from ossimport_dist.errors import ConfigError

CONF = Path(__file__).resolve().parent.parent / "conf"
SECRET = "S3cr3tV4lu3DoNotLeak"
BASE = ("srcType=local\nsrcPrefix=/data/to/migrate/\n"
        "destDomain=http://oss-cn-hangzhou-internal.aliyuncs.com\ndestBucket=examplebucket\n"
        f"destAccessKey=LTAIexample\ndestSecretKey={SECRET}\n")


def job(extra="", base=BASE, path="conf/local_job.cfg"):
    return parse_job_text(base + extra, path)


def bad(extra, base=BASE):
    """The one-line error a bad job file gives; it must never carry the secret."""
    with pytest.raises(ConfigError) as info:
        job(extra, base)
    message = str(info.value)
    assert SECRET not in message
    assert "\n" not in message
    assert info.value.exit_code == 2
    return info.value


def line_of(text, key):
    return next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(key))


# --- defaults ---------------------------------------------------------------------------

def test_missing_keys_take_ossimport_defaults():
    cfg = job()
    assert cfg == JobConfig(src_prefix="/data/to/migrate/",
                            dest_domain="http://oss-cn-hangzhou-internal.aliyuncs.com",
                            dest_bucket="examplebucket", dest_access_key="LTAIexample",
                            dest_secret_key=SECRET, path="conf/local_job.cfg")
    assert cfg.job_name == "local_test" and cfg.job_type == "import"
    assert cfg.multipart_upload_threshold == 150 * 1024 * 1024
    assert cfg.multipart_upload_part_size == 50 * 1024 * 1024
    assert cfg.task_object_count_limit == 10000 and cfg.task_object_size_limit == 10 ** 9
    assert cfg.is_audit_after_import is True and cfg.audit_mode == "general"
    assert cfg.dest_type == "oss" and cfg.warnings == []


def test_empty_value_takes_the_default():
    cfg = job("taskObjectCountLimit=\nauditMode=\nisAuditAfterImport=\n")
    assert cfg.task_object_count_limit == 10000
    assert cfg.audit_mode == "general" and cfg.is_audit_after_import is True


def test_sys_defaults():
    cfg = parse_sys_text("", "conf/sys.properties")
    assert cfg == SysConfig(path="conf/sys.properties")
    assert cfg.worker_task_thread_num == 60 and cfg.worker_max_throughput_kbs == 100000000
    assert cfg.java_heap_max_size == 1024 * 1024 * 1024 and cfg.ssh_port == 22


def test_empty_credentials_are_allowed():
    cfg = job(base=BASE.replace(f"destSecretKey={SECRET}", "destSecretKey="))
    assert cfg.dest_secret_key == ""


# --- syntax -----------------------------------------------------------------------------

def test_java_syntax_colon_continuation_escapes_and_percent():
    text = ("srcType : local\n"
            "srcPrefix = /data/to/\\\n"
            "            migrate/\n"
            "destDomain http\\://oss-cn-hangzhou.aliyuncs.com\n"
            "destBucket=examplebucket\n"
            "destPrefix=caf\\u00e9/100%/\n"
            "! a Java comment\n"
            "cdnDomain=http://cdn.example.com/%20x\n")
    cfg = parse_job_text(text)
    assert cfg.src_prefix == "/data/to/migrate/"
    assert cfg.dest_domain == "http://oss-cn-hangzhou.aliyuncs.com"
    assert cfg.dest_prefix == "café/100%/"
    assert cfg.cdn_domain == "http://cdn.example.com/%20x"
    assert cfg.key_lines["destBucket"] == 5  # continued line counted


def test_line_numbers_count_continued_lines_and_crlf():
    text = BASE.replace("\n", "\r\n") + "destPrefix=a\\\r\n  b\r\nscanThreadCount=99\r\n"
    with pytest.raises(ConfigError) as info:
        parse_job_text(text, "job.cfg")
    assert str(info.value).startswith("job.cfg:9: scanThreadCount: must be from 1 to 32")


def test_keys_are_case_sensitive_and_unknown_keys_warn_with_suggestion():
    cfg = job("srcprefix=/x/\nfooBar=1\nmultipartUploadPartsize=10m\n")
    assert cfg.src_prefix == "/data/to/migrate/"
    assert cfg.warnings == [
        "conf/local_job.cfg:7: unknown key 'srcprefix' ignored; did you mean 'srcPrefix'?",
        "conf/local_job.cfg:8: unknown key 'fooBar' ignored",
        "conf/local_job.cfg:9: unknown key 'multipartUploadPartsize' ignored; "
        "did you mean 'multipartUploadPartSize'?",
    ]


def test_key_of_the_other_file_is_named():
    cfg = job("workerTaskThreadNum=30\n")
    assert cfg.warnings == ["conf/local_job.cfg:7: unknown key 'workerTaskThreadNum' ignored; "
                            "it belongs in sys.properties"]


def test_missing_required_key_points_at_its_miscased_spelling():
    base = BASE.replace("destBucket=examplebucket\n", "destbucket=examplebucket\n")
    err = bad("", base)
    assert err.key == "destBucket"
    assert "conf/local_job.cfg:4 spells it differently" in str(err)


def test_duplicate_key_last_wins_with_warning():
    cfg = job("scanThreadCount=4\nscanThreadCount=8\n")
    assert cfg.scan_thread_count == 8
    assert cfg.warnings == ["conf/local_job.cfg:8: duplicate key 'scanThreadCount'; this value "
                            "replaces the one on line 7"]


def test_duplicate_secret_warning_has_no_value():
    cfg = job("destSecretKey=other\n")
    assert cfg.dest_secret_key == "other"
    assert SECRET not in " ".join(cfg.warnings) and "other" not in " ".join(cfg.warnings)


def test_trailing_blanks_are_ignored():
    assert job("srcPrefix=/data/x/  \t\n").src_prefix == "/data/x/"


def test_bad_unicode_escape_never_quotes_the_secret():
    err = bad("", BASE.replace(f"destSecretKey={SECRET}", "destSecretKey=ab\\uZZ12" + SECRET))
    assert (err.line, err.key) == (6, "destSecretKey")
    assert "ZZ12" not in str(err) and err.__cause__ is None and err.__suppress_context__


# --- files ------------------------------------------------------------------------------

def test_missing_file_names_it_and_the_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_job(tmp_path / "nope.cfg")
    assert str(info.value).startswith(f"{tmp_path / 'nope.cfg'}: file not found; copy conf/")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_sys(tmp_path)


def test_utf8_paths_and_latin1_fallback(tmp_path):
    good = tmp_path / "utf8.cfg"
    good.write_bytes(("\ufeff" + BASE + "destPrefix=数据/\n").encode("utf-8"))
    cfg = load_job(good)
    assert cfg.dest_prefix == "数据/" and cfg.warnings == [] and cfg.src_type == "local"
    old = tmp_path / "latin1.cfg"
    old.write_bytes((BASE + "destPrefix=caf\xe9/\n").encode("latin-1"))
    cfg = load_job(old)
    assert cfg.dest_prefix == "café/"
    assert cfg.warnings == [f"{old}:7: not valid UTF-8; read the file as ISO-8859-1 "
                            "(save it as UTF-8 if non-ASCII paths look wrong)"]


@pytest.mark.parametrize("name", ["local_job.cfg", "job.cfg"])
def test_shipped_job_files_parse_cleanly(name):
    cfg = load_job(CONF / name)
    assert cfg.warnings == []
    assert cfg.src_type == "local" and cfg.src_prefix == "/data/to/migrate/"
    assert cfg.dest_domain == "http://oss-cn-hangzhou-internal.aliyuncs.com"
    assert set(cfg.properties()) == set(config.JOB_KEY_NAMES)
    # Every key of the reference is in the shipped file, documented.
    text = (CONF / name).read_text(encoding="utf-8")
    for key in config.JOB_KEY_NAMES:
        assert f"\n{key}=" in text, key
        assert re.search(rf"^# .*{re.escape(key)}(?!\w)", text, re.MULTILINE), key


def test_shipped_sys_properties_parse_cleanly():
    cfg = load_sys(CONF / "sys.properties")
    assert cfg.warnings == [] and cfg == SysConfig(path=str(CONF / "sys.properties"))
    text = (CONF / "sys.properties").read_text(encoding="utf-8")
    for key in config.SYS_KEY_NAMES:
        assert f"\n{key}=" in text, key
        assert re.search(rf"^# .*{re.escape(key)}(?!\w)", text, re.MULTILINE), key


def test_throughput_key_keeps_its_unit_in_the_name():
    cfg = parse_sys_text("workerMaxThroughput(KB/s)=0\nworkerMaxThroughput=5\n", "sys")
    assert cfg.worker_max_throughput_kbs == 0
    assert cfg.warnings == ["sys:2: unknown key 'workerMaxThroughput' ignored; "
                            "did you mean 'workerMaxThroughput(KB/s)'?"]
    assert cfg.properties()["workerMaxThroughput(KB/s)"] == "0"


# --- sizes ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("150m", 150 * 2 ** 20), ("50M", 50 * 2 ** 20), ("1024m", 2 ** 30), ("5g", 5 * 2 ** 30),
    ("100k", 102400), ("1000000000", 10 ** 9), ("1t", 2 ** 40), ("64MB", 64 * 2 ** 20),
    (" 7 ", 7),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "m", "1.5g", "-1m", "10x", "1 000", "５m"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size_round_trips():
    for n in (150 * 2 ** 20, 10 ** 9, 102400, 5 * 2 ** 30, 1, 0):
        assert parse_size(format_size(n)) == n
    assert format_size(150 * 2 ** 20) == "150m"


# --- one rule, one line -----------------------------------------------------------------

@pytest.mark.parametrize("extra,key,words", [
    ("jobName=ab\n", "jobName", "must be 4 to 128 letters"),
    ("jobName=my job\n", "jobName", "must be 4 to 128 letters"),
    ("jobType=copy\n", "jobType", "allowed: import, audit"),
    ("srcType=Local\n", "srcType", "case-sensitive: write srcType=local"),
    ("srcType=ftp\n", "srcType", "allowed: local, oss, qiniu"),
    ("destType=ftp\n", "destType", "allowed: oss, local, s3"),
    ("isIncremental=yes\n", "isIncremental", "must be true or false (got 'yes')"),
    ("scanThreadCount=four\n", "scanThreadCount", "must be a whole number"),
    ("scanThreadCount=33\n", "scanThreadCount", "must be from 1 to 32 (got '33')"),
    ("scanThreadCount=0\n", "scanThreadCount", "must be from 1 to 32"),
    ("maxMultiThreadScanDepth=17\n", "maxMultiThreadScanDepth", "from 1 to 16"),
    ("taskObjectCountLimit=50001\n", "taskObjectCountLimit", "from 1 to 50000"),
    ("taskObjectSizeLimit=0\n", "taskObjectSizeLimit", "at least 1"),
    ("multipartUploadPartSize=99k\n", "multipartUploadPartSize", "from 100k to 5g"),
    ("multipartUploadPartSize=6g\n", "multipartUploadPartSize", "from 100k to 5g"),
    ("multipartUploadThreshold=6g\n", "multipartUploadThreshold", "from 1 to 5g"),
    ("multipartUploadThreshold=lots\n", "multipartUploadThreshold", "must be a size"),
    ("uploadThreadNumPerLargeFile=101\n", "uploadThreadNumPerLargeFile", "from 1 to 100"),
    ("incrementalModeInterval=60\n", "incrementalModeInterval", "at least 900 seconds"),
    ("auditMode=full\n", "auditMode", "allowed: simple, general, detailed"),
    ("importSince=-1\n", "importSince", "at least 0"),
    ("lastModify=-5\n", "lastModify", "at least 0"),
    ("getObjectMetaMode=list\n", "getObjectMetaMode", "allowed: stat, head"),
    ("destPrefix=/backup/\n", "destPrefix", "must not start with '/'"),
    ("destPrefix=\\\\backup/\n", "destPrefix", "must not start with '\\'"),
])
def test_bad_value_is_one_line_naming_file_line_key(extra, key, words):
    err = bad(extra)
    assert str(err).startswith(f"conf/local_job.cfg:7: {key}: ")
    assert words in str(err)


def test_message_shape_for_src_prefix():
    err = bad("srcPrefix=/data/x\n")
    assert str(err) == ("conf/local_job.cfg:7: srcPrefix: must end with '/' (got '/data/x'); "
                        "write it as '/data/x/'")


@pytest.mark.parametrize("prefix,words,fix", [
    ("c:\\\\data\\\\x\\\\", "use '/' as the separator", "write it as 'c:/data/x/'"),
    ("/data/x//", "exactly one '/'", "write it as '/data/x/'"),
    ("data/x/", "must be an absolute path", "write it as '/data/x/'"),
])
def test_local_src_prefix_rules(prefix, words, fix):
    err = bad(f"srcPrefix={prefix}\n")
    assert err.key == "srcPrefix" and words in str(err) and fix in str(err)


def test_local_src_prefix_accepts_windows_and_root():
    assert job("srcPrefix=c:/x/\n").src_prefix == "c:/x/"
    assert job("srcPrefix=/\n").src_prefix == "/"


def test_local_src_prefix_required():
    err = bad("", BASE.replace("srcPrefix=/data/to/migrate/\n", ""))
    assert str(err).startswith("conf/local_job.cfg: srcPrefix: required for srcType=local")


def test_cloud_sources():
    base = BASE.replace("srcType=local\nsrcPrefix=/data/to/migrate/\n",
                        "srcType=s3\nsrcPrefix=\nsrcBucket=src-bucket\n")
    assert job(base=base).src_prefix == ""
    err = bad("", base.replace("srcBucket=src-bucket\n", "srcBucket=\n"))
    assert (err.key, err.line) == ("srcBucket", 3) and "required for srcType=s3" in str(err)
    cos = base.replace("srcType=s3", "srcType=cos")
    assert job(base=cos).src_prefix == "/"
    assert job("srcPrefix=/dir/\n", cos).src_prefix == "/dir/"
    err = bad("srcPrefix=dir/\n", cos)
    assert "for cos must start and end with '/'" in str(err) and "'/dir/'" in str(err)
    oss = base.replace("srcType=s3", "srcType=oss")
    err = bad("srcDomain=http://src-bucket.oss-cn-beijing.aliyuncs.com\n", oss)
    assert err.key == "srcDomain" and "bucket name inside the endpoint" in str(err)


def test_http_source_needs_the_list():
    base = BASE.replace("srcType=local", "srcType=http")
    err = bad("", base)
    assert err.key == "httpListFilePath" and "required for srcType=http" in str(err)
    assert job("httpListFilePath=/data/url.list\n", base).http_list_file_path == "/data/url.list"
    assert "absolute" in str(bad("httpListFilePath=url.list\n", base))
    assert "must differ" in str(bad("httpListFilePath=/u\nrelativePathColumn=1\n", base))


def test_youpai_cdn_needs_domain():
    base = BASE.replace("srcType=local", "srcType=youpai\nsrcBucket=svc")
    assert bad("isDownloadFromCdn=true\n", base).key == "cdnDomain"


@pytest.mark.parametrize("line,words", [
    ("destBucket=mybucket/backup", "no '/' in a bucket name"),
    ("destBucket=MyBucket", "not a valid OSS bucket name"),
    ("destBucket=", "destBucket: required"),
    ("destDomain=", "destDomain: required"),
    ("destDomain=oss-cn-hangzhou.aliyuncs.com", "must start with http:// or https://"),
    ("destDomain=http://examplebucket.oss-cn-hangzhou.aliyuncs.com",
     "bucket name inside the endpoint"),
    ("destDomain=https://oss-cn-hangzhou.aliyuncs.com/examplebucket", "has no path"),
])
def test_destination_rules(line, words):
    key = line.split("=")[0]
    base = "\n".join(ln for ln in BASE.splitlines() if not ln.startswith(key + "=")) + "\n"
    err = bad(line + "\n", base)
    assert err.key == key and words in str(err)
    assert err.line == 6


def test_bucket_in_endpoint_fix():
    err = bad("destDomain=http://examplebucket.oss-cn-hangzhou-internal.aliyuncs.com\n")
    assert "write destDomain=http://oss-cn-hangzhou-internal.aliyuncs.com" in str(err)


def test_bucket_with_folder_fix():
    err = bad("destBucket=examplebucket/backup/2024\n")
    assert "write destBucket=examplebucket and put 'backup/2024/' in destPrefix" in str(err)


def test_audit_job():
    cfg = job("jobType=audit\nlastModify=1700000000\nauditMode=detailed\n")
    assert (cfg.job_type, cfg.last_modify, cfg.audit_mode) == ("audit", 1700000000, "detailed")


def test_incremental_floor_test_override(monkeypatch):
    monkeypatch.setenv(config.TEST_MIN_INTERVAL_ENV, "2")
    assert job("isIncremental=true\nincrementalModeInterval=3\n").incremental_mode_interval == 3
    assert "at least 2 seconds" in str(bad("incrementalModeInterval=1\n"))


def test_sizes_and_booleans_in_job():
    cfg = job("multipartUploadThreshold=1g\nmultipartUploadPartSize=100k\n"
              "isSkipExistFile=TRUE\nisAuditAfterImport=False\ntaskObjectSizeLimit=2g\n")
    assert cfg.multipart_upload_threshold == 2 ** 30
    assert cfg.multipart_upload_part_size == 102400
    assert cfg.is_skip_exist_file is True and cfg.is_audit_after_import is False
    assert cfg.task_object_size_limit == 2 * 2 ** 30


@pytest.mark.parametrize("text,key,words", [
    ("workerTaskThreadNum=0", "workerTaskThreadNum", "from 1 to 1000"),
    ("workerTaskThreadNum=1001", "workerTaskThreadNum", "from 1 to 1000"),
    ("workerMaxThroughput(KB/s)=-1", "workerMaxThroughput(KB/s)", "at least 0"),
    ("sshPort=70000", "sshPort", "from 1 to 65535"),
    ("dispatcherThreadNum=0", "dispatcherThreadNum", "at least 1"),
    ("workerRecordMd5=1", "workerRecordMd5", "must be true or false"),
    ("javaHeapMaxSize=big", "javaHeapMaxSize", "must be a size"),
])
def test_sys_rules(text, key, words):
    with pytest.raises(ConfigError) as info:
        parse_sys_text(f"workerPassword={SECRET}\n{text}\n", "conf/sys.properties")
    assert str(info.value).startswith(f"conf/sys.properties:2: {key}: ")
    assert words in str(info.value) and SECRET not in str(info.value)


# --- freezing and secrets ---------------------------------------------------------------

def test_properties_round_trip_through_a_frozen_file(tmp_path):
    cfg = job("multipartUploadThreshold=1024m\ndestPrefix=备份/100%/\nisIncremental=true\n")
    frozen = tmp_path / "job.cfg"
    write_properties(frozen, cfg.properties())
    again = load_job(frozen)
    assert again.warnings == []
    assert again.properties() == cfg.properties()
    assert cfg.properties()["multipartUploadThreshold"] == "1g"
    assert again.dest_secret_key == SECRET and again.dest_prefix == "备份/100%/"


def test_write_properties_is_private_and_atomic(tmp_path):
    target = tmp_path / "sys.properties"
    target.write_text("old=1\n")
    os.chmod(target, 0o644)
    write_properties(target, {"workerPassword": SECRET, "workerMaxThroughput(KB/s)": "0"},
                     comment="frozen")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["sys.properties"]
    cfg = load_sys(target)
    assert cfg.worker_password == SECRET and cfg.worker_max_throughput_kbs == 0


def test_redact_and_repr_hide_secrets():
    cfg = job()
    shown = redact(cfg.properties())
    assert shown["destSecretKey"] == "******" and shown["srcSecretKey"] == ""
    assert shown["destAccessKey"] == "LTAIexample"
    assert SECRET not in repr(cfg)
    assert SECRET not in repr(parse_sys_text(f"workerPassword={SECRET}\n"))
    assert redact({"workerPassword": "x"}) == {"workerPassword": "******"}


def test_every_example_job_file_parses_cleanly():
    """conf/examples has one commented job file per srcType, as OssImport ships them."""
    from pathlib import Path

    from ossimport_dist.config import SRC_TYPES, load_job

    examples = sorted((Path(__file__).resolve().parents[1] / "conf" / "examples").glob("*.cfg"))
    seen = set()
    for path in examples:
        cfg = load_job(path)
        assert not cfg.warnings, (path, cfg.warnings)
        seen.add(cfg.src_type)
    missing = set(SRC_TYPES) - seen
    assert not missing, f"no example for srcType {sorted(missing)}"
