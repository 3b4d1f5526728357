"""A real, throw-away Slurm cluster on this one machine, for tests.

Every fake node is its own ``slurmd -N nX`` on its own port, all on this host, with fake GPUs
(character device files) so ``--gres=gpu:N`` and ``--gpus-per-node`` schedule and set
``CUDA_VISIBLE_DEVICES``. munged runs on a private socket, so a system munge (or none) does not
matter. Everything lives under one work directory; daemons are told apart from any other cluster on
the machine by their pid files and by a marker variable in their environment.

Needs root (device nodes, /etc/hosts) and Debian's Slurm 22.05 packages: ``bash .ci/install-slurm.sh``.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import pwd
import random
import re
import shutil
import signal as signal_module
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import pytest

__all__ = [
    "DEFAULT_PARTITION",
    "FINAL_STATES",
    "INSTALL_HINT",
    "LocalSlurmCluster",
    "SlurmCommandError",
    "node_address",
    "SlurmStartError",
    "missing_slurm_binaries",
    "parse_scontrol_record",
    "require_slurm",
    "slurm_cluster",
]

DEFAULT_PARTITION = "debug"

FINAL_STATES: frozenset[str] = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)

INSTALL_HINT = "install them with `bash .ci/install-slurm.sh` (Debian: slurmctld slurmd slurm-client munge)"

REQUIRED_BINARIES = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "scontrol",
    "scancel",
    "sinfo",
    "squeue",
    "sacct",
)

# Environment variables set on every process this module starts (daemons and clients): the work
# directory, and the pid of the process that started the cluster. Job processes inherit them too,
# which lets stop() find strays, and start() find daemons orphaned by a crashed session.
MARKER_ENV = "WMLP_TEST_SLURM_CLUSTER"
OWNER_ENV = "WMLP_TEST_SLURM_OWNER"

HOSTS_FILE = Path("/etc/hosts")
HOSTS_MARK = "# wavemlp-test-slurm"


def node_address(index: int) -> str:
    """A loopback address of node ``n<index>``'s own, 127.0.2.<index>, for places where the nodes must tell
    themselves apart by name: the /etc/hosts of per-node Docker engines (tests/infra/node_docker.py), whose
    containers carry the node names as host names and must resolve each to itself, backwards too.

    This host's /etc/hosts keeps naming every node 127.0.0.1: processes of a job started here (runtime
    none) all run on this host, whose name resolves to 127.0.0.1, and torchrun hosts the rendezvous store
    on the node whose address is one of the host's own (distinct addresses would leave no node hosting it).
    """
    if not 1 <= index <= 254:
        raise ValueError(f"node index {index} out of 1..254")
    return f"127.0.2.{index}"


# Ports are chosen below the kernel's ephemeral range so that outgoing connections (srun, sbatch)
# cannot grab them between the free-port check and the daemons binding them.
_PORT_RANGE = (20000, 32000)


if TYPE_CHECKING:  # typing.Self is 3.11+; annotations are never evaluated at runtime here
    from typing import Self


class SlurmCommandError(subprocess.CalledProcessError):
    """A Slurm client command failed; str() includes its output."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


class SlurmStartError(RuntimeError):
    """The cluster did not come up; the message carries the daemon log tails."""


def missing_slurm_binaries() -> list[str]:
    return [name for name in REQUIRED_BINARIES if _which(name) is None]


def _which(name: str) -> str | None:
    # The daemons live in /usr/sbin, which is not on PATH for every user or CI shell.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def _unavailable_reason() -> str | None:
    missing = missing_slurm_binaries()
    if missing:
        return f"Slurm binaries not found: {', '.join(missing)}; {INSTALL_HINT}"
    if os.geteuid() != 0:
        return "the local Slurm test cluster needs root (fake GPU device nodes, /etc/hosts entries for the node names)"
    return None


