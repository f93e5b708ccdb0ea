"""A real Ray cluster on one machine for the sweep test: a head and worker nodes started by
`ray start` as separate processes, each worker in its own PID namespace, so that one SIGKILL
to its namespace's first process stops the node like a power cut (its raylet, its workers
and their children at once). Token authentication on; distinct ports per node."""

import fcntl
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = Path(sys.executable).parent / "ray"
# a command's own network and PID namespaces: its services listen on a loopback of their own
# and die with it, also when the command is killed (root only)
ISOLATED = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
PORTS_PER_NODE = 40  # a node's fixed ports, then its workers' range
HEALTH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "5",
    # as docs/sweeps.md starts nodes: a dead Ray worker's trainings die with it
    "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper": "true",
}  # a dead node seen in ~5 s


def loopback_up() -> None:
    """Bring `lo` up in a new network namespace (`unshare --net`), without iproute2."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


class Cluster:
    def __init__(self, folder: Path, base_port: int):
        self.folder, self.base = folder, base_port
        self.token = secrets.token_hex(32)
        self.env = {**os.environ, **HEALTH, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.env.pop("RAY_ADDRESS", None)
        self.address = f"127.0.0.1:{base_port}"
        self.processes: list[subprocess.Popen] = []
        # Ray's sockets live under it, and a socket's path is limited to 107 bytes
        self.temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")

    def _ports(self, index: int) -> list[str]:
        base = self.base + 1 + index * PORTS_PER_NODE
        names = [
            "node-manager",
            "object-manager",
            "dashboard-agent-listen",
            "dashboard-agent-grpc",
            "metrics-export",
            "runtime-env-agent",
        ]
        ports = [f"--{name}-port={base + i}" for i, name in enumerate(names)]
        return [*ports, f"--min-worker-port={base + 10}", f"--max-worker-port={base + PORTS_PER_NODE - 1}"]

    def _start(self, args: list[str], log: str, namespace: bool) -> subprocess.Popen:
        prefix = ["unshare", "--pid", "--fork", "--mount-proc"] if namespace else []
        command = [*prefix, str(RAY), "start", "--block", "--disable-usage-stats", *args]
        with open(self.folder / log, "a") as out:
            process = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append(process)
        return process

    def start(self, workers: int, cpus: int = 1) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._start(
            [
                "--head",
                f"--port={self.base}",
                "--num-cpus=0",
                "--include-dashboard=false",
                f"--temp-dir={self.temp}",
                *self._ports(0),
            ],
            "head.log",
            namespace=False,
        )
        self._wait(0)
        self.workers = []
        for i in range(workers):  # one at a time: a raylet gets 30 s to register, busy or not
            args = [f"--address={self.address}", f"--num-cpus={cpus}", *self._ports(i + 1)]
            for _attempt in range(3):
                worker = self._start(args, f"worker-{i + 1}.log", namespace=True)
                if self._wait(i + 1, worker):
                    break
                self._kill(worker)
            else:
                raise RuntimeError(f"worker {i + 1} of the Ray cluster did not come up: see its log")
            self.workers.append(worker)

    def _wait(self, workers: int, starting: subprocess.Popen | None = None, timeout: float = 120) -> bool:
        """Whether the head and `workers` worker nodes are up; False as soon as `starting`
        (a worker's `ray start`) has given up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if starting is not None and starting.poll() is not None:
                return False
            status = subprocess.run(
                [str(RAY), "status", f"--address={self.address}"],
                env=self.env,
                capture_output=True,
                text=True,
            )
            if status.returncode == 0 and status.stdout.count("node_") >= workers + 1:
                return True
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster did not come up:\n{status.stdout}\n{status.stderr}")

    def namespace_root(self, worker: subprocess.Popen) -> int:
        """The PID (seen from here) of the first process in the worker's PID namespace."""
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        return int(children[0])

    def power_cut(self, worker: subprocess.Popen) -> None:
        os.kill(self.namespace_root(worker), signal.SIGKILL)

    def _kill(self, process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def stop(self) -> None:
        for process in reversed(self.processes):
            self._kill(process)
        shutil.rmtree(self.temp, ignore_errors=True)
