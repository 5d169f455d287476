"""The stand-in's knobs, one frozen object built from the command line.

Defaults follow real Mesos (heartbeats every 15 s, allocation every 1 s, first status update resend
after 10 s, executor registration timeout 1 min, shutdown grace 5 s) except agent-loss detection,
2 s instead of about 75 s of missed pings. Tests pass much shorter values (see ``harness.FAST``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Everything the master and the agents are configured with."""

    host: str = "127.0.0.1"
    port: int = 5050
    agents: int = 1
    work_dir: Path = Path("/tmp/mesos-standin")
    agent_resources: str = "cpus:4;mem:7680;disk:40960;ports:[31000-32000]"
    heartbeat_interval: float = 15.0
    allocation_interval: float = 1.0
    agent_unreachable_timeout: float = 2.0
    status_update_retry_interval: float = 10.0
    executor_registration_timeout: float = 60.0
    executor_shutdown_grace_period: float = 5.0
    seed: int = 0


def parse_args(argv: list[str] | None = None) -> Settings:
    """Parse ``python -m tests.mesos_standin`` arguments."""
    parser = argparse.ArgumentParser(prog="python -m tests.mesos_standin", description=__doc__)
    add = parser.add_argument
    add("--host", default=Settings.host, help="IPv4 address to listen on (master and agents)")
    add("--port", type=int, default=Settings.port, help="master port (0 picks a free one)")
    add("--agents", type=int, default=Settings.agents, help="number of agents, each on its own free port")
    add("--work-dir", type=Path, default=Settings.work_dir, help="agents' work dir (sandboxes live below it)")
    add("--agent-resources", default=Settings.agent_resources, help="resources of every agent, Mesos flag syntax")
    add("--heartbeat-interval", type=float, default=Settings.heartbeat_interval, help="seconds between HEARTBEATs")
    add("--allocation-interval", type=float, default=Settings.allocation_interval, help="seconds between offer cycles")
    add(
        "--agent-unreachable-timeout",
        type=float,
        default=Settings.agent_unreachable_timeout,
        help="seconds from an agent's death to it being marked unreachable (real: 75 s of missed pings)",
    )
    add(
        "--status-update-retry-interval",
        type=float,
        default=Settings.status_update_retry_interval,
        help="first resend of an unacknowledged status update (doubles up to 10 min)",
    )
    add(
        "--executor-registration-timeout",
        type=float,
        default=Settings.executor_registration_timeout,
        help="seconds an executor has to SUBSCRIBE before it is destroyed",
    )
    add(
        "--executor-shutdown-grace-period",
        type=float,
        default=Settings.executor_shutdown_grace_period,
        help="default grace between SHUTDOWN and killing the executor's process group",
    )
    add("--seed", type=int, default=Settings.seed, help="seed for the message-dropping fault")
    args = parser.parse_args(argv)
    if args.agents < 0:
        parser.error("--agents must be >= 0")
    return Settings(**vars(args))
