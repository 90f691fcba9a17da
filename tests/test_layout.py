"""The state tree, its task moves, the counts kept in it, the cutting of a listing into tasks and
the master's reading of a worker host's snapshot: told on a tmp_path, without SSH or a service.

Operators script against the tree (README documents it), so the first story pins its shape, and
the last one keeps every module but ``layout`` from spelling its names."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path, PurePosixPath

import pytest

import ossimport_dist
from ossimport_dist.accounting import read_counts, retry_cost
from ossimport_dist.errors import StateError
from ossimport_dist.fleet.sshlink import parse_snapshot, snapshot_command
from ossimport_dist.layout import (DamagedStateFile, Home, TaskFolder, WorkerTree,
                                   mark_task_damaged, parse_finished_name, read_task_file, remote_worker_tree,
                                   task_size, write_task_file)
from ossimport_dist.models import SOURCE_NOT_EXIST, FileResult, ObjectEntry, Outcome, Task, TaskCounts
from ossimport_dist.scanner import SplitLimits, cut_tasks
from ossimport_dist.worker import audit_line

JOB = "lay_job"


def files_under(root: Path) -> list:
    return sorted(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*"))


def make_task(task_id: str, *sizes: int) -> Task:
    return Task(task_id, JOB, [ObjectEntry(f"dir/{task_id}-{i}.bin", size) for i, size in enumerate(sizes)])


@pytest.fixture
def job(tmp_path):
    home = Home(tmp_path / "work")
    home.ensure()
    layout = home.job(JOB)
    layout.create(lambda path: path.write_text("jobName=lay_job\n"))
    return layout


def run_on_worker(job, task_id: str, host: str, results: list) -> Path:
    """What a worker does with a dispatched task: its own folder with the inputs, one audit line
    per file, then the run's results."""
    folder = job.worker_tasks / task_id
    shutil.copytree(job.dispatched(host) / task_id, folder)
    task = TaskFolder(folder).read_task()
    counts = TaskCounts(files=len(task.objects), bytes=task.total_bytes)
    with open(TaskFolder(folder).audit_log, "a", encoding="utf-8") as audit:
        for entry, result in zip(task.objects, results):
            audit.write(audit_line(result))
            counts.add(entry.size, result)
    errors = "".join(f"{r.key}\t{r.detail}\n" for r in results if not r.ok)
    TaskFolder(folder).write_results(counts.failed == 0, vars(counts), errors, "")
    return folder


# -- the tree ---------------------------------------------------------------------------------
class TestTheTree:
    def test_a_new_job_has_exactly_the_documented_folders(self, job, tmp_path):
        assert files_under(tmp_path / "work") == [
            "logs/", "master/", "master/jobqueue/", "master/jobqueue/lay_job", "master/jobs/",
            "master/jobs/lay_job/", "master/jobs/lay_job/checkpoints/", "master/jobs/lay_job/checkpoints/0/",
            "master/jobs/lay_job/dispatched/", "master/jobs/lay_job/failed_tasks/", "master/jobs/lay_job/job.cfg",
            "master/jobs/lay_job/pending_tasks/", "master/jobs/lay_job/succeed_tasks/", "worker/",
            "worker/jobs/", "worker/jobs/lay_job/", "worker/jobs/lay_job/tasks/"]
        assert job.shown_root == "master/jobs/lay_job"

    @pytest.mark.parametrize("name", ["..", "../x", "/abs", "a/b", "", ".hidden", "x" * 300, "caf\udcc3"])
    def test_a_name_that_is_not_a_job_name_never_becomes_a_path(self, job, name):
        with pytest.raises(StateError, match="is not a job name"):
            job.home.job(name)

    def test_the_worker_tree_is_the_same_locally_and_as_a_hosts_strings(self, tmp_path):
        local, remote = Home(tmp_path).worker, remote_worker_tree("/data/work/")
        assert local.task(JOB, "t1") == tmp_path / "worker/jobs/lay_job/tasks/t1"
        assert local.job_config(JOB) == Home(tmp_path).worker_jobs / JOB / "job.cfg"
        names = [(t.heartbeat, t.pid_file, t.sys_file, t.budget_file, t.staging(JOB, "t1"), t.logs)
                 for t in (local, remote)]
        assert [p.relative_to(local.working_dir).as_posix() for p in names[0]] == \
               [p.relative_to("/data/work").as_posix() for p in names[1]] == [
            "worker/heartbeat.json", "worker/agent.pid", "worker/sys.properties", "worker/throughput",
            "worker/jobs/lay_job/tasks/.t1.tmp", "logs"]
        assert str(remote.job_config(JOB)) == "/data/work/worker/jobs/lay_job/job.cfg"
        assert isinstance(remote.root, PurePosixPath) and not isinstance(remote.root, Path)


