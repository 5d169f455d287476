"""Each ``/standin/...`` fault hook does what it says, seen through unmodified pymesos drivers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from pymesos import decode_data, encode_data

from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import process_alive, wait_for
from tests.mesos_standin.recorder import RecordedFramework
from tests.mesos_standin.tasks import decode, executor_info, task_info
from tests.support.timeouts import scaled


def _launch(fw: RecordedFramework, bundle_url: str, executor_id: str, task_id: str) -> tuple[dict[str, str], int, int]:
    """Launch one task on a new executor; returns (agent_id, executor pgid, event index before the launch)."""
    offer = fw.offers()[0]
    mark = fw.log.mark()
    task = task_info(task_id, offer, executor=executor_info(executor_id, bundle_url))
    fw.driver.launchTasks([offer["id"]], [task], filters={"refuse_seconds": 0})
    report = decode(fw.status(task_id, "TASK_RUNNING")["data"])
    return offer["agent_id"], report["pgid"], mark


@pytest.mark.slow
def test_kill_agent_partition_aware(
    frameworks: Callable[..., RecordedFramework], control: Control, bundle_url: str
) -> None:
    fw = frameworks()
    agent_id, pgid, launched = _launch(fw, bundle_url, "exec-a", "t1")
    leftover = next(o for o in fw.offers(after=launched) if o["agent_id"] == agent_id)  # outstanding offer
    mark = fw.log.mark()
    control.kill_agent(agent_id["value"])
    wait_for(lambda: not process_alive(pgid), what="executor killed with its agent")
    assert fw.log.wait_for("offerRescinded", after=mark)[0] == leftover["id"]
    status = fw.log.wait_for("statusUpdate", lambda s: s["task_id"]["value"] == "t1", after=mark)[0]
    assert status["state"] == "TASK_UNREACHABLE" and status["reason"] == "REASON_AGENT_REMOVED"
    assert status["source"] == "SOURCE_MASTER" and "uuid" not in status and "unreachable_time" in status
    assert fw.log.wait_for("slaveLost", after=mark)[0] == agent_id
    state = control.state()
    assert state["unreachable_slaves"] == 1 and len(state["slaves"]) == 1
    assert [t["id"] for t in state["frameworks"][0]["unreachable_tasks"]] == ["t1"]
    mark = fw.log.mark()
    fw.driver.reconcileTasks([{"task_id": {"value": "t1"}}])
    assert fw.log.wait_for("statusUpdate", after=mark)[0]["state"] == "TASK_UNREACHABLE"


@pytest.mark.slow
def test_kill_agent_without_partition_awareness_or_checkpointing(
    frameworks: Callable[..., RecordedFramework], control: Control, bundle_url: str
) -> None:
    fw = frameworks(checkpoint=False, capabilities=[])
    offer = fw.offers()[0]
    fw.driver.launchTasks([offer["id"]], [task_info("t1", offer, executor=executor_info("exec-b", bundle_url))])
    env = decode(fw.status("t1", "TASK_RUNNING")["data"])["env"]
    assert env["MESOS_CHECKPOINT"] == "0" and "MESOS_RECOVERY_TIMEOUT" not in env
    mark = fw.log.mark()
    control.kill_agent(offer["agent_id"]["value"])
    status = fw.log.wait_for("statusUpdate", after=mark)[0]  # at once, on the disconnection
    assert status["state"] == "TASK_LOST" and status["reason"] == "REASON_AGENT_DISCONNECTED"
    fw.log.wait_for("slaveLost", after=mark)


@pytest.mark.slow
def test_kill_executor_and_drop_messages(
    frameworks: Callable[..., RecordedFramework], control: Control, bundle_url: str
) -> None:
    fw = frameworks()
    agent_id, pgid, _ = _launch(fw, bundle_url, "exec-k", "t1")
    executor_id = {"value": "exec-k"}

    control.drop_messages(1.0)
    for _ in range(3):
        fw.driver.sendFrameworkMessage(executor_id, agent_id, encode_data(b"lost"))
    assert control.faults()["dropped_messages"] == 3
    control.drop_messages(0.0)
    mark = fw.log.mark()
    fw.driver.sendFrameworkMessage(executor_id, agent_id, encode_data(b"kept"))
    assert decode_data(fw.log.wait_for("frameworkMessage", after=mark)[2]) == b"kept"
    assert all(decode_data(args[2]) == b"kept" for args in fw.log.of("frameworkMessage"))

    mark = fw.log.mark()
    control.kill_executor(fw.id, "exec-k")
    status = fw.log.wait_for("statusUpdate", after=mark)[0]
    assert status["state"] == "TASK_FAILED" and status["reason"] == "REASON_EXECUTOR_TERMINATED"
    assert status["source"] == "SOURCE_AGENT" and "uuid" in status
    lost_executor, lost_agent, wait_status = fw.log.wait_for("executorLost", after=mark)
    assert (lost_executor, lost_agent, wait_status) == (executor_id, agent_id, 9)  # killed by SIGKILL
    assert not process_alive(pgid)


@pytest.mark.slow
def test_stall_heartbeats_and_silence(frameworks: Callable[..., RecordedFramework], control: Control) -> None:
    fw = frameworks()
    fw.log.index_of("heartbeat")
    start = time.monotonic()
    control.stall_heartbeats(1.0)
    # A marker on the stream: the answer to this reconciliation is sent after the stall began, so every
    # heartbeat after it was sent after the stall too (one sent before may still arrive late on a busy machine).
    mark = fw.log.mark()
    fw.driver.reconcileTasks([{"task_id": {"value": "marker"}}])
    marker = fw.log.index_of("statusUpdate", after=mark, timeout=5)
    after = fw.log.index_of("heartbeat", after=marker + 1, timeout=5)
    assert fw.log.times[after] >= start + 1.0  # sent once the stall was over

    start = time.monotonic()
    control.stall_heartbeats(1.0, silence=True)
    mark = fw.log.mark()
    fw.driver.reconcileTasks([{"task_id": {"value": "ghost"}}])
    answer = fw.log.index_of("statusUpdate", after=mark, timeout=5)  # held back, then delivered
    assert fw.log.times[answer] >= start + 0.9
    assert fw.log.events[answer][1][0]["state"] == "TASK_UNKNOWN"


def test_drop_scheduler_connection(frameworks: Callable[..., RecordedFramework], control: Control) -> None:
    fw = frameworks()
    framework_id, mark = fw.id, fw.log.mark()
    assert control.drop_scheduler_connection() == [framework_id]
    fw.log.wait_for("reregistered", after=mark)
    assert fw.log.of("disconnected") and fw.id == framework_id


@pytest.mark.slow
def test_restart_master_keeps_registry_and_answers_503_while_recovering(
    frameworks: Callable[..., RecordedFramework], control: Control
) -> None:
    fw = frameworks()
    old_master = control.state()["id"]
    mark = fw.log.mark()
    control.restart_master(recovery=scaled(1.0))  # long enough for pymesos's immediate retries to meet it
    fw.log.wait_for("reregistered", after=mark)
    state = control.state()
    assert state["id"] != old_master
    assert [f["id"] for f in state["frameworks"]] == [fw.id] and state["frameworks"][0]["connected"]
    assert len([name for name, _ in fw.log.events[mark:] if name == "disconnected"]) >= 2  # the stream, then 503s


def test_subscribe_503_makes_pymesos_retry(frameworks: Callable[..., RecordedFramework], control: Control) -> None:
    control.subscribe_503(3)
    fw = frameworks()
    assert fw.log.of("registered") and len(fw.log.of("disconnected")) == 3
    assert control.faults()["subscribe_503_remaining"] == 0
