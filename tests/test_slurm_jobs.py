"""Rendered sbatch scripts on the real local Slurm cluster (tests/infra/slurm.py): training over gloo on two
nodes, `wmlp slurm submit`, and preemption with requeue and resume. Real daemons, real trainers, no mocks.

The machine has two cores: runs are a handful of steps on 32-pixel digits. Waits poll files and job states.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.infra.render_tools import (
    child_env,
    local_site,
    quick_sets,
    rank_checksums,
    wmlp,
)
from tests.infra.slurm import LocalSlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def submit(cluster: LocalSlurmCluster, workdir: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """`wmlp slurm submit` from ``workdir`` against the test cluster; the job id it printed."""
    monkeypatch.chdir(workdir)
    env = {**cluster.env, **child_env()}
    site = local_site(workdir)
    result = wmlp("slurm", "submit", "--recipe", "cpu", "--site", str(site), "--set", "cluster.cpus_per_task=2", *args,
                  env=env)
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    assert job_id.isdigit(), result.stdout
    return int(job_id)


def node_logs(run_dir: Path, job_id: int, restart: int) -> list[Path]:
    return sorted((run_dir / "logs").glob(f"{job_id}-restart{restart}-node*.log"))


def job_report(cluster: LocalSlurmCluster, workdir: Path, job_id: int) -> str:
    """Everything a failing job left: batch output, node logs, daemon logs."""
    parts = [f"{p.name}:\n{p.read_text(errors='replace')}" for p in sorted(workdir.rglob("*")) if
             p.is_file() and p.suffix in (".out", ".err", ".log")]
    return "\n".join(parts) + "\n" + cluster.logs()


def wait_for_steps(path: Path, count: int, cluster: LocalSlurmCluster, job_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and len(path.read_text().splitlines()) >= count):
        state = cluster.state(job_id)
        assert state in ("PENDING", "CONFIGURING", "RUNNING"), f"job {job_id} {state} before step {count}"
        assert time.monotonic() < deadline, f"{path} has fewer than {count} steps after {timeout:.0f}s"
        time.sleep(0.2)


def test_cpu_job_trains_on_two_nodes_by_two_gloo_processes(
    slurm_cluster: LocalSlurmCluster,  # noqa: F811
    demo_data: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = submit(slurm_cluster, tmp_path, monkeypatch, "--nodes", "2", "--gpus", "2",
                    *quick_sets(demo_data, 4))
    state = slurm_cluster.wait(job_id, timeout=420)
    report = job_report(slurm_cluster, tmp_path, job_id)
    assert state == "COMPLETED", report

    run_dir = tmp_path / "runs" / f"cpu-{job_id}"  # the default: <train.output>/<recipe>-<job id>
    logs = node_logs(run_dir, job_id, restart=0)
    assert [p.name for p in logs] == [f"{job_id}-restart0-node0.log", f"{job_id}-restart0-node1.log"], report
    checksums = {}
    for path in logs:
        checksums.update(rank_checksums(path.read_text()))
    assert sorted(checksums) == [0, 1, 2, 3], report
    assert len(set(checksums.values())) == 1, checksums
    assert "training WaveMLP_T_dw on 4 x cpu" in (run_dir / "train.log").read_text()
    assert len((run_dir / "steps.jsonl").read_text().splitlines()) == 4
    assert (run_dir / "logs" / f"{job_id}.sbatch").is_file()


@pytest.mark.parametrize("nodes", [1, 2], ids=["1-node", "2-nodes"])
def test_preempted_job_checkpoints_requeues_and_resumes_without_losing_a_step(
    nodes: int,
    slurm_cluster: LocalSlurmCluster,  # noqa: F811
    demo_data: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total = 24
    run_dir = tmp_path / "run"
    job_id = submit(slurm_cluster, tmp_path, monkeypatch, "--nodes", str(nodes), "--gpus", "1",
                    "--run-dir", str(run_dir), *quick_sets(demo_data, total))
    steps = run_dir / "steps.jsonl"
    wait_for_steps(steps, 2, slurm_cluster, job_id, timeout=300)
    slurm_cluster.signal(job_id, "USR1", batch_only=True)  # what --signal=B:USR1@grace does near the limit

    state = slurm_cluster.wait(job_id, timeout=480)
    report = job_report(slurm_cluster, tmp_path, job_id)
    assert state == "COMPLETED", report
    assert slurm_cluster.job_field(job_id, "Restarts") == "1", report

    # The step counter goes on from the checkpoint: every step once, none missing.
    records = [json.loads(line) for line in steps.read_text().splitlines()]
    assert [r["global_step"] for r in records] == list(range(1, total + 1)), report
    assert [r["step"] for r in records] == list(range(1, total + 1))

    # Both starts kept their logs; the first stopped for preemption, the second resumed and finished.
    first, second = node_logs(run_dir, job_id, 0), node_logs(run_dir, job_id, 1)
    assert len(first) == len(second) == nodes, report
    first_text = "".join(p.read_text() for p in first)
    second_text = "".join(p.read_text() for p in second)
    stop = re.search(r"preempted \(stop file .*\): checkpoint at epoch 0 step (\d+) saved", first_text)
    assert stop and 2 <= int(stop.group(1)) < total, report
    assert f"resumed from {run_dir}/checkpoints/last-e0000-s{int(stop.group(1)):07d}.pth" in second_text, report
    checksums = rank_checksums(second_text)
    assert sorted(checksums) == list(range(nodes)) and len(set(checksums.values())) == 1, report
    batch_log = (tmp_path / f"wmlp-cpu-{job_id}.err").read_text()
    assert "USR1 received" in batch_log and "start 0 stopped for preemption: requeued" in batch_log
    assert "start 1 ended with status 0" in batch_log
    assert not (run_dir / ".preempt").exists()


def test_trainer_started_directly_by_srun_joins_from_slurm_variables(
    slurm_cluster: LocalSlurmCluster,  # noqa: F811
    demo_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """No torchrun: srun starts one trainer per node, which derives rank, world and master from SLURM_*."""
    import shlex
    import sys

    run_dir = tmp_path / "direct"
    train = [sys.executable, "-m", "wavemlp.cli", "train", "--recipe", "cpu", "--run-dir", str(run_dir),
             *quick_sets(demo_data, 3)]
    script = tmp_path / "direct.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --cpus-per-task=1\n"
                      f"#SBATCH --output={tmp_path}/direct-%j.out\n"
                      f"srun {' '.join(shlex.quote(a) for a in train)}\n")
    job_id = slurm_cluster.submit(script, cwd=tmp_path, env_extra=child_env())
    state = slurm_cluster.wait(job_id, timeout=420)
    out = (tmp_path / f"direct-{job_id}.out").read_text(errors="replace")
    assert state == "COMPLETED", out + slurm_cluster.logs()
    checksums = rank_checksums(out)
    assert sorted(checksums) == [0, 1] and len(set(checksums.values())) == 1, out
    env = json.loads((run_dir / "env.json").read_text())
    assert env["world_size"] == 2 and env["launcher"] == "srun"


def render_job(folder: Path, workdir: Path, *args: str) -> Path:
    """`wmlp slurm render -o` into ``folder`` (outside the submit folder ``workdir``); the script's path."""
    script = folder / "job.sbatch"
    site = local_site(workdir)
    result = wmlp("slurm", "render", "--recipe", "cpu", "--site", str(site), "--set", "cluster.cpus_per_task=2",
                  *args, "-o", str(script), env=child_env())
    assert result.exit_code == 0, result.output
    return script