# -- task moves ---------------------------------------------------------------------------------
class TestTaskMoves:
    def test_pending_dispatched_succeed_each_step_in_one_place(self, job):
        job.add_pending(make_task("t1", 3, 4))
        assert job.pending_ids() == ["t1"] and job.locate("t1") == job.pending / "t1"
        assert job.dispatch("t1", "hostA") == job.dispatched("hostA") / "t1"
        assert job.pending_ids() == [] and job.locations("t1") == [job.dispatched("hostA") / "t1"]
        ok = FileResult("dir/t1-0.bin", Outcome.SUCCEED, 3), FileResult("dir/t1-1.bin", Outcome.SUCCEED, 4)
        folder = run_on_worker(job, "t1", "hostA", list(ok))
        assert TaskFolder(folder).status() == "Completed" and TaskFolder(folder).completed()
        done = job.finish("t1", "hostA", folder, TaskFolder(folder).completed())
        assert done.parent == job.succeed and parse_finished_name(done.name)[::2] == ("t1", "hostA")
        assert job.locations("t1") == [done] and job.dispatched_ids("hostA") == [] and not folder.exists()
        assert sorted(p.name for p in done.iterdir()) == ["COUNTS", "DONE", "STATUS", "TASK", "audit.log", "error.list"]
        assert (done / "STATUS").read_bytes() == b"Completed\n" and (done / "error.list").read_bytes() == b""
        assert json.loads((done / "COUNTS").read_text())["succeed_bytes"] == 7

    def test_a_failed_task_retried_keeps_its_history_and_drops_its_results(self, job):
        job.add_pending(make_task("t2", 5, 6))
        job.dispatch("t2", "hostB")
        results = [FileResult("dir/t2-0.bin", Outcome.SUCCEED, 5),
                   FileResult("dir/t2-1.bin", Outcome.FAILED, detail=f"{SOURCE_NOT_EXIST}: gone")]
        folder = run_on_worker(job, "t2", "hostB", results)
        assert TaskFolder(folder).status() == "Failed" and not (folder / "DONE").exists()
        failed = job.finish("t2", "hostB", folder, TaskFolder(folder).completed())
        assert failed.parent == job.failed
        assert (failed / "error.list").read_text() == f"dir/t2-1.bin\t{SOURCE_NOT_EXIST}: gone\n"
        audit = (failed / "audit.log").read_bytes()
        assert job.retry_failed() == 1
        back = job.pending / "t2"
        assert job.locations("t2") == [back] and job.failed_dirs() == []
        assert sorted(p.name for p in back.iterdir()) == ["RETRIES", "TASK", "audit.log"]
        assert (back / "audit.log").read_bytes() == audit and (back / "RETRIES").read_text() == "1\n"

    def test_undispatch_puts_a_lost_task_back_and_never_makes_two_copies(self, job):
        job.add_pending(make_task("t3", 1))
        job.dispatch("t3", "hostC")
        job.undispatch("t3", "hostC")
        assert job.locations("t3") == [job.pending / "t3"] and job.dispatched_ids("hostC") == []
        # Dispatched again while an older copy came back to pending: the dispatched one goes.
        job.dispatch("t3", "hostC")
        (job.pending / "t3").mkdir()
        job.undispatch("t3", "hostC")
        assert job.locations("t3") == [job.pending / "t3"] and job.dispatched_ids("hostC") == []

    def test_a_late_result_is_dropped_and_its_open_uploads_kept_for_clean(self, job):
        job.add_pending(make_task("t4", 1))
        job.dispatch("t4", "hostA")
        first = job.finish("t4", "hostA", run_on_worker(job, "t4", "hostA",
                                                        [FileResult("dir/t4-0.bin", Outcome.SUCCEED, 1)]), True)
        late = job.incoming_from("t4", "hostB")
        (late / "multipart").mkdir(parents=True)
        (late / "multipart" / "abc.json").write_text('{"upload_id": "u1"}')
        assert job.finish("t4", "hostB", late, False) == first
        assert job.locations("t4") == [first] and not late.exists()
        assert [p.name for p in (job.root / "abandoned_uploads").iterdir()][0].endswith("-abc.json")
        assert len(job.multipart_checkpoints()) == 1

    def test_locate_finds_only_the_task_named(self, job):
        assert job.locate("t5") is None and not job.task_known("t5")
        job.add_pending(make_task("t50", 1))
        job.dispatch("t50", "h")
        job.finish("t50", "h", job.dispatched("h") / "t50", True)
        assert job.locate("t5") is None and job.locate("t50").parent == job.succeed
        # A task whose id holds the separator of a finished name is still found whole.
        job.add_pending(make_task("t5_x", 1))
        job.dispatch("t5_x", "h@2")
        job.finish("t5_x", "h@2", job.dispatched("h@2") / "t5_x", False)
        assert job.locate("t5") is None and job.locate("t5_x").parent == job.failed


