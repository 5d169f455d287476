"""The agents' executor API seen by a bare client posing as the executor the agent launched."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

from tests.mesos_standin.harness import StandIn
from tests.mesos_standin.rawclient import RawSubscription, call
from tests.mesos_standin.recorder import RecordedFramework
from tests.mesos_standin.tasks import scalar, task_info


def test_executor_api_rules_subscribe_launch_update_and_acknowledged(
    frameworks: Callable[..., RecordedFramework], standin: StandIn
) -> None:
    fw = frameworks()
    offer = fw.offers()[0]
    # The agent starts `sleep`, which never subscribes: the test subscribes in its place.
    executor = {
        "executor_id": {"value": "posed"},
        "command": {"value": "sleep 60"},
        "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
    }
    fw.driver.launchTasks([offer["id"]], [task_info("t1", offer, executor=executor)])
    agent = next(a["endpoint"] for a in standin.agents if a["id"] == offer["agent_id"]["value"])
    ids: dict[str, Any] = {"framework_id": {"value": fw.id}, "executor_id": {"value": "posed"}}

    def status(**fields: Any) -> dict[str, Any]:
        body = {
            "task_id": {"value": "t1"},
            "state": "TASK_RUNNING",
            "source": "SOURCE_EXECUTOR",
            "uuid": base64.b64encode(uuid.uuid4().bytes).decode(),
        }
        return {**body, **fields}

    def post(body: dict[str, Any], **options: Any) -> int:
        return call(agent, body, path="/api/v1/executor", **options)[0]

    update = {"type": "UPDATE", **ids, "update": {"status": status()}}
    assert post(update) == 403  # not subscribed yet
    assert post(update, method="GET") == 405
    assert post(update, content_type="text/plain") == 415
    assert post({**update, "executor_id": {"value": "nobody"}}) == 400

    stream = RawSubscription.executor(agent, fw.id, "posed")
    subscribed = stream.next_event()
    assert subscribed is not None and subscribed["type"] == "SUBSCRIBED"
    assert subscribed["subscribed"]["executor_info"]["executor_id"] == {"value": "posed"}
    assert subscribed["subscribed"]["executor_info"]["framework_id"] == {"value": fw.id}
    assert subscribed["subscribed"]["framework_info"]["id"] == {"value": fw.id}
    assert subscribed["subscribed"]["agent_info"]["id"] == offer["agent_id"]
    assert "value" in subscribed["subscribed"]["container_id"]
    launch = stream.next_event()
    assert launch is not None and launch["type"] == "LAUNCH" and launch["launch"]["task"]["task_id"]["value"] == "t1"

    for bad in (
        status(uuid="c2hvcnQ="),
        status(state="TASK_STAGING"),
        status(source="SOURCE_MASTER"),
        status(executor_id={"value": "other"}),
    ):
        assert post({**update, "update": {"status": bad}}) == 400
    good = status()
    assert post({**update, "update": {"status": good}}) == 202
    acknowledged = stream.next_event()
    assert acknowledged == {"type": "ACKNOWLEDGED", "acknowledged": {"task_id": {"value": "t1"}, "uuid": good["uuid"]}}
    forwarded = fw.log.wait_for("statusUpdate")[0]
    assert forwarded["uuid"] == good["uuid"] and forwarded["agent_id"] == offer["agent_id"]

    assert post({"type": "MESSAGE", **ids, "message": {"data": "aGk="}}) == 202
    assert fw.log.wait_for("frameworkMessage")[2] == "aGk="
    stream.close()
