"""The local executor: warm worker processes on the gateway's machine.

:mod:`~gateway.executors.local.executor` queues and dispatches calls, :mod:`~gateway.executors.local.pool`
starts, feeds and replaces the workers, and :mod:`~gateway.executors.local.worker` is what runs inside one.
"""