ONE_ENTRY = ObjectEntry("a", 3).to_json().encode()


# -- damaged files ------------------------------------------------------------------------------
class TestDamagedTaskFiles:
    @pytest.mark.parametrize("content, problem", [
        (b"", "empty"),
        (b"\xff\xfe not text", "not ASCII text"),
        (b'{"taskId": "t", "jobName": "j"}\n', "JSON of the wrong shape"),
        (b"[1, 2]\n", "JSON of the wrong shape"),
        (b'{"taskId":"t","jobName":"j","objects":2,"bytes":3}\n' + ONE_ENTRY + b"\n", "truncated"),
        (b'{"taskId":"t","jobName":"j","objects":1,"bytes":3}\n' + ONE_ENTRY[:-4], "not valid JSON"),
    ])
    def test_a_task_file_not_as_written_is_named_damaged(self, tmp_path, content, problem):
        path = tmp_path / "TASK"
        path.write_bytes(content)
        with pytest.raises(DamagedStateFile, match=problem) as caught:
            read_task_file(path)
        assert caught.value.path == path and "\n" not in str(caught.value)

    def test_a_task_file_reads_back_exactly(self, tmp_path):
        task = Task("t", JOB, [ObjectEntry("caf\u00e9/\u65e5 \u672c.txt", 5, mtime=1.5), ObjectEntry("b", 0)])
        write_task_file(tmp_path / "TASK", task)
        assert read_task_file(tmp_path / "TASK") == task

    def test_a_damaged_task_fails_with_counts_from_its_header(self, tmp_path):
        folder = tmp_path / "t"
        folder.mkdir()
        (folder / "TASK").write_bytes(b'{"taskId":"t","jobName":"j","objects":3,"bytes":30}\n{"key":')
        aside = mark_task_damaged(folder, "DAMAGED_TASK: why")
        assert aside.name == "TASK.corrupt" and not (folder / "TASK").exists()
        assert TaskFolder(folder).status() == "Failed" and (folder / "DAMAGED").read_text() == "DAMAGED_TASK: why\n"
        # Its files' failures have no reason code of their own: stat shows them as OTHER.
        assert read_counts(folder) == TaskCounts(files=3, bytes=30, failed=3, failed_bytes=30, reasons={"OTHER": 3})

    @pytest.mark.parametrize("header, size", [
        (b'{"taskId":"t","jobName":"j","objects":2,"bytes":9}\n' + ONE_ENTRY, (2, 9)),  # the header alone counts
        (b'{"taskId":"t","jobName":"j","objects":-5,"bytes":-1}\n', (0, 0)),
        (b"", None), (b"[3]\n", None), (b'{"objects": 1}\n', None), (b'{"objects":"x","bytes":1}\n', None),
        (b"\xff\xfe\n", None), (b'"objects"\n', None),
    ])
    def test_a_task_is_weighed_by_its_header_line(self, tmp_path, header, size):
        (tmp_path / "TASK").write_bytes(header)
        assert task_size(tmp_path / "TASK") == size
        assert task_size(tmp_path / "missing") is None

    @pytest.mark.parametrize("status", [None, b"", b"\n"])
    def test_a_task_without_a_status_has_not_finished(self, tmp_path, status):
        if status is not None:
            (tmp_path / "STATUS").write_bytes(status)
        assert TaskFolder(tmp_path).status() is None and not TaskFolder(tmp_path).completed()

    @pytest.mark.parametrize("status", [b"\xff\xfe\n", b"Completed but not quite\n", b"\x00"])
    def test_a_garbled_status_is_a_run_that_ended_and_did_not_complete(self, tmp_path, status):
        (tmp_path / "STATUS").write_bytes(status)
        assert TaskFolder(tmp_path).status() is not None and not TaskFolder(tmp_path).completed()


