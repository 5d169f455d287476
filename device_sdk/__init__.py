"""Roost's device SDK: call gateway functions, publish events and handle pushed data over MQTT.

``Device`` is picked at run time: on MicroPython it is
:class:`~device_sdk.polled.PolledDevice` (umqtt, MQTT 3.1.1, driven by ``poll``);
on CPython :class:`~device_sdk.threaded.ThreadedDevice` (paho, MQTT 5, background
threads, futures). Both take the same arguments for the same things. See
``device_sdk/README.md``.
"""

import sys

from device_sdk.errors import (
    BadPayload,
    BadReply,
    BadResult,
    CallTimeout,
    ConnectError,
    DecodeError,
    EncodeError,
    FunctionError,
    InternalError,
    InvalidArguments,
    NotConnected,
    NotFound,
    Overloaded,
    RemoteError,
    RemoteTimeout,
    SdkError,
    Unavailable,
)

TYPE_CHECKING = False
if TYPE_CHECKING or sys.implementation.name != "micropython":
    from device_sdk.threaded import ThreadedDevice as Device
else:
    from device_sdk.polled import PolledDevice as Device

__all__ = [
    "BadPayload",
    "BadReply",
    "BadResult",
    "CallTimeout",
    "ConnectError",
    "DecodeError",
    "Device",
    "EncodeError",
    "FunctionError",
    "InternalError",
    "InvalidArguments",
    "NotConnected",
    "NotFound",
    "Overloaded",
    "RemoteError",
    "RemoteTimeout",
    "SdkError",
    "Unavailable",
]
