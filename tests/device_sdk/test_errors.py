"""The exception tree: one class per wire code, data kept in ``args`` (as MicroPython needs)."""

from __future__ import annotations

import pytest

from device_sdk import errors

CODES = {
    "bad_payload": errors.BadPayload,
    "invalid_arguments": errors.InvalidArguments,
    "not_found": errors.NotFound,
    "function_error": errors.FunctionError,
    "bad_result": errors.BadResult,
    "timeout": errors.RemoteTimeout,
    "overloaded": errors.Overloaded,
    "rate_limited": errors.RateLimited,
    "unavailable": errors.Unavailable,
    "internal": errors.InternalError,
}


@pytest.mark.parametrize(("code", "cls"), sorted(CODES.items()))
def test_each_wire_code_has_its_class(code: str, cls: type[errors.RemoteError]) -> None:
    error = errors.remote_error(code, "what happened", [{"loc": ["a"]}])
    assert type(error) is cls
    assert (error.code, error.message, error.details) == (code, "what happened", [{"loc": ["a"]}])
    assert str(error) == f"{code}: what happened"
    assert isinstance(error, errors.RemoteError) and isinstance(error, errors.SdkError)


def test_unknown_codes_stay_remote_errors() -> None:
    error = errors.remote_error("new_code", "from a newer gateway")
    assert type(error) is errors.RemoteError and error.code == "new_code" and error.details is None


def test_call_timeout_is_local_and_distinct_from_the_remote_timeout() -> None:
    timeout = errors.CallTimeout("devices/d1/add", 2.5)
    assert (timeout.topic, timeout.timeout) == ("devices/d1/add", 2.5)
    assert str(timeout) == "no reply from devices/d1/add within 2.5 s"
    assert not isinstance(timeout, errors.RemoteError)
    assert not issubclass(errors.RemoteTimeout, errors.CallTimeout)


def test_every_sdk_error_has_one_root() -> None:
    for cls in (errors.NotConnected, errors.ConnectError, errors.BadReply, errors.EncodeError, errors.DecodeError):
        assert issubclass(cls, errors.SdkError)
