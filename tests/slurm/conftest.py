"""A real single-node SLURM cluster for the session, and Snakemake runs against it.

The cluster is isolated from any other on the machine: its own prefix under the temporary
folder, its own munged (socket and key under the prefix), free ports, its own slurm.conf
selected through SLURM_CONF, and an `srun` wrapper first in PATH (the Snakemake job step
strips SLURM_CONF from the inner srun; see local_slurm_up.sh). It is never the default
/etc/slurm/slurm.conf cluster, so two test sessions on one machine (or a real cluster's
controller) do not meet. Daemons are started by tests/slurm/local_slurm_up.sh and stopped by
pid by local_slurm_down.sh, which first cancels the cluster's jobs, even when a test fails.

GPUs: the node advertises device-less fake GPUs (SLURM_FAKE_GPUS), as many as the largest
`gpu:` request in profiles/default, of the `gpu_model` type it names, so GPU rules go through
the production path (`sbatch --gpus=N`) unchanged and run on the CPU. Memory is overcommitted
(SlurmdParameters=config_overrides) so production mem_mb requests are accepted; nothing
enforces them on this node (task/none, no cgroups).

Skips (with the reason) only where SLURM cannot run: not root, slurm-wlm/munge not
installed, or the daemons cannot be started here. BESTIE_REQUIRE_SLURM=1 turns these skips
into failures.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.workflow.conftest import ROOT, make_project

HERE = Path(__file__).resolve().parent
DEFAULT_PROFILE = ROOT / "profiles" / "default" / "config.yaml"
PARTITION = "debug"  # profiles/slurm-local/config.yaml submits here
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
BINARIES += ("munged", "munge", "unmunge")
# Environment variables that would point SLURM clients at another cluster or change sbatch.
FOREIGN_ENV = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SCANCEL_")
COMMAND_TIMEOUT = 30  # seconds, for squeue/scontrol/scancel
OVERCOMMITTED_MEMORY_MB = 1 << 20  # 1 TiB: any production mem_mb request fits


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("BESTIE_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM required (BESTIE_REQUIRE_SLURM=1) but: {reason}")
    pytest.skip(reason)


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _int_values(entries: dict, key: str) -> list[int]:
    return [
        value
        for entry in entries.values()
        if isinstance(entry, dict)
        for value in [entry.get(key)]
        if isinstance(value, int) and not isinstance(value, bool)
    ]


def gpu_requests() -> dict[str, int]:
    """Rule -> `gpu:` count (> 0) in profiles/default's set-resources."""
    resources = yaml.safe_load(DEFAULT_PROFILE.read_text()).get("set-resources") or {}
    requests = {}
    for rule, entry in resources.items():
        gpu = entry.get("gpu") if isinstance(entry, dict) else None
        if isinstance(gpu, int) and not isinstance(gpu, bool) and gpu > 0:
            requests[rule] = gpu
    return requests


def node_shape() -> dict[str, str]:
    """Environment for local_slurm_up.sh: a node that fits every profiles/default request."""
    resources = yaml.safe_load(DEFAULT_PROFILE.read_text()).get("set-resources") or {}
    gpus = max([1, *gpu_requests().values()])
    per_gpu = max([0, *_int_values(resources, "cpus_per_gpu")]) * gpus
    cpus = max([2, os.cpu_count() or 1, per_gpu, *_int_values(resources, "cpus_per_task")])
    types = sorted({str(entry["gpu_model"]) for entry in resources.values()
                    if isinstance(entry, dict) and entry.get("gpu_model")})  # fmt: skip
    if len(types) > 1:
        pytest.fail(f"the test cluster fakes one GPU type, profiles/default asks for {types}")
    return {
        "SLURM_FAKE_GPUS": str(gpus),
        "SLURM_FAKE_GPU_TYPE": types[0] if types else "",
        "SLURM_NODE_CPUS": str(cpus),
        "SLURM_NODE_MEMORY_MB": str(OVERCOMMITTED_MEMORY_MB),
    }


