"""What the Mesos executor has done, counted for operators: ``roost_executor_<name>_total{executor="mesos"}``.

Plain integers, bumped on the event loop by the part that sees the event
(:mod:`.placement`, :mod:`.scheduler`, :mod:`.call_queue`) and read at scrape
time by :meth:`~gateway.executors.mesos.cluster.MesosExecutor.gauges`, like every other
gateway metric: nothing is counted through prometheus_client. They say what
happened (the framework re-registered, tasks were reconciled, a call went to
another executor) without anyone having to read the log, which is also how the
tests learn it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class MesosCounters:
    """Events since the gateway started; each is exported as ``<field>_total``."""

    registrations: int = 0
    """SUBSCRIBED events: the first registration and every re-registration."""
    reregistrations: int = 0
    """Of those, the ones with a framework id the gateway already had (a failover, a restart)."""
    reconciliations: int = 0
    """Reconciliations asked of the master: on every registration, after a callback failed, for a silent launch."""
    tasks_reconciled_explicitly: int = 0
    """Pool tasks named in those reconciliations (the rest of the framework's tasks are asked for implicitly)."""
    callback_failures: int = 0
    """pymesos callbacks that raised (each logged, and followed by a reconciliation)."""
    executors_launched: int = 0
    """Pool tasks launched: the warm executors, replacements and the elastic pool's extra ones."""
    isolated_tasks_launched: int = 0
    """Tasks launched for one isolated call each."""
    executor_connections: int = 0
    """Channel connections accepted (a valid HELLO): executors connecting, and reconnecting."""
    calls_rerun: int = 0
    """Calls of idempotent functions sent to another executor after theirs was lost."""
    calls_lost: int = 0
    """Calls answered ``unavailable`` because the executor running them was lost or unreachable."""
    master_silences: int = 0
    """Times the watchdog found the master silent and replaced the scheduler driver."""
    reconnect_loops: int = 0
    """Times the reconnect guard broke pymesos's tight reconnect loop and replaced the driver."""
    driver_restarts: int = 0
    """Scheduler drivers started to replace one (after a silence or a reconnect loop)."""

    def totals(self) -> dict[str, float]:
        """Every counter under its exported key (``registrations_total``, ...)."""
        return {f"{field.name}_total": float(getattr(self, field.name)) for field in fields(self)}
