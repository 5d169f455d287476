"""The direct channel in one event loop: real sockets, a fake local executor, connections broken on purpose.

Every wait here is bounded through the suite's timeout scale; the pool's timers (heartbeat, silence,
grace) are scaled alike and generous, since nothing here waits for them to fire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from gateway.errors import FunctionError, Unavailable
from gateway.executors.base import Call
from gateway.executors.local.executor import LocalExecutor
from gateway.executors.mesos.call_server import CallServer
from gateway.executors.mesos.channel import ChannelServer
from gateway.executors.mesos.remote_pool import RemotePool
from gateway.executors.mesos.tasks import ExecutorConfig
from gateway.registry import routers_of
from tests.support.timeouts import scaled, until

SPECS = {spec.key: spec for spec in routers_of("functions.examples")}
ADD = SPECS["devices/{device_id}/add"]
TOKEN = "secret-token"
HEARTBEAT, SILENCE = scaled(0.1), scaled(10.0)  # pings; a channel silent this long is closed
GRACE = ORPHAN = scaled(5.0)  # calls wait this long for a reconnect; an executor this long for its gateway


def bounded(seconds: float = 5.0) -> float:
    """A bound for one await, in base seconds, on this machine."""
    return scaled(seconds)


@dataclass
class FakeLocal:
    """Stands for the executor's LocalExecutor: records calls, the test settles them."""

    calls: list[tuple[Call, asyncio.Future[bytes]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def submit(self, call: Call) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.calls.append((call, future))
        self.arrived.set()
        return future


@dataclass
class Channel:
    """Both ends of a channel for one executor."""

    pool: RemotePool
    server: ChannelServer
    executor: CallServer
    local: FakeLocal
    serving: asyncio.Task[str]

    def link(self) -> Any:
        link = self.pool.link_for("e1")
        assert link is not None
        return link


def run(test: Callable[[], Awaitable[None]]) -> None:
    """Run an async test body with an overall bound."""

    async def bounded() -> None:
        await asyncio.wait_for(test(), scaled(20))

    asyncio.run(bounded())


@asynccontextmanager
async def open_channel() -> AsyncIterator[Channel]:
    """A channel server, its pool with one launched executor ``e1``, and that executor connected."""
    pool = RemotePool(max_queue=100, reconnect_grace=GRACE, heartbeat=HEARTBEAT, channel_timeout=SILENCE)
    pool.bind(asyncio.get_running_loop())
    server = ChannelServer(pool, "127.0.0.1", 0, 1 << 16)
    await server.start()
    pool.add_link("e1", TOKEN, "agent-0")
    local = FakeLocal()
    config = ExecutorConfig(
        f"127.0.0.1:{server.port}", TOKEN, ("functions.examples",), 1, 1 << 16, HEARTBEAT, SILENCE, ORPHAN
    )
    hello = {"executor_id": "e1", "token": TOKEN, "workers": 1}
    executor = CallServer(config, cast(LocalExecutor, local), dict(SPECS), hello)
    serving = asyncio.create_task(executor.run())
    assert await pool.wait_for_executors(1, bounded(), lambda: False) == 1
    yield Channel(pool, server, executor, local, serving)
    await executor.close()
    await server.stop()
    await asyncio.wait_for(serving, bounded())


def add(a: int, b: int) -> Call:
    return Call(ADD, {"a": a, "b": b}, timeout=5.0)


def test_a_call_and_its_result_cross_the_channel() -> None:
    async def body() -> None:
        async with open_channel() as channel:
            future = channel.pool.submit(add(1, 2), ADD.key)
            await until(lambda: channel.local.calls)
            call, running = channel.local.calls[0]
            assert call.kwargs == {"a": 1, "b": 2} and call.spec is ADD
            await until(lambda: not channel.link().unacked)  # the executor acknowledged what it read
            sent_at = channel.link().last_busy
            running.set_result(b"\x03")
            assert await asyncio.wait_for(future, bounded()) == b"\x03"
            assert channel.link().last_busy > sent_at  # its idle time (the elastic pool's) starts at its last result
            errored = channel.pool.submit(add(1, 1), ADD.key)
            await until(lambda: len(channel.local.calls) == 2)
            channel.local.calls[1][1].set_exception(FunctionError("ValueError: no"))
            with pytest.raises(FunctionError, match="ValueError: no"):
                await asyncio.wait_for(errored, bounded())

    run(body)


def test_a_broken_connection_loses_no_call_and_runs_none_twice() -> None:
    async def body() -> None:
        async with open_channel() as channel:
            first = channel.pool.submit(add(1, 2), ADD.key)
            await until(lambda: channel.local.calls and not channel.link().unacked)
            link = channel.link()
            old = link.connection
            # In one turn: the connection breaks, a call is sent into the closing connection (lost, unacked), and
            # the first call finishes (its result written into a dead socket, or kept until the reconnect).
            old.close("broken on purpose")
            second = channel.pool.submit(add(3, 4), ADD.key)
            channel.local.calls[0][1].set_result(b"\x03")
            # The executor reconnects; the gateway resends the unacked call and asks again for the acked one.
            assert await asyncio.wait_for(first, bounded()) == b"\x03"
            await until(lambda: len(channel.local.calls) == 2)
            assert link.connection is not old
            channel.local.calls[1][1].set_result(b"\x07")
            assert await asyncio.wait_for(second, bounded()) == b"\x07"
            # The channel keeps order: any duplicate from the reconnect would arrive before a later call.
            third = channel.pool.submit(add(5, 6), ADD.key)
            await until(lambda: len(channel.local.calls) >= 3)
            channel.local.calls[-1][1].set_result(b"\x0b")
            assert await asyncio.wait_for(third, bounded()) == b"\x0b"
            assert [c.kwargs for c, _ in channel.local.calls] == [{"a": 1, "b": 2}, {"a": 3, "b": 4}, {"a": 5, "b": 6}]

    run(body)


def test_calls_on_a_lost_executor_are_answered_unavailable_and_queued_ones_wait() -> None:
    async def body() -> None:
        async with open_channel() as channel:
            sent = channel.pool.submit(add(1, 2), ADD.key)
            await until(lambda: channel.local.calls)
            channel.pool.remove_link("e1", "TASK_LOST: agent gone")
            with pytest.raises(Unavailable, match="the Mesos executor running the call was lost: TASK_LOST"):
                await asyncio.wait_for(sent, bounded())
            queued = channel.pool.submit(add(5, 6), ADD.key)
            for _ in range(3):  # a few turns of the loop: dispatch runs, and finds no executor
                await asyncio.sleep(0)
            assert not queued.done() and channel.pool.queued == 1
            await channel.pool.stop(0)
            with pytest.raises(Unavailable, match="the gateway stopped"):
                await queued

    run(body)


def test_an_executor_with_a_wrong_token_is_refused() -> None:
    async def body() -> None:
        pool = RemotePool(max_queue=10, reconnect_grace=GRACE, heartbeat=HEARTBEAT, channel_timeout=SILENCE)
        pool.bind(asyncio.get_running_loop())
        server = ChannelServer(pool, "127.0.0.1", 0, 1 << 16)
        await server.start()
        pool.add_link("e1", TOKEN, "agent-0")
        config = ExecutorConfig(
            f"127.0.0.1:{server.port}", "forged", ("functions.examples",), 1, 1 << 16, HEARTBEAT, SILENCE, ORPHAN
        )
        hello = {"executor_id": "e1", "token": "forged", "workers": 1}
        executor = CallServer(config, cast(LocalExecutor, FakeLocal()), dict(SPECS), hello)
        why = await asyncio.wait_for(executor.run(), bounded())
        assert why.startswith("the gateway refused this executor: executor 'e1' was not launched by this gateway")
        assert pool.usable() == 0
        await server.stop()

    run(body)
