"""The local executor with real worker processes: results, errors, timeouts, crashes, overload, stop."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway import codec
from gateway.errors import (
    BadResult,
    CallTimeout,
    FunctionError,
    InternalError,
    Overloaded,
    RegistryError,
    Unavailable,
    WireError,
)
from gateway.executors import framing
from gateway.executors.base import Call
from gateway.executors.local.executor import LocalExecutor
from gateway.registry import routers_of
from tests.support.timeouts import scaled

MODULE = "tests.unit.funcs_for_executor"
SPECS = {spec.key: spec for spec in routers_of(MODULE)}
T = TypeVar("T")


def run(test: Callable[[], Awaitable[T]]) -> T:
    """Run an async test body with an overall bound, so a bug fails the test instead of hanging it."""

    async def bounded() -> T:
        return await asyncio.wait_for(test(), scaled(30))

    return asyncio.run(bounded())


@asynccontextmanager
async def pool(workers: int = 1, max_queue: int = 100, max_result: int = 1000) -> AsyncIterator[LocalExecutor]:
    executor = LocalExecutor([MODULE], workers, max_queue, max_result)
    await executor.start()
    try:
        yield executor
    finally:
        await executor.stop(0)


def submit(
    executor: LocalExecutor, key: str, timeout: float | None = None, expires_at: float | None = None, **kwargs: Any
) -> asyncio.Future[bytes]:
    """Submit a call; its timeout is a generous scaled one unless the test times it itself."""
    return executor.submit(Call(SPECS[key], kwargs, scaled(10) if timeout is None else timeout, expires_at))


async def result(future: Awaitable[bytes]) -> Any:
    return codec.decode(await asyncio.wait_for(future, scaled(20)), 1 << 20)


async def failure(future: Awaitable[bytes]) -> WireError:
    with pytest.raises(WireError) as caught:
        await asyncio.wait_for(future, scaled(20))
    return caught.value


def runs(path: Path) -> Counter[str]:
    """How many times each token was really run by ``t/mark``."""
    return Counter(path.read_text().split()) if path.exists() else Counter()


def test_results_of_sync_async_and_large_functions() -> None:
    async def body() -> None:
        async with pool(max_result=5000) as ex:
            assert await result(submit(ex, "t/add", a=2, b=3)) == 5
            assert await result(submit(ex, "t/wait", seconds=0.01, value="later")) == "later"
            assert await result(submit(ex, "t/big", size=4000)) == b"x" * 4000
            assert ex.in_flight == 0

    run(body)


def test_function_errors_and_bad_results_have_clear_messages() -> None:
    async def body() -> None:
        async with pool() as ex:
            raised = await failure(submit(ex, "t/raise", message="no such sensor"))
            assert (type(raised), raised.message) == (FunctionError, "ValueError: no such sensor")
            opaque = await failure(submit(ex, "t/opaque"))
            assert type(opaque) is BadResult
            assert opaque.message == "result cannot be encoded as msgpack: cannot encode object of type object"
            big = await failure(submit(ex, "t/big", size=2000))
            assert (type(big), big.message) == (BadResult, "result is 2003 bytes, over the limit of 1000")
            unpicklable = await failure(submit(ex, "t/add", a=lambda: 1, b=2))
            assert type(unpicklable) is InternalError
            assert unpicklable.message.startswith("the arguments cannot be sent to a worker process")
            assert await result(submit(ex, "t/add", a=1, b=1)) == 2  # the worker survived all of it

    run(body)


def test_timeout_kills_the_worker_and_a_replacement_serves() -> None:
    async def body() -> None:
        async with pool() as ex:
            first = await result(submit(ex, "t/pid"))
            timed_out = await failure(submit(ex, "t/sleep", timeout=0.3, seconds=30))
            assert (type(timed_out), timed_out.message) == (CallTimeout, "function did not finish within 0.3 s")
            second = await result(submit(ex, "t/pid"))
            assert second != first
            assert not pid_alive(first)
            assert ex.stats.restarts == 1 and ex.stats.alive == 1

    run(body)


def test_timeout_clock_starts_when_the_call_starts() -> None:
    async def body() -> None:
        async with pool() as ex:
            # The second call waits for the only worker as long as its own timeout, then runs briefly: were
            # the clock started at submission, it would time out however fast the machine.
            wait = scaled(0.6)
            ahead = submit(ex, "t/sleep", seconds=wait)
            behind = submit(ex, "t/sleep", timeout=wait, seconds=0.05)
            assert [await result(ahead), await result(behind)] == [wait, 0.05]

    run(body)


@pytest.mark.parametrize(
    ("key", "code"),
    [("t/exit", 3), ("t/segfault", -11)],
)
def test_crash_is_answered_and_the_pool_heals(key: str, code: int) -> None:
    async def body() -> None:
        async with pool() as ex:
            first = await result(submit(ex, "t/pid"))
            crashed = await failure(submit(ex, key))
            assert type(crashed) is FunctionError
            assert crashed.message == f"worker process died while running the function (exit code {code})"
            assert await result(submit(ex, "t/pid")) != first
            assert ex.stats.restarts == 1

    run(body)


@pytest.mark.parametrize("then", ["exit", "hang"])
def test_calls_queued_behind_a_crash_or_timeout_run_once(then: str, tmp_path: Path) -> None:
    path = str(tmp_path / "runs")

    async def body() -> None:
        async with pool() as ex:
            for n in range(3):  # mark becomes a known-quick function, so calls queue behind it in the worker
                await result(submit(ex, "t/mark", path=path, token=f"warm{n}"))
            # A hang is cut by the timeout under test; an exit must not be (hence a generous one).
            timeout = 0.5 if then == "hang" else scaled(10)
            doomed = submit(ex, "t/mark", timeout=timeout, path=path, token="doomed", then=then)
            behind = [submit(ex, "t/mark", path=path, token=f"q{n}") for n in range(40)]
            error = await failure(doomed)
            assert type(error) is (FunctionError if then == "exit" else CallTimeout)
            assert [await result(f) for f in behind] == [f"q{n}" for n in range(40)]

    run(body)
    assert runs(tmp_path / "runs") == Counter(["warm0", "warm1", "warm2", "doomed"] + [f"q{n}" for n in range(40)])


def test_overloaded_at_once_when_the_queue_is_full() -> None:
    async def body() -> None:
        async with pool(max_queue=3) as ex:
            accepted = [submit(ex, "t/sleep", seconds=0.2) for _ in range(3)]
            with pytest.raises(Overloaded) as caught:
                submit(ex, "t/add", a=1, b=1)
            assert caught.value.message == "3 calls are queued or running in worker processes, the limit is 3"
            assert [await result(f) for f in accepted] == [0.2] * 3
            assert await result(submit(ex, "t/add", a=1, b=1)) == 2  # room again

    run(body)


def test_expired_call_is_answered_timeout_and_not_run(tmp_path: Path) -> None:
    path = str(tmp_path / "runs")

    async def body() -> None:
        async with pool() as ex:
            late = await failure(submit(ex, "t/mark", expires_at=time.monotonic() - 1, path=path, token="late"))
            assert (type(late), late.message) == (CallTimeout, "the request expired before it could run")
            # This one expires while it waits for the only worker.
            busy = submit(ex, "t/sleep", seconds=0.5)
            waiting = submit(ex, "t/mark", expires_at=time.monotonic() + 0.1, path=path, token="waited")
            assert type(await failure(waiting)) is CallTimeout
            assert await result(busy) == 0.5

    run(body)
    assert runs(tmp_path / "runs") == Counter()


def test_stop_fails_pending_calls_and_leaves_no_worker_alive() -> None:
    async def body() -> None:
        ex = LocalExecutor([MODULE], 2, 100, 1000)
        await ex.start()
        pids = {await result(f) for f in [submit(ex, "t/pid"), submit(ex, "t/pid")]}
        assert len(pids) == 2
        finishing = submit(ex, "t/sleep", seconds=0.1)
        hanging = submit(ex, "t/sleep", seconds=30)
        queued_quick = submit(ex, "t/add", a=1, b=1)  # runs once the first sleep is done
        queued_stuck = [submit(ex, "t/sleep", seconds=30) for _ in range(3)]
        await ex.stop(grace=scaled(1.0))  # the hanging ones outlast it, the first two do not
        assert [await result(finishing), await result(queued_quick)] == [0.1, 2]  # within the grace period
        for future in [hanging, *queued_stuck]:  # running or still queued when the grace period ended
            error = await failure(future)
            assert (type(error), error.message) == (Unavailable, "the gateway stopped before the call finished")
        assert ex.in_flight == 0
        assert not any(pid_alive(pid) for pid in pids)
        with pytest.raises(Unavailable, match="the gateway is stopping"):
            submit(ex, "t/add", a=1, b=1)

    run(body)


def test_many_concurrent_calls_are_all_answered() -> None:
    async def body() -> None:
        async with pool(workers=2, max_queue=5000) as ex:
            futures = [submit(ex, "t/add", a=n, b=1) for n in range(2000)]
            futures += [submit(ex, "t/wait", seconds=0, value=str(n)) for n in range(200)]
            results = [codec.decode(data, 100) for data in await asyncio.wait_for(asyncio.gather(*futures), scaled(20))]
            assert results == [n + 1 for n in range(2000)] + [str(n) for n in range(200)]
            assert ex.in_flight == 0 and ex.stats.alive == 2

    run(body)


def test_start_fails_clearly_when_a_module_cannot_be_imported() -> None:
    async def body() -> None:
        ex = LocalExecutor(["tests.unit.no_such_module"], 1, 10, 1000)
        with pytest.raises(RegistryError) as caught:
            await ex.start()
        assert str(caught.value).startswith("cannot import function module 'tests.unit.no_such_module': No module")
        with pytest.raises(Unavailable):
            submit(ex, "t/add", a=1, b=1)

    run(body)


def test_start_fails_clearly_when_a_worker_cannot_load_the_functions() -> None:
    async def body() -> None:
        ex = LocalExecutor([f"{MODULE}:gateway_only"], 1, 10, 1000)
        with pytest.raises(RegistryError) as caught:
            await ex.start()
        assert str(caught.value) == (
            "a worker process could not load the functions: RegistryError: "
            f"function module {MODULE!r} has no Router named 'gateway_only'"
        )

    run(body)


def test_frame_reader_reassembles_frames_split_across_reads() -> None:
    frames = [framing.reply_frame(n, framing.ReplyKind.OK, n, b"r" * n) for n in range(1, 6)]
    stream = b"".join(frames)
    reader = framing.FrameReader(1000)
    got = [body for cut in range(0, len(stream), 7) for body in reader.feed(stream[cut : cut + 7])]
    assert got == [frame[4:] for frame in frames]
    with pytest.raises(framing.FrameError):
        framing.FrameReader(10).feed(framing.reply_frame(1, framing.ReplyKind.OK, 0, b"x" * 20))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
