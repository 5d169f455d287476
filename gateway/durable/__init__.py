"""The durable queue: QoS 1/2 requests stored before they are acknowledged, replies kept for duplicates.

:mod:`~gateway.durable.queue` is what the dispatcher talks to, :mod:`~gateway.durable.store`
the sqlite file, :mod:`~gateway.durable.writer` the group commits (on the loop, or on a commit
thread with ``synchronous = "full"``).
"""
