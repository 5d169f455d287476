"""A stand-in for Apache Mesos (one master, N agents, one process) that pymesos 0.3.15 runs against.

It speaks the v1 scheduler and executor HTTP APIs (``/api/v1/scheduler``, ``/api/v1/executor``),
launches real executor processes in their own sessions with a Mesos-like environment and sandbox,
and offers fault hooks (``/standin/...``) for failover tests. See README.md in this directory for
how to run it and how it differs from real Mesos; MESOS_API.md is the specification.
"""
