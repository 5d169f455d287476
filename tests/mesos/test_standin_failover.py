"""Framework failover as the master handles it: same id re-subscribes, old stream told, timeouts remove."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pymesos import decode_data, encode_data

from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import StandIn, process_alive, wait_for
from tests.mesos_standin.rawclient import RawSubscription
from tests.mesos_standin.recorder import RecordedFramework
from tests.mesos_standin.tasks import decode, executor_info, task_info
from tests.support.timeouts import scaled

INFO = {"user": "roost", "name": "raw", "failover_timeout": 60.0}


@pytest.mark.slow
def test_new_driver_with_saved_id_reregisters_and_keeps_tasks(
    frameworks: Callable[..., RecordedFramework], control: Control, bundle_url: str
) -> None:
    first = frameworks()
    offer = first.offers()[0]
    first.driver.launchTasks([offer["id"]], [task_info("t1", offer, executor=executor_info("exec-fo", bundle_url))])
    pid = decode(first.status("t1", "TASK_RUNNING")["data"])["pgid"]
    framework_id = first.id
    first.stop(failover=True)  # no TEARDOWN: the framework waits out its failover timeout
    wait_for(lambda: control.framework(framework_id)["connected"] is False, what="disconnected")

    second = frameworks(start=False, id={"value": framework_id})
    second.start()
    assert second.log.of("reregistered") and not second.log.of("registered")
    assert second.id == framework_id and process_alive(pid)
    mark = second.log.mark()
    second.driver.reconcileTasks([])
    status = second.log.wait_for("statusUpdate", after=mark)[0]
    assert status["task_id"] == {"value": "t1"} and status["state"] == "TASK_RUNNING"
    # The executor kept running and talks to the new scheduler.
    second.driver.sendFrameworkMessage({"value": "exec-fo"}, offer["agent_id"], encode_data(b"still here"))
    assert decode_data(second.log.wait_for("frameworkMessage", after=mark)[2]) == b"still here"
    framework = control.framework(framework_id)
    assert framework["connected"] and "reregistered_time" in framework


def test_resubscription_fails_over_the_old_stream(
    frameworks: Callable[..., RecordedFramework], standin: StandIn
) -> None:
    old = RawSubscription.scheduler(standin.master, INFO)
    subscribed = old.next_event()
    assert subscribed is not None
    framework_id = subscribed["subscribed"]["framework_id"]["value"]

    new = frameworks(start=False, id={"value": framework_id}, name="raw")
    new.start()
    assert new.log.of("reregistered")
    events = []
    while (event := old.next_event()) is not None:
        events.append(event)
    assert events[-1] == {"type": "ERROR", "error": {"message": "Framework failed over"}}
    assert old.parser.is_message_complete()  # the master ended the old stream properly


def test_failover_timeout_removes_the_framework_for_good(standin: StandIn, control: Control) -> None:
    first = RawSubscription.scheduler(standin.master, {**INFO, "failover_timeout": scaled(0.3)})
    subscribed = first.next_event()
    assert subscribed is not None
    framework_id = subscribed["subscribed"]["framework_id"]
    first.close()
    wait_for(
        lambda: any(f["id"] == framework_id["value"] for f in control.state()["completed_frameworks"]),
        what="framework removed after its failover timeout",
    )
    again = RawSubscription.scheduler(standin.master, {**INFO, "id": framework_id})
    assert again.status == 200
    assert again.next_event() == {"type": "ERROR", "error": {"message": "Framework has been removed"}}
    assert again.next_event() is None


def test_unknown_framework_id_is_accepted_as_recovered(standin: StandIn, control: Control) -> None:
    stream = RawSubscription.scheduler(standin.master, {**INFO, "id": {"value": "from-an-older-master-0001"}})
    subscribed = stream.next_event()
    assert subscribed is not None and subscribed["subscribed"]["framework_id"] == {"value": "from-an-older-master-0001"}
    assert control.framework("from-an-older-master-0001")["recovered"] is True
    stream.close()
