"""A worker host's agent handed a TASK it cannot read fails that task and keeps running.

The master pushes a pending TASK's bytes without parsing them, so a damaged one reaches the
agent: there it used to raise out of the agent's loop, the agent died, was restarted, died
again, and the job stayed Running. Told in-process on a real agent and a real emulator."""

from __future__ import annotations

import os
import time

from ossimport_dist.fleet.agent import Agent
from ossimport_dist.layout import Home, write_task_file
from ossimport_dist.models import ObjectEntry, Task


def test_agent_fails_a_damaged_pushed_task_and_runs_the_next(tmp_path, bucket, emulator):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    home = Home(tmp_path / "work")
    home.ensure()
    job_cfg = home.worker.job_config("local_test")
    job_cfg.parent.mkdir(parents=True)
    job_cfg.write_text("".join(f"{k}={v}\n" for k, v in {
        "jobName": "local_test", "srcType": "local", "srcPrefix": f"{src}/",
        "destDomain": bucket.endpoint, "destBucket": bucket.bucket_name,
        "destAccessKey": emulator.key_id, "destSecretKey": emulator.secret}.items()))
    tasks = home.worker_jobs / "local_test" / "tasks"
    bad, good = tasks / "a-badtask", tasks / "b-goodtask"
    bad.mkdir(parents=True)
    (bad / "TASK").write_bytes(b'{"taskId":"a-badtask","jobName":"local_te')  # cut short
    good.mkdir()
    entry = ObjectEntry(key="a.txt", size=1, mtime=os.stat(src / "a.txt").st_mtime)
    write_task_file(good / "TASK", Task("b-goodtask", "local_test", [entry]))

    agent = Agent(home, "127.0.0.11")
    agent.worker.start()
    try:
        agent._pick_up_tasks()
        assert (bad / "STATUS").read_text() == "Failed\n"
        assert (bad / "DAMAGED").read_text().startswith(
            "DAMAGED_TASK: the TASK file of task a-badtask is not valid JSON")
        assert (bad / "TASK.corrupt").is_file() and not (bad / "TASK").exists()
        deadline = time.monotonic() + 30
        while not (good / "STATUS").is_file():
            assert time.monotonic() < deadline, "the good task never finished"
            time.sleep(0.05)
        assert (good / "STATUS").read_text() == "Completed\n"
        assert bucket.get_object("a.txt").read() == b"a"
        agent._pick_up_tasks()  # the damaged task is done with: nothing raises on the next poll
    finally:
        agent.worker.stop()
