"""Docker-runtime jobs on the real local Slurm cluster: one Docker engine per fake node
(tests/infra/node_docker.py), the kit's cpu image built for real and loaded into each, jobs rendered by
`wmlp slurm render` and submitted with sbatch. Real daemons, real containers, real trainers.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.node_docker import NodeDockerEngines, NodeImage
from tests.infra.render_tools import QUICK, rank_checksums, wmlp
from tests.infra.slurm import LocalSlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.docker, pytest.mark.slow]

# Every job here goes to the two nodes that have an engine.
NODELIST = "--nodelist=n1,n2"

# Two nodes x two gloo processes, batch 2: mini_data's 80 training images make 10 steps an epoch (the
# repeated-augmentation sampler needs 256 images at least).
TINY = [*QUICK, "train.epochs=2", "train.batch_size=2", "augment.repeated_aug=false", "cluster.cpus_per_task=2",
        "train.deterministic=true"]  # fixed gradient buckets: resumed and uninterrupted runs end bit for bit alike
STEPS = 20


class Job:
    """A docker-runtime job of the cpu recipe, rendered by `wmlp slurm render` into its own folders: the
    script and its resolved recipe in ``scripts``, submitted from ``submit`` (sbatch's cwd), training into
    ``run_dir``; the data set lies elsewhere again. Nothing is mounted by hand."""

    def __init__(self, root: Path, name: str, image: str, data: Path, *sets: str) -> None:
        self.name = name
        self.scripts, self.submit_dir, self.run_dir = root / "scripts", root / "submit", root / "runs" / name
        for folder in (self.scripts, self.submit_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.script = self.scripts / f"{name}.sbatch"
        args = ["slurm", "render", "--recipe", "cpu", "--runtime", "docker", "--container-image", image,
                "--nodes", "2", "--gpus", "2", "--run-dir", str(self.run_dir), "-o", str(self.script)]
        for value in [*TINY, f"data.path={data}", *sets]:
            args += ["--set", value]
        result = wmlp(*args)
        assert result.exit_code == 0, result.output
        self.job_id = 0

    def submit(self, cluster: LocalSlurmCluster) -> int:
        cluster.wait_idle(timeout=120)
        self.job_id = cluster.submit(self.script, cwd=self.submit_dir, sbatch_args=[NODELIST])
        return self.job_id

    def node_logs(self, restart: int) -> list[Path]:
        return sorted((self.run_dir / "logs").glob(f"{self.job_id}-restart{restart}-node*.log"))

    def node_text(self, restart: int) -> str:
        return "".join(p.read_text(errors="replace") for p in self.node_logs(restart))

    def batch_err(self) -> str:
        path = self.submit_dir / f"wmlp-cpu-{self.job_id}.err"
        return path.read_text(errors="replace") if path.is_file() else ""

    def report(self, cluster: LocalSlurmCluster, engines: NodeDockerEngines) -> str:
        """Everything the job left (batch .out/.err, node logs), the engines' containers, the daemon logs."""
        parts = [f"===== job {self.name} ({self.job_id})"]
        for path in [*sorted(self.submit_dir.glob(f"*-{self.job_id}.*")),
                     *sorted((self.run_dir / "logs").glob(f"{self.job_id}-*.log"))]:
            parts.append(f"----- {path}:\n{path.read_text(errors='replace')}")
        for engine in engines:
            parts.append(f"----- containers on {engine.node}: {engine.containers()}")
        return "\n".join(parts) + "\n" + cluster.logs(lines=20)

    def wait_for_steps(self, count: int, cluster: LocalSlurmCluster, engines: NodeDockerEngines,
                       timeout: float) -> None:
        steps = self.run_dir / "steps.jsonl"
        deadline = time.monotonic() + timeout
        while not (steps.is_file() and len(steps.read_text().splitlines()) >= count):
            state = cluster.state(self.job_id)
            assert state in ("PENDING", "CONFIGURING", "RUNNING"), (
                f"job {self.job_id} {state} before step {count}\n{self.report(cluster, engines)}")
            assert time.monotonic() < deadline, (
                f"{steps} has fewer than {count} steps after {timeout:.0f}s\n{self.report(cluster, engines)}")
            time.sleep(0.2)


def wait_or_cancel(cluster: LocalSlurmCluster, job_id: int, timeout: float) -> str:
    """The job's final state; a job still running after ``timeout`` is cancelled (so that it does not hold
    the nodes for the next test) and reported as TIMEOUT-BY-TEST."""
    try:
        return cluster.wait(job_id, timeout=timeout)
    except TimeoutError:
        cluster.cancel(job_id)
        cluster.wait(job_id, timeout=60)
        return "TIMEOUT-BY-TEST"


def torchrun_hosts(node_log: str) -> set[str]:
    """Host names in torchrun's report of workers that exited non-zero (``host : <fqdn>``): socket.getfqdn()
    inside the container of that node. The trainers of a preempted start exit 75, so each node reports."""
    return set(re.findall(r"^\s*host\s*:\s*(\S+)\s*$", node_log, re.MULTILINE))


@pytest.fixture(autouse=True)
def no_job_left_behind(slurm_cluster: LocalSlurmCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that failed while its job ran must not leave that job holding n1 and n2 for the next test."""
    yield
    left = slurm_cluster.run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
    for job_id in left:
        slurm_cluster.run(["scancel", job_id], check=False)
    for job_id in left:
        with contextlib.suppress(TimeoutError, KeyError):
            slurm_cluster.wait(int(job_id), timeout=60)
    # Containers outlive a cancelled job unless its script removes them (the tests check that it does).
    engines = request.getfixturevalue("node_docker_engines") if "node_docker_engines" in request.fixturenames else ()
    for engine in engines:
        ids = engine.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            engine.docker("rm", "-f", *ids, check=False)


def test_report_image_build_and_copy_times(node_cpu_image: NodeImage, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(
            f"\n{node_cpu_image.tag} on {node_cpu_image.base}: {node_cpu_image.size / 1e9:.2f} GB, "
            f"build {node_cpu_image.build_seconds:.1f} s, copy to n1 and n2 {node_cpu_image.copy_seconds:.1f} s"
        )
    assert node_cpu_image.image_id


def test_containers_on_two_nodes_carry_the_node_names_and_meet_over_gloo(
    slurm_cluster: LocalSlurmCluster,
    node_docker_engines: NodeDockerEngines,
    node_cpu_image: NodeImage,
    tmp_path: Path,
) -> None:
    """A plain `docker run` under `srun -N2`: each node's engine runs its container, which reports the node's
    name and joins a 2-node torchrun c10d rendezvous with one gloo all_reduce."""
    code = (
        "import os, socket, torch, torch.distributed as dist; dist.init_process_group('gloo'); "
        "t = torch.ones(1) * (dist.get_rank() + 1); dist.all_reduce(t); "
        "print('rank', dist.get_rank(), 'of', dist.get_world_size(), 'on', socket.gethostname(), "
        "socket.getfqdn(), 'sum', int(t.item()), flush=True); dist.barrier(); dist.destroy_process_group()"
    )
    node = (
        "docker run --rm --network=host --entrypoint=python3 "
        f"{shlex.quote(node_cpu_image.tag)} -m torch.distributed.run --nnodes=2 --nproc_per_node=1 "
        '--rdzv_backend=c10d --rdzv_endpoint="$master:$port" --rdzv_id="$SLURM_JOB_ID" '
        f"--no_python python3 -c {shlex.quote(code)}"
    )
    script = tmp_path / "plain.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --output=plain-%j.out\n"
        "set -euo pipefail\n"
        'master=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)\n'
        "port=$((21000 + SLURM_JOB_ID % 1000))\n"
        "export master port\n"
        'echo "batch on $SLURMD_NODENAME: $DOCKER_HOST"\n'
        f"srun --label bash -c {shlex.quote(node)}\n"
    )
    slurm_cluster.wait_idle()
    start = time.monotonic()
    job_id = slurm_cluster.submit(script, cwd=tmp_path, sbatch_args=[NODELIST])
    state = wait_or_cancel(slurm_cluster, job_id, timeout=180)
    out = (tmp_path / f"plain-{job_id}.out").read_text(errors="replace")
    report = f"{out}\n{slurm_cluster.logs()}\n" + "\n".join(f"{e.node}: {e.log()}" for e in node_docker_engines)
    assert state == "COMPLETED", report
    # "<task>: rank R of 2 on <hostname> <fqdn> sum 3": the rendezvous gives out the ranks, in any order.
    seen = [line.split(": ", 1)[1].split() for line in out.splitlines() if line[:1].isdigit() and " rank " in line]
    assert sorted((words[5], words[6], words[8]) for words in seen) == [("n1", "n1", "3"), ("n2", "n2", "3")], report
    assert sorted(words[1] for words in seen) == ["0", "1"], report
    assert f"batch on n1: unix://{node_docker_engines['n1'].socket}" in out, report
    for engine in node_docker_engines:
        assert engine.containers() == [], engine.node
    print(f"plain 2-node docker job: {time.monotonic() - start:.1f} s")


def test_preempted_docker_job_requeues_resumes_and_ends_with_the_weights_of_an_uninterrupted_run(
    slurm_cluster: LocalSlurmCluster,
    node_docker_engines: NodeDockerEngines,
    node_cpu_image: NodeImage,
    mini_data: Path,
    tmp_path: Path,
) -> None:
    start = time.monotonic()
    preempted = Job(tmp_path, "preempted", node_cpu_image.tag, mini_data)
    # The script and resolved recipe lie outside the submit and run folders; the data set elsewhere again.
    assert sorted(p.name for p in preempted.scripts.iterdir()) == ["preempted.recipe.yaml", "preempted.sbatch"]
    preempted.submit(slurm_cluster)
    preempted.wait_for_steps(2, slurm_cluster, node_docker_engines, timeout=300)
    slurm_cluster.signal(preempted.job_id, "USR1", batch_only=True)  # what --signal=B:USR1@grace does
    state = wait_or_cancel(slurm_cluster, preempted.job_id, timeout=480)
    report = preempted.report(slurm_cluster, node_docker_engines)
    assert state == "COMPLETED", report
    assert slurm_cluster.job_field(preempted.job_id, "Restarts") == "1", report
    first, second = preempted.node_text(0), preempted.node_text(1)
    stop = re.search(r"preempted \(stop file .*\): checkpoint at epoch (\d+) step (\d+) saved", first)
    assert stop, report
    assert "resumed from" in second, report
    records = [json.loads(line) for line in (preempted.run_dir / "steps.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in records] == list(range(1, STEPS + 1)), report
    err = preempted.batch_err()
    assert "stopped for preemption: requeued" in err and "start 1 ended with status 0" in err, report
    # Inside the containers, the nodes are n1 and n2: torchrun names the host of each stopped worker.
    hosts = [torchrun_hosts(path.read_text(errors="replace")) for path in preempted.node_logs(0)]
    assert hosts == [{"n1"}, {"n2"}], f"{hosts}\n{report}"
    preempted_seconds = time.monotonic() - start

    start = time.monotonic()
    reference = Job(tmp_path, "reference", node_cpu_image.tag, mini_data)
    reference.submit(slurm_cluster)
    state = wait_or_cancel(slurm_cluster, reference.job_id, timeout=480)
    ref_report = reference.report(slurm_cluster, node_docker_engines)
    assert state == "COMPLETED", ref_report
    assert slurm_cluster.job_field(reference.job_id, "Restarts") == "0", ref_report

    resumed, uninterrupted = rank_checksums(second), rank_checksums(reference.node_text(0))
    assert sorted(resumed) == sorted(uninterrupted) == [0, 1, 2, 3], report + ref_report
    assert len(set(uninterrupted.values())) == 1, ref_report
    assert resumed == uninterrupted, f"resumed {resumed}\nuninterrupted {uninterrupted}\n{report}\n{ref_report}"
    for engine in node_docker_engines:
        assert engine.containers() == [], engine.node
    print(f"preempted docker job {preempted_seconds:.1f} s, uninterrupted {time.monotonic() - start:.1f} s")


def test_cancelled_docker_job_with_loader_workers_leaves_a_checkpoint_and_no_container(
    slurm_cluster: LocalSlurmCluster,
    node_docker_engines: NodeDockerEngines,
    node_cpu_image: NodeImage,
    mini_data: Path,
    tmp_path: Path,
) -> None:
    start = time.monotonic()
    job = Job(tmp_path, "cancelled", node_cpu_image.tag, mini_data, "data.workers=2")
    job.submit(slurm_cluster)
    job.wait_for_steps(2, slurm_cluster, node_docker_engines, timeout=300)
    slurm_cluster.cancel(job.job_id)  # plain scancel: TERM to the batch shell and the steps

    deadline = time.monotonic() + 120
    while True:
        state = slurm_cluster.state(job.job_id)
        containers = {engine.node: engine.containers() for engine in node_docker_engines}
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING") and not any(containers.values()):
            break
        assert time.monotonic() < deadline, (
            f"120 s after scancel: job {state}, containers {containers}\n"
            f"{job.report(slurm_cluster, node_docker_engines)}")
        time.sleep(0.5)
    report = job.report(slurm_cluster, node_docker_engines)
    assert state == "CANCELLED", report
    checkpoints = sorted((job.run_dir / "checkpoints").glob("*.pth")) if (job.run_dir / "checkpoints").is_dir() else []
    assert checkpoints, f"no checkpoint in {job.run_dir}\n{report}"
    assert re.search(r"checkpoint at epoch \d+ step \d+ saved", job.node_text(0)), report
    print(f"cancelled docker job {time.monotonic() - start:.1f} s, checkpoints {[p.name for p in checkpoints]}")
