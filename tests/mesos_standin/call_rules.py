"""Request rules shared by the master's scheduler API and the agents' executor API."""

from __future__ import annotations

from tests.mesos_standin.http import Request, Response


def check_request(request: Request) -> Response | None:
    """The method and content-type rules shared by the master and agent APIs."""
    if request.method != "POST":
        return Response(405, b"Expecting 'POST'", headers={"Allow": "POST"})
    content_type = request.headers.get("content-type")
    if content_type is None:
        return Response.text(400, "Expecting 'Content-Type' to be present")
    media = content_type.split(";")[0].strip().lower()
    if media == "application/x-protobuf":
        return Response.text(415, "The stand-in speaks only 'application/json'")
    if media != "application/json":
        return Response.text(415, "Expecting 'Content-Type' of application/json or application/x-protobuf")
    return None


def accepts_json(request: Request) -> bool:
    """True when ``Accept`` is absent or allows JSON (SUBSCRIBE answers with 406 otherwise)."""
    accept = request.headers.get("accept")
    if accept is None:
        return True
    media_types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return any(m in ("application/json", "application/*", "*/*") for m in media_types)
