"""The SDK's one exception tree, rooted in :class:`SdkError`.

MicroPython-safe. MicroPython exception instances cannot be given new attributes
in ``__init__`` on every port, so each class keeps its data in ``self.args`` and
exposes it through read-only properties.

Errors the gateway sends back (``{"error": {...}}``) are :class:`RemoteError`,
one subclass per wire code (``docs/protocol.md``); :func:`remote_error` builds
the right one. :class:`CallTimeout` is local: no reply came in time. It is not
a :class:`RemoteError` and not the gateway's ``timeout`` code
(:class:`RemoteTimeout`).
"""


class SdkError(Exception):
    """Root of every error the device SDK raises."""


class RemoteError(SdkError):
    """The gateway answered with an error. ``args`` is ``(code, message, details)``."""

    @property
    def code(self) -> str:
        """The stable wire code, e.g. ``"invalid_arguments"``."""
        return self.args[0]  # type: ignore[no-any-return]

    @property
    def message(self) -> str:
        """The gateway's human-readable message."""
        return self.args[1] if len(self.args) > 1 else ""

    @property
    def details(self) -> "list[object] | None":
        """Optional details (a list), e.g. which argument was invalid."""
        return self.args[2] if len(self.args) > 2 else None

    def __str__(self) -> str:
        return self.code + ": " + self.message


class BadPayload(RemoteError):
    """``bad_payload``: the request was not a valid msgpack map, or too large."""


class InvalidArguments(RemoteError):
    """``invalid_arguments``: the arguments do not match the function's signature."""


class NotFound(RemoteError):
    """``not_found``: no function is registered at the topic."""


class FunctionError(RemoteError):
    """``function_error``: the function raised (or its worker died)."""


class BadResult(RemoteError):
    """``bad_result``: the function's result could not be encoded or was too large."""


class RemoteTimeout(RemoteError):
    """``timeout``: the function ran past its timeout, or the request expired before it ran."""


class Overloaded(RemoteError):
    """``overloaded``: the gateway's queue is full; try again later."""


class RateLimited(RemoteError):
    """``rate_limited``: this device sent more requests than its rate limit allows; slow down."""


class Unavailable(RemoteError):
    """``unavailable``: the gateway could not run the call (for example, it was stopping)."""


class InternalError(RemoteError):
    """``internal``: a gateway bug."""


_BY_CODE = {
    "bad_payload": BadPayload,
    "invalid_arguments": InvalidArguments,
    "not_found": NotFound,
    "function_error": FunctionError,
    "bad_result": BadResult,
    "timeout": RemoteTimeout,
    "overloaded": Overloaded,
    "rate_limited": RateLimited,
    "unavailable": Unavailable,
    "internal": InternalError,
}


def remote_error(code: str, message: str, details: "list[object] | None" = None) -> RemoteError:
    """The exception for a wire error; unknown codes give a plain :class:`RemoteError`."""
    cls = _BY_CODE.get(code, RemoteError)
    if details is None:
        return cls(code, message)
    return cls(code, message, details)


class CallTimeout(SdkError):
    """No reply arrived in time. ``args`` is ``(topic, timeout_seconds)``."""

    @property
    def topic(self) -> str:
        """The topic that was called."""
        return self.args[0]  # type: ignore[no-any-return]

    @property
    def timeout(self) -> float:
        """How long the call waited, in seconds."""
        return self.args[1]  # type: ignore[no-any-return]

    def __str__(self) -> str:
        return "no reply from " + str(self.args[0]) + " within " + str(self.args[1]) + " s"


class NotConnected(SdkError):
    """The device has no broker connection and could not reconnect now."""


class ConnectError(SdkError):
    """The broker could not be reached or refused the connection."""


class BadReply(SdkError):
    """A reply arrived that is not a valid Roost reply (not msgpack, not a map, no result or error)."""


class EncodeError(SdkError):
    """A value cannot be encoded as msgpack (unsupported type, or an int beyond 64 bits)."""


class DecodeError(SdkError):
    """Bytes are not one valid msgpack value of the supported types."""
