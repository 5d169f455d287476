"""The master's scheduler API as pymesos and a bare client see it: stream, events, request rules."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.mesos_standin.control import Control
from tests.mesos_standin.harness import FAST, StandIn, wait_for
from tests.mesos_standin.rawclient import RawSubscription, call
from tests.mesos_standin.recorder import RecordedFramework
from tests.support.timeouts import scaled

INFO = {"user": "roost", "name": "raw", "failover_timeout": 60.0}


@pytest.mark.slow
def test_pymesos_registers_gets_heartbeats_and_offers_in_the_v1_shape(
    frameworks: Callable[..., RecordedFramework], standin: StandIn
) -> None:
    fw = frameworks()
    framework_id, master_info = fw.log.of("registered")[0]
    assert framework_id["value"].endswith("-0000")
    assert master_info["version"] == "1.11.0" and master_info["port"] == int(standin.master.split(":")[1])
    wait_for(lambda: len(fw.log.of("heartbeat")) >= 3, what="three heartbeats")
    offers = fw.offers(count=2)
    assert {o["agent_id"]["value"] for o in offers} == {a["id"] for a in standin.agents}
    offer = offers[0]
    assert set(offer) == {
        "id",
        "framework_id",
        "agent_id",
        "hostname",
        "url",
        "resources",
        "attributes",
        "executor_ids",
    }
    assert offer["framework_id"] == framework_id and offer["executor_ids"] == []
    assert offer["url"]["scheme"] == "http" and offer["url"]["path"] == "/slave(1)"
    resources = {r["name"]: r for r in offer["resources"]}
    assert resources["cpus"] == {"name": "cpus", "type": "SCALAR", "scalar": {"value": 4.0}, "role": "*"}
    assert resources["mem"]["scalar"]["value"] == 7680.0 and resources["disk"]["scalar"]["value"] == 40960.0
    assert resources["ports"]["ranges"] == {"range": [{"begin": 31000, "end": 32000}]}


def test_raw_stream_framing_and_first_events(standin: StandIn) -> None:
    stream = RawSubscription.scheduler(standin.master, INFO)
    try:
        assert stream.status == 200
        headers = stream.headers
        assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
        assert headers["content-type"] == "application/json" and len(headers["mesos-stream-id"]) <= 128
        assert stream.parser.is_chunked()
        first, second = stream.next_event(), stream.next_event()
        assert first is not None and first["type"] == "SUBSCRIBED"
        assert first["subscribed"]["heartbeat_interval_seconds"] == float(FAST["--heartbeat-interval"])
        assert set(first["subscribed"]["master_info"]) >= {"id", "ip", "port", "hostname", "version", "address"}
        assert second == {"type": "HEARTBEAT"}
        offers = stream.next_event(skip_heartbeats=True)
        assert offers is not None and offers["type"] == "OFFERS" and isinstance(offers["offers"]["offers"], list)
    finally:
        stream.close()


def test_request_rules_of_the_scheduler_endpoint(standin: StandIn, control: Control) -> None:
    master = standin.master
    stream = RawSubscription.scheduler(master, INFO)
    subscribed = stream.next_event()
    assert subscribed is not None
    fid = subscribed["subscribed"]["framework_id"]
    stream_id = stream.headers["mesos-stream-id"]
    revive = {"type": "REVIVE", "framework_id": fid}

    assert call(master, revive, stream_id)[0] == 202
    assert call(master, revive, stream_id, method="PUT")[0] == 405
    assert call(master, revive, stream_id, content_type=None)[0] == 400
    assert call(master, revive, stream_id, content_type="text/plain")[0] == 415
    assert call(master, b"{not json", stream_id)[0] == 400
    assert call(master, {"type": "NO_SUCH_CALL", "framework_id": fid}, stream_id)[0] == 400
    assert call(master, {"type": "REVIVE"}, stream_id)[0] == 400  # no framework_id
    assert call(master, {"type": "REVIVE", "framework_id": {"value": "nope"}}, stream_id)[0] == 400
    assert call(master, revive)[0] == 400  # no Mesos-Stream-Id
    assert call(master, revive, "stale-stream-id")[0] == 400
    bad_ack = {
        "type": "ACKNOWLEDGE",
        "framework_id": fid,
        "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "c2hvcnQ="},
    }
    assert call(master, bad_ack, stream_id)[0] == 400  # uuid is not 16 bytes

    with_stream_id = RawSubscription.scheduler(master, INFO, extra_headers={"Mesos-Stream-Id": stream_id})
    assert with_stream_id.status == 400
    html_only = RawSubscription.scheduler(master, INFO, accept="text/html")
    assert html_only.status == 406
    mismatch = call(
        master,
        {
            "type": "SUBSCRIBE",
            "framework_id": {"value": "x"},
            "subscribe": {"framework_info": {**INFO, "id": {"value": "y"}}},
        },
    )
    assert mismatch[0] == 400
    assert call(master, {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"name": "no user"}}})[0] == 400

    stream.close()  # the framework is now disconnected (failover timer running): its calls get 403
    wait_for(lambda: not control.framework(fid["value"])["connected"], what="framework disconnected")
    assert call(master, revive, stream_id)[0] == 403


def test_version_and_state_endpoints(
    frameworks: Callable[..., RecordedFramework], standin: StandIn, control: Control
) -> None:
    version = control.version()
    assert version["version"] == "1.11.0" and tuple(int(n) for n in version["version"].split(".")) == (1, 11, 0)
    fw = frameworks(name="state-test")
    fw.offers(count=2)
    state = control.state()
    assert state["version"] == "1.11.0" and state["activated_slaves"] == 2
    assert state["leader"] == state["pid"] == f"master@{standin.master}"
    agent = state["slaves"][0]
    assert agent["resources"] == {"cpus": 4.0, "gpus": 0.0, "mem": 7680.0, "disk": 40960.0, "ports": "[31000-32000]"}
    assert agent["active"] is True and agent["pid"].startswith("slave(1)@127.0.0.1:")
    (framework,) = state["frameworks"]
    assert framework["id"] == fw.id and framework["name"] == "state-test" and framework["connected"] is True
    assert framework["checkpoint"] is True and framework["failover_timeout"] == 60.0
    assert framework["capabilities"] == ["PARTITION_AWARE", "GPU_RESOURCES"]
    assert len(framework["offers"]) == 2 and framework["offered_resources"]["cpus"] == 8.0
    assert framework["tasks"] == [] and framework["executors"] == []


def _offer_events_between(fw: RecordedFramework, start: int) -> list[dict[str, Any]]:
    return [offer for name, args in fw.log.events[start:] if name == "resourceOffers" for offer in args[0]]


@pytest.mark.slow
def test_decline_filters_suppress_and_revive(frameworks: Callable[..., RecordedFramework]) -> None:
    fw = frameworks()
    offers = fw.offers(count=2)
    mark = fw.log.mark()
    fw.driver.declineOffer([o["id"] for o in offers], {"refuse_seconds": 300})
    # Filtered for 300 s: heartbeats flow, offers do not.
    wait_for(lambda: len([n for n, _ in fw.log.events[mark:] if n == "heartbeat"]) >= 2, what="two heartbeats")
    assert _offer_events_between(fw, mark) == []
    mark = fw.log.mark()
    fw.driver.reviveOffers()  # clears the filters
    fw.offers(after=mark, count=2)
    mark = fw.log.mark()
    fw.driver.suppressOffers()
    fw.driver.declineOffer([o["id"] for o in _offer_events_between(fw, 0)[-2:]], {"refuse_seconds": 0})
    wait_for(lambda: len([n for n, _ in fw.log.events[mark:] if n == "heartbeat"]) >= 2, what="two heartbeats")
    assert _offer_events_between(fw, mark) == []
    started = time.monotonic()
    fw.driver.reviveOffers()
    fw.offers(after=mark, count=2)
    assert time.monotonic() - started < scaled(5)  # at once, not when the 300 s filter ends
