"""Task lifecycles on the stand-in: reliable updates, executor failures, command tasks, ACCEPT validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import StandIn, process_alive, wait_for
from tests.mesos_standin.recorder import RecordedFramework
from tests.mesos_standin.tasks import executor_info, scalar, task_info
from tests.support.timeouts import scaled_text


@pytest.mark.slow
def test_unacknowledged_update_is_resent_and_blocks_later_ones(
    frameworks: Callable[..., RecordedFramework], bundle_url: str
) -> None:
    fw = frameworks(implicit_acknowledgements=False)
    offer = fw.offers()[0]
    task = task_info("t1", offer, executor=executor_info("exec-r", bundle_url), data={"finish": True})
    fw.driver.launchTasks([offer["id"]], [task])
    first = fw.status("t1", "TASK_RUNNING")
    # Not acknowledged: the agent resends the same update (same uuid); TASK_FINISHED waits behind it.
    wait_for(lambda: len(fw.log.statuses("t1")) >= 3, what="two resends")
    assert set(fw.log.statuses("t1")) == {"TASK_RUNNING"}
    assert {s["uuid"] for (s,) in fw.log.of("statusUpdate")} == {first["uuid"]}
    mark = fw.log.mark()
    fw.driver.acknowledgeStatusUpdate(first)
    finished = fw.status("t1", "TASK_FINISHED", after=mark)
    fw.driver.acknowledgeStatusUpdate(finished)


def test_executor_exit_fails_its_tasks_and_reports_failure(
    frameworks: Callable[..., RecordedFramework], control: Control, bundle_url: str
) -> None:
    fw = frameworks()
    offer = fw.offers()[0]
    task = task_info("t1", offer, executor=executor_info("exec-x", bundle_url), data={"exit": 3})
    fw.driver.launchTasks([offer["id"]], [task])
    failed = fw.status("t1", "TASK_FAILED")
    assert failed["reason"] == "REASON_EXECUTOR_TERMINATED" and failed["source"] == "SOURCE_AGENT"
    assert fw.log.wait_for("executorLost")[2] == 3 << 8  # a wait status: exit code 3
    wait_for(lambda: not control.containers(), what="container gone")


def test_fetch_failure_fails_the_launch(frameworks: Callable[..., RecordedFramework], bundle_url: str) -> None:
    fw = frameworks()
    offer = fw.offers()[0]
    executor = executor_info("exec-404", bundle_url.replace("executor.tar.gz", "missing.tar.gz"))
    fw.driver.launchTasks([offer["id"]], [task_info("t1", offer, executor=executor)])
    failed = fw.status("t1", "TASK_FAILED")
    assert failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED" and "404" in failed["message"]
    assert fw.log.wait_for("executorLost")[2] == -1


def test_command_tasks_run_and_are_killed(
    frameworks: Callable[..., RecordedFramework], control: Control, standin: StandIn
) -> None:
    fw = frameworks()
    offer = fw.offers()[0]
    done = task_info("echo", offer, command={"value": "echo hello from $MESOS_EXECUTOR_ID; exit 3"})
    sleeper = task_info("sleeper", offer, command={"value": "sleep 60"})
    sleeper["kill_policy"] = {"grace_period": {"nanoseconds": 200_000_000}}
    fw.driver.launchTasks([offer["id"]], [done, sleeper])
    failed = fw.status("echo", "TASK_FAILED")
    assert failed["message"] == "Command exited with status 3" and failed["source"] == "SOURCE_EXECUTOR"
    assert fw.log.statuses("echo")[:2] == ["TASK_STARTING", "TASK_RUNNING"]
    runs = standin.work_dir / "slaves" / offer["agent_id"]["value"] / "frameworks" / fw.id / "executors"
    assert (runs / "echo" / "runs" / "latest" / "stdout").read_text() == "hello from echo\n"

    fw.status("sleeper", "TASK_RUNNING")
    (container,) = control.containers()
    assert container["command_task"] and container["executor_id"] == "sleeper"
    fw.driver.killTask({"value": "sleeper"})
    fw.status("sleeper", "TASK_KILLED")
    assert not process_alive(int(container["pid"]))
    assert not fw.log.of("executorLost")  # command executors do not produce FAILURE


@pytest.mark.slow
def test_accept_validation_gives_status_updates(frameworks: Callable[..., RecordedFramework], bundle_url: str) -> None:
    fw = frameworks()
    offer = fw.offers()[0]
    executor = executor_info("exec-v", bundle_url)
    both = task_info("both", offer, executor=executor, command={"value": "true"})
    greedy = task_info("greedy", offer, command={"value": "true"}, cpus=64)
    elsewhere = task_info("elsewhere", offer, command={"value": "true"})
    elsewhere["agent_id"] = {"value": "some-other-agent"}
    no_resources = task_info("empty", offer, command={"value": "true"})
    no_resources["resources"] = []
    fw.driver.launchTasks([offer["id"]], [both, greedy, elsewhere, no_resources])
    for task_id in ("both", "greedy", "elsewhere", "empty"):
        error = fw.status(task_id, "TASK_ERROR")
        assert error["reason"] == "REASON_TASK_INVALID" and error["source"] == "SOURCE_MASTER" and "uuid" not in error
    # The offer was used by that ACCEPT: using it again drops the task.
    fw.driver.launchTasks([offer["id"]], [task_info("late", offer, command={"value": "true"})])
    dropped = fw.status("late", "TASK_DROPPED")
    assert dropped["reason"] == "REASON_INVALID_OFFERS"


@pytest.mark.slow
def test_registration_timeout_and_kill_before_delivery(tmp_path: Path) -> None:
    with StandIn(tmp_path / "work", agents=1, executor_registration_timeout=scaled_text(1)) as standin:
        fw = RecordedFramework(standin.master).start()
        try:
            offer = fw.offers()[0]
            silent = {
                "executor_id": {"value": "silent"},
                "command": {"value": "sleep 60"},
                "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
            }
            never = {**silent, "executor_id": {"value": "never"}}
            fw.driver.launchTasks(
                [offer["id"]],
                [task_info("killed", offer, executor=silent), task_info("timed-out", offer, executor=never)],
            )
            # Killed at once, not after waiting for its container: the kill must come before the registration
            # timeout, which a busy machine could reach while the test looked. The launch was handled before
            # launchTasks returned, so the task is known to its agent and not delivered (`sleep` never
            # subscribes).
            fw.driver.killTask({"value": "killed"})
            killed = fw.status("killed", "TASK_KILLED")
            assert killed["reason"] == "REASON_TASK_KILLED_DURING_LAUNCH" and killed["source"] == "SOURCE_AGENT"
            timed_out = fw.status("timed-out", "TASK_FAILED")
            assert timed_out["reason"] == "REASON_EXECUTOR_REGISTRATION_TIMEOUT"
            wait_for(
                lambda: {a[0]["value"] for a in fw.log.of("executorLost")} == {"silent", "never"},
                what="both executors lost",
            )
            wait_for(lambda: not standin.control.containers(), what="containers destroyed")
        finally:
            fw.stop()


def test_launch_group_on_a_custom_executor(frameworks: Callable[..., RecordedFramework], bundle_url: str) -> None:
    fw = frameworks()
    offer = fw.offers()[0]
    group = {
        "executor": {**executor_info("exec-g", bundle_url), "type": "CUSTOM"},
        "task_group": {"tasks": [task_info("g1", offer), task_info("g2", offer)]},
    }
    fw.driver.acceptOffers([offer["id"]], [{"type": "LAUNCH_GROUP", "launch_group": group}])
    first, second = fw.status("g1", "TASK_RUNNING"), fw.status("g2", "TASK_RUNNING")
    assert first["executor_id"] == second["executor_id"] == {"value": "exec-g"}
