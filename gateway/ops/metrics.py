"""Prometheus metrics of a running gateway; the only module that imports prometheus_client.

Nothing is counted through prometheus_client on the request path: the
dispatcher bumps plain counters (:mod:`gateway.ops.stats`), executors and the
transport keep their own state, and :class:`GatewayCollector` reads all of it
when ``/metrics`` is scraped, on the event loop (so no lock is needed).

Metrics (``function`` is the topic template, ``(unmatched)`` for requests no function matched):

* ``roost_requests_total{function,outcome}``: outcome ``result`` or the wire error code;
* ``roost_request_duration_seconds{function}``: arrival to reply, for calls an executor ran;
* ``roost_requests_dropped_total{reason}``: requests that got no reply at all;
* ``roost_requests_dead_lettered_total``: calls that failed for good, reported on the dead-letter topic;
* ``roost_in_flight{executor}``, ``roost_queue_depth{executor}``: calls running or waiting;
* ``roost_executor_<name>{executor}``: what the executor reports (local: ``workers``,
  ``alive``, ``busy``, ``restarts_total``; mesos: ``executors`` connected and taking calls,
  ``unreachable``, the pool's ``pool_target``, ``pool_tasks`` and ``pool_tasks_running``, and
  counters of what happened: ``registrations_total``, ``reregistrations_total``,
  ``reconciliations_total``, ``tasks_reconciled_explicitly_total``, ``callback_failures_total``,
  ``executors_launched_total``, ``isolated_tasks_launched_total``, ``executor_connections_total``,
  ``calls_rerun_total``, ``calls_lost_total``, ``master_silences_total``,
  ``reconnect_loops_total``, ``driver_restarts_total``; docs/mesos.md says what each counts);
* ``roost_gateway_info{executor,transport,mqtt_version}`` (always 1), ``roost_functions``,
  ``roost_reloads_total{outcome}`` (``reloaded``, ``failed``, ``skipped``);
* ``roost_broker_connected``, ``roost_broker_reconnects_total``, ``roost_ready``;
* ``roost_outbound_backlog``: replies the broker has not acknowledged (in flight or waiting for the window);
* the ``process_*`` metrics of prometheus_client (memory, CPU, open files).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.ops.stats import LATENCY_BOUNDS
from gateway.ops.view import GatewayView, readiness_problems

#: The Content-Type of :func:`GatewayMetrics.render`'s output.
CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED = "(unmatched)"
_BOUNDS = [repr(float(bound)) for bound in LATENCY_BOUNDS] + ["+Inf"]  # as prometheus_client writes them


class GatewayCollector(Collector):
    """Reads the gateway's counters and state at scrape time."""

    def __init__(self, gateway: GatewayView) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        """Yield every ``roost_*`` metric family."""
        gateway = self._gateway
        stats = gateway.stats
        requests = CounterMetricFamily(
            "roost_requests", "Requests by function and outcome", labels=["function", "outcome"]
        )
        latency = HistogramMetricFamily(
            "roost_request_duration_seconds", "Arrival to reply, for calls an executor ran", labels=["function"]
        )
        for key, function in stats.functions.items():
            label = key or UNMATCHED
            if function.results or key:
                requests.add_metric([label, "result"], function.results)
            for code, count in function.outcomes.items():
                requests.add_metric([label, code], count)
            if key:
                cumulative, running = [], 0
                for bound, count in zip(_BOUNDS, function.buckets, strict=True):
                    running += count
                    cumulative.append((bound, float(running)))
                latency.add_metric([label], cumulative, function.seconds)
        yield requests
        yield latency
        dropped = CounterMetricFamily("roost_requests_dropped", "Requests that got no reply at all", labels=["reason"])
        for reason, count in stats.dropped.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield CounterMetricFamily(
            "roost_requests_dead_lettered", "Calls that failed for good (dead-letter topic)", value=stats.dead_lettered
        )
        yield from self._executors()
        yield from self._serving()
        link = gateway.transport.link
        yield GaugeMetricFamily("roost_broker_connected", "1 while connected to the broker", value=int(link.connected))
        yield CounterMetricFamily(
            "roost_broker_reconnects", "Connections to the broker after the first", value=max(link.connects - 1, 0)
        )
        yield GaugeMetricFamily(
            "roost_outbound_backlog",
            "QoS 1/2 publishes (replies) the broker has not acknowledged: in flight or waiting for the window",
            value=gateway.transport.outbound_backlog,
        )
        ready = int(not readiness_problems(gateway))
        yield GaugeMetricFamily("roost_ready", "1 while /readyz answers 200", value=ready)

    def _serving(self) -> Iterator[Metric]:
        """What the gateway serves and how: its settings' choices, its functions and their reloads."""
        gateway = self._gateway
        settings = gateway.settings
        labels = ["executor", "transport", "mqtt_version"]
        info = GaugeMetricFamily("roost_gateway_info", "Always 1: executor, transport, MQTT version", labels=labels)
        info.add_metric([settings.executor, settings.transport_kind, settings.mqtt_version], 1)
        yield info
        yield GaugeMetricFamily("roost_functions", "Functions registered now", value=len(gateway.registry.specs))
        reloads = CounterMetricFamily("roost_reloads", "Function reloads by outcome", labels=["outcome"])
        for outcome, count in gateway.reloads.outcomes.items():
            reloads.add_metric([outcome], count)
        yield reloads

    def _executors(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily("roost_in_flight", "Calls submitted and not finished", labels=["executor"])
        queued = GaugeMetricFamily("roost_queue_depth", "Calls waiting to start", labels=["executor"])
        extra: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for name, executor in self._gateway.executors.items():
            in_flight.add_metric([name], executor.in_flight)
            for key, value in executor.gauges().items():
                if key == "queued":
                    queued.add_metric([name], value)
                    continue
                family = extra.get(key)
                if family is None:
                    metric, doc = f"roost_executor_{key}", f"Executor {key.replace('_', ' ')}"
                    if key.endswith("_total"):
                        family = CounterMetricFamily(metric.removesuffix("_total"), doc, labels=["executor"])
                    else:
                        family = GaugeMetricFamily(metric, doc, labels=["executor"])
                    extra[key] = family
                family.add_metric([name], value)
        yield in_flight
        yield queued
        yield from extra.values()


class GatewayMetrics:
    """A registry holding the gateway's collector and the process metrics."""

    def __init__(self, gateway: GatewayView) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(gateway))
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