def require_slurm() -> None:
    """Skip the calling test when a local Slurm cluster cannot run here; in CI (CI=true), fail instead."""
    reason = _unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the Slurm tests, but {reason}", pytrace=False)
    pytest.skip(reason)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited for our purposes; it only waits for its parent to reap it.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _process_environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _orphaned_processes() -> dict[int, str]:
    """pid -> workdir of processes of any cluster whose starter is gone without stop() (a crash)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        variables = dict(
            v.decode(errors="replace").split("=", 1)
            for v in _process_environ(int(entry.name)).split(b"\0")
            if b"=" in v
        )
        owner, workdir = variables.get(OWNER_ENV, ""), variables.get(MARKER_ENV)
        if workdir and owner.isdigit() and not _pid_alive(int(owner)):
            found[int(entry.name)] = workdir
    return found


def _munge_dir_for(workdir: Path) -> Path:
    # munged wants every folder above its socket searchable by all users, which pytest's 0700 tmp
    # dirs are not; /tmp also keeps the path under the 108-byte socket path limit. The name is
    # derived from the workdir so that leftovers of a crashed run can be found again.
    digest = hashlib.sha1(str(workdir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"wmlp-munge-{digest}"


def node_docker_dir_for(workdir: Path) -> Path:
    """Where per-node Docker engines of this cluster put their sockets, ``<dir>/<node>.sock``.

    Short and under /tmp: dockerd's containerd socket below it must stay under the 108-byte limit.
    """
    digest = hashlib.sha1(str(workdir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"wmlp-nd-{digest}"


# Run by slurmstepd before every task (the batch script and each srun task): while per-node Docker
# engines run (tests/infra/node_docker.py, sockets in one folder), a task on node nK talks to node K's
# engine, or to none when nK has no engine: never to an engine whose DOCKER_HOST an srun task inherited
# from the batch script on another node. Without that folder, tasks are left alone.
TASK_PROLOG = """\
#!/bin/sh
# Written by tests/infra/slurm.py; removed with the cluster.
sockets={socket_dir}
if [ -d "$sockets" ]; then
    if [ -S "$sockets/$SLURMD_NODENAME.sock" ]; then
        echo "export DOCKER_HOST=unix://$sockets/$SLURMD_NODENAME.sock"
    else
        echo "unset DOCKER_HOST"
    fi
