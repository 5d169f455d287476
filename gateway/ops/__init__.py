"""What operators see of a running gateway: log lines, counters, the HTTP endpoint, reloading.

:mod:`~gateway.ops.logs` formats log lines, :mod:`~gateway.ops.stats` holds the plain counters the
dispatcher bumps, :mod:`~gateway.ops.metrics` turns them into Prometheus text, :mod:`~gateway.ops.http`
serves ``/healthz``, ``/readyz`` and ``/metrics``, :mod:`~gateway.ops.reload` reloads function modules,
and :mod:`~gateway.ops.lifecycle` runs the endpoint and the reloader beside a serving gateway.
"""