# -- accounting ---------------------------------------------------------------------------------
class TestAccounting:
    def failed_task(self, job, task_id: str, results: list) -> Path:
        job.add_pending(make_task(task_id, *[10] * len(results)))
        job.dispatch(task_id, "h")
        return job.finish(task_id, "h", run_on_worker(job, task_id, "h", results), False)

    def test_counts_read_back_as_the_worker_wrote_them(self, job):
        d = self.failed_task(job, "c1", [FileResult("dir/c1-0.bin", Outcome.SUCCEED, 10),
                                         FileResult("dir/c1-1.bin", Outcome.FAILED, detail="SOURCE_NOT_READABLE: x")])
        counts = read_counts(d)
        assert (counts.files, counts.succeed, counts.failed, counts.failed_bytes) == (2, 1, 1, 10)
        assert counts.reasons == {"SOURCE_NOT_READABLE": 1}

    @pytest.mark.parametrize("damage", [b"", b"\xff\xfe", b"[]", b'{"files": -1}', b'{"nope": 1}',
                                        b'{"failed": 1, "reasons": {"X_Y": 2}}'])
    def test_damaged_counts_are_recounted_from_the_audit_log(self, job, damage):
        d = self.failed_task(job, "c2", [FileResult("dir/c2-0.bin", Outcome.SUCCEED, 10),
                                         FileResult("dir/c2-1.bin", Outcome.FAILED, detail="SIZE_NOT_MATCH: x")])
        (d / "COUNTS").write_bytes(damage)
        counts = read_counts(d)
        assert (counts.files, counts.succeed, counts.failed, counts.failed_bytes) == (2, 1, 1, 10)
        assert (d / "COUNTS.corrupt").read_bytes() == damage
        assert json.loads((d / "COUNTS").read_text())["failed"] == 1
        [line] = job.damaged_files()
        assert line.startswith(f"{d / 'COUNTS'}: ") and line.endswith("recounted from audit.log")

    def test_retry_cost_counts_the_files_a_retry_sends_and_those_it_cannot_fix(self, job):
        self.failed_task(job, "r1", [FileResult("dir/r1-0.bin", Outcome.FAILED, detail=f"{SOURCE_NOT_EXIST}: gone"),
                                     FileResult("dir/r1-1.bin", Outcome.FAILED, detail="network error: reset")])
        self.failed_task(job, "r2", [FileResult("dir/r2-0.bin", Outcome.FAILED, detail=f"{SOURCE_NOT_EXIST}: gone")])
        damaged = self.failed_task(job, "r3", [FileResult("dir/r3-0.bin", Outcome.FAILED, detail="x")])
        mark_task_damaged(damaged, "DAMAGED_TASK: cannot run again")
        cost = retry_cost(job.failed_dirs())
        assert (cost.tasks, cost.files, cost.bytes, cost.needing_a_change) == (2, 3, 30, 2)
        assert not cost.only_needs_a_change
        assert retry_cost([]).files == 0 and not retry_cost([]).only_needs_a_change


# -- cutting a listing into tasks ------------------------------------------------------------------
def entries(*sizes, mtime=100.0):
    return [ObjectEntry(f"k{i:03d}", s, mtime=mtime) for i, s in enumerate(sizes)]


