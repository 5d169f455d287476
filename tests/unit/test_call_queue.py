"""The call queue both executors are built on: the same cause gets the same answer on local and on Mesos.

The whole proof on real workers is tests/mesos/test_gateway_mesos.py (an unpicklable argument, a worker
that dies, a call that times out: the same replies from both executors); here, without processes, the
admission both share: an argument pickle refuses is ``internal`` (never ``unavailable``, which a device and
the gateway's own retries would try again), and a full queue is ``overloaded`` at once.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import InternalError, Overloaded
from gateway.executors.base import Call
from gateway.executors.call_queue import CallQueue
from gateway.executors.local.executor import LocalExecutor
from gateway.executors.mesos.remote_pool import RemotePool
from gateway.registry import Router

router = Router()


@router.function("t/add")
def add(a: int, b: int) -> int:
    return a + b


SPEC = router.specs[0]


def unpicklable_call() -> Call:
    return Call(SPEC, {"a": lambda: 1, "b": 2}, timeout=1.0)


def test_both_executors_answer_an_unpicklable_argument_internal_with_the_same_message() -> None:
    async def scenario() -> list[BaseException | None]:
        loop = asyncio.get_running_loop()
        local = LocalExecutor(["tests.unit.test_call_queue"], 1, 10, 1 << 20)
        local._loop, local._state, local._keys = loop, "running", frozenset({SPEC.key})  # no worker is needed
        mesos = RemotePool(max_queue=10, reconnect_grace=1.0, heartbeat=1.0, channel_timeout=1.0)
        mesos.bind(loop)
        futures = [local.submit(unpicklable_call()), mesos.submit(unpicklable_call(), SPEC.key)]
        return [future.exception() for future in futures]

    local_error, mesos_error = asyncio.run(scenario())
    assert type(local_error) is InternalError and type(mesos_error) is InternalError
    assert local_error.message == mesos_error.message
    assert local_error.message.startswith("the arguments cannot be sent to a worker process: ")


def test_a_full_queue_is_overloaded_at_once_and_counts_nothing() -> None:
    class Held(CallQueue):
        def _dispatch(self) -> None:
            self._dispatch_soon = False  # nothing runs the calls: they stay queued

    async def scenario() -> tuple[int, str]:
        queue = Held(2, "nowhere")
        queue._loop = asyncio.get_running_loop()
        for _ in range(2):
            future, pending = queue._admit(Call(SPEC, {"a": 1, "b": 2}, timeout=1.0), lambda call_id: b"x")
            assert pending is not None and not future.done()
        with pytest.raises(Overloaded) as refused:
            queue._admit(Call(SPEC, {"a": 1, "b": 2}, timeout=1.0), lambda call_id: b"x")
        return queue.in_flight, refused.value.message

    assert asyncio.run(scenario()) == (2, "2 calls are queued or running nowhere, the limit is 2")
