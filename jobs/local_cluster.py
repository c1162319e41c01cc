"""A Ray cluster of real nodes on this machine, for the tests and benchmarks that need one, started
the way a cloud cluster is: `ray start --head`, then `ray start --address` per worker node. Each
node has ports of its own and the cluster one temp folder, so it lives beside any other Ray on the
machine; `RayNodes.stop()` ends exactly the processes it started (`ray stop` ends every Ray process
on the machine, other people's included)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNodes:
    """The nodes of one cluster under `temp_dir` (short: Ray's socket paths live under it)."""

    def __init__(self, temp_dir: Path):
        self.temp_dir = temp_dir
        self.port, self.dashboard = free_port(), free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.ray = str(Path(sys.executable).with_name("ray"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def _start(self, args: list[str], env: dict | None = None) -> None:
        named = [free_port() for _ in range(6)]
        # every port named, the caller's too (the head's client server): one inside the worker range
        # made Ray refuse to start ("worker_ports is trying to use a port number ... used by other
        # components")
        given = {int(a.rpartition("=")[2]) for a in args if a.startswith("--") and "-port=" in a}
        taken = set(named) | {self.port, self.dashboard} | given
        low = free_port()
        while any(low <= p <= low + 40 for p in taken):  # Ray refuses a worker range over another port
            low = free_port()
        ports = ["--node-manager-port", str(named[0]), "--object-manager-port", str(named[1]),
                 "--dashboard-agent-listen-port", str(named[2]), "--dashboard-agent-grpc-port", str(named[3]),
                 "--metrics-export-port", str(named[4]), "--runtime-env-agent-port", str(named[5]),
                 "--min-worker-port", str(low), "--max-worker-port", str(low + 40)]
        done = subprocess.run([self.ray, "start", *args, *ports, "--disable-usage-stats"], env=env or self.env,
                              capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-3000:]}")

    def start_head(self, num_cpus: int = 0, dashboard: bool = True) -> None:
        """The head node; without the `dashboard` (and its job API, which `ray job submit` needs) it
        starts faster and holds less memory."""
        self._start(["--head", f"--num-cpus={num_cpus}", "--num-gpus=0", f"--port={self.port}",
                     f"--dashboard-port={self.dashboard}", f"--include-dashboard={str(dashboard).lower()}",
                     "--dashboard-host=127.0.0.1", f"--ray-client-server-port={free_port()}",
                     f"--temp-dir={self.temp_dir}"])

    def add_worker(self, num_cpus: int, num_gpus: int = 0) -> None:
        """A worker node, started as cluster.yaml starts them (idle task workers kept beside the pool)."""
        from jobs.pool import worker_soft_limit

        self._start([f"--address={self.address}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}"],
                    env={**self.env, "RAY_num_workers_soft_limit": str(worker_soft_limit(num_cpus))})

    def node_ids(self) -> dict:
        """{node id: (CPUs, GPUs)} of the live nodes, asked of the cluster's dashboard (over HTTP, as
        `ray list nodes` asks it: no driver joins the cluster for this)."""
        from ray.util.state import list_nodes

        return {n.node_id: (n.resources_total.get("CPU", 0), n.resources_total.get("GPU", 0))
                for n in list_nodes(address=self.dashboard_url, detail=True, timeout=60) if n.state == "ALIVE"}

    def processes(self) -> list:
        """psutil processes of this cluster: those whose command line names its temp folder, and
        their children (what a benchmark's memory counts, and what `stop` ends)."""
        import psutil

        mine = str(self.temp_dir)
        # the head's Ray client server names only the cluster's address, not its folder (it lived on
        # for a minute after stop, parented to init)
        client = f":{self.port}"

        def ours(cmdline: list) -> bool:
            text = " ".join(cmdline or [])
            return mine in text or ("ray.util.client.server" in text and any(
                a.startswith("--address=") and a.endswith(client) for a in cmdline))

        roots = [p for p in psutil.process_iter(["cmdline"]) if ours(p.info["cmdline"])]
        procs = set(roots)
        for p in roots:
            try:
                procs.update(p.children(recursive=True))
            except psutil.Error:
                pass
        return list(procs)

    def stop(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=2)  # a throwaway cluster: no grace beyond this
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
