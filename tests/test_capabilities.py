"""Capabilities as data: what a driver can do is its ``Features``, what a job must say for it is
its kind's rules, and both come from the storage registry, so a new source kind is one module
and one registry line, and config, scanner and transfer ask no driver what it is."""

import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest
from conftest import one_error_line

from ossimport_dist import storage
from ossimport_dist.config import parse_job_text, parse_sys_text
from ossimport_dist.errors import ConfigError
from ossimport_dist.models import ObjectEntry, Outcome
from ossimport_dist.service import build_runtime
from ossimport_dist.storage import Features, Kind, Source, rules
from ossimport_dist.storage.base import SourceStream
from ossimport_dist.throttle import Throttle
from ossimport_dist.transfer import Backpressure

ROOT = Path(__file__).resolve().parents[1]
OSS_DEST = "destDomain=http://oss-cn-hangzhou.aliyuncs.com\ndestBucket=examplebucket\n"
S3_SOURCE = ("srcType=s3\nsrcDomain=http://127.0.0.1:9\nsrcBucket=photos\nsrcAccessKey=AK\n"
             "srcSecretKey=SK\n")
S3_DEST = ("destType=s3\ndestDomain=http://127.0.0.1:9\ndestBucket=backup\ndestAccessKey=AK\n"
           "destSecretKey=SK\n")


def transferer_for(job_text: str, sys_text: str):
    """What a worker runs a job's tasks with, built the way the service and agent build it."""
    job = parse_job_text(job_text, "conf/job.cfg")
    sys_cfg = parse_sys_text(sys_text, "conf/sys.properties")
    return build_runtime(job, sys_cfg, Throttle(), Backpressure(), "localhost").transferer


def runtime_for(job_text: str, sys_text: str):
    """(source, destination) of ``transferer_for``."""
    transferer = transferer_for(job_text, sys_text)
    return transferer.source, transferer.destination


def pool_of(driver) -> int:
    return driver.client.meta.config.max_pool_connections


# --------------------------------------------------------------------------- S3 pool size

class TestS3PoolFollowsWorkerTaskThreadNum:
    """Each task thread holds one S3 connection; the pool was 64 whatever sys.properties said."""

    @pytest.mark.parametrize("threads", [3, 200])
    def test_an_s3_source_pools_one_connection_per_task_thread(self, tmp_path, threads):
        source, _ = runtime_for(S3_SOURCE + f"destType=local\ndestDomain={tmp_path}\n",
                                f"workerTaskThreadNum={threads}\n")
        assert source.kind == "s3"
        assert pool_of(source) == threads

    def test_an_s3_destination_pools_one_connection_per_task_thread(self, tmp_path):
        _, destination = runtime_for(f"srcType=local\nsrcPrefix={tmp_path}/\n" + S3_DEST,
                                     "workerTaskThreadNum=3\n")
        assert destination.kind == "s3"
        assert pool_of(destination) == 3

    def test_a_vendor_source_on_s3_follows_it_too(self, tmp_path):
        cos = S3_SOURCE.replace("srcType=s3", "srcType=cos")
        source, _ = runtime_for(cos + f"destType=local\ndestDomain={tmp_path}\n",
                                "workerTaskThreadNum=5\n")
        assert (source.kind, pool_of(source)) == ("cos", 5)

    def test_a_list_of_s3_keys_passes_it_to_the_s3_source_it_reads(self, tmp_path):
        keys = tmp_path / "keys.list"
        keys.write_text("a.jpg\n")
        listed = S3_SOURCE.replace("srcType=s3", f"srcType=list\nlistSrcType=s3\nlistFilePath={keys}")
        (tmp_path / "out").mkdir()
        source, _ = runtime_for(listed + f"destType=local\ndestDomain={tmp_path}/out\n",
                                "workerTaskThreadNum=4\n")
        assert (source.kind, source.inner.kind, pool_of(source.inner)) == ("list", "s3", 4)


# --------------------------------------------------------------------------- a new source kind

BANKS = {"bank": {"a.txt": (b"alpha", 1_600_000_000.0), "d/b.txt": (b"bravo!", 1_600_000_100.0)}}


class MemoryStream(SourceStream, io.BytesIO):
    """A reader with neither headers nor stat_now: the SourceStream defaults stand."""