class TestCutTasks:
    def test_by_count(self):
        batches = list(cut_tasks(iter(entries(*[1] * 7)), SplitLimits(max_objects=3, max_bytes=10**9)))
        assert [[e.key for e in b] for b in batches] == [["k000", "k001", "k002"], ["k003", "k004", "k005"], ["k006"]]

    def test_by_size_and_a_file_larger_than_the_limit_is_one_task_never_split(self):
        batches = list(cut_tasks(iter(entries(4, 5, 100, 1, 2)), SplitLimits(max_objects=100, max_bytes=10)))
        assert [[e.size for e in b] for b in batches] == [[4, 5], [100], [1, 2]]

    def test_the_sources_boundary_cuts_too(self):
        listing = [ObjectEntry(k, 1) for k in ("a/1", "a/2", "b/1", "b/2", "b/3", "c/1")]
        batches = list(cut_tasks(iter(listing), SplitLimits(max_objects=2, max_bytes=10**9),
                                 lambda last, nxt: last.key[0] != nxt.key[0]))
        assert [[e.key for e in b] for b in batches] == [["a/1", "a/2"], ["b/1", "b/2"], ["b/3"], ["c/1"]]

    def test_import_since_drops_older_files_but_never_one_of_unknown_time(self):
        listing = entries(1, 1, mtime=50.0) + [ObjectEntry("unknown", 1, mtime=0)] + [ObjectEntry("new", 1, mtime=60)]
        batches = list(cut_tasks(iter(listing), SplitLimits(max_objects=10, max_bytes=10, import_since=50.0)))
        assert [[e.key for e in b] for b in batches] == [["unknown", "new"]]

    def test_an_empty_listing_makes_no_task(self):
        assert list(cut_tasks(iter([]), SplitLimits(max_objects=1, max_bytes=1))) == []


# -- the master's reading of a host's snapshot -------------------------------------------------------
BEAT = {"host": "h1", "seq": 7, "jobs": {}}


def snapshot(beat_text: str, *task_lines: str, alive: bool = True) -> str:
    return ("--ALIVE--\n" if alive else "") + beat_text + "\n--TASKS--\n" + "".join(l + "\n" for l in task_lines)


class TestSnapshotParsing:
    def test_a_live_agent_and_its_task_folders(self):
        text = snapshot(json.dumps(BEAT), "F jobs/j1/tasks/t1/", "R jobs/j1/tasks/t2/", "F jobs/j2/tasks/t1/")
        assert parse_snapshot(text) == (BEAT, {("j1", "t1"): True, ("j1", "t2"): False, ("j2", "t1"): True})

    def test_a_heartbeat_left_by_a_dead_agent_does_not_count(self):
        assert parse_snapshot(snapshot(json.dumps(BEAT), "R jobs/j/tasks/t/", alive=False)) == \
               (None, {("j", "t"): False})

    @pytest.mark.parametrize("beat", ['{"host": "h1", "se', "", "null", "[1, 2]", "42", '"text"', "\x00\x01garbage"])
    def test_a_torn_or_damaged_heartbeat_is_no_heartbeat(self, beat):
        assert parse_snapshot(snapshot(beat, "R jobs/j/tasks/t/")) == (None, {("j", "t"): False})

    @pytest.mark.parametrize("line", [
        "F jobs/j/tasks/", "F jobs/j/tasks/t/extra/", "F other/j/tasks/t/", "F jobs/j/other/t/", "F jobs//tasks/t/",
        "F jobs/../tasks/t/", "F jobs/j/tasks/../", "F jobs/j/tasks/.t.tmp/", "garbage", "", "F", " ",
    ])
    def test_a_line_that_names_no_task_folder_is_ignored(self, line):
        assert parse_snapshot(snapshot(json.dumps(BEAT), line, "R jobs/j/tasks/t/")) == (BEAT, {("j", "t"): False})

    @pytest.mark.parametrize("cut", [10, 30, 60, 90])
    def test_output_cut_short_keeps_only_whole_lines(self, cut):
        text = snapshot(json.dumps(BEAT), "F jobs/j/tasks/t1/", "R jobs/j/tasks/t2/")[:cut]
        beat, tasks = parse_snapshot(text)
        assert beat in (None, BEAT)
        assert set(tasks) <= {("j", "t1"), ("j", "t2")}

    def test_non_utf8_output_as_decoded_never_raises(self):
        raw = b"--ALIVE--\n{\"seq\": 1, \"host\": \"\xff\xfe\"}\n--TASKS--\nF jobs/j\xff/tasks/t\xc3/\n"
        for decoded in (raw.decode("utf-8", "replace"), raw.decode("utf-8", "surrogateescape")):
            beat, tasks = parse_snapshot(decoded)
            assert beat is None or beat["seq"] == 1
            assert list(tasks.values()) == [True]

    def test_the_command_lists_the_folders_the_parser_reads(self, tmp_path):
        """The snapshot command, run by a real shell on a real worker tree, reads back as the tree."""
        import subprocess

        tree = WorkerTree(tmp_path)
        for job_name, task_id, finished in (("j1", "t1", True), ("j1", "t2", False), ("j2", "t3", False)):
            tree.task(job_name, task_id).mkdir(parents=True)
            if finished:
                TaskFolder(tree.task(job_name, task_id)).write_results(True, {}, "", "")
        tree.staging("j1", "t9").mkdir()
        tree.heartbeat.write_text(json.dumps(BEAT))
        out = subprocess.run(["sh", "-c", snapshot_command(str(tmp_path))], capture_output=True, text=True,
                             timeout=20).stdout
        # No agent process here: the heartbeat is not taken; the half-pushed folder is removed.
        assert parse_snapshot(out) == (None, {("j1", "t1"): True, ("j1", "t2"): False, ("j2", "t3"): False})
        assert not tree.staging("j1", "t9").exists()