fi
exit 0
"""


def _port_is_free(port: int) -> bool:
    for host in ("0.0.0.0", "127.0.0.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def _pick_ports(count: int) -> list[int]:
    """``count`` distinct currently-free TCP ports, starting at a random point so parallel sessions differ."""
    low, high = _PORT_RANGE
    start = random.randrange(low, high)
    ports: list[int] = []
    for offset in range(high - low):
        port = low + (start - low + offset) % (high - low)
        if _port_is_free(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise SlurmStartError(f"no {count} free TCP ports in {low}-{high}")


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<unreadable: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def parse_scontrol_record(text: str) -> dict[str, str]:
    """Parse one ``scontrol show ... -o`` line (``Key=value`` pairs; values may contain spaces)."""
    fields: dict[str, str] = {}
    matches = list(re.finditer(r"(?:^|\s)([A-Za-z][\w:/.()-]*)=", text.strip()))
    stripped = text.strip()
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(stripped)
        fields.setdefault(match.group(1), stripped[match.end() : end].strip())
    return fields


class LocalSlurmCluster:
    """Start with ``start()`` or ``with LocalSlurmCluster(path) as cluster:``; always ``stop()`` it."""

    def __init__(
        self,
        workdir: Path,
        nodes: int = 4,
        gpus_per_node: int = 8,
        cpus_per_node: int = 2,
        *,
        memory_mb: int = 262144,
        cred_expire: int = 5,
        start_timeout: float = 60.0,
        extra_conf: Mapping[str, str] | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self.workdir = Path(workdir).resolve()
        self.nodes = nodes
        self.gpus_per_node = gpus_per_node
        self.cpus_per_node = cpus_per_node
        self.memory_mb = memory_mb
        self.cred_expire = cred_expire
        self.start_timeout = start_timeout
        self.extra_conf = dict(extra_conf or {})
        self.node_names = [f"n{i}" for i in range(1, nodes + 1)]
        self.partition = DEFAULT_PARTITION
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.conf_path = self.workdir / "slurm.conf"
        self.gres_conf_path = self.workdir / "gres.conf"
        self.log_dir = self.workdir / "log"
        self.run_dir = self.workdir / "run"
        self.state_dir = self.workdir / "state"
        self.spool_dir = self.workdir / "spool"
        self.dev_dir = self.workdir / "dev"
        self.jobcomp_path = self.log_dir / "jobcomp.txt"
        self.munge_key = self.workdir / "munge.key"
        self.munge_dir = _munge_dir_for(self.workdir)
        self.munge_socket = self.munge_dir / "munge.socket"
        self.task_prolog = self.workdir / "task-prolog.sh"
        self.node_docker_dir = node_docker_dir_for(self.workdir)
        self.ctld_port: int | None = None
        self.slurmd_ports: list[int] = []
        self._children: list[subprocess.Popen[bytes]] = []
        self._started = False
        self._atexit_registered = False

    # ----------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> Self:
        """Write config, start munged, slurmctld and the slurmds, and wait for every node to be idle."""
        if self._started:
            return self
        reason = _unavailable_reason()
        if reason is not None:
            raise SlurmStartError(reason)
        if not self._atexit_registered:
            # A crashed or interrupted session should not leave daemons and an /etc/hosts line behind.
            atexit.register(self.stop)
            self._atexit_registered = True
        deadline = time.monotonic() + self.start_timeout
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(deadline)
            except SlurmStartError as exc:
                port_clash = "Address already in use" in self.logs()
                self.stop()
                if port_clash and attempt < attempts and time.monotonic() < deadline:
                    continue
                raise SlurmStartError(f"{exc}\n{self.logs()}") from None
            except BaseException:
                self.stop()
                raise
            self._started = True
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Cancel jobs, stop the daemons, drop the /etc/hosts line, remove state. Safe to repeat."""
        self._started = False
        if self.ctld_port is not None and self._daemon_pids():
            self._cancel_all_jobs()
        for group in (self._slurmd_pid_files(), [self.run_dir / "slurmctld.pid"], [self.run_dir / "munged.pid"]):
            self._terminate([pid for pid in (_read_pid(p) for p in group) if pid is not None and self._owns(pid)])
        self._terminate([child.pid for child in self._children if child.poll() is None])
        for child in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        self._children.clear()
        # Job steps outlive a killed slurmd (proctrack/linuxproc does not reap them): sweep by marker.
        self._terminate(self._marked_pids(), grace=2.0)
        self._remove_hosts_line()
        for path in (self.state_dir, self.spool_dir, self.run_dir, self.dev_dir, self.munge_dir):
            shutil.rmtree(path, ignore_errors=True)
        self.munge_key.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------- clients

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands (and the jobs they submit) aimed at this cluster."""
        env = dict(os.environ)
        for key in list(env):
            # Variables from an enclosing allocation would steer sbatch/srun to the wrong job.
            if key.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_")):
                del env[key]
        env["SLURM_CONF"] = str(self.conf_path)
        env[MARKER_ENV] = str(self.workdir)
        env[OWNER_ENV] = str(os.getpid())
        env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        return env

    def run(
        self,
        cmd: Sequence[str | os.PathLike[str]],
        *,
        check: bool = True,
        timeout: float = 60.0,
        cwd: Path | None = None,
        env_extra: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run any Slurm client command against this cluster; raises SlurmCommandError when ``check``."""
        env = self.env
        if env_extra:
            env.update(env_extra)
        argv = [os.fspath(part) for part in cmd]
        result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise SlurmCommandError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def submit(
        self,
        script: Path,
        *args: str | os.PathLike[str],
        cwd: Path | None = None,
        env_extra: Mapping[str, str] | None = None,
        sbatch_args: Sequence[str] = (),
    ) -> int:
        """``sbatch --parsable [sbatch_args] script [args]``; returns the job id.

        ``args`` go to the script, ``sbatch_args`` to sbatch. The job runs in ``cwd`` (default: the
        script's folder) and inherits this cluster's env plus ``env_extra``.
        """
        script = Path(script).resolve()
        result = self.run(
            ["sbatch", "--parsable", *sbatch_args, script, *args],
            cwd=cwd or script.parent,
            env_extra=env_extra,
        )
        return int(result.stdout.strip().split(";", 1)[0])

    def job_info(self, job_id: int) -> dict[str, str] | None:
        """All ``scontrol show job`` fields, or None once the controller has forgotten the job."""
        result = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return None
            raise SlurmCommandError(result.returncode, result.args, result.stdout, result.stderr)
        line = next((ln for ln in result.stdout.splitlines() if ln.startswith(f"JobId={job_id} ")), "")
        return parse_scontrol_record(line) if line else None

    def job_field(self, job_id: int, name: str) -> str:
        """One ``scontrol show job`` field, e.g. ``Restarts``, ``NodeList``, ``ExitCode``."""
        info = self.job_info(job_id)
        if info is None:
            raise KeyError(f"job {job_id} is no longer known to slurmctld")
        return info[name]

    def state(self, job_id: int) -> str:
        """Job state without decorations (``CANCELLED`` not ``CANCELLED by 0``)."""
        info = self.job_info(job_id)
        if info is not None:
            return info["JobState"].split()[0]
        return self._finished_state(job_id)

    def wait(self, job_id: int, states: Iterable[str] = FINAL_STATES, timeout: float = 60.0) -> str:
        """Poll until the job is in one of ``states``; returns that state, raises TimeoutError otherwise."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        current = "?"
        while True:
            current = self.state(job_id)
            if current in wanted:
                return current
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {job_id} still {current} after {timeout:.0f}s (waiting for {sorted(wanted)})\n"
                    f"{self.job_info(job_id)}\n{self.logs()}"
                )
            time.sleep(0.5)

    def wait_running(self, job_id: int, timeout: float = 60.0) -> str:
        """Wait until the job runs; raises RuntimeError if it ends first."""
        state = self.wait(job_id, {"RUNNING"} | FINAL_STATES, timeout=timeout)
        if state != "RUNNING":
            raise RuntimeError(f"job {job_id} ended ({state}) before it was seen running\n{self.job_info(job_id)}")
        return state

    def signal(self, job_id: int, sig: str | int, batch_only: bool = True) -> None:
        """Send ``sig`` to the batch shell only (``--batch``) or to every step and the batch (``--full``)."""
        name = sig if isinstance(sig, str) else signal_module.Signals(sig).name
        name = name.upper().removeprefix("SIG")
        self.run(["scancel", f"--signal={name}", "--batch" if batch_only else "--full", str(job_id)])

    def requeue(self, job_id: int) -> None:
        self.run(["scontrol", "requeue", str(job_id)])

    def cancel(self, job_id: int) -> None:
        self.run(["scancel", str(job_id)])

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every node is idle again (jobs of earlier tests may still be completing)."""
        deadline = time.monotonic() + timeout
        while not self._all_nodes_idle():
            if time.monotonic() >= deadline:
                states = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False).stdout
                raise TimeoutError(f"nodes not all idle after {timeout:.0f}s:\n{states}\n{self.logs()}")
            time.sleep(0.2)

    def node_info(self) -> dict[str, dict[str, str]]:
        result = self.run(["scontrol", "show", "node", "-o"])
        records = [parse_scontrol_record(line) for line in result.stdout.splitlines() if line.strip()]
        return {record["NodeName"]: record for record in records}

    def logs(self, lines: int = 40) -> str:
        """Tails of the daemon logs, for a failing test's report."""
        parts: list[str] = []
        if self.log_dir.is_dir():
            for path in sorted(self.log_dir.iterdir()):
                if path.is_file() and path != self.jobcomp_path and path.stat().st_size:
                    parts.append(f"----- {path.name} (last {lines} lines) -----\n{_tail(path, lines)}")
        return "\n".join(parts) or "<no Slurm daemon logs>"

    # ------------------------------------------------------------------------------------ internals

    def _start_once(self, deadline: float) -> None:
        # Daemons from an earlier, crashed run in this workdir would hold the pid files and the socket.
        self.stop()
        orphans = _orphaned_processes()
        self._terminate(list(orphans), grace=2.0)
        for workdir in set(orphans.values()):
            shutil.rmtree(_munge_dir_for(Path(workdir)), ignore_errors=True)
        for path in (self.state_dir, self.spool_dir, self.run_dir, self.dev_dir, self.munge_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.workdir, self.log_dir, self.run_dir, self.state_dir, self.dev_dir):
            path.mkdir(parents=True, exist_ok=True)
        for name in self.node_names:
            (self.spool_dir / name).mkdir(parents=True, exist_ok=True)
        for path in self.log_dir.iterdir():
            if path.is_file():
                path.unlink()
        # munged refuses directories that others can write to, and clients need search permission.
        for path in (self.workdir, self.log_dir, self.run_dir):
            path.chmod(0o755)
        self.munge_dir.mkdir(parents=True, exist_ok=True)
        self.munge_dir.chmod(0o711)

        ports = _pick_ports(1 + self.nodes)
        self.ctld_port, self.slurmd_ports = ports[0], ports[1:]
        self._write_munge_key()
        self._make_fake_gpus()
        self.task_prolog.write_text(TASK_PROLOG.format(socket_dir=self.node_docker_dir))
        self.task_prolog.chmod(0o755)
        self.conf_path.write_text(self._slurm_conf())
        self.gres_conf_path.write_text(self._gres_conf())
        self._add_hosts_line()

        self._spawn(
            "munged",
            [
                _which("munged") or "munged",
                "--foreground",
                f"--socket={self.munge_socket}",
                f"--key-file={self.munge_key}",
                f"--pid-file={self.run_dir / 'munged.pid'}",
                f"--log-file={self.log_dir / 'munged.log'}",
                f"--seed-file={self.run_dir / 'munged.seed'}",
            ],
        )
        self._poll(deadline, "munged socket", self.munge_socket.is_socket)

        self._spawn("slurmctld", [_which("slurmctld") or "slurmctld", "-D", "-c", "-i", "-f", str(self.conf_path)])
        self._poll(
            deadline, "slurmctld to answer ping", lambda: "is UP" in self.run(["scontrol", "ping"], check=False).stdout
        )
        for name in self.node_names:
            self._spawn(f"slurmd-{name}", [_which("slurmd") or "slurmd", "-D", "-N", name, "-f", str(self.conf_path)])
        self._poll(deadline, f"nodes {','.join(self.node_names)} to be idle", self._all_nodes_idle)

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.log_dir / f"{name}.stderr", "ab") as err:
            child = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                # Keeps a Ctrl-C in the test terminal from killing daemons before stop() cancels jobs.
                start_new_session=True,
            )
        child.args = name
        self._children.append(child)

    def _poll(self, deadline: float, what: str, ready: Callable[[], bool]) -> None:
        delay = 0.05
        while True:
            dead = [str(child.args) for child in self._children if child.poll() is not None]
            if dead:
                raise SlurmStartError(f"{', '.join(dead)} exited while waiting for {what}")
            if ready():
                return
            if time.monotonic() >= deadline:
                raise SlurmStartError(f"timed out after {self.start_timeout:.0f}s waiting for {what}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _all_nodes_idle(self) -> bool:
        result = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False)
        if result.returncode != 0:
            return False
        states = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
        return all(states.get(name, "").strip() == "idle" for name in self.node_names)

    def _write_munge_key(self) -> None:
        # munged insists on a private key file owned by its user; any 1 KiB of random bytes will do.
        self.munge_key.unlink(missing_ok=True)
        fd = os.open(self.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(1024))

    def _gpu_files(self) -> list[Path]:
        return [self.dev_dir / f"nvidia{i}" for i in range(self.gpus_per_node)]

    def _make_fake_gpus(self) -> None:
        # The gres/gpu plugin rejects plain files (node goes INVALID); a character device passes.
        # 1:3 is /dev/null's device number, so nothing real is exposed.
        for path in self._gpu_files():
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))

    def _slurm_conf(self) -> str:
        host = socket.gethostname().split(".")[0]
        node_gres = f" Gres=gpu:{self.gpus_per_node}" if self.gpus_per_node else ""
        node_lines = [
            f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={self.cpus_per_node} "
            f"RealMemory={self.memory_mb}{node_gres} State=UNKNOWN"
            for name, port in zip(self.node_names, self.slurmd_ports, strict=True)
        ]
        node_list = f"n[1-{self.nodes}]" if self.nodes > 1 else "n1"
        settings = {
            "ClusterName": "wmlptest",
            "SlurmctldHost": f"{host}(127.0.0.1)",
            "SlurmctldPort": str(self.ctld_port),
            "SlurmUser": self.user,
            "SlurmdUser": self.user,
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            # A requeued job may only start once its old credential expired: 5 s (the minimum Slurm
            # accepts; lower values are rejected and silently become 120 s) instead of 120 s.
            "AuthInfo": f"socket={self.munge_socket},cred_expire={self.cred_expire}",
            "StateSaveLocation": str(self.state_dir),
            "SlurmdSpoolDir": str(self.spool_dir / "%n"),
            "SlurmctldPidFile": str(self.run_dir / "slurmctld.pid"),
            "SlurmdPidFile": str(self.run_dir / "slurmd-%n.pid"),
            "SlurmctldLogFile": str(self.log_dir / "slurmctld.log"),
            "SlurmdLogFile": str(self.log_dir / "slurmd-%n.log"),
            "SlurmctldDebug": "info",
            "SlurmdDebug": "info",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "SchedulerType": "sched/backfill",
            "SchedulerParameters": "sched_interval=1,bf_interval=1",
            # Nodes report this host's real CPUs/memory; config_overrides makes the fake sizes win.
            # Memory is not a consumable resource (CR_Core), so RealMemory only has to be large
            # enough for the --mem requests of real-looking job scripts to be accepted.
            "SlurmdParameters": "config_overrides",
            "ReturnToService": "2",
            "GresTypes": "gpu",
            "AccountingStorageType": "accounting_storage/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "JobCompType": "jobcomp/filetxt",
            "JobCompLoc": str(self.jobcomp_path),
            "MpiDefault": "none",
            "TaskProlog": str(self.task_prolog),
            "MailProg": "/bin/true",
            "KillWait": "5",
            "InactiveLimit": "0",
            "Waittime": "0",
        }
        settings.update(self.extra_conf)
        lines = [f"{key}={value}" for key, value in settings.items()]
        lines += node_lines
        lines.append(f"PartitionName={self.partition} Nodes={node_list} Default=YES MaxTime=INFINITE State=UP")
        return "# Written by tests/infra/slurm.py; removed with the cluster.\n" + "\n".join(lines) + "\n"

    def _gres_conf(self) -> str:
        lines = ["AutoDetect=off"]
        if self.gpus_per_node:
            node_list = f"n[1-{self.nodes}]" if self.nodes > 1 else "n1"
            last = self.gpus_per_node - 1
            lines.append(f"NodeName={node_list} Name=gpu File={self.dev_dir}/nvidia[0-{last}]")
        return "\n".join(lines) + "\n"

    # /etc/hosts: the node names must resolve (rendezvous addresses such as MASTER_ADDR=n1). Each
    # cluster adds its own marked line and removes only that; lines left by dead processes are dropped.

    def _hosts_marker(self) -> str:
        return f"{HOSTS_MARK} pid={os.getpid()} dir={self.workdir}"

    @contextlib.contextmanager
    def _locked_hosts(self) -> Iterator[list[str]]:
        # Rewritten in place, never replaced: in containers /etc/hosts is a bind mount.
        with open(HOSTS_FILE, "r+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                lines = fh.read().splitlines()
                original = list(lines)
                yield lines
                if lines != original:
                    fh.seek(0)
                    fh.write("".join(f"{line}\n" for line in lines))
                    fh.truncate()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _is_stale_hosts_line(self, line: str) -> bool:
        if HOSTS_MARK not in line:
            return False
        match = re.search(r"pid=(\d+) dir=(.*)$", line)
        if match is None:
            return True
        return match.group(2) == str(self.workdir) or not _pid_alive(int(match.group(1)))

    def _add_hosts_line(self) -> None:
        line = f"127.0.0.1 {' '.join(self.node_names)}  {self._hosts_marker()}"
        with self._locked_hosts() as lines:
            lines[:] = [ln for ln in lines if not self._is_stale_hosts_line(ln)]
            lines.append(line)

    def _remove_hosts_line(self) -> None:
        if not HOSTS_FILE.exists():
            return
        mine = self._hosts_marker()
        with self._locked_hosts() as lines:
            lines[:] = [ln for ln in lines if not ln.endswith(mine)]

    # Processes: everything started here carries MARKER_ENV=<workdir>; pids from pid files are only
    # signalled when they carry it, so a recycled pid never hits an unrelated process.

    def _owns(self, pid: int) -> bool:
        return f"{MARKER_ENV}={self.workdir}".encode() in _process_environ(pid).split(b"\0")

    def _marked_pids(self) -> list[int]:
        own = {os.getpid(), os.getppid()}
        pids: list[int] = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) not in own and self._owns(int(entry.name)):
                pids.append(int(entry.name))
        return pids

    def _slurmd_pid_files(self) -> list[Path]:
        return sorted(self.run_dir.glob("slurmd-*.pid")) if self.run_dir.is_dir() else []

    def _daemon_pids(self) -> list[int]:
        files = [*self._slurmd_pid_files(), self.run_dir / "slurmctld.pid"]
        return [pid for pid in (_read_pid(p) for p in files) if pid is not None and _pid_alive(pid)]

    def _terminate(self, pids: Sequence[int], grace: float = 10.0) -> None:
        alive = [pid for pid in pids if _pid_alive(pid)]
        for sig in (signal_module.SIGTERM, signal_module.SIGKILL):
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while alive and time.monotonic() < deadline:
                for child in self._children:
                    child.poll()  # reap our own children so they do not linger as zombies
                alive = [pid for pid in alive if _pid_alive(pid)]
                if alive:
                    time.sleep(0.05)
            if not alive:
                return

    def _cancel_all_jobs(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run(["scancel", f"--user={self.user}"], check=False, timeout=10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                result = self.run(["squeue", "-h", "-t", "RUNNING,COMPLETING", "-o", "%i"], check=False, timeout=10)
                if result.returncode != 0 or not result.stdout.strip():
                    return
                time.sleep(0.2)

    def _finished_state(self, job_id: int) -> str:
        """State of a job slurmctld has purged (after MinJobAge): from the jobcomp file."""
        result = self.run(["sacct", "-c", "-n", "-P", "-X", "-j", str(job_id), "-o", "State"], check=False)
        states = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
        if result.returncode == 0 and states:
            return states[-1]
        # sacct -c reads the same file; parse it directly if sacct could not.
        if self.jobcomp_path.exists():
            for line in reversed(self.jobcomp_path.read_text(errors="replace").splitlines()):
                fields = parse_scontrol_record(line)
                if fields.get("JobId") == str(job_id) and "JobState" in fields:
                    return fields["JobState"].split()[0]
        raise KeyError(f"job {job_id} is unknown to slurmctld and to the job completion log")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurmCluster]:
    """A started 4-node cluster (n1..n4, 8 fake GPUs and 2 CPUs each, partition ``debug``) for the session."""
    require_slurm()
    cluster = LocalSlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