class MemorySource(Source):
    """A throwaway source kind, registered only by these tests."""

    kind = "memory"
    features = Features(lists_by_folder=False)

    def __init__(self, objects: dict):
        self.objects = objects

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        return cls(BANKS[job.src_bucket])

    def list(self, subtree="", recursive=True, start_after=None):
        for key in sorted(self.objects):
            if start_after is None or key > start_after:
                yield self.stat(key)

    def subtrees(self, subtree=""):
        return []

    def stat(self, key):
        data, mtime = self.objects[key]
        return ObjectEntry(key, len(data), mtime=mtime)

    def open(self, entry, offset=0, length=None):
        data = self.objects[entry.key][0]
        return MemoryStream(data[offset:None if length is None else offset + length])


class MemoryRules(rules.SourceRules):
    @classmethod
    def validate(cls, job):
        rules.require(job.src_bucket, "srcBucket", "name the memory bank in srcBucket")


@pytest.fixture
def memory_kind(monkeypatch):
    """srcType=memory: one registry line, naming this module's driver and rules."""
    monkeypatch.setattr(storage, "_SOURCES", MappingProxyType(
        {**storage._SOURCES, "memory": Kind(f"{__name__}:MemorySource", MemoryRules)}))


class TestANewSourceKindIsOneRegistryLine:
    def test_config_accepts_the_kind_and_runs_its_rules(self, memory_kind):
        job = parse_job_text("srcType=memory\nsrcBucket=bank\n" + OSS_DEST, "conf/job.cfg")
        assert job.src_type == "memory"
        with pytest.raises(ConfigError) as info:
            parse_job_text("srcType=memory\n" + OSS_DEST, "conf/job.cfg")
        assert str(info.value).splitlines() == [
            "conf/job.cfg: srcBucket: required for srcType=memory; name the memory bank in srcBucket"]

    def test_a_list_source_may_read_its_keys_from_the_new_kind(self, memory_kind, tmp_path):
        keys = tmp_path / "keys.list"
        keys.write_text("d/b.txt\n")
        job = parse_job_text(f"srcType=list\nlistSrcType=memory\nlistFilePath={keys}\n"
                             "srcBucket=bank\n" + OSS_DEST, "conf/job.cfg")
        source = storage.open_job_source(job)
        assert [(e.key, e.size) for e in source.list()] == [("d/b.txt", 6)]

    def test_list_cannot_read_from_list_and_the_allowed_kinds_come_from_the_registry(self, memory_kind):
        with pytest.raises(ConfigError) as info:
            parse_job_text("srcType=list\nlistSrcType=list\nlistFilePath=/k.list\n" + OSS_DEST)
        allowed = [k for k in storage._SOURCES if k != "list"]
        assert allowed[-1] == "memory"
        assert str(info.value) == (f"<text>:2: listSrcType: unknown value (got 'list'); "
                                   f"allowed: {', '.join(allowed)}")

    def test_the_new_kind_migrates_to_a_local_destination(self, memory_kind, tmp_path):
        dest = tmp_path / "dest"
        dest.mkdir()
        transferer = transferer_for(
            f"srcType=memory\nsrcBucket=bank\ndestType=local\ndestDomain={dest}\ndestPrefix=copy/\n",
            "workerTaskThreadNum=2\n")
        state = tmp_path / "state"
        state.mkdir()
        results = [transferer.copy(entry, state) for entry in transferer.source.list()]
        assert [(r.key, r.outcome) for r in results] == [("a.txt", Outcome.SUCCEED),
                                                          ("d/b.txt", Outcome.SUCCEED)]
        for key, (data, mtime) in BANKS["bank"].items():
            copied = dest / "copy" / key
            assert copied.read_bytes() == data
            # The local destination declares preserves_mtime: the source's mtime travels.
            assert os.stat(copied).st_mtime == pytest.approx(mtime, abs=1e-3)

    def test_an_unregistered_kind_is_refused_with_the_allowed_list(self):
        with pytest.raises(ConfigError) as info:
            parse_job_text("srcType=memory\nsrcBucket=bank\n" + OSS_DEST)
        assert str(info.value) == ("<text>:1: srcType: unknown value (got 'memory'); allowed: "
                                   "local, oss, qiniu, bos, ks3, s3, youpai, http, cos, azure, list")


# --------------------------------------------------------------------------- rules and features

