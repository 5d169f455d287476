"""``POST /api/v1/scheduler`` on the master: request rules, subscription checks, dispatch.

Rules as a real master enforces them (MESOS_API.md 4.1): 503 while recovering, 405/400/415 for
method and content type, 400 for a body that is not a Call; SUBSCRIBE needs an ``Accept``
allowing JSON (406), no ``Mesos-Stream-Id`` and matching framework ids (400); every other call
needs ``framework_id`` (400), a known framework (400), a subscribed one (403) and the current
stream id (400 when missing or stale).
"""

from __future__ import annotations

import time

from tests.mesos_standin import scheduler_calls
from tests.mesos_standin.call_rules import accepts_json, check_request
from tests.mesos_standin.http import Request, Response, StreamResponse
from tests.mesos_standin.master import Master
from tests.mesos_standin.protocol import SCHEDULER_CALLS, value_of

PATHS = ("/api/v1/scheduler", "/master/api/v1/scheduler")


def handle(master: Master, request: Request) -> Response | StreamResponse:
    """Serve one scheduler API request."""
    if time.monotonic() < master.unavailable_until:
        return Response.text(503, "Master has not finished recovery")
    problem = check_request(request)
    if problem is not None:
        return problem
    try:
        call = request.json()
    except ValueError as error:
        return Response.text(400, f"Failed to parse body into JSON: {error}")
    if not isinstance(call, dict) or call.get("type") not in SCHEDULER_CALLS:
        return Response.text(400, "Failed to convert JSON into Call protobuf: bad or missing 'type'")
    if call["type"] == "SUBSCRIBE":
        return _subscribe(master, request, call)
    framework_id = value_of(call.get("framework_id"))
    if framework_id is None:
        return Response.text(400, "Failed to validate scheduler::Call: Expecting 'framework_id' to be present")
    framework = master.frameworks.get(framework_id)
    if framework is None:
        return Response.text(400, "Framework cannot be found")
    if framework.subscription is None:
        return Response.text(403, "Framework is not subscribed")
    stream_id = request.headers.get("mesos-stream-id")
    if stream_id is None:
        return Response.text(400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header")
    if stream_id != framework.subscription.stream_id:
        return Response.text(
            400,
            f"The stream ID '{stream_id}' included in this request didn't match the stream "
            f"ID currently associated with framework ID {framework_id}",
        )
    return scheduler_calls.dispatch(master, framework, call)


def _subscribe(master: Master, request: Request, call: dict[str, object]) -> Response | StreamResponse:
    if master.faults.take_subscribe_503():
        return Response.text(503, "Stand-in fault: SUBSCRIBE refused with 503")
    if "mesos-stream-id" in request.headers:
        return Response.text(400, "Subscribe calls should not include the 'Mesos-Stream-Id' header")
    if not accepts_json(request):
        return Response.text(406, "Expecting 'Accept' to allow 'application/json'")
    subscribe = call.get("subscribe")
    info = subscribe.get("framework_info") if isinstance(subscribe, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("user"), str) or not isinstance(info.get("name"), str):
        return Response.text(
            400, "Failed to convert JSON into Call protobuf: 'subscribe.framework_info' needs 'user' and 'name'"
        )
    top_id, info_id = value_of(call.get("framework_id")), value_of(info.get("id"))
    if top_id != info_id:
        return Response.text(
            400, "Failed to validate scheduler::Call: 'framework_id' differs from 'subscribe.framework_info.id'"
        )
    return master.subscribe(info, info_id)
