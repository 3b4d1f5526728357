"""Docker-runtime jobs on the real local Slurm cluster: one Docker engine per fake node
(tests/infra/node_docker.py), the kit's cpu image built for real and loaded into each, jobs rendered by
`wmlp slurm render` and submitted with sbatch. Real daemons, real containers, real trainers.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from tests.infra.node_docker import NodeDockerEngines, NodeImage
from tests.infra.slurm import LocalSlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.docker, pytest.mark.slow]

# Every job here goes to the two nodes that have an engine.
NODELIST = "--nodelist=n1,n2"


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
        "socket.getfqdn(), 'sum', int(t.item()), flush=True)"
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
    state = slurm_cluster.wait(job_id, timeout=180)
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
