"""The ``mesos`` executor: calls run warm on Mesos agents, in executors this gateway launches.

The pieces (docs/mesos.md has the whole design):

* :mod:`.bundle` builds the archive agents fetch (gateway package, function
  modules and what :mod:`.sources` finds they import, their dependencies) and
  serves it over HTTP;
* :mod:`.scheduler` and :mod:`.scheduler_callbacks` are the pymesos framework
  (only this package imports pymesos) and :mod:`.placement` keeps
  ``executors`` pool tasks running;
* :mod:`.channel`, :mod:`.call_queue` and :mod:`.remote_pool` carry calls to
  the executors over a direct TCP channel, with the gateway's call ids, acks
  and resends;
* :mod:`.executor` is the program that runs on agents: warm local workers,
  the channel's other end, and pymesos's executor driver;
* :mod:`.counters` counts what happened (registrations, reconciliations,
  launches, calls rerun or lost), exported with the pool's state by
  :meth:`.cluster.MesosExecutor.gauges` on ``/metrics``;
* :mod:`.cluster` is the gateway's executor that ties these together
  (:class:`~gateway.executors.mesos.cluster.MesosExecutor`).

When no executor has been usable for ``unreachable_after`` seconds the cluster
counts as unreachable: calls are answered ``unavailable`` at once, or, with
``fallback = "local"``, run on a local executor kept warm for that, until an
executor connects again. Both changes are logged.

This package's ``__init__`` imports nothing: :mod:`.wire` and :mod:`.tasks` load without pymesos.
Importing :mod:`.cluster` (or :mod:`.scheduler`) imports pymesos, which installs a SIGINT handler: do
it on the main thread before the event loop starts (the CLI does).
"""