def wait_for_restart(cluster: LocalSlurmCluster, job_id: int, restart: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while int(cluster.job_field(job_id, "Restarts")) < restart:
        assert time.monotonic() < deadline, f"job {job_id} not restarted {restart} times after {timeout:.0f}s"
        time.sleep(0.5)


def test_requeue_cap_ends_a_job_signalled_at_every_start(
    slurm_cluster: LocalSlurmCluster,  # noqa: F811
    demo_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A job preempted at every start requeues cluster.max_requeues times, then ends with 75 and says so."""
    run_dir = tmp_path / "run"
    script = render_job(tmp_path / "jobs", tmp_path, "--set", "cluster.max_requeues=1", "--run-dir", str(run_dir),
                        *quick_sets(demo_data, 400))
    job_id = slurm_cluster.submit(script, cwd=tmp_path, env_extra=child_env())
    steps = run_dir / "steps.jsonl"
    for restart in (0, 1):
        wait_for_restart(slurm_cluster, job_id, restart, timeout=120)
        done = len(steps.read_text().splitlines()) if steps.is_file() else 0
        wait_for_steps(steps, done + 1, slurm_cluster, job_id, timeout=300)
        slurm_cluster.signal(job_id, "USR1", batch_only=True)
    state = slurm_cluster.wait(job_id, timeout=300)
    report = job_report(slurm_cluster, tmp_path, job_id)
    assert state == "FAILED", report
    assert slurm_cluster.job_field(job_id, "ExitCode") == "75:0", report
    assert slurm_cluster.job_field(job_id, "Restarts") == "1", report
    batch_log = (tmp_path / f"wmlp-cpu-{job_id}.err").read_text()
    assert "start 0 stopped for preemption: requeued" in batch_log, report
    assert "stopped for preemption at start 1 and reached cluster.max_requeues=1: not requeued" in batch_log, report
    assert list((run_dir / "checkpoints").glob("last-*.pth")), report


def test_allocation_sets_the_node_count_and_a_refused_requeue_keeps_exit_75(
    slurm_cluster: LocalSlurmCluster,  # noqa: F811
    demo_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Rendered for one node, submitted with `sbatch -N 2 --no-requeue`: trains on two, and the requeue
    that preemption asks for is refused by Slurm: the job says so and ends 75 with its checkpoint."""
    run_dir = tmp_path / "run"
    script = render_job(tmp_path / "jobs", tmp_path, "--nodes", "1", "--run-dir", str(run_dir),
                        *quick_sets(demo_data, 400))
    job_id = slurm_cluster.submit(script, cwd=tmp_path, env_extra=child_env(), sbatch_args=["-N", "2", "--no-requeue"])
    steps = run_dir / "steps.jsonl"
    wait_for_steps(steps, 2, slurm_cluster, job_id, timeout=300)
    slurm_cluster.signal(job_id, "USR1", batch_only=True)
    state = slurm_cluster.wait(job_id, timeout=300)
    report = job_report(slurm_cluster, tmp_path, job_id)
    assert state == "FAILED" and slurm_cluster.job_field(job_id, "ExitCode") == "75:0", report
    batch_log = (tmp_path / f"wmlp-cpu-{job_id}.err").read_text()
    assert "rendered for 1 node(s), the allocation has 2: training on 2 x 1" in batch_log, report
    assert "scontrol requeue was refused (" in batch_log and "submit again with --run-dir" in batch_log, report
    assert "training WaveMLP_T_dw on 2 x cpu" in (run_dir / "train.log").read_text(), report
    assert list((run_dir / "checkpoints").glob("last-*.pth")), report
