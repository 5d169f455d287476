"""The Mesos cluster a ``mesos/…`` target runs on: the project's stand-in with two agents, on this machine.

The stand-in (``tests/mesos_standin``) is one process playing a master and its
agents; the agents launch real executor processes as its children, each with
its warm workers. A target owns its cluster for its lifetime: started before
the gateway, stopped by pid after it, so every round starts from nothing, as
the other targets do.

For a fair comparison with the local executor, whose workers are the gateway's
children, the executors and their workers count as part of the target (CPU and
PSS): every descendant of the stand-in. The stand-in process itself does not:
it stands for the Mesos master and agents, which live on other machines.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil

from benchmarks import meters
from tests.mesos.mesos_gateway import agent_python
from tests.mesos_standin.harness import StandIn

AGENTS = 2


class MesosCluster:
    """A running stand-in for one target, and the settings a gateway needs to use it."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.standin = StandIn(work_dir, agents=AGENTS)  # its log: next to work_dir
        try:
            self.standin.start()
        except AssertionError as exc:  # the harness's way of saying it did not start
            raise OSError(str(exc)) from None

    @property
    def pid(self) -> int:
        """The stand-in's process id."""
        assert self.standin.process is not None
        return self.standin.process.pid

    def gateway_args(self) -> list[str]:
        """The flags of ``roost run`` that select this cluster."""
        return ["--mesos-master", self.standin.master]

    def gateway_env(self) -> dict[str, str]:
        """Environment of the gateway: its framework id and bundles in the stand-in's work directory (so they go
        with it), and the python the agents run (``python3.X`` on their bare PATH, else this one's base)."""
        return {
            "ROOST_MESOS__STATE_FILE": str(self.work_dir / "gateway-framework.json"),
            "ROOST_MESOS__BUNDLE_DIR": str(self.work_dir / "gateway-bundles"),
            "ROOST_MESOS__PYTHON": agent_python(),
        }

    def executors(self) -> list[psutil.Process]:
        """The executors and their workers: the stand-in's descendants, not the stand-in."""
        if self.standin.process is None:
            return []
        try:
            return meters.tree(self.pid, include_root=False)
        except psutil.NoSuchProcess:
            return []

    def log_tail(self, chars: int = 1500) -> str:
        """The end of the stand-in's log."""
        return self.standin.log()[-chars:]

    def stop(self) -> None:
        """Stop the stand-in by pid (it destroys its executors; leftover groups are killed) and drop the files
        the executors' sandboxes and the bundles took; the stand-in's log stays next to the work directory."""
        self.standin.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)
