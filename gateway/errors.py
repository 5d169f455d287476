"""The one exception tree of the gateway, and the wire error codes.

Everything Roost raises derives from :class:`RoostError`, so callers can catch
broadly or precisely. Errors a device can receive derive from
:class:`WireError`; each wire code maps to exactly one class, and
:func:`error_for_code` maps back.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RoostError(Exception):
    """Root of every error raised by Roost."""


class ConfigError(RoostError):
    """A setting is invalid; the message names it. The gateway does not start."""


class RegistryError(RoostError):
    """A function or topic template cannot be registered (raised at import or start)."""


class TemplateError(RegistryError):
    """A topic template is malformed."""


class TransportError(RoostError):
    """The MQTT connection failed or was refused."""


class BrokerUnreachable(TransportError):
    """The broker could not be reached or refused the connection."""


class SubscriptionRefused(TransportError):
    """The broker refused a subscription."""


class WireError(RoostError):
    """An error that is sent back to the device as ``{"error": {...}}``.

    ``code`` is the stable wire code; ``message`` is human-readable and never
    carries a traceback or an internal path; ``details`` is an optional list of
    msgpack-encodable values.
    """

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` map of a reply."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class BadPayload(WireError):
    """The payload is not msgpack, not a map, or too large."""

    code = "bad_payload"


class InvalidArguments(WireError):
    """The arguments do not match the function's signature."""

    code = "invalid_arguments"


class NotFound(WireError):
    """No function is registered for a topic under the call namespace."""

    code = "not_found"


class FunctionError(WireError):
    """The function raised; the message is the exception's type and message."""

    code = "function_error"


class BadResult(WireError):
    """The function's result cannot be encoded or is too large."""

    code = "bad_result"


class CallTimeout(WireError):
    """The call did not finish in time, or the request expired before it ran."""

    code = "timeout"


class Overloaded(WireError):
    """The executor's bounded queue is full."""

    code = "overloaded"


class RateLimited(WireError):
    """The device sent more requests than its rate limit allows."""

    code = "rate_limited"


class Unavailable(WireError):
    """The executor cannot run the call now (stopping, worker lost, ...)."""

    code = "unavailable"


class InternalError(WireError):
    """A gateway bug; the log has the traceback, the wire only this message."""

    code = "internal"


WIRE_ERRORS: dict[str, type[WireError]] = {
    cls.code: cls
    for cls in (
        BadPayload,
        InvalidArguments,
        NotFound,
        FunctionError,
        BadResult,
        CallTimeout,
        Overloaded,
        RateLimited,
        Unavailable,
        InternalError,
    )
}


def error_for_code(code: str, message: str, details: list[Any] | None = None) -> WireError:
    """Rebuild the exception for a wire error code (unknown codes become ``internal``)."""
    cls = WIRE_ERRORS.get(code, InternalError)
    return cls(message, details)
