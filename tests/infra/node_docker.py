"""One Docker engine per fake Slurm node, so that docker-runtime jobs run for real on the local cluster.

The fake nodes of tests/infra/slurm.py are all this one host. A job's containers must still tell the
nodes apart, as on a real cluster: each node here gets its own dockerd, started in a UTS namespace of its
own whose host name is the node's, so that its ``--network=host`` containers report ``n1``, ``n2``, and
in a mount namespace of its own whose /etc/hosts names each node by its own loopback address
(``slurm.node_address``, ``NodeDockerEngines.hosts_text``): host-network containers copy the engine's
/etc/hosts, and resolve each name to itself, backwards too (this host's /etc/hosts names them all
127.0.0.1, which jobs without containers need). The cluster's TaskProlog points
every task on node nK at node K's engine (``DOCKER_HOST``), through the sockets in
``cluster.node_docker_dir``. Images reach the engines through ``docker save | docker load``.

With one shared engine instead, every container takes the host's name, getfqdn() answers ``localhost``,
torchrun's node ids collide and its rendezvous hangs without a word: a single-host artefact that looks
exactly like a real hang.

Environment knob for developers (CI sets none): WAVEMLP_TEST_DOCKER_ROOT (see tests/infra/docker.py) also
keeps the node engines' data under ``<it>/nodes``, so that an unchanged image is not copied again.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.infra.docker import missing_tools, remove_engine_root, start_dockerd, stop_dockerd, unavailable
from tests.infra.slurm import HOSTS_FILE, HOSTS_MARK, LocalSlurmCluster, node_address

__all__ = ["NODES", "NodeDockerEngines", "NodeEngine", "node_docker_engines"]

# Two nodes: what the multi-node docker jobs use (they are submitted with --nodelist=n1,n2). Each more
# node costs one more copy of the image.
NODES = ("n1", "n2")


@dataclass
class NodeEngine:
    node: str
    root: Path  # exec root, log, pid file (and the data unless kept elsewhere)
    data: Path
    socket: Path
    process: subprocess.Popen

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in ("DOCKER_CONTEXT", "DOCKER_BUILDKIT")}
        env["DOCKER_HOST"] = self.host
        return env

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} on {self.node} exited {done.returncode}: {done.stderr}")
        return done

    def containers(self) -> list[str]:
        """Every container of this engine, running or not: ``<name> <status>`` lines."""
        out = self.docker("ps", "-a", "--no-trunc", "--format", "{{.Names}} {{.Status}} {{.Command}}").stdout
        return [line for line in out.splitlines() if line.strip()]

    def image_id(self, image: str) -> str | None:
        done = self.docker("image", "inspect", "--format", "{{.Id}}", image, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def log(self, chars: int = 3000) -> str:
        try:
            return (self.root / "dockerd.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class NodeDockerEngines:
    cluster: LocalSlurmCluster
    nodes: Sequence[str] = NODES
    keep_data: Path | None = None
    engines: dict[str, NodeEngine] = field(default_factory=dict)

    @property
    def sockets(self) -> Path:
        return self.cluster.node_docker_dir

    def __getitem__(self, node: str) -> NodeEngine:
        return self.engines[node]

    def __iter__(self) -> Iterator[NodeEngine]:
        return iter(self.engines.values())

    def start(self) -> NodeDockerEngines:
        atexit.register(self.stop)
        try:
            # Leftovers of a crashed session with this cluster folder: nothing of them is reused.
            self._remove_roots()
            self.sockets.mkdir(parents=True)
            self.sockets.chmod(0o755)
            hosts = self.sockets / "hosts"
            hosts.write_text(self.hosts_text())
            for node in self.nodes:
                root = self.sockets / node
                data = self.keep_data / node if self.keep_data else root / "data"
                socket = self.sockets / f"{node}.sock"
                proc, _ = start_dockerd(root, socket=socket, hostname=node, data_root=data, hosts_file=hosts)
                self.engines[node] = NodeEngine(node, root, data, socket, proc)
        except BaseException:
            self.stop()
            raise
        return self

    def hosts_text(self) -> str:
        """The engines' /etc/hosts: each node by an address of its own (``node_address``), then this host's
        own lines but those of any test cluster. This host's /etc/hosts names every node 127.0.0.1 (see
        ``node_address``), and other sessions' clusters may add lines of their own; name lookups return
        every address a name has and prefer 127.0.0.1, so with those lines getfqdn() answers ``localhost``
        in every container, torchrun's node ids collide and the rendezvous hangs."""
        nodes = [f"{node_address(index)} {name}" for index, name in enumerate(self.cluster.node_names, 1)]
        own = [line for line in HOSTS_FILE.read_text().splitlines() if HOSTS_MARK not in line]
        return "".join(f"{line}\n" for line in [*nodes, *own])

    def stop(self) -> None:
        """Remove every container, stop the engines, unmount and delete their folders. Safe to repeat."""
        for engine in self.engines.values():
            if engine.process.poll() is None:
                with contextlib.suppress(subprocess.SubprocessError, AssertionError, OSError):
                    ids = engine.docker("ps", "-aq", check=False, timeout=30).stdout.split()
                    if ids:
                        engine.docker("rm", "-f", *ids, check=False, timeout=60)
            stop_dockerd(engine.process)
        self.engines.clear()
        self._remove_roots()

    def _remove_roots(self) -> None:
        if self.sockets.exists():
            remove_engine_root(self.sockets)
        if self.keep_data is not None:
            # Kept data, but never a mount left inside it.
            prefix = str(self.keep_data.resolve()) + "/"
            with open("/proc/self/mounts") as mounts:
                points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
            for point in sorted(points, key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def copy_image(self, image: str, source_host: str) -> float:
        """``docker save`` the image once from the source engine, ``docker load`` it into every node engine at
        the same time; seconds taken (0 when every engine holds that image already)."""
        source = {**os.environ, "DOCKER_HOST": source_host}
        wanted = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", image],
            env=source, capture_output=True, text=True, check=True,
        ).stdout.strip()
        targets = [engine for engine in self if engine.image_id(image) != wanted]
        if not targets:
            return 0.0
        start = time.monotonic()
        save = subprocess.Popen(["docker", "save", image], env=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        loads = [
            subprocess.Popen(
                ["docker", "load", "--quiet"], env=engine.env, stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            for engine in targets
        ]
        assert save.stdout is not None
        try:
            while chunk := save.stdout.read(4 << 20):
                for load in loads:
                    assert load.stdin is not None
                    load.stdin.write(chunk)
        finally:
            for load in loads:
                with contextlib.suppress(OSError):
                    load.stdin.close()  # type: ignore[union-attr]
        failures = []
        if save.wait() != 0:
            failures.append(f"docker save {image}: {save.stderr.read().decode(errors='replace')}")  # type: ignore[union-attr]
        for engine, load in zip(targets, loads, strict=True):
            err = load.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
            if load.wait(timeout=600) != 0:
                failures.append(f"docker load on {engine.node}: {err}\n{engine.log()}")
        if failures:
            raise RuntimeError("\n".join(failures))
        for engine in targets:
            got = engine.image_id(image)
            if got != wanted:
                raise RuntimeError(f"{image} on {engine.node} is {got} after loading, not {wanted}")
        return time.monotonic() - start


@pytest.fixture(scope="session")
def node_docker_engines(slurm_cluster: LocalSlurmCluster) -> Iterator[NodeDockerEngines]:
    """A dockerd per fake node n1, n2 (host name n1, n2), each node's tasks pointed at it by the TaskProlog."""
    missing = [tool for tool in missing_tools() if tool != "debootstrap"]
    if shutil.which("unshare") is None:
        missing.append("unshare (util-linux)")
    if missing:
        unavailable(f"the per-node Docker engines need {', '.join(missing)}")
    keep = os.environ.get("WAVEMLP_TEST_DOCKER_ROOT")
    engines = NodeDockerEngines(slurm_cluster, keep_data=Path(keep) / "nodes" if keep else None)
    try:
        engines.start()
    except RuntimeError as exc:
        unavailable(f"could not start the per-node Docker engines: {exc}")
    try:
        yield engines
    finally:
        engines.stop()


@dataclass(frozen=True)
class NodeImage:
    """The kit's image, built on the build engine and loaded into every node engine."""

    tag: str
    image_id: str
    base: str
    size: int
    build_seconds: float
    copy_seconds: float


@pytest.fixture(scope="session")
def node_cpu_image(
    docker_engine, cuda_standin, kit_context, host_ca_bundle, node_docker_engines: NodeDockerEngines
) -> NodeImage:
    """The kit's ``cpu`` image target (its Dockerfile: cuda), in the node engines.

    Built on the CUDA stand-in (torch 2.14.1, 6.0 GB), not on the CoreX one (Debian's torch 1.13, 1.7 GB)
    although that would copy 3.5 times faster: the cpu target's pins (torchprofile 0.1.0) need torch >= 2,
    and its build refuses the 1.13 base in its verify step, as it should. The stand-in is what the image
    tests build on already, so the session pays for it once.
    """
    from wavemlp.image.build import build_image, source_build_args

    repo = Path(__file__).resolve().parents[2]
    tag = "wavemlp-test:cpu"
    log: list[str] = []
    start = time.monotonic()
    try:
        image_id = build_image(
            "cpu",
            "cuda",
            cuda_standin.tags[0],
            tag,
            kit_context,
            {"RECIPE": "test-recipe", "GIT_COMMIT": source_build_args(repo)["GIT_COMMIT"]},
            host_ca_bundle,
            stream=log.append,
            client=docker_engine.client,
        )
    except Exception as exc:
        raise RuntimeError(f"building {tag} failed: {exc}\n{''.join(log)[-4000:]}") from exc
    built = time.monotonic() - start
    copied = node_docker_engines.copy_image(tag, docker_engine.host)
    size = docker_engine.client.images.get(tag).attrs["Size"]
    return NodeImage(tag, image_id, cuda_standin.tags[0], size, built, copied)
