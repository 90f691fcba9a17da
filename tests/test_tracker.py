"""The one tracker over a link, without SSH or a service: a worker host played by a folder on
this filesystem (its own workingDir, as a fleet host has), the tasks run by the test writing
their results the way a worker does. Reconcile, capacity and dispatch are checked task by task
in the master's tree and in the worker's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ossimport_dist.layout import TASK_RESULTS, Home, TaskFolder, WorkerTree
from ossimport_dist.models import FileResult, ObjectEntry, Outcome, Task, TaskCounts
from ossimport_dist.tracker import FILES_PER_THREAD, LocalFiles, Tracker, WorkerLink
from ossimport_dist.worker import audit_line

JOB = "nightly"


class FolderHost(WorkerLink):
    """A worker host whose workingDir is a folder here: tasks are listed as a host's snapshot
    lists them and results are copied home (not renamed), as over SSH."""

    def __init__(self, name: str, working_dir: Path, threads: int = 2):
        self.host = name
        self.tree = WorkerTree(working_dir)
        self.files = LocalFiles()
        self.threads = threads
        self.backlog = 0
        self.resumed = []
        self.stopped_jobs = set()

    def tasks(self, jobs: dict) -> dict:
        found = {}
        for name in jobs:
            folder = Path(self.tree.tasks(name))
            for task in sorted(folder.iterdir()) if folder.is_dir() else ():
                if not task.name.startswith("."):
                    found[(name, task.name)] = TaskFolder(task).status() is not None
        return found

    def free_files(self, jobs: dict, tasks) -> int:
        return self.threads * FILES_PER_THREAD - self.backlog

    def accepts(self, job) -> bool:
        return job.name not in self.stopped_jobs

    def resume(self, job, task_id: str) -> None:
        self.resumed.append(task_id)

    def fetch(self, job, task_id: str) -> Path:
        incoming = job.incoming_from(task_id, self.host)
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir(parents=True)
        folder = Path(self.tree.task(job.name, task_id))
        for name in TASK_RESULTS:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, incoming / name)
        return incoming

    def run(self, task_id: str, fail: bool = False) -> None:
        """The host's worker runs the task: one audit line per file, then its results."""
        folder = Path(self.tree.task(JOB, task_id))
        task = TaskFolder(folder).read_task()
        counts = TaskCounts(files=len(task.objects), bytes=task.total_bytes)
        with open(TaskFolder(folder).audit_log, "a", encoding="utf-8") as audit:
            for entry in task.objects:
                result = (FileResult(entry.key, Outcome.FAILED, detail="SOURCE_NOT_EXIST: gone") if fail
                          else FileResult(entry.key, Outcome.SUCCEED, entry.size))
                audit.write(audit_line(result))
                counts.add(entry.size, result)
        errors = "".join(f"{e.key}\tSOURCE_NOT_EXIST: gone\n" for e in task.objects) if fail else ""
        TaskFolder(folder).write_results(not fail, vars(counts), errors, "")


@pytest.fixture
def job(tmp_path):
    home = Home(tmp_path / "master-host")
    home.ensure()
    layout = home.job(JOB)
    layout.create(lambda path: path.write_text(f"jobName={JOB}\n"))
    return layout


def add_tasks(job, count: int, files_each: int = 4) -> list:
    ids = [f"t{i:02d}" for i in range(count)]
    for task_id in ids:
        job.add_pending(Task(task_id, JOB, [ObjectEntry(f"d/{task_id}/{n}.bin", 10 + n) for n in range(files_each)]))
    return ids


def test_a_host_gets_tasks_by_its_free_room_and_each_arrives_whole(job, tmp_path):
    ids = add_tasks(job, 5)
    host = FolderHost("hostA", tmp_path / "hostA", threads=2)  # room for 8 files: two 4-file tasks
    tracker = Tracker(host)
    assert tracker.dispatch([job]) == 2
    assert job.dispatched_ids("hostA") == ids[:2] and job.pending_ids() == ids[2:]
    for task_id in ids[:2]:
        there = Path(host.tree.task(JOB, task_id))
        assert TaskFolder(there).read_task().objects == TaskFolder(job.dispatched("hostA") / task_id).read_task().objects
    assert sorted(p.name for p in Path(host.tree.tasks(JOB)).iterdir()) == ids[:2], "no staging folder left"
    host.backlog = 8  # the host is busy: nothing more
    assert tracker.dispatch([job]) == 0 and job.pending_ids() == ids[2:]


