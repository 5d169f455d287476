"""A private mosquitto on a free 127.0.0.1 port, for the demo, the tests and the benchmark.

It never touches the system broker on 1883: it writes its own configuration
(``gateway/data/mosquitto.conf`` plus a listener and a data directory), starts
``mosquitto`` as a child process, waits until the port accepts connections and
stops the process by its pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path
from types import TracebackType

from gateway.errors import RoostError


class BrokerStartError(RoostError):
    """mosquitto could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_config() -> str:
    """The project's mosquitto settings (without listener and data directory)."""
    return resources.files("gateway").joinpath("data/mosquitto.conf").read_text()


class LocalBroker:
    """A mosquitto process listening on 127.0.0.1:``port``, persisting into ``data_dir``."""

    def __init__(
        self, port: int | None = None, data_dir: Path | None = None, extra_config: str = "", base: str | None = None
    ) -> None:
        self.port = port or free_port()
        self.base = base_config() if base is None else base  # the settings before the listener line
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="roost-broker-"))
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        """Write the full configuration file and return its path."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Started as root, mosquitto drops to the "mosquitto" user: it must be able to write
        # its persistence file here, or sessions do not survive a broker restart.
        self.data_dir.chmod(0o777)
        config = self.data_dir / "mosquitto.conf"
        config.write_text(
            self.base
            + f"\nlistener {self.port} 127.0.0.1\n"
            + f"persistence_location {self.data_dir}/\n"
            + self.extra_config
            + "\n"
        )
        return config

    def start(self, timeout: float = 10.0) -> LocalBroker:
        """Start mosquitto and wait until it accepts connections."""
        binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
        )
        if binary is None:
            raise BrokerStartError("mosquitto is not installed (apt-get install mosquitto)")
        config = self.write_config()
        log = open(self.data_dir / "mosquitto.log", "ab")  # noqa: SIM115 - kept open for the child
        self.process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = (self.data_dir / "mosquitto.log").read_text(errors="replace")[-2000:]
                raise BrokerStartError(f"mosquitto exited with code {self.process.returncode}: {text}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerStartError(f"mosquitto did not listen on port {self.port} within {timeout:g} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the mosquitto process by its pid (SIGTERM, then SIGKILL)."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def kill(self) -> None:
        """Kill mosquitto with SIGKILL (no persistence save), for crash tests."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5.0)
            self.process = None

    def cleanup(self) -> None:
        """Stop and remove the data directory when this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
