"""The exit codes of every ``roost`` command, in one place (sysexits.h where one fits).

systemd's ``RestartPreventExitStatus`` in deploy/roost.service names :attr:`Exit.CONFIG`: a
configuration that is wrong does not fix itself by restarting.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """What a ``roost`` command's exit status means."""

    OK = 0
    ERROR = 1  # run: the gateway failed; call: an error reply; status: alive but not ready
    TIMEOUT = 2  # call: no reply within --timeout
    USAGE = 64  # EX_USAGE: a command-line argument that does not parse
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the broker (run) or the endpoint (status) does not answer
    CONFIG = 78  # EX_CONFIG: the settings or the function modules are wrong