@dataclass
class Cluster:
    """The running test cluster: its prefix, and the environment that selects it."""

    prefix: Path
    env: dict[str, str] = field(repr=False)

    @property
    def conf(self) -> Path:
        return self.prefix / "slurm.conf"

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster (bounded by COMMAND_TIMEOUT)."""
        return subprocess.run(
            command,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=check,
        )

    def jobs(self, *options: str, states: str = "all") -> list[dict[str, str]]:
        """Jobs squeue knows (finished ones for MinJobAge, an hour): id, name, comment, state."""
        output = self.run("squeue", "-h", "-t", states, "-o", "%i|%j|%k|%T", *options).stdout
        keys = ("id", "name", "comment", "state")
        return [dict(zip(keys, line.split("|"), strict=True)) for line in output.splitlines()]

    def job_details(self, job_id: str) -> str:
        return self.run("scontrol", "show", "job", "-o", job_id, check=False).stdout

    def diagnostics(self) -> str:
        """Queue and daemon log tails, for assertion messages."""
        parts = [self.run("squeue", "-t", "all", "-o", "%i %j %k %T %r", check=False).stdout]
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.prefix / name
            if path.is_file():
                parts.append(f"--- {name} (tail)\n" + "\n".join(_tail(path, 30)))
        return "\n".join(parts)


def _tail(path: Path, lines: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}


@pytest.fixture(scope="session")
def slurm_cluster() -> Cluster:
    """A fresh isolated single-node cluster, up for the whole session."""
    if os.geteuid() != 0:
        _skip_or_fail("needs root to start munged, slurmctld and slurmd")
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        _skip_or_fail(
            f"SLURM/munge not installed (missing {', '.join(missing)}); "
            "apt-get install slurm-wlm munge (as .ci/run does) to run this test"
        )
    # Under /tmp, not pytest's tmp_path: the munge user must be able to reach its socket,
    # and pytest's base folder is private to root.
    prefix = Path(tempfile.mkdtemp(prefix="bestie-slurm-", dir="/tmp"))
    prefix.chmod(0o755)
    ctld_port, slurmd_port = _free_ports(2)
    env = _clean_env()
    env.update(
        SLURM_CONF=str(prefix / "slurm.conf"),
        SLURM_LOCAL_PREFIX=str(prefix),
        SLURM_PARTITION=PARTITION,
        SLURM_CLUSTER_NAME="bestietest",
        SLURMCTLD_PORT=str(ctld_port),
        SLURMD_PORT=str(slurmd_port),
        MUNGE_SOCKET=str(prefix / "munge" / "munge.socket.2"),
        SLURM_MIN_JOB_AGE="3600",  # every job of the session stays visible to squeue
        SLURM_UP_TIMEOUT="60",
        SKIP_APT="1",
        **node_shape(),
    )
    try:
        try:
            subprocess.run(
                ["bash", str(HERE / "local_slurm_up.sh")],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=True,
            )
        except subprocess.CalledProcessError as error:
            _skip_or_fail(f"cannot start a SLURM cluster here: {error.stderr.strip()[-1500:]}")
        except subprocess.TimeoutExpired:
            _skip_or_fail("cannot start a SLURM cluster here: local_slurm_up.sh timed out")
        client_env = _clean_env()
        client_env.update(
            SLURM_CONF=env["SLURM_CONF"],
            PATH=os.pathsep.join(
                [str(prefix / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]]
            ),
        )
        yield Cluster(prefix=prefix, env=client_env)
    finally:
        down = subprocess.run(
            ["bash", str(HERE / "local_slurm_down.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if down.returncode == 0:
            for _ in range(5):  # a stopping daemon may still write its last file
                shutil.rmtree(prefix, ignore_errors=True)
                if not prefix.exists():
                    break
                time.sleep(1)
        else:  # keep the prefix (logs, pid files) for whoever looks at it
            print(f"local_slurm_down.sh failed, keeping {prefix}:\n{down.stderr}", file=sys.stderr)


def slurm_project(directory: Path) -> Path:
    """The test workflow (tests/workflow/config.yaml) plus the `slurm -> profiles/slurm` link."""
    project = make_project(directory)
    (project / "slurm").symlink_to(Path("profiles") / "slurm")
    return project


@dataclass
class Run:
    """A finished Snakemake process."""

    args: tuple[str, ...]
    returncode: int
    stdout: str

    @property
    def run_id(self) -> str | None:
        """The SLURM run ID, which the plugin gives every job as its name."""
        match = re.search(r"^SLURM run ID: (\S+)", self.stdout, flags=re.MULTILINE)
        return match.group(1) if match else None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.stdout.splitlines()[-lines:])


@dataclass
class Started:
    """A running Snakemake process and the file that collects its output."""

    process: subprocess.Popen
    output: Path

    def stop(self) -> None:
        """End the process if it still runs: SIGINT (Snakemake scancels its jobs), then KILL."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # the group started here
            self.process.wait(timeout=30)

    def finish(self, timeout: float) -> Run:
        """Wait for the process; on timeout stop it and fail with its output."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            text = self.output.read_text(errors="replace")
            raise AssertionError(
                f"snakemake timed out after {timeout} s:\n{text[-6000:]}"
            ) from None
        text = self.output.read_text(errors="replace")
        return Run(tuple(self.process.args), self.process.returncode, text)


def start_snakemake(project: Path, cluster: Cluster, *args: str) -> Started:
    """Start `snakemake ARGS` in ``project`` against ``cluster``."""
    output = project / f"snakemake-{len(list(project.glob('snakemake-*.out')))}.out"
    with open(output, "w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=project,
            env=cluster.env,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a hung run can be ended
        )
    return Started(process, output)


def run_snakemake(project: Path, cluster: Cluster, *args: str, timeout: float) -> Run:
    """Run `snakemake ARGS` in ``project`` against ``cluster``, at most ``timeout`` seconds."""
    return start_snakemake(project, cluster, *args).finish(timeout)
