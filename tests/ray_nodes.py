"""Ray nodes started with ``ray start`` on loopback, the way a cluster's machines start them; stopped by PID.

Every node is started with ``RAY_ADDRESS`` set to its cluster's GCS in its
environment, so every process Ray starts on it (Ray Train's placement-group
cleaner included) talks to its own cluster even when another Ray instance runs
on this host.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
#: A custom resource each node of the test session's cluster has one of: a worker asking for it gets a node of its own.
NODE_SLOT = "raydet_test_node_slot"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before: a node's Ray components each get one,
    and the kernel may offer a just-closed port again (``ray start`` then refuses two components one port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _own_ports() -> list[str]:
    """Ray's per-node ports, each a free one (the defaults, e.g. the agent's 52365, clash between nodes)."""
    names = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "metrics-export-port", "runtime-env-agent-port")
    return [f"--{name}={free_port()}" for name in names]


class RayNode:
    """One ``ray start --block`` process and everything it started (its raylet, workers …), all in the
    process group it leads; its output goes to ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        # `python` in a job is this environment's, as from an activated virtualenv
        env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
        self.log = log
        with open(log, "w") as output:
            self.process = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args],
                                            stdout=output, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def wait_listening(self, port: int, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start failed:\n{self.log.read_text()[-3000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"the Ray node did not listen on port {port} in {timeout} s")

    def pids(self) -> list[int]:
        """This node's processes: ``ray start`` and all its descendants (read from ``/proc``)."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:  # it ended meanwhile
                    continue
                parent = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
                children.setdefault(parent, []).append(int(entry))
        found, todo = [], [self.process.pid] if self.process.poll() is None else []
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def _kill_all(self, pids: list[int]) -> None:
        """SIGKILL the node's process group and every process in ``pids`` (one that left the group)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL every process of this node at once, as when its machine disappears."""
        self._kill_all(self.pids())

    def stop(self) -> None:
        """Stop this node: SIGTERM (``ray start --block`` stops what it started), then SIGKILL what is left."""
        pids = self.pids()
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
        self._kill_all(pids)


class LocalCluster:
    """A Ray cluster on loopback: a head node, and worker nodes that join and leave it."""

    def __init__(self, num_cpus: int, env: dict[str, str], resources: dict[str, float] | None = None,
                 dashboard: bool = False):
        self.gcs_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.env = {**env, "RAY_ADDRESS": self.address}
        self.temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths must stay short
        self.dashboard_port = free_port()
        args = ["--head", "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}", f"--num-cpus={num_cpus}",
                f"--temp-dir={self.temp_dir}", f"--ray-client-server-port={free_port()}", *_own_ports()]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        if dashboard:
            args += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        else:
            args.append("--include-dashboard=false")
        self.head = RayNode(args, self.env, Path(self.temp_dir) / "head.log")
        self.workers: list[RayNode] = []
        try:
            self.head.wait_listening(self.gcs_port)
            if dashboard:
                self.head.wait_listening(self.dashboard_port)
        except BaseException:
            self.stop()
            raise

    def add_node(self, num_cpus: int, resources: dict[str, float] | None = None) -> RayNode:
        """Start a worker node that joins the head (returns at once; see ``wait_for_nodes``)."""
        args = [f"--address={self.address}", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
                "--min-worker-port=21000", "--max-worker-port=21999", *_own_ports()]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        node = RayNode(args, self.env, Path(self.temp_dir) / f"node{len(self.workers) + 2}.log")
        self.workers.append(node)
        return node

    def stop(self) -> None:
        """Stop every node, then remove the cluster's temporary folder."""
        for node in [*self.workers, self.head]:
            node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def wait_for_nodes(ray, count: int, timeout: float = 60) -> None:
    """Wait until the connected cluster has ``count`` live nodes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sum(node["Alive"] for node in ray.nodes()) == count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the cluster did not have {count} live nodes in {timeout} s: {ray.nodes()}")
