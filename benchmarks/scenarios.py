"""How the fleet paces its requests: closed loop, fixed rate, or a window of outstanding requests.

Every scenario is bounded twice: by a number of requests and by seconds of
sending, and then waits at most ``drain`` seconds for the replies still in
flight; whatever has not been answered by then is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace
from typing import Literal

from benchmarks.loadgen import Device, Fleet, Tally

Mode = Literal["closed", "rate", "window"]
TICK = 0.001  # pacing step of the fixed-rate sender


@dataclass(frozen=True, slots=True)
class Scenario:
    """One kind of load, e.g. ``window-q1``: a window of outstanding QoS 1 requests."""

    name: str
    mode: Mode
    qos: int
    requests: int
    seconds: float
    rate: float = 0.0  # requests per second, for "rate"
    window: int = 1  # requests in flight across the fleet, for "window"

    def scaled(self, factor: float) -> Scenario:
        """The same load with ``factor`` times the requests and seconds (at least 1 request)."""
        return replace(self, requests=max(1, int(self.requests * factor)), seconds=self.seconds * factor)

    def describe(self) -> str:
        """Human-readable load, for the report."""
        if self.mode == "closed":
            return f"closed loop (1 outstanding), QoS {self.qos}"
        if self.mode == "rate":
            return f"fixed rate {self.rate:g} req/s, QoS {self.qos}"
        return f"max throughput ({self.window} outstanding), QoS {self.qos}"


class Pacer:
    """Shared bookkeeping: the deadline of sending and the future that ends the scenario."""

    def __init__(self, fleet: Fleet, scenario: Scenario) -> None:
        self.fleet = fleet
        self.scenario = scenario
        self.deadline_ns = time.perf_counter_ns() + int(scenario.seconds * 1e9)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sending = True

    def may_send(self) -> bool:
        """Whether the request and time budgets allow one more request."""
        if self.sending and (
            self.fleet.tally.sent >= self.scenario.requests or time.perf_counter_ns() >= self.deadline_ns
        ):
            self.sending = False
        return self.sending

    def settle(self) -> None:
        """End the scenario once sending has stopped and nothing is outstanding."""
        if not self.sending and not self.fleet.outstanding and not self.done.done():
            self.done.set_result(None)


async def run_scenario(fleet: Fleet, scenario: Scenario, drain: float) -> Tally:
    """Run one scenario on a fresh tally and return it."""
    fleet.reset()
    pacer = Pacer(fleet, scenario)
    if scenario.mode == "closed":
        _start_closed(pacer)
    elif scenario.mode == "window":
        _start_window(pacer)
    else:
        await _send_at_rate(pacer)
    # TimeoutError here means lost requests: they are counted, not raised.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(pacer.done), scenario.seconds + drain)
    fleet.on_answer = None
    return fleet.reset()


def _start_closed(pacer: Pacer) -> None:
    """One request in flight at a time; the devices take turns."""
    fleet, qos = pacer.fleet, pacer.scenario.qos
    devices = fleet.devices

    def next_request(_: Device | None = None) -> None:
        if pacer.may_send():
            fleet.send(devices[fleet.tally.sent % len(devices)], qos)
        else:
            pacer.settle()

    fleet.on_answer = next_request
    next_request()
    fleet.flush()


def _start_window(pacer: Pacer) -> None:
    """``window`` requests in flight, spread over the devices; each answer lets its device send the next."""
    fleet, qos = pacer.fleet, pacer.scenario.qos
    devices = fleet.devices

    def refill(device: Device) -> None:
        if pacer.may_send():
            fleet.send(device, qos)
        else:
            pacer.settle()

    fleet.on_answer = refill
    for slot in range(pacer.scenario.window):
        if pacer.may_send():
            fleet.send(devices[slot % len(devices)], qos)
    fleet.flush()


async def _send_at_rate(pacer: Pacer) -> None:
    """Open loop: send on a fixed schedule whatever the replies do, then wait for the rest."""
    fleet, scenario = pacer.fleet, pacer.scenario
    devices = fleet.devices
    fleet.on_answer = lambda _device: pacer.settle()
    start = time.perf_counter_ns()
    while pacer.may_send():
        due = min(scenario.requests, int((time.perf_counter_ns() - start) * scenario.rate / 1e9) + 1)
        while fleet.tally.sent < due:
            fleet.send(devices[fleet.tally.sent % len(devices)], scenario.qos)
        fleet.flush()
        await asyncio.sleep(TICK)
    pacer.settle()


async def wait_until_answered(fleet: Fleet, timeout: float, attempt: float = 0.25) -> float:
    """Send the first device's request until one is answered correctly; return the seconds it took.

    An error reply is not an answer: a gateway on the mesos executor says
    ``unavailable`` until its executors are warm, so the probe asks again.
    Raises ``TimeoutError`` when nothing answers correctly within ``timeout``.
    """
    device = fleet.devices[0]
    started = time.monotonic()
    last_error = "no reply"
    for _ in range(int(timeout / attempt) + 1):
        fleet.reset()
        fleet.send(device, 1)
        fleet.flush()
        for _ in range(int(attempt / 0.005)):  # an error reply waits out the attempt: no busy retries
            await asyncio.sleep(0.005)
            tally = fleet.tally
            if tally.answered and not tally.errors:
                fleet.reset()
                return time.monotonic() - started
        if fleet.tally.error_samples:
            last_error = fleet.tally.error_samples[-1]
        if time.monotonic() - started > timeout:
            break
    fleet.reset()
    raise TimeoutError(f"no correct answer to {device.request_topic} within {timeout:g} s (last: {last_error})")


def default_scenarios(rate: float = 1000.0, window: int = 500) -> tuple[Scenario, ...]:
    """The six loads of a full run: closed loop, fixed rate and max throughput, each at QoS 0 and 1."""
    loads: list[Scenario] = []
    for qos in (0, 1):
        loads.append(Scenario(f"closed-q{qos}", "closed", qos, requests=2000, seconds=2.0))
    for qos in (0, 1):
        loads.append(Scenario(f"rate-q{qos}", "rate", qos, requests=int(rate * 1.5), seconds=1.5, rate=rate))
    for qos in (0, 1):
        loads.append(Scenario(f"window-q{qos}", "window", qos, requests=40000, seconds=2.0, window=window))
    return tuple(loads)
