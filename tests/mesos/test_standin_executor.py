"""Unmodified pymesos executors launched by the stand-in: environment, sandbox, process group, calls."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymesos import decode_data, encode_data

from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import FAST, StandIn, process_alive, wait_for
from tests.mesos_standin.protocol import format_duration
from tests.mesos_standin.recorder import RecordedFramework
from tests.mesos_standin.tasks import decode, executor_info, task_info

pytestmark = pytest.mark.slow  # every test here runs executors on the stand-in's agents

MESOS_VARIABLES = {
    "MESOS_FRAMEWORK_ID",
    "MESOS_EXECUTOR_ID",
    "MESOS_AGENT_ENDPOINT",
    "MESOS_DIRECTORY",
    "MESOS_SANDBOX",
    "MESOS_SLAVE_ID",
    "MESOS_SLAVE_PID",
    "MESOS_CHECKPOINT",
    "MESOS_HTTP_COMMAND_EXECUTOR",
    "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
    "MESOS_RECOVERY_TIMEOUT",
    "MESOS_SUBSCRIPTION_BACKOFF_MAX",
}


def test_executor_runs_in_own_session_with_agent_environment_and_sandbox(
    frameworks: Callable[..., RecordedFramework], standin: StandIn, control: Control, bundle_url: str
) -> None:
    fw = frameworks()
    offer = fw.offers()[0]
    executor = executor_info("exec-env", bundle_url)
    fw.driver.launchTasks([offer["id"]], [task_info("t-env", offer, executor=executor)])
    status = fw.status("t-env", "TASK_RUNNING")
    report = decode(status["data"])
    env: dict[str, str] = report["env"]

    assert status["source"] == "SOURCE_EXECUTOR" and "uuid" in status
    assert status["agent_id"] == offer["agent_id"] and status["executor_id"] == {"value": "exec-env"}
    # Own session and process group (led by the `sh -c` the command runs under), not the test runner's.
    assert report["pgid"] == report["sid"] != os.getsid(0)
    assert report["pgid"] != os.getpgid(0)
    # The environment a real agent builds, and nothing inherited from the test runner.
    assert env.keys() >= MESOS_VARIABLES
    assert env["MESOS_FRAMEWORK_ID"] == fw.id and env["MESOS_EXECUTOR_ID"] == "exec-env"
    assert env["MESOS_SLAVE_ID"] == offer["agent_id"]["value"]
    grace = format_duration(float(FAST["--executor-shutdown-grace-period"]))  # "2secs", times the timeout scale
    assert env["MESOS_CHECKPOINT"] == "1" and env["MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD"] == grace
    agent = next(a for a in standin.agents if a["id"] == offer["agent_id"]["value"])
    assert env["MESOS_AGENT_ENDPOINT"] == agent["endpoint"]
    assert env["ROOST_TEST"] == "1"
    assert not {"VIRTUAL_ENV", "PYTHONPATH", "MESOS_LOCAL", "HOME"} & env.keys()
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # The sandbox: Mesos's layout, the executor's cwd, the fetched archive and its contents.
    sandbox = Path(env["MESOS_SANDBOX"])
    assert env["MESOS_DIRECTORY"] == str(sandbox) == report["cwd"]
    container = next(c for c in control.containers() if c["executor_id"] == "exec-env")
    assert (
        sandbox
        == standin.work_dir
        / "slaves"
        / agent["id"]
        / "frameworks"
        / fw.id
        / "executors"
        / "exec-env"
        / "runs"
        / container["container_id"]
    )
    assert (sandbox.parent / "latest").resolve() == sandbox
    for name in ("executor.tar.gz", "bundle/standin_executor.py", "stdout", "stderr"):
        assert (sandbox / name).exists(), name
    assert container["pid"] == report["pgid"]
    # The master's view, in /master/state's shape.
    framework = control.framework(fw.id)
    (task,) = framework["tasks"]
    assert task["id"] == "t-env" and task["slave_id"] == agent["id"] and task["executor_id"] == "exec-env"
    assert task["framework_id"] == fw.id and task["state"] == "TASK_RUNNING" and task["role"] == "*"
    assert task["resources"]["cpus"] == 0.1 and task["resources"]["mem"] == 32.0
    assert [s["state"] for s in task["statuses"]] == ["TASK_RUNNING"]
    (shown,) = framework["executors"]
    assert shown["executor_id"] == "exec-env" and shown["slave_id"] == agent["id"] and shown["resources"]["cpus"] == 0.1


def test_messages_kill_reconcile_and_teardown_with_a_custom_executor(
    frameworks: Callable[..., RecordedFramework], control: Control, bundle_url: str
) -> None:
    fw = frameworks()
    offer = fw.offers()[0]
    executor = executor_info("exec-1", bundle_url)
    task = task_info("t1", offer, executor=executor, data={"spawn_child": True})
    launched = fw.log.mark()
    fw.driver.launchTasks([offer["id"]], [task], filters={"refuse_seconds": 0})  # leftovers come back at once
    report = decode(fw.status("t1", "TASK_RUNNING")["data"])
    pid, child = report["pid"], report["child_pid"]
    agent_id = offer["agent_id"]

    # Implicit acknowledgement reached the agent: nothing stays pending.
    wait_for(lambda: not any(a["pending_updates"] for a in control.agents()), what="acknowledged updates")

    # Framework messages, both ways (the executor echoes).
    mark = fw.log.mark()
    fw.driver.sendFrameworkMessage({"value": "exec-1"}, agent_id, encode_data(b"ping"))
    executor_id, from_agent, data = fw.log.wait_for("frameworkMessage", after=mark)
    assert decode_data(data) == b"ping" and executor_id == {"value": "exec-1"} and from_agent == agent_id

    # A second task on the running executor; the offer names the executor in executor_ids.
    offer = next(o for o in fw.offers(after=launched) if o["agent_id"] == agent_id)
    assert {"value": "exec-1"} in offer["executor_ids"]
    mark = fw.log.mark()
    fw.driver.launchTasks([offer["id"]], [task_info("t2", offer, executor=executor)])
    assert decode(fw.status("t2", "TASK_RUNNING", after=mark)["data"])["pid"] == pid

    # Reconciliation: implicit answers every live task, explicit answers unknown ids too.
    mark = fw.log.mark()
    fw.driver.reconcileTasks([])
    fw.driver.reconcileTasks([{"task_id": {"value": "never-launched"}}])
    answers: dict[str, dict[str, Any]] = {}

    def collect() -> bool:
        for (status,) in fw.log.of("statusUpdate"):
            if status.get("reason") == "REASON_RECONCILIATION":
                answers[status["task_id"]["value"]] = status
        return len(answers) >= 3

    wait_for(collect, what="reconciliation answers")
    assert answers["t1"]["state"] == answers["t2"]["state"] == "TASK_RUNNING"
    assert answers["never-launched"]["state"] == "TASK_UNKNOWN"
    assert all("uuid" not in s and s["source"] == "SOURCE_MASTER" for s in answers.values())
    assert all(s["message"].startswith("Reconciliation:") for s in answers.values())

    # Kill goes to the executor, which answers TASK_KILLED; the master forgets the task once acknowledged.
    fw.driver.killTask({"value": "t1"})
    fw.log.wait_for("statusUpdate", lambda s: s["task_id"]["value"] == "t1" and s["state"] == "TASK_KILLED")
    wait_for(lambda: "t1" not in {t["id"] for t in control.framework(fw.id)["tasks"]}, what="t1 completed")
    assert process_alive(pid) and process_alive(child)

    # TEARDOWN (a plain stop) shuts the executor down and destroys its whole process group.
    framework_id = fw.id
    fw.stop(failover=False)
    wait_for(lambda: not process_alive(pid) and not process_alive(child), what="executor and its child gone")
    completed = control.state()["completed_frameworks"]
    assert [f["id"] for f in completed] == [framework_id]
    assert {t["id"]: t["state"] for t in completed[0]["completed_tasks"]} == {"t1": "TASK_KILLED", "t2": "TASK_KILLED"}