# -- only layout spells the tree -------------------------------------------------------------------
# File names of the tree: no other module writes one as a string of its own.
TREE_FILES = {"TASK", "STATUS", "COUNTS", "DONE", "RETRIES", "DAMAGED", "Completed", "error.list", "audit.log",
              "skipped.list", "damaged.list", "scan.error", "scan.failed", "job.failed", "heartbeat.json",
              "agent.pid", "progress.json", "ROUND", "pending_tasks", "succeed_tasks", "failed_tasks"}
# Folder names (and files whose names are also ordinary words): spelled nowhere as part of a path,
# that is joined with '/' or written inside a string with slashes.
TREE_PATH_PARTS = TREE_FILES | {"master", "worker", "jobs", "tasks", "dispatched", "jobqueue", "checkpoints",
                                "rounds", "multipart", "abandoned_uploads", ".incoming", "throughput", "bundle",
                                "retry.lock", "service.lock", "ossimport.pid", "job.cfg", "local_job.cfg",
                                "sys.properties", "logs"}
# The sample source the demo writes has a folder 'logs/': data, not the state tree.
NOT_THE_TREE = {("demo.py", "logs/2024-")}


def tree_literals(path: Path) -> list:
    tree = ast.parse(path.read_text("utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    joined = {id(side) for node in ast.walk(tree) if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
              for side in (node.left, node.right)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings:
            continue
        text = node.value
        spelled = text in TREE_FILES or (id(node) in joined and text in TREE_PATH_PARTS) or \
            ("/" in text and any(part in TREE_PATH_PARTS for part in text.split("/")))
        if spelled and (path.name, text) not in NOT_THE_TREE:
            found.append(f"{path.name}:{node.lineno}: {text!r}")
    return found


def test_only_layout_spells_the_state_tree():
    package = Path(ossimport_dist.__file__).parent
    modules = [p for p in sorted(package.rglob("*.py")) if p.name != "layout.py"]
    assert len(modules) > 20
    # the subpackages are read too: a literal in fleet/ or cli/ counts as much as one beside layout
    assert {"fleet", "cli", "storage"} <= {p.parent.name for p in modules}
    assert [hit for module in modules for hit in tree_literals(module)] == []


def test_the_literal_check_would_see_a_spelled_path(tmp_path):
    """The check above can fail: each way of spelling the tree is caught."""
    sample = tmp_path / "sample.py"
    sample.write_text('import os\n'
                      'def f(root, beat):\n'
                      '    """A docstring may name master/jobs/<job>/STATUS."""\n'
                      '    a = root / "master" / "jobs"\n'
                      '    b = f"{root}/worker/heartbeat.json"\n'
                      '    c = (root / "STATUS").read_text() == "Completed"\n'
                      '    return beat.get("jobs"), "tasks"\n')
    assert sorted(tree_literals(sample)) == ["sample.py:4: 'jobs'", "sample.py:4: 'master'",
                                             "sample.py:5: '/worker/heartbeat.json'", "sample.py:6: 'Completed'",
                                             "sample.py:6: 'STATUS'"]