class TestRulesReadTheJobOnly:
    def test_checking_a_job_never_changes_it(self, tmp_path):
        """The cos '/' default is filled in before the rules run; the rules only read."""
        cos = parse_job_text(S3_SOURCE.replace("srcType=s3", "srcType=cos") + OSS_DEST)
        assert cos.src_prefix == "/"
        for kind in storage.source_kinds():
            job = dataclasses.replace(cos, src_type=kind, src_prefix="", list_file_path="/k.list",
                                      http_list_file_path="/u.list")
            before = dataclasses.asdict(job)
            try:
                storage.source_rules(kind).validate(job)
            except rules.KeyProblem:
                pass
            assert dataclasses.asdict(job) == before, kind

    def test_reading_a_local_job_imports_no_sdk(self, tmp_path):
        """The rules are SDK-free: config checks a job without importing its drivers."""
        local_job = "srcType=local\nsrcPrefix=/data/\n" + OSS_DEST
        s3_job = "srcType=s3\nsrcBucket=b\n" + S3_DEST
        code = ("import sys\nfrom ossimport_dist.config import parse_job_text\n"
                f"parse_job_text({local_job!r})\nparse_job_text({s3_job!r})\n"
                "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore', 'oss2', 'azure'}))")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]"


class TestEveryDriverDeclaresItsFeatures:
    @pytest.mark.parametrize("registry", ["_SOURCES", "_DESTINATIONS"])
    def test_features_are_data_on_every_registered_class(self, registry):
        for kind in getattr(storage, registry):
            cls = storage._load(getattr(storage, registry), kind, registry)
            assert isinstance(cls.features, Features), kind
            assert cls.kind == kind, kind

    def test_the_declared_capabilities(self):
        from ossimport_dist.storage.http import HttpSource
        from ossimport_dist.storage.local import LocalDestination
        from ossimport_dist.storage.s3 import S3Destination

        assert HttpSource.features.sizes_known is False
        assert LocalDestination.features.preserves_mtime is True
        assert S3Destination.features.min_part_size == 5 * 1024 * 1024
        assert [k for k in storage._DESTINATIONS
                if storage._load(storage._DESTINATIONS, k, "").features.server_side_copy_from] == ["oss"]

    def test_server_side_copy_only_within_one_oss_endpoint(self, tmp_path):
        oss_to_oss = ("srcType=oss\nsrcDomain=http://oss-cn-hangzhou.aliyuncs.com\nsrcBucket=photos\n"
                      + OSS_DEST)
        source, destination = runtime_for(oss_to_oss, "workerTaskThreadNum=2\n")
        assert destination.can_copy_from(source) is True
        elsewhere = oss_to_oss.replace("srcDomain=http://oss-cn-hangzhou", "srcDomain=http://oss-cn-beijing")
        source, destination = runtime_for(elsewhere, "workerTaskThreadNum=2\n")
        assert destination.can_copy_from(source) is False
        keys = tmp_path / "keys.list"
        keys.write_text("a.jpg\n")
        listed = oss_to_oss.replace("srcType=oss", f"srcType=list\nlistSrcType=oss\nlistFilePath={keys}")
        source, destination = runtime_for(listed, "workerTaskThreadNum=2\n")
        assert destination.can_copy_from(source) is False  # as before: a list source reads the bytes


class TestTheOperatorSeesTheSameLines:
    """The checks moved from config.py to each kind's rules; console.sh says what it said."""

    @pytest.mark.parametrize("job_props,key,message", [
        ({"srcType": "http"}, "httpListFilePath",
         "required for srcType=http; set httpListFilePath to the absolute path of the URL list"),
        ({"srcType": "list", "listSrcType": "list", "listFilePath": "/data/keys.list"}, "listSrcType",
         "unknown value (got 'list'); allowed: local, oss, qiniu, bos, ks3, s3, youpai, http, cos, azure"),
        ({"srcType": "cos", "srcBucket": "photos", "srcPrefix": "dir/"}, "srcPrefix",
         "for cos must start and end with '/' (got 'dir/'); write it as '/dir/'"),
        ({"srcType": "s3", "srcPrefix": "a/"}, "srcBucket",
         "required for srcType=s3; set srcBucket to the source bucket name"),
        ({"srcType": "youpai", "srcBucket": "svc", "srcPrefix": "", "isDownloadFromCdn": "true"},
         "cdnDomain", "required; set cdnDomain, or isDownloadFromCdn=false"),
    ])
    def test_a_bad_job_is_refused_at_submit_with_one_line(self, migration, job_props, key, message):
        migration.write_conf(job_props=job_props)
        lines = migration.job_file.read_text().splitlines()
        at = next((f":{n}" for n, text in enumerate(lines, 1) if text.startswith(key + "=")), "")
        r = migration.console("submit", str(migration.job_file))
        assert r.returncode == 2, r.stdout + r.stderr
        assert one_error_line(r) == f"error: {migration.job_file}{at}: {key}: {message}"
        assert not migration.job_dir.exists()