def test_a_stopped_job_gets_nothing_until_its_mark_is_cleared(job, tmp_path):
    ids = add_tasks(job, 2)
    host = FolderHost("hostA", tmp_path / "hostA")
    tracker = Tracker(host)
    job.fail_job("5 files in a row refused: fix destSecretKey")
    assert tracker.dispatch([job]) == 0
    job.clear_job_failure()
    host.stopped_jobs.add(JOB)  # the worker's runtime for it is still the stopped one
    assert tracker.dispatch([job]) == 0
    host.stopped_jobs.clear()
    assert tracker.dispatch([job]) == 2 and job.dispatched_ids("hostA") == ids


def test_finished_tasks_come_home_and_lost_ones_go_back_to_pending(job, tmp_path):
    ids = add_tasks(job, 4, files_each=1)
    host = FolderHost("hostA", tmp_path / "hostA")
    homes = []
    tracker = Tracker(host, on_home=lambda j, t, folder: homes.append((t, folder.parent.name)))
    tracker.dispatch([job])
    host.run(ids[0])
    host.run(ids[1], fail=True)
    shutil.rmtree(host.tree.task(JOB, ids[2]))  # the host lost it (a disk replaced)
    tracker.reconcile({JOB: job}, host.tasks({JOB: job}))
    assert homes == [(ids[0], "succeed_tasks"), (ids[1], "failed_tasks")]
    assert [TaskFolder(d).status() for d in job.succeed_dirs()] == ["Completed"]
    assert (job.failed_dirs()[0] / "error.list").read_text() == f"d/{ids[1]}/0.bin\tSOURCE_NOT_EXIST: gone\n"
    assert job.pending_ids() == [ids[2]] and job.dispatched_ids("hostA") == [ids[3]]
    assert host.resumed == [ids[3]], "the one still running is left to run"
    assert sorted(p.name for p in Path(host.tree.tasks(JOB)).iterdir()) == [ids[3]]


def test_a_late_result_from_a_host_presumed_dead_is_counted_once(job, tmp_path):
    [task_id] = add_tasks(job, 1)
    first, second = FolderHost("hostA", tmp_path / "hostA"), FolderHost("hostB", tmp_path / "hostB")
    Tracker(first).dispatch([job])
    job.undispatch(task_id, "hostA")  # hostA went silent: its task back to pending
    Tracker(second).dispatch([job])
    second.run(task_id)
    Tracker(second).reconcile({JOB: job}, second.tasks({JOB: job}))
    first.run(task_id)  # hostA comes back and finishes it too
    Tracker(first).reconcile({JOB: job}, first.tasks({JOB: job}))
    assert len(job.succeed_dirs()) == 1 and job.succeed_dirs()[0].name.endswith("@hostB")
    assert job.failed_dirs() == [] and job.pending_ids() == []
    assert list(Path(first.tree.tasks(JOB)).iterdir()) == []


def test_a_task_held_by_a_host_that_now_belongs_elsewhere_is_removed_there(job, tmp_path):
    [task_id] = add_tasks(job, 1)
    host = FolderHost("hostA", tmp_path / "hostA")
    tracker = Tracker(host)
    tracker.dispatch([job])
    job.undispatch(task_id, "hostA")  # presumed dead; the task waits in pending for another host
    tracker.reconcile({JOB: job}, host.tasks({JOB: job}))
    assert not Path(host.tree.task(JOB, task_id)).exists() and job.pending_ids() == [task_id]
    # A job cleaned on the master: its folders on the host go too.
    tracker.dispatch([job])
    tracker.reconcile({}, host.tasks({JOB: job}))
    assert list(Path(host.tree.tasks(JOB)).iterdir()) == []


def test_a_push_that_breaks_puts_the_task_back_to_pending(job, tmp_path):
    ids = add_tasks(job, 2)
    host = FolderHost("hostA", tmp_path / "hostA")
    Path(host.tree.tasks(JOB)).parent.mkdir(parents=True)
    Path(host.tree.tasks(JOB)).write_text("not a folder")  # every push fails
    with pytest.raises(OSError):
        Tracker(host).dispatch([job])
    assert job.pending_ids() == ids and job.dispatched_ids("hostA") == []
