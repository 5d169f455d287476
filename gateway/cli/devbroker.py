"""A private mosquitto on a free 127.0.0.1 port, for the demo, the tests and the benchmark.

It never touches the system broker on 1883: it writes its own configuration
(``gateway/data/mosquitto.conf`` plus a listener and a data directory), starts
``mosquitto`` as a child process, waits until the port accepts connections and
stops the process by its pid.

Ports come from :func:`lease_port`, not from "bind port 0, close, hand the number
on": a port the kernel just gave out as ephemeral can be given again at once to
any outgoing connection, so two things started together could meet on it. A
lease is a port below the kernel's ephemeral range (which outgoing connections
never take), free when it is leased, and held under an ``flock`` until released,
so no other process of ours (a parallel test worker, a second demo) leases it
meanwhile, even while its broker is down for a restart. mosquitto cannot report
a port it picked itself, so a broker whose listener still fails to bind ("address
in use": some other program) retries on a new lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
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


class _PortTaken(Exception):
    """mosquitto's listener found its port in use."""


LEASE_DIR = Path(tempfile.gettempdir()) / "roost-port-leases"
_LEASE_SPAN = 12000  # ports leased from, just below the ephemeral range
_BIND_RETRIES = 5  # brokers started again on a new lease when their port turns out taken


def _leasable_range() -> range:
    """Ports below the kernel's ephemeral range, which outgoing connections never take."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    low = max(low, 2048)
    return range(max(1024, low - _LEASE_SPAN), low)


class PortLease:
    """A TCP port on 127.0.0.1 held for one user until :meth:`release` (see the module docstring)."""

    def __init__(self, port: int, lock: int) -> None:
        self.port = port
        self._lock: int | None = lock

    def release(self) -> None:
        """Let other processes lease the port again."""
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)  # closing the descriptor drops the flock

    def __enter__(self) -> PortLease:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))  # no SO_REUSEADDR: a port with connections in TIME_WAIT is passed over
        except OSError:
            return False
    return True


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself has a listening TCP socket on ``port`` (not some other program)."""
    try:
        owned = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:  # it exited meanwhile (its exit is seen next)
        return False
    for row in rows:
        fields = row.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.rpartition(":")[2], 16) == port and f"socket:[{inode}]" in owned:
            return True
    return False


def lease_port(attempts: int = 200) -> PortLease:
    """A port on 127.0.0.1 that is free now and that no other process of ours leases until it is released."""
    LEASE_DIR.mkdir(mode=0o777, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        LEASE_DIR.chmod(0o777)  # shared by every user who runs the demo or the tests here
    ports = _leasable_range()
    for _ in range(attempts):
        port = random.choice(ports)
        lock = os.open(LEASE_DIR / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            continue
        if _bindable(port):
            return PortLease(port, lock)
        os.close(lock)
    raise BrokerStartError(f"no free port found on 127.0.0.1 in {ports.start}-{ports.stop - 1}")


def base_config() -> str:
    """The project's mosquitto settings (without listener and data directory)."""
    return resources.files("gateway").joinpath("data/mosquitto.conf").read_text()


class LocalBroker:
    """A mosquitto process listening on 127.0.0.1:``port``, persisting into ``data_dir``."""

    def __init__(
        self, port: int | None = None, data_dir: Path | None = None, extra_config: str = "", base: str | None = None
    ) -> None:
        self._lease: PortLease | None = None
        if port is None:
            self._lease = lease_port()
            port = self._lease.port
        self.port = port
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
        """Start mosquitto and wait until it accepts connections.

        A leased port that another program took meanwhile is swapped for a new lease (at most
        a few times); a port the caller chose is kept, and its failure raised.
        """
        binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
        )
        if binary is None:
            raise BrokerStartError("mosquitto is not installed (apt-get install mosquitto)")
        for _ in range(_BIND_RETRIES):
            try:
                return self._start_once(binary, timeout)
            except _PortTaken:
                if self._lease is None:
                    raise BrokerStartError(f"mosquitto could not listen on 127.0.0.1:{self.port}: in use") from None
                self._lease.release()
                self._lease = lease_port()
                self.port = self._lease.port
        raise BrokerStartError(f"mosquitto found its port taken {_BIND_RETRIES} times in a row")

    def _start_once(self, binary: str, timeout: float) -> LocalBroker:
        config = self.write_config()
        log_path = self.data_dir / "mosquitto.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        log = open(log_path, "ab")  # noqa: SIM115 - kept open for the child
        self.process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = log_path.read_bytes()[offset:].decode(errors="replace")
                code, self.process = self.process.returncode, None
                if "Address already in use" in text:
                    raise _PortTaken
                raise BrokerStartError(f"mosquitto exited with code {code}: {text[-2000:]}")
            if _listens(self.process.pid, self.port):
                return self
            time.sleep(0.02)  # a poll interval while mosquitto starts
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
        """Stop, release the port, and remove the data directory when this object created it."""
        self.stop()
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
